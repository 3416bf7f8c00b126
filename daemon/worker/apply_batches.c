/* apply_batches.c - the batch path of a chunk (see job.h): products is asked
 * only about the keys of each ~4 MiB batch and sent only what changes. */
#include "job.h"
#include "db.h"
#include "rules.h"
#include "schema.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Rows are applied in batches of about this much COPY text (~22k rows): the
 * worker holds one batch, its index and the probe's answer at a time. */
#define BATCH_BYTES (4u << 20)

/* Of a chunk's distinct rows, "outranked" ones are older than the row in the
 * table (a later file got there first) and are not applied; "superseding" ones
 * replace a row an earlier batch or chunk of this same file wrote, which
 * thereby becomes superseded. Both move a row from loaded to superseded.
 *
 * Each batch is one probe for the rows products has for the batch's keys, and
 * then only what changes goes to the server: new rows by COPY straight into
 * products, changed ones through a small staging table and one UPDATE. Per
 * 117k-row chunk of a first load this took 0.31 s of server time against 0.63 s
 * for staging every row and letting SQL sort, join and insert. It is safe
 * because a key's chunks (its lane) are applied one at a time in file order;
 * a concurrent outside writer makes the COPY fail with a unique violation
 * (the chunk is retried), and the UPDATE re-checks the version. */
static const char probe_sql[] =
        "SELECT sku, name, description, file_seq, line FROM public.products WHERE sku = ANY($1::text[])";
static const char insert_sql[] = "COPY public.products (sku, name, description, file_seq, line) FROM STDIN";

/* For ingest files name and description; for update files the header's
 * columns. The key's name is never set. */
static char *update_sql(const Job *j)
{
        bool sku_name = j->cfg->key == KEY_SKU_NAME;
        bool set_name = !sku_name && (j->kind == KIND_INGEST || j->header.index[COL_NAME] >= 0);
        bool set_desc = j->kind == KIND_INGEST || j->header.index[COL_DESCRIPTION] >= 0;

        return xasprintf("UPDATE public.products p SET %s%sfile_seq = $1::bigint, line = s.line "
                         "FROM pg_temp.upd s WHERE p.sku = s.sku%s AND " SQL_OLDER("p", "$1::bigint", "s.line"),
                         set_name ? "name = s.name, " : "", set_desc ? "description = s.description, " : "",
                         sku_name ? " AND p.name = s.name" : "");
}

static int run_update(Job *j, Buf *out)
{
        const char *p[1] = { j->ids[0] };
        int r = 0;

        if (!j->update_sql) {
                j->update_sql = update_sql(j);
                /* the staged updates take the collation of products' key */
                r = db_exec(j->conn, &j->error,
                            "CREATE TEMP TABLE upd ON COMMIT DROP AS "
                            "SELECT sku, name, description, line FROM public.products WITH NO DATA", 0, NULL);
        }
        out->len = 0;
        batch_put_updates(&j->batch, out);
        if (r == 0)
                r = job_copy_rows(j, "COPY pg_temp.upd FROM STDIN", out);
        if (r == 0)
                r = db_exec(j->conn, &j->error, j->update_sql, 1, p);
        if (r == 0)
                r = db_exec(j->conn, &j->error, "TRUNCATE pg_temp.upd", 0, NULL);
        return r;
}

/* products_agg changes, by name, into ingest.agg_delta in the same
 * transaction: an insert counts +1 for its name, a rename -1 for the old name
 * and +1 for the new one. The refresh after the load folds these in instead
 * of recounting products. When a chunk changes more than a tenth of the
 * table's estimated rows (always on the first load into an empty table),
 * recording the deltas costs more than recounting, and the chunk leaves a
 * NULL-name row that asks for a recount (the table's size: PRODUCTS_ROWS,
 * schema.h). Once a recount is pending, later chunks leave only their own
 * request (not none: the pending one may belong to a refresh that will not
 * see this chunk). */
