/* aggregate.c - products_agg = products counted by name. One REPEATABLE READ
 * transaction: readers see the old table until COMMIT and never an empty or
 * half-built one, and the files stamped as aggregated are exactly those whose
 * rows the snapshot saw. Only changed names are written. A session advisory
 * lock keeps refreshes from overlapping. */
#include "aggregate.h"
#include "db.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* New names take a plain INSERT and changed counts an UPDATE: cheaper than
 * INSERT ... ON CONFLICT, and safe since refreshes never overlap. */
static const char refresh_sql[] =
        "WITH fresh AS MATERIALIZED (SELECT name, count(*) AS n FROM public.products GROUP BY name), "
        " cur AS MATERIALIZED (SELECT f.name, f.n, a.no_of_products AS old "
        "                      FROM fresh f LEFT JOIN public.products_agg a ON a.name = f.name), "
        " gone AS (DELETE FROM public.products_agg a "
        "          WHERE NOT EXISTS (SELECT 1 FROM fresh f WHERE f.name = a.name)), "
        " changed AS (UPDATE public.products_agg a SET no_of_products = c.n FROM cur c "
        "             WHERE a.name = c.name AND c.old IS NOT NULL AND c.old <> c.n) "
        "INSERT INTO public.products_agg (name, no_of_products) SELECT name, n FROM cur WHERE old IS NULL";

static int refresh_once(PGconn *c, char **ret_error)
{
        int r = db_exec(c, ret_error, "BEGIN ISOLATION LEVEL REPEATABLE READ", 0, NULL);

        if (r == 0)
                r = db_exec(c, ret_error, refresh_sql, 0, NULL);
        if (r == 0)
                r = db_exec(c, ret_error,
                            "UPDATE ingest.files SET aggregated_at = now() "
                            "WHERE aggregated_at IS NULL AND state IN ('done', 'failed')", 0, NULL);
        return db_end(c, r, ret_error);
}

int aggregate_refresh(PGconn *c, char **ret_error)
{
        int r = db_exec(c, ret_error, "SELECT pg_advisory_lock(hashtext('ingestd.aggregate'))", 0, NULL);

        if (r < 0)
                return r;
        for (int attempt = 1;; attempt++) {
                char *err = NULL;
                r = refresh_once(c, &err);
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
