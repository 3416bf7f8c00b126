/* db.h - thin libpq helpers: connect, run a statement, format errors with
 * their SQLSTATE. Nothing here logs; callers log once with context. */
#pragma once
#include <libpq-fe.h>
#include <stdbool.h>

/* Connects; on failure returns NULL and sets *ret_error. */
PGconn *db_connect(const char *conninfo, char **ret_error);
/* Runs sql with text params. Returns the result on success (COMMAND_OK or
 * TUPLES_OK), NULL with *ret_error on failure. */
PGresult *db_query(PGconn *c, char **ret_error, const char *sql, int n, const char *const *params);
/* Like db_query, for statements whose result is not needed. 0 or -EIO. */
int db_exec(PGconn *c, char **ret_error, const char *sql, int n, const char *const *params);
/* For a query of one boolean column: 1 when its first row says true, 0 when
 * false or there is no row, -EIO with *ret_error on failure. */
int db_query_bool(PGconn *c, char **ret_error, const char *sql, int n, const char *const *params);
/* Runs several ;-separated statements without parameters. 0 or -EIO. */
int db_script(PGconn *c, char **ret_error, const char *sql);
/* Begins a transaction whose COMMIT does not wait for the WAL flush (nor a
 * synchronous standby): for bookkeeping that a crash of the server may lose
 * because the next step finds it lost and does it again. 0 or -EIO. */
int db_begin_unflushed(PGconn *c, char **ret_error);
/* Ends a transaction: COMMIT when r == 0, else ROLLBACK. Returns r, or the
 * COMMIT's failure (-EIO with *ret_error). */
int db_end(PGconn *c, int r, char **ret_error);
/* COPY ... FROM STDIN: begin (0 once the server is ready for rows; also for
 * COPY ... TO STDOUT, whose rows PQgetCopyData reads), send rows, end. end
 * and result return 0, -EEXIST on a unique violation, else -EIO; *ret_error
 * is set on every failure. result is the COPY's outcome once its rows are
 * all sent (end) or all read. */
int db_copy_begin(PGconn *c, char **ret_error, const char *sql);
int db_copy_put(PGconn *c, char **ret_error, const char *data, size_t n);
int db_copy_end(PGconn *c, char **ret_error);
int db_copy_result(PGconn *c, char **ret_error);
/* COPY sql FROM STDIN of data[0, n) in one go: begin, put, end. */
int db_copy_rows(PGconn *c, char **ret_error, const char *sql, const char *data, size_t n);
/* "message (SQLSTATE xxxxx)" for a failed result. */
char *db_error(PGconn *c, const PGresult *res);
/* True when an error of db_error is a unique violation (SQLSTATE 23505). */
bool db_unique_violation(const char *error);
/* True when an error of db_error is a lock_timeout (SQLSTATE 55P03). */
bool db_lock_timeout(const char *error);
/* SQLSTATE 53100: the server could not extend a file, its disk is full. */
bool db_disk_full(const char *error);
/* True when the error is a lost connection rather than a statement error. */
bool db_connection_lost(PGconn *c);
