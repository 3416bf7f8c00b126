/* ingestctl.c - the command line for humans. It talks only to the database
 * and the folders (no control socket): it drops files into the watched folders
 * atomically (a dotfile renamed into place), reads ingest.* for status, and
 * for retry moves a failed file back and re-queues its unfinished chunks. */
#include "aggregate.h"
#include "config.h"
#include "db.h"
#include "progress.h"
#include "retention.h"
#include "state.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

typedef struct Cli {
        Config *cfg;
        PGconn *conn;
        bool wait, json, all, watch, dry_run;
        double timeout;
        long limit;
} Cli;

static void usage(FILE *f)
{
        fprintf(f, "Usage: ingestctl [-c FILE] COMMAND [ARGS]\n\n"
                   "Commands:\n"
                   "  ingest FILE [--wait]   copy FILE into the incoming folder (insert or update)\n"
                   "  update FILE [--wait]   copy FILE into the updates folder (update existing only)\n"
                   "  status [--json] [--all] [--watch]\n"
                   "                         files, their state and row counts\n"
                   "  rejects FILE [--limit N] rejected rows of FILE with line, offset and reason\n"
                   "  retry FILE             load a failed file's unfinished chunks again\n"
                   "  prune [--dry-run]      remove what retention.* says is old now (or show it)\n"
                   "  aggregate [TABLE KEY]  refresh products_agg now and show its top rows, or\n"
                   "                         show TABLE counted by column KEY\n\n"
                   "Options:\n"
                   "  -c, --config FILE  configuration (default " CONFIG_DEFAULT_PATH ")\n"
                   "  -w, --wait         wait until the file and the aggregate after it are committed;\n"
                   "                     exit 1 if the file failed\n"
                   "  -t, --timeout SEC  give up waiting after SEC seconds (exit 2)\n"
                   "  -j, --json         machine-readable status\n"
                   "  -a, --all          every file, not only the last 20\n"
                   "  -W, --watch        redraw the status every second until interrupted\n"
                   "      --dry-run      prune: show what would be removed\n"
                   "  -n, --limit N      rows to show (default 20)\n"
                   "  -h, --help         this help\n\n"
                   "FILE in rejects and retry is a file name, a processing name (ID-NAME) or an id.\n"
                   "Exit status: 0 ok, 1 the file failed, 2 timeout, 64 usage, 69 database\n"
                   "unreachable, 78 configuration error.\n");
}

static int die_db(Cli *c, const char *what, char *err)
{
        fprintf(stderr, "ingestctl: %s: %s\n", what, err ? err : PQerrorMessage(c->conn));
        free(err);
        return EX_UNAVAILABLE;
}

/* ---- ingest / update -------------------------------------------------- */

/* The kernel copies (copy_file_range: 1.3 s instead of 5.3 s for 1.7 GB,
 * fsync included); read/write where it cannot (other filesystems, old
 * kernels). Writeback of each copied step starts at once, so that the fsync
 * after the copy waits only for the last steps. */
#define COPY_STEP (8 << 20)

static int copy_fd(int in, int out)
{
        char buf[1 << 16];
        off_t done = 0;
        ssize_t n;

        while ((n = copy_file_range(in, NULL, out, NULL, COPY_STEP, 0)) > 0) {
                sync_file_range(out, done, n, SYNC_FILE_RANGE_WRITE);
                done += n;
        }
        if (n < 0 && errno != EXDEV && errno != ENOSYS && errno != EINVAL && errno != EOPNOTSUPP)
                return -errno;
        while ((n = read(in, buf, sizeof buf)) > 0)
                for (ssize_t off = 0; off < n;) {
                        ssize_t w = write(out, buf + off, (size_t)(n - off));
                        if (w < 0)
                                return -errno;
                        off += w;
                }
        return n < 0 ? -errno : 0;
}

/* Copies in to path, created exclusively, and syncs it. */
static int copy_to(int in, const char *path)
{
        int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        int r = out < 0 ? -errno : copy_fd(in, out);

        if (r == 0 && fsync(out) < 0)
                r = -errno;
        if (out >= 0 && close(out) < 0 && r == 0)
                r = -errno;
        if (r < 0 && r != -EEXIST)
                unlink(path);
        return r;
}

