/* apply_sorted.c - the sorted path of a chunk (see job.h), for a products
 * whose key index outgrew the server's cache. */
#include "job.h"
#include "db.h"
#include "rules.h"
#include "schema.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define COPY_FLUSH (256u << 10)     /* COPY data goes out in pieces of this size */

/* The whole chunk is copied into a temporary table and applied by one
 * statement in key order, so each index page is visited once per chunk.
 * Batches (apply_batches.c) visit a page per key, and once the index is larger
 * than the cache each batch rereads it from the OS (10M-row re-load: chunks
 * 41 s sorted, 53 s in batches; at 500k rows this path is 0.2-0.3 s slower).
 * One LEFT JOIN finds each row's current version; absent keys then take a
 * plain INSERT and changed ones an UPDATE (cheaper than INSERT ... ON
 * CONFLICT, whose speculative insertion measured 1.62 s against 0.94 s for
 * 466,761 rows). */
static int stage_chunk(Job *j, Buf *rejects)
{
        Buf rows = { 0 };
        /* the staging table and the apply's sort and join stay in memory */
        int r = db_exec(j->conn, &j->error, "SET LOCAL temp_buffers = '256MB'", 0, NULL);

        if (r == 0)
                r = db_exec(j->conn, &j->error, "SET LOCAL work_mem = '64MB'", 0, NULL);
        /* the key columns take the collation of products' */
        if (r == 0)
                r = db_exec(j->conn, &j->error,
                            "CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT sku, name, description, "
                            "0::bigint AS line, 0::bigint AS byte_offset FROM public.products WITH NO DATA", 0, NULL);
        if (r == 0)
                r = job_copy_begin(j, "COPY pg_temp.stage FROM STDIN");
        if (r == 0)
                r = job_load_rows(j, &rows, rejects, COPY_FLUSH, job_copy_flush);
        if (r == 0)
                r = job_copy_end(j);
        buf_free(&rows);
        return r;
}

/* products_agg changes of this chunk, by name, into ingest.agg_delta in the
 * same transaction: inserted rows count +1 for their name, an update that
 * renames a product -1 for the old name and +1 for the new one. The refresh
 * after the load folds these in instead of recounting products. When a chunk
 * changes more than a tenth of the table's estimated rows (always on the
 * first load into an empty table), recording the deltas costs more than
 * recounting, and the chunk leaves a NULL-name row that asks for a recount.
 * The table's size is PRODUCTS_ROWS (schema.h). Once a recount is pending,
 * later chunks leave only their own request (not none: the pending one may
 * belong to a refresh that will not see this chunk). */
#define AGG_DELTA \
        " x AS (SELECT name, 1 AS delta FROM i " \
        "       UNION ALL SELECT v.name, v.delta FROM u, " \
        "         LATERAL (VALUES (u.new_name, 1), (u.old_name, -1)) v(name, delta) " \
        "       WHERE u.new_name <> u.old_name), " \
        " big AS (SELECT EXISTS (SELECT 1 FROM ingest.agg_delta WHERE name IS NULL) " \
        "                OR (SELECT count(*) FROM x) > " AGG_RECOUNT_SHARE_SQL " * " PRODUCTS_ROWS " AS recount " \
        "         FROM pg_class WHERE oid = 'public.products'::regclass), " \
        " d AS (INSERT INTO ingest.agg_delta (name, delta) " \
        "       SELECT name, sum(delta) FROM x WHERE NOT (SELECT recount FROM big) " \
        "       GROUP BY name HAVING sum(delta) <> 0 " \
        "       UNION ALL SELECT NULL, 0 FROM big WHERE recount AND EXISTS (SELECT 1 FROM x)) "

#define APPLY_INGEST(KEY, JOIN, SET, CHANGED) \
        "WITH s AS (SELECT DISTINCT ON (" KEY ") sku, name, description, line FROM pg_temp.stage " \
        "           ORDER BY " KEY ", line DESC), " \
        " k AS (SELECT s.*, p.sku IS NOT NULL AS present, p.name AS old_name, " \
        "              NOT " SQL_OLDER("p", "$1::bigint", "s.line") " AS outranked, " \
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

