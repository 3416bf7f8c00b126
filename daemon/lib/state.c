/* state.c - the transitions of state.h, each one statement (or one
 * transaction) whose WHERE names the source state. Nothing here logs: the
 * caller logs once, with the file and chunk. */
#include "state.h"
#include "db.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const file_states[] = {
        [FILE_NEW] = STATE_NEW,
        [FILE_LOADING] = STATE_LOADING,
        [FILE_DONE] = STATE_DONE,
        [FILE_FAILED] = STATE_FAILED,
};
static const char *const chunk_states[] = {
        [CHUNK_PENDING] = STATE_PENDING,
        [CHUNK_LOADING] = STATE_LOADING,
        [CHUNK_DONE] = STATE_DONE,
        [CHUNK_FAILED] = STATE_FAILED,
};

const char *file_state_name(FileState s) { return file_states[s]; }
const char *chunk_state_name(ChunkState s) { return chunk_states[s]; }

static int parse_state(const char *const *names, size_t n, const char *text, int *ret)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(names[i], text) == 0) {
                        *ret = (int)i;
                        return 0;
                }
        return -EINVAL;
}

int file_state_parse(const char *text, FileState *ret)
{
        int s = 0, r = parse_state(file_states, sizeof file_states / sizeof *file_states, text, &s);

        if (r == 0)
                *ret = (FileState)s;
        return r;
}

int chunk_state_parse(const char *text, ChunkState *ret)
{
        int s = 0, r = parse_state(chunk_states, sizeof chunk_states / sizeof *chunk_states, text, &s);

        if (r == 0)
                *ret = (ChunkState)s;
        return r;
}

/* A chunk's or a file's ids as text parameters. */
typedef struct Ids {
        char file[32], no[32];
} Ids;

static Ids ids_of(int64_t file_id, int no)
{
        Ids k;

        snprintf(k.file, sizeof k.file, "%" PRId64, file_id);
        snprintf(k.no, sizeof k.no, "%d", no);
        return k;
}

int file_register(
        PGconn *c, int64_t id, const char *name, FileKind kind, const char *path, const char *error, char **ret_error)
{
        Ids k = ids_of(id, 0);
        const char *p[6] = { k.file, name, file_kind_name(kind), path, error ? STATE_FAILED : STATE_NEW, error };
        /* one that is failed at once (not a regular file) is announced as such */
        PGresult *res = db_query(c, ret_error,
                "WITH f AS (INSERT INTO ingest.files (id, name, kind, path, state, error, finished_at) "
                "           VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $5 = " SQL_FAILED " THEN now() END) "
                "           RETURNING *) "
                "SELECT CASE WHEN f.state = " SQL_FAILED " THEN pg_notify('" EVENTS_CHANNEL
                "', " SQL_FILE_EVENT("f", "'{}'::json") "::text) END FROM f",
                6, p);

        PQclear(res);
        return res ? 0 : -EIO;
}

int file_forget(PGconn *c, int64_t id, char **ret_error)
{
        Ids k = ids_of(id, 0);
        const char *p[1] = { k.file };

        return db_exec(c, ret_error, "DELETE FROM ingest.files WHERE id = $1 AND state = " SQL_NEW, 1, p);
}

/* The chunks of a plan as COPY text: each byte range becomes `lanes` chunks,
 * numbered range by range, so chunk no - lanes is the previous range of the
 * same lane (see schema.sql). */
static void put_chunks(Buf *b, const char *file, const Plan *plan, int lanes)
{
        for (size_t i = 0; i < plan->n_ranges; i++)
                for (int lane = 0; lane < lanes; lane++) {
                        char line[160];
                        int len = snprintf(line, sizeof line, "%s\t%zu\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%d\n",
                                file, i * (size_t)lanes + (size_t)lane + 1, plan->ranges[i].start, plan->ranges[i].end,
                                plan->ranges[i].first_line, lane);
                        buf_append(b, line, (size_t)len);
                }
}

