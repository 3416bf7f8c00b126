/* job.h - one chunk's load, shared by the worker (worker.c: the transaction,
 * the chunk lock, the wait for the lane's previous chunk, the checkpoint) and
 * its two ways of applying the rows: in batches from the worker
 * (apply_batches.c) or sorted in the server (apply_sorted.c). Internal to the
 * worker process. */
#pragma once
#include "batch.h"
#include "config.h"
#include "loader.h"
#include "planner.h"
#include "util.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Job {
        const Config *cfg;
        PGconn *conn;
        int64_t file_id;
        int chunk_no;
        const char *path;
        char ids[2][32];           /* file_id, chunk_no as text parameters */
        FileKind kind;
        int lane, lanes;
        uint64_t rows_estimate;    /* the chunk's rows, from the file's rows and the range's share of its bytes */
        const char *map;           /* the file's image (see open_file), and its size */
        size_t map_size;
        Header header;
        ByteRange range;
        LoadCounts counts;
        BatchRules rules;
        Batch batch;
        Lookahead later;           /* where the chunk's keys occur last in the file (ingest files) */
        Buf scratch;               /* probe keys, then the rows to COPY */
        Buf *rejects;
        char *update_sql;          /* set once the staging table for updates exists */
        bool bulk;                 /* products' key is deferred: rows go straight in (apply_bulk.c) */
        Buf uncertain;             /* ... rows whose key the lookahead could not rule out further on */
        size_t uncertain_max;
        bool key_built;            /* the chunk could not load with the key deferred and built it */
        bool sorted;               /* applied by the sorted path (see choose_path) */
        bool new_rows;             /* ... as new rows, without looking keys up */
        bool waited;               /* the lane's previous chunk has committed */
        int new_rows_left;         /* batches that may still try copy_new_rows (see apply_batches.c) */
        unsigned batches, new_batches;   /* batches applied, and of those copied without a full probe */
        bool agg_recount, agg_marked;
        double agg_limit;          /* more delta rows than this: ask for a recount */
        uint64_t agg_changes;
        uint64_t rows, distinct, outranked, superseding, unknown;   /* summed over batches */
        uint64_t loaded, superseded, rejected;
        double t_lookahead, t_stage, t_wait, t_apply, t_commit;   /* seconds per phase, for the log */
        char *error;
} Job;

/* COPY ... FROM STDIN of rows (COPY text) in one go, or in three steps;
 * job_copy_flush is also a LoaderFlush. 0, or -EEXIST (a unique violation)
 * or -EIO with j->error. */
int job_copy_rows(Job *j, const char *sql, Buf *rows);
int job_copy_begin(Job *j, const char *sql);
int job_copy_flush(Buf *rows, void *ud);
int job_copy_end(Job *j);
/* Runs the loader over the chunk's byte range of the mapped file: the lane's
 * valid rows go to flush in pieces of about flush_at bytes, rejects (lane 0)
 * to rejects. 0 or flush's error. */
int job_load_rows(Job *j, Buf *rows, Buf *rejects, size_t flush_at, LoaderFlush flush);
/* A first load can copy rows as new without asking products about every
 * key: the file is an ingest file and the lookahead knows every key of the
 * chunk, so no key repeats within the file; whether products has any of them
 * already, each path checks on a sample. The copy runs under a savepoint:
 * job_new_rows_end releases it when r == 0, and on a unique violation (a key
 * there after all) rolls it back and returns -EEXIST with j->error cleared,
 * so the caller applies the rows the general way. */
bool job_may_copy_new_rows(const Job *j);
int job_new_rows_begin(Job *j);
int job_new_rows_end(Job *j, int r);
/* The reject reason of a row of an update file whose key products lacks. */
const char *job_unknown_reason(const Job *j);
/* Blocks until the lane's previous chunk has committed: 1 = go on, 0 = give
 * up (stop requested or the file failed), <0 = database error. */
int job_wait_predecessor(Job *j);

/* The two ways to apply the chunk inside the open transaction, once the file
 * is mapped and its header parsed. Both set the row sums (rows, distinct,
 * outranked, superseding, unknown), the phase times, and append rejects;
 * -ECANCELED when the wait gave up, other <0 for a failure to retry. */
int apply_in_batches(Job *j, Buf *rejects);
int apply_sorted(Job *j, Buf *rejects);
/* While products' key is deferred (j->bulk): the rows straight into products.
 * A chunk that cannot tell which rows to send builds the key (clearing
 * j->bulk, the rejects and the counts) and returns 0 for the caller to apply
 * it another way. */
int apply_bulk(Job *j, Buf *rejects);
