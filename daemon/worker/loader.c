/* loader.c - validation and COPY text encoding of one chunk. A record is
 * either a staging row or a reject, never both and never neither (blank lines
 * are not data), which is what "loaded + rejected + superseded = data rows"
 * rests on. Buffers grow to about flush_at for rows and, for rejects, to the
 * size of the rejected records (capped at REJECT_RAW_MAX each). */
#include "loader.h"
#include "csv.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define DROP_BEHIND (8u << 20)

void copy_text_put(Buf *b, const char *p, size_t n, bool quoted)
{
        buf_reserve(b, n * 2 + 1);
        char *o = b->data + b->len;
        for (size_t i = 0; i < n; i++) {
                char c = p[i];
                switch (c) {
                case '\\':
                        *o++ = '\\';
                        *o++ = '\\';
                        break;
                case '\n':
                        *o++ = '\\';
                        *o++ = 'n';
                        break;
                case '\r':
                        *o++ = '\\';
                        *o++ = 'r';
                        break;
                case '\t':
                        *o++ = '\\';
                        *o++ = 't';
                        break;
                case '"':
                        *o++ = c;
                        if (quoted && i + 1 < n && p[i + 1] == '"')
                                i++;
                        break;
                default: *o++ = c;
                }
        }
        b->len = (size_t)(o - b->data);
}

char copy_text_next(const char **p)
{
        char c = *(*p)++;

        if (c != '\\')
                return c;
        c = *(*p)++;
        return c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : c;
}

bool copy_text_equal(const char *esc, size_t elen, const char *plain, size_t plen)
{
        const char *e = esc, *end = esc + elen;
        size_t i = 0;

        while (e < end && i < plen)
                if (copy_text_next(&e) != plain[i++])
                        return false;
        return e == end && i == plen;
}

static void put_char(Buf *b, char c) { buf_append(b, &c, 1); }

static void put_number(Buf *b, uint64_t v, char sep)
{
        buf_append_u64(b, v);
        put_char(b, sep);
}

void loader_add_reject(Buf *rejects, int64_t file_id, int chunk_no, uint64_t line, uint64_t offset, RejectCode code,
        const char *reason, const char *raw, size_t raw_len)
{
        static const char hex[] = "0123456789abcdef";

        put_number(rejects, (uint64_t)file_id, '\t');
        put_number(rejects, (uint64_t)chunk_no, '\t');
        put_number(rejects, line, '\t');
        put_number(rejects, offset, '\t');
        buf_append(rejects, reject_code_name(code), strlen(reject_code_name(code)));
        put_char(rejects, '\t');
        copy_text_put(rejects, reason, strlen(reason), false);
        put_char(rejects, '\t');
        if (!raw) {
                buf_append(rejects, "\\N\n", 3);
                return;
        }
        if (raw_len > REJECT_RAW_MAX)
                raw_len = REJECT_RAW_MAX;
        buf_reserve(rejects, raw_len * 2 + 4);
        buf_append(rejects, "\\\\x", 3);
        for (size_t i = 0; i < raw_len; i++) {
                unsigned char c = (unsigned char)raw[i];
                rejects->data[rejects->len++] = hex[c >> 4];
                rejects->data[rejects->len++] = hex[c & 15];
        }
        put_char(rejects, '\n');
}

static bool blank_text(const CsvField *f)
{
        for (size_t i = 0; i < f->len; i++)
                if (f->ptr[i] != ' ' && f->ptr[i] != '\t')
                        return false;
        return true;
}

/* Why the record cannot load, or NULL when it can. */
static const char *record_problem(const CsvRecord *rec, const Header *h, char *tmp, size_t n, RejectCode *code)
{
        if (rec->error != CSV_OK) {
                *code = reject_code_of_csv(rec->error);
                return csv_error_str(rec->error);
        }
        if (rec->n_fields != h->n_fields) {
                *code = REJECT_FIELD_COUNT;
                snprintf(tmp, n, "expected %zu fields, found %zu", h->n_fields, rec->n_fields);
                return tmp;
        }
        *code = REJECT_EMPTY_SKU;
        return blank_text(&rec->fields[h->index[COL_SKU]]) ? "empty sku" : NULL;
}

