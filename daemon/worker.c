/* worker.c - one chunk, one transaction: lock the chunk row, COPY the valid
 * rows of its key lane into a temporary staging table, wait until the previous
 * chunk of the same lane has committed, apply one upsert (or update), store the
 * rejects, mark the chunk done, COMMIT. The commit is the checkpoint; the row
 * lock makes a second worker for the same chunk wait and then find it done, so
 * each chunk is applied exactly once. Applying each lane's chunks in file order
 * (lanes hold disjoint skus) makes the table equal to a sequential load even
 * though unchanged rows are skipped. Any failure rolls back everything. */
#include "worker.h"
#include "db.h"
#include "loader.h"
#include "log.h"
#include "planner.h"
#include "registry.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define COPY_FLUSH (256u << 10)

static volatile sig_atomic_t stop_requested;
static void on_term(int sig) { (void)sig; stop_requested = 1; }

typedef struct Job {
        const Config *cfg;
        PGconn *conn;
        int64_t file_id;
        int chunk_no;
        const char *path;
        char ids[2][32];           /* file_id, chunk_no as text parameters */
        FileKind kind;
        int lane, lanes;
        Header header;
        PlanChunk range;
        LoadCounts counts;
        uint64_t loaded, superseded, rejected;
        double t_stage, t_wait, t_apply, t_commit;   /* seconds per phase, for the log */
        char *error;
} Job;

static LogCtx job_ctx(const Job *j)
{
        return (LogCtx){ registry_dropped_name(j->path), j->file_id, j->chunk_no, -1, NULL };
}

/* Locks our chunk row. Returns 1 when there is work, 0 when already done. A
 * successor's probe holds the row for an instant, hence a short lock timeout
 * rather than NOWAIT; a second live worker on the chunk holds it far longer. */
static int lock_chunk(Job *j)
{
        const char *p[2] = { j->ids[0], j->ids[1] };
        PGresult *res = db_query(j->conn, &j->error,
                "SELECT c.state, c.start_offset, c.end_offset, c.first_line, f.kind, c.lane, f.lanes "
                "FROM ingest.chunks c JOIN ingest.files f ON f.id = c.file_id "
                "WHERE c.file_id = $1 AND c.no = $2 FOR UPDATE OF c", 2, p);
        int r;

        if (!res)
                return -EIO;
        if (PQntuples(res) != 1) {
                j->error = xstrdup("chunk not found in ingest.chunks");
                PQclear(res);
                return -ENOENT;
        }
        r = strcmp(PQgetvalue(res, 0, 0), "done") != 0;
        j->range.start = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        j->range.end = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
        j->range.first_line = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
        j->kind = strcmp(PQgetvalue(res, 0, 4), "update") == 0 ? KIND_UPDATE : KIND_INGEST;
        j->lane = atoi(PQgetvalue(res, 0, 5));
        j->lanes = atoi(PQgetvalue(res, 0, 6));
        PQclear(res);
        return r;
}

static int copy_flush(Buf *rows, void *ud)
{
        Job *j = ud;

        if (PQputCopyData(j->conn, rows->data, (int)rows->len) != 1) {
                j->error = db_error(j->conn, NULL);
                return -EIO;
        }
        rows->len = 0;
        return 0;
}

static int copy_end(Job *j)
{
        if (PQputCopyEnd(j->conn, NULL) != 1) {
                j->error = db_error(j->conn, NULL);
                return -EIO;
        }
        PGresult *res = PQgetResult(j->conn);
        int r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -EIO;
        if (r < 0)
                j->error = db_error(j->conn, res);
        PQclear(res);
        while ((res = PQgetResult(j->conn)))
                PQclear(res);
        return r;
}

static int copy_begin(Job *j, const char *sql)
{
        PGresult *res = PQexec(j->conn, sql);
        int r = PQresultStatus(res) == PGRES_COPY_IN ? 0 : -EIO;

        if (r < 0)
                j->error = db_error(j->conn, res);
        PQclear(res);
        return r;
}

