/* reconcile.c - see reconcile.h. One query per folder: the names found, joined
 * by '/' (which no file name holds), against ingest.files.path. */
#include "reconcile.h"
#include "db.h"
#include "log.h"
#include "registry.h"
#include "state.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Ours: "ID-NAME" or "IDu-NAME", in UTF-8 as registered (name_escape). */
static bool registered_name(const char *name)
{
        return name[0] != '.' && dropped_name(name) != name && utf8_valid(name, strlen(name));
}

/* The registered names in state/SUB joined by '/', or NULL when there are none. */
static char *list_folder(const Config *cfg, const char *sub)
{
        char *dir = xasprintf("%s/%s", cfg->state, sub);
        DIR *d = opendir(dir);
        Buf names = { 0 };
        struct dirent *de;

        if (!d)
                log_msg(LOG_ERR, "cannot read %s: %s", dir, strerror(errno));
        while (d && (de = readdir(d)))
                if (registered_name(de->d_name)) {
                        if (names.len)
                                buf_append(&names, "/", 1);
                        buf_append(&names, de->d_name, strlen(de->d_name));
                }
        if (d)
                closedir(d);
        free(dir);
        if (names.len)
                buf_append(&names, "", 1);
        return names.data;
}

/* Renames without replacing; link and unlink where the filesystem cannot (NFS). */
static int move_noreplace(const char *from, const char *to)
{
        if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
                return 0;
        if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP)
                return -errno;
        if (link(from, to) < 0)
                return -errno;
        return unlink(from) < 0 ? -errno : 0;
}

typedef struct Lost {
        char *sub, *path;
        long long id;
} Lost;

typedef struct LostList {
        Lost *items;
        size_t n, cap;
} LostList;

static void lost_add(LostList *l, const char *sub, const char *path)
{
        if (l->n == l->cap)
                l->items = xrealloc(l->items, (l->cap = l->cap ? l->cap * 2 : 8) * sizeof *l->items);
        l->items[l->n++] = (Lost){ xstrdup(sub), xstrdup(path), strtoll(path, NULL, 10) };
}

static int lost_cmp(const void *a, const void *b)
{
        const Lost *x = a, *y = b;

        return (x->id > y->id) - (x->id < y->id);
}

/* Back to its watched folder as NAME, or as the whole "ID-NAME" when a file of
 * that name is waiting there; the name it went back under, or NULL. */
static char *send_back(const Config *cfg, const Lost *f, FileKind kind)
{
        const char *name = dropped_name(f->path), *folder = registry_folder(cfg, kind);
        char *from = xasprintf("%s/%s/%s", cfg->state, f->sub, f->path), *to = xasprintf("%s/%s", folder, name);
        int r = move_noreplace(from, to);

        if (r == -EEXIST) {
                free(to);
                to = xasprintf("%s/%s", folder, f->path);
                name = f->path;
                r = move_noreplace(from, to);
        }
        LogCtx ctx = { name, -1, -1, -1, NULL };
        if (r < 0)
                log_ctx(LOG_ERR, ctx, "%s is unknown to the database, and cannot go back to %s: %s", from, to,
                        strerror(-r));
        else
                log_ctx(LOG_WARNING, ctx,
                        "%s is unknown to the database (it lost its last commits: a failover?): "
                        "back to %s, registered again",
                        from, to);
        free(from);
        free(to);
        return r < 0 ? NULL : xstrdup(name);
}

/* In the order they first came (their old ids), before any file waiting in
 * the folders, so that the lost history is loaded again as it happened. */
static int register_again(PGconn *c, const Config *cfg, LostList *l)
{
        int r = 0;

        if (l->n > 0)
                qsort(l->items, l->n, sizeof *l->items, lost_cmp);
        for (size_t i = 0; i < l->n; i++) {
                const char *name = dropped_name(l->items[i].path);
                FileKind kind = name[-2] == UPDATE_MARK[0] ? KIND_UPDATE : KIND_INGEST;
                char *back = send_back(cfg, &l->items[i], kind);
                if (back && r == 0 && registry_register(c, cfg, kind, back) < 0)
                        r = -EIO; /* the rest wait in the folders for the rescan */
                free(back);
        }
        return r;
}

static void lost_free(LostList *l)
{
        for (size_t i = 0; i < l->n; i++) {
                free(l->items[i].sub);
                free(l->items[i].path);
        }
        free(l->items);
}

/* Its row is new or loading: the database lost its end, which loads again. */
static void resume(const Config *cfg, const char *sub, const char *path, const char *state)
{
        char *from = xasprintf("%s/%s/%s", cfg->state, sub, path), *to = registry_processing_path(cfg, path);
        int r = move_noreplace(from, to);
        LogCtx ctx = { dropped_name(path), strtoll(path, NULL, 10), -1, -1, state };

        if (r < 0)
                log_ctx(LOG_ERR, ctx, "%s is %s in the database, and cannot go back to %s: %s", from, state, to,
                        strerror(-r));
        else
                log_ctx(LOG_WARNING, ctx,
                        "%s is %s in the database (it lost its last commits: a failover?): "
                        "back to processing/, its lost chunks load again",
                        from, state);
        free(from);
        free(to);
}

static int reconcile_folder(PGconn *c, const Config *cfg, const char *sub, LostList *lost)
{
        char *names = list_folder(cfg, sub), *err = NULL;
        const char *p[1] = { names };
        bool finished_folder = strcmp(sub, "processing") != 0;

        if (!names)
                return 0;
        PGresult *res = db_query(c, &err,
                "SELECT n, f.state FROM unnest(string_to_array($1, '/')) n LEFT JOIN ingest.files f ON f.path = n", 1,
                p);
        for (int i = 0; res && i < PQntuples(res); i++) {
                const char *path = PQgetvalue(res, i, 0), *state = PQgetvalue(res, i, 1);
                if (PQgetisnull(res, i, 1))
                        lost_add(lost, sub, path);
                else if (finished_folder && (strcmp(state, STATE_NEW) == 0 || strcmp(state, STATE_LOADING) == 0))
                        resume(cfg, sub, path, state);
        }
        if (!res) {
                log_msg(LOG_ERR, "cannot compare %s/%s with the database: %s", cfg->state, sub, err);
                free(err);
        }
        PQclear(res);
        free(names);
        return res ? 0 : -EIO;
}

int reconcile_folders(PGconn *c, const Config *cfg)
{
        const char *sub[] = { "processing", "done", "failed" };
        LostList lost = { 0 };
        int r = 0;

        for (size_t i = 0; i < 3 && r == 0; i++)
                r = reconcile_folder(c, cfg, sub[i], &lost);
        if (r == 0) /* else the database could not be asked: nothing moves */
                r = register_again(c, cfg, &lost);
        lost_free(&lost);
        return r;
}
