/* planner.c - one pass over a file with the same scanner the workers use, so
 * every record lands in exactly one chunk. The file is mapped read-only and
 * pages already scanned are dropped, so memory stays flat whatever the size;
 * the only allocation that grows is the chunk list (24 bytes per chunk). */
#include "planner.h"
#include "csv.h"
#include "sha256.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *const column_names[N_COLUMNS] = { "sku", "name", "description" };

#define DROP_BEHIND (4u << 20) /* release mapped pages every 4 MiB */
#define HEADER_MAX_NAME 4096

const char *file_kind_name(FileKind k) { return k == KIND_UPDATE ? "update" : "ingest"; }

static int header_column(const CsvField *f, char *name, size_t cap)
{
        size_t n = f->len < cap - 1 ? f->len : cap - 1;
        char tmp[256];
        size_t m = csv_field_unescape(&(CsvField){ f->ptr, n, f->quoted }, tmp);
        size_t b = 0;

        while (b < m && (tmp[b] == ' ' || tmp[b] == '\t'))
                b++;
        while (m > b && (tmp[m - 1] == ' ' || tmp[m - 1] == '\t'))
                m--;
        memcpy(name, tmp + b, m - b);
        name[m - b] = '\0';
        for (int c = 0; c < N_COLUMNS; c++)
                if (strcasecmp(name, column_names[c]) == 0)
                        return c;
        return -1;
}

static int header_columns(const CsvRecord *rec, Header *h, char **ret_error)
{
        char name[256];

        for (int c = 0; c < N_COLUMNS; c++)
                h->index[c] = -1;
        for (size_t i = 0; i < rec->n_fields; i++) {
                int c = header_column(&rec->fields[i], name, sizeof name);
                if (c < 0 || h->index[c] >= 0) {
                        char *shown = name_escape(name);
                        *ret_error = c < 0 ? xasprintf("header: unknown column '%.64s' (expected sku, name, "
                                                       "description)",
                                                     shown)
                                           : xasprintf("header: column '%s' appears twice", shown);
                        free(shown);
                        return -EINVAL;
                }
                h->index[c] = (int)i;
        }
        h->n_fields = rec->n_fields;
        return 0;
}

static int header_check_kind(const Header *h, FileKind kind, KeyMode key, char **ret_error)
{
        if (h->index[COL_SKU] < 0) {
                *ret_error = xasprintf("header: no 'sku' column");
                return -EINVAL;
        }
        if (kind == KIND_INGEST && h->index[COL_NAME] < 0) {
                *ret_error = xasprintf("header: no 'name' column (required to ingest)");
                return -EINVAL;
        }
        if (kind == KIND_UPDATE && key == KEY_SKU_NAME && h->index[COL_NAME] < 0) {
                *ret_error = xasprintf("header: key is sku,name so an update file needs a 'name' column");
                return -EINVAL;
        }
        if (kind == KIND_UPDATE && h->n_fields < 2) {
                *ret_error = xasprintf("header: an update file needs sku and at least one column to change");
                return -EINVAL;
        }
        return 0;
}

/* A header line is short text: control bytes (other than tab, CR, LF) or
 * invalid UTF-8 in its first 4 KiB mean the file is not CSV at all. */
static bool looks_binary(const char *p, size_t n)
{
        if (n > 4096)
                n = 4096;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)p[i];
                if (c < 0x20 && c != '\t' && c != '\r' && c != '\n')
                        return true;
        }
        /* a cut at 4 KiB may split a UTF-8 sequence: allow 3 bytes of slack */
        return !utf8_valid(p, n) && (n < 4 || !utf8_valid(p, n - 3));
}

