/* products.h - every statement ingestd sends to the products table, in one
 * place: its creation and key, the batch path's lookups, COPY and UPDATE, the
 * deferred key's drop, merge and build, and what the aggregate reads. Where
 * the layout matters (one table, database.partitions = 0, or hash partitions
 * by sku) the function takes it; a distributed table (Citus,
 * docs/SCALING.md) would be one more case in these functions. The callers
 * never name products in SQL. */
#pragma once
#include "config.h"

#include <libpq-fe.h>
#include <stdbool.h>

/* --- creation and key (schema.c, deferkey.c) --- */

/* The statements that create products (idempotent): columns, the primary key
 * of `key` and, when partitions > 0, products_p0 .. products_pN-1 by
 * hash(sku). */
char *products_ddl(KeyMode key, int partitions);
/* 0 when products has the configured partitions (none for 0) or does not
 * exist yet, else -EINVAL with *ret_error naming both (or -EIO). The count
 * cannot change in place. */
int products_check_partitions(PGconn *c, int partitions, char **ret_error);
/* 1 when products is partitioned, 0 when one table, -EIO. */
int products_partitioned(PGconn *c, char **ret_error);
/* The primary key's columns as "sku" or "sku,name"; NULL with *ret = 0 when
 * products has none, or with *ret = -EIO. */
char *products_key_columns(PGconn *c, char **ret_error, int *ret);
/* The name of products' primary key when products is empty, else NULL
 * (*ret is 0, or -EIO). */
char *products_droppable_key(PGconn *c, char **ret_error, int *ret);
/* Drops the constraint `name`. */
int products_drop_key(PGconn *c, const char *name, char **ret_error);
/* Adds the primary key `name` of `key` once the rows are in: a unique index
 * then the constraint on it for one table (the index build holds no lock
 * that blocks reads); the constraint at once on a partitioned table, which
 * cannot take one USING INDEX (PostgreSQL builds each partition's index). */
int products_add_key(PGconn *c, const char *name, KeyMode key, char **ret_error);
/* Takes products' exclusive lock within a second (in the open transaction):
 * false when another session holds it for longer. */
bool products_lock(PGconn *c);

/* --- the apply paths (apply_batches.c, apply_deferred.c) --- */

/* Whether products is partitioned, as a scalar subquery (a boolean). */
#define PRODUCTS_IS_PARTITIONED "(SELECT relkind = 'p' FROM pg_class WHERE oid = 'public.products'::regclass)"
/* Rows into products, every column, the same on both layouts. */
#define PRODUCTS_COPY_SQL "COPY public.products (sku, name, description, file_seq, line) FROM STDIN"

/* The rows of the skus in $1 (text[]): sku, name, description, file_seq,
 * line; and whether any of them is there. */
const char *products_probe_sql(bool partitioned);
const char *products_any_sql(bool partitioned);

/* The staging table of changed rows, pg_temp.upd (sku, name, description,
 * line), dropped at commit. It takes the collation of products' key. */
#define PRODUCTS_STAGE_SQL \
        "CREATE TEMP TABLE upd ON COMMIT DROP AS " \
        "SELECT sku, name, description, line FROM public.products WITH NO DATA"
/* The UPDATE of products from pg_temp.upd, $1 the file's seq, where products'
 * version is older (rules.h). The key's columns are never set; name and
 * description as the flags say. */
char *products_update_sql(KeyMode key, bool set_name, bool set_description);

/* The newest deferred row (ingest.deferred_rows of file $1) of each key into
 * products, unless products has a newer version. */
const char *products_merge_deferred_sql(KeyMode key);
/* A deferred row of file $1 that is not in products now was superseded: its
 * chunk's counts move it from loaded to superseded. */
#define PRODUCTS_RECOUNT_DEFERRED \
        "UPDATE ingest.chunks c SET rows_loaded = c.rows_loaded - x.n, " \
        "       rows_superseded = c.rows_superseded + x.n " \
        "FROM (SELECT d.chunk_no, count(*) AS n FROM ingest.deferred_rows d WHERE d.file_id = $1 " \
        "      AND NOT EXISTS (SELECT 1 FROM public.products p WHERE p.sku = d.sku AND p.name = d.name " \
        "                      AND p.file_seq = d.file_seq AND p.line = d.line) " \
        "      GROUP BY d.chunk_no) x " \
        "WHERE c.file_id = $1 AND c.no = x.chunk_no"

/* --- what the aggregate reads (aggregate.c) --- */

/* Names and their counts, counted by the server. */
#define PRODUCTS_COUNT_BY_NAME "SELECT name, count(*) AS n FROM public.products GROUP BY name"
/* Every row's name, streamed out, one per line. */
#define PRODUCTS_NAMES_COPY "COPY (SELECT name FROM public.products) TO STDOUT"
/* Whether names compare as bytes (text of a deterministic collation, as
 * ingestd creates them), as a scalar subquery. */
#define PRODUCTS_NAMES_BYTEWISE \
        "(SELECT a.atttypid IN ('text'::regtype, 'varchar'::regtype) AND l.collisdeterministic " \
        " FROM pg_attribute a JOIN pg_collation l ON l.oid = a.attcollation " \
        " WHERE a.attrelid = 'public.products'::regclass AND a.attname = 'name')"

/* products' rows as the planner knows them, as a scalar subquery: for each
 * table holding rows (the partitions, or the one table), its reltuples, or,
 * before the first ANALYZE (-1, as right after a bulk load), its bytes over
 * 256 (rows are ~200 bytes in the file). A partitioned parent holds none
 * itself, and its pg_relation_size is 0. */
#define PRODUCTS_ROWS_ESTIMATE \
        "(SELECT coalesce(sum(greatest(c.reltuples, pg_relation_size(c.oid) / 256)), 0) FROM pg_class c " \
        " WHERE c.relkind <> 'p' AND (c.oid = 'public.products'::regclass OR c.oid IN " \
        "       (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'public.products'::regclass)))"