/* Where rename cannot refuse to replace (some network filesystems): the
 * copy is written under its final name, created exclusively; the daemon
 * takes it once it is closed (inotify) or has stopped changing (poll). */
static int drop_in_place(int in, const char *tmp, const char *dst)
{
        unlink(tmp);
        if (lseek(in, 0, SEEK_SET) < 0)
                return -errno;
        return copy_to(in, dst);
}

/* Copies src to DIR/NAME via a dotfile, fsync and rename (the watcher sees
 * IN_MOVED_TO), never replacing a file of that name still waiting there. */
static int drop_file(const char *src, const char *dir, const char *name)
{
        char *tmp = xasprintf("%s/.%s.ingestctl-%d", dir, name, (int)getpid());
        char *dst = xasprintf("%s/%s", dir, name);
        int in = open(src, O_RDONLY | O_CLOEXEC), r;

        if (in < 0) {
                r = -errno;
                fprintf(stderr, "ingestctl: %s: %s\n", src, strerror(errno));
                goto out;
        }
        r = copy_to(in, tmp);
        if (r == 0 && renameat2(AT_FDCWD, tmp, AT_FDCWD, dst, RENAME_NOREPLACE) < 0)
                r = -errno;
        if (r == -EINVAL || r == -ENOSYS || r == -ENOTSUP)
                r = drop_in_place(in, tmp, dst);
        if (r < 0)
                fprintf(stderr, "ingestctl: cannot copy %s to %s: %s%s\n", src, dst, strerror(-r),
                        r == -EEXIST ? " (a file of that name is still waiting to be picked up)" : "");
        if (r < 0)
                unlink(tmp);
out:
        if (in >= 0)
                close(in);
        free(tmp);
        free(dst);
        return r;
}

static long long max_file_id(Cli *c)
{
        PGresult *res = db_query(c->conn, NULL, "SELECT coalesce(max(id), 0) FROM ingest.files", 0, NULL);
        long long id = res ? atoll(PQgetvalue(res, 0, 0)) : 0;

        PQclear(res);
        return id;
}

static int cmd_drop(Cli *c, const char *src, bool update)
{
        char *copy = xstrdup(src);
        const char *name = basename(copy);
        long long after = c->wait ? max_file_id(c) : 0;
        int r = drop_file(src, update ? c->cfg->updates : c->cfg->incoming, name);

        if (r == 0 && c->wait)
                r = progress_wait(c->conn, c->cfg, name, after, c->timeout);
        else if (r == 0)
                printf("queued %s in %s\n", name, update ? c->cfg->updates : c->cfg->incoming);
        free(copy);
        return r < 0 ? EX_CANTCREAT : r;
}

/* ---- status / rejects ------------------------------------------------- */

static const char status_sql[] =
        "SELECT f.id, f.name, f.kind, f.state, "
        "  CASE WHEN f.pruned_at IS NULL THEN count(k.*) FILTER (WHERE k.state = " SQL_DONE ") "
        "       ELSE f.chunks END AS chunks_done, f.chunks, f.data_rows, "
        "  CASE WHEN f.pruned_at IS NULL THEN coalesce(sum(k.rows_loaded), 0) ELSE f.rows_loaded END AS rows_loaded, "
        "  CASE WHEN f.pruned_at IS NULL THEN coalesce(sum(k.rows_rejected), 0) ELSE f.rows_rejected END "
        "    AS rows_rejected, "
        "  CASE WHEN f.pruned_at IS NULL THEN coalesce(sum(k.rows_superseded), 0) ELSE f.rows_superseded END "
        "    AS rows_superseded, f.size, f.sha256, "
        "  f.registered_at, f.finished_at, f.aggregated_at, f.error, f.lanes, f.pruned_at, f.removed_at "
        "FROM ingest.files f LEFT JOIN ingest.chunks k ON k.file_id = f.id "
        "GROUP BY f.id ORDER BY f.id DESC LIMIT $1";

/* The nodes (ingest.nodes): heartbeat age, the chunks each holds (claimed,
 * loading) and its busy workers as of its last heartbeat. */
