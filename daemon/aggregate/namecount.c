/* namecount.c - see namecount.h. Linear probing on a 64-bit FNV-1a hash; the
 * table doubles at half full and the names live in one growing buffer, so a
 * name costs its length plus at most 48 bytes of slots. */
#include "namecount.h"
#include "csv.h"

#include <stdlib.h>
#include <string.h>

#define FIRST_SLOTS 1024
#define FIRST_NAMES 4096     /* buf_reserve's first size */
#define NAMES_MAX UINT32_MAX /* offsets are 32-bit */

static size_t slot_bytes(size_t slots) { return slots * sizeof(NameSlot); }

void namecount_init(NameCount *nc, size_t max_bytes, size_t expected)
{
        size_t slots = FIRST_SLOTS;

        while (slots < 2 * expected && slot_bytes(slots * 2) <= max_bytes / 2)
                slots *= 2;
        *nc = (NameCount){ .slot = xcalloc(slots, sizeof(NameSlot)), .mask = slots - 1, .max_bytes = max_bytes };
        buf_reserve(&nc->names, FIRST_NAMES); /* never NULL, even for empty names only */
}

void namecount_free(NameCount *nc)
{
        free(nc->slot);
        buf_free(&nc->names);
        *nc = (NameCount){ 0 };
}

static NameSlot *find(const NameCount *nc, uint64_t hash, const char *name, size_t len)
{
        for (size_t i = hash & nc->mask;; i = (i + 1) & nc->mask) {
                NameSlot *s = &nc->slot[i];
                if (s->count == 0 ||
                        (s->hash == hash && s->len == len && memcmp(nc->names.data + s->off, name, len) == 0))
                        return s;
        }
}

static void grow_table(NameCount *nc)
{
        size_t slots = (nc->mask + 1) * 2;
        NameSlot *old = nc->slot, *end = old + nc->mask + 1;

        nc->slot = xcalloc(slots, sizeof(NameSlot));
        nc->mask = slots - 1;
        for (NameSlot *s = old; s < end; s++)
                if (s->count) {
                        size_t i = s->hash & nc->mask;
                        while (nc->slot[i].count)
                                i = (i + 1) & nc->mask;
                        nc->slot[i] = *s;
                }
        free(old);
}

/* Whether a new name of len bytes fits: the slots after a doubling that it
 * may cause, and the name buffer after the growth that it may cause. */
static bool room_for(const NameCount *nc, size_t len)
{
        size_t slots = nc->mask + 1, names = nc->names.cap;

        if ((nc->used + 1) * 2 > slots)
                slots *= 2;
        while (names < nc->names.len + len)
                names *= 2;
        return nc->names.len + len <= NAMES_MAX && slot_bytes(slots) + names <= nc->max_bytes;
}

uint64_t namecount_hash(const char *name, size_t len)
{
        return csv_field_hash(&(CsvField){ name, len, false }, 14695981039346656037u);
}

void namecount_prefetch(const NameCount *nc, uint64_t hash) { __builtin_prefetch(&nc->slot[hash & nc->mask]); }

bool namecount_add(NameCount *nc, const char *name, size_t len, uint64_t hash)
{
        NameSlot *s = find(nc, hash, name, len);

        if (s->count) {
                s->count++;
                return true;
        }
        if (!room_for(nc, len))
                return false;
        if ((nc->used + 1) * 2 > nc->mask + 1) {
                grow_table(nc);
                s = find(nc, hash, name, len);
        }
        *s = (NameSlot){ hash, (uint32_t)nc->names.len, (uint32_t)len, 1 };
        buf_append(&nc->names, name, len);
        nc->used++;
        return true;
}

bool namecount_put(const NameCount *nc, size_t *pos, Buf *out, size_t fill)
{
        for (; *pos <= nc->mask && out->len < fill; (*pos)++) {
                const NameSlot *s = &nc->slot[*pos];
                if (s->count == 0)
                        continue;
                buf_append(out, nc->names.data + s->off, s->len);
                buf_append(out, "\t", 1);
                buf_append_u64(out, s->count);
                buf_append(out, "\n", 1);
        }
        return *pos <= nc->mask;
}