static int agg_state(Job *j)
{
        PGresult *res = db_query(j->conn, &j->error,
                "SELECT EXISTS (SELECT 1 FROM ingest.agg_delta WHERE name IS NULL), "
                "       " PRODUCTS_ROWS " "
                "FROM pg_class WHERE oid = 'public.products'::regclass", 0, NULL);

        if (!res)
                return -EIO;
        j->agg_recount = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        j->agg_limit = AGG_RECOUNT_SHARE * strtod(PQgetvalue(res, 0, 1), NULL);
        PQclear(res);
        return 0;
}

static int record_deltas(Job *j, const Existing *ex, Buf *out)
{
        const BatchRules *rules = &j->rules;

        out->len = 0;
        size_t n = batch_put_deltas(&j->batch, ex, rules, out);
        if (n == 0 || j->agg_marked)
                return 0;
        j->agg_changes += n;
        if (j->agg_recount || (double)j->agg_changes > j->agg_limit) {
                j->agg_recount = j->agg_marked = true;
                return db_exec(j->conn, &j->error, "INSERT INTO ingest.agg_delta (name, delta) VALUES (NULL, 0)",
                               0, NULL);
        }
        return job_copy_rows(j, "COPY ingest.agg_delta (name, delta) FROM STDIN", out);
}

static void reject_unknown(Job *j, Buf *rejects)
{
        const char *why = job_unknown_reason(j);

        for (size_t i = 0; i < j->batch.n; i++) {
                const BatchRow *r = &j->batch.rows[i];
                if (r->fate == FATE_UNKNOWN)
                        loader_add_reject(rejects, j->file_id, j->chunk_no, r->line, r->offset, why, NULL, 0);
        }
}