int file_planned(PGconn *c, int64_t id, const Plan *plan, int lanes, char **ret_error)
{
        Ids k = ids_of(id, 0);
        char size[32], rows[32], n[32], nl[32];
        const char *p[6] = { k.file, plan->sha256, size, n, rows, nl };
        Buf b = { 0 };

        snprintf(size, sizeof size, "%" PRIu64, plan->size);
        snprintf(rows, sizeof rows, "%" PRIu64, plan->data_rows);
        snprintf(n, sizeof n, "%zu", plan->n_ranges * (size_t)lanes);
        snprintf(nl, sizeof nl, "%d", lanes);
        put_chunks(&b, k.file, plan, lanes);
        int r = db_exec(c, ret_error, "BEGIN", 0, NULL);
        if (r == 0)
                r = db_copy_rows(c, ret_error,
                        "COPY ingest.chunks (file_id, no, start_offset, end_offset, first_line, lane) FROM STDIN",
                        b.data, b.len);
        if (r == 0)
                r = db_exec(c, ret_error,
                        "UPDATE ingest.files SET state = " SQL_LOADING ", sha256 = $2, size = $3, "
                        "chunks = $4, data_rows = $5, lanes = $6, started_at = now() "
                        "WHERE id = $1 AND state = " SQL_NEW,
                        6, p);
        if (r == 0)
                r = state_wake(c, ret_error);
        buf_free(&b);
        return db_end(c, r, ret_error);
}

/* "code=n,code=n" of ingest.rejects' counts into s->rejects. */
static void parse_reject_counts(const char *text, FileSummary *s)
{
        char *copy = xstrdup(text), *save = NULL;

        for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
                char *eq = strchr(item, '=');
                if (!eq)
                        continue;
                *eq = '\0';
                s->rejects[reject_code_parse(item)] += strtoull(eq + 1, NULL, 10);
        }
        free(copy);
}

static void read_summary(PGresult *res, FileSummary *s)
{
        *s = (FileSummary){ .loaded = atoll(PQgetvalue(res, 0, 1)),
                .rejected = atoll(PQgetvalue(res, 0, 2)),
                .superseded = atoll(PQgetvalue(res, 0, 3)),
                .seconds = strtod(PQgetvalue(res, 0, 4), NULL) };
        s->kind = strcmp(PQgetvalue(res, 0, 0), "update") == 0 ? KIND_UPDATE : KIND_INGEST;
        parse_reject_counts(PQgetvalue(res, 0, 5), s);
}

int file_close(PGconn *c, int64_t id, FileState final, const char *reason, FileSummary *ret, char **ret_error)
{
        Ids k = ids_of(id, 0);
        const char *p[3] = { k.file, file_state_name(final), reason };
        PGresult *res = db_query(c, ret_error,
                "WITH t AS (SELECT coalesce(sum(rows_loaded), 0) l, coalesce(sum(rows_rejected), 0) r, "
                "                  coalesce(sum(rows_superseded), 0) s FROM ingest.chunks WHERE file_id = $1), "
                " f AS (UPDATE ingest.files f SET state = $2, error = $3, finished_at = now(), "
                "       rows_loaded = t.l, rows_rejected = t.r, rows_superseded = t.s FROM t "
                "       WHERE f.id = $1 AND f.state IN (" SQL_NEW ", " SQL_LOADING ") RETURNING f.*), "
                " x AS (SELECT coalesce(code, 'other') code, count(*) n FROM ingest.rejects "
                "       WHERE file_id = $1 GROUP BY 1) "
                "SELECT f.kind, f.rows_loaded, f.rows_rejected, f.rows_superseded, "
                "       extract(epoch FROM f.finished_at - f.registered_at), "
                "       (SELECT coalesce(string_agg(code || '=' || n, ','), '') FROM x), "
                "       pg_notify('" EVENTS_CHANNEL
                "', " SQL_FILE_EVENT("f", "(SELECT coalesce(json_object_agg(code, n), '{}') FROM x)") "::text) "
                                                                                                      "FROM f",
                3, p);

        if (!res)
                return -EIO;
        int closed = PQntuples(res) == 1;
        if (closed && ret)
                read_summary(res, ret);
        PQclear(res);
        int r = state_wake(c, ret_error); /* the next file may start */
        return r < 0 ? r : closed;
}

