/* worker.c - one chunk, one transaction, and the only place that runs its
 * sequence: lock the chunk row, note where its keys occur last, wait for the
 * lane's previous chunk, load the rows into the chosen apply path (apply.h),
 * store the rejects, mark the chunk done, COMMIT. The commit is the
 * checkpoint; the row lock makes a second worker for the same chunk wait and
 * then find it done, and a worker whose claim was taken over (its node was
 * declared dead) finds the row no longer its own and leaves it, so each chunk
 * is applied exactly once. Applying each
 * lane's chunks in file order (lanes hold disjoint skus) makes the table equal
 * to a sequential load even though unchanged rows are skipped. Any failure
 * rolls back everything; the outcome (outcome.h) becomes the exit status. */
#include "worker.h"
#include "apply.h"
#include "db.h"
#include "deferkey.h"
#include "loader.h"
#include "log.h"
#include "lookahead.h"
#include "outcome.h"
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
static void on_term(int sig)
{
        (void)sig;
        stop_requested = 1;
}

typedef struct Chunk {
        const Config *cfg;
        PGconn *conn;
        int64_t file_id;
        int chunk_no;
        ChunkClaim claim;
        const char *path;
        char ids[3][32]; /* file_id, chunk_no, claim as text parameters */
        FileKind kind;
        int lane, lanes;
        uint64_t rows_estimate; /* the chunk's rows, from the file's rows and the range's share of its bytes */
        bool deferred;          /* the file defers products' key (deferkey.h) */
        const char *map;        /* the file's image (see open_file), and its size */
        size_t map_size;
        Header header;
        ByteRange range;
        Lookahead later; /* where the chunk's keys occur last in the file (ingest files) */
        Buf rows, rejects, uncertain;
        LoadCounts counts;
        const ApplyPath *way; /* the apply path taken */
        void *state;          /* the path's */
        ApplyResult result;
        bool waited, key_built;
        uint64_t loaded, superseded, rejected;
        double t_lookahead, t_wait, t_apply, t_stage, t_commit; /* seconds per phase, for the log */
        char *error;
} Chunk;

static LogCtx chunk_ctx(const Chunk *ch)
{
        return (LogCtx){ dropped_name(ch->path), ch->file_id, ch->chunk_no, -1, NULL };
}

/* Locks our chunk row. Returns 1 when there is work, 0 when already done,
 * -ESTALE when the row is no longer our claim's. A successor's probe holds
 * the row for an instant, hence a short lock timeout rather than NOWAIT; a
 * second live worker on the chunk holds it far longer. */
static int lock_chunk(Chunk *ch)
{
        const char *p[4] = { ch->ids[0], ch->ids[1], ch->claim.node, ch->ids[2] };
        PGresult *res = db_query(ch->conn, &ch->error,
                "SELECT c.state, c.start_offset, c.end_offset, c.first_line, f.kind, c.lane, f.lanes, "
                "       CASE WHEN f.size > 0 THEN f.data_rows * (c.end_offset - c.start_offset) / f.size / f.lanes "
                "            ELSE f.data_rows END, f.deferred_key IS NOT NULL, "
                "       c.state = " SQL_LOADING " AND c.node = $3 AND c.attempts = $4 "
                "FROM ingest.chunks c JOIN ingest.files f ON f.id = c.file_id "
                "WHERE c.file_id = $1 AND c.no = $2 FOR UPDATE OF c FOR KEY SHARE OF f",
                4, p);
        int r;

        if (!res)
                return -EIO;
        if (PQntuples(res) != 1) {
                ch->error = xstrdup("chunk not found in ingest.chunks");
                PQclear(res);
                return -ENOENT;
        }
        r = strcmp(PQgetvalue(res, 0, 0), STATE_DONE) == 0 ? 0 : strcmp(PQgetvalue(res, 0, 9), "t") == 0 ? 1 : -ESTALE;
        ch->range.start = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        ch->range.end = strtoull(PQgetvalue(res, 0, 2), NULL, 10);
        ch->range.first_line = strtoull(PQgetvalue(res, 0, 3), NULL, 10);
        ch->kind = strcmp(PQgetvalue(res, 0, 4), "update") == 0 ? KIND_UPDATE : KIND_INGEST;
        ch->lane = atoi(PQgetvalue(res, 0, 5));
        ch->lanes = atoi(PQgetvalue(res, 0, 6));
        ch->rows_estimate = strtoull(PQgetvalue(res, 0, 7), NULL, 10);
        ch->deferred = ch->kind == KIND_INGEST && strcmp(PQgetvalue(res, 0, 8), "t") == 0;
        PQclear(res);
        return r;
}

