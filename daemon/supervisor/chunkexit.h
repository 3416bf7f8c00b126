/* chunkexit.h - what the supervisor does when a chunk's worker has exited:
 * the decision is policy_after_exit's (policy.h), the transition state.h's;
 * this logs it once, with the file, the chunk and its lines. */
#pragma once
#include "children.h"
#include "config.h"

#include <libpq-fe.h>

/* 0, or -EIO with *ret_error when the database failed (the caller decides
 * whether the connection is lost). */
int chunkexit_record(PGconn *conn, const Config *cfg, const Children *ch, const Child *c, int status, char **ret_error);
/* Whether chunks wait for disk space: a worker found a disk full and no
 * chunk has committed since (STATUS says so). */
bool chunkexit_waiting_for_space(void);