int file_requeue(PGconn *c, int64_t id, char **ret_error)
{
        Ids k = ids_of(id, 0);
        const char *p[1] = { k.file };
        int r = db_exec(c, ret_error, "BEGIN", 0, NULL);

        if (r == 0)
                r = db_exec(c, ret_error,
                        "UPDATE ingest.chunks SET state = " SQL_PENDING ", attempts = 0, "
                        "next_attempt = NULL, error = NULL WHERE file_id = $1 "
                        "AND state IN (" SQL_PENDING ", " SQL_FAILED ")",
                        1, p);
        PGresult *res = r < 0 ? NULL
                              : db_query(c, ret_error,
                                        "UPDATE ingest.files SET state = " SQL_LOADING
                                        ", error = NULL, finished_at = NULL, "
                                        "aggregated_at = NULL WHERE id = $1 AND state = " SQL_FAILED,
                                        1, p);
        int requeued = res && strcmp(PQcmdTuples(res), "1") == 0;
        PQclear(res);
        r = db_end(c, res ? 0 : -EIO, ret_error);
        return r < 0 ? r : requeued;
}

int chunk_claim(PGconn *c, int64_t file_id, int no, const char *node, char **ret_error)
{
        Ids k = ids_of(file_id, no);
        const char *p[3] = { k.file, k.no, node };
        /* Unflushed: the claim's commit would otherwise wait, before every
         * fork, behind the WAL the other workers are writing. A claim lost in
         * a crash of the server takes its worker's commit with it (WAL is one
         * sequence), and the worker, not finding its claim, leaves the chunk. */
        if (db_begin_unflushed(c, ret_error) < 0)
                return -EIO;
        /* SKIP LOCKED: a row another node is claiming or releasing is not ours to wait for */
        PGresult *res = db_query(c, ret_error,
                "UPDATE ingest.chunks c SET state = " SQL_LOADING ", attempts = c.attempts + 1, node = $3, "
                "worker_pid = NULL, started_at = now() "
                "FROM (SELECT file_id, no FROM ingest.chunks WHERE file_id = $1 AND no = $2 "
                "      AND state = " SQL_PENDING " FOR UPDATE SKIP LOCKED) t "
                "WHERE c.file_id = t.file_id AND c.no = t.no RETURNING c.attempts",
                3, p);
        int claim = res && PQntuples(res) == 1 ? atoi(PQgetvalue(res, 0, 0)) : 0;

        PQclear(res);
        return db_end(c, res ? 0 : -EIO, ret_error) < 0 ? -EIO : claim;
}

int chunk_done(PGconn *c, int64_t file_id, int no, const char *node, const ChunkRows *rows, const char *apply_path,
        char **ret_error)
{
        Ids k = ids_of(file_id, no);
        char l[32], s[32], rj[32], pid[32];
        const char *p[8] = { k.file, k.no, l, rj, s, apply_path, node, pid };

        snprintf(l, sizeof l, "%" PRIu64, rows->loaded);
        snprintf(rj, sizeof rj, "%" PRIu64, rows->rejected);
        snprintf(s, sizeof s, "%" PRIu64, rows->superseded);
        snprintf(pid, sizeof pid, "%d", (int)getpid());
        /* the worker holds the row locked and saw it loading under its claim */
        int r = db_exec(c, ret_error,
                "UPDATE ingest.chunks SET state = " SQL_DONE ", rows_loaded = $3, rows_rejected = $4, "
                "rows_superseded = $5, apply_path = $6, finished_at = now(), error = NULL, worker_pid = $8 "
                "WHERE file_id = $1 AND no = $2 AND state = " SQL_LOADING " AND node = $7",
                8, p);
        return r;
}

int state_wake(PGconn *c, char **ret_error)
{
        if (PQtransactionStatus(c) != PQTRANS_IDLE)
                return db_exec(c, ret_error, "NOTIFY " WAKE_CHANNEL, 0, NULL);
        /* on its own: a NOTIFY takes an xid, and its commit would wait for the WAL flush */
        if (db_begin_unflushed(c, ret_error) < 0)
                return -EIO;
        return db_end(c, db_exec(c, ret_error, "NOTIFY " WAKE_CHANNEL, 0, NULL), ret_error);
}