/* Maps the file, checks it is still the one that was planned, and parses its
 * header. -errno of the open or the map (outcome_of_errno classifies it), or
 * -EINVAL for a file that no longer matches its plan. */
static int open_file(Chunk *ch)
{
        struct stat st;
        int fd = open(ch->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

        if (fd < 0 || fstat(fd, &st) < 0) {
                int e = errno;
                ch->error = xasprintf("%s: %s", ch->path, strerror(e));
                if (fd >= 0)
                        close(fd);
                return -e;
        }
        if ((uint64_t)st.st_size < ch->range.end) {
                ch->error = xasprintf("%s: file is shorter than when it was planned", ch->path);
                close(fd);
                return -EINVAL;
        }
        const char *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        int e = errno;
        close(fd);
        if (map == MAP_FAILED) {
                ch->error = xasprintf("%s: mmap: %s", ch->path, strerror(e));
                return -e;
        }
        ch->map = map;
        ch->map_size = (size_t)st.st_size;
        return header_parse(map, ch->map_size, ch->kind, ch->cfg->key, &ch->header, &ch->error);
}

static LoaderInput loader_input(Chunk *ch)
{
        return (LoaderInput){ ch->map, ch->range.start, ch->range.end, ch->range.first_line, &ch->header,
                ch->cfg->max_field, ch->file_id, ch->chunk_no, (unsigned)ch->lane, (unsigned)ch->lanes, ch->cfg->key,
                ch->later.slot ? &ch->later : NULL, ch->map_size, .uncertain = ch->deferred ? &ch->uncertain : NULL,
                .uncertain_max = DEFERRED_UNCERTAIN_MAX };
}

/* An ingest file's row that a later row of the same key supersedes is not
 * sent at all (see lookahead.h): the chunk first notes where its keys occur
 * last, reading from its start to the end of the file, once. Update files
 * keep every row: one with an unknown key is a reject each time it occurs. */
static void note_later(Chunk *ch)
{
        if (ch->kind != KIND_INGEST || ch->later.slot)
                return;
        double t = now_monotonic();
        LoaderInput in = loader_input(ch);
        /* a table no larger than needed stays in the CPU's caches; a file
         * whose rows are unevenly long still has room to spare */
        lookahead_init(&ch->later, ch->rows_estimate + ch->rows_estimate / 2 + 1024, LOOKAHEAD_BYTES);
        loader_note_keys(&in, &ch->later);
        ch->t_lookahead = now_monotonic() - t;
}

/* Blocks until chunk no - lanes (the previous range of our lane) has
 * committed. 0 = go on, -ECANCELED = give up (stop, or the file failed), <0
 * = database error. FOR SHARE waits while the predecessor's worker holds its
 * row; the savepoint is rolled back at once so that our share lock never
 * blocks a predecessor that has not started yet. */
static int wait_predecessor(Chunk *ch)
{
        char prev[32];
        const char *p[2] = { ch->ids[0], prev };
        double t = now_monotonic();

        ch->waited = true;
        if (ch->chunk_no <= ch->lanes)
                return 0;
        snprintf(prev, sizeof prev, "%d", ch->chunk_no - ch->lanes);
        for (;;) {
                if (db_exec(ch->conn, &ch->error, "SAVEPOINT predecessor", 0, NULL) < 0)
                        return -EIO;
                PGresult *res = db_query(ch->conn, &ch->error,
                        "SELECT c.state, f.state FROM ingest.chunks c JOIN ingest.files f ON f.id = c.file_id "
                        "WHERE c.file_id = $1 AND c.no = $2 FOR SHARE OF c",
                        2, p);
                if (!res || db_exec(ch->conn, &ch->error, "ROLLBACK TO SAVEPOINT predecessor", 0, NULL) < 0) {
                        PQclear(res);
                        return -EIO;
                }
                bool done = PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), STATE_DONE) == 0;
                bool failed = PQntuples(res) != 1 || strcmp(PQgetvalue(res, 0, 1), STATE_FAILED) == 0;
                PQclear(res);
                ch->t_wait = now_monotonic() - t;
                if (done)
                        return 0;
                if (failed || stop_requested)
                        return -ECANCELED;
                nanosleep(&(struct timespec){ 0, 10L * 1000 * 1000 }, NULL);
        }
}

/* The loader's flush: a path that applies as the rows come first waits for
 * the lane's previous chunk (parsing the first piece overlapped its apply). */
static int on_piece(Buf *rows, void *ud)
{
        Chunk *ch = ud;
        int r = ch->way->ordered && !ch->waited ? wait_predecessor(ch) : 0;
        double t = now_monotonic();

        if (r == 0)
                r = ch->way->piece(ch->state, rows, &ch->error);
        ch->t_apply += now_monotonic() - t;
        return r;
}

