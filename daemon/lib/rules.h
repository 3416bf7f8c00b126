/* rules.h - the rules every apply path and the key build share, each defined
 * once: the version rule, the recount threshold of products_agg, the sample
 * a first load probes.
 *
 * The version rule: every row carries (file_seq, line), the file's arrival
 * number and the row's line; a row replaces products' row of its key only when
 * products' version is older. So chunks may apply in any order and be retried
 * any number of times, and the table is the one a sequential load gives. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* A number of this file as SQL text, from its one definition. */
#define RULE_TEXT(x) RULE_TEXT_(x)
#define RULE_TEXT_(x) #x

/* SQL: products' row `p` is older than the version (seq, line). */
#define SQL_OLDER(p, seq, line) "(" p ".file_seq, " p ".line) < (" seq ", " line ")"

/* The same rule in C, for the batch path's rows against what products holds. */
static inline bool version_older(int64_t seq, uint64_t line, int64_t than_seq, uint64_t than_line)
{
        return seq < than_seq || (seq == than_seq && line < than_line);
}

/* A chunk that changes more than this share of products' estimated rows asks
 * for a recount of products_agg rather than recording per-name deltas (the
 * deltas would cost more than the count). */
#define AGG_RECOUNT_SHARE 0.1
#define AGG_RECOUNT_SHARE_SQL RULE_TEXT(AGG_RECOUNT_SHARE)

/* Keys of a batch probed before its rows are copied as new on a first load:
 * none of them in products says the rows are new. */
#define SAMPLE_KEYS 16
