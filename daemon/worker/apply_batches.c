/* apply_batches.c - the batch path (apply.h): products is asked only about
 * the keys of each ~4 MiB batch and sent only what changes.
 *
 * Each batch is one probe for the rows products has for the batch's keys, and
 * then only what changes goes to the server: new rows by COPY straight into
 * products, changed ones through a small staging table and one UPDATE. Per
 * 117k-row chunk of a first load this took 0.31 s of server time against 0.63 s
 * for staging every row and letting SQL sort, join and insert. It is safe
 * because a key's chunks (its lane) are applied one at a time in file order;
 * a concurrent outside writer makes the COPY fail with a unique violation
 * (the chunk is retried), and the UPDATE re-checks the version (rules.h). */
#include "apply.h"
#include "batch.h"
#include "db.h"
#include "rules.h"
#include "products.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Rows are applied in batches of about this much COPY text (~22k rows): the
 * worker holds one batch, its index and the probe's answer at a time. */
#define BATCH_BYTES (4u << 20)

/* The most batches a chunk tries as new (each probes SAMPLE_KEYS, rules.h):
 * each is a subtransaction, and PostgreSQL caches 64 per backend before other
 * sessions' snapshots must look them up on disk. */
#define MAX_NEW_ROW_BATCHES 60

typedef struct BatchPath {
        const ApplyChunk *c;
        BatchRules rules;
        Batch batch;
        Buf scratch;       /* probe keys, then the rows to COPY */
        char *update_sql;  /* set once the staging table for updates exists */
        bool started;      /* the first batch has read the aggregate state */
        int new_rows_left; /* batches that may still try copy_new_rows */
        bool partitioned;  /* products is: the lookups take the partitions' form */
        bool agg_recount, agg_marked;
        double agg_limit; /* more delta rows than this: ask for a recount */
        uint64_t agg_changes;
        ApplyResult sum;
} BatchPath;

/* For ingest files name and description; for update files the header's
 * columns. */
static char *update_sql(const ApplyChunk *c)
{
        bool ingest = c->kind == KIND_INGEST;

        return products_update_sql(
                c->key, ingest || c->header->index[COL_NAME] >= 0, ingest || c->header->index[COL_DESCRIPTION] >= 0);
}

static int run_update(BatchPath *b, Buf *out, char **ret_error)
{
        PGconn *conn = b->c->conn;
        int r = 0;

        if (!b->update_sql) {
                b->update_sql = update_sql(b->c);
                r = db_exec(conn, ret_error, PRODUCTS_STAGE_SQL, 0, NULL);
        }
        out->len = 0;
        batch_put_updates(&b->batch, out);
        if (r == 0)
                r = db_copy_rows(conn, ret_error, "COPY pg_temp.upd FROM STDIN", out->data, out->len);
        if (r == 0)
                r = db_exec(conn, ret_error, b->update_sql, 1, b->c->ids);
        if (r == 0)
                r = db_exec(conn, ret_error, "TRUNCATE pg_temp.upd", 0, NULL);
        return r;
}

/* products_agg changes, by name, into ingest.agg_delta in the same
 * transaction: an insert counts +1 for its name, a rename -1 for the old name
 * and +1 for the new one. The refresh after the load folds these in instead
 * of recounting products. When a chunk changes more than AGG_RECOUNT_SHARE of
 * the table's estimated rows (PRODUCTS_ROWS_ESTIMATE, products.h), recording the deltas
 * costs more than recounting, and the chunk asks for a recount. Once a
 * recount is pending, later chunks leave only their own request (not none:
 * the pending one may belong to a refresh that will not see this chunk). */
static int agg_state(BatchPath *b, char **ret_error)
{
        PGresult *res = db_query(b->c->conn, ret_error,
                "SELECT EXISTS (SELECT 1 FROM ingest.agg_delta WHERE name IS NULL), " PRODUCTS_ROWS_ESTIMATE
                ", " PRODUCTS_IS_PARTITIONED,
                0, NULL);

        if (!res)
                return -EIO;
        b->agg_recount = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        b->partitioned = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
        b->agg_limit = AGG_RECOUNT_SHARE * strtod(PQgetvalue(res, 0, 1), NULL);
        PQclear(res);
        return 0;
}

