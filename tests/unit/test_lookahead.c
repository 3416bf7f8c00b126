/* test_lookahead.c - the lookahead table, and the loader dropping the rows a
 * later row of the same key supersedes. The loader is checked against a model
 * on random files: a valid row is dropped exactly when a later valid record of
 * the file has the same key (quoting aside); with a table too small for the
 * keys some such rows are sent anyway, but a row is never dropped wrongly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csv.h"
#include "loader.h"
#include "lookahead.h"
#include "planner.h"

static void test_table_keeps_the_largest_offset(void **state)
{
        (void)state;
        Lookahead la;

        lookahead_init(&la, 100, 1 << 20);
        assert_int_equal(lookahead_last(&la, 42), 0);
        lookahead_note(&la, 42, 100, true);
        lookahead_note(&la, 42, 300, true);
        lookahead_note(&la, 42, 200, true);
        assert_int_equal(lookahead_last(&la, 42), 300);
        lookahead_note(&la, 42, 500, false); /* raising a present key */
        assert_int_equal(lookahead_last(&la, 42), 500);
        lookahead_note(&la, 7, 900, false); /* absent: not added */
        assert_int_equal(lookahead_last(&la, 7), 0);
        assert_int_equal(la.used, 1);
        assert_false(la.incomplete);
        lookahead_free(&la);
}

static void test_table_colliding_hashes_share_a_run(void **state)
{
        (void)state;
        Lookahead la;
        uint64_t a = UINT64_C(0x1111110000000005), b = UINT64_C(0x2222220000000005);

        lookahead_init(&la, 10, 1 << 20);
        lookahead_note(&la, a, 10, true);
        lookahead_note(&la, b, 20, true); /* same slot, another tag: its own entry */
        assert_int_equal(lookahead_last(&la, a), 10);
        assert_int_equal(lookahead_last(&la, b), 20);
        lookahead_free(&la);
}

static void test_table_full_or_far_offsets_are_incomplete(void **state)
{
        (void)state;
        Lookahead la;

        lookahead_init(&la, 1u << 20, 8192); /* 8 KiB: 1024 slots, 768 keys */
        assert_int_equal(la.mask + 1, 1024);
        for (uint64_t k = 1; k <= 768; k++)
                lookahead_note(&la, k * UINT64_C(0x9e3779b97f4a7c15), k, true);
        assert_int_equal(la.used, 768);
        assert_false(la.incomplete);
        lookahead_note(&la, 12345, 1, true);
        assert_true(la.incomplete);
        assert_int_equal(lookahead_last(&la, 12345), 0);
        lookahead_free(&la);

        lookahead_init(&la, 10, 1 << 20);
        lookahead_note(&la, 1, LOOKAHEAD_MAX_OFFSET + 1, true);
        assert_true(la.incomplete);
        assert_int_equal(lookahead_last(&la, 1), 0);
        lookahead_free(&la);
}

/* A random file: records with keys from a small pool, some quoted, some bad. */
#define MAX_RECORDS 400

typedef struct Rec {
        uint64_t offset;
        bool valid;
        unsigned lane;
        char key[64]; /* sku, '|', name: the decoded values */
} Rec;

typedef struct File {
        Buf text;
        Rec rec[MAX_RECORDS];
        size_t n;
        size_t data_offset;
} File;

static void make_file(File *f, unsigned seed, size_t n, unsigned lanes)
{
        static const char *const names[] = { "Ann", "Bob", "Cy" };
        char line[256], sku[32], raw[40];

        srand(seed);
        *f = (File){ 0 };
        buf_append(&f->text, "sku,name,description\r\n", 22);
        f->data_offset = f->text.len;
        for (size_t i = 0; i < n; i++) {
                int k = rand() % 30, kind = rand() % 13;
                const char *name = names[rand() % 3];
                bool quoted = rand() % 2;
                snprintf(sku, sizeof sku, k % 7 == 0 ? "s\"%d" : "s%d", k); /* some skus hold a quote */
                if (quoted || strchr(sku, '"')) {
                        size_t o = 0;
                        raw[o++] = '"';
                        for (const char *p = sku; *p; p++) {
                                raw[o++] = *p;
                                if (*p == '"')
                                        raw[o++] = '"';
                        }
                        raw[o++] = '"';
                        raw[o] = 0;
                } else {
                        snprintf(raw, sizeof raw, "%s", sku);
                }
                Rec *r = &f->rec[i];
                r->offset = f->text.len;
                r->valid = kind >= 4;
                if (kind == 3) /* invalid UTF-8 (the lookahead's passes do not check it) */
                        snprintf(line, sizeof line, "%s,%s,bad \xff byte\r\n", raw, name);
                else if (kind == 0) /* a field short */
                        snprintf(line, sizeof line, "%s,%s\r\n", raw, name);
                else if (kind == 1) /* a quote inside an unquoted field */
                        snprintf(line, sizeof line, "%s,%s,bad\"quote\r\n", raw, name);
                else if (kind == 2) /* an empty sku */
                        snprintf(line, sizeof line, ",%s,x\r\n", name);
                else /* a description over two lines */
                        snprintf(line, sizeof line, "%s,%s,\"line %zu\nmore\"\r\n", raw, name, i);
                buf_append(&f->text, line, strlen(line));
                snprintf(r->key, sizeof r->key, "%s|%s", sku, name);
                bool q = raw[0] == '"';
                r->lane = loader_lane(q ? raw + 1 : raw, strlen(raw) - (q ? 2 : 0), q, lanes);
        }
        f->n = n;
        buf_append(&f->text, "", 1); /* NUL for header_parse's strlen-free use; not data */
        f->text.len--;
}

