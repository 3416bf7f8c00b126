/* policy.h - the supervisor's decisions as pure functions: which chunks to
 * start next and what a child's exit means. No database, no clock reads: the
 * caller passes what it read and the time (the database's), so unit tests run
 * them on a fake clock. */
#pragma once
#include "outcome.h"
#include "state.h"

#include <stdbool.h>
#include <stddef.h>

/* One of a file's lowest-numbered unfinished chunks, as the scheduler read it. */
typedef struct ChunkSlot {
        int no;
        ChunkState state;
        double next_attempt; /* epoch seconds; 0 = due at once */
        bool running;        /* a child of ours is loading it */
} ChunkSlot;

/* Of the file's lowest unfinished chunks (slots, in chunk order, as many as
 * all live nodes have workers), the numbers of those to start now, into
 * ret_nos (room for n): pending, due at `now`, not running, and no more than
 * this node's free worker slots (workers - running). Taking only the lowest
 * unfinished chunks keeps a lane in file order: the chunk a worker waits for
 * (no - lanes) is among them, so when every slot of every node is busy, the
 * lowest unfinished chunk, which waits for nothing, is running. Returns how
 * many. */
size_t policy_pick_chunks(const ChunkSlot *slots, size_t n, double now, size_t running, int workers, int *ret_nos);

typedef enum ExitAction {
        ACTION_DONE,       /* committed: log it */
        ACTION_RELEASE,    /* did not try: pending again, the attempt not counted */
        ACTION_RETRY,      /* pending again after *ret_delay seconds */
        ACTION_FAIL_FILE,  /* the file cannot load: fail it */
        ACTION_GIVE_UP,    /* attempts used up: the chunk and its file fail */
        ACTION_WAIT_SPACE, /* a disk is full: pending again after a backoff, the attempt not counted */
} ExitAction;

/* What to do after a chunk's worker ended with outcome o, its attempts so far
 * counted (the one that just ended included). */
ExitAction policy_after_exit(Outcome o, int attempts, int max_attempts, double backoff, double *ret_delay);
