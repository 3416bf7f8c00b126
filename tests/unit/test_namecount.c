/* test_namecount.c - the name counter against a model (sorted names, counted
 * by runs) on random names with many repeats, empty names, any byte and names
 * that share a prefix; every name written exactly once, whatever the size of
 * the output pieces; and the memory limit: a name that does not fit is
 * refused and nothing counted, the names already there keep counting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "namecount.h"

typedef struct Name {
        char text[24];
        size_t len;
} Name;

typedef struct Count {
        Name name;
        uint64_t n;
} Count;

static int name_cmp(const void *a, const void *b)
{
        const Name *x = a, *y = b;
        size_t n = x->len < y->len ? x->len : y->len;
        int c = memcmp(x->text, y->text, n);

        return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int count_cmp(const void *a, const void *b)
{
        return name_cmp(&((const Count *)a)->name, &((const Count *)b)->name);
}

/* Names drawn from a small pool, so that most repeat; a pool name is a common
 * prefix plus a few random bytes (any byte but the '\t' and '\n' that COPY
 * text escapes), or empty. */
static Name *random_names(size_t n, size_t pool, unsigned seed)
{
        Name *p = calloc(pool, sizeof *p), *out = calloc(n, sizeof *out);

        srand(seed);
        for (size_t i = 0; i < pool; i++) {
                if (i == 0)
                        continue; /* the empty name */
                p[i].len = (size_t)snprintf(p[i].text, sizeof p[i].text, "Name");
                for (size_t k = rand() % 12; k > 0; k--) {
                        char c = (char)(rand() % 256);
                        p[i].text[p[i].len++] = c == '\t' || c == '\n' ? 'x' : c;
                }
        }
        for (size_t i = 0; i < n; i++)
                out[i] = p[rand() % pool];
        free(p);
        return out;
}

/* The model: sort, count runs. Returns the number of distinct names. */
static size_t model_counts(const Name *names, size_t n, Count *out)
{
        Name *s = malloc(n * sizeof *s);
        size_t k = 0;

        memcpy(s, names, n * sizeof *s);
        qsort(s, n, sizeof *s, name_cmp);
        for (size_t i = 0; i < n; i++) {
                if (k > 0 && name_cmp(&out[k - 1].name, &s[i]) == 0)
                        out[k - 1].n++;
                else
                        out[k++] = (Count){ s[i], 1 };
        }
        free(s);
        return k;
}

/* Every "name\tcount\n" line namecount_put writes, in pieces of about fill
 * bytes; the name is everything before the last tab. */
static size_t written_counts(const NameCount *nc, size_t fill, Count *out)
{
        Buf b = { 0 };
        size_t pos = 0, k = 0;
        bool more = true;

        while (more) {
                size_t before = b.len;
                more = namecount_put(nc, &pos, &b, b.len + fill);
                assert_true(b.len > before || !more);
        }
        for (char *line = b.data, *end = b.data + b.len; line < end;) {
                char *nl = memchr(line, '\n', (size_t)(end - line)), *tab = nl;
                assert_non_null(nl);
                while (*tab != '\t')
                        tab--;
                out[k].name.len = (size_t)(tab - line);
                memcpy(out[k].name.text, line, out[k].name.len);
                out[k++].n = strtoull(tab + 1, NULL, 10);
                line = nl + 1;
        }
        buf_free(&b);
        qsort(out, k, sizeof *out, count_cmp);
        return k;
}

static void check_against_model(size_t n, size_t pool, unsigned seed, size_t fill, size_t expected)
{
        Name *names = random_names(n, pool, seed);
        Count *want = calloc(n, sizeof *want), *got = calloc(n, sizeof *got);
        NameCount nc;

        namecount_init(&nc, 64u << 20, expected);
        for (size_t i = 0; i < n; i++) {
                if (i + 1 < n)
                        namecount_prefetch(&nc, namecount_hash(names[i + 1].text, names[i + 1].len));
                assert_true(
                        namecount_add(&nc, names[i].text, names[i].len, namecount_hash(names[i].text, names[i].len)));
        }
        size_t k = model_counts(names, n, want);
        assert_int_equal(nc.used, k);
        assert_int_equal(written_counts(&nc, fill, got), k);
        for (size_t i = 0; i < k; i++) {
                assert_int_equal(got[i].name.len, want[i].name.len);
                assert_memory_equal(got[i].name.text, want[i].name.text, want[i].name.len);
                assert_int_equal(got[i].n, want[i].n);
        }
        namecount_free(&nc);
        free(names);
        free(want);
        free(got);
}

static void test_counts_equal_the_model(void **state)
{
        (void)state;
        check_against_model(50000, 7000, 1, 1u << 20, 0);      /* grows the table several times */
        check_against_model(50000, 7000, 6, 1u << 20, 7000);   /* room made at once */
        check_against_model(50000, 7000, 7, 1u << 20, 100000); /* more room than names */
        check_against_model(3000, 3, 2, 1u << 20, 0);          /* a few names, many times each */
        check_against_model(20000, 20000, 3, 1u << 20, 0);     /* mostly distinct */
}

static void test_output_in_small_pieces_writes_each_name_once(void **state)
{
        (void)state;
        check_against_model(5000, 900, 4, 1, 0);
        check_against_model(5000, 900, 5, 100, 0);
}

static void test_a_name_that_does_not_fit_is_refused(void **state)
{
        (void)state;
        NameCount nc;
        char name[32];
        size_t max = 64u << 10, added = 0;

        namecount_init(&nc, max, 1u << 20); /* expects far more than fit: room for half of max */
        assert_true((nc.mask + 1) * sizeof(NameSlot) <= max / 2);
        for (;; added++) {
                int n = snprintf(name, sizeof name, "distinct name %zu", added);
                if (!namecount_add(&nc, name, (size_t)n, namecount_hash(name, (size_t)n)))
                        break;
                assert_true(nc.mask + 1 <= max / sizeof(NameSlot));
        }
        assert_true(added > 500);         /* the first doubling fitted */
        assert_int_equal(nc.used, added); /* the refused name was not counted */
        assert_true((nc.mask + 1) * sizeof(NameSlot) + nc.names.cap <= max);
        assert_true(
                namecount_add(&nc, "distinct name 0", 15, namecount_hash("distinct name 0", 15))); /* still counts */
        Count *got = calloc(added, sizeof *got);
        assert_int_equal(written_counts(&nc, 1u << 20, got), added);
        for (size_t i = 0; i < added; i++)
                assert_int_equal(got[i].n,
                        got[i].name.len == 15 && memcmp(got[i].name.text, "distinct name 0", 15) == 0 ? 2 : 1);
        free(got);
        namecount_free(&nc);

        namecount_init(&nc, 1000, 0); /* not even the first table fits */
        assert_false(namecount_add(&nc, "a", 1, namecount_hash("a", 1)));
        assert_int_equal(nc.used, 0);
        namecount_free(&nc);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_counts_equal_the_model),
                cmocka_unit_test(test_output_in_small_pieces_writes_each_name_once),
                cmocka_unit_test(test_a_name_that_does_not_fit_is_refused),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
