/* main.c - ingestd's command line: the supervisor (default), --check-config,
 * and the internal child roles the supervisor execs (--worker, --plan,
 * --aggregate, --aggregate-fold, --build-key, --prune). */
#include "aggregate.h"
#include "retention.h"
#include "config.h"
#include "db.h"
#include "deferkey.h"
#include "log.h"
#include "outcome.h"
#include "planfile.h"
#include "supervisor.h"
#include "util.h"
#include "worker.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

static void usage(FILE *f)
{
        fprintf(f, "Usage: ingestd [-c FILE] [--check-config] [--debug]\n"
                   "Loads product CSV files dropped into watched folders into PostgreSQL.\n\n"
                   "  -c, --config FILE   configuration file (default " CONFIG_DEFAULT_PATH ")\n"
                   "      --check-config  validate the configuration, print it, and exit\n"
                   "  -d, --debug         log debug messages too\n"
                   "  -h, --help          show this help\n"
                   "  -V, --version       show the version\n\n"
                   "Runs in the foreground until SIGTERM or SIGINT; SIGHUP reloads the\n"
                   "configuration. See ingestd(8) and ingestd.conf(5).\n");
}

static int run_aggregate(const Config *cfg, AggregateMode mode)
{
        char *err = NULL;
        double t0 = now_monotonic();
        PGconn *c = db_connect(cfg->conninfo, &err);
        int r = c ? aggregate_refresh(c, &mode, cfg->aggregate_count_memory, &err) : -1;

        if (r < 0)
                log_msg(LOG_ERR, "aggregate refresh: %s", err);
        else
                log_msg(LOG_DEBUG, "products_agg %s in %.3f s",
                        mode == AGGREGATE_FULL ? "recounted" : "updated from the loads' deltas", now_monotonic() - t0);
        free(err);
        PQfinish(c);
        return r < 0 ? EX_TEMPFAIL : 0;
}

/* The leader's prune child: logs what went, once, when anything did. */
static int run_prune(const Config *cfg)
{
        char *err = NULL;
        RetentionCounts n = { 0 };
        PGconn *c = db_connect(cfg->conninfo, &err);
        int r = c ? retention_prune(c, cfg, &n, &err) : -EIO;

        if (n.files || n.done_files)
                log_msg(LOG_INFO,
                        "retention: history of %lld done files removed (%lld chunk rows, %lld reject rows), "
                        "%lld files deleted from done/ (%lld bytes)",
                        n.files, n.chunks, n.rejects, n.done_files, n.done_bytes);
        if (r < 0)
                log_msg(LOG_WARNING, "retention: %s; the next prune goes on", err);
        free(err);
        PQfinish(c);
        return r < 0 ? EX_TEMPFAIL : 0;
}

/* One transaction: the key, the deferred rows, the file's mark. */
static int run_build_key(const Config *cfg, const char *arg)
{
        char *end, *err = NULL;
        long long file_id = strtoll(arg, &end, 10);
        double t0 = now_monotonic();

        if (*end || file_id <= 0) {
                log_msg(LOG_ERR, "--build-key needs FILE_ID");
                return EX_USAGE;
        }
        PGconn *c = db_connect(cfg->conninfo, &err);
        int r = c ? db_exec(c, &err, "BEGIN", 0, NULL) : -EIO;
        if (r == 0)
                r = db_end(c, deferkey_build(c, file_id, cfg->key, &err) < 0 ? -EIO : 0, &err);
        if (r < 0)
                log_msg(LOG_ERR, "products: cannot build the primary key deferred by file %lld: %s", file_id, err);
        else
                log_msg(LOG_INFO, "products: primary key built in %.2f s, after the first load of file %lld",
                        now_monotonic() - t0, file_id);
        free(err);
        PQfinish(c);
        return r < 0 ? EX_TEMPFAIL : 0;
}

/* --worker FILE_ID CHUNK NODE CLAIM PATH: the node and the claim's attempt
 * number as the supervisor committed them (state.h). */
static int run_worker(const Config *cfg, char **args)
{
        char *end;
        long long file_id = strtoll(args[0], &end, 10);
        long chunk = strtol(args[1], NULL, 10), claim = strtol(args[3], NULL, 10);

        if (*end || file_id <= 0 || chunk <= 0 || claim <= 0) {
                log_msg(LOG_ERR, "--worker needs FILE_ID CHUNK NODE CLAIM PATH");
                return EX_USAGE;
        }
        ChunkClaim cl = { file_id, (int)chunk, args[2], (int)claim };
        return outcome_exit_code(worker_run(cfg, &cl, args[4]));
}

static int run_plan(const Config *cfg, const char *arg)
{
        char *end;
        long long file_id = strtoll(arg, &end, 10);

        if (*end || file_id <= 0) {
                log_msg(LOG_ERR, "--plan needs FILE_ID");
                return EX_USAGE;
        }
        return outcome_exit_code(planfile_run(cfg, file_id));
}

int main(int argc, char **argv)
{
        static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
                { "check-config", no_argument, NULL, 'C' }, { "debug", no_argument, NULL, 'd' },
                { "help", no_argument, NULL, 'h' }, { "version", no_argument, NULL, 'V' },
                { "worker", no_argument, NULL, 'W' }, { "aggregate", no_argument, NULL, 'A' },
                { "aggregate-fold", no_argument, NULL, 'F' }, { "build-key", no_argument, NULL, 'K' },
                { "plan", no_argument, NULL, 'P' }, { "prune", no_argument, NULL, 'R' }, { 0 } };
        const char *path = CONFIG_DEFAULT_PATH;
        char mode = 'S', *err = NULL;
        Config *cfg = NULL;
        int o;

        log_init("ingestd");
        while ((o = getopt_long(argc, argv, "c:dhV", opts, NULL)) != -1) {
                switch (o) {
                case 'c': path = optarg; break;
                case 'd': log_set_level(LOG_DEBUG); break;
                case 'h': usage(stdout); return 0;
                case 'V': puts("ingestd " PACKAGE_VERSION); return 0;
                case 'C':
                case 'W':
                case 'A':
                case 'F':
                case 'K':
                case 'R':
                case 'P': mode = (char)o; break;
                default: usage(stderr); return EX_USAGE;
                }
        }
        int args = mode == 'W' ? 5 : mode == 'K' || mode == 'P' ? 1 : 0;
        if (argc - optind != args) {
                usage(stderr);
                return EX_USAGE;
        }
        if (config_load(path, &cfg, &err) < 0) {
                fprintf(stderr, "ingestd: %s\n", err);
                free(err);
                return EX_CONFIG;
        }
        switch (mode) {
        case 'C':
                config_print(cfg, stdout);
                printf("# %s: configuration is valid\n", path);
                config_free(cfg);
                return 0;
        case 'W': o = run_worker(cfg, argv + optind); break;
        case 'A': o = run_aggregate(cfg, AGGREGATE_FULL); break;
        case 'F': o = run_aggregate(cfg, AGGREGATE_FOLD); break;
        case 'K': o = run_build_key(cfg, argv[optind]); break;
        case 'P': o = run_plan(cfg, argv[optind]); break;
        case 'R': o = run_prune(cfg); break;
        default: return supervisor_run(cfg, path);
        }
        config_free(cfg);
        return o;
}
