/* cluster.h - this node among the others (nodes.h): its heartbeat every
 * cluster.heartbeat seconds, the leader's lease, and the takeover of dead
 * nodes' chunks, which every node runs (it is one idempotent statement). The
 * supervisor asks cluster_beat() on every pass and acts on what changed. */
#pragma once
#include "config.h"

#include <libpq-fe.h>
#include <stdbool.h>

typedef struct Cluster Cluster;

/* What a beat changed, as bits. */
enum {
        CLUSTER_JOINED = 1,    /* our row was (re)written: reset our orphan chunks */
        CLUSTER_LEADING = 2,   /* we became the leader: recover and rescan the folders */
        CLUSTER_FOLLOWING = 4, /* we are no longer the leader */
        CLUSTER_BEAT = 8,      /* a heartbeat went out: sweep our orphan chunks */
};

Cluster *cluster_new(void);
Cluster *cluster_free(Cluster *cl);
/* After a (re)connect: the next beat joins at once. */
void cluster_reset(Cluster *cl);
/* The heartbeat when it is due (else 0 at once), telling how many of our
 * workers are busy: the CLUSTER_* bits, or -EIO with *ret_error. */
int cluster_beat(Cluster *cl, PGconn *c, const Config *cfg, int busy, char **ret_error);
/* Whether we lead now: the lease is ours and not past its local deadline (a
 * node frozen past its lease knows it, before its next beat). */
bool cluster_leader(const Cluster *cl);
/* The workers of all live nodes (at least ours, before the first beat). */
int cluster_workers(const Cluster *cl, const Config *cfg);
/* On a clean stop. */
void cluster_leave(Cluster *cl, PGconn *c, const Config *cfg);
