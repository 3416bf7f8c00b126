/* scheduler.c - see scheduler.h. Within a file at most `workers` chunks run
 * at once, always among the lowest-numbered unfinished ones (policy.h), so
 * the chunk a worker waits for (the previous one of its lane) always has a
 * slot. A file has one lane per worker, so the running chunks are normally one
 * per lane and apply in parallel. */
#include "scheduler.h"
#include "db.h"
#include "deferkey.h"
#include "log.h"
#include "metrics.h"
#include "outcome.h"
#include "policy.h"
#include "registry.h"
#include "retention.h"
#include "state.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_RETRY 5.0

struct Scheduler {
        const char *config_path;
        Children *children;
        double plan_retry_at, key_retry_at, next_aggregate, next_prune;
        int64_t plan_failing; /* the file whose plan child failed plan_attempts times in a row */
        int plan_attempts;
        bool aggregate_wanted;
};

/* One pass: what it works with, and where its status and error go. */
typedef struct Pass {
        Scheduler *sc;
        PGconn *c;
        const Config *cfg;
        const SchedulerRole *role;
        char *status;
        size_t size;
        char **error;
} Pass;

static void set_status(Pass *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_status(Pass *p, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(p->status, p->size, fmt, ap);
        va_end(ap);
}

static int failed(Pass *p, const char *what, char *err)
{
        *p->error = xasprintf("%s: %s", what, err ? err : "error");
        free(err);
        return -EIO;
}

Scheduler *scheduler_new(const char *config_path, Children *children, const Config *cfg)
{
        Scheduler *sc = xcalloc(1, sizeof *sc);

        sc->config_path = config_path;
        sc->children = children;
        scheduler_reloaded(sc, cfg);
        return sc;
}

Scheduler *scheduler_free(Scheduler *sc)
{
        free(sc);
        return NULL;
}

void scheduler_reloaded(Scheduler *sc, const Config *cfg)
{
        sc->next_aggregate = now_monotonic() + cfg->aggregate_interval;
}

static void start_child(Scheduler *sc, Child c, const char *const args[])
{
        pid_t pid = children_start(sc->children, sc->config_path, c, args);

        if (pid < 0)
                log_msg(LOG_ERR, "fork: %s", strerror((int)-pid));
}

/* The claim is committed before the worker forks: a chunk another node
 * claimed first is simply not ours (0). */
static int spawn_chunk(Pass *p, int64_t file_id, int no, const char *path)
{
        char file[32], chunk[32], claim_text[32], *err = NULL;
        int claim = chunk_claim(p->c, file_id, no, p->cfg->node, &err);

        if (claim <= 0)
                return claim < 0 ? failed(p, "claiming a chunk", err) : 0;
        char *full = registry_processing_path(p->cfg, path);
        const char *args[] = { "--worker", file, chunk, p->cfg->node, claim_text, full, NULL };
        snprintf(file, sizeof file, "%" PRId64, file_id);
        snprintf(chunk, sizeof chunk, "%d", no);
        snprintf(claim_text, sizeof claim_text, "%d", claim);
        pid_t pid = children_start(
                p->sc->children, p->sc->config_path, (Child){ 0, CHILD_CHUNK, file_id, no, claim, 0 }, args);
        free(full);
        if (pid >= 0)
                return 0;
        log_msg(LOG_ERR, "fork: %s", strerror((int)-pid));
        ChunkClaim cl = { file_id, no, p->cfg->node, claim };
        return chunk_release(p->c, &cl, CHUNK_PENDING, 0, false, &err) < 0 ? failed(p, "releasing a chunk", err) : 0;
}

/* Files are planned one at a time, in arrival order, by a child (planfile.h),
 * while earlier files load: the loop never scans a file. */
static int maybe_plan(Pass *p)
{
        char *err = NULL;

        if (!p->role->leader || children_count(p->sc->children, CHILD_PLAN) > 0 ||
                now_monotonic() < p->sc->plan_retry_at)
                return 0;
        PGresult *res = db_query(
                p->c, &err, "SELECT id FROM ingest.files WHERE state = " SQL_NEW " ORDER BY id LIMIT 1", 0, NULL);
        if (!res)
                return failed(p, "planning", err);
        if (PQntuples(res) == 1) {
                const char *args[] = { "--plan", PQgetvalue(res, 0, 0), NULL };
                start_child(p->sc, (Child){ 0, CHILD_PLAN, strtoll(PQgetvalue(res, 0, 0), NULL, 10), -1, 0, 0 }, args);
        }
        PQclear(res);
        return 0;
}

/* products' deferred key (deferkey.h) is built by a child: at 10M rows it
 * takes seconds, and the loop must keep answering. 1 while a file whose
 * chunks are over (all done, or the file failed) still defers the key: it is
 * built before anything else loads. */
static int key_first(Pass *p)
{
        char *err = NULL;
        PGresult *res = db_query(p->c, &err,
                "SELECT f.id, f.path FROM ingest.files f WHERE f.deferred_key IS NOT NULL "
                "  AND (f.state <> " SQL_LOADING " OR NOT EXISTS (SELECT 1 FROM ingest.chunks c "
                "       WHERE c.file_id = f.id AND c.state <> " SQL_DONE ")) "
                "ORDER BY f.id LIMIT 1",
                0, NULL);

        if (!res)
                return failed(p, "scheduling", err);
        int pending = PQntuples(res) == 1;
        if (pending && p->role->leader && children_count(p->sc->children, CHILD_KEY) == 0 &&
                now_monotonic() >= p->sc->key_retry_at) {
                const char *args[] = { "--build-key", PQgetvalue(res, 0, 0), NULL };
                start_child(p->sc, (Child){ 0, CHILD_KEY, strtoll(PQgetvalue(res, 0, 0), NULL, 10), -1, 0, 0 }, args);
                set_status(p, "building products' primary key after %s", PQgetvalue(res, 0, 1));
        }
        PQclear(res);
        return pending;
}

/* Before the file's first chunk: a first load defers products' key. */
static int decide_key(Pass *p, int64_t file_id, const char *path)
{
        char *err = NULL;
        int r = deferkey_decide(p->c, file_id, p->cfg->defer_key, &err);

        if (r < 0)
                return failed(p, "deciding on products' key", err);
        if (r > 0)
                log_msg(LOG_INFO, "%s: products is empty: its primary key is built once, after the rows", path);
        return 0;
}

/* The timer recounts (it also catches changes made outside ingestd); after a
 * load the chunks' recorded deltas are folded in, which costs only the names
 * the load changed. */
static void maybe_aggregate(Scheduler *sc, const Config *cfg)
{
        double now = now_monotonic();
        bool due = cfg->aggregate_interval > 0 && now >= sc->next_aggregate;

        if (!(sc->aggregate_wanted || due) || children_count(sc->children, CHILD_AGGREGATE) > 0)
                return;
        sc->aggregate_wanted = false;
        sc->next_aggregate = now + (cfg->aggregate_interval > 0 ? cfg->aggregate_interval : 1e9);
        const char *args[] = { due ? "--aggregate" : "--aggregate-fold", NULL };
        start_child(sc, (Child){ 0, CHILD_AGGREGATE, -1, -1, 0, 0 }, args);
}

/* Retention (retention.h) in a child of its own, off the loop, while
 * nothing else of the leader's runs long: it never holds a lock a load
 * waits on, but it need not compete with a refresh either. */
static void maybe_prune(Scheduler *sc, const Config *cfg)
{
        double now = now_monotonic(), every = retention_interval(cfg);

        if (every <= 0 || now < sc->next_prune || children_count(sc->children, CHILD_PRUNE) > 0)
                return;
        sc->next_prune = now + every;
        const char *args[] = { "--prune", NULL };
        start_child(sc, (Child){ 0, CHILD_PRUNE, -1, -1, 0, 0 }, args);
}

static ChunkSlot chunk_slot(const Pass *p, int64_t file_id, const PGresult *res, int i)
{
        ChunkSlot c = { atoi(PQgetvalue(res, i, 0)), CHUNK_PENDING, 0, false };

        chunk_state_parse(PQgetvalue(res, i, 1), &c.state);
        c.next_attempt = PQgetisnull(res, i, 2) ? 0 : strtod(PQgetvalue(res, i, 2), NULL);
        c.running = children_chunk_running(p->sc->children, file_id, c.no);
        return c;
}

/* Spawns the chunks policy_pick_chunks picks among the lowest unfinished
 * ones, as many as all live nodes have workers. 1 while the file has
 * unfinished chunks, 0 when none. */
static int schedule_file(Pass *p, int64_t file_id, const char *path, int total, double rate)
{
        char ids[32], lim[32], *err = NULL;
        int workers = config_workers(p->cfg), r = 0;
        int window = p->role->cluster_workers > workers ? p->role->cluster_workers : workers;
        const char *prm[2] = { ids, lim };

        snprintf(ids, sizeof ids, "%" PRId64, file_id);
        snprintf(lim, sizeof lim, "%d", window);
        PGresult *res = db_query(p->c, &err,
                "SELECT no, state, extract(epoch FROM next_attempt), extract(epoch FROM now()) FROM ingest.chunks "
                "WHERE file_id = $1 AND state <> " SQL_DONE " ORDER BY no LIMIT $2",
                2, prm);
        if (!res)
                return failed(p, "scheduling", err);
        int left = PQntuples(res);
        ChunkSlot *slots = xcalloc((size_t)left, sizeof *slots);
        int *nos = xcalloc((size_t)left, sizeof *nos);
        for (int i = 0; i < left; i++)
                slots[i] = chunk_slot(p, file_id, res, i);
        double now = left > 0 ? strtod(PQgetvalue(res, 0, 3), NULL) : 0;
        size_t n = policy_pick_chunks(
                slots, (size_t)left, now, children_count(p->sc->children, CHILD_CHUNK), workers, nos);
        PQclear(res);
        for (size_t i = 0; i < n && r == 0; i++)
                r = spawn_chunk(p, file_id, nos[i], path);
        free(slots);
        free(nos);
        if (left > 0)
                set_status(p, "%sloading %s: %d/%d chunks, %.0fk rows/s", p->role->leader ? "leader; " : "", path,
                        total - left < 0 ? 0 : total - left, total, rate / 1000);
        return r < 0 ? r : left > 0;
}

static const char first_file_sql[] = "SELECT id, path, chunks, count(c.*) FILTER (WHERE c.state <> " SQL_DONE "), "
                                     " f.key_decided, f.deferred_key IS NOT NULL, "
                                     " coalesce(sum(c.rows_loaded + c.rows_rejected + c.rows_superseded) "
                                     "          FILTER (WHERE c.state = " SQL_DONE "), 0) "
                                     "   / greatest(extract(epoch FROM now() - f.started_at), 0.001), "
                                     " f.state = " SQL_NEW ", 100.0 * f.planned_bytes / greatest(f.size, 1) "
                                     "FROM ingest.files f LEFT JOIN ingest.chunks c ON c.file_id = f.id "
                                     "WHERE f.state IN (" SQL_NEW ", " SQL_LOADING ") "
                                     "GROUP BY f.id ORDER BY f.id LIMIT 1";

/* The oldest unfinished file: its next chunks, or its finish. 1 when it was
 * finished (the next file may go on), 0 when it is still at work or there is
 * none. */
static int schedule_first_file(Pass *p)
{
        char *err = NULL;
        PGresult *res = db_query(p->c, &err, first_file_sql, 0, NULL);

        if (!res)
                return failed(p, "scheduling", err);
        if (PQntuples(res) == 0 || strcmp(PQgetvalue(res, 0, 7), "t") == 0) { /* none, or still being planned */
                if (PQntuples(res) == 0)
                        set_status(p, "idle");
                else
                        set_status(p, "planning %s: %.0f%%", PQgetvalue(res, 0, 1), atof(PQgetvalue(res, 0, 8)));
                PQclear(res);
                return 0;
        }
        int64_t id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        char *path = xstrdup(PQgetvalue(res, 0, 1));
        int total = atoi(PQgetvalue(res, 0, 2)), left = atoi(PQgetvalue(res, 0, 3));
        bool decided = strcmp(PQgetvalue(res, 0, 4), "t") == 0, deferred = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
        double rate = atof(PQgetvalue(res, 0, 6));
        int r = 0, busy = 0;
        PQclear(res);
        if (left > 0 && !decided && p->role->leader)
                r = decide_key(p, id, path);
        if (r == 0 && left > 0 && (decided || p->role->leader))
                busy = r = schedule_file(p, id, path, total, rate);
        else if (left > 0)
                busy = 1;                /* the leader decides on the key first */
        if (r >= 0 && !busy && deferred) /* the last chunk may have committed since key_first() looked */
                busy = r = key_first(p);
        if (r >= 0 && !busy && !p->role->leader) { /* the leader finishes it; the next file waits */
                set_status(p, "waiting for the leader to finish %s", path);
                busy = 1;
        }
        if (r >= 0 && !busy) {
                registry_finish(p->c, p->cfg, id);
                p->sc->aggregate_wanted = p->sc->aggregate_wanted || p->cfg->aggregate_after_load;
        }
        r = r < 0 ? r : !busy;
        free(path);
        return r;
}

int scheduler_run(Scheduler *sc, PGconn *c, const Config *cfg, const SchedulerRole *role, char *status, size_t size,
        char **ret_error)
{
        Pass p = { sc, c, cfg, role, status, size, ret_error };
        int r = maybe_plan(&p);

        while (r == 0 && (r = key_first(&p)) == 0 && (r = schedule_first_file(&p)) == 1)
                r = 0; /* a file finished: the next one */
        if (r >= 0 && role->leader)
                maybe_aggregate(sc, cfg);
        if (r >= 0 && role->leader)
                maybe_prune(sc, cfg);
        return r < 0 ? r : 0;
}

/* A plan child that could not plan (the database, EMFILE, ...) is tried
 * again with backoff; after retry.max_attempts the file fails. */
#define PLAN_SPACE_WAIT 5.0 /* seconds */

static void plan_exited(Scheduler *sc, PGconn *c, const Config *cfg, const Child *child, int status)
{
        Outcome o = outcome_of_wait_status(status);
        double delay = 0;

        if (o == OUTCOME_DONE) {
                sc->plan_attempts = 0;
                return;
        }
        if (o == OUTCOME_NO_SPACE) { /* a full disk fails no file: planned again later */
                sc->plan_retry_at = now_monotonic() + PLAN_SPACE_WAIT;
                return;
        }
        sc->plan_attempts = sc->plan_failing == child->file_id ? sc->plan_attempts + 1 : 1;
        sc->plan_failing = child->file_id;
        ExitAction a = policy_after_exit(o, sc->plan_attempts, cfg->retry_max_attempts, cfg->retry_backoff, &delay);
        log_msg(LOG_WARNING, "planning file #%" PRId64 " ended: %s (attempt %d of %d)%s", child->file_id,
                outcome_name(o), sc->plan_attempts, cfg->retry_max_attempts,
                a == ACTION_RETRY ? "; trying again" : "; failing the file");
        if (a == ACTION_RETRY) {
                sc->plan_retry_at = now_monotonic() + delay;
                return;
        }
        sc->plan_attempts = 0;
        if (c)
                registry_fail(c, cfg, child->file_id, "could not be planned; see the log");
}

void scheduler_child_exited(Scheduler *sc, PGconn *c, const Config *cfg, const Child *child, int status)
{
        if (child->type == CHILD_PLAN) {
                plan_exited(sc, c, cfg, child, status);
        } else if (child->type == CHILD_KEY && status != 0) {
                log_msg(LOG_WARNING, "building products' primary key failed (exit %d); trying again in %.0f s",
                        outcome_wait_code(status), KEY_RETRY);
                sc->key_retry_at = now_monotonic() + KEY_RETRY;
        } else if (child->type == CHILD_AGGREGATE && status != 0) {
                log_msg(LOG_WARNING, "aggregate refresh failed (exit %d); will try again", outcome_wait_code(status));
                sc->aggregate_wanted = true;
        } else if (child->type == CHILD_AGGREGATE && c) {
                char *err = NULL;
                if (metrics_read_refresh(c, &err) < 0)
                        log_msg(LOG_WARNING, "reading the refresh for the metrics: %s", err);
                free(err);
        }
}
