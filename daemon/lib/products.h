/* products.h - what depends on how the products table is laid out: one table
 * (database.partitions = 0) or hash partitions by sku. Everything ingestd asks
 * of the table's layout goes through here; a distributed table (Citus,
 * docs/SCALING.md) would be one more case in these functions. */
#pragma once
#include "config.h"

#include <libpq-fe.h>
#include <stdbool.h>

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
/* The statements that add the primary key named `quoted` (an escaped
 * identifier) once the rows are in: a unique index then the constraint on it
 * for one table (the index build holds no lock that blocks reads); the
 * constraint at once on a partitioned table, which cannot take one USING
 * INDEX (PostgreSQL builds each partition's index). */
char *products_add_key_sql(const char *quoted, KeyMode key, bool partitioned);

/* Whether products is partitioned, as a scalar subquery (a boolean). */
#define PRODUCTS_IS_PARTITIONED "(SELECT relkind = 'p' FROM pg_class WHERE oid = 'public.products'::regclass)"
/* Rows into products, every column, the same on both layouts. */
#define PRODUCTS_COPY_SQL "COPY public.products (sku, name, description, file_seq, line) FROM STDIN"

/* The rows of the skus in $1 (text[]): sku, name, description, file_seq,
 * line; and whether any of them is there. */
const char *products_probe_sql(bool partitioned);
const char *products_any_sql(bool partitioned);

/* products' rows as the planner knows them, as a scalar subquery: for each
 * table holding rows (the partitions, or the one table), its reltuples, or,
 * before the first ANALYZE (-1, as right after a bulk load), its bytes over
 * 256 (rows are ~200 bytes in the file). A partitioned parent holds none
 * itself, and its pg_relation_size is 0. */
#define PRODUCTS_ROWS_ESTIMATE \
        "(SELECT coalesce(sum(greatest(c.reltuples, pg_relation_size(c.oid) / 256)), 0) FROM pg_class c " \
        " WHERE c.relkind <> 'p' AND (c.oid = 'public.products'::regclass OR c.oid IN " \
        "       (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'public.products'::regclass)))"
