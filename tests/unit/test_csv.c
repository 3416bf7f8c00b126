/* test_csv.c - the record scanner: RFC 4180 cases, CRLF/LF, quotes, errors,
 * line and offset bookkeeping, and parsing from a record boundary. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "csv.h"

typedef struct Parsed {
        size_t n;
        CsvRecord rec[16];
        char fields[16][8][64];
        size_t nf[16];
} Parsed;

static void parse_all(const char *s, size_t len, size_t max_field, Parsed *out)
{
        CsvReader r;
        CsvRecord rec;

        memset(out, 0, sizeof *out);
        csv_reader_init(&r, s, len, 0, 1, max_field);
        while (csv_next(&r, &rec)) {
                assert_true(out->n < 16);
                out->rec[out->n] = rec;
                out->nf[out->n] = rec.n_fields;
                for (size_t i = 0; i < rec.n_fields && i < 8; i++) {
                        size_t k = csv_field_unescape(&rec.fields[i], out->fields[out->n][i]);
                        out->fields[out->n][i][k] = '\0';
                }
                out->n++;
        }
}

static void test_simple_lf_and_crlf(void **state)
{
        (void)state;
        Parsed p;
        const char *s = "a,b,c\nd,e,f\r\ng,h,i";
        parse_all(s, strlen(s), 100, &p);
        assert_int_equal(p.n, 3);
        assert_string_equal(p.fields[0][2], "c");
        assert_string_equal(p.fields[1][2], "f"); /* CR dropped */
        assert_string_equal(p.fields[2][0], "g");
        assert_int_equal(p.rec[1].offset, 6);
        assert_int_equal(p.rec[1].line, 2);
        assert_int_equal(p.rec[1].len, 7);
        assert_int_equal(p.rec[2].line, 3);
}

static void test_quoted_comma_newline_and_doubled_quote(void **state)
{
        (void)state;
        Parsed p;
        const char *s = "\"x,y\",\"line1\nline2\r\nline3\",\"say \"\"hi\"\"\"\r\nnext,1,2\r\n";
        parse_all(s, strlen(s), 100, &p);
        assert_int_equal(p.n, 2);
        assert_int_equal(p.rec[0].error, CSV_OK);
        assert_string_equal(p.fields[0][0], "x,y");
        assert_string_equal(p.fields[0][1], "line1\nline2\r\nline3");
        assert_string_equal(p.fields[0][2], "say \"hi\"");
        assert_int_equal(p.rec[1].line, 4); /* two LFs inside the quoted field */
        assert_string_equal(p.fields[1][0], "next");
}

static void test_empty_fields_and_blank_lines(void **state)
{
        (void)state;
        Parsed p;
        const char *s = ",,\n\r\n\"\",x,\n";
        parse_all(s, strlen(s), 100, &p);
        assert_int_equal(p.n, 3);
        assert_int_equal(p.nf[0], 3);
        assert_false(p.rec[0].blank);
        assert_true(p.rec[1].blank);
        assert_false(p.rec[2].blank); /* a quoted empty field is data */
        assert_int_equal(p.nf[2], 3);
        assert_string_equal(p.fields[2][2], "");
}

static void test_unterminated_quote_runs_to_end(void **state)
{
        (void)state;
        Parsed p;
        const char *s = "a,b\n\"open,c\nd,e\n";
        parse_all(s, strlen(s), 100, &p);
        assert_int_equal(p.n, 2);
        assert_int_equal(p.rec[1].error, CSV_ERR_UNTERMINATED_QUOTE);
        assert_int_equal(p.rec[1].offset + p.rec[1].len, strlen(s));
}

static void test_stray_quotes_flag_but_keep_boundaries(void **state)
{
        (void)state;
        Parsed p;
        const char *s = "ab\"c,d\n\"q\"x,e\nok,f\n";
        parse_all(s, strlen(s), 100, &p);
        assert_int_equal(p.n, 3);
        assert_int_equal(p.rec[0].error, CSV_ERR_BAD_QUOTE);
        assert_int_equal(p.rec[1].error, CSV_ERR_BAD_QUOTE);
        assert_int_equal(p.rec[2].error, CSV_OK);
        assert_int_equal(p.nf[1], 2);
}

static void test_nul_utf8_and_long_field(void **state)
{
        (void)state;
        Parsed p;
        const char s[] = "a\0b,c\n\xff\xfe,d\nabcdefghijk,e\n\xc3\xa9t\xc3\xa9,f\n";
        parse_all(s, sizeof s - 1, 10, &p);
        assert_int_equal(p.n, 4);
        assert_int_equal(p.rec[0].error, CSV_ERR_NUL);
        assert_int_equal(p.rec[1].error, CSV_ERR_UTF8);
        assert_int_equal(p.rec[2].error, CSV_ERR_FIELD_TOO_LONG);
        assert_int_equal(p.rec[3].error, CSV_OK);
        assert_string_equal(p.fields[3][0], "\xc3\xa9t\xc3\xa9");
}

