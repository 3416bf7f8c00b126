/* test_loader.c - key lanes: a sku's lane depends on its value only (quoted or
 * not), and the lanes of a chunk partition its records: every valid row is
 * staged by exactly one lane, every bad record rejected by lane 0 only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loader.h"
#include "lookahead.h"
#include "planner.h"

static void test_lane_follows_the_value(void **state)
{
        (void)state;
        for (unsigned lanes = 1; lanes <= 7; lanes++) {
                assert_int_equal(loader_lane("abc", 3, false, lanes), loader_lane("abc", 3, true, lanes));
                /* "a""b" in a quoted field is the value a"b */
                assert_int_equal(loader_lane("a\"\"b", 4, true, lanes), loader_lane("a\"b", 3, false, lanes));
                assert_true(loader_lane("xyz", 3, false, lanes) < lanes);
        }
        assert_int_equal(loader_lane("anything", 8, false, 1), 0);
}

static void test_lanes_are_balanced(void **state)
{
        (void)state;
        unsigned count[2] = { 0, 0 };
        char sku[32];

        for (int i = 0; i < 10000; i++) {
                int n = snprintf(sku, sizeof sku, "sku-%d", i);
                count[loader_lane(sku, (size_t)n, false, 2)]++;
        }
        assert_in_range(count[0], 4500, 5500);
}

static int count_rows(Buf *rows, void *ud)
{
        (void)rows;
        (void)ud;
        return 0;
}

static LoadCounts load_lane(const char *data, unsigned lane, unsigned lanes, Buf *rows, Buf *rejects)
{
        Header h;
        char *err = NULL;
        LoadCounts counts = { 0 };

        assert_int_equal(header_parse(data, strlen(data), KIND_INGEST, KEY_SKU, &h, &err), 0);
        LoaderInput in = { data, h.data_offset, strlen(data), h.data_line, &h, 1000, 1, 1, lane, lanes, KEY_SKU, NULL,
                strlen(data), NULL, 0 };
        assert_int_equal(loader_run(&in, rows, rejects, SIZE_MAX, count_rows, NULL, &counts), 0);
        return counts;
}

static size_t lines_in(const Buf *b)
{
        size_t n = 0;
        for (size_t i = 0; i < b->len; i++)
                n += b->data[i] == '\n';
        return n;
}

static void test_lanes_partition_a_chunk(void **state)
{
        (void)state;
        const char *data = "sku,name,description\n"
                           "a,Ann,one\n\"a\",Ann,quoted a\nb,Bob,two\nc,Cy,three\n"
                           ",Nobody,empty sku\nd,Di\n\"e\"\"q\",Eve,quoted quote\nf,Fay,\"multi\nline\"\n"
                           "g,Gus,x\nh,Hal,y\ni,Ida,z\n";
        for (unsigned lanes = 1; lanes <= 4; lanes++) {
                size_t staged = 0, rejected = 0, reject_lines = 0, lane_of_a = lanes;
                for (unsigned lane = 0; lane < lanes; lane++) {
                        Buf rows = { 0 }, rejects = { 0 };
                        LoadCounts c = load_lane(data, lane, lanes, &rows, &rejects);
                        assert_int_equal(lines_in(&rows), c.rows);
                        /* both spellings of sku a in one lane, and only one */
                        size_t a = 0;
                        for (size_t off = 0; off < rows.len;) {
                                const char *row = rows.data + off, *nl = memchr(row, '\n', rows.len - off);
                                a += strncmp(row, "a\t", 2) == 0;
                                off = (size_t)(nl - rows.data) + 1;
                        }
                        assert_true(a == 0 || a == 2);
                        if (a == 2) {
                                assert_int_equal(lane_of_a, lanes);
                                lane_of_a = lane;
                        }
                        if (lane > 0)
                                assert_int_equal(c.rejected, 0);
                        staged += c.rows;
                        rejected += c.rejected;
                        reject_lines += lines_in(&rejects);
                        buf_free(&rows);
                        buf_free(&rejects);
                }
                assert_int_equal(staged, 9); /* 11 records, 2 bad */
                assert_int_equal(rejected, 2);
                assert_int_equal(reject_lines, 2);
                assert_true(lane_of_a < lanes);
        }
}

/* A table with room for 12 keys, 20 keys in the chunk and the first one
 * again at the end: the 8 keys without room go apart (the lookahead cannot
 * tell whether they occur again), the first row of the repeated key is
 * superseded. Past
 * uncertain_max the loader stops. */
static void test_rows_the_lookahead_cannot_settle_go_apart(void **state)
{
        (void)state;
        Buf data = { 0 }, rows = { 0 }, rejects = { 0 }, uncertain = { 0 };
        char line[64];
        Header h;
        char *err = NULL;
        Lookahead la;
        LoadCounts counts = { 0 };

        buf_append(&data, "sku,name,description\n", 21);
        for (int i = 0; i <= 20; i++)
                buf_append(&data, line, (size_t)snprintf(line, sizeof line, "k%d,N%d,D\n", i % 20, i));
        assert_int_equal(header_parse(data.data, data.len, KIND_INGEST, KEY_SKU, &h, &err), 0);
        LoaderInput in = { data.data, h.data_offset, data.len, h.data_line, &h, 1000, 7, 1, 0, 1, KEY_SKU, &la,
                data.len, .uncertain = &uncertain, .uncertain_max = 1 << 20 };
        lookahead_init(&la, 1, 16 * sizeof(uint64_t));
        loader_note_keys(&in, &la);
        assert_true(la.incomplete);
        assert_int_equal(loader_run(&in, &rows, &rejects, SIZE_MAX, count_rows, NULL, &counts), 0);
        assert_int_equal(counts.superseded, 1);
        assert_int_equal(counts.rows, 20);
        assert_int_equal(lines_in(&uncertain), 8);
        assert_int_equal(counts.uncertain, 8);
        assert_int_equal(lines_in(&rows), 12);
        const char *first = "k1\tN1\tD\t3\t", *apart = "k12\tN12\tD\t14\t";
        assert_memory_equal(rows.data, first, strlen(first));
        assert_memory_equal(uncertain.data, apart, strlen(apart));
        rows.len = uncertain.len = 0;
        in.uncertain_max = 10;
        assert_int_equal(loader_run(&in, &rows, &rejects, SIZE_MAX, count_rows, NULL, &counts), -ENOSPC);
        lookahead_free(&la);
        buf_free(&data);
        buf_free(&rows);
        buf_free(&rejects);
        buf_free(&uncertain);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_lane_follows_the_value),
                cmocka_unit_test(test_lanes_are_balanced),
                cmocka_unit_test(test_lanes_partition_a_chunk),
                cmocka_unit_test(test_rows_the_lookahead_cannot_settle_go_apart),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
