/* config.h - the configuration: one table of keys drives parsing, validation,
 * --check-config output, the reload "needs a restart" message and the man page
 * test. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum KeyMode { KEY_SKU, KEY_SKU_NAME } KeyMode;
typedef enum WatchMode { WATCH_INOTIFY, WATCH_POLL } WatchMode;

typedef struct Config {
        char *conninfo;
        char *incoming, *updates, *state;
        int workers; /* as configured; 0 = number of CPUs */
        uint64_t chunk_size;
        int max_ranges;
        bool defer_key; /* first loads into an empty products build its key after the rows */
        KeyMode key;
        int partitions;            /* of products by hash(sku); 0 = one table */
        double aggregate_interval; /* seconds, 0 = only after loads */
        bool aggregate_after_load;
        uint64_t aggregate_count_memory; /* bytes; 0 = the server always counts */
        int retry_max_attempts;
        double retry_backoff; /* seconds before the first retry */
        double rejects_max_ratio;
        uint64_t max_field;
        char *node;                  /* cluster.node: this instance's name; the host name by default */
        double heartbeat;            /* seconds between heartbeats of ingest.nodes */
        double takeover_after;       /* seconds of silence after which a node is dead */
        WatchMode watch;             /* inotify, or scanning every watch_interval (network filesystems) */
        double watch_interval;       /* seconds between scans in poll mode */
        char *metrics_listen;        /* "HOST:PORT" of the metrics endpoint; "" = off */
        double retention_history;    /* seconds after which a done file's chunks and rejects go; 0 = keep */
        double retention_done_files; /* seconds after which a done file's file in done/ goes; 0 = keep */
} Config;

typedef enum ConfigType {
        CT_STRING,
        CT_INT,
        CT_SIZE,
        CT_FLOAT,
        CT_BOOL,
        CT_KEY,
        CT_WATCH,
        CT_LISTEN,
        CT_DURATION
} ConfigType;

typedef struct ConfigKey {
        const char *name; /* "retry.backoff" */
        ConfigType type;
        size_t offset;
        const char *def; /* default, as written in the file; NULL: computed (cluster.node) */
        double min, max;
        bool reloadable;
        const char *help;
} ConfigKey;

extern const ConfigKey config_keys[];
extern const size_t config_n_keys;

#define CONFIG_DEFAULT_PATH SYSCONFDIR "/ingestd/ingestd.conf"

/* Parse and validate PATH. On error returns -EINVAL (or -errno) and sets
 * *ret_error to a message naming the file, line and key. */
int config_load(const char *path, Config **ret, char **ret_error);
Config *config_free(Config *c);
int config_workers(const Config *c); /* resolved worker count, >= 1 */
void config_print(const Config *c, FILE *f);
/* Calls fn for each key whose value differs between a and b. */
void config_diff(const Config *a, const Config *b, void (*fn)(const ConfigKey *k, void *ud), void *ud);
const char *config_key_name(KeyMode k);
const char *config_watch_name(WatchMode w);
/* Copies the values of keys that need a restart from `from` into `to`. */
void config_carry_restart_keys(Config *to, const Config *from);
