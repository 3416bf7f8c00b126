/* chunkexit.c - see chunkexit.h. */
#include "chunkexit.h"
#include "backoff.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "outcome.h"
#include "policy.h"
#include "registry.h"
#include "state.h"
#include "util.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

/* One row about the child's chunk ($1 its file, $2 its number), or NULL. */
static PGresult *chunk_query(PGconn *conn, const Child *c, const char *sql)
{
        char file[32], no[32];
        const char *p[2] = { file, no };

        snprintf(file, sizeof file, "%" PRId64, c->file_id);
        snprintf(no, sizeof no, "%d", c->chunk_no);
        PGresult *res = db_query(conn, NULL, sql, 2, p);
        if (res && PQntuples(res) != 1) {
                PQclear(res);
                res = NULL;
        }
        return res;
}

static char *chunk_report(PGconn *conn, const Child *c)
{
        PGresult *res = chunk_query(conn, c,
                "SELECT first_line, coalesce((SELECT n.first_line - 1 FROM ingest.chunks n "
                "WHERE n.file_id = c.file_id AND n.start_offset = c.end_offset LIMIT 1)::text, 'end'), "
                "coalesce(error, 'no error recorded') "
                "FROM ingest.chunks c WHERE file_id = $1 AND no = $2");
        char *report = NULL;

        if (res)
                report = xasprintf("chunk %d (lines %s-%s): %s", c->chunk_no, PQgetvalue(res, 0, 0),
                        PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
        PQclear(res);
        return report ? report : xasprintf("chunk %d", c->chunk_no);
}

static int fail_running_file(PGconn *conn, const Config *cfg, const Children *ch, int64_t file_id, const char *reason)
{
        int r = registry_fail(conn, cfg, file_id, reason);

        children_signal(ch, SIGTERM, file_id);
        return r;
}

/* One line per committed chunk, from the row the worker committed. */
static void log_chunk_done(PGconn *conn, const Child *c)
{
        PGresult *res = chunk_query(conn, c,
                "SELECT f.name, k.rows_loaded, k.rows_rejected, k.rows_superseded, k.attempts, f.chunks "
                "FROM ingest.chunks k JOIN ingest.files f ON f.id = k.file_id "
                "WHERE k.file_id = $1 AND k.no = $2 AND k.state = " SQL_DONE);
        if (res)
                log_ctx(LOG_INFO,
                        (LogCtx){ PQgetvalue(res, 0, 0), c->file_id, c->chunk_no, atoll(PQgetvalue(res, 0, 1)),
                                "chunk-done" },
                        "chunk %d/%s committed: %s loaded, %s rejected, %s superseded (attempt %s)", c->chunk_no,
                        PQgetvalue(res, 0, 5), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3),
                        PQgetvalue(res, 0, 4));
        PQclear(res);
}

/* ingestd_chunks_total: a worker that did not run (a stop, a failed
 * predecessor) counts nowhere. */
static void count_exit(ExitAction action, Outcome o, double seconds)
{
        switch (action) {
        case ACTION_DONE: metrics_chunk_exit(CHUNK_RESULT_DONE, false, seconds); break;
        case ACTION_RETRY: metrics_chunk_exit(CHUNK_RESULT_RETRIED, o == OUTCOME_CRASHED, seconds); break;
        case ACTION_WAIT_SPACE: metrics_chunk_exit(CHUNK_RESULT_RETRIED, false, seconds); break;
        case ACTION_FAIL_FILE:
        case ACTION_GIVE_UP: metrics_chunk_exit(CHUNK_RESULT_FAILED, o == OUTCOME_CRASHED, seconds); break;
        case ACTION_RELEASE: break;
        }
}

/* A full disk: the chunks wait with backoff and use no attempt, so that no
 * file fails because a disk is full; said once a minute, not per chunk, and
 * once more when a chunk commits again. */
#define SPACE_LOG_EVERY 60.0
#define SPACE_MAX_WAIT 30.0 /* seconds: freed space is used soon */

static struct {
        int streak;       /* no-space exits since the last commit */
        double logged_at; /* monotonic, of the last warning */
        double last;      /* monotonic, of the last no-space exit; 0 = none since a commit */
} space;

static int wait_for_space(
        PGconn *conn, const Config *cfg, const ChunkClaim *cl, LogCtx ctx, const char *report, char **ret_error)
{
        double now = now_monotonic(), delay = backoff_delay(cfg->retry_backoff, ++space.streak);

        if (delay > SPACE_MAX_WAIT)
                delay = SPACE_MAX_WAIT;

        space.last = now;
        if (space.logged_at == 0 || now - space.logged_at >= SPACE_LOG_EVERY) {
                space.logged_at = now;
                log_ctx(LOG_WARNING, ctx,
                        "out of disk space: %s; the chunks wait and retry (next in %.1f s), no file fails for it",
                        report, delay);
        }
        return chunk_release(conn, cl, CHUNK_PENDING, delay, false, ret_error);
}

static void space_again(void)
{
        if (space.last > 0)
                log_msg(LOG_INFO, "disk space again: a chunk committed after %d waits", space.streak);
        space.streak = 0;
        space.last = space.logged_at = 0;
}

bool chunkexit_waiting_for_space(void) { return space.last > 0; }

int chunkexit_record(PGconn *conn, const Config *cfg, const Children *ch, const Child *c, int status, char **ret_error)
{
        int code = outcome_wait_code(status), attempts = c->claim, r = 0;
        Outcome o = outcome_of_wait_status(status);
        LogCtx ctx = { NULL, c->file_id, c->chunk_no, -1, NULL };
        ChunkClaim cl = { c->file_id, c->chunk_no, cfg->node, c->claim };
        char *report = NULL;
        double delay = 0;

        if (o != OUTCOME_DONE && o != OUTCOME_NOT_RUN)
                report = chunk_report(conn, c);
        ExitAction action = policy_after_exit(o, attempts, cfg->retry_max_attempts, cfg->retry_backoff, &delay);
        count_exit(action, o, now_monotonic() - c->started);
        switch (action) {
        case ACTION_DONE:
                space_again();
                log_chunk_done(conn, c);
                r = state_wake(conn, ret_error);
                break;
        case ACTION_RELEASE: r = chunk_release(conn, &cl, CHUNK_PENDING, 0, false, ret_error); break;
        case ACTION_WAIT_SPACE: r = wait_for_space(conn, cfg, &cl, ctx, report, ret_error); break;
        case ACTION_FAIL_FILE:
                r = chunk_release(conn, &cl, CHUNK_PENDING, 0, false, ret_error);
                if (r > 0)
                        r = fail_running_file(conn, cfg, ch, c->file_id, report);
                break;
        case ACTION_RETRY:
                log_ctx(LOG_WARNING, ctx, "%s; worker %s %d; attempt %d of %d, retrying in %.1f s", report,
                        code < 0 ? "killed by signal" : "exited with", code < 0 ? -code : code, attempts,
                        cfg->retry_max_attempts, delay);
                r = chunk_release(conn, &cl, CHUNK_PENDING, delay, true, ret_error);
                break;
        case ACTION_GIVE_UP: {
                char *reason = xasprintf("%s; failed %d times", report, attempts);
                r = chunk_release(conn, &cl, CHUNK_FAILED, 0, true, ret_error);
                if (r > 0)
                        r = fail_running_file(conn, cfg, ch, c->file_id, reason);
                free(reason);
                break;
        }
        }
        free(report);
        return r < 0 ? r : 0;
}
