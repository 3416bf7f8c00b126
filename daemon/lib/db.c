/* db.c - libpq helpers shared by the supervisor, workers and ingestctl. Every
 * PQexec* is paired with a PQclear on each path. */
#include "db.h"
#include "util.h"

#include <errno.h>
#include <string.h>

static void ignore_notice(void *arg, const char *message)
{
        (void)arg;
        (void)message;
}

/* TCP keepalives and a user timeout on every connection, so that a peer
 * that vanished (a host gone, a partition) fails our statements within
 * seconds instead of the kernel's two hours. They come before the conninfo,
 * which libpq expands last: what the operator wrote wins. Unix sockets
 * ignore them. */
static const char *const tcp_keys[] = { "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
        "tcp_user_timeout", "dbname", NULL };
static const char *const tcp_values[] = { "1", "5", "2", "3", "10000" };

PGconn *db_connect(const char *conninfo, char **ret_error)
{
        const char *values[] = { tcp_values[0], tcp_values[1], tcp_values[2], tcp_values[3], tcp_values[4], conninfo,
                NULL };
        PGconn *c = PQconnectdbParams(tcp_keys, values, 1);

        if (PQstatus(c) == CONNECTION_OK) {
                PQsetNoticeProcessor(c, ignore_notice, NULL);
                return c;
        }
        *ret_error = xstrdup(c ? PQerrorMessage(c) : "out of memory");
        size_t n = strlen(*ret_error);
        while (n > 0 && ((*ret_error)[n - 1] == '\n' || (*ret_error)[n - 1] == ' '))
                (*ret_error)[--n] = '\0';
        PQfinish(c);
        return NULL;
}

char *db_error(PGconn *c, const PGresult *res)
{
        const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
        char *s;

        if (!msg)
                msg = PQerrorMessage(c);
        /* the detail names the key of a unique violation or a failed unique index */
        s = state ? xasprintf("%s%s%s (SQLSTATE %s)", msg, detail ? ": " : "", detail ? detail : "", state)
                  : xstrdup(msg);
        size_t n = strlen(s);
        while (n > 0 && s[n - 1] == '\n')
                s[--n] = '\0';
        return s;
}

/* Whether an error of db_error ends with " (SQLSTATE state)". */
static bool has_sqlstate(const char *error, const char *state)
{
        char suffix[32];
        size_t n = error ? strlen(error) : 0, k = (size_t)snprintf(suffix, sizeof suffix, " (SQLSTATE %s)", state);

        return error && n >= k && strcmp(error + n - k, suffix) == 0;
}

bool db_unique_violation(const char *error) { return has_sqlstate(error, "23505"); }

bool db_lock_timeout(const char *error) { return has_sqlstate(error, "55P03"); }

bool db_disk_full(const char *error) { return has_sqlstate(error, "53100"); }

PGresult *db_query(PGconn *c, char **ret_error, const char *sql, int n, const char *const *params)
{
        PGresult *res = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
        ExecStatusType st = PQresultStatus(res);

        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
                return res;
        if (ret_error)
                *ret_error = db_error(c, res);
        PQclear(res);
        return NULL;
}

int db_query_bool(PGconn *c, char **ret_error, const char *sql, int n, const char *const *params)
{
        PGresult *res = db_query(c, ret_error, sql, n, params);

        if (!res)
                return -EIO;
        int yes = PQntuples(res) > 0 && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        PQclear(res);
        return yes;
}

int db_exec(PGconn *c, char **ret_error, const char *sql, int n, const char *const *params)
{
        PGresult *res = db_query(c, ret_error, sql, n, params);

        if (!res)
                return -EIO;
        PQclear(res);
        return 0;
}

bool db_connection_lost(PGconn *c) { return PQstatus(c) != CONNECTION_OK; }

int db_script(PGconn *c, char **ret_error, const char *sql)
{
        PGresult *res = PQexec(c, sql);
        int r = 0;

        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
                if (ret_error)
                        *ret_error = db_error(c, res);
                r = -EIO;
        }
        PQclear(res);
        return r;
}

int db_copy_begin(PGconn *c, char **ret_error, const char *sql)
{
        PGresult *res = PQexec(c, sql);
        ExecStatusType st = PQresultStatus(res);
        int r = st == PGRES_COPY_IN || st == PGRES_COPY_OUT ? 0 : -EIO;

        if (r < 0)
                *ret_error = db_error(c, res);
        PQclear(res);
        return r;
}

int db_copy_put(PGconn *c, char **ret_error, const char *data, size_t n)
{
        if (PQputCopyData(c, data, (int)n) == 1)
                return 0;
        *ret_error = db_error(c, NULL);
        return -EIO;
}

int db_copy_end(PGconn *c, char **ret_error)
{
        if (PQputCopyEnd(c, NULL) != 1) {
                *ret_error = db_error(c, NULL);
                return -EIO;
        }
        return db_copy_result(c, ret_error);
}

int db_copy_rows(PGconn *c, char **ret_error, const char *sql, const char *data, size_t n)
{
        int r = db_copy_begin(c, ret_error, sql);

        if (r == 0)
                r = db_copy_put(c, ret_error, data, n);
        return r == 0 ? db_copy_end(c, ret_error) : r;
}

int db_copy_result(PGconn *c, char **ret_error)
{
        PGresult *res = PQgetResult(c);
        int r = PQresultStatus(res) == PGRES_COMMAND_OK ? 0 : -EIO;
        if (r < 0) {
                *ret_error = db_error(c, res);
                r = db_unique_violation(*ret_error) ? -EEXIST : r;
        }
        PQclear(res);
        while ((res = PQgetResult(c)))
                PQclear(res);
        return r;
}

int db_begin_unflushed(PGconn *c, char **ret_error)
{
        if (db_exec(c, ret_error, "BEGIN", 0, NULL) < 0)
                return -EIO;
        if (db_exec(c, ret_error, "SET LOCAL synchronous_commit = off", 0, NULL) < 0)
                return db_end(c, -EIO, ret_error);
        return 0;
}

int db_end(PGconn *c, int r, char **ret_error)
{
        if (r == 0)
                r = db_exec(c, ret_error, "COMMIT", 0, NULL);
        if (r < 0)
                PQclear(PQexec(c, "ROLLBACK"));
        return r;
}
