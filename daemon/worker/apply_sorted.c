/* apply_sorted.c - the sorted path (apply.h), for a products whose key index
 * outgrew the server's cache. */
#include "apply.h"
#include "db.h"
#include "rules.h"
#include "schema.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define COPY_FLUSH (256u << 10) /* COPY data goes out in pieces of this size */

typedef struct SortedPath {
        const ApplyChunk *c;
        ApplyResult res;
} SortedPath;

/* The whole chunk is copied into a temporary table and applied by one
 * statement in key order, so each index page is visited once per chunk.
 * Batches (apply_batches.c) visit a page per key, and once the index is larger
 * than the cache each batch rereads it from the OS (10M-row re-load: chunks
 * 41 s sorted, 53 s in batches; at 500k rows this path is 0.2-0.3 s slower).
 * One LEFT JOIN finds each row's current version; absent keys then take a
 * plain INSERT and changed ones an UPDATE (cheaper than INSERT ... ON
 * CONFLICT, whose speculative insertion measured 1.62 s against 0.94 s for
 * 466,761 rows). */
static int begin(const ApplyChunk *c, void **ret_state, char **ret_error)
{
        SortedPath *sp = xcalloc(1, sizeof *sp);
        /* the staging table and the apply's sort and join stay in memory */
        int r = db_exec(c->conn, ret_error, "SET LOCAL temp_buffers = '256MB'", 0, NULL);

        sp->c = c;
        *ret_state = sp;
        if (r == 0)
                r = db_exec(c->conn, ret_error, "SET LOCAL work_mem = '64MB'", 0, NULL);
        /* the key columns take the collation of products' */
        if (r == 0)
                r = db_exec(c->conn, ret_error,
                        "CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT sku, name, description, "
                        "0::bigint AS line, 0::bigint AS byte_offset FROM public.products WITH NO DATA",
                        0, NULL);
        if (r == 0)
                r = db_copy_begin(c->conn, ret_error, "COPY pg_temp.stage FROM STDIN");
        return r;
}

static int piece(void *state, Buf *rows, char **ret_error)
{
        SortedPath *sp = state;
        int r = db_copy_put(sp->c->conn, ret_error, rows->data, rows->len);

        rows->len = 0;
        return r;
}

