/* apply_deferred.c - the path (apply.h) of a chunk while products' primary
 * key is deferred over a first load (deferkey.h): the rows go by COPY straight
 * into the bare table, each 4 MiB batch sorted by key, which leaves the heap
 * in sorted runs that later loads' lookups in key order read page by page.
 * No statement looks a key up (there is no index to do it with), so the chunk
 * must know that it sends each key once: its lookahead knows every key of the
 * chunk, a row whose key occurs again further on is not sent, and key lanes
 * hold disjoint keys; so chunks need not wait for each other. The rows the
 * lookahead cannot settle (two keys sharing an entry of its table: a handful
 * in 10M rows) are kept in ingest.deferred_rows and applied when the key is
 * built; so are the rows of keys that found no room in a full table (a chunk
 * with far more rows than its share). Past DEFERRED_UNCERTAIN_MAX of them the
 * loader stops with -ENOSPC, and worker.c builds the key and applies the
 * chunk by a keyed path. The supervisor defers the key only for files whose
 * chunks fit the table (deferkey_decide). */
#include "apply.h"
#include "batch.h"
#include "db.h"
#include "products.h"

#include <errno.h>
#include <stdlib.h>

#define BATCH_BYTES (4u << 20)

typedef struct DeferredPath {
        const ApplyChunk *c;
        BatchRules rules;
        Batch batch;
        Buf out;
        ApplyResult sum;
} DeferredPath;

static int begin(const ApplyChunk *c, void **ret_state, char **ret_error)
{
        DeferredPath *d = xcalloc(1, sizeof *d);

        (void)ret_error;
        d->c = c;
        d->rules = (BatchRules){ .file_seq = c->file_id,
                .kind = c->kind,
                .key = c->key,
                .set = { true, c->header->index[COL_NAME] >= 0, c->header->index[COL_DESCRIPTION] >= 0 } };
        *ret_state = d;
        return 0;
}

/* The batch as it is, sorted by key, every row an insert. */
static int piece(void *state, Buf *rows, char **ret_error)
{
        DeferredPath *d = state;
        BatchCounts n = { 0 };

        batch_clear(&d->batch);
        if (batch_index(&d->batch, rows->data, rows->len) < 0) {
                *ret_error = xstrdup("internal error: a staged row does not parse");
                return -EIO;
        }
        rows->len = 0;
        batch_dedup(&d->batch, d->c->key);
        batch_classify(&d->batch, NULL, 0, &d->rules, &n);
        d->out.len = 0;
        batch_put_inserts(&d->batch, d->c->file_id, &d->out);
        d->sum.rows += n.rows;
        d->sum.distinct += n.distinct;
        d->sum.pieces++; /* not new_pieces: nothing is looked up here to skip */
        return n.inserts ? db_copy_rows(d->c->conn, ret_error, PRODUCTS_COPY_SQL, d->out.data, d->out.len) : 0;
}

static int store_uncertain(DeferredPath *d, char **ret_error)
{
        const ApplyChunk *c = d->c;
        uint64_t n = c->counts->uncertain;

        if (n == 0)
                return 0;
        d->sum.rows += n; /* loaded, unless the key's build finds a newer row */
        d->sum.distinct += n;
        int r = db_exec(c->conn, ret_error,
                "CREATE TEMP TABLE uncertain ON COMMIT DROP AS SELECT sku, name, description, line, "
                "line AS byte_offset FROM ingest.deferred_rows WITH NO DATA",
                0, NULL);
        if (r == 0)
                r = db_copy_rows(
                        c->conn, ret_error, "COPY pg_temp.uncertain FROM STDIN", c->uncertain->data, c->uncertain->len);
        if (r == 0)
                r = db_exec(c->conn, ret_error,
                        "INSERT INTO ingest.deferred_rows (file_id, chunk_no, sku, name, description, file_seq, line) "
                        "SELECT $1, $2, sku, name, description, $1, line FROM pg_temp.uncertain",
                        2, c->ids);
        return r;
}

/* The uncertain rows into ingest.deferred_rows, and a request for
 * products_agg's recount (a first load changes every name). */
static int finish(void *state, ApplyResult *ret, char **ret_error)
{
        DeferredPath *d = state;
        int r = store_uncertain(d, ret_error);

        if (r == 0 && d->c->counts->rows > 0)
                r = apply_request_recount(d->c->conn, ret_error);
        *ret = d->sum;
        return r;
}

static void free_state(void *state)
{
        DeferredPath *d = state;

        if (!d)
                return;
        batch_free(&d->batch);
        buf_free(&d->out);
        free(d);
}

const ApplyPath apply_deferred = { "deferred", BATCH_BYTES, false, begin, piece, finish, free_state };
