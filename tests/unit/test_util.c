/* test_util.c - sizes, UTF-8 validation and file name escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static void test_parse_size(void **state)
{
        (void)state;
        uint64_t v = 7;
        assert_int_equal(parse_size("16M", &v), 0);
        assert_int_equal(v, 16u << 20);
        assert_int_equal(parse_size("512k", &v), 0);
        assert_int_equal(v, 512u << 10);
        assert_int_equal(parse_size("2GB", &v), 0);
        assert_int_equal(v, 2ULL << 30);
        assert_int_equal(parse_size("123", &v), 0);
        assert_int_equal(v, 123);
        v = 7;
        assert_true(parse_size("", &v) < 0);
        assert_true(parse_size("-1", &v) < 0);
        assert_true(parse_size("12X", &v) < 0);
        assert_true(parse_size("99999999999999999999G", &v) < 0);
        assert_int_equal(v, 7); /* untouched on failure */
}

static void test_utf8(void **state)
{
        (void)state;
        assert_true(utf8_valid("plain ascii text that is long", 29));
        assert_true(utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
        assert_false(utf8_valid("\xc3", 1));
        assert_false(utf8_valid("\xe0\x80\x80", 3));
        assert_false(utf8_valid("abcdefgh\xff", 9));
}

static void test_name_escape(void **state)
{
        (void)state;
        char *s = name_escape("a b\n\xff\xc3\xa9.csv");
        assert_string_equal(s, "a b\\x0a\\xff\xc3\xa9.csv");
        free(s);
        s = name_escape("back\\slash");
        assert_string_equal(s, "back\\x5cslash");
        free(s);
}

static void test_dropped_name(void **state)
{
        (void)state;
        assert_string_equal(dropped_name("12-p.csv"), "p.csv");
        assert_string_equal(dropped_name("/var/lib/ingestd/done/12u-prices.csv"), "prices.csv");
        assert_string_equal(dropped_name("12u-"), "");
        /* not ours: the whole base name */
        assert_string_equal(dropped_name("u-p.csv"), "u-p.csv");
        assert_string_equal(dropped_name("12x-p.csv"), "12x-p.csv");
        assert_string_equal(dropped_name("12uu-p.csv"), "12uu-p.csv");
        assert_string_equal(dropped_name("dir/p.csv"), "p.csv");
}

static void test_buf(void **state)
{
        (void)state;
        Buf b = { 0 };
        for (int i = 0; i < 10000; i++)
                buf_append(&b, "xy", 2);
        assert_int_equal(b.len, 20000);
        assert_true(b.cap >= b.len);
        buf_free(&b);
        assert_null(b.data);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_parse_size),
                cmocka_unit_test(test_utf8),
                cmocka_unit_test(test_name_escape),
                cmocka_unit_test(test_dropped_name),
                cmocka_unit_test(test_buf),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