unsigned loader_lane(const char *p, size_t n, bool quoted, unsigned lanes)
{
        uint32_t h = 2166136261u; /* FNV-1a */

        if (lanes <= 1)
                return 0;
        for (size_t i = 0; i < n; i++) {
                h = (h ^ (unsigned char)p[i]) * 16777619u;
                if (quoted && p[i] == '"' && i + 1 < n && p[i + 1] == '"')
                        i++;
        }
        return h % lanes;
}

static void put_row(Buf *b, const CsvRecord *rec, const Header *h)
{
        for (int c = 0; c < N_COLUMNS; c++) {
                int i = h->index[c];
                if (i < 0)
                        buf_append(b, "\\N", 2);
                else
                        copy_text_put(b, rec->fields[i].ptr, rec->fields[i].len, rec->fields[i].quoted);
                put_char(b, '\t');
        }
        put_number(b, rec->line, '\t');
        put_number(b, rec->offset, '\n');
}

/* A pass over [from, to) of the file that yields what a chunk of in->lane
 * counts: the lane's valid rows and, in lane 0, the bad records (why set). */
typedef struct Pass {
        const LoaderInput *in;
        CsvReader *r;
        uint64_t dropped;
        char tmp[96];
        RejectCode code; /* of the last record with a problem */
} Pass;

static void pass_init(Pass *p, const LoaderInput *in, uint64_t from, uint64_t to, uint64_t first_line)
{
        *p = (Pass){ .in = in, .r = xmalloc(sizeof *p->r), .dropped = from & ~(uint64_t)(sysconf(_SC_PAGESIZE) - 1) };
        csv_reader_init(p->r, in->map + from, to - from, from, first_line, in->max_field);
}

static bool pass_next(Pass *p, CsvRecord *rec, const char **why)
{
        while (csv_next(p->r, rec)) {
                /* the mapping is file-backed; dropping what was read keeps RSS flat */
                if (rec->offset - p->dropped >= DROP_BEHIND) {
                        uint64_t to = rec->offset & ~(uint64_t)(sysconf(_SC_PAGESIZE) - 1);
                        madvise((char *)p->in->map + p->dropped, to - p->dropped, MADV_DONTNEED);
                        p->dropped = to;
                }
                if (rec->blank)
                        continue;
                *why = record_problem(rec, p->in->header, p->tmp, sizeof p->tmp, &p->code);
                if (*why) {
                        if (p->in->lane == 0)
                                return true;
                        continue;
                }
                const CsvField *sku = &rec->fields[p->in->header->index[COL_SKU]];
                if (loader_lane(sku->ptr, sku->len, sku->quoted, p->in->lanes) == p->in->lane)
                        return true;
        }
        return false;
}

static uint64_t key_hash(const CsvRecord *rec, const LoaderInput *in)
{
        uint64_t h = csv_field_hash(&rec->fields[in->header->index[COL_SKU]], UINT64_C(14695981039346656037));

        if (in->key == KEY_SKU_NAME) { /* 0xff never occurs in UTF-8: it separates the fields */
                h = (h ^ 0xff) * UINT64_C(1099511628211);
                h = csv_field_hash(&rec->fields[in->header->index[COL_NAME]], h);
        }
        return h;
}

static bool same_key(const CsvRecord *a, const CsvRecord *b, const LoaderInput *in)
{
        int sku = in->header->index[COL_SKU], name = in->header->index[COL_NAME];

        return csv_field_equal(&a->fields[sku], &b->fields[sku]) &&
               (in->key == KEY_SKU || csv_field_equal(&a->fields[name], &b->fields[name]));
}

