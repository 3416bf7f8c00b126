/* batch.c - see batch.h. Memory is the batch's index (one BatchRow per row,
 * pointing into the caller's text) and, while classifying, a hash table of the
 * existing rows: both bounded by the batch size the worker chooses. */
#include "batch.h"
#include "loader.h"
#include "rules.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *parse_field(const char *p, const char *end, char sep, Field *f)
{
        const char *e = memchr(p, sep, (size_t)(end - p));

        if (!e)
                return NULL;
        bool null = e - p == 2 && p[0] == '\\' && p[1] == 'N';
        *f = (Field){ null ? NULL : p, null ? 0 : (size_t)(e - p) };
        return e + 1;
}

static const char *parse_number(const char *p, const char *end, char sep, uint64_t *v)
{
        Field f;
        const char *next = parse_field(p, end, sep, &f);

        if (!next || !f.p || f.len == 0)
                return NULL;
        *v = 0;
        for (size_t i = 0; i < f.len; i++) {
                if (f.p[i] < '0' || f.p[i] > '9')
                        return NULL;
                *v = *v * 10 + (uint64_t)(f.p[i] - '0');
        }
        return next;
}

int batch_index(Batch *b, const char *text, size_t len)
{
        const char *p = text, *end = text + len;

        while (p < end) {
                if (b->n == b->cap) {
                        b->cap = b->cap ? b->cap * 2 : 1024;
                        b->rows = xrealloc(b->rows, b->cap * sizeof *b->rows);
                }
                BatchRow *r = &b->rows[b->n];
                *r = (BatchRow){ .existing = -1, .fate = FATE_UNCHANGED };
                for (int c = 0; c < N_COLUMNS && p; c++)
                        p = parse_field(p, end, '\t', &r->col[c]);
                if (p)
                        p = parse_number(p, end, '\t', &r->line);
                if (p)
                        p = parse_number(p, end, '\n', &r->offset);
                if (!p || !r->col[COL_SKU].p)
                        return -EINVAL;
                b->n++;
        }
        return 0;
}

static int field_cmp(const Field *a, const Field *b)
{
        size_t n = a->len < b->len ? a->len : b->len;
        int c = n ? memcmp(a->p, b->p, n) : 0;

        return c ? c : (a->len > b->len) - (a->len < b->len);
}

static int line_cmp(const BatchRow *a, const BatchRow *b) { return (a->line > b->line) - (a->line < b->line); }

/* Escaped bytes order the keys; equal escaped text is equal text, which is
 * all the de-duplication needs. */
/* A row to sort by reference (see batch_dedup). */
typedef struct RowRef {
        BatchRow *row;
} RowRef;

static int cmp_sku(const void *x, const void *y)
{
        const BatchRow *a = ((const RowRef *)x)->row, *b = ((const RowRef *)y)->row;
        int c = field_cmp(&a->col[COL_SKU], &b->col[COL_SKU]);

        return c ? c : line_cmp(a, b);
}

static int cmp_sku_name(const void *x, const void *y)
{
        const BatchRow *a = ((const RowRef *)x)->row, *b = ((const RowRef *)y)->row;
        int c = field_cmp(&a->col[COL_SKU], &b->col[COL_SKU]);

        if (c == 0)
                c = field_cmp(&a->col[COL_NAME], &b->col[COL_NAME]);
        return c ? c : line_cmp(a, b);
}

static bool same_key(const BatchRow *a, const BatchRow *b, KeyMode key)
{
        return field_cmp(&a->col[COL_SKU], &b->col[COL_SKU]) == 0 &&
               (key == KEY_SKU || field_cmp(&a->col[COL_NAME], &b->col[COL_NAME]) == 0);
}

