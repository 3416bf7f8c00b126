/* supervisor.c - the event loop (epoll over signalfd, inotify and a timerfd;
 * no threads, no signal handlers). Signals only change state; the loop does
 * the work. PostgreSQL holds all durable state, so this file keeps in memory
 * only what is live: the children it forked and a few timers. It never parses
 * rows or runs COPY: it plans, spawns, reaps and records.
 *
 * Scheduling: files load one at a time in arrival order; within a file at most
 * `workers` chunks run at once, always the lowest-numbered unfinished ones, so
 * the chunk a worker waits for (the previous one of its lane) always has a
 * slot. A file has one lane per worker, so the running chunks are normally one
 * per lane and apply in parallel. */
#include "supervisor.h"
#include "aggregate.h"
#include "chunkexit.h"
#include "children.h"
#include "db.h"
#include "deferkey.h"
#include "log.h"
#include "outcome.h"
#include "policy.h"
#include "registry.h"
#include "schema.h"
#include "state.h"
#include "util.h"
#include "watcher.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#define TICK_MS 250
#define CONNECT_RETRY 2.0
#define RESCAN_RETRY 2.0
#define KEY_RETRY 5.0

typedef enum SupState { SUP_CONNECTING, SUP_RUNNING, SUP_STOPPING } SupState;
typedef struct Supervisor {
        Config *cfg;
        const char *config_path;
        SupState state;
        bool ready_sent;
        int epoll_fd, signal_fd, timer_fd;
        sigset_t old_mask;
        Watcher *watcher;
        PGconn *conn;
        Children *children;
        double next_connect, rescan_at, next_aggregate, next_watchdog, key_retry_at, plan_retry_at;
        int64_t plan_failing;           /* the file whose plan child failed plan_attempts times in a row */
        int plan_attempts;
        bool aggregate_wanted;
        uint64_t watchdog_usec;
        char *last_db_error;
        char status[256];
} Supervisor;

