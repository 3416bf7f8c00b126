/* schema.h - creates and checks the database objects ingestd relies on. */
#pragma once
#include "config.h"
#include <libpq-fe.h>

/* Idempotent: safe on every start and from several instances at once. Fails
 * with a message when products exists with another primary key than `key`,
 * or other partitions than `partitions`. */
int schema_migrate(PGconn *c, KeyMode key, int partitions, char **ret_error);
