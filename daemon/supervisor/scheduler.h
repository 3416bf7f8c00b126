/* scheduler.h - what the supervisor runs next, read from the database each
 * pass: the plan child of the oldest new file, the build of a deferred key,
 * the next chunks of the oldest loading file, the finish of a loaded file,
 * the products_agg refresh. Files load one at a time in arrival order; a file
 * is planned while the one before it loads, but none of its chunks starts
 * before every earlier file is planned and finished. The decisions are
 * policy.h's; this module owns only its timers (retry and refresh times).
 * It never blocks on a file: scans, key builds and refreshes are children. */
#pragma once
#include "children.h"
#include "config.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct Scheduler Scheduler;

/* This node's part, from the cluster (cluster.h): the leader alone plans,
 * finishes files, builds keys and refreshes products_agg; every node loads
 * chunks, within a window of the lowest unfinished chunks as wide as all
 * live nodes' workers. */
typedef struct SchedulerRole {
        bool leader;
        int cluster_workers;
} SchedulerRole;

/* children is borrowed: the supervisor's. */
Scheduler *scheduler_new(const char *config_path, Children *children, const Config *cfg);
Scheduler *scheduler_free(Scheduler *sc);
/* One pass. Writes the STATUS line into status. 0, or -EIO with *ret_error
 * (naming what was being done) when a statement failed. */
int scheduler_run(Scheduler *sc, PGconn *c, const Config *cfg, const SchedulerRole *role, char *status, size_t size,
        char **ret_error);
/* A plan, key or aggregate child has exited (chunk workers: chunkexit.h).
 * c may be NULL while the database is away. */
void scheduler_child_exited(Scheduler *sc, PGconn *c, const Config *cfg, const Child *child, int status);
/* After a reload: the refresh timer follows the new interval. */
void scheduler_reloaded(Scheduler *sc, const Config *cfg);
