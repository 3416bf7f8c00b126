/* worker.c - one chunk, one transaction: lock the chunk row, apply the valid
 * rows of its key lane once the previous chunk of the lane has committed (in
 * batches or sorted, see job.h), store the rejects, mark the chunk done,
 * COMMIT. The commit is the checkpoint; the row
 * lock makes a second worker for the same chunk wait and then find it done, so
 * each chunk is applied exactly once. Applying each lane's chunks in file order
 * (lanes hold disjoint skus) makes the table equal to a sequential load even
 * though unchanged rows are skipped. Any failure rolls back everything. */
#include "worker.h"
#include "db.h"
#include "job.h"
#include "log.h"
#include "outcome.h"
#include "planner.h"
#include "state.h"
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

static volatile sig_atomic_t stop_requested;
static void on_term(int sig) { (void)sig; stop_requested = 1; }

static LogCtx job_ctx(const Job *j)
{
        return (LogCtx){ dropped_name(j->path), j->file_id, j->chunk_no, -1, NULL };
}

/* Locks our chunk row. Returns 1 when there is work, 0 when already done. A
 * successor's probe holds the row for an instant, hence a short lock timeout
 * rather than NOWAIT; a second live worker on the chunk holds it far longer. */
static int lock_chunk(Job *j)
{
        const char *p[2] = { j->ids[0], j->ids[1] };
        PGresult *res = db_query(j->conn, &j->error,
                "SELECT c.state, c.start_offset, c.end_offset, c.first_line, f.kind, c.lane, f.lanes, "
                "       CASE WHEN f.size > 0 THEN f.data_rows * (c.end_offset - c.start_offset) / f.size / f.lanes "
                "            ELSE f.data_rows END, f.deferred_key IS NOT NULL "
                "FROM ingest.chunks c JOIN ingest.files f ON f.id = c.file_id "
                "WHERE c.file_id = $1 AND c.no = $2 FOR UPDATE OF c FOR KEY SHARE OF f", 2, p);
        int r;

        if (!res)
                return -EIO;
        if (PQntuples(res) != 1) {
                j->error = xstrdup("chunk not found in ingest.chunks");
                PQclear(res);
                return -ENOENT;
        }
        r = strcmp(PQgetvalue(res, 0, 0), STATE_DONE) != 0;
        j->range.start = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        j->range.end = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
        j->range.first_line = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
        j->kind = strcmp(PQgetvalue(res, 0, 4), "update") == 0 ? KIND_UPDATE : KIND_INGEST;
        j->lane = atoi(PQgetvalue(res, 0, 5));
        j->lanes = atoi(PQgetvalue(res, 0, 6));
        j->rows_estimate = strtoull(PQgetvalue(res, 0, 7), NULL, 10);
        j->bulk = j->kind == KIND_INGEST && strcmp(PQgetvalue(res, 0, 8), "t") == 0;
        PQclear(res);
        return r;
}

int job_copy_flush(Buf *rows, void *ud)
{
        Job *j = ud;
        int r = db_copy_put(j->conn, &j->error, rows->data, rows->len);

        rows->len = 0;
        return r;
}

int job_copy_end(Job *j) { return db_copy_end(j->conn, &j->error); }

int job_copy_begin(Job *j, const char *sql) { return db_copy_begin(j->conn, &j->error, sql); }

int job_copy_rows(Job *j, const char *sql, Buf *rows)
{
        int r = job_copy_begin(j, sql);

        if (r == 0)
                r = job_copy_flush(rows, j);
        return r == 0 ? job_copy_end(j) : r;
}

/* Maps the file, checks it is still the one that was planned, and parses
 * its header: both apply paths read the chunk from this image. */
