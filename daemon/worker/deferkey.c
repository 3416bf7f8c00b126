/* deferkey.c - see deferkey.h. */
#include "deferkey.h"
#include "db.h"
#include "lookahead.h"
#include "products.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int drop_key(PGconn *c, const char *ids, const char *name, char **ret_error)
{
        const char *p[2] = { ids, name };
        int r = products_drop_key(c, name, ret_error);

        if (r == 0)
                r = db_exec(c, ret_error,
                        "UPDATE ingest.files SET key_decided = true, deferred_key = $2 "
                        "WHERE id = $1",
                        2, p);
        return r;
}

static int mark_decided(PGconn *c, const char *ids, char **ret_error)
{
        const char *p[1] = { ids };

        return db_exec(c, ret_error, "UPDATE ingest.files SET key_decided = true WHERE id = $1", 1, p);
}

/* Under the file row's lock: several instances may decide at once. */
int deferkey_decide(PGconn *c, int64_t file_id, bool allowed, char **ret_error)
{
        uint64_t chunk_keys = lookahead_capacity(LOOKAHEAD_BYTES);
        char ids[32], keys[32], *name = NULL;
        const char *p[2] = { ids, keys };
        int r;

        snprintf(ids, sizeof ids, "%" PRId64, file_id);
        snprintf(keys, sizeof keys, "%" PRIu64, chunk_keys);
        if (db_exec(c, ret_error, "BEGIN", 0, NULL) < 0)
                return -EIO;
        r = db_query_bool(c, ret_error,
                "SELECT kind = 'ingest' AND data_rows <= $2::bigint * greatest(chunks, 1) "
                "FROM ingest.files WHERE id = $1 AND NOT key_decided FOR UPDATE",
                2, p);
        if (r > 0 && allowed) {
                if (!products_lock(c)) {
                        PQclear(PQexec(c, "ROLLBACK"));
                        return mark_decided(c, ids, ret_error);
                }
                name = products_droppable_key(c, ret_error, &r);
        }
        if (r >= 0 && name)
                r = drop_key(c, ids, name, ret_error) == 0 ? 1 : -EIO;
        else if (r >= 0)
                r = mark_decided(c, ids, ret_error);
        free(name);
        return db_end(c, r < 0 ? r : 0, ret_error) < 0 ? -EIO : r;
}

static int apply_deferred_rows(PGconn *c, const char *ids, KeyMode key, char **ret_error)
{
        const char *p[1] = { ids };
        int r = db_exec(c, ret_error, products_merge_deferred_sql(key), 1, p);

        if (r == 0)
                r = db_exec(c, ret_error, PRODUCTS_RECOUNT_DEFERRED, 1, p);
        if (r == 0)
                r = db_exec(c, ret_error, "DELETE FROM ingest.deferred_rows WHERE file_id = $1", 1, p);
        return r;
}

int deferkey_build(PGconn *c, int64_t file_id, KeyMode key, char **ret_error)
{
        char ids[32];
        const char *p[1] = { ids };

        snprintf(ids, sizeof ids, "%" PRId64, file_id);
        PGresult *res = db_query(c, ret_error,
                "SELECT deferred_key FROM ingest.files "
                "WHERE id = $1 AND deferred_key IS NOT NULL FOR UPDATE",
                1, p);
        if (!res)
                return -EIO;
        char *name = PQntuples(res) == 1 ? xstrdup(PQgetvalue(res, 0, 0)) : NULL;
        PQclear(res);
        if (!name)
                return 0;
        int r = products_add_key(c, name, key, ret_error);
        if (r == 0)
                r = apply_deferred_rows(c, ids, key, ret_error);
        if (r == 0)
                r = db_exec(c, ret_error, "UPDATE ingest.files SET deferred_key = NULL WHERE id = $1", 1, p);
        free(name);
        return r < 0 ? r : 1;
}

int deferkey_pending(PGconn *c, char **ret_error)
{
        return db_query_bool(
                c, ret_error, "SELECT EXISTS (SELECT 1 FROM ingest.files WHERE deferred_key IS NOT NULL)", 0, NULL);
}
