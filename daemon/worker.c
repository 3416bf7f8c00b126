/* worker.c - one chunk, one transaction: lock the chunk row, parse the chunk's
 * byte range, wait until the previous chunk of the same lane has committed,
 * apply the valid rows of its key lane in batches (see apply_batch), store the
 * rejects, mark the chunk done, COMMIT. The commit is the checkpoint; the row
 * lock makes a second worker for the same chunk wait and then find it done, so
 * each chunk is applied exactly once. Applying each lane's chunks in file order
 * (lanes hold disjoint skus) makes the table equal to a sequential load even
 * though unchanged rows are skipped. Any failure rolls back everything. */
#include "worker.h"
#include "batch.h"
#include "db.h"
#include "loader.h"
#include "log.h"
#include "planner.h"
#include "registry.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Rows are applied in batches of about this much COPY text (~22k rows): the
 * worker holds one batch, its index and the probe's answer at a time. */
#define BATCH_BYTES (4u << 20)
#define COPY_FLUSH (256u << 10)     /* the sorted path sends COPY data in pieces of this size */

static volatile sig_atomic_t stop_requested;
static void on_term(int sig) { (void)sig; stop_requested = 1; }

typedef struct Job {
        const Config *cfg;
        PGconn *conn;
        int64_t file_id;
        int chunk_no;
        const char *path;
        char ids[2][32];           /* file_id, chunk_no as text parameters */
        FileKind kind;
        int lane, lanes;
        Header header;
        PlanChunk range;
        LoadCounts counts;
        BatchRules rules;
        Batch batch;
        Buf scratch;               /* probe keys, then the rows to COPY */
        Buf *rejects;
        char *update_sql;          /* set once the staging table for updates exists */
        bool sorted;               /* applied by the sorted path (see choose_path) */
        bool waited;               /* the lane's previous chunk has committed */
        bool agg_recount, agg_marked;
        double agg_limit;          /* more delta rows than this: ask for a recount */
        uint64_t agg_changes;
        uint64_t rows, distinct, outranked, superseding, unknown;   /* summed over batches */
        uint64_t loaded, superseded, rejected;
        double t_stage, t_wait, t_apply, t_commit;   /* seconds per phase, for the log */
        char *error;
} Job;

static LogCtx job_ctx(const Job *j)
{
        return (LogCtx){ registry_dropped_name(j->path), j->file_id, j->chunk_no, -1, NULL };
}

/* Locks our chunk row. Returns 1 when there is work, 0 when already done. A
 * successor's probe holds the row for an instant, hence a short lock timeout
 * rather than NOWAIT; a second live worker on the chunk holds it far longer. */
static int lock_chunk(Job *j)
{
        const char *p[2] = { j->ids[0], j->ids[1] };
        PGresult *res = db_query(j->conn, &j->error,
                "SELECT c.state, c.start_offset, c.end_offset, c.first_line, f.kind, c.lane, f.lanes "
                "FROM ingest.chunks c JOIN ingest.files f ON f.id = c.file_id "
                "WHERE c.file_id = $1 AND c.no = $2 FOR UPDATE OF c", 2, p);
        int r;

        if (!res)
                return -EIO;
        if (PQntuples(res) != 1) {
                j->error = xstrdup("chunk not found in ingest.chunks");
                PQclear(res);
                return -ENOENT;
        }
        r = strcmp(PQgetvalue(res, 0, 0), "done") != 0;
        j->range.start = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        j->range.end = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
        j->range.first_line = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
        j->kind = strcmp(PQgetvalue(res, 0, 4), "update") == 0 ? KIND_UPDATE : KIND_INGEST;
        j->lane = atoi(PQgetvalue(res, 0, 5));
        j->lanes = atoi(PQgetvalue(res, 0, 6));
        PQclear(res);
        return r;
}

