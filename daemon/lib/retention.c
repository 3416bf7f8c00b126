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

/* The ids (or paths) of up to FILES_PER_ROUND old done files not yet stamped. */
static PGresult *old_files(PGconn *c, const char *stamp_sql, const char *age, char **ret_error)
{
        const char *p[1] = { age };
        char *sql = xasprintf(
                "SELECT id, path FROM ingest.files WHERE %s ORDER BY id LIMIT %d", stamp_sql, FILES_PER_ROUND);
        PGresult *res = db_query(c, ret_error, sql, 1, p);

        free(sql);
        return res;
}

static int stamp(PGconn *c, const char *column, const char *id, char **ret_error)
{
        char *sql = xasprintf("UPDATE ingest.files SET %s = now() WHERE id = $1", column);
        int r = db_exec(c, ret_error, sql, 1, (const char *[]){ id });

        free(sql);
        return r;
}

static int prune_history(PGconn *c, const Config *cfg, RetentionCounts *n, char **ret_error)
{
        char age[32];
        int rows;

        snprintf(age, sizeof age, "%.17g", cfg->retention_history);
        do {
                PGresult *res = old_files(c, OLD_DONE("pruned_at"), age, ret_error);
                if (!res)
                        return -EIO;
                rows = PQntuples(res);
                for (int i = 0; i < rows; i++) {
                        const char *id = PQgetvalue(res, i, 0);
                        long long rj = delete_rows(c, "rejects", id, ret_error);
                        long long ch = rj < 0 ? -1 : delete_rows(c, "chunks", id, ret_error);
                        if (ch < 0 || stamp(c, "pruned_at", id, ret_error) < 0) {
                                PQclear(res);
                                return -EIO;
                        }
                        n->files++, n->chunks += ch, n->rejects += rj;
                }
                PQclear(res);
        } while (rows == FILES_PER_ROUND);
        return 0;
}

static int remove_done_files(PGconn *c, const Config *cfg, RetentionCounts *n, char **ret_error)
{
        char age[32];
        int rows;

        snprintf(age, sizeof age, "%.17g", cfg->retention_done_files);
        do {
                PGresult *res = old_files(c, OLD_DONE("removed_at"), age, ret_error);
                if (!res)
                        return -EIO;
                rows = PQntuples(res);
                for (int i = 0; i < rows; i++) {
                        char *full = xasprintf("%s/done/%s", cfg->state, PQgetvalue(res, i, 1));
                        struct stat st;
                        bool there = stat(full, &st) == 0;
                        int r = there && unlink(full) < 0 && errno != ENOENT ? -errno : 0;
                        if (r < 0)
                                *ret_error = xasprintf("cannot delete %s: %s", full, strerror(-r));
                        free(full);
                        if (r < 0 || stamp(c, "removed_at", PQgetvalue(res, i, 0), ret_error) < 0) {
                                PQclear(res);
                                return r < 0 ? r : -EIO;
                        }
                        if (there)
                                n->done_files++, n->done_bytes += (long long)st.st_size;
                }
                PQclear(res);
        } while (rows == FILES_PER_ROUND);
        return 0;
}

int retention_prune(PGconn *c, const Config *cfg, RetentionCounts *ret, char **ret_error)
{
        int r = 0;

        *ret = (RetentionCounts){ 0 };
        if (cfg->retention_history > 0)
                r = prune_history(c, cfg, ret, ret_error);
        if (r == 0 && cfg->retention_done_files > 0)
                r = remove_done_files(c, cfg, ret, ret_error);
        return r;
}
