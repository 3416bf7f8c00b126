/* registry.c - registration and the final moves of files on disk; their
 * rows change state only through state.h. The order of steps makes every
 * crash recoverable: the files row is inserted (state new) before the rename
 * into processing/, the plan child (planfile.h) inserts the chunks together
 * with state loading, and the final state is committed before the rename to
 * done/ or failed/; registry_recover() completes whichever step was cut off.
 * Names on disk under processing/ are "ID-NAME" (ingest) or "IDu-NAME" (update),
 * with NAME escaped to UTF-8, so the database and the folder agree byte for byte. */
#include "registry.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "reconcile.h"
#include "state.h"
#include "util.h"
#include "watcher.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A file not registered yet: its name as found. */
static LogCtx name_ctx(const char *name, const char *state) { return (LogCtx){ name, -1, -1, -1, state }; }

/* A registered file: our own "ID-NAME" gives INGEST_FILE=NAME, INGEST_FILE_ID=ID. */
static LogCtx path_ctx(const char *path, const char *state, long long rows)
{
        const char *name = path ? dropped_name(path) : NULL;
        long long id = name && name != path ? strtoll(path, NULL, 10) : -1;

        return (LogCtx){ name, id, -1, rows, state };
}

int registry_make_dirs(const Config *cfg, char **ret_error)
{
        const char *sub[] = { "processing", "done", "failed" };
        const char *top[] = { cfg->incoming, cfg->updates, cfg->state };

        for (size_t i = 0; i < 3; i++)
                if (mkdir(top[i], 0755) < 0 && errno != EEXIST) {
                        *ret_error = xasprintf("%s: %s", top[i], strerror(errno));
                        return -errno;
                }
        for (size_t i = 0; i < 3; i++) {
                char *p = xasprintf("%s/%s", cfg->state, sub[i]);
                int r = mkdir(p, 0755) < 0 && errno != EEXIST ? -errno : 0;
                if (r < 0)
                        *ret_error = xasprintf("%s: %s", p, strerror(-r));
                free(p);
                if (r < 0)
                        return r;
        }
        return 0;
}

char *registry_processing_path(const Config *cfg, const char *path)
{
        return xasprintf("%s/processing/%s", cfg->state, path);
}

const char *registry_folder(const Config *cfg, FileKind kind)
{
        return kind == KIND_UPDATE ? cfg->updates : cfg->incoming;
}

/* A full state filesystem (a rename that needs a new directory block):
 * files wait where they are and are moved again later, said once a minute. */
#define SPACE_LOG_EVERY 60.0

static struct {
        bool waiting;     /* the last rename into processing/, done/ or failed/ found no space */
        bool moves_left;  /* a finished file is still in processing/ */
        double logged_at; /* monotonic */
} space;

static bool no_space(int e, const char *from, const char *to)
{
        double now = now_monotonic();

        space.waiting = e == ENOSPC;
        if (e != ENOSPC)
                return false;
        if (space.logged_at == 0 || now - space.logged_at >= SPACE_LOG_EVERY) {
                space.logged_at = now;
                log_msg(LOG_WARNING,
                        "the state folder's filesystem is full: cannot move %s to %s; files wait "
                        "where they are and move once there is space, no file fails for it",
                        from, to);
        }
        return true;
}

bool registry_waiting_for_space(void) { return space.waiting; }

/* Moves processing/PATH to DEST/PATH; a missing source that already arrived is fine. */
static int move_from_processing(const Config *cfg, const char *path, const char *dest)
{
        char *from = registry_processing_path(cfg, path);
        char *to = xasprintf("%s/%s/%s", cfg->state, dest, path);
        int r = rename(from, to) < 0 ? -errno : 0;

        if (r == -ENOENT && access(to, F_OK) == 0)
                r = 0;
        if (r < 0 && !no_space(-r, from, to))
                log_ctx(LOG_ERR, path_ctx(path, dest, -1), "cannot move %s to %s: %s", from, to, strerror(-r));
        if (r == 0)
                space.waiting = false;
        space.moves_left |= r < 0;
        free(from);
        free(to);
        return r;
}