/* Maps the file and checks it is still the one that was planned. */
static int map_file(Job *j, const char **ret_map, size_t *ret_size)
{
        struct stat st;
        int fd = open(j->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

        if (fd < 0 || fstat(fd, &st) < 0) {
                j->error = xasprintf("%s: %s", j->path, strerror(errno));
                if (fd >= 0)
                        close(fd);
                return -ENOENT;
        }
        if ((uint64_t)st.st_size < j->range.end) {
                j->error = xasprintf("%s: file is shorter than when it was planned", j->path);
                close(fd);
                return -ENOENT;
        }
        const char *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        if (map == MAP_FAILED) {
                j->error = xasprintf("%s: mmap: %s", j->path, strerror(errno));
                return -ENOENT;
        }
        *ret_map = map;
        *ret_size = (size_t)st.st_size;
        return 0;
}

static int stage_rows(Job *j, Buf *rejects)
{
        const char *map = NULL;
        size_t size = 0;
        Buf rows = { 0 };
        int r = map_file(j, &map, &size);

        if (r < 0)
                return r;
        r = header_parse(map, size, j->kind, j->cfg->key, &j->header, &j->error);
        if (r < 0)
                goto out;
        /* the key columns take the collation of products' */
        r = db_exec(j->conn, &j->error,
                    "CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT sku, name, description, "
                    "0::bigint AS line, 0::bigint AS byte_offset FROM public.products WITH NO DATA", 0, NULL);
        if (r < 0 || (r = copy_begin(j, "COPY pg_temp.stage FROM STDIN")) < 0)
                goto out;
        LoaderInput in = { map, j->range.start, j->range.end, j->range.first_line, &j->header,
                           j->cfg->max_field, j->file_id, j->chunk_no, (unsigned)j->lane,
                           (unsigned)j->lanes };
        r = loader_run(&in, &rows, rejects, COPY_FLUSH, copy_flush, j, &j->counts);
        if (r == 0)
                r = copy_end(j);
        if (r < 0 && r != -ENOENT)
                r = -EIO;
out:
        buf_free(&rows);
        munmap((void *)map, size);
        return r;
}

/* Blocks until chunk no-lanes (the previous range of our lane) has committed. 1 = go on, 0 = give up (stop or the
 * file failed), <0 = database error. FOR SHARE waits while the predecessor's
 * worker holds its row; the savepoint is rolled back at once so that our share
 * lock never blocks a predecessor that has not started yet. */
static int wait_predecessor(Job *j)
{
        char prev[32];
        const char *p[2] = { j->ids[0], prev };

        if (j->chunk_no <= j->lanes)
                return 1;
        snprintf(prev, sizeof prev, "%d", j->chunk_no - j->lanes);
        for (;;) {
                if (db_exec(j->conn, &j->error, "SAVEPOINT predecessor", 0, NULL) < 0)
                        return -EIO;
                PGresult *res = db_query(j->conn, &j->error,
                        "SELECT c.state, f.state FROM ingest.chunks c JOIN ingest.files f ON f.id = c.file_id "
                        "WHERE c.file_id = $1 AND c.no = $2 FOR SHARE OF c", 2, p);
                if (!res || db_exec(j->conn, &j->error, "ROLLBACK TO SAVEPOINT predecessor", 0, NULL) < 0) {
                        PQclear(res);
                        return -EIO;
                }
                bool done = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "done") == 0;
                bool failed = PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 1), "failed") == 0;
                PQclear(res);
                if (done)
                        return 1;
                if (failed || stop_requested)
                        return 0;
                nanosleep(&(struct timespec){ 0, 10L * 1000 * 1000 }, NULL);
        }
}

/* Of a chunk's distinct rows, "outranked" ones are older than the row in the
 * table (a later file got there first) and are not applied; "superseding" ones
 * replace a row an earlier chunk of this same file wrote, which thereby
 * becomes superseded. Both move a row from loaded to superseded.
 *
 * One LEFT JOIN finds each row's current version; absent keys then take a
 * plain INSERT and changed ones an UPDATE. This is cheaper than INSERT ... ON
 * CONFLICT (whose speculative insertion measured 1.62 s against 0.94 s for a
 * plain INSERT of 466,761 rows) and safe because a key's chunks (its lane) are
 * applied one at a time in file order; a concurrent outside writer makes the
 * INSERT fail with a unique violation, and the chunk is retried. */
