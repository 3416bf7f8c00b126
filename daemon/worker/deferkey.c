/* deferkey.c - see deferkey.h. */
#include "deferkey.h"
#include "db.h"
#include "lookahead.h"
#include "products.h"
#include "rules.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The name of products' primary key when products is empty, else NULL. */
static char *droppable_key(PGconn *c, char **ret_error, int *ret)
{
        PGresult *res = db_query(c, ret_error,
                "SELECT conname FROM pg_constraint WHERE conrelid = 'public.products'::regclass "
                "AND contype = 'p' AND NOT EXISTS (SELECT 1 FROM public.products)",
                0, NULL);
        char *name = res && PQntuples(res) == 1 ? xstrdup(PQgetvalue(res, 0, 0)) : NULL;

        *ret = res ? 0 : -EIO;
        PQclear(res);
        return name;
}

static int drop_key(PGconn *c, const char *ids, const char *name, char **ret_error)
{
        char *q = PQescapeIdentifier(c, name, strlen(name));
        char *sql = q ? xasprintf("ALTER TABLE public.products DROP CONSTRAINT %s", q) : NULL;
        const char *p[2] = { ids, name };
        int r = sql ? db_exec(c, ret_error, sql, 0, NULL) : -ENOMEM;

        if (r == 0)
                r = db_exec(c, ret_error,
                        "UPDATE ingest.files SET key_decided = true, deferred_key = $2 "
                        "WHERE id = $1",
                        2, p);
        PQfreemem(q);
        free(sql);
        return r;
}

static int mark_decided(PGconn *c, const char *ids, char **ret_error)
{
        const char *p[1] = { ids };

        return db_exec(c, ret_error, "UPDATE ingest.files SET key_decided = true WHERE id = $1", 1, p);
}

/* Takes products' lock within a second: a reader holding products for long
 * keeps the key, rather than stall the supervisor. */
static bool lock_products(PGconn *c)
{
        PGresult *res = PQexec(c, "SET LOCAL lock_timeout = '1s'; "
                                  "LOCK TABLE public.products IN ACCESS EXCLUSIVE MODE");
        bool locked = PQresultStatus(res) == PGRES_COMMAND_OK;

        PQclear(res);
        return locked;
}

/* Under the file row's lock: several instances may decide at once. */
int deferkey_decide(PGconn *c, int64_t file_id, bool allowed, char **ret_error)
{
        uint64_t chunk_keys = lookahead_capacity(LOOKAHEAD_BYTES);
        char ids[32], keys[32], *name = NULL;
        const char *p[2] = { ids, keys };
        int r;

        snprintf(ids, sizeof ids, "%" PRId64, file_id);
        snprintf(keys, sizeof keys, "%" PRIu64, chunk_keys);
        if (db_exec(c, ret_error, "BEGIN", 0, NULL) < 0)
                return -EIO;
        r = db_query_bool(c, ret_error,
                "SELECT kind = 'ingest' AND data_rows <= $2::bigint * greatest(chunks, 1) "
                "FROM ingest.files WHERE id = $1 AND NOT key_decided FOR UPDATE",
                2, p);
        if (r > 0 && allowed) {
                if (!lock_products(c)) {
                        PQclear(PQexec(c, "ROLLBACK"));
                        return mark_decided(c, ids, ret_error);
                }
                name = droppable_key(c, ret_error, &r);
        }
        if (r >= 0 && name)
                r = drop_key(c, ids, name, ret_error) == 0 ? 1 : -EIO;
        else if (r >= 0)
                r = mark_decided(c, ids, ret_error);
        free(name);
        return db_end(c, r < 0 ? r : 0, ret_error) < 0 ? -EIO : r;
}

/* The newest deferred row of each key, unless products has a newer version
 * (the row that made the lookahead unsure). */
