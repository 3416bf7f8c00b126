/* watcher.h - new files in the two watched folders: inotify, or a scan
 * every watch_interval that announces a file once it has not changed for
 * one interval (watch = "poll", for network filesystems). */
#pragma once
#include "config.h"
#include "planner.h"

#include <stdbool.h>

typedef struct Watcher Watcher;

/* name == NULL means the event queue overflowed: rescan both folders. */
typedef void (*WatcherFn)(FileKind kind, const char *name, void *ud);

int watcher_new(const char *incoming, const char *updates, WatchMode mode, double interval, Watcher **ret);
Watcher *watcher_free(Watcher *w);
int watcher_fd(const Watcher *w);
/* After the fd is readable: fn for each file to take, in arrival order. */
int watcher_dispatch(Watcher *w, WatcherFn fn, void *ud);
/* Whether a name in a watched folder is to be loaded (no dotfiles, .tmp, .part). */
bool watcher_name_wanted(const char *name);
