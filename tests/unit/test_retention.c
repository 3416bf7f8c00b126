/* test_retention.c - how often the leader prunes: a tenth of the shorter
 * setting that keeps something, between 1 s and 1 h; never when both keep all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "retention.h"

static double every(double history, double done_files)
{
        Config c = { 0 };
        c.retention_history = history;
        c.retention_done_files = done_files;
        return retention_interval(&c);
}

static void test_interval(void **state)
{
        (void)state;
        assert_true(every(0, 0) == 0);
        assert_true(every(30 * 86400.0, 0) == 3600);
        assert_true(every(0, 600) == 60);
        assert_true(every(600, 86400) == 60);
        assert_true(every(86400, 600) == 60);
        assert_true(every(2, 0) == 1);
        assert_true(every(0, 0.5) == 1);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_interval),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