static void notify_status(Supervisor *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void notify_status(Supervisor *s, const char *fmt, ...)
{
        char buf[256];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        if (strcmp(buf, s->status) == 0)
                return;
        snprintf(s->status, sizeof s->status, "%s", buf);
        sd_notifyf(0, "STATUS=%s", buf);
}

/* ---- database connection ---------------------------------------------- */

static void db_lost(Supervisor *s, const char *what, char *err)
{
        if (s->conn && !db_connection_lost(s->conn)) {
                log_msg(LOG_ERR, "%s: %s", what, err ? err : "error");
                free(err);
                return;
        }
        log_msg(LOG_ERR, "database connection lost (%s): %s; reconnecting", what, err ? err : "");
        free(err);
        PQfinish(s->conn);
        s->conn = NULL;
        if (s->state == SUP_RUNNING)
                s->state = SUP_CONNECTING;
        s->next_connect = now_monotonic() + CONNECT_RETRY;
}

/* Chunks left loading by workers that are gone go back to pending. */
static int reset_orphan_chunks(Supervisor *s)
{
        size_t total = children_total(s->children), n = 0;
        char **live = xcalloc(total, sizeof *live);
        char *err = NULL;

        for (size_t i = 0; i < total; i++) {
                const Child *c = children_at(s->children, i);
                if (c->type == CHILD_CHUNK)
                        live[n++] = xasprintf("%" PRId64 ":%d", c->file_id, c->chunk_no);
        }
        int r = chunks_reset_orphans(s->conn, (const char *const *)live, n, &err);
        for (size_t i = 0; i < n; i++)
                free(live[i]);
        free(live);
        if (r < 0)
                db_lost(s, "resetting chunks", err);
        return r;
}

static void try_connect(Supervisor *s)
{
        char *err = NULL;

        if (now_monotonic() < s->next_connect)
                return;
        s->next_connect = now_monotonic() + CONNECT_RETRY;
        s->conn = db_connect(s->cfg->conninfo, &err);
        if (s->conn && schema_migrate(s->conn, s->cfg->key, &err) < 0) {
                PQfinish(s->conn);
                s->conn = NULL;
        }
        if (!s->conn) {
                if (!s->last_db_error || strcmp(s->last_db_error, err) != 0)
                        log_msg(LOG_ERR, "database unreachable, retrying every %.0f s: %s", CONNECT_RETRY, err);
                notify_status(s, "waiting for the database: %s", err);
                free(s->last_db_error);
                s->last_db_error = err;
                return;
        }
        free(s->last_db_error);
        s->last_db_error = NULL;
        log_msg(LOG_INFO, "connected to the database, schema ready");
        /* our previous workers died with their supervisor; a straggler still
         * committing holds its row lock, and the reset then finds it done */
        if (reset_orphan_chunks(s) < 0 || registry_recover(s->conn, s->cfg) < 0)
                return;
        s->state = SUP_RUNNING;
        s->rescan_at = now_monotonic();
}

/* ---- work --------------------------------------------------------------- */

/* A child that has nothing to claim first: started and released. */
static void start_child(Supervisor *s, Child c, const char *const args[])
{
        int go = -1;
        pid_t pid = children_start(s->children, s->config_path, c, args, &go);

        if (pid < 0)
                log_msg(LOG_ERR, "fork: %s", strerror((int)-pid));
        else
                children_release(go, true);
}

/* A chunk's worker runs only once its claim is committed. */
static void spawn_chunk(Supervisor *s, int64_t file_id, int no, const char *path)
{
        char file[32], chunk[32], *err = NULL, *full = registry_processing_path(s->cfg, path);
        const char *args[] = { "--worker", file, chunk, full, NULL };
        int go = -1;

        snprintf(file, sizeof file, "%" PRId64, file_id);
        snprintf(chunk, sizeof chunk, "%d", no);
        pid_t pid = children_start(s->children, s->config_path, (Child){ 0, CHILD_CHUNK, file_id, no }, args, &go);
        free(full);
        if (pid < 0) {
                log_msg(LOG_ERR, "fork: %s", strerror((int)-pid));
                return;
        }
        int claimed = chunk_claim(s->conn, file_id, no, (int)pid, &err);
        children_release(go, claimed > 0);
        if (claimed < 0)
                db_lost(s, "claiming a chunk", err);
}

/* The timer recounts (it also catches changes made outside ingestd); after a
 * load the chunks' recorded deltas are folded in, which costs only the names
 * the load changed. */
static void spawn_aggregate(Supervisor *s, AggregateMode mode)
{
        const char *args[] = { mode == AGGREGATE_FULL ? "--aggregate" : "--aggregate-fold", NULL };

        start_child(s, (Child){ 0, CHILD_AGGREGATE, -1, -1 }, args);
}

/* products' deferred key (deferkey.h) is built by a child: at 10M rows it
 * takes seconds, and the loop must keep answering. */
static void spawn_key(Supervisor *s, int64_t file_id)
{
        char ids[32];
        const char *args[] = { "--build-key", ids, NULL };

        snprintf(ids, sizeof ids, "%" PRId64, file_id);
        start_child(s, (Child){ 0, CHILD_KEY, file_id, -1 }, args);
}

/* Files are planned one at a time, in arrival order, by a child (planfile.h),
 * while earlier files load: the loop never scans a file. */
static void maybe_plan(Supervisor *s)
{
        char *err = NULL;

        if (children_count(s->children, CHILD_PLAN) > 0 || now_monotonic() < s->plan_retry_at)
                return;
        PGresult *res = db_query(s->conn, &err, "SELECT id FROM ingest.files WHERE state = " SQL_STATE(STATE_NEW)
                                                " ORDER BY id LIMIT 1", 0, NULL);
        if (!res) {
                db_lost(s, "planning", err);
                return;
        }
        if (PQntuples(res) == 1) {
                const char *args[] = { "--plan", PQgetvalue(res, 0, 0), NULL };
                start_child(s, (Child){ 0, CHILD_PLAN, strtoll(PQgetvalue(res, 0, 0), NULL, 10), -1 }, args);
        }
        PQclear(res);
}

/* A plan child that could not plan (the database, EMFILE, ...) is tried
 * again with backoff; after retry.max_attempts the file fails. */
static void plan_exited(Supervisor *s, const Child *c, int status)
{
        Outcome o = outcome_of_wait_status(status);
        double delay = 0;

        if (o == OUTCOME_DONE) {
                s->plan_attempts = 0;
                return;
        }
        s->plan_attempts = s->plan_failing == c->file_id ? s->plan_attempts + 1 : 1;
        s->plan_failing = c->file_id;
        ExitAction a = policy_after_exit(o, s->plan_attempts, s->cfg->retry_max_attempts, s->cfg->retry_backoff,
                                         &delay);
        log_msg(LOG_WARNING, "planning file #%" PRId64 " ended: %s (attempt %d of %d)%s", c->file_id,
                outcome_name(o), s->plan_attempts, s->cfg->retry_max_attempts,
                a == ACTION_RETRY ? "; trying again" : "; failing the file");
        if (a == ACTION_RETRY) {
                s->plan_retry_at = now_monotonic() + delay;
                return;
        }
        s->plan_attempts = 0;
        if (s->conn)
                registry_fail(s->conn, s->cfg, c->file_id, "could not be planned; see the log");
}

/* True while a file whose chunks are over (all done, or the file failed)
 * still defers products' key: it is built before anything else loads. */
static bool key_first(Supervisor *s)
{
        char *err = NULL;
        PGresult *res = db_query(s->conn, &err,
                "SELECT f.id, f.path FROM ingest.files f WHERE f.deferred_key IS NOT NULL "
                "  AND (f.state <> " SQL_STATE(STATE_LOADING) " OR NOT EXISTS (SELECT 1 FROM ingest.chunks c "
                "       WHERE c.file_id = f.id AND c.state <> " SQL_STATE(STATE_DONE) ")) "
                "ORDER BY f.id LIMIT 1", 0, NULL);

        if (!res) {
                db_lost(s, "scheduling", err);
                return true;
        }
        bool pending = PQntuples(res) == 1;
        if (pending && children_count(s->children, CHILD_KEY) == 0 && now_monotonic() >= s->key_retry_at) {
                spawn_key(s, strtoll(PQgetvalue(res, 0, 0), NULL, 10));
                notify_status(s, "building products' primary key after %s", PQgetvalue(res, 0, 1));
        }
        PQclear(res);
        return pending;
}

/* Before the file's first chunk: a first load defers products' key. */
static void decide_key(Supervisor *s, int64_t file_id, const char *path)
{
        char *err = NULL;
        int r = deferkey_decide(s->conn, file_id, s->cfg->defer_key, &err);

        if (r < 0)
                db_lost(s, "deciding on products' key", err);
        else if (r > 0)
                log_msg(LOG_INFO, "%s: products is empty: its primary key is built once, after the rows", path);
}

static void maybe_aggregate(Supervisor *s)
{
        double now = now_monotonic();
        bool due = s->cfg->aggregate_interval > 0 && now >= s->next_aggregate;

        if (!(s->aggregate_wanted || due) || children_count(s->children, CHILD_AGGREGATE) > 0)
                return;
        s->aggregate_wanted = false;
        s->next_aggregate = now + (s->cfg->aggregate_interval > 0 ? s->cfg->aggregate_interval : 1e9);
        spawn_aggregate(s, due ? AGGREGATE_FULL : AGGREGATE_FOLD);
}

static ChunkSlot chunk_slot(const Supervisor *s, int64_t file_id, const PGresult *res, int i)
{
        ChunkSlot c = { atoi(PQgetvalue(res, i, 0)), CHUNK_PENDING, 0, false };

        chunk_state_parse(PQgetvalue(res, i, 1), &c.state);
        c.next_attempt = PQgetisnull(res, i, 2) ? 0 : strtod(PQgetvalue(res, i, 2), NULL);
        c.running = children_chunk_running(s->children, file_id, c.no);
        return c;
}

/* Spawns the chunks policy_pick_chunks picks among the lowest `workers`
 * unfinished ones. Returns false when the file has no unfinished chunk left. */
static bool schedule_file(Supervisor *s, int64_t file_id, const char *path, int total, double rate)
{
        char ids[32], lim[32], *err = NULL;
        int workers = config_workers(s->cfg);
        const char *p[2] = { ids, lim };

        snprintf(ids, sizeof ids, "%" PRId64, file_id);
        snprintf(lim, sizeof lim, "%d", workers);
        PGresult *res = db_query(s->conn, &err,
                "SELECT no, state, extract(epoch FROM next_attempt), extract(epoch FROM now()) FROM ingest.chunks "
                "WHERE file_id = $1 AND state <> " SQL_STATE(STATE_DONE) " ORDER BY no LIMIT $2", 2, p);
        if (!res) {
                db_lost(s, "scheduling", err);
                return true;
        }
        int left = PQntuples(res);
        ChunkSlot *slots = xcalloc((size_t)left, sizeof *slots);
        int *nos = xcalloc((size_t)left, sizeof *nos);
        for (int i = 0; i < left; i++)
                slots[i] = chunk_slot(s, file_id, res, i);
        double now = left > 0 ? strtod(PQgetvalue(res, 0, 3), NULL) : 0;
        size_t n = policy_pick_chunks(slots, (size_t)left, now, children_count(s->children, CHILD_CHUNK), workers, nos);
        PQclear(res);
        for (size_t i = 0; i < n && s->conn; i++)
                spawn_chunk(s, file_id, nos[i], path);
        free(slots);
        free(nos);
        if (left > 0)
                notify_status(s, "loading %s: %d/%d chunks, %.0fk rows/s", path,
                              total - left < 0 ? 0 : total - left, total, rate / 1000);
        return left > 0;
}

static void schedule(Supervisor *s)
{
        char *err = NULL;

        if (key_first(s))
                return;
        PGresult *res = db_query(s->conn, &err,
                "SELECT id, path, chunks, count(c.*) FILTER (WHERE c.state <> " SQL_STATE(STATE_DONE) "), "
                " f.key_decided, f.deferred_key IS NOT NULL, "
                " coalesce(sum(c.rows_loaded + c.rows_rejected + c.rows_superseded) "
                "          FILTER (WHERE c.state = " SQL_STATE(STATE_DONE) "), 0) "
                "   / greatest(extract(epoch FROM now() - f.started_at), 0.001), "
                " f.state = " SQL_STATE(STATE_NEW) ", 100.0 * f.planned_bytes / greatest(f.size, 1) "
                "FROM ingest.files f LEFT JOIN ingest.chunks c ON c.file_id = f.id "
                "WHERE f.state IN (" SQL_STATE(STATE_NEW) ", " SQL_STATE(STATE_LOADING) ") "
                "GROUP BY f.id ORDER BY f.id LIMIT 1", 0, NULL);

        if (!res) {
                db_lost(s, "scheduling", err);
                return;
        }
        if (PQntuples(res) == 0) {
                PQclear(res);
                notify_status(s, "idle");
                return;
        }
        if (strcmp(PQgetvalue(res, 0, 7), "t") == 0) {   /* no chunk starts before earlier files are planned */
                notify_status(s, "planning %s: %.0f%%", PQgetvalue(res, 0, 1), atof(PQgetvalue(res, 0, 8)));
                PQclear(res);
                return;
        }
        int64_t id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        char *path = xstrdup(PQgetvalue(res, 0, 1));
        int total = atoi(PQgetvalue(res, 0, 2)), left = atoi(PQgetvalue(res, 0, 3));
        bool decided = strcmp(PQgetvalue(res, 0, 4), "t") == 0;
        bool deferred = strcmp(PQgetvalue(res, 0, 5), "t") == 0;
        double rate = atof(PQgetvalue(res, 0, 6));
        PQclear(res);
        if (left > 0 && !decided)
                decide_key(s, id, path);
        /* the last chunk may have committed since key_first() looked */
        if (!s->conn || (left > 0 && schedule_file(s, id, path, total, rate)) || (deferred && key_first(s))) {
                free(path);
                return;
        }
        registry_finish(s->conn, s->cfg, id);
        s->aggregate_wanted = s->aggregate_wanted || s->cfg->aggregate_after_load;
        free(path);
        schedule(s); /* the next file */
}

static void rescan(Supervisor *s)
{
        int deferred = 0;

        s->rescan_at = 0;
        if (registry_rescan(s->conn, s->cfg, &deferred) < 0 && db_connection_lost(s->conn))
                db_lost(s, "rescanning", NULL);
        if (deferred > 0)
                s->rescan_at = now_monotonic() + RESCAN_RETRY;
}

/* ---- reaping ------------------------------------------------------------ */

static void reap(Supervisor *s)
{
        int status;
        pid_t pid;
        Child c;

        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                if (!children_take(s->children, pid, &c))
                        continue;
                if (c.type == CHILD_PLAN) {
                        plan_exited(s, &c, status);
                        continue;
                }
                if (c.type == CHILD_KEY) {
                        if (status != 0) {
                                log_msg(LOG_WARNING, "building products' primary key failed (exit %d); "
                                        "trying again in %.0f s", chunkexit_code(status), KEY_RETRY);
                                s->key_retry_at = now_monotonic() + KEY_RETRY;
                        }
                        continue;
                }
                if (c.type == CHILD_AGGREGATE) {
                        if (status != 0)
                                log_msg(LOG_WARNING, "aggregate refresh failed (exit %d); will try again",
                                        chunkexit_code(status));
                        s->aggregate_wanted = s->aggregate_wanted || status != 0;
                        continue;
                }
                char *err = NULL;
                /* without a connection reset_orphan_chunks() settles it after the reconnect */
                if (s->conn && chunkexit_record(s->conn, s->cfg, s->children, &c, status, &err) < 0)
                        db_lost(s, "recording a worker's exit", err);
        }
}