/* products_agg changes of this chunk, by name, into ingest.agg_delta in the
 * same transaction: inserted rows count +1 for their name, an update that
 * renames a product -1 for the old name and +1 for the new one. The refresh
 * after the load folds these in instead of recounting products. When a chunk
 * changes more than a tenth of the table's estimated rows (always on the
 * first load into an empty table), recording the deltas costs more than
 * recounting, and the chunk leaves a NULL-name row that asks for a recount.
 * The table's size is reltuples, or, before the first ANALYZE (-1, as right
 * after a bulk load), its bytes over 256 (rows are ~200 bytes in the file).
 * Once a recount is pending, later chunks leave only their own request (not
 * none: the pending one may belong to a refresh that will not see this chunk). */
#define AGG_DELTA \
        " x AS (SELECT name, 1 AS delta FROM i " \
        "       UNION ALL SELECT v.name, v.delta FROM u, " \
        "         LATERAL (VALUES (u.new_name, 1), (u.old_name, -1)) v(name, delta) " \
        "       WHERE u.new_name <> u.old_name), " \
        " big AS (SELECT EXISTS (SELECT 1 FROM ingest.agg_delta WHERE name IS NULL) " \
        "                OR (SELECT count(*) FROM x) > 0.1 * greatest(reltuples, " \
        "                   pg_relation_size(oid) / 256) AS recount " \
        "         FROM pg_class WHERE oid = 'public.products'::regclass), " \
        " d AS (INSERT INTO ingest.agg_delta (name, delta) " \
        "       SELECT name, sum(delta) FROM x WHERE NOT (SELECT recount FROM big) " \
        "       GROUP BY name HAVING sum(delta) <> 0 " \
        "       UNION ALL SELECT NULL, 0 FROM big WHERE recount AND EXISTS (SELECT 1 FROM x)) "

#define APPLY_INGEST(KEY, JOIN, SET, CHANGED) \
        "WITH s AS (SELECT DISTINCT ON (" KEY ") sku, name, description, line FROM pg_temp.stage " \
        "           ORDER BY " KEY ", line DESC), " \
        " k AS (SELECT s.*, p.sku IS NOT NULL AS present, p.name AS old_name, " \
        "              (p.file_seq, p.line) >= ($1::bigint, s.line) AS outranked, " \
        "              p.file_seq = $1::bigint AND p.line < s.line AS superseding, " \
        "              " CHANGED " AS changed " \
        "       FROM s LEFT JOIN public.products p ON " JOIN "), " \
        " u AS (UPDATE public.products p SET " SET "file_seq = $1::bigint, line = s.line " \
        "       FROM k s WHERE " JOIN " AND s.present AND NOT s.outranked AND s.changed " \
        "       RETURNING s.old_name, p.name AS new_name), " \
        " i AS (INSERT INTO public.products (sku, name, description, file_seq, line) " \
        "       SELECT sku, name, description, $1::bigint, line FROM k WHERE NOT present RETURNING name), " \
        AGG_DELTA \
        "SELECT count(*), count(*) FILTER (WHERE outranked), count(*) FILTER (WHERE superseding) FROM k"

static const char *const apply_ingest_sku =
        APPLY_INGEST("sku", "p.sku = s.sku", "name = s.name, description = s.description, ",
                     "(p.name, p.description) IS DISTINCT FROM (s.name, s.description)");

static const char *const apply_ingest_sku_name =
        APPLY_INGEST("sku, name", "p.sku = s.sku AND p.name = s.name", "description = s.description, ",
                     "p.description IS DISTINCT FROM s.description");

/* For update files: the SET list and the change test follow the header. */
static char *apply_update_sql(const Job *j, const Header *h)
{
        bool sku_name = j->cfg->key == KEY_SKU_NAME;
        bool set_name = !sku_name && h->index[COL_NAME] >= 0;
        bool set_desc = h->index[COL_DESCRIPTION] >= 0;
        const char *key = sku_name ? "sku, name" : "sku";
        const char *match = sku_name ? "p.sku = s.sku AND p.name = s.name" : "p.sku = s.sku";
        char set[96], old[64], new[64];

        snprintf(set, sizeof set, "%s%s", set_name ? "name = s.name, " : "",
                 set_desc ? "description = s.description, " : "");
        snprintf(old, sizeof old, "%s%s", set_name ? "p.name, " : "", set_desc ? "p.description, " : "");
        snprintf(new, sizeof new, "%s%s", set_name ? "s.name, " : "", set_desc ? "s.description, " : "");
        return xasprintf(
                "WITH s AS (SELECT DISTINCT ON (%s) sku, name, description, line FROM pg_temp.stage "
                "           ORDER BY %s, line DESC), "
                " k AS (SELECT s.*, p.name AS old_name, (p.file_seq, p.line) >= ($1::bigint, s.line) AS outranked, "
                "       p.file_seq = $1::bigint AND p.line < s.line AS superseding "
                "       FROM s JOIN public.products p ON %s), "
                " u AS (UPDATE public.products p SET %sfile_seq = $1::bigint, line = s.line "
                "       FROM k s WHERE %s AND NOT s.outranked "
                "         AND (%sNULL::text) IS DISTINCT FROM (%sNULL::text) "
                "       RETURNING s.old_name, p.name AS new_name), "
                " i AS (SELECT NULL::text AS name WHERE false), "
                AGG_DELTA
                "SELECT (SELECT count(*) FROM k), (SELECT count(*) FROM k WHERE outranked), "
                "       (SELECT count(*) FROM k WHERE superseding)",
                key, key, match, set, match, old, new);
}