int header_parse(const char *buf, size_t len, FileKind kind, KeyMode key, Header *ret, char **ret_error)
{
        size_t skip = len >= 3 && memcmp(buf, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
        size_t scan_len = len - skip < HEADER_MAX_BYTES ? len - skip : HEADER_MAX_BYTES;
        CsvReader *r = xmalloc(sizeof *r);
        CsvRecord rec;
        Header h = { 0 };
        int ret_r = -EINVAL;

        csv_reader_init(r, buf + skip, scan_len, skip, 1, HEADER_MAX_NAME);
        if (len == 0 || !csv_next(r, &rec)) {
                *ret_error = xasprintf("empty file");
                goto out;
        }
        if (looks_binary(buf + skip, rec.len) ||
                (rec.offset + rec.len == skip + scan_len && scan_len == HEADER_MAX_BYTES)) {
                *ret_error = xasprintf("binary file: the first line is not UTF-8 text");
                goto out;
        }
        if (rec.error == CSV_ERR_FIELD_TOO_LONG) {
                *ret_error = xasprintf("header: a column name is longer than %d bytes", HEADER_MAX_NAME);
                goto out;
        }
        if (rec.error != CSV_OK) {
                *ret_error = xasprintf("header: %s", csv_error_str(rec.error));
                goto out;
        }
        if (header_columns(&rec, &h, ret_error) < 0 || header_check_kind(&h, kind, key, ret_error) < 0)
                goto out;
        h.data_offset = csv_reader_offset(r);
        h.data_line = r->line;
        *ret = h;
        ret_r = 0;
out:
        free(r);
        return ret_r;
}

typedef struct Scan {
        Plan *plan;
        size_t cap;
        uint64_t range_start, range_line;
} Scan;

static void plan_add_range(Scan *s, uint64_t end, uint64_t next_line)
{
        Plan *p = s->plan;

        if (end == s->range_start)
                return;
        if (p->n_ranges == s->cap) {
                s->cap = s->cap ? s->cap * 2 : 64;
                p->ranges = xrealloc(p->ranges, s->cap * sizeof *p->ranges);
        }
        p->ranges[p->n_ranges++] = (ByteRange){ s->range_start, end, s->range_line };
        s->range_start = end;
        s->range_line = next_line;
}

/* Progress is what both the scan and the hash have done, reported when it
 * grows (the plan child stores it for STATUS and ingestctl --wait). */
typedef struct Progress {
        PlanProgress fn;
        void *ud;
        uint64_t reported;
} Progress;

/* The file's SHA-256, taken by a second thread while the first finds the
 * record ends (hashing was 1.3 s of a 1.7 s plan of 10M rows). It maps the
 * file on its own and drops the pages behind it, so neither thread frees
 * pages the other has yet to read. */
typedef struct Hasher {
        int fd;
        uint64_t size;
        _Atomic uint64_t hashed; /* bytes so far; size once hex is set */
        int error;               /* -errno when the file could not be mapped */
        char hex[65];
        Progress *pr; /* only when hashing in the planner's own thread */
} Hasher;

static void report(Progress *pr, uint64_t scanned, const Hasher *h);

static void *hash_file(void *arg)
{
        Hasher *h = arg;
        char *map = mmap(NULL, h->size, PROT_READ, MAP_PRIVATE, h->fd, 0);
        if (map == MAP_FAILED) {
                h->error = -errno;
                atomic_store(&h->hashed, h->size);
                return NULL;
        }
        madvise(map, h->size, MADV_SEQUENTIAL);
        Sha256 *sha = sha256_new();
        for (uint64_t at = 0; at < h->size; at += DROP_BEHIND) {
                size_t n = h->size - at < DROP_BEHIND ? (size_t)(h->size - at) : DROP_BEHIND;
                sha256_update(sha, map + at, n);
                madvise(map + at, n, MADV_DONTNEED);
                if (at + n < h->size)
                        atomic_store_explicit(&h->hashed, at + n, memory_order_relaxed);
                if (h->pr)
                        report(h->pr, h->size, h);
        }
        sha256_final_hex(sha, h->hex);
        munmap(map, h->size);
        atomic_store(&h->hashed, h->size); /* releases hex to the waiting thread */
        return NULL;
}

static void report(Progress *pr, uint64_t scanned, const Hasher *h)
{
        uint64_t hashed = atomic_load_explicit(&h->hashed, memory_order_relaxed);
        uint64_t done = scanned < hashed ? scanned : hashed;

        if (pr->fn && done > pr->reported)
                pr->fn(done, h->size, pr->ud);
        if (done > pr->reported)
                pr->reported = done;
}

static void scan_records(const char *map, Plan *p, uint64_t range_size, const Hasher *h, Progress *pr)
{
        CsvReader *r = xmalloc(sizeof *r);
        Scan s = { .plan = p, .range_start = p->header.data_offset, .range_line = p->header.data_line };
        uint64_t dropped = 0, page = (uint64_t)sysconf(_SC_PAGESIZE);
        CsvRecord rec;

        csv_reader_init(r, map + p->header.data_offset, p->size - p->header.data_offset, p->header.data_offset,
                p->header.data_line, SIZE_MAX);
        r->skip_utf8 = true; /* record ends do not depend on it; the workers check each record */
        while (csv_next(r, &rec)) {
                uint64_t end = rec.offset + rec.len;
                if (!rec.blank)
                        p->data_rows++;
                if (end - s.range_start >= range_size)
                        plan_add_range(&s, end, r->line);
                if (end - dropped >= DROP_BEHIND) {
                        uint64_t to = end & ~(page - 1);
                        madvise((char *)map + dropped, to - dropped, MADV_DONTNEED);
                        report(pr, to, h);
                        dropped = to;
                }
        }
        plan_add_range(&s, p->size, r->line);
        free(r);
}

/* The hash usually ends last: until it does, its progress is reported every
 * 50 ms, so that the progress of hashing a file of many gigabytes goes on.
 * The join returns as soon as the thread ends (a 500k-row file's hash ends
 * ~0.03 s after its scan). */
static void wait_for_hash(pthread_t t, const Hasher *h, Progress *pr)
{
        struct timespec until;

        for (;;) {
                clock_gettime(CLOCK_REALTIME, &until); /* the clock of pthread_timedjoin_np */
                until.tv_nsec += 50000000L;
                if (until.tv_nsec >= 1000000000L) {
                        until.tv_sec++;
                        until.tv_nsec -= 1000000000L;
                }
                if (pthread_timedjoin_np(t, NULL, &until) == 0)
                        return;
                report(pr, h->size, h);
        }
}

int planner_plan(int fd, FileKind kind, KeyMode key, uint64_t range_size, PlanProgress progress, void *ud, Plan *ret,
        char **ret_error)
{
        struct stat st;
        Plan p = { 0 };

        if (fstat(fd, &st) < 0)
                return -errno;
        p.size = (uint64_t)st.st_size;
        if (p.size == 0) {
                *ret_error = xasprintf("empty file");
                return -EINVAL;
        }
        const char *map = mmap(NULL, p.size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED)
                return -errno;
        madvise((void *)map, p.size, MADV_SEQUENTIAL);
        int r = header_parse(map, p.size, kind, key, &p.header, ret_error);
        if (r == 0) {
                Hasher h = { .fd = fd, .size = p.size };
                Progress pr = { progress, ud, 0 };
                pthread_t t;
                bool threaded = pthread_create(&t, NULL, hash_file, &h) == 0;
                if (!threaded) { /* no thread to be had: hash first, then scan */
                        h.pr = &pr;
                        hash_file(&h);
                }
                scan_records(map, &p, range_size ? range_size : 1, &h, &pr);
                if (threaded)
                        wait_for_hash(t, &h, &pr);
                report(&pr, p.size, &h); /* all of it */
                r = h.error;
                memcpy(p.sha256, h.hex, sizeof p.sha256);
                if (r == 0 && p.data_rows == 0) {
                        *ret_error = xasprintf("no data rows (header only)");
                        r = -EINVAL;
                }
        }
        munmap((void *)map, p.size);
        if (r < 0) {
                plan_done(&p);
                return r;
        }
        *ret = p;
        return 0;
}

void plan_done(Plan *p)
{
        free(p->ranges);
        p->ranges = NULL;
        p->n_ranges = 0;
}
