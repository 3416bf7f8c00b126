/* batch.h - one batch of a chunk's rows, held in memory and matched against
 * the rows products already has for their keys. The rows are COPY text as the
 * loader writes them; they are sorted by key, the last row of each key is
 * kept (the file's order decides), and each kept row gets its fate: insert,
 * update, unchanged, outranked by a newer version, or unknown (update files
 * do not insert). The worker then sends products only what changes. Pure: no
 * database; the rows products has come in as plain (unescaped) text. */
#pragma once
#include "config.h"
#include "planner.h"
#include "util.h"

#include <stdbool.h>
#include <stdint.h>

/* A field: COPY text in a batch row, plain text in an existing row; p is NULL
 * for SQL NULL. */
typedef struct Field {
        const char *p;
        size_t len;
} Field;

typedef enum RowFate {
        FATE_DUPLICATE, /* a later row of the batch has the same key */
        FATE_INSERT,
        FATE_UPDATE,
        FATE_UNCHANGED,
        FATE_OUTRANKED, /* products holds a newer version */
        FATE_UNKNOWN,   /* update file, key not in products: a reject */
} RowFate;

typedef struct BatchRow {
        Field col[N_COLUMNS];
        uint64_t line, offset;
        long existing; /* index of the matching existing row, -1 */
        RowFate fate;
        bool superseding; /* replaces a row an earlier batch or chunk of this file wrote */
} BatchRow;

/* A row of products, as the probe returned it. */
typedef struct Existing {
        Field col[N_COLUMNS];
        int64_t file_seq, line;
} Existing;

typedef struct Batch {
        BatchRow *rows;
        size_t n, cap;
} Batch;

typedef struct BatchRules {
        int64_t file_seq; /* the file's id: versions rows with the line */
        FileKind kind;
        KeyMode key;
        bool set[N_COLUMNS]; /* columns an update writes (the header's) */
} BatchRules;

typedef struct BatchCounts {
        uint64_t rows; /* rows of the batch, unknown ones excepted */
        uint64_t distinct, outranked, superseding, unknown;
        uint64_t inserts, updates;
} BatchCounts;

/* Indexes the rows "sku\tname\tdescription\tline\toffset\n" of text[0, len);
 * the batch points into text. Returns -EINVAL on a malformed row. */
int batch_index(Batch *b, const char *text, size_t len);
/* Sorts by key, then line, and marks all but the last row of a key. */
void batch_dedup(Batch *b, KeyMode key);
/* The distinct skus as a text[] literal, for the probe; with max_keys > 0 at
 * most that many, spread evenly over the batch (a sample). */
void batch_probe_keys(const Batch *b, size_t max_keys, Buf *out);
/* Gives each kept row its fate against the rows products has. */
void batch_classify(Batch *b, const Existing *ex, size_t n_ex, const BatchRules *r, BatchCounts *ret);

/* COPY text rows for: inserts into products (sku, name, description,
 * file_seq, line); the staged updates (sku, name, description, line); per-name
 * products_agg changes (name, delta): +1 for an insert, -1/+1 for a rename. */
void batch_put_inserts(const Batch *b, int64_t file_seq, Buf *out);
void batch_put_updates(const Batch *b, Buf *out);
size_t batch_put_deltas(const Batch *b, const Existing *ex, const BatchRules *r, Buf *out);

void batch_clear(Batch *b);
void batch_free(Batch *b);
