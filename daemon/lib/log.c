/* log.c - logging. Under systemd (JOURNAL_STREAM names our stderr) each line is
 * sent with sd_journal_send() so it carries PRIORITY and the INGEST_* fields;
 * elsewhere a plain "ingestd[pid]: level: message" line goes to stderr. Logging
 * never fails the caller. */
#include "log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

static const char *log_ident = "ingestd";
static bool log_journal;
static int log_level = LOG_INFO;

static bool stderr_is_journal(void)
{
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return false;
        if (fstat(STDERR_FILENO, &st) < 0)
                return false;
        return st.st_dev == dev && st.st_ino == ino;
}

void log_init(const char *ident)
{
        log_ident = ident;
        log_journal = stderr_is_journal();
}

void log_set_level(int max_priority) { log_level = max_priority; }
int log_get_level(void) { return log_level; }

static const char *prio_name(int p)
{
        static const char *names[] = { "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug" };
        return names[p & 7];
}

static void log_to_journal(int prio, LogCtx c, const char *msg)
{
        char f[8][2200];
        struct iovec iov[8];
        int n = 0;

        snprintf(f[n], sizeof f[n], "MESSAGE=%s", msg), n++;
        snprintf(f[n], sizeof f[n], "PRIORITY=%d", prio), n++;
        snprintf(f[n], sizeof f[n], "SYSLOG_IDENTIFIER=%s", log_ident), n++;
        if (c.file)
                snprintf(f[n], sizeof f[n], "INGEST_FILE=%s", c.file), n++;
        if (c.file_id > 0)
                snprintf(f[n], sizeof f[n], "INGEST_FILE_ID=%lld", c.file_id), n++;
        if (c.chunk >= 0)
                snprintf(f[n], sizeof f[n], "INGEST_CHUNK=%ld", c.chunk), n++;
        if (c.rows >= 0)
                snprintf(f[n], sizeof f[n], "INGEST_ROWS=%lld", c.rows), n++;
        if (c.state)
                snprintf(f[n], sizeof f[n], "INGEST_STATE=%s", c.state), n++;
        for (int i = 0; i < n; i++)
                iov[i] = (struct iovec){ f[i], strlen(f[i]) };
        sd_journal_sendv(iov, n);
}

void log_ctx(int priority, LogCtx ctx, const char *fmt, ...)
{
        char msg[2048];
        va_list ap;

        if (priority > log_level)
                return;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (log_journal) {
                log_to_journal(priority, ctx, msg);
                return;
        }
        fprintf(stderr, "%s[%d]: %s: %s\n", log_ident, (int)getpid(), prio_name(priority), msg);
}