void batch_dedup(Batch *b, KeyMode key)
{
        if (b->n == 0)
                return;
        /* pointers are sorted, then the rows moved once: qsort moving the
         * rows themselves spent more time in memmove than in comparing */
        RowRef *order = xmalloc(b->n * sizeof *order);
        BatchRow *sorted = xmalloc(b->cap * sizeof *sorted);
        for (size_t i = 0; i < b->n; i++)
                order[i].row = &b->rows[i];
        qsort(order, b->n, sizeof *order, key == KEY_SKU ? cmp_sku : cmp_sku_name);
        for (size_t i = 0; i < b->n; i++)
                sorted[i] = *order[i].row;
        free(order);
        free(b->rows);
        b->rows = sorted;
        for (size_t i = 0; i + 1 < b->n; i++)
                if (same_key(&b->rows[i], &b->rows[i + 1], key))
                        b->rows[i].fate = FATE_DUPLICATE;
}

void batch_probe_keys(const Batch *b, size_t max_keys, Buf *out)
{
        const Field *last = NULL; /* rows are sorted: equal skus are neighbours */
        size_t step = max_keys && b->n > max_keys ? (b->n + max_keys - 1) / max_keys : 1;

        out->len = 0;
        for (size_t i = 0; i < b->n; i += step) {
                const Field *sku = &b->rows[i].col[COL_SKU];
                if (last && field_cmp(sku, last) == 0)
                        continue;
                buf_append(out, last ? "," : "{", 1);
                last = sku;
                buf_reserve(out, sku->len * 2 + 2);
                out->data[out->len++] = '"';
                for (const char *p = sku->p; p < sku->p + sku->len;) {
                        char c = copy_text_next(&p);
                        if (c == '"' || c == '\\')
                                out->data[out->len++] = '\\';
                        out->data[out->len++] = c;
                }
                out->data[out->len++] = '"';
        }
        buf_append(out, last ? "}" : "{}", last ? 2 : 3); /* with the NUL */
}

/* FNV-1a of the text a field stands for; escaped says how to read it. */
static uint32_t field_hash(const Field *f, bool escaped)
{
        uint32_t h = 2166136261u;

        for (const char *p = f->p, *end = f->p + f->len; p < end;) {
                char c = escaped ? copy_text_next(&p) : *p++;
                h = (h ^ (unsigned char)c) * 16777619u;
        }
        return h;
}

static bool field_equal(const Field *esc, const Field *plain)
{
        if (!esc->p || !plain->p)
                return !esc->p && !plain->p;
        return copy_text_equal(esc->p, esc->len, plain->p, plain->len);
}

typedef struct Index {
        long *slot; /* existing row + 1, 0 = empty */
        size_t mask;
} Index;

static Index index_existing(const Existing *ex, size_t n)
{
        size_t cap = 16;

        while (cap < n * 2)
                cap *= 2;
        Index ix = { xcalloc(cap, sizeof *ix.slot), cap - 1 };
        for (size_t i = 0; i < n; i++) {
                size_t s = field_hash(&ex[i].col[COL_SKU], false) & ix.mask;
                while (ix.slot[s])
                        s = (s + 1) & ix.mask;
                ix.slot[s] = (long)i + 1;
        }
        return ix;
}

static long find_existing(const Index *ix, const Existing *ex, const BatchRow *r, KeyMode key)
{
        for (size_t s = field_hash(&r->col[COL_SKU], true) & ix->mask; ix->slot[s]; s = (s + 1) & ix->mask) {
                const Existing *e = &ex[ix->slot[s] - 1];
                if (field_equal(&r->col[COL_SKU], &e->col[COL_SKU]) &&
                        (key == KEY_SKU || field_equal(&r->col[COL_NAME], &e->col[COL_NAME])))
                        return ix->slot[s] - 1;
        }
        return -1;
}

/* Does the row change what products holds? Ingest files write name and
 * description; update files the header's columns (never the key's name). */
static bool changes(const BatchRow *r, const Existing *e, const BatchRules *rules)
{
        bool name = rules->kind == KIND_INGEST || (rules->set[COL_NAME] && rules->key == KEY_SKU);
        bool desc = rules->kind == KIND_INGEST || rules->set[COL_DESCRIPTION];

        return (name && !field_equal(&r->col[COL_NAME], &e->col[COL_NAME])) ||
               (desc && !field_equal(&r->col[COL_DESCRIPTION], &e->col[COL_DESCRIPTION]));
}

