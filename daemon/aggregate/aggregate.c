/* aggregate.c - products_agg = products counted by name. One REPEATABLE READ
 * transaction: readers see the old table until COMMIT and never an empty or
 * half-built one, and the files stamped as aggregated are exactly those whose
 * rows the snapshot saw. Only changed names are written. A session advisory
 * lock keeps refreshes from overlapping.
 *
 * Two ways, same result: a full refresh recounts products (and so also sees
 * changes made outside ingestd); a fold adds up the per-name deltas that the
 * chunks committed into ingest.agg_delta, which touches only the names a load
 * changed. Either consumes exactly the deltas its snapshot sees, since a chunk
 * commits its rows and its deltas together. */
#include "aggregate.h"
#include "db.h"
#include "log.h"
#include "namecount.h"
#include "products.h"
#include "state.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The count by name goes into a temporary table first: a CREATE TABLE AS
 * may use parallel workers, an INSERT ... SELECT may not. New names then take
 * a plain INSERT and changed counts an UPDATE: cheaper than INSERT ... ON
 * CONFLICT, and safe since refreshes never overlap. */
static const char fresh_sql[] = "CREATE TEMP TABLE fresh ON COMMIT DROP AS " PRODUCTS_COUNT_BY_NAME;
static const char refresh_sql[] =
        "WITH cur AS MATERIALIZED (SELECT f.name, f.n, a.no_of_products AS old "
        "                      FROM pg_temp.fresh f LEFT JOIN public.products_agg a ON a.name = f.name), "
        " gone AS (DELETE FROM public.products_agg a "
        "          WHERE NOT EXISTS (SELECT 1 FROM pg_temp.fresh f WHERE f.name = a.name)), "
        " changed AS (UPDATE public.products_agg a SET no_of_products = c.n FROM cur c "
        "             WHERE a.name = c.name AND c.old IS NOT NULL AND c.old <> c.n) "
        "INSERT INTO public.products_agg (name, no_of_products) SELECT name, n FROM cur WHERE old IS NULL";
/* The first build (an empty products_agg) needs no comparison, and one
 * index build over the finished table is cheaper than an index insertion per
 * name (500k rows, 210k names: 0.96 s -> 0.57 s). So the primary key is
 * dropped and added again, as it was, in the same transaction; readers wait
 * on the lock and then see the whole table, where before they saw it empty.
 * Not when another table's foreign key references products_agg: that key
 * would have to go too, so the rows then go into the index one by one. */
static const char first_build_sql[] =
        "INSERT INTO public.products_agg (name, no_of_products) SELECT name, n FROM pg_temp.fresh";
static const char primary_key_sql[] =
        "SELECT format('ALTER TABLE public.products_agg DROP CONSTRAINT %I', conname), "
        "       format('ALTER TABLE public.products_agg ADD CONSTRAINT %I %s', conname, pg_get_constraintdef(oid)) "
        "FROM pg_constraint WHERE conrelid = 'public.products_agg'::regclass AND contype = 'p' "
        "  AND NOT EXISTS (SELECT 1 FROM pg_constraint WHERE confrelid = 'public.products_agg'::regclass)";

static const char fold_sql[] =
        "WITH d AS (DELETE FROM ingest.agg_delta RETURNING name, delta), "
        " s AS MATERIALIZED (SELECT name, sum(delta) AS delta FROM d GROUP BY name HAVING sum(delta) <> 0), "
        " cur AS MATERIALIZED (SELECT s.name, a.no_of_products AS old, coalesce(a.no_of_products, 0) + s.delta AS n "
        "                      FROM s LEFT JOIN public.products_agg a ON a.name = s.name), "
        " gone AS (DELETE FROM public.products_agg a USING cur c WHERE a.name = c.name AND c.n <= 0), "
        " changed AS (UPDATE public.products_agg a SET no_of_products = c.n FROM cur c "
        "             WHERE a.name = c.name AND c.old IS NOT NULL AND c.n > 0) "
        "INSERT INTO public.products_agg (name, no_of_products) SELECT name, n FROM cur WHERE old IS NULL AND n > 0";

