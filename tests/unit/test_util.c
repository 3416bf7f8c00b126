/* test_util.c - sizes, UTF-8 validation and file name escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "rejects.h"
#include "util.h"

#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>

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

static void test_listen_parse(void **state)
{
        (void)state;
        struct sockaddr_storage ss;
        unsigned len = 0;
        assert_int_equal(listen_parse("127.0.0.1:9187", &ss, &len), 0);
        assert_int_equal(ss.ss_family, AF_INET);
        assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 9187);
        assert_int_equal(len, sizeof(struct sockaddr_in));
        assert_int_equal(listen_parse("[::1]:80", &ss, &len), 0);
        assert_int_equal(ss.ss_family, AF_INET6);
        assert_int_equal(listen_parse("localhost:1", NULL, NULL), 0);
        assert_int_equal(listen_parse("0.0.0.0:65535", NULL, NULL), 0);
        static const char *const bad[] = { "", "9187", ":9187", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0",
                "127.0.0.1:65536", "127.0.0.1:91x", "example.com:80", "::1:80", "[::1]80", "[nope]:80" };
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
                assert_int_equal(listen_parse(bad[i], NULL, NULL), -EINVAL);
}

static void test_reject_codes(void **state)
{
        (void)state;
        for (int i = 0; i < N_REJECT_CODES; i++)
                assert_int_equal(reject_code_parse(reject_code_name((RejectCode)i)), i);
        assert_string_equal(reject_code_name(REJECT_FIELD_TOO_LONG), "field_too_long");
        assert_string_equal(reject_code_name(REJECT_UNKNOWN_SKU), "unknown_sku");
        assert_int_equal(reject_code_parse("no such code"), REJECT_OTHER);
        assert_int_equal(reject_code_of_csv(CSV_ERR_BAD_QUOTE), REJECT_QUOTE);
        assert_int_equal(reject_code_of_csv(CSV_ERR_UNTERMINATED_QUOTE), REJECT_QUOTE);
        assert_int_equal(reject_code_of_csv(CSV_ERR_UTF8), REJECT_UTF8);
        assert_int_equal(reject_code_of_csv(CSV_ERR_TOO_MANY_FIELDS), REJECT_FIELD_COUNT);
}

static void test_durations(void **state)
{
        (void)state;
        double v = -1;
        assert_int_equal(parse_duration("30d", &v), 0);
        assert_true(v == 30 * 86400.0);
        assert_int_equal(parse_duration("1.5h", &v), 0);
        assert_true(v == 5400);
        assert_int_equal(parse_duration("90", &v), 0);
        assert_true(v == 90);
        assert_int_equal(parse_duration("15m", &v), 0);
        assert_true(v == 900);
        v = 7;
        static const char *const bad[] = { "", "d", "3x", "-1d", "1dd", " 1d", "1 d", "nan", "inf" };
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
                assert_int_equal(parse_duration(bad[i], &v), -EINVAL);
        assert_true(v == 7); /* untouched on failure */
        char out[32];
        format_duration(30 * 86400.0, out, sizeof out);
        assert_string_equal(out, "30d");
        format_duration(5400, out, sizeof out);
        assert_string_equal(out, "90m");
        format_duration(90, out, sizeof out);
        assert_string_equal(out, "90s");
        format_duration(0.5, out, sizeof out);
        assert_string_equal(out, "0.5s");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_listen_parse),
                cmocka_unit_test(test_durations),
                cmocka_unit_test(test_reject_codes),
                cmocka_unit_test(test_parse_size),
                cmocka_unit_test(test_utf8),
                cmocka_unit_test(test_name_escape),
                cmocka_unit_test(test_dropped_name),
                cmocka_unit_test(test_buf),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
