/* test_planner.c - header checks and chunk plans: chunks tile the data part,
 * end on record boundaries, and every record lands in exactly one chunk for
 * every chunk size from 1 byte to more than the file. The SHA-256 expected
 * here was computed with coreutils sha256sum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "csv.h"
#include "planner.h"
#include "sha256.h"

static int temp_file(const char *data, size_t len)
{
        char path[] = "/tmp/test_planner_XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        unlink(path);
        assert_int_equal(write(fd, data, len), (ssize_t)len);
        return fd;
}

static int plan_string(const char *data, size_t len, FileKind kind, uint64_t chunk, Plan *p, char **err)
{
        int fd = temp_file(data, len);
        *err = NULL;
        int r = planner_plan(fd, kind, KEY_SKU, chunk, NULL, NULL, p, err);
        close(fd);
        return r;
}

static void expect_error(const char *data, size_t len, FileKind kind, const char *needle)
{
        Plan p;
        char *err;
        assert_int_equal(plan_string(data, len, kind, 100, &p, &err), -22);
        assert_non_null(err);
        if (!strstr(err, needle))
                fail_msg("error '%s' does not mention '%s'", err, needle);
        free(err);
}

static void test_bad_files(void **state)
{
        (void)state;
        expect_error("", 0, KIND_INGEST, "empty file");
        expect_error("sku,name,description\r\n", 22, KIND_INGEST, "no data rows");
        expect_error("name,description\nx,y\n", 21, KIND_INGEST, "no 'sku' column");
        expect_error("sku,description\nx,y\n", 20, KIND_INGEST, "no 'name' column");
        expect_error("sku,name,price\nx,y,1\n", 21, KIND_INGEST, "unknown column 'price'");
        expect_error("sku,name,SKU\nx,y,z\n", 19, KIND_INGEST, "appears twice");
        expect_error("sku\nx\n", 6, KIND_UPDATE, "at least one column");
        expect_error("\x7f"
                     "ELF\0\0\0\x01\x02\n",
                10, KIND_INGEST, "binary");
        expect_error("\"sku,name\n", 10, KIND_INGEST, "unterminated");
}

static void test_header_any_order_bom_and_spaces(void **state)
{
        (void)state;
        const char *s = "\xef\xbb\xbf description , SKU,name\r\nd,s,n\r\n";
        Plan p;
        char *err;
        assert_int_equal(plan_string(s, strlen(s), KIND_INGEST, 100, &p, &err), 0);
        assert_int_equal(p.header.index[COL_SKU], 1);
        assert_int_equal(p.header.index[COL_NAME], 2);
        assert_int_equal(p.header.index[COL_DESCRIPTION], 0);
        assert_int_equal(p.header.data_offset, 3 + 25);
        assert_int_equal(p.header.data_line, 2);
        assert_int_equal(p.data_rows, 1);
        plan_done(&p);
}

static void test_update_header_subset(void **state)
{
        (void)state;
        const char *s = "sku,description\nx,y\n";
        Plan p;
        char *err;
        assert_int_equal(plan_string(s, strlen(s), KIND_UPDATE, 100, &p, &err), 0);
        assert_int_equal(p.header.index[COL_NAME], -1);
        plan_done(&p);
}

/* Records of the data part as (offset, len), by a whole-buffer parse. */
static size_t records(const char *s, size_t len, uint64_t from, uint64_t *off, uint64_t *end, size_t cap)
{
        CsvReader r;
        CsvRecord rec;
        size_t n = 0;
        csv_reader_init(&r, s + from, len - from, from, 2, SIZE_MAX);
        while (csv_next(&r, &rec) && n < cap) {
                off[n] = rec.offset;
                end[n++] = rec.offset + rec.len;
        }
        return n;
}

