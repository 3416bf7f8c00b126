/* supervisor.h - the main process: one event loop that registers files, plans
 * chunks, forks workers, reaps them, retries, refreshes the aggregate, talks to
 * systemd. */
#pragma once
#include "config.h"

/* Runs until SIGTERM/SIGINT and every child has exited. Takes ownership of cfg.
 * Returns a process exit status. */
int supervisor_run(Config *cfg, const char *config_path);
