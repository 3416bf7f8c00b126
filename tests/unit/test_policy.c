/* test_policy.c - the supervisor's decisions on a fake clock: which chunks
 * start, lane order, backoff and giving up. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "policy.h"

#define NOW 1000.0

static void test_picks_due_pending_chunks_in_order(void **state)
{
        (void)state;
        ChunkSlot s[] = { { 1, CHUNK_PENDING, 0, false }, { 2, CHUNK_PENDING, 0, false },
                { 3, CHUNK_PENDING, 0, false }, { 4, CHUNK_PENDING, 0, false } };
        int nos[4] = { 0 };

        assert_int_equal(policy_pick_chunks(s, 4, NOW, 0, 4, nos), 4);
        assert_int_equal(nos[0], 1);
        assert_int_equal(nos[3], 4);
}

/* At most `workers` at once, counting those already running. */
static void test_free_slots_bound_the_picks(void **state)
{
        (void)state;
        ChunkSlot s[] = { { 3, CHUNK_LOADING, 0, true }, { 4, CHUNK_PENDING, 0, false },
                { 5, CHUNK_PENDING, 0, false } };
        int nos[3] = { 0 };

        assert_int_equal(policy_pick_chunks(s, 3, NOW, 1, 2, nos), 1);
        assert_int_equal(nos[0], 4);
        assert_int_equal(policy_pick_chunks(s, 3, NOW, 2, 2, nos), 0);
}

/* Only the window (the lowest unfinished chunks, as many as the cluster's
 * workers; the scheduler reads no more) are candidates: with 2 lanes and 2
 * workers, chunk 3 (lane 0's next) never starts while chunks 1 and 2 hold the
 * slots, and a later chunk never overtakes a waiting one of its lane. */
static void test_lane_order(void **state)
{
        (void)state;
        ChunkSlot s[] = { { 1, CHUNK_PENDING, NOW + 5, false }, { 2, CHUNK_LOADING, 0, true },
                { 3, CHUNK_PENDING, 0, false } };
        int nos[3] = { 0 };

        assert_int_equal(policy_pick_chunks(s, 2, NOW, 1, 2, nos), 0); /* 1 backs off; 3 is not a candidate */
        assert_int_equal(policy_pick_chunks(s, 2, NOW + 5, 1, 2, nos), 1);
        assert_int_equal(nos[0], 1);
}

/* Three nodes of one worker each: the window is three chunks wide, so this
 * node takes the third while the other two nodes load the first two (not
 * running here: loading elsewhere), and takes no more than its one slot. */
static void test_window_spans_nodes(void **state)
{
        (void)state;
        ChunkSlot s[] = { { 1, CHUNK_LOADING, 0, false }, { 2, CHUNK_LOADING, 0, false },
                { 3, CHUNK_PENDING, 0, false } };
        ChunkSlot t[] = { { 1, CHUNK_PENDING, 0, false }, { 2, CHUNK_PENDING, 0, false },
                { 3, CHUNK_PENDING, 0, false } };
        int nos[3] = { 0 };

        assert_int_equal(policy_pick_chunks(s, 3, NOW, 0, 1, nos), 1);
        assert_int_equal(nos[0], 3);
        assert_int_equal(policy_pick_chunks(t, 3, NOW, 0, 1, nos), 1);
        assert_int_equal(nos[0], 1);
}

static void test_backoff_due_on_the_fake_clock(void **state)
{
        (void)state;
        ChunkSlot s[] = { { 7, CHUNK_PENDING, NOW + 0.5, false } };
        int nos[1] = { 0 };

        assert_int_equal(policy_pick_chunks(s, 1, NOW, 0, 1, nos), 0);
        assert_int_equal(policy_pick_chunks(s, 1, NOW + 0.49, 0, 1, nos), 0);
        assert_int_equal(policy_pick_chunks(s, 1, NOW + 0.5, 0, 1, nos), 1);
}

static void test_failed_or_running_chunks_are_not_started(void **state)
{
        (void)state;
        ChunkSlot s[] = { { 1, CHUNK_FAILED, 0, false }, { 2, CHUNK_PENDING, 0, true } };
        int nos[2] = { 0 };

        assert_int_equal(policy_pick_chunks(s, 2, NOW, 0, 4, nos), 0);
}

static void test_after_exit(void **state)
{
        (void)state;
        double d = -1;

        assert_int_equal(policy_after_exit(OUTCOME_DONE, 1, 5, 1.0, &d), ACTION_DONE);
        assert_true(d == 0);
        assert_int_equal(policy_after_exit(OUTCOME_NOT_RUN, 3, 5, 1.0, &d), ACTION_RELEASE);
        /* a full disk never uses up the attempts: even after the last one, it waits */
        assert_int_equal(policy_after_exit(OUTCOME_NO_SPACE, 5, 5, 1.0, &d), ACTION_WAIT_SPACE);
        assert_int_equal(policy_after_exit(OUTCOME_NO_SPACE, 1, 5, 1.0, &d), ACTION_WAIT_SPACE);
        assert_int_equal(policy_after_exit(OUTCOME_BAD_FILE, 1, 5, 1.0, &d), ACTION_FAIL_FILE);
        /* retries double the delay from retry.backoff */
        assert_int_equal(policy_after_exit(OUTCOME_RETRY, 1, 5, 1.5, &d), ACTION_RETRY);
        assert_true(d == 1.5);
        assert_int_equal(policy_after_exit(OUTCOME_CRASHED, 3, 5, 1.5, &d), ACTION_RETRY);
        assert_true(d == 6.0);
        /* the fifth failure of five allowed gives up */
        assert_int_equal(policy_after_exit(OUTCOME_RETRY, 4, 5, 1.0, &d), ACTION_RETRY);
        assert_int_equal(policy_after_exit(OUTCOME_CRASHED, 5, 5, 1.0, &d), ACTION_GIVE_UP);
        assert_true(d == 0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_picks_due_pending_chunks_in_order),
                cmocka_unit_test(test_free_slots_bound_the_picks),
                cmocka_unit_test(test_lane_order),
                cmocka_unit_test(test_window_spans_nodes),
                cmocka_unit_test(test_backoff_due_on_the_fake_clock),
                cmocka_unit_test(test_failed_or_running_chunks_are_not_started),
                cmocka_unit_test(test_after_exit),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
