/* reconcile.h - the folders made to agree with the database again, after a
 * failover to a standby that lacks the last commits (or a restore). A chunk's
 * rows and its checkpoint commit together, so what the database holds is
 * always a moment of the past, whole; the folders can only be ahead of it:
 *   - a file in done/ or failed/ whose row is new or loading goes back to
 *     processing/: its lost chunks load again;
 *   - a file in processing/, done/ or failed/ that has no row goes back to its
 *     watched folder (incoming/, or updates/ for "IDu-NAME") as NAME and is
 *     registered again at once, in the order of the old ids and before the
 *     files waiting there, so that the lost history loads again as it
 *     happened; nothing of such a file was kept, so it loads whole.
 * The leader runs it before the other recovery steps (registry_recover). */
#pragma once
#include "config.h"

#include <libpq-fe.h>

/* 0, or -EIO when the database could not be asked (nothing moved then). */
int reconcile_folders(PGconn *c, const Config *cfg);