void loader_note_keys(const LoaderInput *in, Lookahead *la)
{
        Pass p;
        CsvRecord rec;
        const char *why;

        pass_init(&p, in, in->start, in->end, in->first_line);
        while (pass_next(&p, &rec, &why))
                if (!why)
                        lookahead_note(la, key_hash(&rec, in), rec.offset, true);
        /* of the rest of the file only records with a key of the chunk count,
         * so the UTF-8 check waits until a record's key is found */
        csv_reader_init(p.r, in->map + in->end, in->file_end - in->end, in->end, 1, in->max_field);
        p.r->skip_utf8 = true;
        while (pass_next(&p, &rec, &why)) {
                if (why)
                        continue;
                uint64_t h = key_hash(&rec, in);
                if (lookahead_last(la, h) && csv_record_utf8(&rec))
                        lookahead_note(la, h, rec.offset, false);
        }
        free(p.r);
}

/* Checks map pages ahead of the pass (a fault maps up to 64 KiB around the
 * page it needs), which would stay until the pass reaches them: they are
 * dropped every so many checks, in one call. One call per check spent a tenth
 * of the lookahead's time flushing the TLB. */
#define CHECKS_PER_DROP 128

static void drop_ahead(const LoaderInput *in, uint64_t offset)
{
        uint64_t from = (offset + 0x10000) & ~(uint64_t)0xffff;

        if (from < in->file_end)
                madvise((char *)in->map + from, (size_t)(in->file_end - from), MADV_DONTNEED);
}

typedef enum Later { LATER_NONE, LATER_SUPERSEDES, LATER_UNKNOWN } Later;

/* Does a later row of the file have rec's key? The table only hints (a hash
 * and an offset); the record found there is parsed, must load (the checks of
 * record_problem and UTF-8), and its key is compared. The table's entry for a
 * key of the chunk is at least the key's own offset, and every later row of
 * the key raises it: an entry equal to the row's offset means none follows.
 * No entry (a full table), or another key's row at the entry (two keys share
 * it), leaves the question open. */
static Later later_row(const LoaderInput *in, const CsvRecord *rec, CsvReader *r, unsigned *checks)
{
        uint64_t last = lookahead_last(in->later, key_hash(rec, in));
        CsvRecord other;
        char tmp[96];
        RejectCode code;

        if (last == rec->offset)
                return LATER_NONE;
        if (last < rec->offset || last >= in->file_end)
                return LATER_UNKNOWN;
        if (++*checks % CHECKS_PER_DROP == 0)
                drop_ahead(in, rec->offset);
        csv_reader_init(r, in->map + last, in->file_end - last, last, 1, in->max_field);
        bool same = csv_next(r, &other) && !record_problem(&other, in->header, tmp, sizeof tmp, &code) &&
                    same_key(rec, &other, in);
        return same ? LATER_SUPERSEDES : LATER_UNKNOWN;
}

int loader_run(
        const LoaderInput *in, Buf *rows, Buf *rejects, size_t flush_at, LoaderFlush flush, void *ud, LoadCounts *ret)
{
        LoadCounts counts = { 0 };
        CsvReader *other = in->later ? xmalloc(sizeof *other) : NULL;
        CsvRecord rec;
        const char *why;
        unsigned checks = 0;
        Pass p;
        int err = 0;

        pass_init(&p, in, in->start, in->end, in->first_line);
        while (err == 0 && pass_next(&p, &rec, &why)) {
                if (why) {
                        loader_add_reject(rejects, in->file_id, in->chunk_no, rec.line, rec.offset, p.code, why,
                                in->map + rec.offset, rec.len);
                        counts.rejected++;
                        continue;
                }
                Later later = in->later ? later_row(in, &rec, other, &checks) : LATER_UNKNOWN;
                if (later == LATER_SUPERSEDES) {
                        counts.superseded++;
                        continue;
                }
                counts.rows++;
                /* a row the lookahead could not settle, when the caller keeps those apart */
                if (later == LATER_UNKNOWN && in->uncertain) {
                        put_row(in->uncertain, &rec, in->header);
                        counts.uncertain++;
                        if (in->uncertain->len > in->uncertain_max)
                                err = -ENOSPC;
                        continue;
                }
                put_row(rows, &rec, in->header);
                if (rows->len >= flush_at)
                        err = flush(rows, ud);
        }
        if (err == 0 && rows->len > 0)
                err = flush(rows, ud);
        free(p.r);
        free(other);
        if (err < 0)
                return err;
        *ret = counts;
        return 0;
}
