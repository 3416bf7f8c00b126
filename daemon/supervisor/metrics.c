/* metrics.c - see metrics.h. Every label set of a counter is rendered from
 * the start, at 0: Prometheus's increase() sees nothing of a series whose
 * first sample is already 1. */
#include "metrics.h"
#include "db.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_BUCKETS 14

typedef struct Histogram {
        const char *name, *help;
        const double *bounds; /* upper bounds, ascending; +Inf is implied */
        size_t n;
        uint64_t counts[MAX_BUCKETS]; /* per bucket, not cumulative */
        uint64_t count;
        double sum;
} Histogram;

static const double chunk_bounds[] = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 };
static const double file_bounds[] = { 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600 };
static const double refresh_bounds[] = { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300 };
#define BOUNDS(a) .bounds = (a), .n = sizeof(a) / sizeof((a)[0])

static const char *const outcomes[] = { "loaded", "rejected", "superseded" };
static const char *const file_results[] = { "done", "failed" };
static const char *const chunk_results[N_CHUNK_RESULTS] = { "done", "retried", "failed" };

static struct Registry {
        double started;       /* Unix time */
        uint64_t rows[2][3];  /* kind, outcome */
        uint64_t files[2][2]; /* kind, result */
        uint64_t chunks[N_CHUNK_RESULTS];
        uint64_t rejects[N_REJECT_CODES];
        uint64_t crashes, takeovers;
        double worker_cpu, worker_max_rss;
        Histogram chunk, file, lag, refresh;
        MetricsBacklog backlog;
        bool changed; /* since the last rendering */
} reg;