static bool same_model_key(const Rec *a, const Rec *b, KeyMode key)
{
        if (key == KEY_SKU_NAME)
                return strcmp(a->key, b->key) == 0;
        return strcspn(a->key, "|") == strcspn(b->key, "|") && strncmp(a->key, b->key, strcspn(a->key, "|")) == 0;
}

static bool superseded_in_model(const File *f, size_t i, KeyMode key)
{
        for (size_t j = i + 1; j < f->n; j++)
                if (f->rec[j].valid && same_model_key(&f->rec[i], &f->rec[j], key))
                        return true;
        return false;
}

static int keep_rows(Buf *rows, void *ud)
{
        Buf *all = ud;
        buf_append(all, rows->data, rows->len);
        rows->len = 0;
        return 0;
}

/* Was the record at offset staged? Rows end in "\t<offset>\n". */
static bool staged(const Buf *rows, uint64_t offset)
{
        char tail[32];
        int n = snprintf(tail, sizeof tail, "\t%llu\n", (unsigned long long)offset);

        for (const char *p = rows->data, *end = rows->data + rows->len; p < end;) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                if ((size_t)(nl + 1 - p) >= (size_t)n && memcmp(nl + 1 - n, tail, (size_t)n) == 0)
                        return true;
                p = nl + 1;
        }
        return false;
}

/* Loads records [from, to) of f as one chunk of lane, with a lookahead of at
 * most max_bytes, and checks every record against the model. Returns whether
 * the table held every key. */
static bool check_chunk(
        const File *f, size_t from, size_t to, unsigned lane, unsigned lanes, KeyMode key, size_t max_bytes)
{
        Header h;
        char *err = NULL;
        Buf rows = { 0 }, all = { 0 }, rejects = { 0 };
        LoadCounts counts;
        Lookahead la;
        uint64_t start = f->rec[from].offset, end = to < f->n ? f->rec[to].offset : f->text.len;

        assert_int_equal(header_parse(f->text.data, f->text.len, KIND_INGEST, key, &h, &err), 0);
        LoaderInput in = { f->text.data, start, end, 2, &h, 1000, 1, 1, lane, lanes, key, NULL, f->text.len, NULL, 0 };
        lookahead_init(&la, 1u << 16, max_bytes);
        loader_note_keys(&in, &la);
        in.later = &la;
        assert_int_equal(loader_run(&in, &rows, &rejects, 64, keep_rows, &all, &counts), 0);

        uint64_t lane_rows = 0, dropped = 0, kept_superseded = 0;
        for (size_t i = from; i < to; i++) {
                const Rec *r = &f->rec[i];
                if (!r->valid || r->lane != lane) {
                        assert_false(staged(&all, r->offset));
                        continue;
                }
                lane_rows++;
                bool later = superseded_in_model(f, i, key), sent = staged(&all, r->offset);
                if (!sent)
                        assert_true(later); /* never drop a row no later row replaces */
                if (!la.incomplete)
                        assert_int_equal(sent, !later);
                dropped += !sent;
                kept_superseded += sent && later;
        }
        assert_int_equal(counts.rows + counts.superseded, lane_rows);
        assert_int_equal(counts.superseded, dropped);
        bool complete = !la.incomplete;
        if (complete)
                assert_int_equal(kept_superseded, 0);
        lookahead_free(&la);
        buf_free(&rows);
        buf_free(&all);
        buf_free(&rejects);
        return complete;
}