/* A chunk that changed a large part of the table left a NULL-name delta. */
static bool recount_requested(PGconn *c)
{
        PGresult *res = db_query(c, NULL, "SELECT 1 FROM ingest.agg_delta WHERE name IS NULL LIMIT 1", 0, NULL);
        bool yes = !res || PQntuples(res) > 0; /* on error the recount fails the same way */

        PQclear(res);
        return yes;
}

/* Drops the key, or leaves it when that cannot be done at once: waiting
 * behind a reader's open transaction would queue every other reader of
 * products_agg behind this lock request. */
static bool drop_primary_key(PGconn *c, const char *drop_sql)
{
        if (db_exec(c, NULL, "SAVEPOINT drop_key", 0, NULL) < 0)
                return false;
        if (db_exec(c, NULL, "SET LOCAL lock_timeout = '1s'", 0, NULL) == 0 && db_exec(c, NULL, drop_sql, 0, NULL) == 0)
                return db_exec(c, NULL, "RESET lock_timeout", 0, NULL) == 0;
        PQclear(PQexec(c, "ROLLBACK TO SAVEPOINT drop_key"));
        return false;
}

/* The scan of products goes to parallel workers, which the planner's default
 * costs did not choose at 500k rows: the first reader after a load also
 * checks every row's transaction and sets its hint bits, which 3 processes
 * share (the recount's query 0.29 -> 0.21 s right after a 500k load). */
static int count_in_server(PGconn *c, char **ret_error)
{
        int r = db_script(c, ret_error, "SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0");

        return r == 0 ? db_exec(c, ret_error, fresh_sql, 0, NULL) : r;
}

/* products' estimated rows (PRODUCTS_ROWS_ESTIMATE, products.h) when this process may count the
 * names, 0 when not: GROUP BY compares them as bytes (text of a
 * deterministic collation, as ingestd creates it), and the names would fit in
 * max_bytes if every second row had a new one of 16 bytes (2 slots each at
 * half fill). A big table goes to the server at once rather than being
 * streamed out only to find that its names do not fit. */
static int64_t rows_to_count_here(PGconn *c, uint64_t max_bytes, char **ret_error)
{
        uint64_t most = max_bytes / (2 * sizeof(NameSlot) + 16) * 2;
        char rows[32];
        const char *p[1] = { rows };

        if (max_bytes == 0)
                return 0;
        snprintf(rows, sizeof rows, "%" PRIu64, most);
        PGresult *res = db_query(c, ret_error,
                "SELECT CASE WHEN " PRODUCTS_NAMES_BYTEWISE " AND est <= $1::float8 THEN est::bigint + 1 ELSE 0 END "
                "FROM (SELECT " PRODUCTS_ROWS_ESTIMATE " AS est) t",
                1, p);

        if (!res)
                return -EIO;
        int64_t n = PQntuples(res) == 1 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
        PQclear(res);
        return n;
}

/* Streams the names of products into nc. 1 when they did not fit (the rest
 * of the stream is read and dropped), 0 when counted, -EIO on failure. Each
 * name's slot is prefetched while the one before it is counted. */
static int count_names(PGconn *c, NameCount *nc, char **ret_error)
{
        bool fits = true;
        char *row = NULL, *next;
        uint64_t hash = 0;

        if (db_copy_begin(c, ret_error, PRODUCTS_NAMES_COPY) < 0)
                return -EIO;
        int n = PQgetCopyData(c, &row, 0); /* a row is "name\n" */
        if (n > 0)
                hash = namecount_hash(row, (size_t)n - 1);
        while (n > 0 && fits) {
                int m = PQgetCopyData(c, &next, 0);
                uint64_t next_hash = m > 0 ? namecount_hash(next, (size_t)m - 1) : 0;
                if (m > 0)
                        namecount_prefetch(nc, next_hash);
                fits = namecount_add(nc, row, (size_t)n - 1, hash);
                PQfreemem(row);
                row = next, n = m, hash = next_hash;
        }
        for (; n > 0; n = PQgetCopyData(c, &row, 0)) /* after a name that did not fit */
                PQfreemem(row);
        int r = db_copy_result(c, ret_error);
        return r < 0 ? -EIO : !fits;
}

