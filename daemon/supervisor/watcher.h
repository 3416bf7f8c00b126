/* watcher.h - inotify on the two watched folders. */
#pragma once
#include "planner.h"

#include <stdbool.h>

typedef struct Watcher Watcher;

/* name == NULL means the event queue overflowed: rescan both folders. */
typedef void (*WatcherFn)(FileKind kind, const char *name, void *ud);

int watcher_new(const char *incoming, const char *updates, Watcher **ret);
Watcher *watcher_free(Watcher *w);
int watcher_fd(const Watcher *w);
int watcher_dispatch(Watcher *w, WatcherFn fn, void *ud);
/* Whether a name in a watched folder is to be loaded (no dotfiles, .tmp, .part). */
bool watcher_name_wanted(const char *name);
