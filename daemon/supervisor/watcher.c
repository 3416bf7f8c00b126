/* watcher.c - owns the descriptor the loop waits on for new files.
 *
 * inotify: a file is announced when a writer closes it (IN_CLOSE_WRITE) or it
 * is renamed in (IN_MOVED_TO), so a file written slowly is seen once, whole.
 *
 * poll (network filesystems, where inotify misses other hosts' writes): a
 * timerfd every watch_interval; each scan opens and fstat()s every name, and
 * a file is announced once its inode, size, mtime and ctime are the same in
 * two scans in a row. File times are only compared with themselves, never
 * with the local clock, which may not be the writer's. The open makes an NFS
 * client revalidate the attributes (close-to-open consistency).
 *
 * Everything else (which names count, what to do with them) is the caller's. */
#include "watcher.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

/* A name as one poll scan saw it. */
typedef struct Seen {
        FileKind kind;
        char *name;
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime, ctime;
        bool stable; /* the same as in the scan before */
} Seen;

struct Watcher {
        WatchMode mode;
        int fd;
        int wd[2];    /* inotify: indexed by FileKind */
        char *dir[2]; /* poll: the folders, indexed by FileKind */
        Seen *seen;   /* poll: the last scan */
        size_t n_seen;
};

bool watcher_name_wanted(const char *name)
{
        size_t n = strlen(name);

        if (n == 0 || name[0] == '.')
                return false;
        if (n >= 4 && strcmp(name + n - 4, ".tmp") == 0)
                return false;
        if (n >= 5 && strcmp(name + n - 5, ".part") == 0)
                return false;
        return true;
}

static int inotify_new(Watcher *w, const char *incoming, const char *updates)
{
        const uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR;

        w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->fd < 0)
                return -errno;
        w->wd[KIND_INGEST] = inotify_add_watch(w->fd, incoming, mask);
        if (w->wd[KIND_INGEST] < 0)
                return -errno;
        w->wd[KIND_UPDATE] = inotify_add_watch(w->fd, updates, mask);
        return w->wd[KIND_UPDATE] < 0 ? -errno : 0;
}

static int poll_new(Watcher *w, const char *incoming, const char *updates, double interval)
{
        long ns = (long)((interval - (double)(long)interval) * 1e9);
        struct itimerspec its = { { (time_t)interval, ns }, { (time_t)interval, ns } };

        w->dir[KIND_INGEST] = xstrdup(incoming);
        w->dir[KIND_UPDATE] = xstrdup(updates);
        w->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (w->fd < 0)
                return -errno;
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
                its.it_value.tv_nsec = its.it_interval.tv_nsec = 1000000;
        return timerfd_settime(w->fd, 0, &its, NULL) < 0 ? -errno : 0;
}

int watcher_new(const char *incoming, const char *updates, WatchMode mode, double interval, Watcher **ret)
{
        Watcher *w = xcalloc(1, sizeof *w);
        int r;

        w->mode = mode;
        w->fd = -1;
        r = mode == WATCH_POLL ? poll_new(w, incoming, updates, interval) : inotify_new(w, incoming, updates);
        if (r < 0) {
                watcher_free(w);
                return r;
        }
        *ret = w;
        return 0;
}

static void seen_free(Seen *seen, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(seen[i].name);
        free(seen);
}

Watcher *watcher_free(Watcher *w)
{
        if (!w)
                return NULL;
        if (w->fd >= 0)
                close(w->fd);
        seen_free(w->seen, w->n_seen);
        free(w->dir[0]);
        free(w->dir[1]);
        free(w);
        return NULL;
}

int watcher_fd(const Watcher *w) { return w->fd; }

static int inotify_dispatch(Watcher *w, WatcherFn fn, void *ud)
{
        char buf[64 * (sizeof(struct inotify_event) + NAME_MAX + 1)]
                __attribute__((aligned(__alignof__(struct inotify_event))));

        for (;;) {
                ssize_t n = read(w->fd, buf, sizeof buf);
                if (n < 0)
                        return errno == EAGAIN ? 0 : -errno;
                for (char *p = buf; p < buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *)p;
                        p += sizeof *ev + ev->len;
                        if (ev->mask & IN_Q_OVERFLOW)
                                fn(KIND_INGEST, NULL, ud);
                        else if (ev->len > 0 && watcher_name_wanted(ev->name))
                                fn(ev->wd == w->wd[KIND_UPDATE] ? KIND_UPDATE : KIND_INGEST, ev->name, ud);
                }
        }
}

/* open + fstat (a symbolic link or what cannot be opened: lstat). */
static int look(int dir, const char *name, struct stat *st)
{
        int fd = openat(dir, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);

        if (fd < 0)
                return fstatat(dir, name, st, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
        int r = fstat(fd, st) < 0 ? -errno : 0;
        close(fd);
        return r;
}

static const Seen *seen_find(const Seen *seen, size_t n, FileKind kind, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (seen[i].kind == kind && strcmp(seen[i].name, name) == 0)
                        return &seen[i];
        return NULL;
}

static bool same_time(struct timespec a, struct timespec b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

/* One folder into *next, each name marked stable when the last scan saw it alike. */
static void scan_folder(const Watcher *w, FileKind kind, Seen **next, size_t *n, size_t *cap)
{
        DIR *d = opendir(w->dir[kind]);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d))) {
                struct stat st;
                if (!watcher_name_wanted(de->d_name) || look(dirfd(d), de->d_name, &st) < 0)
                        continue;
                const Seen *old = seen_find(w->seen, w->n_seen, kind, de->d_name);
                Seen now = { kind, xstrdup(de->d_name), st.st_dev, st.st_ino, st.st_size, st.st_mtim, st.st_ctim,
                        false };
                now.stable = old && old->dev == now.dev && old->ino == now.ino && old->size == now.size &&
                             same_time(old->mtime, now.mtime) && same_time(old->ctime, now.ctime);
                if (*n == *cap)
                        *next = xrealloc(*next, (*cap = *cap ? *cap * 2 : 16) * sizeof **next);
                (*next)[(*n)++] = now;
        }
        closedir(d);
}

/* Arrival order, as far as the files tell it: oldest mtime first. */
static int seen_cmp(const void *a, const void *b)
{
        const Seen *x = a, *y = b;

        return arrival_cmp(x->mtime, x->name, y->mtime, y->name);
}

static int poll_dispatch(Watcher *w, WatcherFn fn, void *ud)
{
        uint64_t expirations;
        Seen *next = NULL;
        size_t n = 0, cap = 0;

        if (read(w->fd, &expirations, sizeof expirations) < 0)
                return errno == EAGAIN ? 0 : -errno;
        scan_folder(w, KIND_INGEST, &next, &n, &cap);
        scan_folder(w, KIND_UPDATE, &next, &n, &cap);
        seen_free(w->seen, w->n_seen);
        w->seen = next;
        w->n_seen = n;
        if (n > 0) /* qsort's array must not be NULL */
                qsort(w->seen, n, sizeof *w->seen, seen_cmp);
        for (size_t i = 0; i < n; i++)
                if (w->seen[i].stable)
                        fn(w->seen[i].kind, w->seen[i].name, ud);
        return 0;
}

int watcher_dispatch(Watcher *w, WatcherFn fn, void *ud)
{
        return w->mode == WATCH_POLL ? poll_dispatch(w, fn, ud) : inotify_dispatch(w, fn, ud);
}
