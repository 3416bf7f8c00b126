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

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* The count by name goes into a temporary table first: a CREATE TABLE AS
 * may use parallel workers, an INSERT ... SELECT may not. New names then take
 * a plain INSERT and changed counts an UPDATE: cheaper than INSERT ... ON
 * CONFLICT, and safe since refreshes never overlap. */
static const char fresh_sql[] =
        "CREATE TEMP TABLE fresh ON COMMIT DROP AS "
        "SELECT name, count(*) AS n FROM public.products GROUP BY name";
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
        bool yes = !res || PQntuples(res) > 0;   /* on error the recount fails the same way */

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

static int first_build(PGconn *c, char **ret_error)
{
        PGresult *key = db_query(c, ret_error, primary_key_sql, 0, NULL);

        if (!key)
                return -EIO;
        bool rebuild = PQntuples(key) == 1 && drop_primary_key(c, PQgetvalue(key, 0, 0));
        int r = db_exec(c, ret_error, first_build_sql, 0, NULL);
        if (r == 0 && rebuild)
                r = db_exec(c, ret_error, PQgetvalue(key, 0, 1), 0, NULL);
        PQclear(key);
        return r;
}

/* The scan of products goes to parallel workers, which the planner's default
 * costs did not choose at 500k rows: the first reader after a load also
 * checks every row's transaction and sets its hint bits, which 3 processes
 * share (the recount's query 0.29 -> 0.21 s right after a 500k load). */
static int recount(PGconn *c, char **ret_error)
{
        int r = db_script(c, ret_error, "SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0");

        if (r == 0)
                r = db_exec(c, ret_error, fresh_sql, 0, NULL);
        if (r == 0)
                r = db_query_bool(c, ret_error, "SELECT EXISTS (SELECT 1 FROM public.products_agg)", 0, NULL);
        if (r < 0)
                return r;
        if (r == 0)   /* empty */
                return first_build(c, ret_error);
        /* without statistics the planner took the comparison with products_agg
         * for a small one: minutes of nested loops at 210k names */
        r = db_exec(c, ret_error, "ANALYZE pg_temp.fresh", 0, NULL);
        if (r == 0)
                r = db_exec(c, ret_error, refresh_sql, 0, NULL);
        return r;
}

static int refresh_once(PGconn *c, AggregateMode *ret_mode, char **ret_error)
{
        AggregateMode mode = *ret_mode;
        int r = db_exec(c, ret_error, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL);

        if (r == 0 && mode == AGGREGATE_FOLD && recount_requested(c))
                mode = *ret_mode = AGGREGATE_FULL;
        if (r == 0 && mode == AGGREGATE_FULL)
                r = recount(c, ret_error);
        if (r == 0 && mode == AGGREGATE_FULL)   /* the recount covers them */
                r = db_exec(c, ret_error, "DELETE FROM ingest.agg_delta", 0, NULL);
        if (r == 0 && mode == AGGREGATE_FOLD)
                r = db_exec(c, ret_error, fold_sql, 0, NULL);
        if (r == 0)
                r = db_exec(c, ret_error,
                            "UPDATE ingest.files SET aggregated_at = clock_timestamp() "
                            "WHERE aggregated_at IS NULL AND state IN ('done', 'failed')", 0, NULL);
        return db_end(c, r, ret_error);
}

int aggregate_refresh(PGconn *c, AggregateMode *mode, char **ret_error)
{
        /* the recount's hash aggregate spills to disk at the default 4MB */
        int r = db_exec(c, ret_error, "SET work_mem = '64MB'", 0, NULL);

        if (r == 0)
                r = db_exec(c, ret_error, "SELECT pg_advisory_lock(hashtext('ingestd.aggregate'))", 0, NULL);

        if (r < 0)
                return r;
        for (int attempt = 1;; attempt++) {
                char *err = NULL;
                r = refresh_once(c, mode, &err);
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
