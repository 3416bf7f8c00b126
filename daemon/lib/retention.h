/* retention.h - what a done file leaves behind, removed once it is old
 * (retention.history, retention.done_files): its ingest.chunks and
 * ingest.rejects rows, its copy in done/. The ingest.files row stays as the
 * file's summary. Run by the leader's prune child (`ingestd --prune`) and by
 * `ingestctl prune`; ingestd(8) RETENTION. */
#pragma once
#include "config.h"

#include <libpq-fe.h>
#include <stdbool.h>

typedef struct RetentionCounts {
        long long files;                  /* files whose history was (or would be) removed */
        long long chunks, rejects;        /* their rows */
        long long done_files, done_bytes; /* files deleted (or to delete) from done/ */
} RetentionCounts;

/* What a prune would remove now, without removing it. */
int retention_count(PGconn *c, const Config *cfg, RetentionCounts *ret, char **ret_error);
/* Removes it, in statements of at most a few thousand rows each, each its
 * own transaction; *ret counts what went, also when it fails part way (the
 * next prune goes on from there). */
int retention_prune(PGconn *c, const Config *cfg, RetentionCounts *ret, char **ret_error);
/* Seconds between the leader's prunes: a tenth of the shorter setting,
 * between 1 second and 1 hour; 0 when both settings keep everything. */
double retention_interval(const Config *cfg);
