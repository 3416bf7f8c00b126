/* test_backoff.c - retry delays double from the base, are capped, and stop at
 * max_attempts; no sleeping, no clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "backoff.h"

static void test_doubling_and_cap(void **state)
{
        (void)state;
        assert_true(backoff_delay(1.0, 0) == 0);
        assert_true(backoff_delay(1.0, 1) == 1.0);
        assert_true(backoff_delay(1.0, 2) == 2.0);
        assert_true(backoff_delay(1.0, 4) == 8.0);
        assert_true(backoff_delay(0.5, 3) == 2.0);
        assert_true(backoff_delay(1.0, 30) == 300.0);
        assert_true(backoff_delay(1.0, 1000000) == 300.0);
}

static void test_attempt_limit(void **state)
{
        (void)state;
        assert_true(backoff_may_retry(0, 5));
        assert_true(backoff_may_retry(4, 5));
        assert_false(backoff_may_retry(5, 5));
        assert_false(backoff_may_retry(1, 1));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_doubling_and_cap),
                cmocka_unit_test(test_attempt_limit),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
