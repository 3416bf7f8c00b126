/* test_batch.c - a batch of COPY text rows against the rows products holds:
 * parsing, de-duplication (the file's last row of a key wins), the probe's
 * key list, each row's fate, and the COPY text sent for inserts, updates and
 * products_agg deltas. A randomized case checks the fates and counts against
 * a plain quadratic model of the same rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "loader.h"

static const BatchRules ingest = { .file_seq = 7, .kind = KIND_INGEST, .key = KEY_SKU, .set = { true, true, true } };

static Field plain(const char *s) { return (Field){ s, s ? strlen(s) : 0 }; }

static Existing existing(const char *sku, const char *name, const char *desc, int64_t file_seq, int64_t line)
{
        return (Existing){ { plain(sku), plain(name), plain(desc) }, file_seq, line };
}

static const BatchRow *row_of(const Batch *b, const char *sku)
{
        for (size_t i = 0; i < b->n; i++)
                if (b->rows[i].fate != FATE_DUPLICATE && b->rows[i].col[COL_SKU].len == strlen(sku) &&
                        memcmp(b->rows[i].col[COL_SKU].p, sku, strlen(sku)) == 0)
                        return &b->rows[i];
        fail_msg("no kept row for %s", sku);
        return NULL;
}

static void test_index_reads_fields_and_nulls(void **state)
{
        (void)state;
        const char text[] = "a\tAnn\t\\N\t2\t10\nb\\tx\tBob\tdesc\t3\t20\n";
        Batch b = { 0 };

        assert_int_equal(batch_index(&b, text, sizeof text - 1), 0);
        assert_int_equal(b.n, 2);
        assert_null(b.rows[0].col[COL_DESCRIPTION].p);
        assert_int_equal(b.rows[1].line, 3);
        assert_int_equal(b.rows[1].offset, 20);
        assert_int_equal(b.rows[1].col[COL_SKU].len, 4); /* still escaped: b\tx */
        batch_free(&b);
        const char *bad[] = { "a\tAnn\tx\t2\n", "a\tAnn\tx\tL\t1\n", "\\N\tAnn\tx\t2\t1\n", "a\tAnn\tx\t2\t1" };
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
                assert_int_equal(batch_index(&b, bad[i], strlen(bad[i])), -EINVAL);
                batch_free(&b);
        }
}

static void test_dedup_keeps_the_last_row_of_a_key(void **state)
{
        (void)state;
        const char text[] =
                "b\tB1\td\t2\t0\na\tA1\td\t3\t0\nb\tB2\td\t4\t0\nb\tB3\td\t9\t0\na\tA2\td\t5\t0\nc\tC\td\t6\t0\n";
        Batch b = { 0 };

        assert_int_equal(batch_index(&b, text, sizeof text - 1), 0);
        batch_dedup(&b, KEY_SKU);
        assert_int_equal(row_of(&b, "a")->line, 5);
        assert_int_equal(row_of(&b, "b")->line, 9);
        assert_int_equal(row_of(&b, "c")->line, 6);
        size_t dups = 0;
        for (size_t i = 0; i < b.n; i++)
                dups += b.rows[i].fate == FATE_DUPLICATE;
        assert_int_equal(dups, 3);
        Buf keys = { 0 };
        batch_probe_keys(&b, 0, &keys);
        assert_string_equal(keys.data, "{\"a\",\"b\",\"c\"}");
        /* with the name in the key, b/B2 and b/B3 are different products */
        batch_free(&b);
        assert_int_equal(batch_index(&b, "b\tB\td\t2\t0\nb\tC\td\t4\t0\nb\tB\td\t3\t0\n", 30), 0);
        batch_dedup(&b, KEY_SKU_NAME);
        assert_int_equal(b.rows[0].fate, FATE_DUPLICATE);
        assert_int_equal(b.rows[1].line, 3);
        assert_int_equal(b.rows[2].line, 4);
        batch_probe_keys(&b, 0, &keys);
        assert_string_equal(keys.data, "{\"b\"}");
        buf_free(&keys);
        batch_free(&b);
}

