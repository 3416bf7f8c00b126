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
#include "backoff.h"
#include "db.h"
#include "deferkey.h"
#include "log.h"
#include "lookahead.h"
#include "registry.h"
#include "schema.h"
#include "util.h"
#include "watcher.h"
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#define TICK_MS 250
#define CONNECT_RETRY 2.0
#define RESCAN_RETRY 2.0
#define KEY_RETRY 5.0

typedef enum SupState { SUP_CONNECTING, SUP_RUNNING, SUP_STOPPING } SupState;
typedef enum ChildType { CHILD_CHUNK, CHILD_AGGREGATE, CHILD_KEY } ChildType;

typedef struct Child {
        pid_t pid;
        ChildType type;
        int64_t file_id;
        int chunk_no;
} Child;

/* A chunk's key as the two text parameters of a query ($1 file id, $2 number). */
typedef struct ChunkKey {
        char file[32], no[32];
} ChunkKey;

static ChunkKey chunk_key(int64_t file_id, int no)
{
        ChunkKey k;

        snprintf(k.file, sizeof k.file, "%" PRId64, file_id);
        snprintf(k.no, sizeof k.no, "%d", no);
        return k;
}

typedef struct Supervisor {
        Config *cfg;
        const char *config_path;
        SupState state;
        bool ready_sent;
        int epoll_fd, signal_fd, timer_fd;
        sigset_t old_mask;
        Watcher *watcher;
        PGconn *conn;
        Child *children;
        size_t n_children, cap_children;
        double next_connect, rescan_at, next_aggregate, next_watchdog, key_retry_at;
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

/* ---- children ---------------------------------------------------------- */

static size_t count_children(const Supervisor *s, ChildType type)
{
        size_t n = 0;

        for (size_t i = 0; i < s->n_children; i++)
                n += s->children[i].type == type;
        return n;
}

static bool chunk_running(const Supervisor *s, int64_t file_id, int no)
{
        for (size_t i = 0; i < s->n_children; i++)
                if (s->children[i].type == CHILD_CHUNK && s->children[i].file_id == file_id &&
                    s->children[i].chunk_no == no)
                        return true;
        return false;
}

static void add_child(Supervisor *s, Child c)
{
        if (s->n_children == s->cap_children) {
                s->cap_children = s->cap_children ? s->cap_children * 2 : 8;
                s->children = xrealloc(s->children, s->cap_children * sizeof *s->children);
        }
        s->children[s->n_children++] = c;
}

static bool take_child(Supervisor *s, pid_t pid, Child *ret)
{
        for (size_t i = 0; i < s->n_children; i++)
                if (s->children[i].pid == pid) {
                        *ret = s->children[i];
                        s->children[i] = s->children[--s->n_children];
                        return true;
                }
        return false;
}

/* Forks a child that waits for a "go" byte on *ret_go before it execs
 * `ingestd ARGS...`, so the parent can record it first. The child dies with us. */
static pid_t spawn(Supervisor *s, char *const argv[], int *ret_go)
{
        pid_t parent = getpid();
        int p[2];

        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0) {
                close(p[0]);
                close(p[1]);
                return -errno;
        }
        if (pid == 0) {
                char go = 0;
                close(p[1]);
                sigprocmask(SIG_SETMASK, &s->old_mask, NULL);
                if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                        _exit(127);
                if (read(p[0], &go, 1) != 1 || go != 'g')
                        _exit(127);
                execv("/proc/self/exe", argv);
                _exit(127);
        }
        close(p[0]);
        *ret_go = p[1];
        return pid;
}