static const char apply_sku[] =
        "INSERT INTO public.products (sku, name, description, file_seq, line) "
        "SELECT DISTINCT ON (sku) sku, name, description, file_seq, line FROM ingest.deferred_rows "
        "WHERE file_id = $1 ORDER BY sku, line DESC "
        "ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description, "
        "file_seq = EXCLUDED.file_seq, line = EXCLUDED.line "
        "WHERE " SQL_OLDER("products", "EXCLUDED.file_seq", "EXCLUDED.line");
static const char apply_sku_name[] =
        "INSERT INTO public.products (sku, name, description, file_seq, line) "
        "SELECT DISTINCT ON (sku, name) sku, name, description, file_seq, line FROM ingest.deferred_rows "
        "WHERE file_id = $1 ORDER BY sku, name, line DESC "
        "ON CONFLICT (sku, name) DO UPDATE SET description = EXCLUDED.description, "
        "file_seq = EXCLUDED.file_seq, line = EXCLUDED.line "
        "WHERE " SQL_OLDER("products", "EXCLUDED.file_seq", "EXCLUDED.line");

/* A deferred row that is not in products now was superseded; its chunk
 * counted it loaded. */
static const char recount_losers[] =
        "UPDATE ingest.chunks c SET rows_loaded = c.rows_loaded - x.n, "
        "       rows_superseded = c.rows_superseded + x.n "
        "FROM (SELECT d.chunk_no, count(*) AS n FROM ingest.deferred_rows d WHERE d.file_id = $1 "
        "      AND NOT EXISTS (SELECT 1 FROM public.products p WHERE p.sku = d.sku AND p.name = d.name "
        "                      AND p.file_seq = d.file_seq AND p.line = d.line) "
        "      GROUP BY d.chunk_no) x "
        "WHERE c.file_id = $1 AND c.no = x.chunk_no";

static int apply_deferred_rows(PGconn *c, const char *ids, KeyMode key, char **ret_error)
{
        const char *p[1] = { ids };
        int r = db_exec(c, ret_error, key == KEY_SKU_NAME ? apply_sku_name : apply_sku, 1, p);

        if (r == 0)
                r = db_exec(c, ret_error, recount_losers, 1, p);
        if (r == 0)
                r = db_exec(c, ret_error, "DELETE FROM ingest.deferred_rows WHERE file_id = $1", 1, p);
        return r;
}

static int add_key(PGconn *c, const char *name, KeyMode key, char **ret_error)
{
        char *q = PQescapeIdentifier(c, name, strlen(name));
        if (!q)
                return -ENOMEM;
        int partitioned = products_partitioned(c, ret_error);
        char *sql = partitioned < 0 ? NULL : products_add_key_sql(q, key, partitioned == 1);
        int r = sql ? db_script(c, ret_error, sql) : -EIO;

        PQfreemem(q);
        free(sql);
        return r;
}

int deferkey_build(PGconn *c, int64_t file_id, KeyMode key, char **ret_error)
{
        char ids[32];
        const char *p[1] = { ids };

        snprintf(ids, sizeof ids, "%" PRId64, file_id);
        PGresult *res = db_query(c, ret_error,
                "SELECT deferred_key FROM ingest.files "
                "WHERE id = $1 AND deferred_key IS NOT NULL FOR UPDATE",
                1, p);
        if (!res)
                return -EIO;
        char *name = PQntuples(res) == 1 ? xstrdup(PQgetvalue(res, 0, 0)) : NULL;
        PQclear(res);
        if (!name)
                return 0;
        int r = add_key(c, name, key, ret_error);
        if (r == 0)
                r = apply_deferred_rows(c, ids, key, ret_error);
        if (r == 0)
                r = db_exec(c, ret_error, "UPDATE ingest.files SET deferred_key = NULL WHERE id = $1", 1, p);
        free(name);
        return r < 0 ? r : 1;
}

int deferkey_pending(PGconn *c, char **ret_error)
{
        return db_query_bool(
                c, ret_error, "SELECT EXISTS (SELECT 1 FROM ingest.files WHERE deferred_key IS NOT NULL)", 0, NULL);
}
