/* util.h - small helpers shared by every module: allocation that never returns
 * NULL, size parsing, monotonic time, safe display of file names. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "16M", "512k", "1G", "4096" -> bytes. 0 or -EINVAL/-ERANGE. */
int parse_size(const char *s, uint64_t *ret_bytes);
/* "90", "90s", "15m", "12h", "30d" (or a fraction: "1.5h") into seconds. 0, or -EINVAL. */
int parse_duration(const char *s, double *ret_seconds);
/* The shortest of those forms that reads back as seconds: "30d", "90s". */
void format_duration(double seconds, char *out, size_t n);

/* Seconds since an arbitrary start, never going backwards. */
double now_monotonic(void);

/* A copy of a file name that is valid UTF-8 without control characters:
 * other bytes become \xNN. Used for the database and for log lines. */
char *name_escape(const char *name);

/* Files under processing/, done/ and failed/ are "ID-NAME", or "IDu-NAME"
 * for a file of updates/: the folders alone tell what to do with a file the
 * database has lost (reconcile.h). */
#define UPDATE_MARK "u"
/* The name as dropped, from "ID-NAME" or "IDu-NAME" (with or without directories). */
const char *dropped_name(const char *path);

/* True when [p, p+n) is valid UTF-8 (no overlongs, no surrogates). */
bool utf8_valid(const char *p, size_t n);

/* Growable byte buffer. */
typedef struct Buf {
        char *data;
        size_t len, cap;
} Buf;
void buf_reserve(Buf *b, size_t extra);
void buf_append(Buf *b, const void *p, size_t n);
void buf_free(Buf *b);
/* Appends v in decimal (snprintf was a tenth of a worker's time). */
void buf_append_u64(Buf *b, uint64_t v);
/* Appends formatted text (not NUL-terminated in len; data[len] is NUL). */
void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "HOST:PORT" with a numeric IPv4 host, "[IPv6]:PORT" or "localhost:PORT"
 * into *ret (may be NULL: only checks). 0, or -EINVAL. */
struct sockaddr_storage;
int listen_parse(const char *text, struct sockaddr_storage *ret, unsigned *ret_len);

/* Arrival order of files found in a folder: older mtime first, then by name. */
int arrival_cmp(struct timespec a_mtime, const char *a_name, struct timespec b_mtime, const char *b_name);
