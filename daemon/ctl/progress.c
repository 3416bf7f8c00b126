/* progress.c - ingestctl's wait for a file: it polls ingest.files and
 * ingest.chunks every 50 ms (the daemon has no socket to ask) and shows what
 * the committed chunks account for. Chunks commit whole, so the percent moves
 * a chunk at a time; the rate is the rows since loading was first seen over
 * the time since, the ETA the rows left at that rate. */
#include "progress.h"

#include "db.h"
#include "state.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#define POLL_NS (50L * 1000 * 1000)

long long progress_rows_done(const FileProgress *p) { return p->loaded + p->rejected + p->superseded; }

static void format_eta(char *out, size_t n, double seconds)
{
        long s = (long)(seconds + 0.5);

        if (s >= 3600)
                snprintf(out, n, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
        else
                snprintf(out, n, "%ld:%02ld", s / 60, s % 60);
}

void progress_tty_line(char *out, size_t n, const char *name, const FileProgress *p, double rows_per_sec)
{
        long long done = progress_rows_done(p), left = p->data_rows - done;
        char pct[16] = "", rate[64] = "";

        if (p->data_rows > 0 && strcmp(p->state, STATE_LOADING) == 0)
                snprintf(pct, sizeof pct, " %.0f%%", 100.0 * (double)done / (double)p->data_rows);
        if (rows_per_sec > 0 && *pct) {
                char eta[32];
                format_eta(eta, sizeof eta, left > 0 ? (double)left / rows_per_sec : 0);
                snprintf(rate, sizeof rate, ", %.0f rows/s, ETA %s", rows_per_sec, eta);
        }
        snprintf(out, n, "%s: %s%s%s (%lld/%lld chunks, %lld loaded, %lld rejected, %lld superseded)", name, p->state,
                pct, rate, p->chunks_done, p->chunks, p->loaded, p->rejected, p->superseded);
}

void progress_summary(char *out, size_t n, const char *name, const FileProgress *p, double seconds)
{
        long long done = progress_rows_done(p);

        snprintf(out, n, "%s: done in %.1f s: %lld rows (%lld loaded, %lld rejected, %lld superseded), %.0f rows/s",
                name, seconds, done, p->loaded, p->rejected, p->superseded, seconds > 0 ? (double)done / seconds : 0.0);
}

/* Today's piped line, printed when it changes. */
static void show_piped(const char *name, const FileProgress *p, char *last, size_t n)
{
        char line[512];

        snprintf(line, sizeof line, "%s: %s, %lld/%lld chunks, %lld rows loaded, %lld rejected, %lld superseded", name,
                p->state, p->chunks_done, p->chunks, p->loaded, p->rejected, p->superseded);
        if (strcmp(line, last) == 0)
                return;
        snprintf(last, n, "%s", line);
        fprintf(stderr, "%s\n", line);
}

static const char progress_sql[] =
        "SELECT CASE WHEN f.state = " SQL_LOADING " AND f.deferred_key IS NOT NULL "
        "  AND count(k.*) FILTER (WHERE k.state <> " SQL_DONE ") = 0 "
        "  THEN 'building the key of products' "
        "  WHEN f.state = " SQL_NEW " AND f.size > 0 "
        "  THEN 'planning ' || (100 * f.planned_bytes / f.size) || '%' "
        "  ELSE f.state END, count(k.*) FILTER (WHERE k.state = " SQL_DONE "), coalesce(f.chunks, 0), "
        " coalesce(f.data_rows, 0), coalesce(sum(k.rows_loaded), 0), coalesce(sum(k.rows_rejected), 0), "
        " coalesce(sum(k.rows_superseded), 0), f.aggregated_at IS NOT NULL, coalesce(f.error, '') "
        "FROM ingest.files f LEFT JOIN ingest.chunks k ON k.file_id = f.id "
        "WHERE f.name = $1 AND f.id > $2 GROUP BY f.id ORDER BY f.id LIMIT 1";

/* 1 with *ret and the error and aggregated flags, 0 not registered yet, -EIO. */
static int read_progress(
        PGconn *c, const char *const *p, FileProgress *ret, bool *ret_aggregated, char *error, size_t n)
{
        char *err = NULL;
        PGresult *res = db_query(c, &err, progress_sql, 2, p);

        if (!res) {
                fprintf(stderr, "ingestctl: waiting: %s\n", err);
                free(err);
                return -EIO;
        }
        int found = PQntuples(res) > 0;
        if (found) {
                snprintf(ret->state, sizeof ret->state, "%s", PQgetvalue(res, 0, 0));
                long long *v[] = { &ret->chunks_done, &ret->chunks, &ret->data_rows, &ret->loaded, &ret->rejected,
                        &ret->superseded };
                for (int i = 0; i < 6; i++)
                        *v[i] = atoll(PQgetvalue(res, 0, i + 1));
                *ret_aggregated = PQgetvalue(res, 0, 7)[0] == 't';
                snprintf(error, n, "%s", PQgetvalue(res, 0, 8));
        }
        PQclear(res);
        return found;
}

typedef struct Waiting {
        const char *name;
        bool tty, need_aggregate;
        double dropped, loading_since; /* monotonic; loading_since 0: not seen */
        long long rows_before;         /* rows done when loading was first seen */
        char last[512];
} Waiting;

static void show(Waiting *w, const FileProgress *p)
{
        char line[512];
        double now = now_monotonic(), rate = 0;

        if (!w->tty) {
                show_piped(w->name, p, w->last, sizeof w->last);
                return;
        }
        if (strcmp(p->state, STATE_LOADING) == 0 && w->loading_since == 0) {
                w->loading_since = now;
                w->rows_before = progress_rows_done(p);
        }
        if (w->loading_since > 0 && now - w->loading_since > 0.2)
                rate = (double)(progress_rows_done(p) - w->rows_before) / (now - w->loading_since);
        progress_tty_line(line, sizeof line, w->name, p, rate);
        fprintf(stderr, "\r\033[K%s", line);
}

/* 0 done, 1 failed, -1 not yet. */
static int finished(Waiting *w, const FileProgress *p, bool aggregated, const char *error)
{
        char line[512];

        if (strcmp(p->state, STATE_FAILED) == 0) {
                fprintf(stderr, "%singestctl: %s failed: %s\n", w->tty ? "\n" : "", w->name, error);
                return 1;
        }
        if (strcmp(p->state, STATE_DONE) != 0 || (w->need_aggregate && !aggregated))
                return -1;
        if (w->tty) {
                progress_summary(line, sizeof line, w->name, p, now_monotonic() - w->dropped);
                fprintf(stderr, "\r\033[K%s%s\n", line, w->need_aggregate ? "; products_agg refreshed" : "");
        } else {
                fprintf(stderr, "%s: done, products_agg refreshed\n", w->name);
        }
        return 0;
}

int progress_wait(PGconn *c, const Config *cfg, const char *name, long long after, double timeout)
{
        char afters[32], error[1024], *shown = name_escape(name);
        const char *p[2] = { shown, afters };
        Waiting w = { name, isatty(STDERR_FILENO), cfg->aggregate_after_load || cfg->aggregate_interval > 0,
                now_monotonic(), 0, 0, "" };
        double deadline = timeout > 0 ? w.dropped + timeout : 0;
        int r = -1;

        snprintf(afters, sizeof afters, "%lld", after);
        while (r < 0) {
                FileProgress fp = { 0 };
                bool aggregated = false;
                int found = read_progress(c, p, &fp, &aggregated, error, sizeof error);
                if (found < 0) {
                        r = EX_UNAVAILABLE;
                        break;
                }
                if (found == 0 && w.tty)
                        fprintf(stderr, "\r\033[K%s: waiting for ingestd to pick it up", name);
                if (found > 0) {
                        show(&w, &fp);
                        r = finished(&w, &fp, aggregated, error);
                }
                if (r < 0 && deadline > 0 && now_monotonic() > deadline) {
                        fprintf(stderr, "%singestctl: timed out waiting for %s\n", w.tty ? "\n" : "", name);
                        r = 2;
                }
                if (r < 0)
                        nanosleep(&(struct timespec){ 0, POLL_NS }, NULL);
        }
        free(shown);
        return r;
}
