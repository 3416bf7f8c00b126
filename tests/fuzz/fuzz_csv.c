/* fuzz_csv.c - libFuzzer target for the CSV scanner and the chunk planner.
 * Property: the records of the chunks the planner cuts, parsed one chunk at a
 * time, are the records of the whole data part parsed at once, in order (same
 * offsets, lengths, lines, field counts, errors). The first input byte picks
 * the chunk size; the rest follows a valid header, so the data part is fuzzed.
 * Crashes, leaks and UB are caught by ASan/UBSan. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "csv.h"
#include "planner.h"

static const char header[] = "sku,name,description\r\n";

typedef struct Rec {
        uint64_t offset, line;
        size_t len, n_fields;
        CsvError error;
        int blank;
} Rec;

static size_t parse(const char *buf, uint64_t from, uint64_t to, uint64_t line, Rec *out, size_t cap)
{
        CsvReader *r = malloc(sizeof *r);
        CsvRecord rec;
        size_t n = 0;

        csv_reader_init(r, buf + from, to - from, from, line, 64);
        while (n < cap && csv_next(r, &rec))
                out[n++] = (Rec){ rec.offset, rec.line, rec.len, rec.n_fields, rec.error, rec.blank };
        free(r);
        return n;
}

static int same(const Rec *a, const Rec *b)
{
        return a->offset == b->offset && a->line == b->line && a->len == b->len && a->n_fields == b->n_fields &&
               a->error == b->error && a->blank == b->blank;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        if (size < 1 || size > (1 << 16))
                return 0;
        uint64_t chunk = 1 + data[0] % 97;
        size_t len = sizeof header - 1 + size - 1;
        char *buf = malloc(len);
        memcpy(buf, header, sizeof header - 1);
        memcpy(buf + sizeof header - 1, data + 1, size - 1);

        int fd = memfd_create("fuzz", MFD_CLOEXEC);
        if (fd < 0 || write(fd, buf, len) != (ssize_t)len)
                abort();
        Plan p;
        char *err = NULL;
        if (planner_plan(fd, KIND_INGEST, KEY_SKU, chunk, NULL, NULL, &p, &err) == 0) {
                Rec *whole = malloc(sizeof(Rec) * (len + 1)), *part = malloc(sizeof(Rec) * (len + 1));
                size_t nw = parse(buf, p.header.data_offset, len, p.header.data_line, whole, len + 1);
                size_t np = 0;
                uint64_t at = p.header.data_offset;
                for (size_t c = 0; c < p.n_ranges; c++) {
                        if (p.ranges[c].start != at || p.ranges[c].end <= p.ranges[c].start)
                                abort(); /* chunks must tile the data part */
                        np += parse(buf, p.ranges[c].start, p.ranges[c].end, p.ranges[c].first_line, part + np,
                                len + 1 - np);
                        at = p.ranges[c].end;
                }
                if (at != len || np != nw)
                        abort(); /* the property: same records... */
                for (size_t i = 0; i < nw; i++)
                        if (!same(&whole[i], &part[i]))
                                abort(); /* ...in the same order, with the same positions */
                free(whole);
                free(part);
                plan_done(&p);
        }
        free(err);
        close(fd);
        free(buf);
        return 0;
}
