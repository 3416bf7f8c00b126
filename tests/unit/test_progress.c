/* test_progress.c - ingestctl's progress line and summary: the percent of
 * data rows done, the rate and the ETA from the rows left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "progress.h"

static void test_line_with_rate_and_eta(void **state)
{
        (void)state;
        char out[512];
        FileProgress p = { "loading", 3, 8, 1000, 300, 50, 50 };
        progress_tty_line(out, sizeof out, "p.csv", &p, 100.0);
        /* 400 of 1000 rows done; 600 left at 100 rows/s: 6 s */
        assert_string_equal(out, "p.csv: loading 40%, 100 rows/s, ETA 0:06 (3/8 chunks, 300 loaded, 50 rejected, "
                                 "50 superseded)");
        p.data_rows = 400 + 100 * 3725;
        progress_tty_line(out, sizeof out, "p.csv", &p, 100.0);
        assert_non_null(strstr(out, "ETA 1:02:05 "));
}

static void test_line_before_a_rate(void **state)
{
        (void)state;
        char out[512];
        FileProgress p = { "loading", 0, 8, 1000, 0, 0, 0 };
        progress_tty_line(out, sizeof out, "p.csv", &p, 0);
        assert_string_equal(out, "p.csv: loading 0% (0/8 chunks, 0 loaded, 0 rejected, 0 superseded)");
        FileProgress planning = { "planning 40%", 0, 0, 0, 0, 0, 0 };
        progress_tty_line(out, sizeof out, "p.csv", &planning, 500);
        assert_string_equal(out, "p.csv: planning 40% (0/0 chunks, 0 loaded, 0 rejected, 0 superseded)");
}

static void test_summary(void **state)
{
        (void)state;
        char out[512];
        FileProgress p = { "done", 8, 8, 1000, 900, 40, 60 };
        progress_summary(out, sizeof out, "p.csv", &p, 4.0);
        assert_string_equal(
                out, "p.csv: done in 4.0 s: 1000 rows (900 loaded, 40 rejected, 60 superseded), 250 rows/s");
        assert_int_equal(progress_rows_done(&p), 1000);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_line_with_rate_and_eta),
                cmocka_unit_test(test_line_before_a_rate),
                cmocka_unit_test(test_summary),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
