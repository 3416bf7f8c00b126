/* cluster.c - see cluster.h. The lease runs out locally one heartbeat before
 * the database's `until`: a node that lost its lease stops leading before
 * another node can take it. */
#include "cluster.h"
#include "metrics.h"
#include "log.h"
#include "nodes.h"
#include "state.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

struct Cluster {
        bool joined, leader;
        double next_beat, lease_until; /* monotonic seconds */
        int workers;                   /* of all live nodes */
};

Cluster *cluster_new(void) { return xcalloc(1, sizeof(Cluster)); }

Cluster *cluster_free(Cluster *cl)
{
        free(cl);
        return NULL;
}

void cluster_reset(Cluster *cl)
{
        cl->joined = false;
        cl->leader = false;
        cl->next_beat = 0;
}

bool cluster_leader(const Cluster *cl) { return cl->leader && now_monotonic() < cl->lease_until; }

int cluster_workers(const Cluster *cl, const Config *cfg)
{
        int mine = config_workers(cfg);
        return cl->workers > mine ? cl->workers : mine;
}

static NodeId me(const Config *cfg) { return (NodeId){ cfg->node, (int)getpid() }; }

static int join(Cluster *cl, PGconn *c, const Config *cfg, char **ret_error)
{
        double rival = -1;
        int r = node_join(c, me(cfg), config_workers(cfg), cfg->takeover_after, &rival, ret_error);

        if (r < 0)
                return r;
        if (rival >= 0)
                log_msg(LOG_WARNING,
                        "node %s was heartbeating as another process %.1f s ago; if that is another instance, "
                        "give each node its own cluster.node",
                        cfg->node, rival);
        cl->joined = true;
        return CLUSTER_JOINED;
}

/* One line per node declared dead now, or whose chunks were released. */
static int take_over(PGconn *c, const Config *cfg, char **ret_error)
{
        PGresult *res = chunks_take_over(c, cfg->takeover_after, ret_error);

        if (!res)
                return -EIO;
        for (int i = 0; i < PQntuples(res); i++) {
                const char *node = PQgetvalue(res, i, 0), *age = PQgetvalue(res, i, 1);
                if (*age)
                        log_msg(LOG_WARNING, "node %s is dead (last heartbeat %s s ago): %s of its chunks released",
                                node, age, PQgetvalue(res, i, 2));
                else
                        log_msg(LOG_WARNING, "%s chunks of node %s released: it is gone", PQgetvalue(res, i, 2),
                                *node ? node : "(none)");
                metrics_takeovers(atoi(PQgetvalue(res, i, 2)));
        }
        int freed = PQntuples(res) > 0;
        PQclear(res);
        return freed ? state_wake(c, ret_error) : 0;
}

/* The lease's local deadline is set from before the statement was sent. */
static int beat(Cluster *cl, PGconn *c, const Config *cfg, int busy, char **ret_error)
{
        double sent = now_monotonic();
        NodeBeat b;
        int events = 0, r = node_heartbeat(c, me(cfg), config_workers(cfg), busy, cfg->takeover_after, &b, ret_error);

        if (r < 0)
                return r;
        if (!b.alive) {
                log_msg(LOG_WARNING,
                        "node %s was declared dead by the others (no heartbeat for %.0f s); "
                        "its chunks were released; rejoining",
                        cfg->node, cfg->takeover_after);
                cl->leader = false;
                return join(cl, c, cfg, ret_error) | CLUSTER_FOLLOWING;
        }
        if (b.leader && !cluster_leader(cl))
                events |= CLUSTER_LEADING;
        if (!b.leader && cl->leader)
                events |= CLUSTER_FOLLOWING;
        if (events & CLUSTER_LEADING)
                log_msg(LOG_INFO, "node %s leads: it scans the folders, plans files and refreshes products_agg",
                        cfg->node);
        if (events & CLUSTER_FOLLOWING)
                log_msg(LOG_INFO, "node %s no longer leads", cfg->node);
        cl->leader = b.leader;
        cl->lease_until = sent + cfg->takeover_after - cfg->heartbeat;
        cl->workers = b.cluster_workers;
        return events;
}

int cluster_beat(Cluster *cl, PGconn *c, const Config *cfg, int busy, char **ret_error)
{
        double now = now_monotonic();
        int events = 0, r;

        if (cl->leader && now >= cl->lease_until) { /* frozen or cut off past our lease */
                cl->leader = false;
                log_msg(LOG_WARNING, "node %s: the leader's lease ran out before it was renewed", cfg->node);
                events |= CLUSTER_FOLLOWING;
        }
        if (now < cl->next_beat)
                return events;
        cl->next_beat = now + cfg->heartbeat;
        if (!cl->joined) {
                if ((r = join(cl, c, cfg, ret_error)) < 0)
                        return r;
                events |= r;
        }
        if ((r = beat(cl, c, cfg, busy, ret_error)) < 0)
                return r;
        events |= r | CLUSTER_BEAT;
        return take_over(c, cfg, ret_error) < 0 ? -EIO : events;
}

void cluster_leave(Cluster *cl, PGconn *c, const Config *cfg)
{
        char *err = NULL;

        if (c && cl->joined && node_leave(c, me(cfg), &err) < 0) {
                log_msg(LOG_WARNING, "cannot leave ingest.nodes: %s", err);
                free(err);
        }
        cl->joined = false;
        cl->leader = false;
}