int chunk_release(PGconn *c, const ChunkClaim *cl, ChunkState to, double delay, bool count_attempt, char **ret_error)
{
        Ids k = ids_of(cl->file_id, cl->no);
        char del[32], claim[32];
        const char *p[7] = { k.file, k.no, chunk_state_name(to), del, count_attempt ? "0" : "1", cl->node, claim };

        snprintf(del, sizeof del, "%.3f", delay);
        snprintf(claim, sizeof claim, "%d", cl->claim);
        /* a row locked by a live transaction is no longer our claim's: skipped, never waited for */
        PGresult *res = db_query(c, ret_error,
                "UPDATE ingest.chunks c SET state = $3, worker_pid = NULL, node = NULL, "
                "next_attempt = now() + $4::float8 * interval '1 second', "
                "attempts = greatest(c.attempts - $5::int, 0) "
                "FROM (SELECT file_id, no FROM ingest.chunks WHERE file_id = $1 AND no = $2 "
                "      AND state = " SQL_LOADING " AND node = $6 AND attempts = $7 FOR UPDATE SKIP LOCKED) t "
                "WHERE c.file_id = t.file_id AND c.no = t.no",
                7, p);
        int released = res && strcmp(PQcmdTuples(res), "1") == 0;

        PQclear(res);
        return res ? released : -EIO;
}

int chunks_reset_orphans(PGconn *c, const char *node, const char *const *live, size_t n_live, char **ret_error)
{
        Buf arr = { 0 };

        buf_append(&arr, "{", 1);
        for (size_t i = 0; i < n_live; i++) {
                if (i > 0)
                        buf_append(&arr, ",", 1);
                buf_append(&arr, "\"", 1);
                buf_append(&arr, live[i], strlen(live[i]));
                buf_append(&arr, "\"", 1);
        }
        buf_append(&arr, "}", 2);
        const char *p[2] = { arr.data, node };
        PGresult *res = db_query(c, ret_error,
                "UPDATE ingest.chunks c SET state = " SQL_PENDING ", worker_pid = NULL, node = NULL "
                "FROM (SELECT file_id, no FROM ingest.chunks WHERE state = " SQL_LOADING " AND node = $2 "
                "      AND NOT (file_id::text || ':' || no::text = ANY ($1::text[])) FOR UPDATE SKIP LOCKED) t "
                "WHERE c.file_id = t.file_id AND c.no = t.no",
                2, p);
        int n = res ? atoi(PQcmdTuples(res)) : -EIO;

        buf_free(&arr);
        PQclear(res);
        return n;
}

PGresult *chunks_take_over(PGconn *c, double takeover_after, char **ret_error)
{
        char after[32];
        const char *p[1] = { after };

        snprintf(after, sizeof after, "%.3f", takeover_after);
        /* The dead nodes' rows go (so that one that comes back notices), and
         * every loading chunk whose node is not alive is released, unless a
         * live transaction holds its row: a worker that still runs commits or
         * rolls back first. One statement, one snapshot. */
        return db_query(c, ret_error,
                "WITH dead AS (DELETE FROM ingest.nodes WHERE heartbeat_at < now() - $1::float8 * interval '1 second' "
                "              RETURNING node, extract(epoch FROM now() - heartbeat_at) AS age), "
                "freed AS (UPDATE ingest.chunks c SET state = " SQL_PENDING ", node = NULL, worker_pid = NULL, "
                "                 next_attempt = NULL "
                "          FROM (SELECT k.file_id, k.no, k.node FROM ingest.chunks k WHERE k.state = " SQL_LOADING " "
                "                AND NOT EXISTS (SELECT 1 FROM ingest.nodes n WHERE n.node = k.node "
                "                    AND n.heartbeat_at >= now() - $1::float8 * interval '1 second') "
                "                FOR UPDATE OF k SKIP LOCKED) t "
                "          WHERE c.file_id = t.file_id AND c.no = t.no RETURNING coalesce(t.node, '') AS node), "
                "per_node AS (SELECT node, count(*) AS n FROM freed GROUP BY node) "
                "SELECT coalesce(d.node, f.node), coalesce(round(d.age::numeric, 1)::text, ''), coalesce(f.n, 0) "
                "FROM dead d FULL JOIN per_node f ON f.node = d.node",
                1, p);
}

int chunk_record_error(PGconn *c, const ChunkClaim *cl, const char *error, char **ret_error)
{
        Ids k = ids_of(cl->file_id, cl->no);
        const char *p[4] = { k.file, k.no, error, cl->node };

        return db_exec(
                c, ret_error, "UPDATE ingest.chunks SET error = $3 WHERE file_id = $1 AND no = $2 AND node = $4", 4, p);
}
