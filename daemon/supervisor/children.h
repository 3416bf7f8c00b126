/* children.h - the supervisor's live children: what each one is doing, and
 * how one is started (fork, then exec of `ingestd ROLE ...`).
 * In memory only: PostgreSQL holds the durable state. */
#pragma once
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef enum ChildType { CHILD_CHUNK, CHILD_PLAN, CHILD_AGGREGATE, CHILD_KEY, CHILD_PRUNE } ChildType;

typedef struct Child {
        pid_t pid;
        ChildType type;
        int64_t file_id; /* -1 when none */
        int chunk_no;    /* -1 when none */
        int claim;       /* a chunk's: the claim's attempt number (state.h) */
        double started;  /* now_monotonic() at the fork */
} Child;

typedef struct Children Children;

/* mask: the signal mask a child restores before it execs. */
Children *children_new(const sigset_t *mask);
Children *children_free(Children *ch);
size_t children_count(const Children *ch, ChildType type);
size_t children_total(const Children *ch);
const Child *children_at(const Children *ch, size_t i);
bool children_chunk_running(const Children *ch, int64_t file_id, int no);
/* Forks `ingestd -c config_path ARGS... [--debug]` as child c (args ends
 * with NULL; at most 7) and records it. The pid, or -errno. */
pid_t children_start(Children *ch, const char *config_path, Child c, const char *const args[]);
/* Removes the child with pid into *ret; false when it is not ours. */
bool children_take(Children *ch, pid_t pid, Child *ret);
/* Sends sig to every child, or (file_id >= 0) to the chunk workers of that file. */
void children_signal(const Children *ch, int sig, int64_t file_id);