static void apply_result(Job *j, PGresult *res, uint64_t rows)
{
        uint64_t distinct = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        uint64_t outranked = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        uint64_t superseding = strtoull(PQgetvalue(res, 0, 2), NULL, 10);

        j->loaded = distinct - outranked - superseding;
        j->superseded = rows - distinct + outranked + superseding;
}

static int reject_unknown(Job *j, uint64_t *ret_unknown)
{
        const char *p[2] = { j->ids[0], j->ids[1] };
        const char *sql = j->cfg->key == KEY_SKU_NAME
                ? "INSERT INTO ingest.rejects (file_id, chunk_no, line, byte_offset, reason) "
                  "SELECT $1, $2, line, byte_offset, 'unknown sku,name: update files do not insert' "
                  "FROM pg_temp.stage s WHERE NOT EXISTS "
                  "(SELECT 1 FROM public.products p WHERE p.sku = s.sku AND p.name = s.name)"
                : "INSERT INTO ingest.rejects (file_id, chunk_no, line, byte_offset, reason) "
                  "SELECT $1, $2, line, byte_offset, 'unknown sku: update files do not insert' "
                  "FROM pg_temp.stage s WHERE NOT EXISTS "
                  "(SELECT 1 FROM public.products p WHERE p.sku = s.sku)";
        PGresult *res = db_query(j->conn, &j->error, sql, 2, p);

        if (!res)
                return -EIO;
        *ret_unknown = strtoull(PQcmdTuples(res), NULL, 10);
        PQclear(res);
        return 0;
}

static int apply_rows(Job *j)
{
        const char *p[1] = { j->ids[0] };
        uint64_t rows = j->counts.rows, unknown = 0;
        char *sql = NULL;
        int r;

        if (j->kind == KIND_UPDATE) {
                if ((r = reject_unknown(j, &unknown)) < 0)
                        return r;
                rows -= unknown;
                sql = apply_update_sql(j, &j->header);
        }
        const char *text = sql ? sql : j->cfg->key == KEY_SKU_NAME ? apply_ingest_sku_name : apply_ingest_sku;
        PGresult *res = db_query(j->conn, &j->error, text, 1, p);
        free(sql);
        if (!res)
                return -EIO;
        apply_result(j, res, rows);
        j->rejected = j->counts.rejected + unknown;
        PQclear(res);
        return 0;
}

static int store_rejects(Job *j, Buf *rejects)
{
        int r;

        if (rejects->len == 0)
                return 0;
        r = copy_begin(j, "COPY ingest.rejects (file_id, chunk_no, line, byte_offset, reason, raw) FROM STDIN");
        if (r == 0)
                r = copy_flush(rejects, j);
        return r == 0 ? copy_end(j) : r;
}

static int mark_done(Job *j)
{
        char l[32], s[32], rj[32];
        const char *p[5] = { j->ids[0], j->ids[1], l, rj, s };

        snprintf(l, sizeof l, "%" PRIu64, j->loaded);
        snprintf(rj, sizeof rj, "%" PRIu64, j->rejected);
        snprintf(s, sizeof s, "%" PRIu64, j->superseded);
        return db_exec(j->conn, &j->error,
                "UPDATE ingest.chunks SET state = 'done', rows_loaded = $3, rows_rejected = $4, "
                "rows_superseded = $5, finished_at = now(), error = NULL "
                "WHERE file_id = $1 AND no = $2", 5, p);
}