static void apply_result(Job *j, PGresult *res, uint64_t rows)
{
        j->rows = rows;
        j->distinct = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        j->outranked = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        j->superseding = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
}

/* A first load (see job_may_copy_new_rows): when none of the first staged
 * keys is in products, the chunk is inserted in key order without the LEFT
 * JOIN that looks up each key (a quarter of the statement's time at 10M rows),
 * under a savepoint; a key there after all rolls it back to the statement
 * above. */
#define INSERT_NEW(KEY) \
        "WITH i AS (INSERT INTO public.products (sku, name, description, file_seq, line) " \
        "           SELECT DISTINCT ON (" KEY ") sku, name, description, $1::bigint, line FROM pg_temp.stage " \
        "           ORDER BY " KEY ", line DESC RETURNING name), " \
        " u AS (SELECT NULL::text AS old_name, NULL::text AS new_name WHERE false), " \
        AGG_DELTA \
        "SELECT count(*), 0, 0 FROM i"

static const char *const insert_new_sku = INSERT_NEW("sku");
static const char *const insert_new_sku_name = INSERT_NEW("sku, name");

/* -EEXIST when products has some of the keys or the insert met one. */
static int insert_new_rows(Job *j)
{
        const char *p[1] = { j->ids[0] };
        int r = db_query_bool(j->conn, &j->error,
                              "SELECT EXISTS (SELECT 1 FROM public.products WHERE sku IN "
                              "(SELECT sku FROM pg_temp.stage LIMIT " SAMPLE_KEYS_SQL "))", 0, NULL);

        if (r != 0)
                return r < 0 ? r : -EEXIST;
        if ((r = job_new_rows_begin(j)) < 0)
                return r;
        PGresult *res = db_query(j->conn, &j->error,
                                 j->cfg->key == KEY_SKU_NAME ? insert_new_sku_name : insert_new_sku, 1, p);
        r = job_new_rows_end(j, res ? 0 : -EIO);
        if (r == 0)
                apply_result(j, res, j->counts.rows);
        PQclear(res);
        return r;
}

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
                " k AS (SELECT s.*, p.name AS old_name, NOT " SQL_OLDER("p", "$1::bigint", "s.line") " AS outranked, "
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

static int reject_unknown_staged(Job *j, uint64_t *ret_unknown)
{
        const char *p[3] = { j->ids[0], j->ids[1], job_unknown_reason(j) };
        const char *sql = j->cfg->key == KEY_SKU_NAME
                ? "INSERT INTO ingest.rejects (file_id, chunk_no, line, byte_offset, reason) "
                  "SELECT $1, $2, line, byte_offset, $3 FROM pg_temp.stage s WHERE NOT EXISTS "
                  "(SELECT 1 FROM public.products p WHERE p.sku = s.sku AND p.name = s.name)"
                : "INSERT INTO ingest.rejects (file_id, chunk_no, line, byte_offset, reason) "
                  "SELECT $1, $2, line, byte_offset, $3 FROM pg_temp.stage s WHERE NOT EXISTS "
                  "(SELECT 1 FROM public.products p WHERE p.sku = s.sku)";
        PGresult *res = db_query(j->conn, &j->error, sql, 3, p);

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

        if (job_may_copy_new_rows(j) && (r = insert_new_rows(j)) != -EEXIST) {
                j->new_rows = r == 0;
                return r;
        }
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
int apply_sorted(Job *j, Buf *rejects)
{
        int r = stage_chunk(j, rejects);
        double t = now_monotonic();

        if (r == 0)
                r = job_wait_predecessor(j);
        j->t_wait = now_monotonic() - t;
        if (r == 0)
                return -ECANCELED;
        t = now_monotonic();
        if (r > 0)
                r = apply_staged(j);
        j->t_apply = now_monotonic() - t;
        return r;
}