static void test_loader_drops_exactly_the_superseded_rows(void **state)
{
        (void)state;
        static File f;

        for (unsigned seed = 1; seed <= 40; seed++) {
                unsigned lanes = 1 + seed % 3;
                make_file(&f, seed, 50 + seed * 7, lanes);
                size_t cut1 = f.n / 3 + seed % 5, cut2 = 2 * f.n / 3;
                size_t cuts[] = { 0, cut1, cut2, f.n };
                for (KeyMode key = KEY_SKU; key <= KEY_SKU_NAME; key++)
                        for (int c = 0; c < 3; c++)
                                for (unsigned lane = 0; lane < lanes; lane++)
                                        assert_true(check_chunk(&f, cuts[c], cuts[c + 1], lane, lanes, key, 1 << 20));
                buf_free(&f.text);
        }
}

static void test_loader_with_a_full_table_never_drops_a_last_row(void **state)
{
        (void)state;
        static File f;

        for (unsigned seed = 100; seed < 120; seed++) {
                make_file(&f, seed, MAX_RECORDS, 1);
                /* keys of 30 skus x 3 names: a 16-slot table (12 keys) is far too small */
                assert_false(check_chunk(&f, 0, f.n, 0, 1, KEY_SKU_NAME, 16 * sizeof(uint64_t)));
                assert_false(check_chunk(&f, 0, f.n / 2, 0, 1, KEY_SKU, 16 * sizeof(uint64_t)));
                buf_free(&f.text);
        }
}

/* The loader's key hash of an unquoted sku (FNV-1a, 64 bits). */
static uint64_t sku_hash(const char *sku)
{
        uint64_t h = UINT64_C(14695981039346656037);

        for (const char *p = sku; *p; p++)
                h = (h ^ (unsigned char)*p) * UINT64_C(1099511628211);
        return h;
}

/* The table only hints: a hit whose record holds another key (a hash
 * collision) must not drop the row. */
static void test_loader_checks_the_later_record(void **state)
{
        (void)state;
        const char *data = "sku,name,description\na,x,1\nb,y,2\na,z,3\n";
        uint64_t b_at = (uint64_t)(strstr(data, "b,y") - data), a2_at = (uint64_t)(strstr(data, "a,z") - data);
        Header h;
        char *err = NULL;
        Buf rows = { 0 }, all = { 0 }, rejects = { 0 };
        LoadCounts counts;
        Lookahead la;

        assert_int_equal(header_parse(data, strlen(data), KIND_INGEST, KEY_SKU, &h, &err), 0);
        LoaderInput in = { data, h.data_offset, b_at, 2, &h, 1000, 1, 1, 0, 1, KEY_SKU, &la, strlen(data), NULL, 0 };
        for (int collide = 0; collide <= 1; collide++) {
                lookahead_init(&la, 10, 1 << 20);
                lookahead_note(&la, sku_hash("a"), collide ? b_at : a2_at, true);
                all.len = 0;
                assert_int_equal(loader_run(&in, &rows, &rejects, 1, keep_rows, &all, &counts), 0);
                assert_int_equal(counts.rows, collide ? 1 : 0);
                assert_int_equal(counts.superseded, collide ? 0 : 1);
                assert_int_equal(staged(&all, h.data_offset), collide);
                lookahead_free(&la);
        }
        buf_free(&rows);
        buf_free(&all);
        buf_free(&rejects);
}

static void test_csv_fields_compare_and_hash_by_value(void **state)
{
        (void)state;
        CsvField plain = { "a\"b", 3, false }, quoted = { "a\"\"b", 4, true }, other = { "a\"c", 3, false };

        assert_true(csv_field_equal(&plain, &quoted));
        assert_true(csv_field_equal(&quoted, &plain));
        assert_false(csv_field_equal(&plain, &other));
        assert_int_equal(csv_field_hash(&plain, 1), csv_field_hash(&quoted, 1));
        assert_int_not_equal(csv_field_hash(&plain, 1), csv_field_hash(&other, 1));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_table_keeps_the_largest_offset),
                cmocka_unit_test(test_table_colliding_hashes_share_a_run),
                cmocka_unit_test(test_table_full_or_far_offsets_are_incomplete),
                cmocka_unit_test(test_loader_drops_exactly_the_superseded_rows),
                cmocka_unit_test(test_loader_with_a_full_table_never_drops_a_last_row),
                cmocka_unit_test(test_loader_checks_the_later_record),
                cmocka_unit_test(test_csv_fields_compare_and_hash_by_value),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