static int record_deltas(BatchPath *b, const Existing *ex, Buf *out, char **ret_error)
{
        out->len = 0;
        size_t n = batch_put_deltas(&b->batch, ex, &b->rules, out);
        if (n == 0 || b->agg_marked)
                return 0;
        b->agg_changes += n;
        if (b->agg_recount || (double)b->agg_changes > b->agg_limit) {
                b->agg_recount = b->agg_marked = true;
                return apply_request_recount(b->c->conn, ret_error);
        }
        return db_copy_rows(
                b->c->conn, ret_error, "COPY ingest.agg_delta (name, delta) FROM STDIN", out->data, out->len);
}

static void reject_unknown(BatchPath *b)
{
        const char *why = apply_unknown_reason(b->c->key);

        for (size_t i = 0; i < b->batch.n; i++) {
                const BatchRow *r = &b->batch.rows[i];
                if (r->fate == FATE_UNKNOWN)
                        loader_add_reject(b->c->rejects, b->c->file_id, b->c->chunk_no, r->line, r->offset,
                                REJECT_UNKNOWN_SKU, why, NULL, 0);
        }
}

/* The rows products has for the batch's keys; ex points into *ret_res. */
static int probe(BatchPath *b, Existing **ret_ex, size_t *ret_n, PGresult **ret_res, char **ret_error)
{
        batch_probe_keys(&b->batch, 0, &b->scratch);
        const char *p[1] = { b->scratch.data };
        PGresult *res = db_query(b->c->conn, ret_error, products_probe_sql(b->partitioned), 1, p);

        if (!res)
                return -EIO;
        size_t n = (size_t)PQntuples(res);
        Existing *ex = xcalloc(n ? n : 1, sizeof *ex);
        for (size_t i = 0; i < n; i++) {
                for (int c = 0; c < N_COLUMNS; c++)
                        if (!PQgetisnull(res, (int)i, c))
                                ex[i].col[c] = (Field){ PQgetvalue(res, (int)i, c),
                                        (size_t)PQgetlength(res, (int)i, c) };
                ex[i].file_seq = strtoll(PQgetvalue(res, (int)i, 3), NULL, 10);
                ex[i].line = strtoll(PQgetvalue(res, (int)i, 4), NULL, 10);
        }
        *ret_ex = ex;
        *ret_n = n;
        *ret_res = res;
        return 0;
}

static void add_counts(BatchPath *b, const BatchCounts *n, bool as_new)
{
        b->sum.rows += n->rows;
        b->sum.distinct += n->distinct;
        b->sum.outranked += n->outranked;
        b->sum.superseding += n->superseding;
        b->sum.unknown += n->unknown;
        b->sum.new_pieces += as_new;
}

/* The general case: ask products about every key of the batch, then send what changes. */
static int probe_and_apply(BatchPath *b, char **ret_error)
{
        Existing *ex = NULL;
        PGresult *res = NULL;
        BatchCounts n = { 0 };
        size_t n_ex = 0;
        Buf *out = &b->scratch;
        int r = probe(b, &ex, &n_ex, &res, ret_error);

        if (r == 0) {
                batch_classify(&b->batch, ex, n_ex, &b->rules, &n);
                add_counts(b, &n, false);
                reject_unknown(b);
                out->len = 0;
                batch_put_inserts(&b->batch, b->c->file_id, out);
        }
        if (r == 0 && n.inserts)
                r = db_copy_rows(b->c->conn, ret_error, PRODUCTS_COPY_SQL, out->data, out->len);
        if (r == 0 && n.updates)
                r = run_update(b, out, ret_error);
        if (r == 0)
                r = record_deltas(b, ex, out, ret_error);
        free(ex);
        PQclear(res);
        return r;
}

/* 1 when products has any of a few keys spread over the batch, 0 when none. */
static int sample_found(BatchPath *b, char **ret_error)
{
        batch_probe_keys(&b->batch, SAMPLE_KEYS, &b->scratch);
        const char *p[1] = { b->scratch.data };

        return db_query_bool(b->c->conn, ret_error, products_any_sql(b->partitioned), 1, p);
}

