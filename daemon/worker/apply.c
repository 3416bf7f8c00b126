/* apply.c - what the apply paths share (see apply.h): helpers over db.h that
 * hold no state and call no path. */
#include "apply.h"
#include "db.h"

#include <errno.h>
#include <stdlib.h>

int apply_new_rows_begin(PGconn *c, char **ret_error) { return db_exec(c, ret_error, "SAVEPOINT new_rows", 0, NULL); }

int apply_new_rows_end(PGconn *c, int r, char **ret_error)
{
        if (r == 0)
                return db_exec(c, ret_error, "RELEASE SAVEPOINT new_rows", 0, NULL);
        if (r != -EEXIST && !db_unique_violation(*ret_error))
                return r;
        free(*ret_error);
        *ret_error = NULL;
        return db_exec(c, ret_error, "ROLLBACK TO SAVEPOINT new_rows", 0, NULL) < 0 ? -EIO : -EEXIST;
}

int apply_request_recount(PGconn *c, char **ret_error)
{
        return db_exec(c, ret_error, "INSERT INTO ingest.agg_delta (name, delta) VALUES (NULL, 0)", 0, NULL);
}

const char *apply_unknown_reason(KeyMode key)
{
        return key == KEY_SKU_NAME ? "unknown sku,name: update files do not insert"
                                   : "unknown sku: update files do not insert";
}