static const char nodes_sql[] =
        "SELECT n.node, n.pid, n.version, n.workers, "
        "  round(extract(epoch FROM now() - n.heartbeat_at)::numeric, 1) AS heartbeat_age, n.started_at, "
        "  coalesce(l.until > now(), false) AS leader, "
        "  (SELECT count(*) FROM ingest.chunks k WHERE k.state = " SQL_LOADING " AND k.node = n.node) AS chunks_held, "
        "  n.busy AS workers_busy "
        "FROM ingest.nodes n LEFT JOIN ingest.leader l ON l.node = n.node ORDER BY n.node";

static void print_nodes(const PGresult *res)
{
        printf("\n%-24s %8s %-7s %7s %5s %5s %10s\n", "NODE", "PID", "ROLE", "WORKERS", "BUSY", "HELD", "HEARTBEAT");
        for (int i = 0; i < PQntuples(res); i++) {
                char age[40];
                snprintf(age, sizeof age, "%s s ago", PQgetvalue(res, i, 4));
                printf("%-24s %8s %-7s %7s %5s %5s %10s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                        strcmp(PQgetvalue(res, i, 6), "t") == 0 ? "leader" : "loader", PQgetvalue(res, i, 3),
                        PQgetvalue(res, i, 8), PQgetvalue(res, i, 7), age);
        }
}

static int status_json(Cli *c, const char *const *p)
{
        char *err = NULL, *sql = xasprintf("SELECT json_build_object("
                                           "'files', (SELECT coalesce(json_agg(s ORDER BY s.id), '[]') FROM (%s) s), "
                                           "'nodes', (SELECT coalesce(json_agg(n), '[]') FROM (%s) n))",
                                  status_sql, nodes_sql);
        PGresult *res = db_query(c->conn, &err, sql, 1, p);

        free(sql);
        if (!res)
                return die_db(c, "status", err);
        puts(PQgetvalue(res, 0, 0));
        PQclear(res);
        return 0;
}

static int show_status(Cli *c)
{
        char lim[32], *err = NULL;
        const char *p[1] = { lim };

        snprintf(lim, sizeof lim, "%ld", c->all ? 1000000000L : c->limit);
        if (c->json)
                return status_json(c, p);
        PGresult *res = db_query(c->conn, &err, status_sql, 1, p);
        if (!res)
                return die_db(c, "status", err);
        printf("%-6s %-32s %-7s %-8s %9s %10s %10s %10s %10s  %s\n", "ID", "NAME", "KIND", "STATE", "CHUNKS", "ROWS",
                "LOADED", "REJECTED", "SUPERSEDED", "ERROR");
        for (int i = PQntuples(res) - 1; i >= 0; i--) {
                char chunks[32];
                snprintf(chunks, sizeof chunks, "%s/%s", PQgetvalue(res, i, 4), PQgetvalue(res, i, 5));
                printf("%-6s %-32s %-7s %-8s %9s %10s %10s %10s %10s  %s\n", PQgetvalue(res, i, 0),
                        PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3), chunks,
                        PQgetvalue(res, i, 6), PQgetvalue(res, i, 7), PQgetvalue(res, i, 8), PQgetvalue(res, i, 9),
                        PQgetvalue(res, i, 15));
        }
        PQclear(res);
        if (!(res = db_query(c->conn, &err, nodes_sql, 0, NULL)))
                return die_db(c, "status", err);
        print_nodes(res);
        PQclear(res);
        return 0;
}

/* Redraws until SIGINT or SIGTERM: they are blocked and waited for, one
 * second at a time, so an interrupt ends the loop between two draws and
 * ingestctl exits 0. Piped, each draw follows the last after a blank line. */
