/* apply.h - the one interface of the ways a chunk's rows reach products.
 *
 * worker.c alone runs a chunk's sequence: lock the chunk, note where its keys
 * occur last (the lookahead), wait for the lane's previous chunk, load the
 * rows, apply them, store the rejects, mark the chunk done, commit. A path is
 * an operations table that it calls along the way:
 *
 *   begin      inside the transaction, before any row: the path's own state
 *   piece      a piece of the chunk's valid rows (COPY text, see loader.h),
 *              about piece_bytes of it, as the loader produces them
 *   finish     after the last piece: apply what is left, and the counts
 *   free       the state (accepts NULL)
 *
 * `ordered` paths apply only after the lane's previous chunk committed: the
 * worker waits before the first piece (parsing it overlapped that chunk's
 * apply), or before finish when the lane has no rows in the chunk. A path calls nothing in worker.c, and its state stays
 * in its own file. A path that cannot go on without products' key (the
 * deferred path, when its rows cannot be told apart, loader.h's -ENOSPC)
 * returns -ENOSPC: worker.c alone then rolls back to before the rows, builds
 * the key and applies the chunk in batches. */
#pragma once
#include "config.h"
#include "loader.h"
#include "planner.h"
#include "util.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

/* What a path may read about its chunk; worker.c owns all of it. */
typedef struct ApplyChunk {
        PGconn *conn;
        int64_t file_id;
        int chunk_no;
        const char *ids[2]; /* file_id, chunk_no as text parameters */
        FileKind kind;
        KeyMode key;
        const Header *header;
        bool keys_known;          /* an ingest file whose lookahead knows every key of the chunk: no key
                                      repeats in the file, so a sample can tell that all rows are new */
        Buf *rejects;             /* a path appends the rows it rejects (unknown keys of update files) */
        Buf *uncertain;           /* deferred path: rows the lookahead could not settle (by the loader) */
        const LoadCounts *counts; /* the loader's counts, final once the last piece is in */
} ApplyChunk;

/* The counts a path returns; worker.c turns them into loaded, rejected and
 * superseded. Of the distinct rows, "outranked" ones are older than products'
 * row (a later file got there first), "superseding" ones replace a row an
 * earlier chunk of this file wrote. */
typedef struct ApplyResult {
        uint64_t rows; /* rows applied or compared, unknown ones excepted */
        uint64_t distinct, outranked, superseding, unknown;
        unsigned pieces;     /* batches (or 1 for a whole chunk) */
        unsigned new_pieces; /* ... of those copied as new without looking up every key */
} ApplyResult;

/* A path's table lists its fields in this order. */
typedef struct ApplyPath {
        const char *name; /* ingest.chunks.apply_path */
        size_t piece_bytes;
        bool ordered;
        int (*begin)(const ApplyChunk *c, void **ret_state, char **ret_error);
        int (*piece)(void *state, Buf *rows, char **ret_error);
        int (*finish)(void *state, ApplyResult *ret, char **ret_error);
        void (*free)(void *state);
} ApplyPath;

extern const ApplyPath apply_batches;  /* probe each batch's keys, send only what changes */
extern const ApplyPath apply_deferred; /* products' key deferred: rows straight into the bare table */

/* The deferred path's rows that the lookahead cannot settle, at most (~5k
 * rows): past it the loader stops with -ENOSPC. */
#define DEFERRED_UNCERTAIN_MAX (1u << 20)

/* ---- shared by the paths (apply.c); none of these calls back --------- */

/* Rows copied as new run under a savepoint: apply_new_rows_end() releases it
 * when r == 0, and on a unique violation (a key there after all) rolls it
 * back and returns -EEXIST with *ret_error cleared, so the caller applies the
 * rows the general way. */
int apply_new_rows_begin(PGconn *c, char **ret_error);
int apply_new_rows_end(PGconn *c, int r, char **ret_error);
/* Asks the next products_agg refresh for a recount (ingest.agg_delta's NULL name). */
int apply_request_recount(PGconn *c, char **ret_error);
/* The reject reason of an update file's row whose key products lacks. */
const char *apply_unknown_reason(KeyMode key);
