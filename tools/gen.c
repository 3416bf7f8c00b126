/* gen.c - deterministic generator of product CSV files with the shape of the
 * reference products.csv (DESIGN.md "The input"): header name,sku,description;
 * CRLF record ends; ~60% of descriptions quoted and spanning several lines with
 * bare LF inside; "First Last" names from a skewed distribution (about 222k
 * distinct in 500k rows, the most common ~230 times); skus of three short
 * lowercase words joined by '-', unique by construction, with ~6.7% of rows
 * repeating an earlier sku under another name; QUOTE_MINIMAL quoting as
 * Python's csv module writes it. Same --rows and --seed, same bytes. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen_words.h"

#define N_FIRST 1000 /* ranked first names: real ones first, then synthesized */
#define N_LAST 1200
#define REPEAT_RATE 0.066614 /* 33,307 of 500,000 rows repeat an earlier sku */
#define MULTILINE_RATE 0.60
#define SKU_SPACE (1u << 24) /* 256^3 three-word skus */

static uint64_t rng_state;

static uint64_t rnd(void)
{
        uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        return z ^ (z >> 31);
}

static double rnd_unit(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }
static unsigned rnd_below(unsigned n) { return (unsigned)(rnd_unit() * n); }

#define NWORDS (sizeof words / sizeof words[0])

/* ---- names: rank r has weight 1/(r + c); real names take the top ranks ---- */

typedef struct Ranked {
        char **names;
        double *cdf;
        unsigned n;
} Ranked;

static char *synth_name(uint64_t *st)
{
        static const char *const on[] = { "B", "C", "D", "F", "G", "H", "J", "K", "L", "M", "N", "P", "R", "S", "T",
                "V", "W", "Br", "Ch", "Cl", "Dr", "Gr", "St", "Tr" };
        static const char *const nu[] = { "a", "e", "i", "o", "u", "ar", "el", "an", "or", "ie" };
        static const char *const co[] = { "n", "rd", "ll", "ton", "son", "ley", "ck", "ne", "ra", "lyn", "wick",
                "den" };
        char buf[32];
        uint64_t v = *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
        snprintf(buf, sizeof buf, "%s%s%s%s", on[(v >> 20) % 24], nu[(v >> 30) % 10],
                (v >> 40) % 3 ? "" : nu[(v >> 44) % 10], co[(v >> 50) % 12]);
        return strdup(buf);
}

static void ranked_init(Ranked *r, const char *const *real, unsigned n_real, unsigned n, double c, uint64_t salt)
{
        uint64_t st = salt;
        double sum = 0;

        r->n = n;
        r->names = calloc(n, sizeof *r->names);
        r->cdf = calloc(n, sizeof *r->cdf);
        for (unsigned i = 0; i < n; i++) {
                r->names[i] = i < n_real ? strdup(real[i]) : synth_name(&st);
                sum += 1.0 / (i + 1 + c);
                r->cdf[i] = sum;
        }
        for (unsigned i = 0; i < n; i++)
                r->cdf[i] /= sum;
}

