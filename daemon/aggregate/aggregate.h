/* aggregate.h - refresh of products_agg. */
#pragma once
#include <libpq-fe.h>
#include <stdint.h>

typedef enum AggregateMode {
        AGGREGATE_FULL, /* recount products: also sees changes made outside ingestd */
        AGGREGATE_FOLD, /* add the deltas the loaded chunks recorded */
} AggregateMode;

/* Brings products_agg in line with products in one transaction and stamps
 * ingest.files.aggregated_at of the files the refresh covers. A fold becomes a
 * recount when a chunk asked for one; *mode tells what was done. The first
 * build of an empty products_agg counts the names in this process when they
 * fit in count_memory bytes (aggregate.count_memory; 0 = never). */
int aggregate_refresh(PGconn *c, AggregateMode *mode, uint64_t count_memory, char **ret_error);
