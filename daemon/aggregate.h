/* aggregate.h - refresh of products_agg. */
#pragma once
#include <libpq-fe.h>

typedef enum AggregateMode {
        AGGREGATE_FULL,   /* recount products: also sees changes made outside ingestd */
        AGGREGATE_FOLD,   /* add the deltas the loaded chunks recorded */
} AggregateMode;

/* Brings products_agg in line with products in one transaction and stamps
 * ingest.files.aggregated_at of the files the refresh covers. A fold becomes a
 * recount when a chunk asked for one; *mode tells what was done. */
int aggregate_refresh(PGconn *c, AggregateMode *mode, char **ret_error);