/* The whole transaction. Returns a worker exit status. */
static int load_chunk(Job *j)
{
        Buf rejects = { 0 };
        int r;

        if (db_exec(j->conn, &j->error, "BEGIN", 0, NULL) < 0 ||
            db_exec(j->conn, &j->error, "SET LOCAL lock_timeout = '5s'", 0, NULL) < 0)
                return WORKER_RETRY;
        r = lock_chunk(j);
        if (r > 0 && db_exec(j->conn, &j->error, "SET LOCAL lock_timeout = 0", 0, NULL) < 0)
                r = -EIO;
        if (r <= 0) {
                PQclear(PQexec(j->conn, r == 0 ? "COMMIT" : "ROLLBACK"));
                return r == 0 ? WORKER_DONE : r == -ENOENT ? WORKER_BAD_FILE : WORKER_RETRY;
        }
        double t0 = now_monotonic();
        r = stage_rows(j, &rejects);
        double t1 = now_monotonic();
        if (r == 0)
                r = wait_predecessor(j);
        double t2 = now_monotonic();
        if (r == 0) {
                buf_free(&rejects);
                PQclear(PQexec(j->conn, "ROLLBACK"));
                return WORKER_NOT_RUN;
        }
        if (r > 0)
                r = apply_rows(j);
        if (r == 0)
                r = store_rejects(j, &rejects);
        if (r == 0)
                r = mark_done(j);
        double t3 = now_monotonic();
        if (r == 0)
                r = db_exec(j->conn, &j->error, "COMMIT", 0, NULL);
        j->t_stage = t1 - t0;
        j->t_wait = t2 - t1;
        j->t_apply = t3 - t2;
        j->t_commit = now_monotonic() - t3;
        buf_free(&rejects);
        if (r == 0)
                return WORKER_DONE;
        PQclear(PQexec(j->conn, "ROLLBACK"));
        return r == -ENOENT || r == -EINVAL ? WORKER_BAD_FILE : WORKER_RETRY;
}

static void record_error(Job *j)
{
        const char *p[3] = { j->ids[0], j->ids[1], j->error };

        if (!j->error || db_connection_lost(j->conn))
                return;
        PQclear(PQexecParams(j->conn, "UPDATE ingest.chunks SET error = $3 WHERE file_id = $1 AND no = $2",
                             3, NULL, p, NULL, NULL, 0));
}

int worker_run(const Config *cfg, int64_t file_id, int chunk_no, const char *path)
{
        Job j = { .cfg = cfg, .file_id = file_id, .chunk_no = chunk_no, .path = path };
        struct sigaction sa = { .sa_handler = on_term };
        int status;

        sigaction(SIGTERM, &sa, NULL);
        snprintf(j.ids[0], sizeof j.ids[0], "%" PRId64, file_id);
        snprintf(j.ids[1], sizeof j.ids[1], "%d", chunk_no);
        j.conn = db_connect(cfg->conninfo, &j.error);
        if (!j.conn) {
                log_ctx(LOG_WARNING, job_ctx(&j), "chunk %d: cannot connect: %s", chunk_no, j.error);
                free(j.error);
                return WORKER_RETRY;
        }
        /* the staging table and the apply's sort and join stay in memory */
        PQclear(PQexec(j.conn, "SET temp_buffers = '256MB'"));
        PQclear(PQexec(j.conn, "SET work_mem = '64MB'"));
        status = load_chunk(&j);
        if (status == WORKER_DONE) {
                struct rusage ru;
                getrusage(RUSAGE_SELF, &ru);
                /* the supervisor logs the outcome: journald cannot always tell the
                 * unit of a process that exits right after logging */
                log_ctx(LOG_DEBUG, (LogCtx){ registry_dropped_name(path), file_id, chunk_no, (long long)j.loaded, "done" },
                        "chunk %d: %" PRIu64 " loaded, %" PRIu64 " rejected, %" PRIu64 " superseded; "
                        "stage %.3f s, wait %.3f s, apply %.3f s, commit %.3f s; peak RSS %ld kB",
                        chunk_no, j.loaded, j.rejected, j.superseded, j.t_stage, j.t_wait, j.t_apply,
                        j.t_commit, ru.ru_maxrss);
        }
        else if (j.error) {
                log_ctx(LOG_WARNING, job_ctx(&j), "chunk %d: %s", chunk_no, j.error);
                record_error(&j);
        }
        free(j.error);
        PQfinish(j.conn);
        return status;
}
