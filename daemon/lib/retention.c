/* retention.c - see retention.h. Only files done and counted in products_agg
 * are pruned: a failed file keeps its chunks for ingestctl retry and its
 * rejects for the operator, and no load, refresh or retry reads or locks the
 * rows of a file done and aggregated. Each DELETE takes at most BATCH rows by
 * ctid in its own transaction, so a prune never holds a lock for long; the
 * file row is stamped (pruned_at, removed_at) when its part is gone, and a
 * prune interrupted anywhere is completed by the next. */
#include "retention.h"
#include "db.h"
#include "state.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BATCH "5000"       /* rows per DELETE */
#define FILES_PER_ROUND 50 /* file rows read per query */

#define OLD_DONE(stamp) \
        "state = " SQL_DONE " AND aggregated_at IS NOT NULL AND " stamp " IS NULL " \
        "AND finished_at < now() - make_interval(secs => $1::float8)"

double retention_interval(const Config *cfg)
{
        double h = cfg->retention_history, d = cfg->retention_done_files;
        double shorter = h > 0 && (d <= 0 || h < d) ? h : d;

        if (shorter <= 0)
                return 0;
        shorter /= 10;
        return shorter < 1 ? 1 : shorter > 3600 ? 3600 : shorter;
}

static long long count_of(PGresult *res, int col)
{
        return res && PQntuples(res) > 0 ? atoll(PQgetvalue(res, 0, col)) : 0;
}

int retention_count(PGconn *c, const Config *cfg, RetentionCounts *ret, char **ret_error)
{
        char h[32], d[32];
        const char *ph[1] = { h }, *pd[1] = { d };
        RetentionCounts n = { 0 };

        snprintf(h, sizeof h, "%.17g", cfg->retention_history);
        snprintf(d, sizeof d, "%.17g", cfg->retention_done_files);
        if (cfg->retention_history > 0) {
                PGresult *res = db_query(c, ret_error,
                        "WITH f AS (SELECT id FROM ingest.files WHERE " OLD_DONE(
                                "pruned_at") ") "
                                             "SELECT (SELECT count(*) FROM f), "
                                             " (SELECT count(*) FROM ingest.chunks WHERE file_id IN (SELECT id FROM f)), "
                                             " (SELECT count(*) FROM ingest.rejects WHERE file_id IN (SELECT id FROM f))",
                        1, ph);
                if (!res)
                        return -EIO;
                n.files = count_of(res, 0), n.chunks = count_of(res, 1), n.rejects = count_of(res, 2);
                PQclear(res);
        }
        if (cfg->retention_done_files > 0) {
                PGresult *res = db_query(
                        c, ret_error, "SELECT path FROM ingest.files WHERE " OLD_DONE("removed_at"), 1, pd);
                if (!res)
                        return -EIO;
                for (int i = 0; i < PQntuples(res); i++) {
                        char *full = xasprintf("%s/done/%s", cfg->state, PQgetvalue(res, i, 0));
                        struct stat st;
                        if (stat(full, &st) == 0)
                                n.done_files++, n.done_bytes += (long long)st.st_size;
                        free(full);
                }
                PQclear(res);
        }
        *ret = n;
        return 0;
}

/* Deletes the rows of `table` for file `id`, BATCH at a time; the count, or -EIO. */
static long long delete_rows(PGconn *c, const char *table, const char *id, char **ret_error)
{
        char *sql = xasprintf("WITH d AS (DELETE FROM ingest.%s WHERE ctid = ANY (ARRAY("
                              "  SELECT ctid FROM ingest.%s WHERE file_id = $1 LIMIT " BATCH ")) RETURNING 1) "
                              "SELECT count(*) FROM d",
                table, table);
        const char *p[1] = { id };
        long long total = 0, n;

        do {
                PGresult *res = db_query(c, ret_error, sql, 1, p);
                n = res ? count_of(res, 0) : -1;
                PQclear(res);
                total += n > 0 ? n : 0;
        } while (n > 0);
        free(sql);
        return n < 0 ? -EIO : total;
}

static int stamp(PGconn *c, const char *column, const char *id, char **ret_error)
{
        char *sql = xasprintf("UPDATE ingest.files SET %s = now() WHERE id = $1", column);
        int r = db_exec(c, ret_error, sql, 1, (const char *[]){ id });

        free(sql);
        return r;
}

/* What goes of one old done file (id, path); 0 or a negative errno. */
typedef int (*PruneStep)(
        PGconn *c, const Config *cfg, const char *id, const char *path, RetentionCounts *n, char **ret_error);

/* Every done file older than `age` seconds whose `column` is not stamped
 * yet, FILES_PER_ROUND per query: step, then the stamp. */
static int for_old_files(PGconn *c, const Config *cfg, const char *column, double age, PruneStep step,
        RetentionCounts *n, char **ret_error)
{
        char ages[32],
                *sql = xasprintf("SELECT id, path FROM ingest.files WHERE " OLD_DONE("%s") " ORDER BY id LIMIT %d",
                        column, FILES_PER_ROUND);
        const char *p[1] = { ages };
        int rows, r = 0;

        snprintf(ages, sizeof ages, "%.17g", age);
        do {
                PGresult *res = db_query(c, ret_error, sql, 1, p);
                rows = res ? PQntuples(res) : 0;
                r = res ? 0 : -EIO;
                for (int i = 0; i < rows && r == 0; i++) {
                        r = step(c, cfg, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), n, ret_error);
                        if (r == 0 && stamp(c, column, PQgetvalue(res, i, 0), ret_error) < 0)
                                r = -EIO;
                }
                PQclear(res);
        } while (r == 0 && rows == FILES_PER_ROUND);
        free(sql);
        return r;
}

static int prune_history(
        PGconn *c, const Config *cfg, const char *id, const char *path, RetentionCounts *n, char **ret_error)
{
        long long rj = delete_rows(c, "rejects", id, ret_error);
        long long ch = rj < 0 ? -1 : delete_rows(c, "chunks", id, ret_error);

        (void)cfg, (void)path;
        if (ch < 0)
                return -EIO;
        n->files++, n->chunks += ch, n->rejects += rj;
        return 0;
}

static int remove_done_file(
        PGconn *c, const Config *cfg, const char *id, const char *path, RetentionCounts *n, char **ret_error)
{
        char *full = xasprintf("%s/done/%s", cfg->state, path);
        struct stat st;
        bool there = stat(full, &st) == 0;
        int r = there && unlink(full) < 0 && errno != ENOENT ? -errno : 0;

        (void)c, (void)id;
        if (r < 0)
                *ret_error = xasprintf("cannot delete %s: %s", full, strerror(-r));
        else if (there)
                n->done_files++, n->done_bytes += (long long)st.st_size;
        free(full);
        return r;
}

int retention_prune(PGconn *c, const Config *cfg, RetentionCounts *ret, char **ret_error)
{
        int r = 0;

        *ret = (RetentionCounts){ 0 };
        if (cfg->retention_history > 0)
                r = for_old_files(c, cfg, "pruned_at", cfg->retention_history, prune_history, ret, ret_error);
        if (r == 0 && cfg->retention_done_files > 0)
                r = for_old_files(c, cfg, "removed_at", cfg->retention_done_files, remove_done_file, ret, ret_error);
        return r;
}