static void test_probe_keys_are_an_array_literal_of_the_plain_text(void **state)
{
        (void)state;
        const char text[] = "q\"x\tN\td\t2\t0\nb\\\\s\tN\td\t3\t0\nt\\tn\\n\tN\td\t4\t0\n";
        Batch b = { 0 };
        Buf keys = { 0 };

        assert_int_equal(batch_index(&b, text, sizeof text - 1), 0);
        batch_dedup(&b, KEY_SKU);
        batch_probe_keys(&b, 0, &keys);
        assert_string_equal(keys.data, "{\"b\\\\s\",\"q\\\"x\",\"t\tn\n\"}");
        batch_clear(&b);
        batch_probe_keys(&b, 0, &keys);
        assert_string_equal(keys.data, "{}");
        buf_free(&keys);
        batch_free(&b);
}

/* A sample of the keys: at most max_keys of them, from the whole batch. */
static void test_probe_keys_sample(void **state)
{
        (void)state;
        Batch b = { 0 };
        Buf text = { 0 }, keys = { 0 };
        char row[64];

        for (int i = 0; i < 100; i++) {
                int n = snprintf(row, sizeof row, "k%03d\tN\td\t%d\t0\n", i, i + 2);
                buf_append(&text, row, (size_t)n);
        }
        assert_int_equal(batch_index(&b, text.data, text.len), 0);
        batch_dedup(&b, KEY_SKU);
        batch_probe_keys(&b, 16, &keys);
        size_t commas = 0;
        for (const char *p = keys.data; *p; p++)
                commas += *p == ',';
        assert_true(commas + 1 <= 16 && commas + 1 >= 8);
        assert_non_null(strstr(keys.data, "\"k000\"")); /* the first */
        assert_non_null(strstr(keys.data, "\"k098\"")); /* and near the last */
        batch_probe_keys(&b, 1000, &keys);              /* more than there are: all */
        assert_non_null(strstr(keys.data, "\"k099\""));
        buf_free(&keys);
        buf_free(&text);
        batch_free(&b);
}

static void test_copy_text_equal(void **state)
{
        (void)state;
        assert_true(copy_text_equal("a\\tb\\\\c\\n", 9, "a\tb\\c\n", 6));
        assert_false(copy_text_equal("a\\tb", 4, "a\\tb", 4));
        assert_false(copy_text_equal("ab", 2, "abc", 3));
        assert_false(copy_text_equal("abc", 3, "ab", 2));
        assert_true(copy_text_equal("", 0, "", 0));
}