static int open_file(Job *j)
{
        struct stat st;
        int fd = open(j->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

        if (fd < 0 || fstat(fd, &st) < 0) {
                int e = errno;
                j->error = xasprintf("%s: %s", j->path, strerror(e));
                if (fd >= 0)
                        close(fd);
                return -e;
        }
        if ((uint64_t)st.st_size < j->range.end) {
                j->error = xasprintf("%s: file is shorter than when it was planned", j->path);
                close(fd);
                return -EINVAL;
        }
        const char *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        int e = errno;
        close(fd);
        if (map == MAP_FAILED) {
                j->error = xasprintf("%s: mmap: %s", j->path, strerror(e));
                return -e;
        }
        j->map = map;
        j->map_size = (size_t)st.st_size;
        return header_parse(map, j->map_size, j->kind, j->cfg->key, &j->header, &j->error);
}


static LoaderInput loader_input(Job *j)
{
        return (LoaderInput){ j->map, j->range.start, j->range.end, j->range.first_line, &j->header,
                              j->cfg->max_field, j->file_id, j->chunk_no, (unsigned)j->lane, (unsigned)j->lanes,
                              j->cfg->key, NULL, j->map_size,
                              .uncertain = j->bulk ? &j->uncertain : NULL, .uncertain_max = j->uncertain_max };
}

/* For an ingest file, notes where the chunk's keys occur last in the file
 * (j->later), once. */
static void note_later(Job *j)
{
        if (j->kind != KIND_INGEST || j->later.slot)
                return;
        double t = now_monotonic();
        LoaderInput in = loader_input(j);
        /* a table no larger than needed stays in the CPU's caches; a file
         * whose rows are unevenly long still has room to spare */
        lookahead_init(&j->later, j->rows_estimate + j->rows_estimate / 2 + 1024, LOOKAHEAD_BYTES);
        loader_note_keys(&in, &j->later);
        j->t_lookahead = now_monotonic() - t;
}

/* An ingest file's row that a later row of the same key supersedes is not
 * sent at all (see lookahead.h): the chunk first notes where its keys occur
 * last, reading from its start to the end of the file. Update files keep
 * every row: one with an unknown key is a reject each time it occurs. */
int job_load_rows(Job *j, Buf *rows, Buf *rejects, size_t flush_at, LoaderFlush flush)
{
        note_later(j);
        LoaderInput in = loader_input(j);
        in.later = j->later.slot ? &j->later : NULL;
        return loader_run(&in, rows, rejects, flush_at, flush, j, &j->counts);
}

bool job_may_copy_new_rows(const Job *j)
{
        return j->kind == KIND_INGEST && j->later.slot && !j->later.incomplete;
}

int job_new_rows_begin(Job *j)
{
        return db_exec(j->conn, &j->error, "SAVEPOINT new_rows", 0, NULL);
}

int job_new_rows_end(Job *j, int r)
{
        if (r == 0)
                return db_exec(j->conn, &j->error, "RELEASE SAVEPOINT new_rows", 0, NULL);
        if (r != -EEXIST && !db_unique_violation(j->error))
                return r;
        free(j->error);
        j->error = NULL;
        return db_exec(j->conn, &j->error, "ROLLBACK TO SAVEPOINT new_rows", 0, NULL) < 0 ? -EIO : -EEXIST;
}

const char *job_unknown_reason(const Job *j)
{
        return j->cfg->key == KEY_SKU_NAME ? "unknown sku,name: update files do not insert"
                                           : "unknown sku: update files do not insert";
}

/* Blocks until chunk no-lanes (the previous range of our lane) has committed. 1 = go on, 0 = give up (stop or the
 * file failed), <0 = database error. FOR SHARE waits while the predecessor's
 * worker holds its row; the savepoint is rolled back at once so that our share
 * lock never blocks a predecessor that has not started yet. */
int job_wait_predecessor(Job *j)
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
                bool done = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), STATE_DONE) == 0;
                bool failed = PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 1), STATE_FAILED) == 0;
                PQclear(res);
                if (done)
                        return 1;
                if (failed || stop_requested)
                        return 0;
                nanosleep(&(struct timespec){ 0, 10L * 1000 * 1000 }, NULL);
        }
}

/* Which path: the sorted one once products' key index is larger than
 * sorted_apply_above (0: a quarter of shared_buffers). */
static int choose_path(Job *j)
{
        char limit[32];
        const char *p[1] = { limit };

        snprintf(limit, sizeof limit, "%" PRIu64, j->cfg->sorted_apply_above);
        int r = db_query_bool(j->conn, &j->error,
                "SELECT pg_relation_size(indexrelid) > CASE WHEN $1::bigint > 0 THEN $1::bigint "
                "  ELSE pg_size_bytes(current_setting('shared_buffers')) / 4 END "
                "FROM pg_index WHERE indrelid = 'public.products'::regclass AND indisprimary", 1, p);

        j->sorted = r == 1;
        return r < 0 ? r : 0;
}

static int store_rejects(Job *j, Buf *rejects)
{
        int r;

        if (rejects->len == 0)
                return 0;
        r = job_copy_begin(j, "COPY ingest.rejects (file_id, chunk_no, line, byte_offset, reason, raw) FROM STDIN");
        if (r == 0)
                r = job_copy_flush(rejects, j);
        return r == 0 ? job_copy_end(j) : r;
}

/* What ingest.chunks.apply_path records: the path ("deferred", "batches",
 * "sorted"); "-new" when all its rows were copied as new without a full probe
 * ("-partly-new": some batches); "key+" first when the chunk built the
 * deferred key before it applied its rows. */
static const char *apply_path(const Job *j, char *buf, size_t size)
{
        const char *path = j->bulk ? "deferred" : j->sorted ? "sorted" : "batches";
        const char *how = "";

        if (!j->bulk && (j->sorted ? j->new_rows : j->new_batches > 0))
                how = j->sorted || j->new_batches == j->batches ? "-new" : "-partly-new";
        snprintf(buf, size, "%s%s%s", j->key_built ? "key+" : "", path, how);
        return buf;
}

static int mark_done(Job *j)
{
        ChunkRows rows = { j->loaded, j->rejected, j->superseded };
        char path[32];

        return chunk_done(j->conn, j->file_id, j->chunk_no, &rows, apply_path(j, path, sizeof path), &j->error);
}

