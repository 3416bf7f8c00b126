/* products.c - see products.h. */
#include "products.h"
#include "db.h"
#include "rules.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *key_columns(KeyMode key) { return key == KEY_SKU_NAME ? "sku, name" : "sku"; }

char *products_ddl(KeyMode key, int partitions)
{
        /* COLLATE "C": skus and names are identifiers, compared byte-wise;
         * locale-aware comparison made every index insert and sort slower */
        Buf b = { 0 };
        char *head = xasprintf(
                "CREATE TABLE IF NOT EXISTS public.products ("
                " sku text COLLATE \"C\" NOT NULL, name text COLLATE \"C\" NOT NULL, description text,"
                " file_seq bigint NOT NULL DEFAULT 0, line bigint NOT NULL DEFAULT 0,"
                " PRIMARY KEY (%s))%s;"
                "ALTER TABLE public.products ADD COLUMN IF NOT EXISTS file_seq bigint NOT NULL DEFAULT 0;"
                "ALTER TABLE public.products ADD COLUMN IF NOT EXISTS line bigint NOT NULL DEFAULT 0;",
                key_columns(key), partitions > 0 ? " PARTITION BY HASH (sku)" : "");

        buf_append(&b, head, strlen(head));
        free(head);
        for (int i = 0; i < partitions; i++) {
                char *part = xasprintf("CREATE TABLE IF NOT EXISTS public.products_p%d PARTITION OF public.products "
                                       "FOR VALUES WITH (MODULUS %d, REMAINDER %d);",
                        i, partitions, i);
                buf_append(&b, part, strlen(part));
                free(part);
        }
        buf_append(&b, "", 1);
        return b.data;
}

int products_check_partitions(PGconn *c, int partitions, char **ret_error)
{
        PGresult *res = db_query(c, ret_error,
                "SELECT c.relkind = 'p', (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid) "
                "FROM pg_class c WHERE c.oid = to_regclass('public.products')",
                0, NULL);
        int r = 0;

        if (!res)
                return -EIO;
        if (PQntuples(res) == 0) { /* not created yet */
                PQclear(res);
                return 0;
        }
        bool partitioned = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        int have = partitioned ? atoi(PQgetvalue(res, 0, 1)) : 0;
        if (have != partitions || partitioned != (partitions > 0)) {
                *ret_error = xasprintf("table products has %d partitions but the configuration says "
                                       "database.partitions = %d (the count cannot change in place: "
                                       "load into a new database, or set it back)",
                        have, partitions);
                r = -EINVAL;
        }
        PQclear(res);
        return r;
}

int products_partitioned(PGconn *c, char **ret_error)
{
        return db_query_bool(c, ret_error, "SELECT " PRODUCTS_IS_PARTITIONED, 0, NULL);
}

char *products_key_columns(PGconn *c, char **ret_error, int *ret)
{
        PGresult *res = db_query(c, ret_error,
                "SELECT string_agg(a.attname, ',' ORDER BY k.ord) "
                "FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(att, ord) "
                "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att "
                "WHERE i.indrelid = 'public.products'::regclass AND i.indisprimary",
                0, NULL);
        char *have = res && !PQgetisnull(res, 0, 0) ? xstrdup(PQgetvalue(res, 0, 0)) : NULL;

        *ret = res ? 0 : -EIO;
        PQclear(res);
        return have;
}

char *products_droppable_key(PGconn *c, char **ret_error, int *ret)
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

/* Runs sql (several statements) and frees it. */
static int run_owned(PGconn *c, char *sql, char **ret_error)
{
        int r = db_script(c, ret_error, sql);

        free(sql);
        return r;
}

int products_drop_key(PGconn *c, const char *name, char **ret_error)
{
        char *q = PQescapeIdentifier(c, name, strlen(name));
        int r = q ? run_owned(c, xasprintf("ALTER TABLE public.products DROP CONSTRAINT %s", q), ret_error) : -ENOMEM;

        PQfreemem(q);
        return r;
}