static void test_ingest_fates_and_counts(void **state)
{
        (void)state;
        /* new; changed (older file); same content; newer in products; an
         * earlier batch of this file (superseding, changed); same name+desc
         * but from this file's earlier line (superseding, unchanged) */
        const char text[] = "new\tN\td\t10\t0\nchg\tN2\td\t11\t0\nsame\tS\td\t12\t0\nold\tO\td\t13\t0\n"
                            "sup\tP2\td\t14\t0\nsupu\tU\t\\N\t15\t0\nnew\tN0\td\t9\t0\n";
        Existing ex[] = { existing("chg", "N1", "d", 3, 50), existing("same", "S", "d", 3, 60),
                existing("old", "O", "x", 8, 1), existing("sup", "P1", "d", 7, 2), existing("supu", "U", NULL, 7, 3) };
        Batch b = { 0 };
        BatchCounts n;

        assert_int_equal(batch_index(&b, text, sizeof text - 1), 0);
        batch_dedup(&b, KEY_SKU);
        batch_classify(&b, ex, 5, &ingest, &n);
        assert_int_equal(row_of(&b, "new")->fate, FATE_INSERT);
        assert_int_equal(row_of(&b, "chg")->fate, FATE_UPDATE);
        assert_int_equal(row_of(&b, "same")->fate, FATE_UNCHANGED);
        assert_int_equal(row_of(&b, "old")->fate, FATE_OUTRANKED);
        assert_int_equal(row_of(&b, "sup")->fate, FATE_UPDATE);
        assert_true(row_of(&b, "sup")->superseding);
        assert_int_equal(row_of(&b, "supu")->fate, FATE_UNCHANGED);
        assert_true(row_of(&b, "supu")->superseding);
        assert_false(row_of(&b, "chg")->superseding);
        assert_int_equal(n.rows, 7);
        assert_int_equal(n.distinct, 6);
        assert_int_equal(n.outranked, 1);
        assert_int_equal(n.superseding, 2);
        assert_int_equal(n.inserts, 1);
        assert_int_equal(n.updates, 2);
        assert_int_equal(n.unknown, 0);

        Buf out = { 0 };
        batch_put_inserts(&b, 7, &out);
        assert_int_equal(out.len, strlen("new\tN\td\t7\t10\n"));
        assert_memory_equal(out.data, "new\tN\td\t7\t10\n", out.len);
        out.len = 0;
        batch_put_updates(&b, &out);
        assert_int_equal(out.len, strlen("chg\tN2\td\t11\nsup\tP2\td\t14\n"));
        assert_memory_equal(out.data, "chg\tN2\td\t11\nsup\tP2\td\t14\n", out.len);
        out.len = 0;
        assert_int_equal(batch_put_deltas(&b, ex, &ingest, &out), 5);
        buf_append(&out, "", 1); /* rows follow the key order: checked one by one */
        assert_non_null(strstr(out.data, "N\t1\n"));
        assert_non_null(strstr(out.data, "N1\t-1\nN2\t1\n"));
        assert_non_null(strstr(out.data, "P1\t-1\nP2\t1\n"));
        buf_free(&out);
        batch_free(&b);
}

static void test_update_files_reject_unknown_keys_and_set_only_their_columns(void **state)
{
        (void)state;
        BatchRules desc_only = { .file_seq = 7, .kind = KIND_UPDATE, .key = KEY_SKU, .set = { true, false, true } };
        /* name is \N: the file has no name column */
        const char text[] = "gone\t\\N\tx\t2\t0\nk\t\\N\td\t3\t0\ngone\t\\N\ty\t4\t0\nm\t\\N\tnew\\tdesc\t5\t0\n";
        Existing ex[] = { existing("k", "K", "d", 1, 1), existing("m", "M", "old", 1, 2) };
        Batch b = { 0 };
        BatchCounts n;

        assert_int_equal(batch_index(&b, text, sizeof text - 1), 0);
        batch_dedup(&b, KEY_SKU);
        batch_classify(&b, ex, 2, &desc_only, &n);
        assert_int_equal(n.unknown, 2); /* both rows of "gone" */
        for (size_t i = 0; i < b.n; i++)
                if (b.rows[i].col[COL_SKU].len == 4)
                        assert_int_equal(b.rows[i].fate, FATE_UNKNOWN);
        assert_int_equal(row_of(&b, "k")->fate, FATE_UNCHANGED); /* name not in the file: not compared */
        assert_int_equal(row_of(&b, "m")->fate, FATE_UPDATE);
        assert_int_equal(n.rows, 2);
        assert_int_equal(n.distinct, 2);
        Buf out = { 0 };
        assert_int_equal(batch_put_deltas(&b, ex, &desc_only, &out), 0); /* no name, no rename */
        buf_free(&out);
        batch_free(&b);
}

static void test_rename_deltas_escape_the_old_name(void **state)
{
        (void)state;
        Existing ex[] = { existing("s", "Tab\there", "d", 1, 1) };
        Batch b = { 0 };
        BatchCounts n;
        Buf out = { 0 };

        assert_int_equal(batch_index(&b, "s\tNew\td\t2\t0\n", 12), 0);
        batch_dedup(&b, KEY_SKU);
        batch_classify(&b, ex, 1, &ingest, &n);
        assert_int_equal(batch_put_deltas(&b, ex, &ingest, &out), 2);
        assert_int_equal(out.len, strlen("Tab\\there\t-1\nNew\t1\n"));
        assert_memory_equal(out.data, "Tab\\there\t-1\nNew\t1\n", out.len);
        buf_free(&out);
        batch_free(&b);
}