/* The path over the chunk's rows, in the order of apply.h. */
static int run_path(Chunk *ch)
{
        note_later(ch); /* first: whether the keys are all known */
        ApplyChunk ac = { ch->conn, ch->file_id, ch->chunk_no, { ch->ids[0], ch->ids[1] }, ch->kind, ch->cfg->key,
                &ch->header, ch->kind == KIND_INGEST && ch->later.slot && !ch->later.incomplete, &ch->rejects,
                &ch->uncertain, &ch->counts };
        LoaderInput in;
        int r;

        in = loader_input(ch);
        r = ch->way->begin(&ac, &ch->state, &ch->error);
        if (r == 0)
                r = loader_run(&in, &ch->rows, &ch->rejects, ch->way->piece_bytes, on_piece, ch, &ch->counts);
        if (r == 0 && ch->way->ordered && !ch->waited) /* no rows in our lane: still in order */
                r = wait_predecessor(ch);
        double t = now_monotonic();
        if (r == 0)
                r = ch->way->finish(ch->state, &ch->result, &ch->error);
        ch->t_apply += now_monotonic() - t;
        ch->way->free(ch->state);
        ch->state = NULL;
        return r;
}

/* The one fallback: a deferred chunk whose rows the lookahead cannot tell
 * apart (-ENOSPC, see apply_deferred.c) goes back to before its rows, builds
 * products' key in this transaction and applies its rows in batches. */
static int build_key_and_rerun(Chunk *ch)
{
        int r = db_exec(ch->conn, &ch->error, "ROLLBACK TO SAVEPOINT rows", 0, NULL);

        ch->rejects.len = ch->uncertain.len = ch->rows.len = 0;
        ch->counts = (LoadCounts){ 0 };
        ch->result = (ApplyResult){ 0 };
        ch->t_apply = 0;
        ch->deferred = false;
        if (r == 0)
                r = deferkey_build(ch->conn, ch->file_id, ch->cfg->key, &ch->error);
        ch->key_built = r > 0;
        ch->way = &apply_batches;
        return r < 0 ? r : run_path(ch);
}

/* The deferred path while the file defers products' key, else batches (a
 * sorted path for large tables lost to batches at 2M and 10M rows, and went:
 * BENCHMARKS.md, session 7). */
static int apply_rows(Chunk *ch)
{
        int r = 0;

        ch->way = ch->deferred ? &apply_deferred : &apply_batches;
        if (ch->deferred)
                r = db_exec(ch->conn, &ch->error, "SAVEPOINT rows", 0, NULL);
        if (r == 0)
                r = run_path(ch);
        if (r == -ENOSPC && ch->way == &apply_deferred)
                r = build_key_and_rerun(ch);
        return r;
}

/* What ingest.chunks.apply_path records: the path; "-new" when all its
 * pieces were copied as new without looking up every key ("-partly-new":
 * some); "key+" first when the chunk built the deferred key before its rows. */
static const char *apply_path(const Chunk *ch, char *buf, size_t size)
{
        const ApplyResult *r = &ch->result;
        const char *how = "";

        if (r->new_pieces > 0)
                how = r->new_pieces == r->pieces ? "-new" : "-partly-new";
        snprintf(buf, size, "%s%s%s", ch->key_built ? "key+" : "", ch->way ? ch->way->name : "none", how);
        return buf;
}

static int store_rejects(Chunk *ch)
{
        if (ch->rejects.len == 0)
                return 0;
        return db_copy_rows(ch->conn, &ch->error, LOADER_REJECTS_COPY, ch->rejects.data, ch->rejects.len);
}

static int mark_done(Chunk *ch)
{
        const ApplyResult *a = &ch->result;
        char path[32];

        ch->loaded = a->distinct - a->outranked - a->superseding;
        ch->superseded = a->rows - a->distinct + a->outranked + a->superseding + ch->counts.superseded;
        ch->rejected = ch->counts.rejected + a->unknown;
        ChunkRows rows = { ch->loaded, ch->rejected, ch->superseded };
        return chunk_done(ch->conn, ch->file_id, ch->chunk_no, ch->claim.node, &rows, apply_path(ch, path, sizeof path),
                &ch->error);
}

/* The chunk was taken over from our node: another claim is current. */
static Outcome not_ours(Chunk *ch)
{
        log_ctx(LOG_INFO, chunk_ctx(ch), "chunk %d: taken over from node %s, leaving it", ch->chunk_no, ch->claim.node);
        return OUTCOME_NOT_RUN;
}

