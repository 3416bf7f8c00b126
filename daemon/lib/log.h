/* log.h - one logging call for the whole daemon: structured journald fields
 * when stderr is connected to the journal, plain lines on stderr otherwise. */
#pragma once
#include <syslog.h>

typedef struct LogCtx {
        const char *file;  /* INGEST_FILE: the name as dropped, or NULL */
        long long file_id; /* INGEST_FILE_ID: its sequence number, or -1 */
        long chunk;        /* INGEST_CHUNK, or -1 */
        long long rows;    /* INGEST_ROWS, or -1 */
        const char *state; /* INGEST_STATE, or NULL */
} LogCtx;

#define LOG_NOCTX ((LogCtx){ NULL, -1, -1, -1, NULL })

void log_init(const char *ident);
void log_set_level(int max_priority);
int log_get_level(void);
void log_ctx(int priority, LogCtx ctx, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define log_msg(prio, ...) log_ctx(prio, LOG_NOCTX, __VA_ARGS__)
