/* nodes.h - the cluster's membership, all in PostgreSQL: each node's row in
 * ingest.nodes (its heartbeat) and the leader's lease (ingest.leader). The
 * times are the database's, so no two hosts' clocks are ever compared.
 * Which chunks a node holds is state.h's. */
#pragma once
#include <libpq-fe.h>
#include <stdbool.h>

/* A node as it runs: its name (cluster.node) and the pid of its supervisor,
 * which tells this run of the node from an earlier or a rival one. */
typedef struct NodeId {
        const char *node;
        int pid;
} NodeId;

/* What a heartbeat found. */
typedef struct NodeBeat {
        bool alive;          /* our row was there: false = we were declared dead */
        bool leader;         /* we hold the lease (renewed for lease seconds) */
        int cluster_workers; /* the workers of all live nodes, ours included */
} NodeBeat;

/* Writes our row (taking it over from an earlier run of the node). When the
 * row was heartbeating as another pid less than takeover_after ago, says so
 * in *ret_rival (heartbeat age in seconds, else -1): two instances with one
 * name. 0 or -EIO with *ret_error. */
int node_join(PGconn *c, NodeId me, int workers, double takeover_after, double *ret_rival, char **ret_error);
/* Renews our heartbeat (with our workers and how many are busy) and, if it
 * is free or ours, the leader's lease for lease seconds; counts the live
 * nodes' workers. 0 or -EIO with *ret_error. */
int node_heartbeat(PGconn *c, NodeId me, int workers, int busy, double lease, NodeBeat *ret, char **ret_error);
/* On a clean stop: our lease and our row go, so nobody waits for us. */
int node_leave(PGconn *c, NodeId me, char **ret_error);
/* The workers of the nodes heard from in the last takeover_after seconds
 * (0 when none), or -EIO with *ret_error. */
int nodes_live_workers(PGconn *c, double takeover_after, char **ret_error);