static int watch_status(Cli *c)
{
        bool tty = isatty(STDOUT_FILENO);
        sigset_t stop;
        int r = 0;

        sigemptyset(&stop);
        sigaddset(&stop, SIGINT);
        sigaddset(&stop, SIGTERM);
        sigprocmask(SIG_BLOCK, &stop, NULL);
        for (bool first = true; r == 0; first = false) {
                time_t t = time(NULL);
                char when[64];
                strftime(when, sizeof when, "%F %T", localtime(&t));
                printf(tty ? "\033[H\033[2J" : first ? "" : "\n");
                printf("ingestctl status, every 1 s (Ctrl-C to stop)  %s\n\n", when);
                r = show_status(c);
                fflush(stdout);
                if (r == 0 && sigtimedwait(&stop, NULL, &(struct timespec){ 1, 0 }) > 0)
                        break;
        }
        return r;
}

static int cmd_status(Cli *c)
{
        if (c->watch && c->json) {
                fprintf(stderr, "ingestctl: --watch is for people; --json is read once\n");
                return EX_USAGE;
        }
        return c->watch ? watch_status(c) : show_status(c);
}

/* The newest file matching an id, a processing name or an original name. */
static int find_file(
        Cli *c, const char *arg, long long *ret_id, char **ret_path, char **ret_state, char **ret_kind, char **ret_name)
{
        char *shown = name_escape(arg), *err = NULL;
        const char *p[1] = { shown };
        PGresult *res = db_query(c->conn, &err,
                "SELECT id, path, state, kind, name FROM ingest.files "
                "WHERE id::text = $1 OR path = $1 OR name = $1 ORDER BY id DESC LIMIT 1",
                1, p);

        free(shown);
        if (!res)
                return die_db(c, "looking up the file", err);
        if (PQntuples(res) == 0) {
                fprintf(stderr, "ingestctl: no file '%s' in ingest.files\n", arg);
                PQclear(res);
                return EX_NOINPUT;
        }
        *ret_id = atoll(PQgetvalue(res, 0, 0));
        *ret_path = xstrdup(PQgetvalue(res, 0, 1));
        *ret_state = xstrdup(PQgetvalue(res, 0, 2));
        *ret_kind = xstrdup(PQgetvalue(res, 0, 3));
        *ret_name = xstrdup(PQgetvalue(res, 0, 4));
        PQclear(res);
        return 0;
}

/* Rejects of a file whose history retention removed are gone; says so. */
static void print_pruned(Cli *c, const char *ids)
{
        PGresult *res = db_query(c->conn, NULL,
                "SELECT rows_rejected, pruned_at FROM ingest.files WHERE id = $1 AND pruned_at IS NOT NULL", 1,
                (const char *[]){ ids });

        if (res && PQntuples(res) == 1)
                printf("(the file had %s; their rows were removed by retention.history at %s)\n", PQgetvalue(res, 0, 0),
                        PQgetvalue(res, 0, 1));
        PQclear(res);
}

static int cmd_rejects(Cli *c, const char *arg)
{
        char *path = NULL, *state = NULL, *kind = NULL, *name = NULL, ids[32], lim[32], *err = NULL;
        long long id;
        int r = find_file(c, arg, &id, &path, &state, &kind, &name);

        if (r != 0)
                return r;
        snprintf(ids, sizeof ids, "%lld", id);
        snprintf(lim, sizeof lim, "%ld", c->all ? 1000000000L : c->limit);
        const char *p[2] = { ids, lim };
        PGresult *res = db_query(c->conn, &err,
                "SELECT line, byte_offset, reason, coalesce(encode(substring(raw for 200), 'escape'), ''), "
                " (SELECT count(*) FROM ingest.rejects WHERE file_id = $1) "
                "FROM ingest.rejects WHERE file_id = $1 ORDER BY line LIMIT $2",
                2, p);
        if (res) {
                printf("%s (#%lld, %s): %s rejected rows\n", path, id, state,
                        PQntuples(res) ? PQgetvalue(res, 0, 4) : "0");
                print_pruned(c, ids);
                printf("%-10s %-12s %-40s %s\n", "LINE", "OFFSET", "REASON", "RECORD");
                for (int i = 0; i < PQntuples(res); i++)
                        printf("%-10s %-12s %-40s %.120s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
                                PQgetvalue(res, i, 2), PQgetvalue(res, i, 3));
        }
        PQclear(res);
        free(path);
        free(state);
        free(kind);
        free(name);
        return res ? 0 : die_db(c, "rejects", err);
}

/* ---- retry ------------------------------------------------------------ */

