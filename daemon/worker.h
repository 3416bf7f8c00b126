/* worker.h - the process that loads one chunk in one transaction. Its exit
 * status is the contract with the supervisor (sysexits.h). */
#pragma once
#include "config.h"

#include <stdint.h>
#include <sysexits.h>

#define WORKER_DONE 0                 /* committed, or already committed before */
#define WORKER_RETRY EX_TEMPFAIL      /* failed this time; retry with backoff */
#define WORKER_BAD_FILE EX_DATAERR    /* the file itself cannot load */
#define WORKER_NOT_RUN EX_UNAVAILABLE /* gave up before trying (stop, predecessor failed) */

int worker_run(const Config *cfg, int64_t file_id, int chunk_no, const char *path);