static int copy_flush(Buf *rows, void *ud)
{
        Job *j = ud;

        if (PQputCopyData(j->conn, rows->data, (int)rows->len) != 1) {
                j->error = db_error(j->conn, NULL);
                return -EIO;
        }
        rows->len = 0;
        return 0;
}

static int copy_end(Job *j)
{
        if (PQputCopyEnd(j->conn, NULL) != 1) {
                j->error = db_error(j->conn, NULL);
                return -EIO;
        }
        PGresult *res = PQgetResult(j->conn);
        int r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -EIO;
        if (r < 0)
                j->error = db_error(j->conn, res);
        PQclear(res);
        while ((res = PQgetResult(j->conn)))
                PQclear(res);
        return r;
}

static int copy_begin(Job *j, const char *sql)
{
        PGresult *res = PQexec(j->conn, sql);
        int r = PQresultStatus(res) == PGRES_COPY_IN ? 0 : -EIO;

        if (r < 0)
                j->error = db_error(j->conn, res);
        PQclear(res);
        return r;
}

/* Maps the file and checks it is still the one that was planned. */
static int map_file(Job *j, const char **ret_map, size_t *ret_size)
{
        struct stat st;
        int fd = open(j->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

        if (fd < 0 || fstat(fd, &st) < 0) {
                j->error = xasprintf("%s: %s", j->path, strerror(errno));
                if (fd >= 0)
                        close(fd);
                return -ENOENT;
        }
        if ((uint64_t)st.st_size < j->range.end) {
                j->error = xasprintf("%s: file is shorter than when it was planned", j->path);
                close(fd);
                return -ENOENT;
        }
        const char *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (map == MAP_FAILED) {
                j->error = xasprintf("%s: mmap: %s", j->path, strerror(errno));
                return -ENOENT;
        }
        *ret_map = map;
        *ret_size = (size_t)st.st_size;
        return 0;
}

/* Blocks until chunk no-lanes (the previous range of our lane) has committed. 1 = go on, 0 = give up (stop or the
 * file failed), <0 = database error. FOR SHARE waits while the predecessor's
 * worker holds its row; the savepoint is rolled back at once so that our share
 * lock never blocks a predecessor that has not started yet. */
static int wait_predecessor(Job *j)
{
        char prev[32];
        const char *p[2] = { j->ids[0], prev };

        if (j->chunk_no <= j->lanes)
                return 1;
        snprintf(prev, sizeof prev, "%d", j->chunk_no - j->lanes);
        for (;;) {
                if (db_exec(j->conn, &j->error, "SAVEPOINT predecessor", 0, NULL) < 0)
                        return -EIO;
                PGresult *res = db_query(j->conn, &j->error,
                        "SELECT c.state, f.state FROM ingest.chunks c JOIN ingest.files f ON f.id = c.file_id "
                        "WHERE c.file_id = $1 AND c.no = $2 FOR SHARE OF c", 2, p);
                if (!res || db_exec(j->conn, &j->error, "ROLLBACK TO SAVEPOINT predecessor", 0, NULL) < 0) {
                        PQclear(res);
                        return -EIO;
                }
                bool done = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "done") == 0;
                bool failed = PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 1), "failed") == 0;
                PQclear(res);
                if (done)
                        return 1;
                if (failed || stop_requested)
                        return 0;
                nanosleep(&(struct timespec){ 0, 10L * 1000 * 1000 }, NULL);
        }
}

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

/* For ingest files name and description; for update files the header's
 * columns. The key's name is never set. */
static char *update_sql(const Job *j)
{
        bool sku_name = j->cfg->key == KEY_SKU_NAME;
        bool set_name = !sku_name && (j->kind == KIND_INGEST || j->header.index[COL_NAME] >= 0);
        bool set_desc = j->kind == KIND_INGEST || j->header.index[COL_DESCRIPTION] >= 0;

        return xasprintf("UPDATE public.products p SET %s%sfile_seq = $1::bigint, line = s.line "
                         "FROM pg_temp.upd s WHERE p.sku = s.sku%s AND (p.file_seq, p.line) < ($1::bigint, s.line)",
                         set_name ? "name = s.name, " : "", set_desc ? "description = s.description, " : "",
                         sku_name ? " AND p.name = s.name" : "");
}