static void test_skip_utf8_leaves_it_to_csv_record_utf8(void **state)
{
        (void)state;
        const char s[] = "ok,\xff\xfe\na\0b,c\nfine,\xc3\xa9\n";
        CsvReader r;
        CsvRecord rec;

        csv_reader_init(&r, s, sizeof s - 1, 0, 1, 100);
        r.skip_utf8 = true;
        assert_true(csv_next(&r, &rec));
        assert_int_equal(rec.error, CSV_OK); /* not checked while reading */
        assert_false(csv_record_utf8(&rec)); /* but on demand */
        assert_true(csv_next(&r, &rec));
        assert_int_equal(rec.error, CSV_ERR_NUL); /* everything else still is */
        assert_true(csv_next(&r, &rec));
        assert_true(csv_record_utf8(&rec));
        csv_reader_init(&r, s, sizeof s - 1, 0, 1, 100); /* a new reader checks again */
        assert_true(csv_next(&r, &rec));
        assert_int_equal(rec.error, CSV_ERR_UTF8);
}

static void test_overlong_and_surrogate_utf8_rejected(void **state)
{
        (void)state;
        Parsed p;
        const char s[] = "\xc0\xaf\n\xed\xa0\x80\n\xf4\x90\x80\x80\n\xf0\x9f\x98\x80\n";
        parse_all(s, sizeof s - 1, 100, &p);
        assert_int_equal(p.n, 4);
        assert_int_equal(p.rec[0].error, CSV_ERR_UTF8);
        assert_int_equal(p.rec[1].error, CSV_ERR_UTF8);
        assert_int_equal(p.rec[2].error, CSV_ERR_UTF8);
        assert_int_equal(p.rec[3].error, CSV_OK);
}

static void test_too_many_fields(void **state)
{
        (void)state;
        char s[CSV_MAX_FIELDS * 2 + 10];
        size_t n = 0;
        for (int i = 0; i < CSV_MAX_FIELDS + 5; i++)
                s[n++] = ',';
        s[n++] = '\n';
        Parsed p;
        parse_all(s, n, 100, &p);
        assert_int_equal(p.n, 1);
        assert_int_equal(p.rec[0].error, CSV_ERR_TOO_MANY_FIELDS);
        assert_int_equal(p.rec[0].n_fields, CSV_MAX_FIELDS + 6);
}

/* A boundary inside a quoted field is never produced: parsing from every
 * record start gives the same records as parsing the whole. */
static void test_parse_from_boundary_matches_whole(void **state)
{
        (void)state;
        const char *s = "h1,h2\r\n\"a\nb,\"\"c\",d\r\ne,\"f\r\n\"\r\ng,h\n";
        CsvReader whole, part;
        CsvRecord a, b;
        size_t len = strlen(s);

        csv_reader_init(&whole, s, len, 0, 1, 100);
        while (csv_next(&whole, &a)) {
                csv_reader_init(&part, s + a.offset, len - a.offset, a.offset, a.line, 100);
                assert_true(csv_next(&part, &b));
                assert_int_equal(a.offset, b.offset);
                assert_int_equal(a.len, b.len);
                assert_int_equal(a.line, b.line);
                assert_int_equal(a.n_fields, b.n_fields);
        }
}

static void test_cr_only_file_is_one_record(void **state)
{
        (void)state;
        Parsed p;
        const char *s = "a,b\rc,d\re,f\r";
        parse_all(s, strlen(s), 100, &p);
        assert_int_equal(p.n, 1);
        assert_int_equal(p.nf[0], 4);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_simple_lf_and_crlf),
                cmocka_unit_test(test_quoted_comma_newline_and_doubled_quote),
                cmocka_unit_test(test_empty_fields_and_blank_lines),
                cmocka_unit_test(test_unterminated_quote_runs_to_end),
                cmocka_unit_test(test_stray_quotes_flag_but_keep_boundaries),
                cmocka_unit_test(test_nul_utf8_and_long_field),
                cmocka_unit_test(test_overlong_and_surrogate_utf8_rejected),
                cmocka_unit_test(test_skip_utf8_leaves_it_to_csv_record_utf8),
                cmocka_unit_test(test_too_many_fields),
                cmocka_unit_test(test_parse_from_boundary_matches_whole),
                cmocka_unit_test(test_cr_only_file_is_one_record),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
