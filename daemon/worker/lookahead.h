/* lookahead.h - where each key of a chunk occurs last in the rest of its file.
 * A row whose key occurs again further on is superseded by that later row,
 * whatever products holds, so the worker does not send it: a first load then
 * writes each key once and never updates a row it wrote itself. The table
 * keeps, per key hash, the largest offset seen; a hit is only a hint, which
 * the loader confirms by comparing the keys of the two records, so a hash
 * collision can never drop a row. Memory is fixed when the table is made;
 * keys that find no room are simply not known (their rows are sent and the
 * later row updates them, as without a lookahead). Pure, no I/O. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Offsets beyond this are not recorded (1 TiB files). */
#define LOOKAHEAD_MAX_OFFSET ((UINT64_C(1) << 40) - 1)

typedef struct Lookahead {
        uint64_t *slot; /* offset << 24 | 24 bits of the hash; 0 = empty */
        size_t mask, used, max_used;
        bool incomplete; /* some key found no room: not every later row is known */
} Lookahead;

/* The memory of a worker's table: ~1.5M keys, a 10M-row file's chunk at the
 * default max_ranges. */
#define LOOKAHEAD_BYTES (16u << 20)

/* A table for about `keys` keys, at most max_bytes of memory. */
void lookahead_init(Lookahead *la, size_t keys, size_t max_bytes);
void lookahead_free(Lookahead *la);
/* Records that a key with this hash occurs at offset: a new entry when add
 * is true, otherwise only raises the offset of a key already present. */
void lookahead_note(Lookahead *la, uint64_t hash, uint64_t offset, bool add);
/* The largest offset noted for the hash, 0 when none. */
uint64_t lookahead_last(const Lookahead *la, uint64_t hash);
/* The most keys a table of at most max_bytes holds. */
size_t lookahead_capacity(size_t max_bytes);
