/* deferkey.h - products' primary key deferred over a first load.
 *
 * Inserting 10M rows into an indexed products costs far more than inserting
 * them into a bare heap and building the index once, sorted, at the end
 * (10M first load: the chunks' inserts 30 s per lane, against 2 s per chunk
 * into the bare heap and 3.2 s for the key). So when an ingest file starts
 * while products is empty, its primary key constraint is dropped, the chunks
 * COPY their rows straight into the table (each key once: the lookahead finds
 * a key's last row in the file, and key lanes hold disjoint keys), and the key
 * is built again when the chunks are done or the file failed. Until then no
 * other file starts. A row whose fate the lookahead could not settle waits in
 * ingest.deferred_rows and is applied, newest version first, with the key.
 * Everything is in PostgreSQL: a restart finds the deferred key in
 * ingest.files and builds it. */
#pragma once
#include "config.h"
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

/* The supervisor, before the file's first chunk: drops the key when the file
 * is an ingest file, `allowed` (defer_key), its chunks' rows fit a worker's
 * lookahead (lookahead.h), products is empty and its lock is free within a
 * second. Decides once per file. 1 = deferred, 0 = not, <0 = error. */
int deferkey_decide(PGconn *c, int64_t file_id, bool allowed, char **ret_error);

/* Inside an open transaction: builds the file's deferred key and applies its
 * deferred rows (moving the rows that lose to a newer version from their
 * chunk's loaded count to its superseded count). Waits for the file's running
 * chunks (they hold its row FOR KEY SHARE). 1 = built, 0 = nothing deferred,
 * <0 = error (a duplicate key names the key). */
int deferkey_build(PGconn *c, int64_t file_id, KeyMode key, char **ret_error);

/* 1 when some file's deferred key is not built yet (products may lack its
 * primary key meanwhile), 0 when none, <0 on error. */
int deferkey_pending(PGconn *c, char **ret_error);
