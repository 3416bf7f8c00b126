/* lookahead.c - see lookahead.h. Open addressing with linear probing; an
 * entry is 8 bytes (40-bit offset, 24-bit tag), so 16 MiB hold ~1.5M keys at
 * the 3/4 fill the table stops at. */
#include "lookahead.h"
#include "util.h"

#include <stdlib.h>

#define TAG_BITS 24
#define TAG_MASK ((UINT64_C(1) << TAG_BITS) - 1)

void lookahead_init(Lookahead *la, size_t keys, size_t max_bytes)
{
        size_t slots = 16;

        while (slots < keys + keys / 3 && slots * 2 * sizeof(uint64_t) <= max_bytes)
                slots *= 2;
        *la = (Lookahead){ .slot = xcalloc(slots, sizeof(uint64_t)), .mask = slots - 1, .max_used = slots / 4 * 3 };
}

size_t lookahead_capacity(size_t max_bytes)
{
        size_t slots = 16;

        while (slots * 2 * sizeof(uint64_t) <= max_bytes)
                slots *= 2;
        return slots / 4 * 3;
}

void lookahead_free(Lookahead *la)
{
        free(la->slot);
        *la = (Lookahead){ 0 };
}

/* The slot holding the hash's tag, or the empty slot that ends its run. */
static uint64_t *find(const Lookahead *la, uint64_t hash)
{
        uint64_t tag = hash >> (64 - TAG_BITS);

        for (size_t i = hash & la->mask;; i = (i + 1) & la->mask)
                if (la->slot[i] == 0 || (la->slot[i] & TAG_MASK) == tag)
                        return &la->slot[i];
}

void lookahead_note(Lookahead *la, uint64_t hash, uint64_t offset, bool add)
{
        if (offset == 0 || offset > LOOKAHEAD_MAX_OFFSET) {
                la->incomplete = true;
                return;
        }
        uint64_t *s = find(la, hash);
        if (*s == 0) {
                if (!add)
                        return;
                if (la->used == la->max_used) {
                        la->incomplete = true;
                        return;
                }
                la->used++;
        } else if (*s >> TAG_BITS >= offset) {
                return;
        }
        *s = offset << TAG_BITS | hash >> (64 - TAG_BITS);
}

uint64_t lookahead_last(const Lookahead *la, uint64_t hash) { return *find(la, hash) >> TAG_BITS; }
