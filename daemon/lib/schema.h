/* schema.h - creates and checks the database objects ingestd relies on. */
#pragma once
#include "config.h"
#include <libpq-fe.h>

/* Idempotent: safe on every start and from several instances at once. Fails
 * with a message when products exists with another primary key than `key`. */
int schema_migrate(PGconn *c, KeyMode key, char **ret_error);

/* products' rows as the planner knows them, for a query over its pg_class
 * row: reltuples, or, before the first ANALYZE (-1, as right after a bulk
 * load), its bytes over 256 (rows are ~200 bytes in the file). */
#define PRODUCTS_ROWS "greatest(reltuples, pg_relation_size(oid) / 256)"