/* The whole transaction. */
static Outcome load_chunk(Chunk *ch)
{
        int r;

        if (db_exec(ch->conn, &ch->error, "BEGIN", 0, NULL) < 0 ||
                db_exec(ch->conn, &ch->error, "SET LOCAL lock_timeout = '5s'", 0, NULL) < 0)
                return OUTCOME_RETRY;
        r = lock_chunk(ch);
        if (r > 0 && db_exec(ch->conn, &ch->error, "SET LOCAL lock_timeout = 0", 0, NULL) < 0)
                r = -EIO;
        if (r <= 0) {
                PQclear(PQexec(ch->conn, r == 0 ? "COMMIT" : "ROLLBACK"));
                return r == 0         ? OUTCOME_DONE
                       : r == -ENOENT ? OUTCOME_BAD_FILE
                       : r == -ESTALE ? not_ours(ch)
                                      : OUTCOME_RETRY;
        }
        double t0 = now_monotonic();
        r = open_file(ch);
        if (r == 0)
                r = apply_rows(ch);
        if (r == 0)
                r = store_rejects(ch);
        if (r == 0)
                r = mark_done(ch);
        double t1 = now_monotonic();
        if (r == 0)
                r = db_exec(ch->conn, &ch->error, "COMMIT", 0, NULL);
        ch->t_stage = t1 - t0 - ch->t_lookahead - ch->t_wait - ch->t_apply;
        ch->t_commit = now_monotonic() - t1;
        if (r == 0)
                return OUTCOME_DONE;
        PQclear(PQexec(ch->conn, "ROLLBACK"));
        return r == -ECANCELED ? OUTCOME_NOT_RUN : outcome_of_errno(r);
}

/* The supervisor logs the outcome: journald cannot always tell the unit of a
 * process that exits right after logging. This is the detail, at debug. */
static void log_done(const Chunk *ch)
{
        struct rusage ru;
        char path[32];

        getrusage(RUSAGE_SELF, &ru);
        log_ctx(LOG_DEBUG, (LogCtx){ dropped_name(ch->path), ch->file_id, ch->chunk_no, (long long)ch->loaded, "done" },
                "chunk %d: %" PRIu64 " loaded, %" PRIu64 " rejected, %" PRIu64 " superseded; %s (%u pieces, %u copied "
                "as new), %" PRIu64 " rows deferred; lookahead %.3f s, stage %.3f s, wait %.3f s, apply %.3f s, "
                "commit %.3f s; peak RSS %ld kB",
                ch->chunk_no, ch->loaded, ch->rejected, ch->superseded, apply_path(ch, path, sizeof path),
                ch->result.pieces, ch->result.new_pieces, ch->counts.uncertain, ch->t_lookahead, ch->t_stage,
                ch->t_wait, ch->t_apply, ch->t_commit, ru.ru_maxrss);
}

Outcome worker_run(const Config *cfg, const ChunkClaim *claim, const char *path)
{
        int64_t file_id = claim->file_id;
        int chunk_no = claim->no;
        Chunk ch = { .cfg = cfg, .file_id = file_id, .chunk_no = chunk_no, .claim = *claim, .path = path };
        struct sigaction sa = { .sa_handler = on_term };
        Outcome o;

        sigaction(SIGTERM, &sa, NULL);
        snprintf(ch.ids[0], sizeof ch.ids[0], "%" PRId64, file_id);
        snprintf(ch.ids[1], sizeof ch.ids[1], "%d", chunk_no);
        snprintf(ch.ids[2], sizeof ch.ids[2], "%d", claim->claim);
        ch.conn = db_connect(cfg->conninfo, &ch.error);
        if (!ch.conn) {
                log_ctx(LOG_WARNING, chunk_ctx(&ch), "chunk %d: cannot connect: %s", chunk_no, ch.error);
                free(ch.error);
                return OUTCOME_RETRY;
        }
        o = load_chunk(&ch);
        if (o == OUTCOME_RETRY && db_disk_full(ch.error))
                o = OUTCOME_NO_SPACE; /* the file must not fail because a disk is full */
        if (o == OUTCOME_DONE)
                log_done(&ch);
        else if (ch.error) /* a full disk: the supervisor says it once a minute */
                log_ctx(o == OUTCOME_NO_SPACE ? LOG_DEBUG : LOG_WARNING, chunk_ctx(&ch), "chunk %d: %s", chunk_no,
                        ch.error);
        if (o != OUTCOME_DONE && ch.error && !db_connection_lost(ch.conn))
                chunk_record_error(ch.conn, &ch.claim, ch.error, NULL);
        if (ch.map)
                munmap((void *)ch.map, ch.map_size);
        lookahead_free(&ch.later);
        buf_free(&ch.rows);
        buf_free(&ch.rejects);
        buf_free(&ch.uncertain);
        free(ch.error);
        PQfinish(ch.conn);
        return o;
}
