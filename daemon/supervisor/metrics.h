/* metrics.h - the supervisor's counters, gauges and histograms, rendered in
 * Prometheus's text format (httpd.h serves the text; ingestd(8) lists every
 * name). The loop is the only writer: it records what it already learns
 * (a file closed, a worker reaped, a refresh finished) and, once a second,
 * the backlog from the database; a scrape reads only the last rendering.
 * One registry per process, like log.c's state: the supervisor is one. */
#pragma once
#include "state.h"
#include "util.h"

#include <stdbool.h>
#include <sys/resource.h>

typedef enum ChunkResult { CHUNK_RESULT_DONE, CHUNK_RESULT_RETRIED, CHUNK_RESULT_FAILED, N_CHUNK_RESULTS } ChunkResult;

/* What the database says, read by the loop (metrics_read_backlog). */
typedef struct MetricsBacklog {
        double files_new, files_loading;
        double bytes;            /* of files new or loading, not yet committed */
        double oldest_age;       /* seconds since the oldest new or loading file arrived; 0 when none */
        double last_refresh;     /* products_agg's last refresh, Unix time; 0 when never */
        double unaggregated_age; /* seconds since the oldest finished file not in products_agg finished */
} MetricsBacklog;

/* What the loop knows by itself, at each rendering. */
typedef struct MetricsLive {
        const char *node;
        bool database_up, leader;
        int workers_busy, workers_max;
} MetricsLive;

/* Forgets every value (tests; and the start of the supervisor). */
void metrics_reset(void);
/* A file closed (file_close, or failed at registration). */
void metrics_file_closed(const FileSummary *f, bool failed);
/* A chunk worker's exit recorded: how its chunk ended, how long it ran. */
void metrics_chunk_exit(ChunkResult result, bool crashed, double seconds);
/* A chunk worker reaped (wait4): its CPU and peak memory. */
void metrics_worker_usage(const struct rusage *ru);
void metrics_takeovers(int chunks);
/* A products_agg refresh child exited with success: its duration and, for
 * each file done that it counted, the seconds from the file's arrival, from
 * ingest.aggregate_runs and the files it stamped. */
int metrics_read_refresh(PGconn *c, char **ret_error);
/* Reads the backlog (one query on ingest.files and ingest.aggregate_runs);
 * keeps the last values when it fails. */
int metrics_read_backlog(PGconn *c, char **ret_error);
/* Whether a counter or histogram changed since the last rendering: the loop
 * publishes at once what it recorded (a file closed), not a second later. */
bool metrics_changed(void);
/* The whole exposition into out (emptied first). */
void metrics_render(Buf *out, const MetricsLive *live);
