/* planfile.c - see planfile.h. Runs in a child process of its own: the
 * planner maps the file and hashes it in a second thread, none of which
 * touches the supervisor. */
#include "planfile.h"
#include "db.h"
#include "log.h"
#include "nodes.h"
#include "planner.h"
#include "registry.h"
#include "state.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PROGRESS_EVERY 0.5 /* seconds between progress updates of the file row */

typedef struct PlanJob {
        const Config *cfg;
        PGconn *conn;
        int64_t id;
        char ids[32];
        FileKind kind;
        char *path; /* "ID-NAME" under processing/ */
        double progress_at;
} PlanJob;

/* chunk_size, or more for a file that would have more than max_ranges
 * ranges. Each range is applied lane by lane as one sorted pass over products'
 * key index; on a table far larger than shared_buffers every pass rereads the
 * whole index, so a big file loads faster in fewer, larger ranges (10M rows,
 * 1.7 GB, 2 lanes, chunks phase: 107 ranges 74 s, 14 ranges 58 s, 8 ranges
 * 59 s, 4 ranges 53 s, 2 ranges 52 s). */
static uint64_t range_size(const Config *cfg, int fd)
{
        struct stat st;
        uint64_t at_most = (uint64_t)(cfg->max_ranges > 0 ? cfg->max_ranges : 1);

        if (fstat(fd, &st) < 0 || st.st_size <= 0)
                return cfg->chunk_size;
        uint64_t even = ((uint64_t)st.st_size + at_most - 1) / at_most;
        return even > cfg->chunk_size ? even : cfg->chunk_size;
}

static void on_progress(uint64_t done, uint64_t size, void *ud)
{
        PlanJob *pj = ud;
        double now = now_monotonic();
        char d[32], n[32];
        const char *p[3] = { pj->ids, d, n };

        if (now < pj->progress_at && done < size)
                return;
        pj->progress_at = now + PROGRESS_EVERY;
        snprintf(d, sizeof d, "%" PRIu64, done);
        snprintf(n, sizeof n, "%" PRIu64, size);
        db_exec(pj->conn, NULL,
                "UPDATE ingest.files SET planned_bytes = $2, size = $3 "
                "WHERE id = $1 AND state = " SQL_NEW,
                3, p);
}

/* A leader that lost its lease may still have a plan child at work: the
 * file's advisory lock, held until this process ends, lets one plan it. 1 =
 * ours, 0 = another plan child has it, <0 = error. */
static int lock_file(PlanJob *pj, char **ret_error)
{
        const char *p[1] = { pj->ids };
        int r = db_query_bool(pj->conn, ret_error,
                "SELECT pg_try_advisory_lock(hashtext('ingestd.plan'), ($1::bigint % 2147483647)::int)", 1, p);

        if (r == 0)
                log_msg(LOG_DEBUG, "file #%s: another process plans it", pj->ids);
        return r;
}

/* The file's kind and path, while it is new. 1 = found, 0 = not new (done by
 * an earlier plan child), <0 = error. */
static int read_file_row(PlanJob *pj, char **ret_error)
{
        const char *p[1] = { pj->ids };
        PGresult *res = db_query(pj->conn, ret_error,
                "SELECT kind, path FROM ingest.files "
                "WHERE id = $1 AND state = " SQL_NEW,
                1, p);

        if (!res)
                return -EIO;
        int found = PQntuples(res) == 1;
        if (found) {
                pj->kind = strcmp(PQgetvalue(res, 0, 0), "update") == 0 ? KIND_UPDATE : KIND_INGEST;
                pj->path = xstrdup(PQgetvalue(res, 0, 1));
        }
        PQclear(res);
        return found;
}

static LogCtx plan_ctx(const PlanJob *pj, const char *state, long long rows)
{
        return (LogCtx){ dropped_name(pj->path), pj->id, -1, rows, state };
}

/* One lane per worker of all live nodes, so that every worker has a chunk
 * of each byte range; fixed for the file from here on. */
static int lanes_now(PlanJob *pj)
{
        int mine = config_workers(pj->cfg), all = nodes_live_workers(pj->conn, pj->cfg->takeover_after, NULL);
        return all > mine ? all : mine;
}

static Outcome store(PlanJob *pj, const Plan *plan, double t0)
{
        int lanes = lanes_now(pj);
        char *err = NULL;

        if (file_planned(pj->conn, pj->id, plan, lanes, &err) < 0) {
                log_ctx(LOG_ERR, plan_ctx(pj, NULL, -1), "cannot store the plan: %s", err);
                Outcome o = db_disk_full(err) ? OUTCOME_NO_SPACE : OUTCOME_RETRY;
                free(err);
                return o;
        }
        log_ctx(LOG_INFO, plan_ctx(pj, STATE_LOADING, (long long)plan->data_rows),
                "planned: %" PRIu64 " bytes, %" PRIu64 " data rows, %zu byte ranges x %d lanes (%.2f s), "
                "sha256 %s",
                plan->size, plan->data_rows, plan->n_ranges, lanes, now_monotonic() - t0, plan->sha256);
        return OUTCOME_DONE;
}

/* A file that cannot load: failed with the reason, the reason naming the
 * error; a transient error leaves it new for the next attempt. */
static Outcome plan_failed(PlanJob *pj, const char *full, int r, const char *why)
{
        Outcome o = outcome_of_errno(r);
        char *reason = why ? xstrdup(why) : xasprintf("cannot read %s: %s", full, strerror(-r));

        if (o == OUTCOME_BAD_FILE)
                o = registry_fail(pj->conn, pj->cfg, pj->id, reason) < 0 ? OUTCOME_RETRY : OUTCOME_DONE;
        else
                log_ctx(LOG_WARNING, plan_ctx(pj, NULL, -1), "%s; will try again", reason);
        free(reason);
        return o;
}

static Outcome plan_now(PlanJob *pj)
{
        char *full = registry_processing_path(pj->cfg, pj->path), *err = NULL;
        int fd = open(full, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        Plan plan = { 0 };
        double t0 = now_monotonic();
        int r = fd < 0 ? -errno
                       : planner_plan(
                                 fd, pj->kind, pj->cfg->key, range_size(pj->cfg, fd), on_progress, pj, &plan, &err);
        Outcome o = r == 0 ? store(pj, &plan, t0) : plan_failed(pj, full, r, err);

        if (fd >= 0)
                close(fd);
        plan_done(&plan);
        free(err);
        free(full);
        return o;
}

Outcome planfile_run(const Config *cfg, int64_t id)
{
        PlanJob pj = { .cfg = cfg, .id = id };
        char *err = NULL;
        Outcome o = OUTCOME_RETRY;

        snprintf(pj.ids, sizeof pj.ids, "%" PRId64, id);
        pj.conn = db_connect(cfg->conninfo, &err);
        int r = pj.conn ? lock_file(&pj, &err) : -EIO;
        if (r > 0)
                r = read_file_row(&pj, &err);
        if (r > 0)
                o = plan_now(&pj);
        else if (r == 0)
                o = OUTCOME_DONE;
        else
                log_msg(LOG_WARNING, "file #%" PRId64 ": cannot plan: %s", id, err);
        free(err);
        free(pj.path);
        PQfinish(pj.conn);
        return o;
}
