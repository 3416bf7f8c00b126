/* supervisor.c - the event loop (epoll over signalfd, inotify and a timerfd;
 * no threads, no signal handlers). Signals only change state; the loop does
 * the work. PostgreSQL holds all durable state, so this file keeps in memory
 * only what is live: the children it forked (children.h) and a few timers. It
 * never scans a file, parses rows or runs COPY: each pass asks the scheduler
 * (scheduler.h) what to start, reaps children and records their exits
 * (chunkexit.h). The states, as in PostgreSQL's postmaster:
 *
 *   CONNECTING --connected, schema ready--> RUNNING
 *   RUNNING --connection lost--> CONNECTING
 *   any --SIGTERM/SIGINT--> STOPPING (no new children; ends when none is left)
 *
 * With other nodes on the database (cluster.h), each pass starts with the
 * heartbeat when it is due: joining resets our orphan chunks, becoming the
 * leader recovers and rescans the folders, and only the leader registers
 * files. The connection's lock_timeout keeps another node's row locks from
 * stalling the loop: a statement that would wait fails, and the next pass
 * tries again. */
#include "supervisor.h"
#include "children.h"
#include "chunkexit.h"
#include "cluster.h"
#include "db.h"
#include "httpd.h"
#include "log.h"
#include "metrics.h"
#include "registry.h"
#include "scheduler.h"
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
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#define TICK_MS 250
#define CONNECT_RETRY 2.0
#define RESCAN_RETRY 2.0
#define MOVES_RETRY 5.0 /* seconds between retries of finished files' moves */
#define SUPERVISOR_LOCK_TIMEOUT "1s"
#define METRICS_EVERY 1.0 /* seconds between renderings of the metrics */