/* ---- signals, reload, timers -------------------------------------------- */

static void carry_key(const ConfigKey *k, void *ud)
{
        log_msg(k->reloadable ? LOG_INFO : LOG_WARNING, "reload: %s changed%s", k->name,
                k->reloadable ? "" : ", which needs a restart; keeping the running value");
        (void)ud;
}

static void reload(Supervisor *s)
{
        Config *next = NULL;
        char *err = NULL;

        sd_notify(0, "RELOADING=1");
        if (config_load(s->config_path, &next, &err) < 0) {
                log_msg(LOG_ERR, "reload failed, keeping the running configuration: %s", err);
                free(err);
        } else {
                config_diff(s->cfg, next, carry_key, NULL);
                config_carry_restart_keys(next, s->cfg);
                config_free(s->cfg);
                s->cfg = next;
                s->next_aggregate = now_monotonic() + s->cfg->aggregate_interval;
        }
        sd_notify(0, "READY=1");
}

static void begin_stop(Supervisor *s, int sig)
{
        if (s->state == SUP_STOPPING)
                return;
        log_msg(LOG_INFO, "%s: no new chunks; waiting for %zu running children", strsignal(sig),
                children_total(s->children));
        sd_notify(0, "STOPPING=1");
        s->state = SUP_STOPPING;
        children_signal(s->children, SIGTERM, -1);
}

