/* state.h - the one owner of the state of ingest.files and ingest.chunks rows.
 * Every statement that moves a file or a chunk from one state to another is a
 * function here; the states are enums with one mapping to their SQL text (the
 * STATE_* macros, also what queries that only read a state use).
 *
 *   file:   (none) --file_register--> new --file_planned--> loading --file_close--> done
 *           (none) --file_register(not a regular file)--> failed
 *           new --file_forget--> (none)          never moved into processing/
 *           new|loading --file_close(failed)--> failed --file_requeue--> loading
 *
 *   chunk:  (file_planned) pending --chunk_claim--> loading --chunk_done--> done
 *           loading --chunk_release--> pending   the worker exited: retry after a delay
 *           loading --chunk_release(failed)--> failed   attempts used up
 *           loading --chunks_reset_orphans--> pending   our node, no live worker (a (re)connect)
 *           loading --chunks_take_over--> pending  its node is dead (no heartbeat)
 *           pending|failed --file_requeue--> pending     ingestctl retry
 *
 * chunk_done runs inside the worker's load transaction: it is the checkpoint.
 * Every other transition is a statement of its own. A transition whose source
 * state does not hold changes nothing (its WHERE says the source state), so a
 * late or repeated call is harmless.
 *
 * A claim is the node's (ingest.chunks.node) before the worker forks, and
 * the attempt number it got tells it from any later claim of the chunk: every
 * transition of a loading chunk names both in its WHERE. Its lease is the
 * node's heartbeat (ingest.nodes). The supervisors' statements take rows with
 * SKIP LOCKED: a row a live transaction holds (a worker, another node) is
 * not theirs, and they never wait for it. */
#pragma once
#include "planner.h"
#include "rejects.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#define STATE_NEW "new"
#define STATE_PENDING "pending"
#define STATE_LOADING "loading"
#define STATE_DONE "done"
#define STATE_FAILED "failed"
/* Each state as an SQL literal, from the one text above: "state = " SQL_DONE. */
#define SQL_NEW "'" STATE_NEW "'"
#define SQL_PENDING "'" STATE_PENDING "'"
#define SQL_LOADING "'" STATE_LOADING "'"
#define SQL_DONE "'" STATE_DONE "'"
#define SQL_FAILED "'" STATE_FAILED "'"

/* Every node's supervisor LISTENs here: a transition another node may act
 * on at once (a file planned or closed, a chunk done or taken over) NOTIFYs
 * it, in the transition's transaction, so that no node waits for its timer. */
#define WAKE_CHANNEL "ingestd_wake"
/* Downstream's channel: a JSON object per finished or failed file and per
 * products_agg refresh, sent in the transaction that records it. */
#define EVENTS_CHANNEL "ingest_events"
/* The event of a file, from its ingest.files row `f`, as json, with the
 * counts by reject code `rejects` (json). The name and error are cut so that
 * the payload stays under NOTIFY's 8000 bytes. */
#define SQL_FILE_EVENT(f, rejects) \
        "json_build_object('event', 'file', 'id', " f ".id, 'name', left(" f ".name, 1024), 'kind', " f ".kind, " \
        "'state', " f ".state, 'rows_loaded', " f ".rows_loaded, 'rows_rejected', " f ".rows_rejected, " \
        "'rows_superseded', " f ".rows_superseded, 'rejects', " rejects ", " \
        "'seconds', round(extract(epoch FROM " f ".finished_at - " f ".registered_at)::numeric, 3), " \
        "'error', left(" f ".error, 2048))"

typedef enum FileState { FILE_NEW, FILE_LOADING, FILE_DONE, FILE_FAILED } FileState;
typedef enum ChunkState { CHUNK_PENDING, CHUNK_LOADING, CHUNK_DONE, CHUNK_FAILED } ChunkState;

const char *file_state_name(FileState s);
const char *chunk_state_name(ChunkState s);
/* 0 and the state, or -EINVAL for a text that names none. */
int file_state_parse(const char *text, FileState *ret);
int chunk_state_parse(const char *text, ChunkState *ret);

/* A chunk's rows, as the worker counted them. */
typedef struct ChunkRows {
        uint64_t loaded, rejected, superseded;
} ChunkRows;