int products_add_key(PGconn *c, const char *name, KeyMode key, char **ret_error)
{
        int partitioned = products_partitioned(c, ret_error);
        char *q = partitioned < 0 ? NULL : PQescapeIdentifier(c, name, strlen(name));
        const char *cols = key_columns(key);
        int r;

        if (!q) {
                if (partitioned >= 0)
                        *ret_error = xstrdup(PQerrorMessage(c));
                return -EIO;
        }
        if (partitioned)
                r = run_owned(c, xasprintf("ALTER TABLE public.products ADD CONSTRAINT %s PRIMARY KEY (%s)", q, cols),
                        ret_error);
        else
                r = run_owned(c,
                        xasprintf("CREATE UNIQUE INDEX %s ON public.products (%s); "
                                  "ALTER TABLE public.products ADD CONSTRAINT %s PRIMARY KEY USING INDEX %s",
                                q, cols, q, q),
                        ret_error);
        PQfreemem(q);
        return r;
}

bool products_lock(PGconn *c)
{
        PGresult *res = PQexec(c, "SET LOCAL lock_timeout = '1s'; "
                                  "LOCK TABLE public.products IN ACCESS EXCLUSIVE MODE");
        bool locked = PQresultStatus(res) == PGRES_COMMAND_OK;

        PQclear(res);
        return locked;
}

char *products_update_sql(KeyMode key, bool set_name, bool set_description)
{
        bool sku_name = key == KEY_SKU_NAME;

        return xasprintf("UPDATE public.products p SET %s%sfile_seq = $1::bigint, line = s.line "
                         "FROM pg_temp.upd s WHERE p.sku = s.sku%s AND " SQL_OLDER("p", "$1::bigint", "s.line"),
                set_name && !sku_name ? "name = s.name, " : "", set_description ? "description = s.description, " : "",
                sku_name ? " AND p.name = s.name" : "");
}

const char *products_merge_deferred_sql(KeyMode key)
{
        return key == KEY_SKU_NAME
                       ? "INSERT INTO public.products (sku, name, description, file_seq, line) "
                         "SELECT DISTINCT ON (sku, name) sku, name, description, file_seq, line FROM ingest.deferred_rows "
                         "WHERE file_id = $1 ORDER BY sku, name, line DESC "
                         "ON CONFLICT (sku, name) DO UPDATE SET description = EXCLUDED.description, "
                         "file_seq = EXCLUDED.file_seq, line = EXCLUDED.line "
                         "WHERE " SQL_OLDER("products", "EXCLUDED.file_seq", "EXCLUDED.line")
                       : "INSERT INTO public.products (sku, name, description, file_seq, line) "
                         "SELECT DISTINCT ON (sku) sku, name, description, file_seq, line FROM ingest.deferred_rows "
                         "WHERE file_id = $1 ORDER BY sku, line DESC "
                         "ON CONFLICT (sku) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description, "
                         "file_seq = EXCLUDED.file_seq, line = EXCLUDED.line "
                         "WHERE " SQL_OLDER("products", "EXCLUDED.file_seq", "EXCLUDED.line");
}

/* On one table an index scan with the whole array is the fastest form. On
 * partitions it searches every partition's index for every key (pruning
 * keeps a partition when any key may be in it), so there the keys are joined
 * in: each key's lookup goes to its own partition, pruned as it runs. */
#define KEYS_JOINED "FROM unnest($1::text[]) k(sku) JOIN public.products p ON p.sku = k.sku COLLATE \"C\""

const char *products_probe_sql(bool partitioned)
{
        return partitioned ? "SELECT p.sku, p.name, p.description, p.file_seq, p.line " KEYS_JOINED
                           : "SELECT sku, name, description, file_seq, line FROM public.products "
                             "WHERE sku = ANY($1::text[])";
}

const char *products_any_sql(bool partitioned)
{
        return partitioned ? "SELECT EXISTS (SELECT 1 " KEYS_JOINED ")"
                           : "SELECT EXISTS (SELECT 1 FROM public.products WHERE sku = ANY($1::text[]))";
}
