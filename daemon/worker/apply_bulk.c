/* apply_bulk.c - the path of a chunk while products' primary key is deferred
 * over a first load (deferkey.h): the rows go by COPY straight into the bare
 * table, in batches sorted by key (apply_batches.c). No statement looks a key
 * up (there is no index to do it with), so the chunk must know that it sends
 * each key once: its lookahead knows every key of the chunk, a row whose key
 * occurs again further on is not sent, and key lanes hold disjoint keys. The
 * rows the lookahead cannot settle (two keys sharing an entry of its table: a
 * handful in 10M rows) are kept in ingest.deferred_rows and applied when the
 * key is built; so are the rows of keys that found no room in a full table (a
 * chunk with far more rows than its share). Past UNCERTAIN_MAX of them the
 * chunk rolls back to before its rows, builds the key itself and takes the
 * ordinary path. The supervisor defers the key only for files whose chunks
 * fit the table (deferkey_decide). */
#include "job.h"
#include "db.h"
#include "deferkey.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define UNCERTAIN_MAX (1u << 20)    /* ~5k rows the lookahead could not settle */

static int store_uncertain(Job *j)
{
        const char *p[2] = { j->ids[0], j->ids[1] };
        int r;

        if (j->counts.uncertain == 0)
                return 0;
        j->rows += j->counts.uncertain;        /* loaded, unless the key's build finds a newer row */
        j->distinct += j->counts.uncertain;
        r = db_exec(j->conn, &j->error,
                    "CREATE TEMP TABLE uncertain ON COMMIT DROP AS SELECT sku, name, description, line, "
                    "line AS byte_offset FROM ingest.deferred_rows WITH NO DATA", 0, NULL);
        if (r == 0)
                r = job_copy_rows(j, "COPY pg_temp.uncertain FROM STDIN", &j->uncertain);
        if (r == 0)
                r = db_exec(j->conn, &j->error,
                            "INSERT INTO ingest.deferred_rows (file_id, chunk_no, sku, name, description, file_seq, line) "
                            "SELECT $1, $2, sku, name, description, $1, line FROM pg_temp.uncertain", 2, p);
        return r;
}

/* Back to before the rows, with the key built in this transaction. */
static int take_key(Job *j, Buf *rejects)
{
        int r = db_exec(j->conn, &j->error, "ROLLBACK TO SAVEPOINT bulk", 0, NULL);

        rejects->len = 0;
        j->uncertain.len = 0;
        j->counts = (LoadCounts){ 0 };
        j->rows = j->distinct = 0;
        j->batches = j->new_batches = 0;
        j->t_apply = 0;
        if (r == 0)
                r = deferkey_build(j->conn, j->file_id, j->cfg->key, &j->error);
        j->bulk = false;
        j->key_built = r > 0;
        return r < 0 ? r : 0;
}

/* The rows into products, the uncertain ones into ingest.deferred_rows, and
 * a request for products_agg's recount (a first load changes every name). */
int apply_bulk(Job *j, Buf *rejects)
{
        int r = db_exec(j->conn, &j->error, "SAVEPOINT bulk", 0, NULL);

        j->uncertain_max = UNCERTAIN_MAX;
        if (r == 0)
                r = apply_in_batches(j, rejects);
        if (r == -ENOSPC)
                return take_key(j, rejects);
        if (r == 0)
                r = store_uncertain(j);
        if (r == 0 && j->counts.rows > 0)
                r = db_exec(j->conn, &j->error, "INSERT INTO ingest.agg_delta (name, delta) VALUES (NULL, 0)",
                            0, NULL);
        return r;
}