static void release(int go_fd, bool go)
{
        if (go && write(go_fd, "g", 1) != 1)
                log_msg(LOG_ERR, "cannot start child: %s", strerror(errno));
        close(go_fd);
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

/* Chunks left 'loading' by workers that are gone go back to 'pending'. */
static int reset_orphan_chunks(Supervisor *s)
{
        Buf live = { 0 };
        char *err = NULL;

        buf_append(&live, "{", 1);
        for (size_t i = 0; i < s->n_children; i++) {
                char *e = xasprintf("%s\"%" PRId64 ":%d\"", live.len > 1 ? "," : "",
                                    s->children[i].file_id, s->children[i].chunk_no);
                buf_append(&live, e, strlen(e));
                free(e);
        }
        buf_append(&live, "}", 2);
        const char *p[1] = { live.data };
        int r = db_exec(s->conn, &err,
                        "UPDATE ingest.chunks SET state = 'pending', worker_pid = NULL WHERE state = 'loading' "
                        "AND NOT (file_id::text || ':' || no::text = ANY ($1::text[]))", 1, p);
        buf_free(&live);
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
         * committing holds its row lock, and the reset then finds 'done' */
        if (reset_orphan_chunks(s) < 0 || registry_recover(s->conn, s->cfg) < 0)
                return;
        s->state = SUP_RUNNING;
        s->rescan_at = now_monotonic();
}

/* ---- work --------------------------------------------------------------- */

static void spawn_chunk(Supervisor *s, int64_t file_id, int no, const char *path)
{
        ChunkKey k = chunk_key(file_id, no);
        char pids[32], *err = NULL;
        char *full = registry_processing_path(s->cfg, path);
        char *argv[] = { "ingestd", "-c", (char *)s->config_path, "--worker", k.file, k.no, full,
                         log_get_level() >= LOG_DEBUG ? "--debug" : NULL, NULL };
        int go = -1;

        pid_t pid = spawn(s, argv, &go);
        if (pid < 0) {
                log_msg(LOG_ERR, "fork: %s", strerror((int)-pid));
                free(full);
                return;
        }
        snprintf(pids, sizeof pids, "%d", (int)pid);
        const char *p[3] = { k.file, k.no, pids };
        PGresult *res = db_query(s->conn, &err,
                "UPDATE ingest.chunks SET state = 'loading', attempts = attempts + 1, worker_pid = $3, "
                "started_at = now(), lease_until = now() + interval '1 hour' "
                "WHERE file_id = $1 AND no = $2 AND state = 'pending'", 3, p);
        bool claimed = res && strcmp(PQcmdTuples(res), "1") == 0;
        PQclear(res);
        release(go, claimed);
        add_child(s, (Child){ pid, CHILD_CHUNK, file_id, no });
        if (!res)
                db_lost(s, "claiming a chunk", err);
        free(full);
}

/* A child that has nothing to claim first: spawned, released, recorded. */
static void start_child(Supervisor *s, char *const argv[], Child c)
{
        int go = -1;
        pid_t pid = spawn(s, argv, &go);

        if (pid < 0) {
                log_msg(LOG_ERR, "fork: %s", strerror((int)-pid));
                return;
        }
        release(go, true);
        c.pid = pid;
        add_child(s, c);
}

/* The timer recounts (it also catches changes made outside ingestd); after a
 * load the chunks' recorded deltas are folded in, which costs only the names
 * the load changed. */
static void spawn_aggregate(Supervisor *s, AggregateMode mode)
{
        char *argv[] = { "ingestd", "-c", (char *)s->config_path,
                         mode == AGGREGATE_FULL ? "--aggregate" : "--aggregate-fold",
                         log_get_level() >= LOG_DEBUG ? "--debug" : NULL, NULL };

        start_child(s, argv, (Child){ 0, CHILD_AGGREGATE, -1, -1 });
}

/* products' deferred key (deferkey.h) is built by a child: at 10M rows it
 * takes seconds, and the loop must keep answering. */
static void spawn_key(Supervisor *s, int64_t file_id)
{
        char ids[32];
        snprintf(ids, sizeof ids, "%" PRId64, file_id);
        char *argv[] = { "ingestd", "-c", (char *)s->config_path, "--build-key", ids,
                         log_get_level() >= LOG_DEBUG ? "--debug" : NULL, NULL };

        start_child(s, argv, (Child){ 0, CHILD_KEY, file_id, -1 });
}

/* True while a file whose chunks are over (all done, or the file failed)
 * still defers products' key: it is built before anything else loads. */
static bool key_first(Supervisor *s)
{
        char *err = NULL;
        PGresult *res = db_query(s->conn, &err,
                "SELECT f.id, f.path FROM ingest.files f WHERE f.deferred_key IS NOT NULL AND (f.state <> 'loading' "
                "  OR NOT EXISTS (SELECT 1 FROM ingest.chunks c WHERE c.file_id = f.id AND c.state <> 'done')) "
                "ORDER BY f.id LIMIT 1", 0, NULL);

        if (!res) {
                db_lost(s, "scheduling", err);
                return true;
        }
        bool pending = PQntuples(res) == 1;
        if (pending && count_children(s, CHILD_KEY) == 0 && now_monotonic() >= s->key_retry_at) {
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
        int r = deferkey_decide(s->conn, file_id, s->cfg->defer_key, lookahead_capacity(LOOKAHEAD_BYTES), &err);

        if (r < 0)
                db_lost(s, "deciding on products' key", err);
        else if (r > 0)
                log_msg(LOG_INFO, "%s: products is empty: its primary key is built once, after the rows", path);
}

static void maybe_aggregate(Supervisor *s)
{
        double now = now_monotonic();
        bool due = s->cfg->aggregate_interval > 0 && now >= s->next_aggregate;

        if (!(s->aggregate_wanted || due) || count_children(s, CHILD_AGGREGATE) > 0)
                return;
        s->aggregate_wanted = false;
        s->next_aggregate = now + (s->cfg->aggregate_interval > 0 ? s->cfg->aggregate_interval : 1e9);
        spawn_aggregate(s, due ? AGGREGATE_FULL : AGGREGATE_FOLD);
}

/* Spawns the due pending chunks among the lowest `workers` unfinished ones.
 * Returns false when the file has no unfinished chunk left. */
static bool schedule_file(Supervisor *s, int64_t file_id, const char *path, int total, double rate)
{
        char ids[32], lim[32], *err = NULL;
        int workers = config_workers(s->cfg);
        const char *p[2] = { ids, lim };

        snprintf(ids, sizeof ids, "%" PRId64, file_id);
        snprintf(lim, sizeof lim, "%d", workers);
        PGresult *res = db_query(s->conn, &err,
                "SELECT no, state, next_attempt IS NULL OR next_attempt <= now() FROM ingest.chunks "
                "WHERE file_id = $1 AND state <> 'done' ORDER BY no LIMIT $2", 2, p);
        if (!res) {
                db_lost(s, "scheduling", err);
                return true;
        }
        int left = PQntuples(res);
        for (int i = 0; i < left && s->conn; i++) {
                int no = atoi(PQgetvalue(res, i, 0));
                bool pending = strcmp(PQgetvalue(res, i, 1), "pending") == 0;
                bool due = strcmp(PQgetvalue(res, i, 2), "t") == 0;
                if (pending && due && !chunk_running(s, file_id, no) &&
                    count_children(s, CHILD_CHUNK) < (size_t)workers)
                        spawn_chunk(s, file_id, no, path);
        }
        PQclear(res);
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
                "SELECT id, path, chunks, count(c.*) FILTER (WHERE c.state <> 'done'), f.key_decided, "
                " f.deferred_key IS NOT NULL, "
                " coalesce(sum(c.rows_loaded + c.rows_rejected + c.rows_superseded) "
                "          FILTER (WHERE c.state = 'done'), 0) "
                "   / greatest(extract(epoch FROM now() - f.started_at), 0.001) "
                "FROM ingest.files f LEFT JOIN ingest.chunks c ON c.file_id = f.id "
                "WHERE f.state = 'loading' GROUP BY f.id ORDER BY f.id LIMIT 1", 0, NULL);

        if (!res) {
                db_lost(s, "scheduling", err);
                return;
        }
        if (PQntuples(res) == 0) {
                PQclear(res);
                notify_status(s, "idle");
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

static char *chunk_report(Supervisor *s, const Child *c, int *ret_attempts)
{
        ChunkKey k = chunk_key(c->file_id, c->chunk_no);
        const char *p[2] = { k.file, k.no };

        PGresult *res = db_query(s->conn, NULL,
                "SELECT attempts, first_line, coalesce((SELECT n.first_line - 1 FROM ingest.chunks n "
                "WHERE n.file_id = c.file_id AND n.start_offset = c.end_offset LIMIT 1)::text, 'end'), "
                "coalesce(error, 'no error recorded') "
                "FROM ingest.chunks c WHERE file_id = $1 AND no = $2", 2, p);
        char *report = NULL;

        *ret_attempts = 0;
        if (res && PQntuples(res) == 1) {
                *ret_attempts = atoi(PQgetvalue(res, 0, 0));
                report = xasprintf("chunk %d (lines %s-%s): %s", c->chunk_no, PQgetvalue(res, 0, 1),
                                   PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3));
        }
        PQclear(res);
        return report ? report : xasprintf("chunk %d", c->chunk_no);
}

static void set_chunk_state(Supervisor *s, const Child *c, const char *state, double delay, bool undo_attempt)
{
        ChunkKey k = chunk_key(c->file_id, c->chunk_no);
        char del[32], *err = NULL;
        const char *p[5] = { k.file, k.no, state, del, undo_attempt ? "1" : "0" };

        snprintf(del, sizeof del, "%.3f", delay);
        if (db_exec(s->conn, &err,
                    "UPDATE ingest.chunks SET state = $3, worker_pid = NULL, "
                    "next_attempt = now() + $4::float8 * interval '1 second', "
                    "attempts = greatest(attempts - $5::int, 0) "
                    "WHERE file_id = $1 AND no = $2 AND state = 'loading'", 5, p) < 0)
                db_lost(s, "recording a worker's exit", err);
}

static void fail_running_file(Supervisor *s, int64_t file_id, const char *reason)
{
        registry_fail(s->conn, s->cfg, file_id, reason);
        for (size_t i = 0; i < s->n_children; i++)
                if (s->children[i].type == CHILD_CHUNK && s->children[i].file_id == file_id)
                        kill(s->children[i].pid, SIGTERM);
}

/* One line per committed chunk, from the row the worker committed. */
static void log_chunk_done(Supervisor *s, const Child *c)
{
        ChunkKey k = chunk_key(c->file_id, c->chunk_no);
        const char *p[2] = { k.file, k.no };

        PGresult *res = db_query(s->conn, NULL,
                "SELECT f.name, k.rows_loaded, k.rows_rejected, k.rows_superseded, k.attempts, f.chunks "
                "FROM ingest.chunks k JOIN ingest.files f ON f.id = k.file_id "
                "WHERE k.file_id = $1 AND k.no = $2 AND k.state = 'done'", 2, p);
        if (res && PQntuples(res) == 1)
                log_ctx(LOG_INFO, (LogCtx){ PQgetvalue(res, 0, 0), c->file_id, c->chunk_no,
                                            atoll(PQgetvalue(res, 0, 1)), "chunk-done" },
                        "chunk %d/%s committed: %s loaded, %s rejected, %s superseded (attempt %s)",
                        c->chunk_no, PQgetvalue(res, 0, 5), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
                        PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4));
        PQclear(res);
}

/* A child's exit status, or minus the signal that killed it. */
static int exit_code(int status)
{
        return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

static void chunk_exited(Supervisor *s, const Child *c, int status)
{
        int code = exit_code(status), attempts;
        LogCtx ctx = { NULL, c->file_id, c->chunk_no, -1, NULL };

        if (!s->conn)
                return; /* reset_orphan_chunks() settles it after the reconnect */
        if (code == WORKER_DONE) {
                log_chunk_done(s, c);
                return;
        }
        if (code == WORKER_NOT_RUN) {
                set_chunk_state(s, c, "pending", 0, true);
                return;
        }
        char *report = chunk_report(s, c, &attempts);
        if (code == WORKER_BAD_FILE) {
                set_chunk_state(s, c, "pending", 0, true);
                fail_running_file(s, c->file_id, report);
        } else if (backoff_may_retry(attempts, s->cfg->retry_max_attempts)) {
                double delay = backoff_delay(s->cfg->retry_backoff, attempts);
                log_ctx(LOG_WARNING, ctx, "%s; worker %s %d; attempt %d of %d, retrying in %.1f s", report,
                        code < 0 ? "killed by signal" : "exited with", code < 0 ? -code : code, attempts,
                        s->cfg->retry_max_attempts, delay);
                set_chunk_state(s, c, "pending", delay, false);
        } else {
                char *reason = xasprintf("%s; failed %d times", report, attempts);
                set_chunk_state(s, c, "failed", 0, false);
                fail_running_file(s, c->file_id, reason);
                free(reason);
        }
        free(report);
}

static void reap(Supervisor *s)
{
        int status;
        pid_t pid;
        Child c;

        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                if (!take_child(s, pid, &c))
                        continue;
                if (c.type == CHILD_KEY) {
                        if (status != 0) {
                                log_msg(LOG_WARNING, "building products' primary key failed (exit %d); "
                                        "trying again in %.0f s", exit_code(status), KEY_RETRY);
                                s->key_retry_at = now_monotonic() + KEY_RETRY;
                        }
                        continue;
                }
                if (c.type == CHILD_AGGREGATE) {
                        if (status != 0)
                                log_msg(LOG_WARNING, "aggregate refresh failed (exit %d); will try again",
                                        exit_code(status));
                        s->aggregate_wanted = s->aggregate_wanted || status != 0;
                        continue;
                }
                chunk_exited(s, &c, status);
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
        log_msg(LOG_INFO, "%s: no new chunks; waiting for %zu running children", strsignal(sig), s->n_children);
        sd_notify(0, "STOPPING=1");
        s->state = SUP_STOPPING;
        for (size_t i = 0; i < s->n_children; i++)
                kill(s->children[i].pid, SIGTERM);
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

/* Planning runs inside the loop; on a huge file it must not starve the watchdog. */
static void on_plan_progress(uint64_t done, uint64_t size, void *ud)
{
        Supervisor *s = ud;

        notify_status(s, "planning a new file: %.0f%% of %.1f GB", 100.0 * (double)done / (double)size,
                      (double)size / 1e9);
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
        registry_set_plan_progress(on_plan_progress, s);
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
        free(s->children);
        free(s->last_db_error);
        config_free(s->cfg);
}

int supervisor_run(Config *cfg, const char *config_path)
{
        Supervisor s = { .cfg = cfg, .config_path = config_path, .state = SUP_CONNECTING,
                         .epoll_fd = -1, .signal_fd = -1, .timer_fd = -1 };
        int r = setup(&s);

        while (r == 0 && !(s.state == SUP_STOPPING && s.n_children == 0)) {
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