static int cmd_retry(Cli *c, const char *arg)
{
        char *path = NULL, *state = NULL, *kind = NULL, *name = NULL, *err = NULL;
        long long id;
        int r = find_file(c, arg, &id, &path, &state, &kind, &name);

        if (r != 0)
                return r;
        char *from = xasprintf("%s/failed/%s", c->cfg->state, path);
        PGresult *res;
        if (strcmp(state, STATE_FAILED) != 0) {
                fprintf(stderr, "ingestctl: %s is %s, not failed\n", path, state);
                r = EX_USAGE;
                goto out;
        }
        char ids[32];
        snprintf(ids, sizeof ids, "%lld", id);
        res = db_query(
                c->conn, &err, "SELECT count(*) FROM ingest.chunks WHERE file_id = $1", 1, (const char *[]){ ids });
        long planned = res ? atol(PQgetvalue(res, 0, 0)) : -1;
        PQclear(res);
        if (planned < 0) {
                r = die_db(c, "retry", err);
                goto out;
        }
        /* a file that was never planned goes back to its folder and registers anew */
        char *to = planned == 0
                           ? xasprintf("%s/%s", strcmp(kind, "update") == 0 ? c->cfg->updates : c->cfg->incoming, name)
                           : xasprintf("%s/processing/%s", c->cfg->state, path);
        if (rename(from, to) < 0) {
                fprintf(stderr, "ingestctl: cannot move %s to %s: %s\n", from, to, strerror(errno));
                r = EX_CANTCREAT;
        } else if (planned > 0 && file_requeue(c->conn, id, &err) < 0) {
                rename(to, from);
                r = die_db(c, "retry", err);
        } else {
                printf("%s: %s\n", path,
                        planned ? "unfinished chunks queued again" : "moved back to be registered again");
        }
        free(to);
out:
        free(from);
        free(path);
        free(state);
        free(kind);
        free(name);
        return r;
}

/* ---- prune ------------------------------------------------------------ */

static int cmd_prune(Cli *c)
{
        RetentionCounts n = { 0 };
        char *err = NULL;
        int r = c->dry_run ? retention_count(c->conn, c->cfg, &n, &err) : retention_prune(c->conn, c->cfg, &n, &err);

        printf("%s: the history of %lld done files (%lld chunk rows, %lld reject rows); "
               "%lld files in done/ (%lld bytes)\n",
                c->dry_run ? "would remove" : "removed", n.files, n.chunks, n.rejects, n.done_files, n.done_bytes);
        if (c->cfg->retention_history <= 0 && c->cfg->retention_done_files <= 0)
                printf("retention.history and retention.done_files are 0: everything is kept\n");
        return r < 0 ? die_db(c, "prune", err) : 0;
}

/* ---- aggregate -------------------------------------------------------- */

/* Checks TABLE and KEY against the catalog; returns quoted identifiers. */
static int resolve_table(Cli *c, const char *table, const char *key, char **ret_sql)
{
        const char *p[2] = { table, key };
        char *err = NULL;
        PGresult *res = db_query(c->conn, &err,
                "SELECT n.nspname, c.relname, a.attname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
                "WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND pg_table_is_visible(c.oid) "
                "AND c.relname = $1 AND a.attname = $2",
                2, p);

        if (!res)
                return die_db(c, "aggregate", err);
        if (PQntuples(res) != 1) {
                fprintf(stderr, "ingestctl: no table '%s' with a column '%s'\n", table, key);
                PQclear(res);
                return EX_USAGE;
        }
        char *ns = PQescapeIdentifier(c->conn, PQgetvalue(res, 0, 0), strlen(PQgetvalue(res, 0, 0)));
        char *rel = PQescapeIdentifier(c->conn, PQgetvalue(res, 0, 1), strlen(PQgetvalue(res, 0, 1)));
        char *col = PQescapeIdentifier(c->conn, PQgetvalue(res, 0, 2), strlen(PQgetvalue(res, 0, 2)));
        *ret_sql = xasprintf("SELECT %s, count(*) FROM %s.%s GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $1", col, ns, rel);
        PQfreemem(ns);
        PQfreemem(rel);
        PQfreemem(col);
        PQclear(res);
        return 0;
}

