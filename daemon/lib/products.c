/* products.c - see products.h. */
#include "products.h"
#include "db.h"
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

char *products_add_key_sql(const char *quoted, KeyMode key, bool partitioned)
{
        if (partitioned)
                return xasprintf(
                        "ALTER TABLE public.products ADD CONSTRAINT %s PRIMARY KEY (%s)", quoted, key_columns(key));
        return xasprintf("CREATE UNIQUE INDEX %s ON public.products (%s); "
                         "ALTER TABLE public.products ADD CONSTRAINT %s PRIMARY KEY USING INDEX %s",
                quoted, key_columns(key), quoted, quoted);
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