/* The whole transaction. */
static Outcome load_chunk(Job *j)
{
        Buf rejects = { 0 };
        int r;

        if (db_exec(j->conn, &j->error, "BEGIN", 0, NULL) < 0 ||
            db_exec(j->conn, &j->error, "SET LOCAL lock_timeout = '5s'", 0, NULL) < 0)
                return OUTCOME_RETRY;
        r = lock_chunk(j);
        if (r > 0 && db_exec(j->conn, &j->error, "SET LOCAL lock_timeout = 0", 0, NULL) < 0)
                r = -EIO;
        if (r <= 0) {
                PQclear(PQexec(j->conn, r == 0 ? "COMMIT" : "ROLLBACK"));
                return r == 0 ? OUTCOME_DONE : r == -ENOENT ? OUTCOME_BAD_FILE : OUTCOME_RETRY;
        }
        double t0 = now_monotonic();
        r = open_file(j);
        if (r == 0 && j->bulk)
                r = apply_bulk(j, &rejects);
        if (r == 0 && !j->bulk)
                r = choose_path(j);
        if (r == 0 && !j->bulk)
                r = j->sorted ? apply_sorted(j, &rejects) : apply_in_batches(j, &rejects);
        if (r == -ECANCELED) {
                buf_free(&rejects);
                PQclear(PQexec(j->conn, "ROLLBACK"));
                return OUTCOME_NOT_RUN;
        }
        j->loaded = j->distinct - j->outranked - j->superseding;
        j->superseded = j->rows - j->distinct + j->outranked + j->superseding + j->counts.superseded;
        j->rejected = j->counts.rejected + j->unknown;
        if (r == 0)
                r = store_rejects(j, &rejects);
        if (r == 0)
                r = mark_done(j);
        double t1 = now_monotonic();
        if (r == 0)
                r = db_exec(j->conn, &j->error, "COMMIT", 0, NULL);
        j->t_stage = t1 - t0 - j->t_lookahead - j->t_wait - j->t_apply;
        j->t_commit = now_monotonic() - t1;
        buf_free(&rejects);
        if (r == 0)
                return OUTCOME_DONE;
        PQclear(PQexec(j->conn, "ROLLBACK"));
        return outcome_of_errno(r);
}

static void record_error(Job *j)
{
        if (j->error && !db_connection_lost(j->conn))
                chunk_record_error(j->conn, j->file_id, j->chunk_no, j->error, NULL);
}

Outcome worker_run(const Config *cfg, int64_t file_id, int chunk_no, const char *path)
{
        Job j = { .cfg = cfg, .file_id = file_id, .chunk_no = chunk_no, .path = path };
        struct sigaction sa = { .sa_handler = on_term };
        Outcome status;

        sigaction(SIGTERM, &sa, NULL);
        snprintf(j.ids[0], sizeof j.ids[0], "%" PRId64, file_id);
        snprintf(j.ids[1], sizeof j.ids[1], "%d", chunk_no);
        j.conn = db_connect(cfg->conninfo, &j.error);
        if (!j.conn) {
                log_ctx(LOG_WARNING, job_ctx(&j), "chunk %d: cannot connect: %s", chunk_no, j.error);
                free(j.error);
                return OUTCOME_RETRY;
        }
        status = load_chunk(&j);
        if (j.map)
                munmap((void *)j.map, j.map_size);
        batch_free(&j.batch);
        lookahead_free(&j.later);
        buf_free(&j.scratch);
        buf_free(&j.uncertain);
        free(j.update_sql);
        if (status == OUTCOME_DONE) {
                struct rusage ru;
                getrusage(RUSAGE_SELF, &ru);
                /* the supervisor logs the outcome: journald cannot always tell the
                 * unit of a process that exits right after logging */
                char how[128];
                int n = j.key_built ? snprintf(how, sizeof how, "products' deferred key built first, ") : 0;
                size_t left = sizeof how - (size_t)n;
                if (j.bulk)
                        snprintf(how + n, left, "straight into products, key deferred, %u batches, %" PRIu64
                                 " rows deferred", j.batches, j.counts.uncertain);
                else if (j.sorted)
                        snprintf(how + n, left, "sorted%s", j.new_rows ? ", as new rows" : "");
                else
                        snprintf(how + n, left, "in batches, %u of %u new without a full probe", j.new_batches,
                                 j.batches);
                log_ctx(LOG_DEBUG, (LogCtx){ dropped_name(path), file_id, chunk_no, (long long)j.loaded, "done" },
                        "chunk %d: %" PRIu64 " loaded, %" PRIu64 " rejected, %" PRIu64 " superseded; %s; "
                        "lookahead %.3f s, stage %.3f s, wait %.3f s, apply %.3f s, commit %.3f s; peak RSS %ld kB",
                        chunk_no, j.loaded, j.rejected, j.superseded, how, j.t_lookahead,
                        j.t_stage, j.t_wait, j.t_apply,
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
