/* rejects.c - see rejects.h. */
#include "rejects.h"

#include <string.h>

static const char *const code_names[N_REJECT_CODES] = {
        [REJECT_FIELD_COUNT] = "field_count",
        [REJECT_QUOTE] = "quote",
        [REJECT_UTF8] = "utf8",
        [REJECT_NUL] = "nul",
        [REJECT_EMPTY_SKU] = "empty_sku",
        [REJECT_FIELD_TOO_LONG] = "field_too_long",
        [REJECT_UNKNOWN_SKU] = "unknown_sku",
        [REJECT_OTHER] = "other",
};

const char *reject_code_name(RejectCode code) { return code < N_REJECT_CODES ? code_names[code] : "other"; }

RejectCode reject_code_parse(const char *name)
{
        for (int i = 0; i < N_REJECT_CODES; i++)
                if (strcmp(name, code_names[i]) == 0)
                        return (RejectCode)i;
        return REJECT_OTHER;
}

RejectCode reject_code_of_csv(CsvError e)
{
        switch (e) {
        case CSV_ERR_UNTERMINATED_QUOTE:
        case CSV_ERR_BAD_QUOTE: return REJECT_QUOTE;
        case CSV_ERR_NUL: return REJECT_NUL;
        case CSV_ERR_UTF8: return REJECT_UTF8;
        case CSV_ERR_FIELD_TOO_LONG: return REJECT_FIELD_TOO_LONG;
        case CSV_ERR_TOO_MANY_FIELDS: return REJECT_FIELD_COUNT;
        case CSV_OK: break;
        }
        return REJECT_OTHER;
}