static int64_t next_file_id(PGconn *c)
{
        PGresult *res = db_query(c, NULL, "SELECT nextval('ingest.files_id_seq')", 0, NULL);
        int64_t id = res ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;

        PQclear(res);
        return id;
}

static int insert_file(PGconn *c, int64_t id, const char *name, FileKind kind, const char *path, const char *error)
{
        char *err = NULL;
        int r = file_register(c, id, name, kind, path, error, &err);

        if (r < 0) {
                log_ctx(LOG_ERR, name_ctx(name, NULL), "cannot register: %s", err);
                free(err);
        } else if (error) {
                metrics_file_closed(&(FileSummary){ .kind = kind }, true);
        }
        return r;
}

static const char *not_regular(mode_t m)
{
        if (S_ISLNK(m))
                return "symbolic link";
        if (S_ISDIR(m))
                return "directory";
        if (S_ISFIFO(m))
                return "FIFO";
        if (S_ISSOCK(m))
                return "socket";
        if (!S_ISREG(m))
                return "device";
        return NULL;
}

/* A leader stopped between the insert and the rename may find, when it goes
 * on, that the next leader's recovery forgot the row (no file in processing/
 * then): the file goes back where it came from, to be registered again. 1
 * when the row is there, else 0 (or -EAGAIN when the way back failed). */
static int still_registered(PGconn *c, int64_t id, const char *to, const char *from, const char *shown)
{
        char ids[32];
        const char *p[1] = { ids };

        snprintf(ids, sizeof ids, "%" PRId64, id);
        if (db_query_bool(c, NULL, "SELECT EXISTS (SELECT 1 FROM ingest.files WHERE id = $1)", 1, p) != 0)
                return 1; /* there, or unknown: kept (registry_recover settles it) */
        int r = rename(to, from) < 0 ? -EAGAIN : 0;
        log_ctx(LOG_WARNING, name_ctx(shown, NULL), "%s: its registration #%" PRId64 " was forgotten meanwhile; %s",
                shown, id, r == 0 ? "back to be registered again" : "cannot move it back");
        return r;
}

int registry_register(PGconn *c, const Config *cfg, FileKind kind, const char *name)
{
        char *from = xasprintf("%s/%s", registry_folder(cfg, kind), name);
        char *shown = name_escape(name), *path = NULL, *to = NULL, *reason = NULL;
        struct stat st;
        int64_t id;
        int r;

        if (lstat(from, &st) < 0) {
                r = errno == ENOENT ? 0 : -errno; /* already taken, or gone */
                goto out;
        }
        id = next_file_id(c);
        if (id < 0) {
                r = -EIO;
                goto out;
        }
        path = xasprintf("%" PRId64 "%s-%s", id, kind == KIND_UPDATE ? UPDATE_MARK : "", shown);
        const char *what = not_regular(st.st_mode);
        if (what)
                reason = xasprintf("not a regular file (%s); moved to failed/", what);
        r = insert_file(c, id, shown, kind, path, reason);
        if (r < 0)
                goto out;
        to = xasprintf("%s/%s/%s", cfg->state, reason ? "failed" : "processing", path);
        if (rename(from, to) < 0) {
                int e = errno;
                r = e == ENOENT ? 0 : e == ENOSPC ? -ENOSPC : -EAGAIN;
                if (!no_space(e, from, to))
                        log_ctx(e == ENOENT ? LOG_DEBUG : LOG_ERR, name_ctx(shown, NULL), "cannot move %s to %s: %s%s",
                                from, to, strerror(e), e == ENOENT ? " (another node took it)" : "; will try again");
                file_forget(c, id, NULL);
                goto out;
        }
        space.waiting = false;
        if (!reason && (r = still_registered(c, id, to, from, shown)) <= 0)
                goto out;
        if (reason) {
                log_ctx(LOG_ERR, path_ctx(path, "failed", -1), "%s: %s", shown, reason);
                goto out;
        }
        log_ctx(LOG_INFO, path_ctx(path, STATE_NEW, -1), "registered %s file %s as #%" PRId64 " (%lld bytes)",
                file_kind_name(kind), shown, id, (long long)st.st_size);
out:
        free(from);
        free(shown);
        free(path);
        free(to);
        free(reason);
        return r;
}

