/* planner.h - file -> plan: the header's column map, the data row count, the
 * file's SHA-256, and byte ranges of about range_size bytes that start and end on
 * record boundaries. */
#pragma once
#include "config.h"

#include <stdint.h>

typedef enum Column { COL_SKU, COL_NAME, COL_DESCRIPTION, N_COLUMNS } Column;
extern const char *const column_names[N_COLUMNS];

typedef enum FileKind { KIND_INGEST, KIND_UPDATE } FileKind;
const char *file_kind_name(FileKind k);

#define HEADER_MAX_BYTES (1u << 20)

typedef struct Header {
        size_t n_fields;
        int index[N_COLUMNS]; /* field position of each column, -1 when absent */
        uint64_t data_offset; /* first byte after the header record */
        uint64_t data_line;   /* line number of the first data record */
} Header;

/* Parses and checks the header at the start of the file image buf (a UTF-8 BOM
 * is skipped). On error returns -EINVAL with a message in *ret_error. */
int header_parse(const char *buf, size_t len, FileKind kind, KeyMode key, Header *ret, char **ret_error);

typedef struct ByteRange {
        uint64_t start, end, first_line;
} ByteRange;

typedef struct Plan {
        Header header;
        uint64_t size;
        uint64_t data_rows; /* non-blank records after the header */
        char sha256[65];
        ByteRange *ranges;
        size_t n_ranges;
} Plan;

/* Called about every 4 MiB scanned with the bytes done and the file size, so
 * the plan child can show its progress on huge files. */
typedef void (*PlanProgress)(uint64_t done, uint64_t size, void *ud);

/* Plans the regular file open at fd. -EINVAL with *ret_error for a file that
 * cannot load (empty, binary, bad header, no data rows); -errno for I/O errors.
 * progress may be NULL. */
int planner_plan(int fd, FileKind kind, KeyMode key, uint64_t range_size, PlanProgress progress, void *ud, Plan *ret,
        char **ret_error);
void plan_done(Plan *p);
