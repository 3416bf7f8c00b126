/* test_outcome.c - the exit-code contract and the classification of errno. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <sys/wait.h>
#include <sysexits.h>

#include "outcome.h"

/* A wait status as waitpid reports a normal exit with code. */
static int exited(int code) { return (code & 0xff) << 8; }

static void test_contract_round_trip(void **state)
{
        (void)state;
        Outcome all[] = { OUTCOME_DONE, OUTCOME_RETRY, OUTCOME_BAD_FILE, OUTCOME_NOT_RUN, OUTCOME_CRASHED,
                OUTCOME_NO_SPACE };

        assert_int_equal(outcome_exit_code(OUTCOME_DONE), 0);
        assert_int_equal(outcome_exit_code(OUTCOME_RETRY), EX_TEMPFAIL);
        assert_int_equal(outcome_exit_code(OUTCOME_BAD_FILE), EX_DATAERR);
        assert_int_equal(outcome_exit_code(OUTCOME_NOT_RUN), EX_UNAVAILABLE);
        assert_int_equal(outcome_exit_code(OUTCOME_NO_SPACE), EX_CANTCREAT);
        for (size_t i = 0; i < sizeof all / sizeof *all; i++)
                assert_int_equal(outcome_of_wait_status(exited(outcome_exit_code(all[i]))), all[i]);
}

static void test_signal_and_unknown_codes_are_crashes(void **state)
{
        (void)state;
        assert_int_equal(outcome_of_wait_status(9), OUTCOME_CRASHED);           /* killed by SIGKILL */
        assert_int_equal(outcome_of_wait_status(exited(127)), OUTCOME_CRASHED); /* exec failed */
        assert_int_equal(outcome_of_wait_status(exited(1)), OUTCOME_CRASHED);
}

/* Transient errors retry with backoff; errors about the file fail it. */
static void test_errno_classes(void **state)
{
        (void)state;
        int retry[] = { EMFILE, ENFILE, ENOMEM, EAGAIN, EIO, ENOSPC, EINTR };
        int bad[] = { ENOENT, EACCES, EPERM, ELOOP, EISDIR, EINVAL };

        for (size_t i = 0; i < sizeof retry / sizeof *retry; i++) {
                assert_int_equal(outcome_of_errno(-retry[i]), OUTCOME_RETRY);
                assert_int_equal(outcome_of_errno(retry[i]), OUTCOME_RETRY);
        }
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
                assert_int_equal(outcome_of_errno(-bad[i]), OUTCOME_BAD_FILE);
                assert_int_equal(outcome_of_errno(bad[i]), OUTCOME_BAD_FILE);
        }
        assert_int_equal(outcome_of_errno(0), OUTCOME_DONE);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_contract_round_trip),
                cmocka_unit_test(test_signal_and_unknown_codes_are_crashes),
                cmocka_unit_test(test_errno_classes),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