typedef enum SupState { SUP_CONNECTING, SUP_RUNNING, SUP_STOPPING } SupState;
typedef struct Supervisor {
        Config *cfg;
        const char *config_path;
        SupState state;
        bool ready_sent;
        int epoll_fd, signal_fd, timer_fd, db_fd; /* db_fd: the connection's socket, for NOTIFY */
        Watcher *watcher;
        PGconn *conn;
        Children *children;
        Scheduler *scheduler;
        Cluster *cluster;
        Httpd *httpd; /* NULL when metrics.listen is off */
        Buf metrics;  /* the last rendering */
        double next_connect, rescan_at, next_watchdog, next_metrics;
        bool rescanning;   /* a rescan left files for its next pass */
        double next_moves; /* monotonic: retry of finished files left in processing/ */
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

static int add_fd(Supervisor *s, int fd)
{
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
        return epoll_ctl(s->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* ---- database connection ---------------------------------------------- */

static void db_lost(Supervisor *s, const char *what, char *err)
{
        if (s->conn && !db_connection_lost(s->conn)) {
                bool busy = db_lock_timeout(err); /* another node's row */
                log_msg(busy ? LOG_INFO : LOG_ERR, "%s: %s%s", what, err ? err : "error",
                        busy ? "; trying again on the next pass" : "");
                free(err);
                return;
        }
        log_msg(LOG_ERR, "database connection lost (%s): %s; reconnecting", what, err ? err : "");
        free(err);
        if (s->db_fd >= 0)
                epoll_ctl(s->epoll_fd, EPOLL_CTL_DEL, s->db_fd, NULL);
        s->db_fd = -1;
        PQfinish(s->conn);
        s->conn = NULL;
        if (s->state == SUP_RUNNING)
                s->state = SUP_CONNECTING;
        s->next_connect = now_monotonic() + CONNECT_RETRY;
}

/* Our chunks left loading by workers that are gone go back to pending: on
 * joining (our previous run's), and on every beat (a release that found the
 * row still locked by the dead worker's backend skipped it). */
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
        int r = chunks_reset_orphans(s->conn, s->cfg->node, (const char *const *)live, n, &err);
        for (size_t i = 0; i < n; i++)
                free(live[i]);
        free(live);
        if (r < 0)
                db_lost(s, "resetting chunks", err);
        else if (r > 0)
                log_msg(LOG_INFO, "%d chunks of workers that are gone are pending again", r);
        return r;
}

static void try_connect(Supervisor *s)
{
        char *err = NULL;

        if (now_monotonic() < s->next_connect)
                return;
        s->next_connect = now_monotonic() + CONNECT_RETRY;
        s->conn = db_connect(s->cfg->conninfo, &err);
        bool reached = s->conn != NULL;
        if (s->conn && (db_exec(s->conn, &err, "SET lock_timeout = '" SUPERVISOR_LOCK_TIMEOUT "'", 0, NULL) < 0 ||
                               schema_migrate(s->conn, s->cfg->key, s->cfg->partitions, &err) < 0 ||
                               db_exec(s->conn, &err, "LISTEN " WAKE_CHANNEL, 0, NULL) < 0)) {
                reached = !db_connection_lost(s->conn); /* a schema that does not fit the configuration */
                PQfinish(s->conn);
                s->conn = NULL;
        }
        if (!s->conn) {
                if (!s->last_db_error || strcmp(s->last_db_error, err) != 0)
                        log_msg(LOG_ERR, "%s, retrying every %.0f s: %s",
                                reached ? "cannot use the database" : "database unreachable", CONNECT_RETRY, err);
                notify_status(s, "waiting for the database: %s", err);
                free(s->last_db_error);
                s->last_db_error = err;
                return;
        }
        free(s->last_db_error);
        s->last_db_error = NULL;
        log_msg(LOG_INFO, "connected to the database as node %s, schema ready", s->cfg->node);
        if (add_fd(s, PQsocket(s->conn)) == 0)
                s->db_fd = PQsocket(s->conn);
        cluster_reset(s->cluster);
        s->state = SUP_RUNNING;
}

/* Another node's NOTIFY (state.h, WAKE_CHANNEL): reading it is all; the pass
 * after the event does the work. Notifications that arrive with the
 * results of our own statements are dropped after each pass. */
static void drain_notifies(Supervisor *s)
{
        PGnotify *n;

        while (s->conn && (n = PQnotifies(s->conn)))
                PQfreemem(n);
}

static void on_db(Supervisor *s)
{
        if (s->conn && !PQconsumeInput(s->conn))
                db_lost(s, "listening for other nodes", xstrdup(PQerrorMessage(s->conn)));
        drain_notifies(s);
}

/* ---- work --------------------------------------------------------------- */

/* inotify tells only of changes: a rescan finds what was there before (at
 * start, when we begin to lead, after an overflow). A poll scan sees all. A
 * rescan that left files for the next pass goes on at the next turn of the
 * loop; meanwhile new files wait for it (on_file), so that they are
 * registered after the older ones. */
static void rescan(Supervisor *s)
{
        int deferred = 0;
        size_t more = 0;

        s->rescan_at = 0;
        if (s->cfg->watch == WATCH_POLL)
                return;
        if (registry_rescan(s->conn, s->cfg, &deferred, &more) < 0 && db_connection_lost(s->conn))
                db_lost(s, "rescanning", NULL);
        s->rescanning = more > 0;
        if (more > 0)
                s->rescan_at = now_monotonic();
        else if (deferred > 0)
                s->rescan_at = now_monotonic() + RESCAN_RETRY;
}

/* ---- reaping ------------------------------------------------------------ */

static void reap(Supervisor *s)
{
        struct rusage ru;
        int status;
        pid_t pid;
        Child c;

        while ((pid = wait4(-1, &status, WNOHANG, &ru)) > 0) {
                char *err = NULL;
                if (!children_take(s->children, pid, &c))
                        continue;
                if (c.type == CHILD_CHUNK)
                        metrics_worker_usage(&ru);
                if (c.type != CHILD_CHUNK)
                        scheduler_child_exited(s->scheduler, s->conn, s->cfg, &c, status);
                /* without a connection reset_orphan_chunks() settles it after the reconnect */
                else if (s->conn && chunkexit_record(s->conn, s->cfg, s->children, &c, status, &err) < 0)
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
                scheduler_reloaded(s->scheduler, s->cfg);
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

        if (s->state == SUP_STOPPING)
                return; /* read all the same: a readable fd would wake the loop at once, again and again */
        if (!name || !s->conn) {
                s->rescan_at = now_monotonic(); /* overflow, or no database yet */
                return;
        }
        if (!cluster_leader(s->cluster))
                return; /* the leader registers files; if we become it, we rescan */
        if (s->rescanning)
                return; /* older files are still being registered: the rescan takes this one in its turn */
        int r = registry_register(s->conn, s->cfg, kind, name);
        if (r == -EAGAIN || r == -ENOSPC)
                s->rescan_at = now_monotonic() + RESCAN_RETRY;
        else if (db_connection_lost(s->conn))
                db_lost(s, "registering a file", NULL);
}

static void watch(Supervisor *s)
{
        int r = watcher_dispatch(s->watcher, on_file, s);

        if (r < 0)
                log_msg(LOG_ERR, "watching %s and %s: %s", s->cfg->incoming, s->cfg->updates, strerror(-r));
}

static void feed_watchdog(Supervisor *s)
{
        double now = now_monotonic();

        if (s->watchdog_usec && now >= s->next_watchdog) {
                sd_notify(0, "WATCHDOG=1");
                s->next_watchdog = now + (double)s->watchdog_usec / 2e6;
        }
}

/* A scrape serves the last text published; the loop publishes after
 * recording anything (main loop) and once a second with the backlog. */
static void render_metrics(Supervisor *s)
{
        MetricsLive live = { s->cfg->node, s->conn && s->state != SUP_CONNECTING, cluster_leader(s->cluster),
                (int)children_count(s->children, CHILD_CHUNK), config_workers(s->cfg) };
        metrics_render(&s->metrics, &live);
        httpd_publish(s->httpd, s->metrics.data, s->metrics.len);
}

/* The backlog is read from the database here, in the loop, so that a
 * scrape never waits for it; while the database is away the last values
 * stay, and ingestd_database_up says so. */
static void publish_metrics(Supervisor *s)
{
        double now = now_monotonic();
        char *err = NULL;

        if (!s->httpd || now < s->next_metrics)
                return;
        s->next_metrics = now + METRICS_EVERY;
        if (s->conn && s->state == SUP_RUNNING && metrics_read_backlog(s->conn, &err) < 0)
                db_lost(s, "reading the backlog for the metrics", err);
        render_metrics(s);
}

static void on_tick(Supervisor *s)
{
        uint64_t expirations;

        if (read(s->timer_fd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
                log_msg(LOG_WARNING, "timerfd: %s", strerror(errno));
        feed_watchdog(s);
        publish_metrics(s);
}

/* Our orphans go back to pending (reset_orphan_chunks); the leader's folder work
 * starts over when we begin to lead: our previous workers died with their
 * supervisor, and a straggler still committing holds its row lock (the
 * reset skips it). */
static void beat(Supervisor *s)
{
        char *err = NULL;
        int events = cluster_beat(s->cluster, s->conn, s->cfg, (int)children_count(s->children, CHILD_CHUNK), &err);

        if (events < 0) {
                db_lost(s, "heartbeat", err);
                return;
        }
        if ((events & (CLUSTER_JOINED | CLUSTER_BEAT)) && reset_orphan_chunks(s) < 0)
                return;
        if ((events & CLUSTER_LEADING) && registry_recover(s->conn, s->cfg) == 0)
                s->rescan_at = now_monotonic();
        if (events & CLUSTER_FOLLOWING)
                s->rescan_at = 0;
}

/* One pass of work after any event; cheap when there is nothing to do. */
static void work(Supervisor *s)
{
        if (s->state == SUP_CONNECTING)
                try_connect(s);
        if (s->state != SUP_CONNECTING && s->conn)
                beat(s); /* also while stopping: our workers still hold chunks */
        if (s->state != SUP_RUNNING || !s->conn)
                return;
        bool leader = cluster_leader(s->cluster);
        if (leader && s->rescan_at > 0 && now_monotonic() >= s->rescan_at)
                rescan(s);
        if (!s->ready_sent && s->conn) {
                sd_notify(0, "READY=1");
                s->ready_sent = true;
                log_msg(LOG_INFO, "ready: watching %s and %s with %d workers", s->cfg->incoming, s->cfg->updates,
                        config_workers(s->cfg));
        }
        char status[256] = "", *err = NULL;
        SchedulerRole role = { leader, cluster_workers(s->cluster, s->cfg) };
        if (s->conn && scheduler_run(s->scheduler, s->conn, s->cfg, &role, status, sizeof status, &err) < 0)
                db_lost(s, "scheduling", err);
        if (leader && now_monotonic() >= s->next_moves) {
                s->next_moves = now_monotonic() + MOVES_RETRY;
                if (registry_retry_moves(s->conn, s->cfg) < 0 && db_connection_lost(s->conn))
                        db_lost(s, "moving finished files", NULL);
        }
        if (chunkexit_waiting_for_space() || registry_waiting_for_space())
                notify_status(s, "waiting for disk space: the chunks or the files wait (see the log)");
        else if (status[0])
                notify_status(s, "%s", status);
        drain_notifies(s);
}

/* ---- setup -------------------------------------------------------------- */

static int setup(Supervisor *s)
{
        sigset_t mask, old_mask;
        char *err = NULL;
        int r;

        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, &old_mask); /* also the metrics thread's mask */
        metrics_reset();
        s->children = children_new(&old_mask); /* children restore the mask before exec */
        s->scheduler = scheduler_new(s->config_path, s->children, s->cfg);
        s->cluster = cluster_new();
        if (registry_make_dirs(s->cfg, &err) < 0) {
                log_msg(LOG_ERR, "cannot create folders: %s", err);
                free(err);
                return -EINVAL;
        }
        r = watcher_new(s->cfg->incoming, s->cfg->updates, s->cfg->watch, s->cfg->watch_interval, &s->watcher);
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
        if (s->cfg->metrics_listen[0] && !(s->httpd = httpd_start(s->cfg->metrics_listen, &err))) {
                log_msg(LOG_ERR, "%s", err);
                free(err);
                return -EINVAL;
        }
        if (s->httpd) {
                log_msg(LOG_INFO, "serving metrics on http://%s/metrics", s->cfg->metrics_listen);
                publish_metrics(s); /* a scrape before the first tick sees every metric */
        }
        if (sd_watchdog_enabled(0, &s->watchdog_usec) <= 0)
                s->watchdog_usec = 0;
        return 0;
}

static void teardown(Supervisor *s)
{
        httpd_stop(s->httpd);
        buf_free(&s->metrics);
        watcher_free(s->watcher);
        if (s->epoll_fd >= 0)
                close(s->epoll_fd);
        if (s->signal_fd >= 0)
                close(s->signal_fd);
        if (s->timer_fd >= 0)
                close(s->timer_fd);
        cluster_leave(s->cluster, s->conn, s->cfg);
        PQfinish(s->conn);
        cluster_free(s->cluster);
        scheduler_free(s->scheduler);
        children_free(s->children);
        free(s->last_db_error);
        config_free(s->cfg);
}

int supervisor_run(Config *cfg, const char *config_path)
{
        Supervisor s = { .cfg = cfg,
                .config_path = config_path,
                .state = SUP_CONNECTING,
                .epoll_fd = -1,
                .signal_fd = -1,
                .timer_fd = -1,
                .db_fd = -1 };
        int r = setup(&s);

        while (r == 0 && !(s.state == SUP_STOPPING && children_total(s.children) == 0)) {
                struct epoll_event ev[8];
                work(&s);
                if (s.httpd && metrics_changed())
                        render_metrics(&s);
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
                        else if (fd == s.db_fd)
                                on_db(&s);
                        else
                                watch(&s);
                }
        }
        if (r == 0)
                log_msg(LOG_INFO, "stopped");
        teardown(&s);
        return r == 0 ? 0 : EX_OSERR;
}
