/* schema.c - applies conf/schema.sql (compiled in) and creates products with
 * the configured key, all in one transaction under an advisory lock so that
 * concurrent start-ups do not race. */
#include "schema.h"
#include "db.h"
#include "deferkey.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char schema_sql[] =
#include "schema_sql.h"
        ;

static int check_key(PGconn *c, KeyMode key, char **ret_error)
{
        const char *want = key == KEY_SKU_NAME ? "sku,name" : "sku";
        PGresult *res = db_query(c, ret_error,
                "SELECT string_agg(a.attname, ',' ORDER BY k.ord) "
                "FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(att, ord) "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att "
                "WHERE i.indrelid = 'public.products'::regclass AND i.indisprimary",
                0, NULL);
        int r = 0;

        if (!res)
                return -EIO;
        const char *have = PQgetisnull(res, 0, 0) ? "(none)" : PQgetvalue(res, 0, 0);
        /* a first load that defers the key is resumed and builds it */
        if (PQgetisnull(res, 0, 0) && (r = deferkey_pending(c, ret_error)) != 0) {
                PQclear(res);
                return r < 0 ? r : 0;
        }
        if (strcmp(have, want) != 0) {
                *ret_error = xasprintf("table products has primary key (%s) but the configuration says "
                                       "key = \"%s\"",
                        have, want);
                r = -EINVAL;
        }
        PQclear(res);
        return r;
}

int schema_migrate(PGconn *c, KeyMode key, char **ret_error)
{
        /* COLLATE "C": skus and names are identifiers, compared byte-wise;
         * locale-aware comparison made every index insert and sort slower */
        char *products = xasprintf(
                "CREATE TABLE IF NOT EXISTS public.products ("
                " sku text COLLATE \"C\" NOT NULL, name text COLLATE \"C\" NOT NULL, description text,"
                " file_seq bigint NOT NULL DEFAULT 0, line bigint NOT NULL DEFAULT 0,"
                " PRIMARY KEY (%s));"
                "ALTER TABLE public.products ADD COLUMN IF NOT EXISTS file_seq bigint NOT NULL DEFAULT 0;"
                "ALTER TABLE public.products ADD COLUMN IF NOT EXISTS line bigint NOT NULL DEFAULT 0;",
                key == KEY_SKU_NAME ? "sku, name" : "sku");
        int r = -EIO;

        if (db_exec(c, ret_error, "BEGIN", 0, NULL) < 0)
                goto out;
        if (db_exec(c, ret_error, "SELECT pg_advisory_xact_lock(hashtext('ingestd.schema'))", 0, NULL) < 0)
                goto rollback;
        if (db_script(c, ret_error, schema_sql) < 0 || db_script(c, ret_error, products) < 0)
                goto rollback;
        r = db_end(c, check_key(c, key, ret_error), ret_error);
        goto out;
rollback:
        r = db_end(c, -EIO, ret_error);
out:
        free(products);
        return r;
}