static int copy_rows(Job *j, const char *sql, Buf *rows)
{
        int r = copy_begin(j, sql);

        if (r == 0)
                r = copy_flush(rows, j);
        return r == 0 ? copy_end(j) : r;
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
                r = copy_rows(j, "COPY pg_temp.upd FROM STDIN", out);
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
 * NULL-name row that asks for a recount. The table's size is reltuples, or,
 * before the first ANALYZE (-1, as right after a bulk load), its bytes over
 * 256 (rows are ~200 bytes in the file). Once a recount is pending, later
 * chunks leave only their own request (not none: the pending one may belong
 * to a refresh that will not see this chunk). */
static int agg_state(Job *j)
{
        PGresult *res = db_query(j->conn, &j->error,
                "SELECT EXISTS (SELECT 1 FROM ingest.agg_delta WHERE name IS NULL), "
                "       greatest(reltuples, pg_relation_size(oid) / 256) "
                "FROM pg_class WHERE oid = 'public.products'::regclass", 0, NULL);

        if (!res)
                return -EIO;
        j->agg_recount = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        j->agg_limit = 0.1 * strtod(PQgetvalue(res, 0, 1), NULL);
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
        return copy_rows(j, "COPY ingest.agg_delta (name, delta) FROM STDIN", out);
}

static void reject_unknown(Job *j, Buf *rejects)
{
        const char *why = j->cfg->key == KEY_SKU_NAME ? "unknown sku,name: update files do not insert"
                                                      : "unknown sku: update files do not insert";

        for (size_t i = 0; i < j->batch.n; i++) {
                const BatchRow *r = &j->batch.rows[i];
                if (r->fate == FATE_UNKNOWN)
                        loader_add_reject(rejects, j->file_id, j->chunk_no, r->line, r->offset, why, NULL, 0);
        }
}

/* The rows products has for the batch's keys; ex points into *ret_res. */
static int probe(Job *j, Existing **ret_ex, size_t *ret_n, PGresult **ret_res)
{
        batch_probe_keys(&j->batch, &j->scratch);
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

static int apply_batch(Job *j, Buf *rows)
{
        Existing *ex = NULL;
        PGresult *res = NULL;
        BatchCounts n;
        size_t n_ex = 0;
        Buf *out = &j->scratch;

        batch_clear(&j->batch);
        if (batch_index(&j->batch, rows->data, rows->len) < 0) {
                j->error = xstrdup("internal error: a staged row does not parse");
                return -EIO;
        }
        batch_dedup(&j->batch, j->cfg->key);
        int r = probe(j, &ex, &n_ex, &res);
        if (r == 0) {
                batch_classify(&j->batch, ex, n_ex, &j->rules, &n);
                j->rows += n.rows;
                j->distinct += n.distinct;
                j->outranked += n.outranked;
                j->superseding += n.superseding;
                j->unknown += n.unknown;
                reject_unknown(j, j->rejects);
                out->len = 0;
                batch_put_inserts(&j->batch, j->file_id, out);
        }
        if (r == 0 && n.inserts)
                r = copy_rows(j, "COPY public.products (sku, name, description, file_seq, line) FROM STDIN", out);
        if (r == 0 && n.updates)
                r = run_update(j, out);
        if (r == 0)
                r = record_deltas(j, ex, out);
        free(ex);
        PQclear(res);
        rows->len = 0;
        return r;
}

/* The loader's flush: the first batch waits for the lane's previous chunk
 * (parsing it overlapped that chunk's apply) and reads the table's size. */
static int batch_ready(Buf *rows, void *ud)
{
        Job *j = ud;
        int r;

        if (!j->waited) {
                double t = now_monotonic();
                r = wait_predecessor(j);
                j->t_wait = now_monotonic() - t;
                if (r <= 0)
                        return r == 0 ? -ECANCELED : r;
                j->waited = true;
                if ((r = agg_state(j)) < 0)
                        return r;
        }
        double t = now_monotonic();
        r = apply_batch(j, rows);
        j->t_apply += now_monotonic() - t;
        return r;
}

/* Parses the chunk's byte range and applies its lane's rows batch by batch. */
static int load_rows(Job *j, Buf *rejects)
{
        const char *map = NULL;
        size_t size = 0;
        Buf rows = { 0 };
        int r = map_file(j, &map, &size);

        if (r < 0)
                return r;
        r = header_parse(map, size, j->kind, j->cfg->key, &j->header, &j->error);
        /* every statement of this path is a walk of products' key index: the
         * probe, and the UPDATE's nested loop over the few staged rows. Without
         * statistics (none yet right after a bulk load, none ever for the
         * staging table) the planner chose a sequential scan for the probe and
         * a merge join over all of products. The disabled plans' huge costs
         * would in turn trigger JIT compilation: 0.13 s per statement */
        if (r == 0)
                r = db_script(j->conn, &j->error, "SET LOCAL enable_seqscan = off; SET LOCAL enable_mergejoin = off; "
                                                  "SET LOCAL enable_hashjoin = off; SET LOCAL jit = off");
        if (r == 0) {
                j->rejects = rejects;
                j->rules = (BatchRules){ .file_seq = j->file_id, .kind = j->kind, .key = j->cfg->key,
                                         .set = { true, j->header.index[COL_NAME] >= 0,
                                                  j->header.index[COL_DESCRIPTION] >= 0 } };
                LoaderInput in = { map, j->range.start, j->range.end, j->range.first_line, &j->header,
                                   j->cfg->max_field, j->file_id, j->chunk_no, (unsigned)j->lane,
                                   (unsigned)j->lanes };
                r = loader_run(&in, &rows, rejects, BATCH_BYTES, batch_ready, j, &j->counts);
        }
        if (r == 0 && !j->waited)    /* no rows in our lane: still in order */
                r = batch_ready(&rows, j);
        if (r < 0 && r != -ENOENT && r != -ECANCELED && r != -EINVAL)
                r = -EIO;
        buf_free(&rows);
        munmap((void *)map, size);
        return r;
}

/* The sorted path, for a products whose key index outgrew the server's
 * cache: the whole chunk is copied into a temporary table and applied by one
 * statement in key order, so each index page is visited once per chunk. The
 * batches of the path above each touch a page per key, and at 10M rows that
 * rereads the index from the OS for every batch (chunks phase 54 s sorted,
 * 63 s in batches; at 500k rows 2.3 s in batches, 2.9 s sorted). One LEFT
 * JOIN finds each row's current version; absent keys then take a plain INSERT
 * and changed ones an UPDATE (cheaper than INSERT ... ON CONFLICT, whose
 * speculative insertion measured 1.62 s against 0.94 s for 466,761 rows). */
static int stage_chunk(Job *j, Buf *rejects)
{
        const char *map = NULL;
        size_t size = 0;
        Buf rows = { 0 };
        int r = map_file(j, &map, &size);

        if (r < 0)
                return r;
        r = header_parse(map, size, j->kind, j->cfg->key, &j->header, &j->error);
        if (r < 0)
                goto out;
        /* the staging table and the apply's sort and join stay in memory */
        r = db_exec(j->conn, &j->error, "SET LOCAL temp_buffers = '256MB'", 0, NULL);
        if (r == 0)
                r = db_exec(j->conn, &j->error, "SET LOCAL work_mem = '64MB'", 0, NULL);
        if (r < 0)
                goto out;
        /* the key columns take the collation of products' */
        r = db_exec(j->conn, &j->error,
                    "CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT sku, name, description, "
                    "0::bigint AS line, 0::bigint AS byte_offset FROM public.products WITH NO DATA", 0, NULL);
        if (r < 0 || (r = copy_begin(j, "COPY pg_temp.stage FROM STDIN")) < 0)
                goto out;
        LoaderInput in = { map, j->range.start, j->range.end, j->range.first_line, &j->header,
                           j->cfg->max_field, j->file_id, j->chunk_no, (unsigned)j->lane,
                           (unsigned)j->lanes };
        r = loader_run(&in, &rows, rejects, COPY_FLUSH, copy_flush, j, &j->counts);
        if (r == 0)
                r = copy_end(j);
        if (r < 0 && r != -ENOENT)
                r = -EIO;
out:
        buf_free(&rows);
        munmap((void *)map, size);
        return r;
}

/* products_agg changes of this chunk, by name, into ingest.agg_delta in the
 * same transaction: inserted rows count +1 for their name, an update that
 * renames a product -1 for the old name and +1 for the new one. The refresh
 * after the load folds these in instead of recounting products. When a chunk
 * changes more than a tenth of the table's estimated rows (always on the
 * first load into an empty table), recording the deltas costs more than
 * recounting, and the chunk leaves a NULL-name row that asks for a recount.
 * The table's size is reltuples, or, before the first ANALYZE (-1, as right
 * after a bulk load), its bytes over 256 (rows are ~200 bytes in the file).
 * Once a recount is pending, later chunks leave only their own request (not
 * none: the pending one may belong to a refresh that will not see this chunk). */
#define AGG_DELTA \
        " x AS (SELECT name, 1 AS delta FROM i " \
        "       UNION ALL SELECT v.name, v.delta FROM u, " \
        "         LATERAL (VALUES (u.new_name, 1), (u.old_name, -1)) v(name, delta) " \
        "       WHERE u.new_name <> u.old_name), " \
        " big AS (SELECT EXISTS (SELECT 1 FROM ingest.agg_delta WHERE name IS NULL) " \
        "                OR (SELECT count(*) FROM x) > 0.1 * greatest(reltuples, " \
        "                   pg_relation_size(oid) / 256) AS recount " \
        "         FROM pg_class WHERE oid = 'public.products'::regclass), " \
        " d AS (INSERT INTO ingest.agg_delta (name, delta) " \
        "       SELECT name, sum(delta) FROM x WHERE NOT (SELECT recount FROM big) " \
        "       GROUP BY name HAVING sum(delta) <> 0 " \
        "       UNION ALL SELECT NULL, 0 FROM big WHERE recount AND EXISTS (SELECT 1 FROM x)) "

#define APPLY_INGEST(KEY, JOIN, SET, CHANGED) \
        "WITH s AS (SELECT DISTINCT ON (" KEY ") sku, name, description, line FROM pg_temp.stage " \
        "           ORDER BY " KEY ", line DESC), " \
        " k AS (SELECT s.*, p.sku IS NOT NULL AS present, p.name AS old_name, " \
        "              (p.file_seq, p.line) >= ($1::bigint, s.line) AS outranked, " \
        "              p.file_seq = $1::bigint AND p.line < s.line AS superseding, " \
        "              " CHANGED " AS changed " \
        "       FROM s LEFT JOIN public.products p ON " JOIN "), " \
        " u AS (UPDATE public.products p SET " SET "file_seq = $1::bigint, line = s.line " \
        "       FROM k s WHERE " JOIN " AND s.present AND NOT s.outranked AND s.changed " \
        "       RETURNING s.old_name, p.name AS new_name), " \
        " i AS (INSERT INTO public.products (sku, name, description, file_seq, line) " \
        "       SELECT sku, name, description, $1::bigint, line FROM k WHERE NOT present RETURNING name), " \
        AGG_DELTA \
        "SELECT count(*), count(*) FILTER (WHERE outranked), count(*) FILTER (WHERE superseding) FROM k"

static const char *const apply_ingest_sku =
        APPLY_INGEST("sku", "p.sku = s.sku", "name = s.name, description = s.description, ",
                     "(p.name, p.description) IS DISTINCT FROM (s.name, s.description)");

static const char *const apply_ingest_sku_name =
        APPLY_INGEST("sku, name", "p.sku = s.sku AND p.name = s.name", "description = s.description, ",
                     "p.description IS DISTINCT FROM s.description");

/* For update files: the SET list and the change test follow the header. */
static char *apply_update_sql(const Job *j, const Header *h)
{
        bool sku_name = j->cfg->key == KEY_SKU_NAME;
        bool set_name = !sku_name && h->index[COL_NAME] >= 0;
        bool set_desc = h->index[COL_DESCRIPTION] >= 0;
        const char *key = sku_name ? "sku, name" : "sku";
        const char *match = sku_name ? "p.sku = s.sku AND p.name = s.name" : "p.sku = s.sku";
        char set[96], old[64], new[64];

        snprintf(set, sizeof set, "%s%s", set_name ? "name = s.name, " : "",
                 set_desc ? "description = s.description, " : "");
        snprintf(old, sizeof old, "%s%s", set_name ? "p.name, " : "", set_desc ? "p.description, " : "");
        snprintf(new, sizeof new, "%s%s", set_name ? "s.name, " : "", set_desc ? "s.description, " : "");
        return xasprintf(
                "WITH s AS (SELECT DISTINCT ON (%s) sku, name, description, line FROM pg_temp.stage "
                "           ORDER BY %s, line DESC), "
                " k AS (SELECT s.*, p.name AS old_name, (p.file_seq, p.line) >= ($1::bigint, s.line) AS outranked, "
                "       p.file_seq = $1::bigint AND p.line < s.line AS superseding "
                "       FROM s JOIN public.products p ON %s), "
                " u AS (UPDATE public.products p SET %sfile_seq = $1::bigint, line = s.line "
                "       FROM k s WHERE %s AND NOT s.outranked "
                "         AND (%sNULL::text) IS DISTINCT FROM (%sNULL::text) "
                "       RETURNING s.old_name, p.name AS new_name), "
                " i AS (SELECT NULL::text AS name WHERE false), "
                AGG_DELTA
                "SELECT (SELECT count(*) FROM k), (SELECT count(*) FROM k WHERE outranked), "
                "       (SELECT count(*) FROM k WHERE superseding)",
                key, key, match, set, match, old, new);
}

static void apply_result(Job *j, PGresult *res, uint64_t rows)
{
        j->rows = rows;
        j->distinct = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        j->outranked = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        j->superseding = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
}

static int reject_unknown_staged(Job *j, uint64_t *ret_unknown)
{
        const char *p[2] = { j->ids[0], j->ids[1] };
        const char *sql = j->cfg->key == KEY_SKU_NAME
                ? "INSERT INTO ingest.rejects (file_id, chunk_no, line, byte_offset, reason) "
                  "SELECT $1, $2, line, byte_offset, 'unknown sku,name: update files do not insert' "
                  "FROM pg_temp.stage s WHERE NOT EXISTS "
                  "(SELECT 1 FROM public.products p WHERE p.sku = s.sku AND p.name = s.name)"
                : "INSERT INTO ingest.rejects (file_id, chunk_no, line, byte_offset, reason) "
                  "SELECT $1, $2, line, byte_offset, 'unknown sku: update files do not insert' "
                  "FROM pg_temp.stage s WHERE NOT EXISTS "
                  "(SELECT 1 FROM public.products p WHERE p.sku = s.sku)";
        PGresult *res = db_query(j->conn, &j->error, sql, 2, p);

        if (!res)
                return -EIO;
        *ret_unknown = strtoull(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        return 0;
}

static int apply_staged(Job *j)
{
        const char *p[1] = { j->ids[0] };
        uint64_t rows = j->counts.rows, unknown = 0;
        char *sql = NULL;
        int r;

        if (j->kind == KIND_UPDATE) {
                if ((r = reject_unknown_staged(j, &unknown)) < 0)
                        return r;
                rows -= unknown;
                sql = apply_update_sql(j, &j->header);
        }
        const char *text = sql ? sql : j->cfg->key == KEY_SKU_NAME ? apply_ingest_sku_name : apply_ingest_sku;
        PGresult *res = db_query(j->conn, &j->error, text, 1, p);
        free(sql);
        if (!res)
                return -EIO;
        apply_result(j, res, rows);
        j->unknown = unknown;
        PQclear(res);
        return 0;
}

/* Stages the chunk, waits for the lane's previous chunk (staging overlapped
 * its apply), applies. */
static int load_sorted(Job *j, Buf *rejects)
{
        int r = stage_chunk(j, rejects);
        double t = now_monotonic();

        if (r == 0)
                r = wait_predecessor(j);
        j->t_wait = now_monotonic() - t;
        if (r == 0)
                return -ECANCELED;
        t = now_monotonic();
        if (r > 0)
                r = apply_staged(j);
        j->t_apply = now_monotonic() - t;
        return r;
}

/* Which path: the sorted one once products' key index is larger than
 * sorted_apply_above (0: a quarter of shared_buffers). */
static int choose_path(Job *j)
{
        char limit[32];
        const char *p[1] = { limit };

        snprintf(limit, sizeof limit, "%" PRIu64, j->cfg->sorted_apply_above);
        PGresult *res = db_query(j->conn, &j->error,
                "SELECT pg_relation_size(indexrelid) > CASE WHEN $1::bigint > 0 THEN $1::bigint "
                "  ELSE pg_size_bytes(current_setting('shared_buffers')) / 4 END "
                "FROM pg_index WHERE indrelid = 'public.products'::regclass AND indisprimary", 1, p);

        if (!res)
                return -EIO;
        j->sorted = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
        return 0;
}

static int store_rejects(Job *j, Buf *rejects)
{
        int r;

        if (rejects->len == 0)
                return 0;
        r = copy_begin(j, "COPY ingest.rejects (file_id, chunk_no, line, byte_offset, reason, raw) FROM STDIN");
        if (r == 0)
                r = copy_flush(rejects, j);
        return r == 0 ? copy_end(j) : r;
}

static int mark_done(Job *j)
{
        char l[32], s[32], rj[32];
        const char *p[5] = { j->ids[0], j->ids[1], l, rj, s };

        snprintf(l, sizeof l, "%" PRIu64, j->loaded);
        snprintf(rj, sizeof rj, "%" PRIu64, j->rejected);
        snprintf(s, sizeof s, "%" PRIu64, j->superseded);
        return db_exec(j->conn, &j->error,
                "UPDATE ingest.chunks SET state = 'done', rows_loaded = $3, rows_rejected = $4, "
                "rows_superseded = $5, finished_at = now(), error = NULL "
                "WHERE file_id = $1 AND no = $2", 5, p);
}

/* The whole transaction. Returns a worker exit status. */
static int load_chunk(Job *j)
{
        Buf rejects = { 0 };
        int r;

        if (db_exec(j->conn, &j->error, "BEGIN", 0, NULL) < 0 ||
            db_exec(j->conn, &j->error, "SET LOCAL lock_timeout = '5s'", 0, NULL) < 0)
                return WORKER_RETRY;
        r = lock_chunk(j);
        if (r > 0 && db_exec(j->conn, &j->error, "SET LOCAL lock_timeout = 0", 0, NULL) < 0)
                r = -EIO;
        if (r <= 0) {
                PQclear(PQexec(j->conn, r == 0 ? "COMMIT" : "ROLLBACK"));
                return r == 0 ? WORKER_DONE : r == -ENOENT ? WORKER_BAD_FILE : WORKER_RETRY;
        }
        double t0 = now_monotonic();
        r = choose_path(j);
        if (r == 0)
                r = j->sorted ? load_sorted(j, &rejects) : load_rows(j, &rejects);
        if (r == -ECANCELED) {
                buf_free(&rejects);
                PQclear(PQexec(j->conn, "ROLLBACK"));
                return WORKER_NOT_RUN;
        }
        j->loaded = j->distinct - j->outranked - j->superseding;
        j->superseded = j->rows - j->distinct + j->outranked + j->superseding;
        j->rejected = j->counts.rejected + j->unknown;
        if (r == 0)
                r = store_rejects(j, &rejects);
        if (r == 0)
                r = mark_done(j);
        double t1 = now_monotonic();
        if (r == 0)
                r = db_exec(j->conn, &j->error, "COMMIT", 0, NULL);
        j->t_stage = t1 - t0 - j->t_wait - j->t_apply;
        j->t_commit = now_monotonic() - t1;
        buf_free(&rejects);
        if (r == 0)
                return WORKER_DONE;
        PQclear(PQexec(j->conn, "ROLLBACK"));
        return r == -ENOENT || r == -EINVAL ? WORKER_BAD_FILE : WORKER_RETRY;
}

static void record_error(Job *j)
{
        const char *p[3] = { j->ids[0], j->ids[1], j->error };

        if (!j->error || db_connection_lost(j->conn))
                return;
        PQclear(PQexecParams(j->conn, "UPDATE ingest.chunks SET error = $3 WHERE file_id = $1 AND no = $2",
                             3, NULL, p, NULL, NULL, 0));
}

int worker_run(const Config *cfg, int64_t file_id, int chunk_no, const char *path)
{
        Job j = { .cfg = cfg, .file_id = file_id, .chunk_no = chunk_no, .path = path };
        struct sigaction sa = { .sa_handler = on_term };
        int status;

        sigaction(SIGTERM, &sa, NULL);
        snprintf(j.ids[0], sizeof j.ids[0], "%" PRId64, file_id);
        snprintf(j.ids[1], sizeof j.ids[1], "%d", chunk_no);
        j.conn = db_connect(cfg->conninfo, &j.error);
        if (!j.conn) {
                log_ctx(LOG_WARNING, job_ctx(&j), "chunk %d: cannot connect: %s", chunk_no, j.error);
                free(j.error);
                return WORKER_RETRY;
        }
        status = load_chunk(&j);
        batch_free(&j.batch);
        buf_free(&j.scratch);
        free(j.update_sql);
        if (status == WORKER_DONE) {
                struct rusage ru;
                getrusage(RUSAGE_SELF, &ru);
                /* the supervisor logs the outcome: journald cannot always tell the
                 * unit of a process that exits right after logging */
                log_ctx(LOG_DEBUG, (LogCtx){ registry_dropped_name(path), file_id, chunk_no, (long long)j.loaded, "done" },
                        "chunk %d: %" PRIu64 " loaded, %" PRIu64 " rejected, %" PRIu64 " superseded; %s; "
                        "stage %.3f s, wait %.3f s, apply %.3f s, commit %.3f s; peak RSS %ld kB",
                        chunk_no, j.loaded, j.rejected, j.superseded, j.sorted ? "sorted" : "in batches", j.t_stage, j.t_wait, j.t_apply,
                        j.t_commit, ru.ru_maxrss);
        }
        else if (j.error) {
                log_ctx(LOG_WARNING, job_ctx(&j), "chunk %d: %s", chunk_no, j.error);
                record_error(&j);
        }
        free(j.error);
        PQfinish(j.conn);
        return status;
}