/* The model: for each key the row with the highest line wins; its fate
 * follows the rules of batch.h, found by linear search. */
static RowFate model_fate(
        const char *sku, const char *name, unsigned line, const Existing *ex, size_t n_ex, bool *superseding)
{
        *superseding = false;
        for (size_t i = 0; i < n_ex; i++) {
                if (strcmp(ex[i].col[COL_SKU].p, sku) != 0)
                        continue;
                if (ex[i].file_seq > 7 || (ex[i].file_seq == 7 && ex[i].line >= line))
                        return FATE_OUTRANKED;
                *superseding = ex[i].file_seq == 7;
                return strcmp(ex[i].col[COL_NAME].p, name) != 0 ? FATE_UPDATE : FATE_UNCHANGED;
        }
        return FATE_INSERT;
}

static void test_random_batches_match_the_model(void **state)
{
        (void)state;
        static const char *names[] = { "A", "B", "C" };
        static char skus[40][16], text[64 * 1024];
        srand(12345);
        for (int i = 0; i < 40; i++)
                snprintf(skus[i], sizeof skus[i], "s%d", i);
        for (int round = 0; round < 200; round++) {
                Existing ex[40];
                size_t n_ex = 0, len = 0, rows = 10 + (size_t)(rand() % 60);
                unsigned best_line[40] = { 0 };
                const char *best_name[40] = { 0 };
                for (int i = 0; i < 40; i++)
                        if (rand() % 2)
                                ex[n_ex++] = existing(skus[i], names[rand() % 3], "d", 5 + rand() % 4, rand() % 200);
                for (size_t r = 0; r < rows; r++) {
                        int k = rand() % 40;
                        unsigned line = 1 + (unsigned)r * 3;
                        const char *name = names[rand() % 3];
                        len += (size_t)snprintf(
                                text + len, sizeof text - len, "%s\t%s\td\t%u\t0\n", skus[k], name, line);
                        best_line[k] = line;
                        best_name[k] = name;
                }
                Batch b = { 0 };
                BatchCounts n;
                assert_int_equal(batch_index(&b, text, len), 0);
                batch_dedup(&b, KEY_SKU);
                batch_classify(&b, ex, n_ex, &ingest, &n);
                uint64_t distinct = 0, outranked = 0, superseding = 0;
                for (int k = 0; k < 40; k++) {
                        if (!best_name[k])
                                continue;
                        bool sup;
                        RowFate want = model_fate(skus[k], best_name[k], best_line[k], ex, n_ex, &sup);
                        const BatchRow *got = row_of(&b, skus[k]);
                        assert_int_equal(got->line, best_line[k]);
                        assert_int_equal(got->fate, want);
                        assert_int_equal(got->superseding, sup);
                        distinct++;
                        outranked += want == FATE_OUTRANKED;
                        superseding += sup;
                }
                assert_int_equal(n.rows, rows);
                assert_int_equal(n.distinct, distinct);
                assert_int_equal(n.outranked, outranked);
                assert_int_equal(n.superseding, superseding);
                batch_free(&b);
        }
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_index_reads_fields_and_nulls),
                cmocka_unit_test(test_dedup_keeps_the_last_row_of_a_key),
                cmocka_unit_test(test_probe_keys_are_an_array_literal_of_the_plain_text),
                cmocka_unit_test(test_probe_keys_sample),
                cmocka_unit_test(test_copy_text_equal),
                cmocka_unit_test(test_ingest_fates_and_counts),
                cmocka_unit_test(test_update_files_reject_unknown_keys_and_set_only_their_columns),
                cmocka_unit_test(test_rename_deltas_escape_the_old_name),
                cmocka_unit_test(test_random_batches_match_the_model),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
