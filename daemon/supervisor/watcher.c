/* watcher.c - owns the inotify descriptor. A file is announced when a writer
 * closes it (IN_CLOSE_WRITE) or it is renamed in (IN_MOVED_TO), so a file
 * written slowly is seen once, whole. Everything else (which names count, what
 * to do with them) is the caller's. */
#include "watcher.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

struct Watcher {
        int fd;
        int wd[2]; /* indexed by FileKind */
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

int watcher_new(const char *incoming, const char *updates, Watcher **ret)
{
        const uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR;
        Watcher *w = xcalloc(1, sizeof *w);
        int r;

        w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (w->fd < 0)
                goto fail;
        w->wd[KIND_INGEST] = inotify_add_watch(w->fd, incoming, mask);
        if (w->wd[KIND_INGEST] < 0)
                goto fail;
        w->wd[KIND_UPDATE] = inotify_add_watch(w->fd, updates, mask);
        if (w->wd[KIND_UPDATE] < 0)
                goto fail;
        *ret = w;
        return 0;
fail:
        r = -errno;
        watcher_free(w);
        return r;
}

Watcher *watcher_free(Watcher *w)
{
        if (!w)
                return NULL;
        if (w->fd >= 0)
                close(w->fd);
        free(w);
        return NULL;
}

int watcher_fd(const Watcher *w) { return w->fd; }

int watcher_dispatch(Watcher *w, WatcherFn fn, void *ud)
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
