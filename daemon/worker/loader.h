/* loader.h - turns the records of one chunk into COPY text rows for the
 * staging table and for ingest.rejects. Pure: no database, no logging. */
#pragma once
#include "lookahead.h"
#include "planner.h"
#include "rejects.h"
#include "util.h"

#include <stdint.h>

#define REJECT_RAW_MAX 4096

typedef struct LoadCounts {
        uint64_t rows;       /* valid rows sent to staging */
        uint64_t rejected;   /* rows sent to rejects */
        uint64_t superseded; /* rows not sent: a later row of the file has their key */
        uint64_t uncertain;  /* of rows, those that went to in->uncertain */
} LoadCounts;

/* Called whenever the staging buffer holds at least `flush_at` bytes and at
 * the end; it must consume (and may reset) the buffer. Returns 0 or -errno. */
typedef int (*LoaderFlush)(Buf *rows, void *ud);

typedef struct LoaderInput {
        const char *map;     /* the file image */
        uint64_t start, end; /* chunk byte range */
        uint64_t first_line;
        const Header *header;
        uint64_t max_field;
        int64_t file_id;
        int chunk_no;
        unsigned lane, lanes; /* this chunk takes the rows whose key hashes to lane */
        KeyMode key;
        const Lookahead *later; /* where keys occur last (loader_note_keys), or NULL */
        uint64_t file_end;      /* the end of the file's data, for checking a later row */
        Buf *uncertain;         /* with later: rows the lookahead cannot rule out a later row for go here */
        size_t uncertain_max;   /* ... and past this many bytes loader_run stops with -ENOSPC */
} LoaderInput;

/* Only rows of in->lane are staged; rejects belong to lane 0, so that every
 * record is counted by exactly one chunk of its byte range. With in->later,
 * a row whose key occurs again further on in the file is counted superseded
 * and not staged; with in->uncertain, a row whose key the lookahead could not
 * rule out further on (no room in its table, or two keys sharing an entry)
 * goes there instead of to rows (it is counted in rows).
 * Staging rows are "sku\tname\tdescription\tline\toffset\n" (absent columns as \N);
 * reject rows are "file_id\tchunk\tline\toffset\treason\traw-as-bytea\n". */
int loader_run(
        const LoaderInput *in, Buf *rows, Buf *rejects, size_t flush_at, LoaderFlush flush, void *ud, LoadCounts *ret);

/* Fills la for the chunk: the keys of its lane's valid rows in [start, end)
 * and, for those keys, the offsets where they occur again in [end, file_end). */
void loader_note_keys(const LoaderInput *in, Lookahead *la);

/* The lane (0..lanes-1) of a sku field: a hash of its value (doubled quotes
 * of a quoted field count once), so equal skus always share a lane. */
unsigned loader_lane(const char *p, size_t n, bool quoted, unsigned lanes);

/* Appends one reject row (raw may be NULL): the columns of LOADER_REJECTS_COPY. */
void loader_add_reject(Buf *rejects, int64_t file_id, int chunk_no, uint64_t line, uint64_t offset, RejectCode code,
        const char *reason, const char *raw, size_t raw_len);
#define LOADER_REJECTS_COPY "COPY ingest.rejects (file_id, chunk_no, line, byte_offset, code, reason, raw) FROM STDIN"

/* COPY text escaping of p[0, n) (also undoes CSV's doubled quotes when quoted). */
void copy_text_put(Buf *b, const char *p, size_t n, bool quoted);
/* True when COPY text esc[0, elen) stands for plain[0, plen). */
bool copy_text_equal(const char *esc, size_t elen, const char *plain, size_t plen);
/* One byte of COPY text at *p (an escape counts as one); advances *p. */
char copy_text_next(const char **p);
