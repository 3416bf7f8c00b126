/* aggregate.h - refresh of products_agg. */
#pragma once
#include <libpq-fe.h>

/* Brings products_agg in line with products in one transaction and stamps
 * ingest.files.aggregated_at of the files the refresh covers. */
int aggregate_refresh(PGconn *c, char **ret_error);