/* The rows products has for the batch's keys; ex points into *ret_res. */
static int probe(Job *j, Existing **ret_ex, size_t *ret_n, PGresult **ret_res)
{
        batch_probe_keys(&j->batch, 0, &j->scratch);
        const char *p[1] = { j->scratch.data };
        PGresult *res = db_query(j->conn, &j->error, probe_sql, 1, p);

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

static void add_counts(Job *j, const BatchCounts *n)
{
        j->rows += n->rows;
        j->distinct += n->distinct;
        j->outranked += n->outranked;
        j->superseding += n->superseding;
        j->unknown += n->unknown;
}

/* The general case: ask products about every key of the batch, then send what changes. */
static int probe_and_apply(Job *j)
{
        Existing *ex = NULL;
        PGresult *res = NULL;
        BatchCounts n = { 0 };
        size_t n_ex = 0;
        Buf *out = &j->scratch;
        int r = probe(j, &ex, &n_ex, &res);

        if (r == 0) {
                batch_classify(&j->batch, ex, n_ex, &j->rules, &n);
                add_counts(j, &n);
                reject_unknown(j, j->rejects);
                out->len = 0;
                batch_put_inserts(&j->batch, j->file_id, out);
        }
        if (r == 0 && n.inserts)
                r = job_copy_rows(j, insert_sql, out);
        if (r == 0 && n.updates)
                r = run_update(j, out);
        if (r == 0)
                r = record_deltas(j, ex, out);
        free(ex);
        PQclear(res);
        return r;
}

/* The most batches a chunk tries as new (each probes SAMPLE_KEYS, rules.h):
 * each is a subtransaction, and PostgreSQL caches 64 per backend before other
 * sessions' snapshots must look them up on disk. */
#define MAX_NEW_ROW_BATCHES 60

/* 1 when products has any of a few keys spread over the batch, 0 when none. */
static int sample_found(Job *j)
{
        batch_probe_keys(&j->batch, SAMPLE_KEYS, &j->scratch);
        const char *p[1] = { j->scratch.data };

        return db_query_bool(j->conn, &j->error,
                             "SELECT EXISTS (SELECT 1 FROM public.products WHERE sku = ANY($1::text[]))", 1, p);
}

/* Every row of the batch (sorted by key) as an insert, by COPY. */
static int copy_as_new(Job *j, BatchCounts *n)
{
        batch_classify(&j->batch, NULL, 0, &j->rules, n);
        j->scratch.len = 0;
        batch_put_inserts(&j->batch, j->file_id, &j->scratch);
        return n->inserts ? job_copy_rows(j, insert_sql, &j->scratch) : 0;
}

/* A first load (see job_may_copy_new_rows): a probe of a few keys spread
 * over the batch says whether products has any of them; if not, the batch is
 * copied as inserts without asking about the rest. A key products has after
 * all (one the sample missed, or an outside writer's) fails the COPY: this
 * batch and the rest of the chunk then take the full probe. -EEXIST = take
 * the full probe. */
static int copy_new_rows(Job *j)
{
        BatchCounts n = { 0 };
        int r = sample_found(j);

        if (r != 0)
                return r < 0 ? r : -EEXIST;
        j->new_rows_left--;
        if ((r = job_new_rows_begin(j)) == 0)
                r = job_new_rows_end(j, copy_as_new(j, &n));
        if (r == -EEXIST)
                j->new_rows_left = 0;
        if (r == 0) {
                add_counts(j, &n);
                j->new_batches++;
                r = record_deltas(j, NULL, &j->scratch);
        }
        return r;
}

/* products' key is deferred (apply_bulk.c): the batch goes in as it is; its
 * sort by key leaves the heap in sorted runs, which later loads' lookups in
 * key order read page by page. No deltas: the load asks for a recount. */
static int copy_deferred(Job *j)
{
        BatchCounts n = { 0 };
        int r = copy_as_new(j, &n);

        if (r == 0) {
                add_counts(j, &n);
                j->new_batches++;
        }
        return r;
}

static int apply_batch(Job *j, Buf *rows)
{
        int r = -EEXIST;

        batch_clear(&j->batch);
        if (batch_index(&j->batch, rows->data, rows->len) < 0) {
                j->error = xstrdup("internal error: a staged row does not parse");
                return -EIO;
        }
        batch_dedup(&j->batch, j->cfg->key);
        j->batches++;
        if (j->bulk)
                r = copy_deferred(j);
        else if (j->new_rows_left > 0)
                r = copy_new_rows(j);
        if (r == -EEXIST)
                r = probe_and_apply(j);
        rows->len = 0;
        return r;
}

/* The loader's flush: the first batch waits for the lane's previous chunk
 * (parsing it overlapped that chunk's apply) and reads the table's size. */
static int batch_ready(Buf *rows, void *ud)
{
        Job *j = ud;
        int r;

        if (!j->waited && !j->bulk) {
                double t = now_monotonic();
                r = job_wait_predecessor(j);
                j->t_wait = now_monotonic() - t;
                if (r <= 0)
                        return r == 0 ? -ECANCELED : r;
                j->waited = true;
                if ((r = agg_state(j)) < 0)
                        return r;
                if (job_may_copy_new_rows(j))
                        j->new_rows_left = MAX_NEW_ROW_BATCHES;
        }
        double t = now_monotonic();
        r = apply_batch(j, rows);
        j->t_apply += now_monotonic() - t;
        return r;
}

/* Parses the chunk's byte range and applies its lane's rows batch by batch.
 * Every statement of this path is a walk of products' key index: the probe,
 * and the UPDATE's nested loop over the few staged rows. Without statistics
 * (none yet right after a bulk load, none ever for the staging table) the
 * planner chose a sequential scan for the probe and a merge join over all of
 * products. The disabled plans' huge costs would in turn trigger JIT
 * compilation: 0.13 s per statement. */
int apply_in_batches(Job *j, Buf *rejects)
{
        Buf rows = { 0 };
        int r = db_script(j->conn, &j->error, "SET LOCAL enable_seqscan = off; SET LOCAL enable_mergejoin = off; "
                                              "SET LOCAL enable_hashjoin = off; SET LOCAL jit = off");

        j->rejects = rejects;
        j->rules = (BatchRules){ .file_seq = j->file_id, .kind = j->kind, .key = j->cfg->key,
                                 .set = { true, j->header.index[COL_NAME] >= 0,
                                          j->header.index[COL_DESCRIPTION] >= 0 } };
        if (r == 0)
                r = job_load_rows(j, &rows, rejects, BATCH_BYTES, batch_ready);
        if (r == 0 && !j->waited && !j->bulk)    /* no rows in our lane: still in order */
                r = batch_ready(&rows, j);
        buf_free(&rows);
        return r;
}