/* Every function returns 0 (or a count, see each) or -EIO with *ret_error. */

/* Inserts file `id` in state new, or failed with `error` (a file that cannot
 * be loaded at all, such as a FIFO). */
int file_register(
        PGconn *c, int64_t id, const char *name, FileKind kind, const char *path, const char *error, char **ret_error);
/* Deletes a file row still in state new. */
int file_forget(PGconn *c, int64_t id, char **ret_error);
/* In one transaction: the plan's chunks (pending), and the file new -> loading. */
int file_planned(PGconn *c, int64_t id, const Plan *plan, int lanes, char **ret_error);
/* What a file came to, for the counters (ret of file_close). */
typedef struct FileSummary {
        FileKind kind;
        int64_t loaded, rejected, superseded;
        double seconds; /* registered to closed */
        uint64_t rejects[N_REJECT_CODES];
} FileSummary;
/* The file's totals from its chunks, and its final state (done or failed),
 * announced in the same statement by NOTIFY EVENTS_CHANNEL (ingestd(8)). 1
 * with *ret filled when the file was new or loading, 0 when it was closed
 * already. */
int file_close(PGconn *c, int64_t id, FileState final, const char *reason, FileSummary *ret, char **ret_error);
/* ingestctl retry: a failed file back to loading, its unfinished chunks pending
 * with their attempts reset. 1 when the file was failed, 0 when not. */
int file_requeue(PGconn *c, int64_t id, char **ret_error);

/* A claim of a chunk by a node. */
typedef struct ChunkClaim {
        int64_t file_id;
        int no;
        const char *node;
        int claim; /* the attempt number chunk_claim returned */
} ChunkClaim;

/* pending -> loading for node: the claim (its attempt number, >= 1), or 0
 * when the chunk was not pending or another transaction holds its row. */
int chunk_claim(PGconn *c, int64_t file_id, int no, const char *node, char **ret_error);
/* Inside the worker's transaction, which holds the row and has checked the
 * claim under the lock: loading -> done with its rows; node and worker_pid
 * stay, as the ones that committed it. No NOTIFY here: a notifying commit
 * holds a lock that serializes such commits, WAL flush included, so the
 * workers' commits would queue; the supervisor wakes the others when it
 * reaps the worker (chunkexit.h). */
int chunk_done(PGconn *c, int64_t file_id, int no, const char *node, const ChunkRows *rows, const char *apply_path,
        char **ret_error);
/* The worker is gone: loading -> pending, due again after delay seconds, or
 * -> failed. count_attempt false takes back the attempt of the claim (the
 * worker did not try). 1 when released, 0 when the claim is no longer
 * current (taken over): then the chunk is someone else's business. */
int chunk_release(PGconn *c, const ChunkClaim *cl, ChunkState to, double delay, bool count_attempt, char **ret_error);
/* node's chunks left loading by workers that are gone (not in live, "file:no"
 * pairs) go back to pending; how many. Also what settles a release that
 * skipped its row because the killed worker's backend had not yet rolled
 * back: the supervisor sweeps with it on every heartbeat. */
int chunks_reset_orphans(PGconn *c, const char *node, const char *const *live, size_t n_live, char **ret_error);
/* Nodes silent for takeover_after seconds are removed from ingest.nodes and
 * the loading chunks of nodes not alive go back to pending, except those
 * whose row a live transaction holds. One row per node concerned: node (''
 * for none), heartbeat age in seconds ('' when it was not removed now),
 * chunks released. NULL with *ret_error on failure. */
PGresult *chunks_take_over(PGconn *c, double takeover_after, char **ret_error);
/* NOTIFY WAKE_CHANNEL, delivered when the transaction commits. Outside a
 * transaction, in one of its own whose commit does not wait for the WAL flush
 * (PostgreSQL holds a cluster-wide lock from a notifying commit's start to
 * its end: a flush there would hold up every other notifier). */
int state_wake(PGconn *c, char **ret_error);
/* The error of the chunk's last attempt, for status and the log (not a transition). */
int chunk_record_error(PGconn *c, const ChunkClaim *cl, const char *error, char **ret_error);