static int copy_counts(PGconn *c, const NameCount *nc, char **ret_error)
{
        Buf out = { 0 };
        size_t pos = 0;
        bool more = true;
        int r = db_copy_begin(c, ret_error, "COPY public.products_agg (name, no_of_products) FROM STDIN");

        while (r == 0 && more) {
                out.len = 0;
                more = namecount_put(nc, &pos, &out, 1u << 20);
                if (out.len > 0)
                        r = db_copy_put(c, ret_error, out.data, out.len);
        }
        buf_free(&out);
        return r == 0 ? db_copy_end(c, ret_error) : r;
}

/* The names counted here into the empty products_agg: 1 when that may not
 * be done or they did not fit, and nothing was written. */
static int fill_counted_here(PGconn *c, uint64_t max_bytes, char **ret_error)
{
        NameCount nc;
        int64_t rows = rows_to_count_here(c, max_bytes, ret_error);

        if (rows == 0)
                log_msg(LOG_DEBUG, "products_agg first build: names counted by the server");
        if (rows <= 0)
                return rows < 0 ? (int)rows : 1;
        namecount_init(&nc, max_bytes, (size_t)rows / 2);
        int r = count_names(c, &nc, ret_error);
        if (r == 0)
                r = copy_counts(c, &nc, ret_error);
        if (r >= 0)
                log_msg(LOG_DEBUG, "products_agg first build: %s",
                        r == 0 ? "names counted here"
                               : "names counted by the server, they did not fit in aggregate.count_memory");
        namecount_free(&nc);
        return r;
}

/* products_agg is empty: counted here when the names fit in max_bytes (500k
 * rows, 210k names: products_agg after the last chunk 0.43-0.46 -> 0.27-0.28
 * s), else by the server. No comparison is
 * needed, and one index build over the finished table is cheaper than an
 * index insertion per name, so the key is dropped first (see above). */
static int first_build(PGconn *c, uint64_t max_bytes, char **ret_error)
{
        PGresult *key = db_query(c, ret_error, primary_key_sql, 0, NULL);

        if (!key)
                return -EIO;
        bool rebuild = PQntuples(key) == 1 && drop_primary_key(c, PQgetvalue(key, 0, 0));
        int r = fill_counted_here(c, max_bytes, ret_error);
        if (r == 1) {
                r = count_in_server(c, ret_error);
                if (r == 0)
                        r = db_exec(c, ret_error, first_build_sql, 0, NULL);
        }
        if (r == 0 && rebuild)
                r = db_exec(c, ret_error, PQgetvalue(key, 0, 1), 0, NULL);
        PQclear(key);
        return r;
}

static int recount(PGconn *c, uint64_t max_bytes, char **ret_error)
{
        int r = db_query_bool(c, ret_error, "SELECT EXISTS (SELECT 1 FROM public.products_agg)", 0, NULL);

        if (r == 0)
                return first_build(c, max_bytes, ret_error);
        if (r == 1)
                r = count_in_server(c, ret_error);
        /* without statistics the planner took the comparison with products_agg
         * for a small one: minutes of nested loops at 210k names */
        if (r == 0)
                r = db_exec(c, ret_error, "ANALYZE pg_temp.fresh", 0, NULL);
        if (r == 0)
                r = db_exec(c, ret_error, refresh_sql, 0, NULL);
        return r;
}