static void on_signal(Supervisor *s)
{
        struct signalfd_siginfo si;

        while (read(s->signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
                if (si.ssi_signo == SIGCHLD)
                        reap(s);
                else if (si.ssi_signo == SIGHUP)
                        reload(s);
                else
                        begin_stop(s, (int)si.ssi_signo);
        }
}

static void on_file(FileKind kind, const char *name, void *ud)
{
        Supervisor *s = ud;

        if (!name || !s->conn) {
                s->rescan_at = now_monotonic(); /* overflow, or no database yet */
                return;
        }
        if (registry_register(s->conn, s->cfg, kind, name) == -EAGAIN)
                s->rescan_at = now_monotonic() + RESCAN_RETRY;
        else if (db_connection_lost(s->conn))
                db_lost(s, "registering a file", NULL);
}

static void feed_watchdog(Supervisor *s)
{
        double now = now_monotonic();

        if (s->watchdog_usec && now >= s->next_watchdog) {
                sd_notify(0, "WATCHDOG=1");
                s->next_watchdog = now + (double)s->watchdog_usec / 2e6;
        }
}

static void on_tick(Supervisor *s)
{
        uint64_t expirations;

        if (read(s->timer_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
                log_msg(LOG_WARNING, "timerfd: %s", strerror(errno));
        feed_watchdog(s);
}

/* One pass of work after any event; cheap when there is nothing to do. */
static void work(Supervisor *s)
{
        if (s->state == SUP_CONNECTING)
                try_connect(s);
        if (s->state != SUP_RUNNING || !s->conn)
                return;
        if (s->rescan_at > 0 && now_monotonic() >= s->rescan_at)
                rescan(s);
        if (!s->ready_sent && s->conn) {
                sd_notify(0, "READY=1");
                s->ready_sent = true;
                log_msg(LOG_INFO, "ready: watching %s and %s with %d workers", s->cfg->incoming,
                        s->cfg->updates, config_workers(s->cfg));
        }
        if (s->conn)
                maybe_plan(s);
        if (s->conn)
                schedule(s);
        if (s->conn)
                maybe_aggregate(s);
}

/* ---- setup -------------------------------------------------------------- */

static int add_fd(Supervisor *s, int fd)
{
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
        return epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static int setup(Supervisor *s)
{
        sigset_t mask;
        char *err = NULL;
        int r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, &s->old_mask);
        s->children = children_new(&s->old_mask);
        if (registry_make_dirs(s->cfg, &err) < 0) {
                log_msg(LOG_ERR, "cannot create folders: %s", err);
                free(err);
                return -EINVAL;
        }
        r = watcher_new(s->cfg->incoming, s->cfg->updates, &s->watcher);
        if (r < 0) {
                log_msg(LOG_ERR, "cannot watch %s and %s: %s", s->cfg->incoming, s->cfg->updates, strerror(-r));
                return r;
        }
        s->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        s->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        s->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (s->signal_fd < 0 || s->timer_fd < 0 || s->epoll_fd < 0)
                return -errno;
        struct itimerspec its = { { 0, TICK_MS * 1000000L }, { 0, TICK_MS * 1000000L } };
        timerfd_settime(s->timer_fd, 0, &its, NULL);
        if ((r = add_fd(s, s->signal_fd)) < 0 || (r = add_fd(s, s->timer_fd)) < 0 ||
            (r = add_fd(s, watcher_fd(s->watcher))) < 0)
                return r;
        if (sd_watchdog_enabled(0, &s->watchdog_usec) <= 0)
                s->watchdog_usec = 0;
        s->next_aggregate = now_monotonic() + s->cfg->aggregate_interval;
        return 0;
}

static void teardown(Supervisor *s)
{
        watcher_free(s->watcher);
        if (s->epoll_fd >= 0) close(s->epoll_fd);
        if (s->signal_fd >= 0) close(s->signal_fd);
        if (s->timer_fd >= 0) close(s->timer_fd);
        PQfinish(s->conn);
        children_free(s->children);
        free(s->last_db_error);
        config_free(s->cfg);
}

int supervisor_run(Config *cfg, const char *config_path)
{
        Supervisor s = { .cfg = cfg, .config_path = config_path, .state = SUP_CONNECTING,
                         .epoll_fd = -1, .signal_fd = -1, .timer_fd = -1 };
        int r = setup(&s);

        while (r == 0 && !(s.state == SUP_STOPPING && children_total(s.children) == 0)) {
                struct epoll_event ev[8];
                work(&s);
                int n = epoll_wait(s.epoll_fd, ev, 8, -1);
                if (n < 0 && errno != EINTR) {
                        r = -errno;
                        break;
                }
                for (int i = 0; i < n; i++) {
                        int fd = ev[i].data.fd;
                        if (fd == s.signal_fd)
                                on_signal(&s);
                        else if (fd == s.timer_fd)
                                on_tick(&s);
                        else if (s.state != SUP_STOPPING && watcher_dispatch(s.watcher, on_file, &s) < 0)
                                log_msg(LOG_ERR, "inotify: %s", strerror(errno));
                }
        }
        if (r == 0)
                log_msg(LOG_INFO, "stopped");
        teardown(&s);
        return r == 0 ? 0 : EX_OSERR;
}
