/* progress.h - ingestctl's wait for a file it dropped (ingest/update
 * --wait): on a terminal one line updated in place (percent, rows/s, ETA),
 * then a summary; piped, one line per change of the counts. */
#pragma once
#include "config.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

/* A file's row in ingest.files with its chunks summed. */
typedef struct FileProgress {
        char state[64]; /* the state, or what it is doing ("planning 40%") */
        long long chunks_done, chunks, data_rows, loaded, rejected, superseded;
} FileProgress;

/* The rows the committed chunks account for. */
long long progress_rows_done(const FileProgress *p);
/* The terminal line: NAME: STATE PCT% RATE rows/s ETA M:SS (counts).
 * rows_per_sec <= 0: no rate or ETA yet. */
void progress_tty_line(char *out, size_t n, const char *name, const FileProgress *p, double rows_per_sec);
/* The summary of a file done, `seconds` after it was dropped. */
void progress_summary(char *out, size_t n, const char *name, const FileProgress *p, double seconds);
/* Waits for the first file named `name` registered after id `after` to be
 * done (and counted in products_agg when the config refreshes it) or failed.
 * Returns 0 done, 1 failed, 2 timed out (timeout > 0), or an EX_ code. */
int progress_wait(PGconn *c, const Config *cfg, const char *name, long long after, double timeout);