/* The files this refresh counts are stamped, the refresh is recorded
 * (ingest.aggregate_runs: when, how long this transaction took) and
 * announced on EVENTS_CHANNEL with the first 200 file ids (NOTIFY's payload
 * is at most 8000 bytes), all in the refresh's transaction. A failed file
 * whose deferred key is being built (deferkey.h) is locked by the build,
 * which may wait for our lock on products: a later refresh stamps it. One
 * timestamp (t) stamps the files and the run, so that the metrics find a
 * run's files by equality (the order of a statement's CTEs is unspecified). */
static const char record_sql[] =
        "WITH t AS MATERIALIZED (SELECT clock_timestamp() AS at), "
        " s AS (UPDATE ingest.files SET aggregated_at = (SELECT at FROM t) WHERE id IN "
        "           (SELECT id FROM ingest.files WHERE aggregated_at IS NULL "
        "            AND state IN (" SQL_DONE ", " SQL_FAILED ") FOR NO KEY UPDATE SKIP LOCKED) RETURNING id), "
        " r AS (INSERT INTO ingest.aggregate_runs (one, refreshed_at, seconds) "
        "       SELECT true, at, extract(epoch FROM at - now()) FROM t "
        "       ON CONFLICT (one) DO UPDATE SET refreshed_at = EXCLUDED.refreshed_at, seconds = EXCLUDED.seconds "
        "       RETURNING seconds) "
        "SELECT pg_notify('" EVENTS_CHANNEL "', json_build_object('event', 'aggregate', 'mode', $1::text, "
        "       'files', (SELECT count(*) FROM s), "
        "       'file_ids', (SELECT coalesce(json_agg(id ORDER BY id), '[]') FROM (SELECT id FROM s ORDER BY id LIMIT 200) x), "
        "       'seconds', round(r.seconds::numeric, 3))::text) FROM r";

static int refresh_once(PGconn *c, AggregateMode *ret_mode, uint64_t count_memory, char **ret_error)
{
        AggregateMode mode = *ret_mode;
        int r = db_exec(c, ret_error, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL);

        if (r == 0 && mode == AGGREGATE_FOLD && recount_requested(c))
                mode = *ret_mode = AGGREGATE_FULL;
        if (r == 0 && mode == AGGREGATE_FULL)
                r = recount(c, count_memory, ret_error);
        if (r == 0 && mode == AGGREGATE_FULL) /* the recount covers them */
                r = db_exec(c, ret_error, "DELETE FROM ingest.agg_delta", 0, NULL);
        if (r == 0 && mode == AGGREGATE_FOLD)
                r = db_exec(c, ret_error, fold_sql, 0, NULL);
        if (r == 0) {
                const char *p[1] = { mode == AGGREGATE_FULL ? "full" : "fold" };
                r = db_exec(c, ret_error, record_sql, 1, p);
        }
        return db_end(c, r, ret_error);
}

int aggregate_refresh(PGconn *c, AggregateMode *mode, uint64_t count_memory, char **ret_error)
{
        /* the recount's hash aggregate spills to disk at the default 4MB */
        int r = db_exec(c, ret_error, "SET work_mem = '64MB'", 0, NULL);

        if (r == 0)
                r = db_exec(c, ret_error, "SELECT pg_advisory_lock(hashtext('ingestd.aggregate'))", 0, NULL);

        if (r < 0)
                return r;
        for (int attempt = 1;; attempt++) {
                char *err = NULL;
                r = refresh_once(c, mode, count_memory, &err);
                if (r == 0)
                        break;
                if (attempt < 5 && err && strstr(err, "40001")) {
                        free(err); /* serialization failure: take a new snapshot, go again */
                        continue;
                }
                *ret_error = err;
                break;
        }
        PQclear(PQexec(c, "SELECT pg_advisory_unlock(hashtext('ingestd.aggregate'))"));
        return r;
}