/* Every row of the batch (sorted by key) as an insert, by COPY. */
static int copy_as_new(BatchPath *b, BatchCounts *n, char **ret_error)
{
        batch_classify(&b->batch, NULL, 0, &b->rules, n);
        b->scratch.len = 0;
        batch_put_inserts(&b->batch, b->c->file_id, &b->scratch);
        return n->inserts ? db_copy_rows(b->c->conn, ret_error, PRODUCTS_COPY_SQL, b->scratch.data, b->scratch.len) : 0;
}

/* A first load (ApplyChunk.keys_known): a probe of a few keys spread over
 * the batch says whether products has any of them; if not, the batch is
 * copied as inserts without asking about the rest. A key products has after
 * all (one the sample missed, or an outside writer's) fails the COPY: this
 * batch and the rest of the chunk then take the full probe. -EEXIST = take
 * the full probe. */
static int copy_new_rows(BatchPath *b, char **ret_error)
{
        BatchCounts n = { 0 };
        int r = sample_found(b, ret_error);

        if (r != 0)
                return r < 0 ? r : -EEXIST;
        b->new_rows_left--;
        if ((r = apply_new_rows_begin(b->c->conn, ret_error)) == 0)
                r = apply_new_rows_end(b->c->conn, copy_as_new(b, &n, ret_error), ret_error);
        if (r == -EEXIST)
                b->new_rows_left = 0;
        if (r == 0) {
                add_counts(b, &n, true);
                r = record_deltas(b, NULL, &b->scratch, ret_error);
        }
        return r;
}

/* Every statement of this path is a walk of products' key index: the probe,
 * and the UPDATE's nested loop over the few staged rows. Without statistics
 * (none yet right after a bulk load, none ever for the staging table) the
 * planner chose a sequential scan for the probe and a merge join over all of
 * products. The disabled plans' huge costs would in turn trigger JIT
 * compilation: 0.13 s per statement. */
static int begin(const ApplyChunk *c, void **ret_state, char **ret_error)
{
        BatchPath *b = xcalloc(1, sizeof *b);

        b->c = c;
        b->rules = (BatchRules){ .file_seq = c->file_id,
                .kind = c->kind,
                .key = c->key,
                .set = { true, c->header->index[COL_NAME] >= 0, c->header->index[COL_DESCRIPTION] >= 0 } };
        *ret_state = b;
        return db_script(c->conn, ret_error,
                "SET LOCAL enable_seqscan = off; SET LOCAL enable_mergejoin = off; "
                "SET LOCAL enable_hashjoin = off; SET LOCAL jit = off");
}

/* The first batch comes after the lane's previous chunk committed: the
 * table's size and a pending recount are read then. */
static int start(BatchPath *b, char **ret_error)
{
        int r = agg_state(b, ret_error);

        b->started = true;
        if (b->c->keys_known)
                b->new_rows_left = MAX_NEW_ROW_BATCHES;
        return r;
}

static int piece(void *state, Buf *rows, char **ret_error)
{
        BatchPath *b = state;
        int r = b->started ? 0 : start(b, ret_error);

        if (r < 0)
                return r;
        batch_clear(&b->batch);
        if (batch_index(&b->batch, rows->data, rows->len) < 0) {
                *ret_error = xstrdup("internal error: a staged row does not parse");
                return -EIO;
        }
        batch_dedup(&b->batch, b->c->key);
        b->sum.pieces++;
        r = b->new_rows_left > 0 ? copy_new_rows(b, ret_error) : -EEXIST;
        if (r == -EEXIST)
                r = probe_and_apply(b, ret_error);
        rows->len = 0;
        return r;
}

static int finish(void *state, ApplyResult *ret, char **ret_error)
{
        BatchPath *b = state;

        (void)ret_error;
        *ret = b->sum;
        return 0;
}

static void free_state(void *state)
{
        BatchPath *b = state;

        if (!b)
                return;
        batch_free(&b->batch);
        buf_free(&b->scratch);
        free(b->update_sql);
        free(b);
}

const ApplyPath apply_batches = { "batches", BATCH_BYTES, true, begin, piece, finish, free_state };
