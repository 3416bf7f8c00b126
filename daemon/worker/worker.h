/* worker.h - the process that loads one chunk in one transaction. Its outcome
 * (outcome.h) becomes its exit status, the contract with the supervisor. */
#pragma once
#include "state.h"
#include "config.h"
#include "outcome.h"

#include <stdint.h>

Outcome worker_run(const Config *cfg, const ChunkClaim *claim, const char *path);
