/* schema.c - applies conf/schema.sql (compiled in) and creates products with
 * the configured key and partitions (products.h), all in one transaction under an advisory lock so that
 * concurrent start-ups do not race. A digest of those statements, kept as the
 * comment of schema ingest, says when they have run already: a start-up then
 * runs no DDL, because ALTER TABLE locks products exclusively even when it
 * changes nothing, and other nodes may be loading into it. */
#include "schema.h"
#include "db.h"
#include "deferkey.h"
#include "products.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char schema_sql[] =
#include "schema_sql.h"
        ;

static int check_key(PGconn *c, KeyMode key, char **ret_error)
{
        const char *want = key == KEY_SKU_NAME ? "sku,name" : "sku";
        int r;
        char *have = products_key_columns(c, ret_error, &r);

        /* a first load that defers the key is resumed and builds it */
        if (r == 0 && !have && (r = deferkey_pending(c, ret_error)) != 0)
                return r < 0 ? r : 0;
        if (r == 0 && strcmp(have ? have : "(none)", want) != 0) {
                *ret_error = xasprintf("table products has primary key (%s) but the configuration says "
                                       "key = \"%s\"",
                        have ? have : "(none)", want);
                r = -EINVAL;
        }
        free(have);
        return r;
}

static int check_table(PGconn *c, KeyMode key, int partitions, char **ret_error)
{
        int r = products_check_partitions(c, partitions, ret_error);
        return r < 0 ? r : check_key(c, key, ret_error);
}

/* FNV-1a over the statements: a change detector, not a checksum anyone
 * attacks (and libcrypto's setup would cost the supervisor 2 MB). */
static uint64_t fnv1a(uint64_t h, const char *text)
{
        for (; *text; text++)
                h = (h ^ (unsigned char)*text) * 0x100000001b3ULL;
        return h;
}

static void schema_digest(const char *products, char out[65])
{
        snprintf(out, 65, "ingestd schema %016" PRIx64, fnv1a(fnv1a(0xcbf29ce484222325ULL, schema_sql), products));
}

/* 1 when schema ingest carries this digest, 0 when not (or absent). */
static int schema_current(PGconn *c, const char *digest, char **ret_error)
{
        const char *p[1] = { digest };

        return db_query_bool(c, ret_error,
                "SELECT d.description = $1 FROM pg_namespace n JOIN pg_description d "
                "ON d.objoid = n.oid AND d.classoid = 'pg_namespace'::regclass WHERE n.nspname = 'ingest'",
                1, p);
}

static int run_ddl(PGconn *c, const char *products, const char *digest, char **ret_error)
{
        char *mark = xasprintf("COMMENT ON SCHEMA ingest IS '%s'", digest); /* no quotes in it */
        int r = db_script(c, ret_error, schema_sql);

        if (r == 0)
                r = db_script(c, ret_error, products);
        if (r == 0)
                r = db_exec(c, ret_error, mark, 0, NULL);
        free(mark);
        return r;
}

int schema_migrate(PGconn *c, KeyMode key, int partitions, char **ret_error)
{
        char *products = products_ddl(key, partitions);
        char digest[65];
        int r;

        schema_digest(products, digest);
        if ((r = schema_current(c, digest, ret_error)) != 0) {
                free(products);
                return r < 0 ? r : check_table(c, key, partitions, ret_error);
        }
        r = db_exec(c, ret_error, "BEGIN", 0, NULL);
        if (r == 0)
                r = db_exec(c, ret_error, "SELECT pg_advisory_xact_lock(hashtext('ingestd.schema'))", 0, NULL);
        /* a node that started at the same moment may have run it meanwhile */
        int current = r < 0 ? 0 : schema_current(c, digest, ret_error);
        if (r == 0 && current < 0)
                r = current;
        if (r == 0) /* the partitions before the DDL: theirs fails on another layout */
                r = products_check_partitions(c, partitions, ret_error);
        if (r == 0 && current == 0)
                r = run_ddl(c, products, digest, ret_error);
        if (r == 0)
                r = check_key(c, key, ret_error);
        free(products);
        return db_end(c, r, ret_error);
}
