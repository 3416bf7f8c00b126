/* rejects.h - why a row was rejected, as one of a fixed set of codes: stored
 * in ingest.rejects.code beside the sentence for people (reason), and the
 * reason label of ingestd_rejects_total. Dashboards and alerts rely on the
 * names; a new code is added at the end, before REJECT_OTHER. */
#pragma once
#include "csv.h"

typedef enum RejectCode {
        REJECT_FIELD_COUNT,    /* not as many fields as the header */
        REJECT_QUOTE,          /* an unterminated or stray quote */
        REJECT_UTF8,           /* invalid UTF-8 */
        REJECT_NUL,            /* a NUL byte */
        REJECT_EMPTY_SKU,      /* the sku is empty or blank */
        REJECT_FIELD_TOO_LONG, /* a field longer than limits.max_field */
        REJECT_UNKNOWN_SKU,    /* an update file's key that products does not have */
        REJECT_OTHER,          /* rows rejected before codes were recorded */
        N_REJECT_CODES
} RejectCode;

const char *reject_code_name(RejectCode code);
/* The code named `name`; REJECT_OTHER for a name not in the set. */
RejectCode reject_code_parse(const char *name);
/* The code of a record's CSV error (not CSV_OK). */
RejectCode reject_code_of_csv(CsvError e);