static void test_chunks_tile_records_for_every_size(void **state)
{
        (void)state;
        const char *s = "name,sku,description\r\n"
                        "A B,a-b,\"multi\nline, with \"\"quotes\"\"\"\r\n"
                        "C D,c-d,plain\r\n"
                        "\r\n"
                        "E F,e-f,\"x\r\ny\"\r\n"
                        "G H,g-h,\"unterminated\n";
        size_t len = strlen(s);
        uint64_t off[16], end[16];
        size_t n = records(s, len, 22, off, end, 16);

        for (uint64_t chunk = 1; chunk <= len + 1; chunk++) {
                Plan p;
                char *err;
                assert_int_equal(plan_string(s, len, KIND_INGEST, chunk, &p, &err), 0);
                assert_int_equal(p.data_rows, 4); /* the blank line is no data */
                uint64_t at = p.header.data_offset;
                size_t rec = 0;
                for (size_t c = 0; c < p.n_ranges; c++) {
                        assert_int_equal(p.ranges[c].start, at);
                        assert_true(p.ranges[c].end > p.ranges[c].start);
                        while (rec < n && end[rec] <= p.ranges[c].end) {
                                assert_true(off[rec] >= p.ranges[c].start);
                                rec++;
                        }
                        assert_int_equal(end[rec - 1], p.ranges[c].end); /* ends on a record end */
                        at = p.ranges[c].end;
                }
                assert_int_equal(at, len);
                assert_int_equal(rec, n);
                if (chunk == 1)
                        assert_int_equal(p.n_ranges, n);
                if (chunk > len)
                        assert_int_equal(p.n_ranges, 1);
                assert_int_equal(p.ranges[0].first_line, 2);
                plan_done(&p);
        }
}

static void test_first_lines_follow_embedded_newlines(void **state)
{
        (void)state;
        const char *s = "sku,name\n\"a\nb\",x\nc,y\nd,z\n";
        Plan p;
        char *err;
        assert_int_equal(plan_string(s, strlen(s), KIND_INGEST, 1, &p, &err), 0);
        assert_int_equal(p.n_ranges, 3);
        assert_int_equal(p.ranges[0].first_line, 2);
        assert_int_equal(p.ranges[1].first_line, 4);
        assert_int_equal(p.ranges[2].first_line, 5);
        assert_string_equal(p.sha256, "2c4db0dba83ae72d1d3e5909bf2daa724b45529ebd5f1f46f5561e4018380816");
        plan_done(&p);
}

static void count_progress(uint64_t done, uint64_t size, void *ud)
{
        uint64_t *last = ud;
        assert_true(done > *last && done <= size);
        *last = done;
}

static char *big_file(size_t rows, size_t *ret_len)
{
        size_t len = 0;
        char *s = malloc(rows * 60 + 64);

        len += (size_t)sprintf(s, "sku,name,description\n");
        for (size_t i = 0; i < rows; i++)
                len += (size_t)sprintf(s + len, "sku-%zu,Some Name,\"a description\nof two lines\"\n", i);
        *ret_len = len;
        return s;
}

/* A big file reports progress, ever larger, as it is scanned and hashed (the
 * plan child stores it for STATUS), and the digest is the file's. */
static void test_progress_on_big_file(void **state)
{
        (void)state;
        size_t rows = 200000, len;
        char *s = big_file(rows, &len);
        int fd = temp_file(s, len);
        char whole[65];
        uint64_t last = 0;
        Plan p;
        char *err = NULL;

        assert_int_equal(planner_plan(fd, KIND_INGEST, KEY_SKU, 1 << 20, count_progress, &last, &p, &err), 0);
        assert_true(last >= 8u << 20); /* at least two reports on ~11 MB */
        assert_int_equal(p.data_rows, rows);
        /* the planner hashes in a second thread, piece by piece: the digest of
         * the whole buffer at once must match */
        Sha256 *h = sha256_new();
        sha256_update(h, s, len);
        sha256_final_hex(h, whole);
        assert_string_equal(p.sha256, whole);
        plan_done(&p);
        close(fd);
        free(s);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_bad_files),
                cmocka_unit_test(test_header_any_order_bom_and_spaces),
                cmocka_unit_test(test_update_header_subset),
                cmocka_unit_test(test_chunks_tile_records_for_every_size),
                cmocka_unit_test(test_first_lines_follow_embedded_newlines),
                cmocka_unit_test(test_progress_on_big_file),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
