/* registry.h - the life of a file: incoming|updates -> processing -> done|failed,
 * mirrored in ingest.files and ingest.chunks. Supervisor-side only. */
#pragma once
#include "config.h"
#include "planner.h"

#include <libpq-fe.h>
#include <stdint.h>

/* Creates processing/, done/, failed/ under paths.state and the watched folders. */
int registry_make_dirs(const Config *cfg, char **ret_error);
/* Registers one file found in a watched folder and moves it into processing/
 * (the plan child plans it, planfile.h). -EAGAIN when
 * it should be tried again later (the file could not be moved). */
int registry_register(PGconn *c, const Config *cfg, FileKind kind, const char *name);
/* Registers the wanted files of both folders, oldest first, at most
 * REGISTRY_RESCAN_BATCH of them: a folder of 100,000 files does not hold the
 * loop (the watchdog, the metrics) for minutes; *ret_more counts the files
 * left for the next pass. Files modified in the last second are left for
 * their close event; *ret_deferred counts them. */
#define REGISTRY_RESCAN_BATCH 500
int registry_rescan(PGconn *c, const Config *cfg, int *ret_deferred, size_t *ret_more);
/* After a (re)connect: makes the folders agree with a database that may have
 * lost its last commits (reconcile.h), forgets registrations cut off before the move into
 * processing/ and finishes final moves cut off after the state was committed. Chunks of dead workers
 * are the supervisor's to reset (it knows which workers live). */
int registry_recover(PGconn *c, const Config *cfg);
/* Finished files a full state filesystem kept in processing/ are moved to
 * done/ or failed/ again (the leader calls it every few seconds). */
int registry_retry_moves(PGconn *c, const Config *cfg);
/* Whether the last move found the state filesystem full (STATUS says so). */
bool registry_waiting_for_space(void);
/* Marks the file failed with a reason and moves it to failed/. */
int registry_fail(PGconn *c, const Config *cfg, int64_t file_id, const char *reason);
/* All chunks are done: totals, the reject ratio check, done/ or failed/. */
int registry_finish(PGconn *c, const Config *cfg, int64_t file_id);
/* The watched folder of a kind: incoming/ or updates/. */
const char *registry_folder(const Config *cfg, FileKind kind);
/* Absolute path of a file under processing/. */
char *registry_processing_path(const Config *cfg, const char *path);