typedef struct Found {
        char *name;
        struct timespec mtime;
} Found;

static int found_cmp(const void *a, const void *b)
{
        const Found *x = a, *y = b;

        return arrival_cmp(x->mtime, x->name, y->mtime, y->name);
}

static int rescan_folder(PGconn *c, const Config *cfg, FileKind kind, int *deferred, size_t *budget, size_t *more)
{
        DIR *d = opendir(registry_folder(cfg, kind));
        Found *found = NULL;
        size_t n = 0, cap = 0;
        struct dirent *de;
        time_t now = time(NULL);
        int r = 0;

        if (!d)
                return -errno;
        while ((de = readdir(d))) {
                struct stat st;
                if (!watcher_name_wanted(de->d_name) || fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (S_ISREG(st.st_mode) && st.st_mtim.tv_sec >= now - 1) {
                        (*deferred)++; /* maybe still being written; its close event will come */
                        continue;
                }
                if (n == cap)
                        found = xrealloc(found, (cap = cap ? cap * 2 : 16) * sizeof *found);
                found[n++] = (Found){ xstrdup(de->d_name), st.st_mtim };
        }
        closedir(d);
        if (n > 0) /* qsort's array must not be NULL, even for no elements */
                qsort(found, n, sizeof *found, found_cmp);
        for (size_t i = 0; i < n; i++) {
                bool take = *budget > 0 && r == 0;
                *budget -= take;
                *more += !take && r == 0;
                int k = take ? registry_register(c, cfg, kind, found[i].name) : 0;
                if (k == -ENOSPC) /* the older files first: none after it this time */
                        *budget = 0;
                if (k == -EAGAIN || k == -ENOSPC)
                        (*deferred)++;
                else if (k < 0)
                        r = k;
                free(found[i].name);
        }
        free(found);
        return r;
}

int registry_rescan(PGconn *c, const Config *cfg, int *ret_deferred, size_t *ret_more)
{
        int deferred = 0;
        size_t budget = REGISTRY_RESCAN_BATCH, more = 0;
        int r = rescan_folder(c, cfg, KIND_INGEST, &deferred, &budget, &more);

        if (r == 0)
                r = rescan_folder(c, cfg, KIND_UPDATE, &deferred, &budget, &more);
        *ret_deferred = deferred;
        *ret_more = more;
        return r;
}

/* A new file whose row was inserted but that never reached processing/ is
 * forgotten: the rescan registers it again. The others are planned by the
 * plan child (planfile.h). */
static int recover_new_files(PGconn *c, const Config *cfg)
{
        PGresult *res = db_query(
                c, NULL, "SELECT id, path FROM ingest.files WHERE state = " SQL_NEW " ORDER BY id", 0, NULL);

        if (!res)
                return -EIO;
        for (int i = 0; i < PQntuples(res); i++) {
                char *full = registry_processing_path(cfg, PQgetvalue(res, i, 1));
                if (access(full, F_OK) < 0 && errno == ENOENT)
                        file_forget(c, strtoll(PQgetvalue(res, i, 0), NULL, 10), NULL);
                free(full);
        }
        PQclear(res);
        return 0;
}

static int recover_final_moves(PGconn *c, const Config *cfg);

int registry_retry_moves(PGconn *c, const Config *cfg)
{
        if (!space.moves_left)
                return 0;
        space.moves_left = false; /* set again by a move that fails */
        return recover_final_moves(c, cfg);
}

static int recover_final_moves(PGconn *c, const Config *cfg)
{
        PGresult *res = db_query(c, NULL,
                "SELECT path, state FROM ingest.files WHERE state IN (" SQL_DONE ", " SQL_FAILED ") "
                "AND finished_at > now() - interval '7 days' ORDER BY id",
                0, NULL);

        if (!res)
                return -EIO;
        for (int i = 0; i < PQntuples(res); i++) {
                char *full = registry_processing_path(cfg, PQgetvalue(res, i, 0));
                if (access(full, F_OK) == 0)
                        move_from_processing(cfg, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1));
                free(full);
        }
        PQclear(res);
        return 0;
}

