/* csv.h - RFC 4180 record scanner over a memory buffer. It knows byte offsets
 * and line numbers of every record, which chunking and reject reports need.
 * Fields point into the buffer (no copies); quoted fields still hold their
 * doubled quotes, csv_field_unescape() removes them. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CSV_MAX_FIELDS 256

typedef enum CsvError {
        CSV_OK = 0,
        CSV_ERR_UNTERMINATED_QUOTE,
        CSV_ERR_BAD_QUOTE, /* quote inside an unquoted field, or text after a closing quote */
        CSV_ERR_NUL,
        CSV_ERR_UTF8,
        CSV_ERR_FIELD_TOO_LONG,
        CSV_ERR_TOO_MANY_FIELDS,
} CsvError;

typedef struct CsvField {
        const char *ptr; /* contents; for quoted fields without the outer quotes */
        size_t len;
        bool quoted;
} CsvField;

typedef struct CsvRecord {
        uint64_t offset; /* absolute offset of the first byte */
        uint64_t line;   /* line number of the first byte, 1-based */
        size_t len;      /* bytes, terminator included */
        size_t n_fields; /* may exceed CSV_MAX_FIELDS when error is TOO_MANY_FIELDS */
        const CsvField *fields;
        CsvError error; /* first error found in the record */
        bool blank;     /* an empty line: no data */
} CsvRecord;

typedef struct CsvReader {
        const char *buf, *pos, *end;
        uint64_t base_offset;
        uint64_t line;
        size_t max_field;
        bool skip_utf8; /* leave UTF-8 unchecked (set after init; see csv_record_utf8) */
        CsvField fields[CSV_MAX_FIELDS];
} CsvReader;

/* buf[0] is at absolute offset base_offset, on line first_line. */
void csv_reader_init(
        CsvReader *r, const char *buf, size_t len, uint64_t base_offset, uint64_t first_line, size_t max_field);
/* Next record, or false at the end of the buffer. */
bool csv_next(CsvReader *r, CsvRecord *rec);
/* True when every field of rec is valid UTF-8: the check a reader with
 * skip_utf8 left out, for the few records that turn out to matter. */
bool csv_record_utf8(const CsvRecord *rec);
/* Offset (absolute) of the next unread byte. */
uint64_t csv_reader_offset(const CsvReader *r);

const char *csv_error_str(CsvError e);
/* Copies f into out (at least f->len bytes), turning "" into ". Returns the length. */
size_t csv_field_unescape(const CsvField *f, char *out);
/* True when the two fields hold the same text (quoting aside). */
bool csv_field_equal(const CsvField *a, const CsvField *b);
/* Feeds the text of f (quoting aside) to a 64-bit FNV-1a hash h. */
uint64_t csv_field_hash(const CsvField *f, uint64_t h);
