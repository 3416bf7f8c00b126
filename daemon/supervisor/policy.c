/* policy.c - see policy.h. */
#include "policy.h"
#include "backoff.h"

size_t policy_pick_chunks(const ChunkSlot *slots, size_t n, double now, size_t running, int workers, int *ret_nos)
{
        size_t picked = 0;

        for (size_t i = 0; i < n; i++) {
                const ChunkSlot *c = &slots[i];
                if (running + picked >= (size_t)workers)
                        break;
                if (c->state == CHUNK_PENDING && !c->running && c->next_attempt <= now)
                        ret_nos[picked++] = c->no;
        }
        return picked;
}

ExitAction policy_after_exit(Outcome o, int attempts, int max_attempts, double backoff, double *ret_delay)
{
        *ret_delay = 0;
        switch (o) {
        case OUTCOME_DONE: return ACTION_DONE;
        case OUTCOME_NOT_RUN: return ACTION_RELEASE;
        case OUTCOME_BAD_FILE: return ACTION_FAIL_FILE;
        case OUTCOME_NO_SPACE: return ACTION_WAIT_SPACE;
        default: break;
        }
        if (!backoff_may_retry(attempts, max_attempts))
                return ACTION_GIVE_UP;
        *ret_delay = backoff_delay(backoff, attempts);
        return ACTION_RETRY;
}
