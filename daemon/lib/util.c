/* util.c - allocation, parsing and text helpers. Allocation failure is handled
 * here once: it logs and exits, since no caller could do anything better. */
#include "util.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static void *check_alloc(void *p)
{
        if (!p) {
                fputs("ingestd: out of memory\n", stderr);
                exit(70); /* EX_SOFTWARE */
        }
        return p;
}

void *xmalloc(size_t n) { return check_alloc(malloc(n ? n : 1)); }
void *xcalloc(size_t n, size_t size) { return check_alloc(calloc(n ? n : 1, size ? size : 1)); }
void *xrealloc(void *p, size_t n) { return check_alloc(realloc(p, n ? n : 1)); }
char *xstrdup(const char *s) { return check_alloc(strdup(s)); }

char *xasprintf(const char *fmt, ...)
{
        va_list ap;
        char *s = NULL;

        va_start(ap, fmt);
        int r = vasprintf(&s, fmt, ap);
        va_end(ap);
        return check_alloc(r < 0 ? NULL : s);
}

static const struct {
        char suffix;
        double seconds;
} duration_units[] = { { 'd', 86400 }, { 'h', 3600 }, { 'm', 60 }, { 's', 1 } };

int parse_duration(const char *s, double *ret_seconds)
{
        char *end;
        double mult = 1;

        if (!s || *s == '\0' || *s == '-' || *s == ' ')
                return -EINVAL;
        double v = strtod(s, &end);
        if (end == s || !isfinite(v))
                return -EINVAL;
        if (*end != '\0') {
                size_t i = 0;
                while (i < sizeof duration_units / sizeof *duration_units && duration_units[i].suffix != *end)
                        i++;
                if (i == sizeof duration_units / sizeof *duration_units || end[1] != '\0')
                        return -EINVAL;
                mult = duration_units[i].seconds;
        }
        *ret_seconds = v * mult;
        return 0;
}

void format_duration(double seconds, char *out, size_t n)
{
        for (size_t i = 0; i < sizeof duration_units / sizeof *duration_units; i++) {
                double q = seconds / duration_units[i].seconds;
                if (seconds > 0 && q == (double)(long long)q) {
                        snprintf(out, n, "%lld%c", (long long)q, duration_units[i].suffix);
                        return;
                }
        }
        snprintf(out, n, "%gs", seconds);
}

int parse_size(const char *s, uint64_t *ret_bytes)
{
        char *end;
        uint64_t mult = 1;

        if (!s || *s == '\0' || *s == '-')
                return -EINVAL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (end == s)
                return -EINVAL;
        switch (*end) {
        case '\0': break;
        case 'k':
        case 'K':
                mult = 1ULL << 10;
                end++;
                break;
        case 'm':
        case 'M':
                mult = 1ULL << 20;
                end++;
                break;
        case 'g':
        case 'G':
                mult = 1ULL << 30;
                end++;
                break;
        default: return -EINVAL;
        }
        if (*end == 'B' || *end == 'b')
                end++;
        if (*end != '\0')
                return -EINVAL;
        if (v > UINT64_MAX / mult)
                return -ERANGE;
        *ret_bytes = v * mult;
        return 0;
}

double now_monotonic(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Length of the UTF-8 sequence starting at p, or 0 if invalid. */
static size_t utf8_seq_len(const unsigned char *p, size_t n)
{
        unsigned char c = p[0];
        size_t len;
        uint32_t cp;

        if (c < 0x80)
                return 1;
        if (c >= 0xc2 && c <= 0xdf) {
                len = 2;
                cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
                len = 3;
                cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
                len = 4;
                cp = c & 0x07;
        } else
                return 0;
        if (n < len)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (p[i] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
                return 0;
        if (cp >= 0xd800 && cp <= 0xdfff)
                return 0;
        return len;
}

bool utf8_valid(const char *s, size_t n)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t i = 0;

        while (i < n) {
                /* ASCII fast path, 8 bytes at a time */
                while (i + 8 <= n) {
                        uint64_t w;
                        memcpy(&w, p + i, 8);
                        if (w & 0x8080808080808080ULL)
                                break;
                        i += 8;
                }
                if (i >= n)
                        break;
                size_t len = utf8_seq_len(p + i, n - i);
                if (len == 0)
                        return false;
                i += len;
        }
        return true;
}

char *name_escape(const char *name)
{
        const unsigned char *p = (const unsigned char *)name;
        size_t n = strlen(name);
        char *out = xmalloc(n * 4 + 1), *o = out;

        for (size_t i = 0; i < n;) {
                size_t len = utf8_seq_len(p + i, n - i);
                if (len == 0 || p[i] < 0x20 || p[i] == 0x7f || p[i] == '\\') {
                        o += sprintf(o, "\\x%02x", p[i]);
                        i++;
                        continue;
                }
                memcpy(o, p + i, len);
                o += len;
                i += len;
        }
        *o = '\0';
        return out;
}

void buf_reserve(Buf *b, size_t extra)
{
        if (b->len + extra <= b->cap)
                return;
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + extra)
                cap *= 2;
        b->data = xrealloc(b->data, cap);
        b->cap = cap;
}

void buf_append(Buf *b, const void *p, size_t n)
{
        if (n == 0) /* b->data may still be NULL */
                return;
        buf_reserve(b, n);
        memcpy(b->data + b->len, p, n);
        b->len += n;
}

void buf_append_u64(Buf *b, uint64_t v)
{
        char tmp[20];
        size_t n = sizeof tmp;

        do
                tmp[--n] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        buf_append(b, tmp + n, sizeof tmp - n);
}

void buf_printf(Buf *b, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        int n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        buf_reserve(b, (size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t)n;
}

int listen_parse(const char *text, struct sockaddr_storage *ret, unsigned *ret_len)
{
        char host[64];
        const char *colon = strrchr(text, ':');
        size_t n = colon ? (size_t)(colon - text) : 0;
        struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM }, *ai;

        if (!colon || n == 0 || n >= sizeof host || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1) ||
                atoi(colon + 1) < 1 || atoi(colon + 1) > 65535)
                return -EINVAL;
        if (text[0] == '[' && colon[-1] == ']')
                snprintf(host, sizeof host, "%.*s", (int)n - 2, text + 1);
        else if (strchr(text, ']') || memchr(text, ':', n)) /* an IPv6 host goes in brackets */
                return -EINVAL;
        else
                snprintf(host, sizeof host, "%.*s", (int)n, text);
        if (strcmp(host, "localhost") == 0)
                snprintf(host, sizeof host, "127.0.0.1");
        if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
                return -EINVAL;
        if (ret) {
                memcpy(ret, ai->ai_addr, ai->ai_addrlen);
                *ret_len = (unsigned)ai->ai_addrlen;
        }
        freeaddrinfo(ai);
        return 0;
}

void buf_free(Buf *b)
{
        free(b->data);
        *b = (Buf){ 0 };
}

const char *dropped_name(const char *path)
{
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path, *p = base;

        while (*p >= '0' && *p <= '9')
                p++;
        if (p > base && *p == UPDATE_MARK[0])
                p++;
        return p > base && *p == '-' ? p + 1 : base;
}

int arrival_cmp(struct timespec a_mtime, const char *a_name, struct timespec b_mtime, const char *b_name)
{
        if (a_mtime.tv_sec != b_mtime.tv_sec)
                return a_mtime.tv_sec < b_mtime.tv_sec ? -1 : 1;
        if (a_mtime.tv_nsec != b_mtime.tv_nsec)
                return a_mtime.tv_nsec < b_mtime.tv_nsec ? -1 : 1;
        return strcmp(a_name, b_name);
}
