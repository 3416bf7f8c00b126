/* state.c - the transitions of state.h, each one statement (or one
 * transaction) whose WHERE names the source state. Nothing here logs: the
 * caller logs once, with the file and chunk. */
#include "state.h"
#include "db.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

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

        return db_exec(c, ret_error,
                "INSERT INTO ingest.files (id, name, kind, path, state, error, finished_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $5 = " SQL_FAILED " THEN now() END)",
                6, p);
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
        buf_free(&b);
        return db_end(c, r, ret_error);
}

int file_close(PGconn *c, int64_t id, FileState final, const char *reason, char **ret_error)
{
        Ids k = ids_of(id, 0);
        const char *p[3] = { k.file, file_state_name(final), reason };

        return db_exec(c, ret_error,
                "UPDATE ingest.files f SET state = $2, error = $3, finished_at = now(), "
                " rows_loaded = t.l, rows_rejected = t.r, rows_superseded = t.s "
                "FROM (SELECT coalesce(sum(rows_loaded), 0) l, coalesce(sum(rows_rejected), 0) r, "
                "             coalesce(sum(rows_superseded), 0) s FROM ingest.chunks WHERE file_id = $1) t "
                "WHERE f.id = $1 AND f.state IN (" SQL_NEW ", " SQL_LOADING ")",
                3, p);
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

int chunk_claim(PGconn *c, int64_t file_id, int no, int pid, char **ret_error)
{
        Ids k = ids_of(file_id, no);
        char pids[32];
        const char *p[3] = { k.file, k.no, pids };

        snprintf(pids, sizeof pids, "%d", pid);
        PGresult *res = db_query(c, ret_error,
                "UPDATE ingest.chunks SET state = " SQL_LOADING ", attempts = attempts + 1, "
                "worker_pid = $3, started_at = now() "
                "WHERE file_id = $1 AND no = $2 AND state = " SQL_PENDING,
                3, p);
        int claimed = res && strcmp(PQcmdTuples(res), "1") == 0;

        PQclear(res);
        return res ? claimed : -EIO;
}

int chunk_done(PGconn *c, int64_t file_id, int no, const ChunkRows *rows, const char *apply_path, char **ret_error)
{
        Ids k = ids_of(file_id, no);
        char l[32], s[32], rj[32];
        const char *p[6] = { k.file, k.no, l, rj, s, apply_path };

        snprintf(l, sizeof l, "%" PRIu64, rows->loaded);
        snprintf(rj, sizeof rj, "%" PRIu64, rows->rejected);
        snprintf(s, sizeof s, "%" PRIu64, rows->superseded);
        /* the worker holds the row locked and saw it unfinished */
        return db_exec(c, ret_error,
                "UPDATE ingest.chunks SET state = " SQL_DONE ", rows_loaded = $3, rows_rejected = $4, "
                "rows_superseded = $5, apply_path = $6, finished_at = now(), error = NULL "
                "WHERE file_id = $1 AND no = $2 AND state <> " SQL_DONE,
                6, p);
}

int chunk_release(PGconn *c, int64_t file_id, int no, ChunkState to, double delay, bool count_attempt, char **ret_error)
{
        Ids k = ids_of(file_id, no);
        char del[32];
        const char *p[5] = { k.file, k.no, chunk_state_name(to), del, count_attempt ? "0" : "1" };

        snprintf(del, sizeof del, "%.3f", delay);
        return db_exec(c, ret_error,
                "UPDATE ingest.chunks SET state = $3, worker_pid = NULL, "
                "next_attempt = now() + $4::float8 * interval '1 second', "
                "attempts = greatest(attempts - $5::int, 0) "
                "WHERE file_id = $1 AND no = $2 AND state = " SQL_LOADING,
                5, p);
}

int chunks_reset_orphans(PGconn *c, const char *const *live, size_t n_live, char **ret_error)
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
        const char *p[1] = { arr.data };
        int r = db_exec(c, ret_error,
                "UPDATE ingest.chunks SET state = " SQL_PENDING ", worker_pid = NULL "
                "WHERE state = " SQL_LOADING " "
                "AND NOT (file_id::text || ':' || no::text = ANY ($1::text[]))",
                1, p);
        buf_free(&arr);
        return r;
}

int chunk_record_error(PGconn *c, int64_t file_id, int no, const char *error, char **ret_error)
{
        Ids k = ids_of(file_id, no);
        const char *p[3] = { k.file, k.no, error };

        return db_exec(c, ret_error, "UPDATE ingest.chunks SET error = $3 WHERE file_id = $1 AND no = $2", 3, p);
}