static double wall_now(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void metrics_reset(void)
{
        reg = (struct Registry){
                .started = wall_now(),
                .chunk = { .name = "ingestd_chunk_duration_seconds",
                        .help = "Seconds from a chunk worker's start to its exit, "
                                "for committed chunks.",
                        BOUNDS(chunk_bounds) },
                .file = { .name = "ingestd_file_duration_seconds",
                        .help = "Seconds from a file's arrival to its rows committed, "
                                "for files done.",
                        BOUNDS(file_bounds) },
                .lag = { .name = "ingestd_file_aggregate_lag_seconds",
                        .help = "Seconds from a file's arrival to products_agg "
                                "counting its rows, for files done.",
                        BOUNDS(file_bounds) },
                .refresh = { .name = "ingestd_aggregate_refresh_duration_seconds",
                        .help = "Seconds a committed products_agg refresh took.",
                        BOUNDS(refresh_bounds) },
        };
}

static void observe(Histogram *h, double v)
{
        size_t i = 0;

        while (i < h->n && v > h->bounds[i])
                i++;
        h->counts[i]++; /* i == n: only +Inf */
        h->count++;
        h->sum += v;
}

void metrics_file_closed(const FileSummary *f, bool failed)
{
        int k = f->kind == KIND_UPDATE;

        reg.rows[k][0] += (uint64_t)f->loaded;
        reg.rows[k][1] += (uint64_t)f->rejected;
        reg.rows[k][2] += (uint64_t)f->superseded;
        reg.files[k][failed]++;
        reg.changed = true;
        for (int i = 0; i < N_REJECT_CODES; i++)
                reg.rejects[i] += f->rejects[i];
        if (!failed)
                observe(&reg.file, f->seconds);
}

void metrics_chunk_exit(ChunkResult result, bool crashed, double seconds)
{
        reg.chunks[result]++;
        reg.crashes += crashed;
        reg.changed = true;
        if (result == CHUNK_RESULT_DONE)
                observe(&reg.chunk, seconds);
}

void metrics_worker_usage(const struct rusage *ru)
{
        reg.worker_cpu += (double)(ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) +
                          (double)(ru->ru_utime.tv_usec + ru->ru_stime.tv_usec) / 1e6;
        if ((double)ru->ru_maxrss * 1024 > reg.worker_max_rss)
                reg.worker_max_rss = (double)ru->ru_maxrss * 1024; /* kilobytes on Linux */
}

void metrics_takeovers(int chunks)
{
        reg.takeovers += (uint64_t)(chunks > 0 ? chunks : 0);
        reg.changed |= chunks > 0;
}

bool metrics_changed(void) { return reg.changed; }

int metrics_read_refresh(PGconn *c, char **ret_error)
{
        PGresult *res = db_query(c, ret_error,
                "SELECT r.seconds, extract(epoch FROM f.aggregated_at - f.registered_at) "
                "FROM ingest.aggregate_runs r LEFT JOIN ingest.files f ON f.state = " SQL_DONE
                " AND f.aggregated_at = r.refreshed_at",
                0, NULL);

        if (!res)
                return -EIO;
        if (PQntuples(res) > 0)
                observe(&reg.refresh, strtod(PQgetvalue(res, 0, 0), NULL));
        for (int i = 0; i < PQntuples(res); i++)
                if (!PQgetisnull(res, i, 1))
                        observe(&reg.lag, strtod(PQgetvalue(res, i, 1), NULL));
        reg.changed = true;
        PQclear(res);
        return 0;
}

int metrics_read_backlog(PGconn *c, char **ret_error)
{
        PGresult *res = db_query(c, ret_error,
                "SELECT count(*) FILTER (WHERE f.state = " SQL_NEW "), count(*) FILTER (WHERE f.state = " SQL_LOADING
                "), "
                "  coalesce(sum(greatest(coalesce(f.size, 0) - coalesce((SELECT sum(k.end_offset - k.start_offset) "
                "     FROM ingest.chunks k WHERE k.file_id = f.id AND k.state = " SQL_DONE ") / f.lanes, 0), 0)), 0), "
                "  coalesce(extract(epoch FROM now() - min(f.registered_at)), 0), "
                "  coalesce((SELECT extract(epoch FROM refreshed_at) FROM ingest.aggregate_runs), 0), "
                "  coalesce((SELECT extract(epoch FROM now() - min(finished_at)) FROM ingest.files "
                "            WHERE aggregated_at IS NULL AND state IN (" SQL_DONE ", " SQL_FAILED ")), 0) "
                "FROM ingest.files f WHERE f.state IN (" SQL_NEW ", " SQL_LOADING ")",
                0, NULL);

        if (!res)
                return -EIO;
        double v[6];
        for (int i = 0; i < 6; i++)
                v[i] = strtod(PQgetvalue(res, 0, i), NULL);
        reg.backlog = (MetricsBacklog){ v[0], v[1], v[2], v[3], v[4], v[5] };
        PQclear(res);
        return 0;
}

/* ---- rendering ------------------------------------------------------------ */

/* The shortest of %.15g and %.17g that reads back as v: 0.247016, not
 * 0.24701600000000001. */
typedef struct Num {
        char s[32];
} Num;

static Num num(double v)
{
        Num n;

        snprintf(n.s, sizeof n.s, "%.15g", v);
        if (strtod(n.s, NULL) != v)
                snprintf(n.s, sizeof n.s, "%.17g", v);
        return n;
}

static void head(Buf *b, const char *name, const char *type, const char *help)
{
        buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void gauge(Buf *b, const char *name, const char *help, double v)
{
        head(b, name, "gauge", help);
        buf_printf(b, "%s %s\n", name, num(v).s);
}

static void counter(Buf *b, const char *name, const char *help, double v)
{
        head(b, name, "counter", help);
        buf_printf(b, "%s %s\n", name, num(v).s);
}

static void histogram(Buf *b, const Histogram *h)
{
        uint64_t cumulative = 0;

        head(b, h->name, "histogram", h->help);
        for (size_t i = 0; i < h->n; i++) {
                cumulative += h->counts[i];
                buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", h->name, h->bounds[i], (unsigned long long)cumulative);
        }
        buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %s\n%s_count %llu\n", h->name, (unsigned long long)h->count,
                h->name, num(h->sum).s, h->name, (unsigned long long)h->count);
}

/* A label value in the exposition's escaping: backslash, quote, newline. */
static void label_value(Buf *b, const char *v)
{
        for (; *v; v++) {
                if (*v == '\\' || *v == '"')
                        buf_append(b, "\\", 1);
                if (*v == '\n')
                        buf_append(b, "\\n", 2);
                else
                        buf_append(b, v, 1);
        }
}

static void render_counters(Buf *b)
{
        head(b, "ingestd_rows_total", "counter", "Rows of the files finished, by file kind and outcome.");
        for (int k = 0; k < 2; k++)
                for (int o = 0; o < 3; o++)
                        buf_printf(b, "ingestd_rows_total{kind=\"%s\",outcome=\"%s\"} %llu\n",
                                file_kind_name((FileKind)k), outcomes[o], (unsigned long long)reg.rows[k][o]);
        head(b, "ingestd_files_total", "counter", "Files finished, by kind and result.");
        for (int k = 0; k < 2; k++)
                for (int r = 0; r < 2; r++)
                        buf_printf(b, "ingestd_files_total{kind=\"%s\",result=\"%s\"} %llu\n",
                                file_kind_name((FileKind)k), file_results[r], (unsigned long long)reg.files[k][r]);
        head(b, "ingestd_rejects_total", "counter", "Rejected rows of the files finished, by reason code.");
        for (int i = 0; i < N_REJECT_CODES; i++)
                buf_printf(b, "ingestd_rejects_total{reason=\"%s\"} %llu\n", reject_code_name((RejectCode)i),
                        (unsigned long long)reg.rejects[i]);
        head(b, "ingestd_chunks_total", "counter", "Chunk worker exits, by result.");
        for (int i = 0; i < N_CHUNK_RESULTS; i++)
                buf_printf(b, "ingestd_chunks_total{result=\"%s\"} %llu\n", chunk_results[i],
                        (unsigned long long)reg.chunks[i]);
        counter(b, "ingestd_worker_crashes_total", "Chunk workers killed by a signal or ending with an unknown code.",
                (double)reg.crashes);
        counter(b, "ingestd_takeovers_total", "Chunks of dead nodes taken over by this node.", (double)reg.takeovers);
        counter(b, "ingestd_worker_cpu_seconds_total", "User and system CPU of the chunk workers reaped.",
                reg.worker_cpu);
        gauge(b, "ingestd_worker_max_resident_memory_bytes", "The largest peak RSS of a chunk worker reaped.",
                reg.worker_max_rss);
}

static void render_backlog(Buf *b)
{
        const MetricsBacklog *g = &reg.backlog;

        head(b, "ingestd_backlog_files", "gauge", "Files registered and not finished, by state.");
        buf_printf(b, "ingestd_backlog_files{state=\"new\"} %s\n", num(g->files_new).s);
        buf_printf(b, "ingestd_backlog_files{state=\"loading\"} %s\n", num(g->files_loading).s);
        gauge(b, "ingestd_backlog_bytes", "Bytes of the files not finished whose rows are not committed.", g->bytes);
        gauge(b, "ingestd_oldest_waiting_file_age_seconds", "Seconds since the oldest unfinished file arrived.",
                g->oldest_age);
        gauge(b, "ingestd_aggregate_last_refresh_timestamp_seconds",
                "Unix time of the last committed products_agg refresh; 0 before the first.", g->last_refresh);
        gauge(b, "ingestd_aggregate_behind_seconds",
                "Seconds since the oldest finished file that products_agg does not count yet finished.",
                g->unaggregated_age);
}

static void render_process(Buf *b)
{
        struct rusage ru;
        struct rlimit rl;
        long pages = 0, resident = 0;
        FILE *f = fopen("/proc/self/statm", "re");
        int fds = 0;

        if (f) {
                if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
                        pages = resident = 0;
                fclose(f);
        }
        DIR *d = opendir("/proc/self/fd");
        for (struct dirent *e; d && (e = readdir(d));)
                fds += e->d_name[0] != '.';
        if (d)
                closedir(d);
        getrusage(RUSAGE_SELF, &ru);
        getrlimit(RLIMIT_NOFILE, &rl);
        counter(b, "process_cpu_seconds_total", "User and system CPU of the supervisor.",
                (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                        (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
        gauge(b, "process_resident_memory_bytes", "Resident memory of the supervisor.",
                (double)resident * (double)sysconf(_SC_PAGESIZE));
        gauge(b, "process_virtual_memory_bytes", "Virtual memory of the supervisor.",
                (double)pages * (double)sysconf(_SC_PAGESIZE));
        gauge(b, "process_open_fds", "Open file descriptors of the supervisor (the count includes the one read).",
                (double)(fds > 0 ? fds - 1 : 0));
        gauge(b, "process_max_fds", "The supervisor's limit of open file descriptors.", (double)rl.rlim_cur);
        gauge(b, "process_start_time_seconds", "Unix time the supervisor started.", reg.started);
}

void metrics_render(Buf *out, const MetricsLive *live)
{
        out->len = 0;
        reg.changed = false;
        head(out, "ingestd_build_info", "gauge", "The running version; always 1.");
        buf_printf(out, "ingestd_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
        head(out, "ingestd_node_info", "gauge", "This instance's cluster.node; always 1.");
        buf_append(out, "ingestd_node_info{node=\"", 24);
        label_value(out, live->node);
        buf_append(out, "\"} 1\n", 5);
        gauge(out, "ingestd_database_up", "1 while the supervisor's connection to the database works.",
                live->database_up);
        gauge(out, "ingestd_leader", "1 while this node leads (scans, plans, refreshes products_agg).", live->leader);
        gauge(out, "ingestd_workers_busy", "Chunk workers running.", live->workers_busy);
        gauge(out, "ingestd_workers_max", "Chunk workers this node may run.", live->workers_max);
        render_counters(out);
        histogram(out, &reg.chunk);
        histogram(out, &reg.file);
        histogram(out, &reg.lag);
        histogram(out, &reg.refresh);
        render_backlog(out);
        render_process(out);
        buf_reserve(out, 1);
        out->data[out->len] = '\0';
}