static RowFate fate_of(BatchRow *r, const Existing *ex, const BatchRules *rules)
{
        if (r->existing < 0)
                return rules->kind == KIND_INGEST ? FATE_INSERT : FATE_UNKNOWN;
        const Existing *e = &ex[r->existing];
        if (!version_older(e->file_seq, (uint64_t)e->line, rules->file_seq, r->line))
                return FATE_OUTRANKED;
        r->superseding = e->file_seq == rules->file_seq;
        return changes(r, e, rules) ? FATE_UPDATE : FATE_UNCHANGED;
}

void batch_classify(Batch *b, const Existing *ex, size_t n_ex, const BatchRules *rules, BatchCounts *ret)
{
        Index ix = index_existing(ex, n_ex);
        BatchCounts n = { 0 };
        RowFate kept = FATE_UNCHANGED;

        /* backwards: a key's duplicates come right before its kept row, and
         * share its fate when that is unknown (each of them is a reject) */
        for (size_t i = b->n; i-- > 0;) {
                BatchRow *r = &b->rows[i];
                if (r->fate == FATE_DUPLICATE) {
                        if (kept == FATE_UNKNOWN)
                                r->fate = FATE_UNKNOWN;
                } else {
                        r->existing = find_existing(&ix, ex, r, rules->key);
                        kept = r->fate = fate_of(r, ex, rules);
                        n.distinct += kept != FATE_UNKNOWN;
                        n.outranked += kept == FATE_OUTRANKED;
                        n.superseding += r->superseding;
                        n.inserts += kept == FATE_INSERT;
                        n.updates += kept == FATE_UPDATE;
                }
                n.unknown += r->fate == FATE_UNKNOWN;
        }
        n.rows = b->n - n.unknown;
        free(ix.slot);
        *ret = n;
}

static void put_field(Buf *out, const Field *f, char sep)
{
        if (f->p)
                buf_append(out, f->p, f->len);
        else
                buf_append(out, "\\N", 2);
        buf_append(out, &sep, 1);
}

static void put_int(Buf *out, int64_t v, char sep)
{
        buf_append_u64(out, (uint64_t)v); /* ids and lines are never negative */
        buf_append(out, &sep, 1);
}

void batch_put_inserts(const Batch *b, int64_t file_seq, Buf *out)
{
        for (size_t i = 0; i < b->n; i++) {
                const BatchRow *r = &b->rows[i];
                if (r->fate != FATE_INSERT)
                        continue;
                for (int c = 0; c < N_COLUMNS; c++)
                        put_field(out, &r->col[c], '\t');
                put_int(out, file_seq, '\t');
                put_int(out, (int64_t)r->line, '\n');
        }
}

void batch_put_updates(const Batch *b, Buf *out)
{
        for (size_t i = 0; i < b->n; i++) {
                const BatchRow *r = &b->rows[i];
                if (r->fate != FATE_UPDATE)
                        continue;
                for (int c = 0; c < N_COLUMNS; c++)
                        put_field(out, &r->col[c], '\t');
                put_int(out, (int64_t)r->line, '\n');
        }
}

size_t batch_put_deltas(const Batch *b, const Existing *ex, const BatchRules *rules, Buf *out)
{
        bool renames = rules->key == KEY_SKU && (rules->kind == KIND_INGEST || rules->set[COL_NAME]);
        size_t n = 0;

        for (size_t i = 0; i < b->n; i++) {
                const BatchRow *r = &b->rows[i];
                if (r->fate == FATE_INSERT) {
                        put_field(out, &r->col[COL_NAME], '\t');
                        buf_append(out, "1\n", 2);
                        n++;
                } else if (r->fate == FATE_UPDATE && renames &&
                           !field_equal(&r->col[COL_NAME], &ex[r->existing].col[COL_NAME])) {
                        const Field *old = &ex[r->existing].col[COL_NAME];
                        copy_text_put(out, old->p, old->len, false);
                        buf_append(out, "\t-1\n", 4);
                        put_field(out, &r->col[COL_NAME], '\t');
                        buf_append(out, "1\n", 2);
                        n += 2;
                }
        }
        return n;
}

void batch_clear(Batch *b) { b->n = 0; }

void batch_free(Batch *b)
{
        free(b->rows);
        *b = (Batch){ 0 };
}