static const char *ranked_pick(const Ranked *r)
{
        double u = rnd_unit();
        unsigned lo = 0, hi = r->n - 1;

        while (lo < hi) {
                unsigned mid = (lo + hi) / 2;
                if (r->cdf[mid] < u)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return r->names[lo];
}

/* ---- skus: a bijection of [0, 2^24) spreads consecutive ids over the words */

static void sku_of(uint32_t id, char *out)
{
        uint32_t v = (id * 2654435761u + 0x5bd1e995u) & (SKU_SPACE - 1);
        sprintf(out, "%s-%s-%s", words[v >> 16], words[(v >> 8) & 255], words[v & 255]);
}

/* ---- descriptions: sentences of words, paragraphs joined by bare LF ------- */

static size_t sentence(char *out, size_t room, bool tricky)
{
        unsigned n = 4 + rnd_below(8);
        size_t len = 0;

        for (unsigned i = 0; i < n; i++) {
                const char *w = words[rnd_below(NWORDS)];
                char tmp[48];
                int k;
                if (tricky && rnd_below(12) == 0)
                        k = snprintf(tmp, sizeof tmp, "%s\"%s\"", i ? " " : "", w);
                else
                        k = snprintf(tmp, sizeof tmp, "%s%s%s", i ? " " : "", w,
                                tricky && i + 1 < n && rnd_below(5) == 0 ? "," : "");
                if (len + (size_t)k + 1 > room)
                        break;
                memcpy(out + len, tmp, (size_t)k);
                if (i == 0)
                        out[len] = (char)(out[len] - 32 * (out[len] >= 'a' && out[len] <= 'z'));
                len += (size_t)k;
        }
        out[len++] = '.';
        return len;
}

static size_t description(char *out, size_t max, bool tricky)
{
        bool multiline = rnd_unit() < MULTILINE_RATE;
        size_t len = 0;
        bool broke = false;

        for (unsigned s = 0; len + 20 < max; s++) {
                char sep = ' ';
                if (s > 0) {
                        sep = multiline && (rnd_below(2) == 0 || (!broke && len > max / 2)) ? '\n' : ' ';
                        broke |= sep == '\n';
                        out[len++] = sep;
                }
                len += sentence(out + len, max - len - 1, tricky);
                if (rnd_below(4) == 0 && (!multiline || broke))
                        break;
        }
        return len;
}

/* ---- CSV output (QUOTE_MINIMAL, CRLF) ---------------------------------- */

static void put_field(FILE *f, const char *s, size_t n)
{
        bool quote = false;

        for (size_t i = 0; i < n && !quote; i++)
                quote = s[i] == ',' || s[i] == '"' || s[i] == '\n' || s[i] == '\r';
        if (!quote) {
                fwrite(s, 1, n, f);
                return;
        }
        putc('"', f);
        for (size_t i = 0; i < n; i++) {
                if (s[i] == '"')
                        putc('"', f);
                putc(s[i], f);
        }
        putc('"', f);
}

typedef struct Options {
        uint64_t rows, seed;
        bool tricky;
        const char *columns;
        const char *out;
} Options;

static void usage(FILE *f)
{
        fprintf(f, "Usage: ingest-gen --rows N [--seed S] [--tricky] [--columns LIST] [-o FILE]\n"
                   "Writes a products CSV of the reference shape to FILE or stdout.\n"
                   "  --tricky        commas and \"\" inside quoted fields\n"
                   "  --columns LIST  column order, default name,sku,description\n");
}

static int parse_args(int argc, char **argv, Options *o)
{
        *o = (Options){ 500000, 1, false, "name,sku,description", NULL };
        for (int i = 1; i < argc; i++) {
                const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
                if (strcmp(a, "--tricky") == 0) {
                        o->tricky = true;
                        continue;
                }
                if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                        usage(stdout);
                        exit(0);
                }
                if (!v)
                        return -1;
                if (strcmp(a, "--rows") == 0)
                        o->rows = strtoull(v, NULL, 10);
                else if (strcmp(a, "--seed") == 0)
                        o->seed = strtoull(v, NULL, 10);
                else if (strcmp(a, "--columns") == 0)
                        o->columns = v;
                else if (strcmp(a, "-o") == 0)
                        o->out = v;
                else
                        return -1;
                i++;
        }
        return 0;
}

int main(int argc, char **argv)
{
        Options o;
        Ranked firsts, lasts;
        char sku[64], name[80], desc[256];
        char order[3] = { 0 };
        uint32_t fresh = 0;

        if (parse_args(argc, argv, &o) < 0 || o.rows > SKU_SPACE) {
                usage(stderr);
                return 64;
        }
        char *cols = strdup(o.columns);
        int nc = 0;
        for (char *t = strtok(cols, ","); t && nc < 3; t = strtok(NULL, ","))
                order[nc++] = t[0]; /* n, s, d */
        FILE *f = o.out ? fopen(o.out, "w") : stdout;
        if (!f || nc != 3) {
                perror(o.out ? o.out : "columns");
                return 1;
        }
        static char obuf[1 << 20];
        setvbuf(f, obuf, _IOFBF, sizeof obuf);
        ranked_init(&firsts, first_names, sizeof first_names / sizeof *first_names, N_FIRST, 8, 11);
        ranked_init(&lasts, last_names, sizeof last_names / sizeof *last_names, N_LAST, 10, 29);
        rng_state = o.seed * 0x2545f4914f6cdd1dULL + 1;
        fprintf(f, "%s\r\n", o.columns);
        for (uint64_t row = 0; row < o.rows; row++) {
                bool repeat = fresh > 0 && rnd_unit() < REPEAT_RATE;
                sku_of(repeat ? rnd_below(fresh) : fresh++, sku);
                int nl = snprintf(name, sizeof name, "%s %s%s", ranked_pick(&firsts), ranked_pick(&lasts),
                        o.tricky && rnd_below(40) == 0 ? ", Jr." : "");
                size_t dl = description(desc, 200, o.tricky);
                for (int c = 0; c < 3; c++) {
                        if (c)
                                putc(',', f);
                        if (order[c] == 'n')
                                put_field(f, name, (size_t)nl);
                        else if (order[c] == 's')
                                put_field(f, sku, strlen(sku));
                        else
                                put_field(f, desc, dl);
                }
                fputs("\r\n", f);
        }
        free(cols);
        return fclose(f) == 0 ? 0 : 1;
}
