/* nodes.c - see nodes.h. Each function is one statement. */
#include "nodes.h"
#include "db.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct NodeParams {
        char pid[32], workers[32], seconds[32];
} NodeParams;

static NodeParams node_params(NodeId me, int workers, double seconds)
{
        NodeParams p;

        snprintf(p.pid, sizeof p.pid, "%d", me.pid);
        snprintf(p.workers, sizeof p.workers, "%d", workers);
        snprintf(p.seconds, sizeof p.seconds, "%.3f", seconds);
        return p;
}

int node_join(PGconn *c, NodeId me, int workers, double takeover_after, double *ret_rival, char **ret_error)
{
        NodeParams np = node_params(me, workers, takeover_after);
        const char *p[5] = { me.node, np.pid, PACKAGE_VERSION, np.workers, np.seconds };
        PGresult *res = db_query(c, ret_error,
                "WITH old AS (SELECT pid, extract(epoch FROM now() - heartbeat_at) AS age FROM ingest.nodes "
                "             WHERE node = $1) "
                "INSERT INTO ingest.nodes (node, pid, version, workers) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (node) DO UPDATE SET pid = EXCLUDED.pid, started_at = now(), heartbeat_at = now(), "
                "    version = EXCLUDED.version, workers = EXCLUDED.workers "
                "RETURNING (SELECT age FROM old WHERE pid <> $2::int AND age < $5::float8)",
                5, p);

        if (!res)
                return -EIO;
        *ret_rival = PQgetisnull(res, 0, 0) ? -1 : strtod(PQgetvalue(res, 0, 0), NULL);
        PQclear(res);
        return 0;
}

int node_heartbeat(PGconn *c, NodeId me, int workers, int busy, double lease, NodeBeat *ret, char **ret_error)
{
        NodeParams np = node_params(me, workers, lease);
        char busy_text[32];
        const char *p[5] = { me.node, np.pid, np.workers, np.seconds, busy_text };

        snprintf(busy_text, sizeof busy_text, "%d", busy);
        /* Committed without waiting for the WAL flush: a heartbeat lost in a
         * crash of the server is renewed by the next one, and the supervisor's
         * loop must not wait behind a load's writes every beat. */
        if (db_begin_unflushed(c, ret_error) < 0)
                return -EIO;
        /* the lease is taken when it is ours or has lapsed, by the database's clock */
        PGresult *res = db_query(c, ret_error,
                "WITH me AS (UPDATE ingest.nodes SET heartbeat_at = now(), workers = $3, busy = $5 "
                "            WHERE node = $1 AND pid = $2 RETURNING node), "
                "lease AS (INSERT INTO ingest.leader (one, node, until) "
                "          SELECT true, $1, now() + $4::float8 * interval '1 second' FROM me "
                "          ON CONFLICT (one) DO UPDATE SET node = EXCLUDED.node, until = EXCLUDED.until "
                "          WHERE ingest.leader.node = EXCLUDED.node OR ingest.leader.until < now() "
                "          RETURNING node) "
                "SELECT EXISTS (SELECT 1 FROM me), EXISTS (SELECT 1 FROM lease), $3::int + "
                "       (SELECT coalesce(sum(workers), 0) FROM ingest.nodes WHERE node <> $1 "
                "        AND heartbeat_at >= now() - $4::float8 * interval '1 second')",
                5, p);

        if (!res)
                return db_end(c, -EIO, ret_error);
        ret->alive = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
        ret->leader = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
        ret->cluster_workers = atoi(PQgetvalue(res, 0, 2));
        PQclear(res);
        return db_end(c, 0, ret_error);
}

int node_leave(PGconn *c, NodeId me, char **ret_error)
{
        NodeParams np = node_params(me, 0, 0);
        const char *p[2] = { me.node, np.pid };

        return db_exec(c, ret_error,
                "WITH l AS (DELETE FROM ingest.leader WHERE node = $1) "
                "DELETE FROM ingest.nodes WHERE node = $1 AND pid = $2",
                2, p);
}

int nodes_live_workers(PGconn *c, double takeover_after, char **ret_error)
{
        NodeParams np = node_params((NodeId){ NULL, 0 }, 0, takeover_after);
        const char *p[1] = { np.seconds };
        PGresult *res = db_query(c, ret_error,
                "SELECT coalesce(sum(workers), 0) FROM ingest.nodes "
                "WHERE heartbeat_at >= now() - $1::float8 * interval '1 second'",
                1, p);
        int n = res ? atoi(PQgetvalue(res, 0, 0)) : -EIO;

        PQclear(res);
        return n;
}