static int cmd_aggregate(Cli *c, const char *table, const char *key)
{
        char *sql = NULL, *err = NULL, lim[32];
        const char *p[1] = { lim };
        int r;

        snprintf(lim, sizeof lim, "%ld", c->limit);
        if (table) {
                if ((r = resolve_table(c, table, key, &sql)) != 0)
                        return r;
        } else {
                AggregateMode mode = AGGREGATE_FULL;
                if (aggregate_refresh(c->conn, &mode, c->cfg->aggregate_count_memory, &err) < 0)
                        return die_db(c, "aggregate refresh", err);
                sql = xstrdup("SELECT name, no_of_products FROM public.products_agg "
                              "ORDER BY no_of_products DESC, name LIMIT $1");
        }
        PGresult *res = db_query(c->conn, &err, sql, 1, p);
        free(sql);
        if (!res)
                return die_db(c, "aggregate", err);
        for (int i = 0; i < PQntuples(res); i++)
                printf("%-40s %s\n", PQgetisnull(res, i, 0) ? "(null)" : PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
        PQclear(res);
        return 0;
}

/* ---- main ------------------------------------------------------------- */

static int dispatch(Cli *c, int argc, char **argv)
{
        const char *cmd = argv[0];
        int nargs = argc - 1;

        if ((strcmp(cmd, "ingest") == 0 || strcmp(cmd, "update") == 0) && nargs == 1)
                return cmd_drop(c, argv[1], cmd[0] == 'u');
        if (strcmp(cmd, "status") == 0 && nargs == 0)
                return cmd_status(c);
        if (strcmp(cmd, "rejects") == 0 && nargs == 1)
                return cmd_rejects(c, argv[1]);
        if (strcmp(cmd, "retry") == 0 && nargs == 1)
                return cmd_retry(c, argv[1]);
        if (strcmp(cmd, "prune") == 0 && nargs == 0)
                return cmd_prune(c);
        if (strcmp(cmd, "aggregate") == 0 && (nargs == 0 || nargs == 2))
                return cmd_aggregate(c, nargs ? argv[1] : NULL, nargs ? argv[2] : NULL);
        usage(stderr);
        return EX_USAGE;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
                { "wait", no_argument, NULL, 'w' }, { "timeout", required_argument, NULL, 't' },
                { "json", no_argument, NULL, 'j' }, { "all", no_argument, NULL, 'a' },
                { "limit", required_argument, NULL, 'n' }, { "watch", no_argument, NULL, 'W' },
                { "dry-run", no_argument, NULL, 'D' }, { "help", no_argument, NULL, 'h' }, { 0 } };
        Cli c = { .limit = 20 };
        const char *path = CONFIG_DEFAULT_PATH;
        char *err = NULL;
        int o;

        /* GNU getopt permutes, so options may follow the command */
        while ((o = getopt_long(argc, argv, "c:wt:jan:Wh", opts, NULL)) != -1)
                switch (o) {
                case 'c': path = optarg; break;
                case 'w': c.wait = true; break;
                case 't': c.timeout = atof(optarg); break;
                case 'j': c.json = true; break;
                case 'a': c.all = true; break;
                case 'n': c.limit = atol(optarg); break;
                case 'W': c.watch = true; break;
                case 'D': c.dry_run = true; break;
                case 'h': usage(stdout); return 0;
                default: usage(stderr); return EX_USAGE;
                }
        if (optind >= argc) {
                usage(stderr);
                return EX_USAGE;
        }
        if (config_load(path, &c.cfg, &err) < 0) {
                fprintf(stderr, "ingestctl: %s\n", err);
                free(err);
                return EX_CONFIG;
        }
        c.conn = db_connect(c.cfg->conninfo, &err);
        if (!c.conn) {
                fprintf(stderr, "ingestctl: cannot connect to the database: %s\n", err);
                free(err);
                config_free(c.cfg);
                return EX_UNAVAILABLE;
        }
        o = dispatch(&c, argc - optind, argv + optind);
        PQfinish(c.conn);
        config_free(c.cfg);
        return o;
}