static int rows_done(void *state, char **ret_error)
{
        SortedPath *sp = state;

        return db_copy_end(sp->c->conn, ret_error);
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
        "              NOT " SQL_OLDER("p", "$1::bigint", \
                "s.line") " AS outranked, " \
                          "              p.file_seq = $1::bigint AND p.line < s.line AS superseding, " \
                          "              " CHANGED " AS changed " \
                          "       FROM s LEFT JOIN public.products p ON " JOIN "), " \
                          " u AS (UPDATE public.products p SET " SET "file_seq = $1::bigint, line = s.line " \
                          "       FROM k s WHERE " JOIN " AND s.present AND NOT s.outranked AND s.changed " \
                          "       RETURNING s.old_name, p.name AS new_name), " \
                          " i AS (INSERT INTO public.products (sku, name, description, file_seq, line) " \
                          "       SELECT sku, name, description, $1::bigint, line FROM k WHERE NOT present RETURNING name), " AGG_DELTA \
                          "SELECT count(*), count(*) FILTER (WHERE outranked), count(*) FILTER (WHERE superseding) FROM k"

static const char *const apply_ingest_sku = APPLY_INGEST("sku", "p.sku = s.sku",
        "name = s.name, description = s.description, ",
        "(p.name, p.description) IS DISTINCT FROM (s.name, s.description)");

static const char *const apply_ingest_sku_name = APPLY_INGEST("sku, name", "p.sku = s.sku AND p.name = s.name",
        "description = s.description, ", "p.description IS DISTINCT FROM s.description");

static void apply_result(SortedPath *sp, PGresult *res, uint64_t rows)
{
        sp->res.rows = rows;
        sp->res.distinct = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        sp->res.outranked = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        sp->res.superseding = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
}

/* For update files: the SET list and the change test follow the header. */
static char *apply_update_sql(const ApplyChunk *c, const Header *h)
{
        bool sku_name = c->key == KEY_SKU_NAME;
        bool set_name = !sku_name && h->index[COL_NAME] >= 0;
        bool set_desc = h->index[COL_DESCRIPTION] >= 0;
        const char *key = sku_name ? "sku, name" : "sku";
        const char *match = sku_name ? "p.sku = s.sku AND p.name = s.name" : "p.sku = s.sku";
        char set[96], old[64], new[64];

        snprintf(set, sizeof set, "%s%s", set_name ? "name = s.name, " : "",
                set_desc ? "description = s.description, " : "");
        snprintf(old, sizeof old, "%s%s", set_name ? "p.name, " : "", set_desc ? "p.description, " : "");
        snprintf(new, sizeof new, "%s%s", set_name ? "s.name, " : "", set_desc ? "s.description, " : "");
        return xasprintf("WITH s AS (SELECT DISTINCT ON (%s) sku, name, description, line FROM pg_temp.stage "
                         "           ORDER BY %s, line DESC), "
                         " k AS (SELECT s.*, p.name AS old_name, NOT " SQL_OLDER("p", "$1::bigint",
                                 "s.line") " AS outranked, "
                                           "       p.file_seq = $1::bigint AND p.line < s.line AS superseding "
                                           "       FROM s JOIN public.products p ON %s), "
                                           " u AS (UPDATE public.products p SET %sfile_seq = $1::bigint, line = s.line "
                                           "       FROM k s WHERE %s AND NOT s.outranked "
                                           "         AND (%sNULL::text) IS DISTINCT FROM (%sNULL::text) "
                                           "       RETURNING s.old_name, p.name AS new_name), "
                                           " i AS (SELECT NULL::text AS name WHERE false), " AGG_DELTA
                                           "SELECT (SELECT count(*) FROM k), (SELECT count(*) FROM k WHERE outranked), "
                                           "       (SELECT count(*) FROM k WHERE superseding)",
                key, key, match, set, match, old, new);
}

static int reject_unknown_staged(const ApplyChunk *c, uint64_t *ret_unknown, char **ret_error)
{
        const char *p[3] = { c->ids[0], c->ids[1], apply_unknown_reason(c->key) };
        const char *sql = c->key == KEY_SKU_NAME
                                  ? "INSERT INTO ingest.rejects (file_id, chunk_no, line, byte_offset, reason) "
                                    "SELECT $1, $2, line, byte_offset, $3 FROM pg_temp.stage s WHERE NOT EXISTS "
                                    "(SELECT 1 FROM public.products p WHERE p.sku = s.sku AND p.name = s.name)"
                                  : "INSERT INTO ingest.rejects (file_id, chunk_no, line, byte_offset, reason) "
                                    "SELECT $1, $2, line, byte_offset, $3 FROM pg_temp.stage s WHERE NOT EXISTS "
                                    "(SELECT 1 FROM public.products p WHERE p.sku = s.sku)";
        PGresult *res = db_query(c->conn, ret_error, sql, 3, p);

        if (!res)
                return -EIO;
        *ret_unknown = strtoull(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        return 0;
}

static int finish(void *state, ApplyResult *ret, char **ret_error)
{
        SortedPath *sp = state;
        const ApplyChunk *c = sp->c;
        uint64_t rows = c->counts->rows, unknown = 0;
        char *sql = NULL;
        int r;

        /* a first load's "all new" shortcut gained 1.7% here, and was
         * dropped (BENCHMARKS.md, session 7): every chunk takes the join */
        sp->res.pieces = 1;
        if (c->kind == KIND_UPDATE) {
                if ((r = reject_unknown_staged(c, &unknown, ret_error)) < 0)
                        return r;
                rows -= unknown;
                sql = apply_update_sql(c, c->header);
        }
        const char *text = sql ? sql : c->key == KEY_SKU_NAME ? apply_ingest_sku_name : apply_ingest_sku;
        PGresult *res = db_query(c->conn, ret_error, text, 1, c->ids);
        free(sql);
        if (!res)
                return -EIO;
        apply_result(sp, res, rows);
        sp->res.unknown = unknown;
        PQclear(res);
        *ret = sp->res;
        return 0;
}

static void free_state(void *state) { free(state); }

/* The chunk is staged (its parse overlaps the previous chunk's apply), then
 * the lane's previous chunk is waited for, then one statement applies it. */
const ApplyPath apply_sorted = { "sorted", COPY_FLUSH, true, true, begin, piece, rows_done, finish, free_state };