int registry_recover(PGconn *c, const Config *cfg)
{
        int r = reconcile_folders(c, cfg); /* first: a file back in processing/ keeps its new row */

        if (r == 0)
                r = recover_new_files(c, cfg);
        return r < 0 ? r : recover_final_moves(c, cfg);
}

static char *file_path(PGconn *c, int64_t id)
{
        char ids[32];
        const char *p[1] = { ids };

        snprintf(ids, sizeof ids, "%" PRId64, id);
        PGresult *res = db_query(c, NULL, "SELECT path FROM ingest.files WHERE id = $1", 1, p);
        char *path = res && PQntuples(res) == 1 ? xstrdup(PQgetvalue(res, 0, 0)) : NULL;
        PQclear(res);
        return path;
}

int registry_fail(PGconn *c, const Config *cfg, int64_t file_id, const char *reason)
{
        char *path = file_path(c, file_id), *err = NULL;
        FileSummary sum;
        int r;

        if (!path)
                return -EIO;
        r = file_close(c, file_id, FILE_FAILED, reason, &sum, &err);
        if (r > 0)
                metrics_file_closed(&sum, true);
        if (r >= 0) {
                r = 0;
                log_ctx(LOG_ERR, path_ctx(path, STATE_FAILED, -1), "%s failed: %s", path, reason);
                move_from_processing(cfg, path, "failed");
        } else {
                log_ctx(LOG_ERR, path_ctx(path, NULL, -1), "cannot mark failed: %s", err);
        }
        free(err);
        free(path);
        return r;
}

int registry_finish(PGconn *c, const Config *cfg, int64_t file_id)
{
        char ids[32], *path = file_path(c, file_id), *err = NULL, *reason = NULL;
        const char *p[1] = { ids };
        int r = -EIO;

        snprintf(ids, sizeof ids, "%" PRId64, file_id);
        PGresult *res = db_query(c, &err,
                "SELECT f.data_rows, coalesce(sum(c.rows_loaded), 0), coalesce(sum(c.rows_rejected), 0), "
                "       coalesce(sum(c.rows_superseded), 0) "
                "FROM ingest.files f JOIN ingest.chunks c ON c.file_id = f.id WHERE f.id = $1 GROUP BY f.id",
                1, p);
        if (!path || !res || PQntuples(res) != 1)
                goto out;
        double rows = strtod(PQgetvalue(res, 0, 0), NULL);
        long long loaded = atoll(PQgetvalue(res, 0, 1)), rejected = atoll(PQgetvalue(res, 0, 2)),
                  superseded = atoll(PQgetvalue(res, 0, 3));
        if (loaded + rejected + superseded != (long long)rows)
                log_ctx(LOG_CRIT, path_ctx(path, NULL, -1), "row accounting mismatch: %lld + %lld + %lld != %.0f",
                        loaded, rejected, superseded, rows);
        if (rows > 0 && rejected / rows > cfg->rejects_max_ratio)
                reason = xasprintf("%lld of %.0f rows rejected (%.2f%%), above rejects.max_ratio %.2f%%; "
                                   "see: ingestctl rejects %s",
                        rejected, rows, 100.0 * rejected / rows, 100.0 * cfg->rejects_max_ratio, path);
        FileSummary sum;
        r = file_close(c, file_id, reason ? FILE_FAILED : FILE_DONE, reason, &sum, &err);
        if (r < 0)
                goto out;
        if (r > 0)
                metrics_file_closed(&sum, reason != NULL);
        r = 0;
        log_ctx(reason ? LOG_ERR : LOG_INFO, path_ctx(path, reason ? "failed" : "done", loaded),
                "%s %s: %lld loaded, %lld rejected, %lld superseded%s%s", path, reason ? "failed" : "done", loaded,
                rejected, superseded, reason ? ": " : "", reason ? reason : "");
        move_from_processing(cfg, path, reason ? "failed" : "done");
out:
        if (err)
                log_ctx(LOG_ERR, path_ctx(path, NULL, -1), "cannot finish: %s", err);
        PQclear(res);
        free(err);
        free(reason);
        free(path);
        return r;
}
