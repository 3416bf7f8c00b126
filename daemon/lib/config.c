/* config.c - libconfig parsing against the key table. Every key has a default,
 * so an empty file is valid; unknown keys, wrong types and out-of-range values
 * are errors that name file, line and key. Reload builds a new Config and the
 * caller swaps it only when this returns 0. */
#include "config.h"
#include "util.h"

#include <errno.h>
#include <libconfig.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OFF(f) offsetof(Config, f)
const ConfigKey config_keys[] = {
        { "database.conninfo", CT_STRING, OFF(conninfo), "dbname=ingest", 0, 0, false,
                "libpq connection string of the database holding products and ingest.*" },
        { "paths.incoming", CT_STRING, OFF(incoming), "/var/lib/ingestd/incoming", 0, 0, false,
                "watched folder: files here are ingested (insert or update)" },
        { "paths.updates", CT_STRING, OFF(updates), "/var/lib/ingestd/updates", 0, 0, false,
                "watched folder: files here update existing products only" },
        { "paths.state", CT_STRING, OFF(state), "/var/lib/ingestd", 0, 0, false,
                "holds processing/, done/ and failed/; same filesystem as the watched folders" },
        { "workers", CT_INT, OFF(workers), "0", 0, 256, true,
                "worker processes loading chunks at once; 0 = number of CPUs" },
        { "chunk_size", CT_SIZE, OFF(chunk_size), "64M", 1, 1ULL << 40, true,
                "bytes per chunk (suffix k, M, G); chunks end at record boundaries" },
        { "max_ranges", CT_INT, OFF(max_ranges), "4", 1, 1000000, true,
                "most byte ranges per file: bigger files get ranges larger than chunk_size" },
        { "defer_key", CT_BOOL, OFF(defer_key), "true", 0, 0, true,
                "a file loaded into an empty products builds its primary key once, after its rows" },
        { "key", CT_KEY, OFF(key), "sku", 0, 0, false, "\"sku\" or \"sku,name\": the primary key of products" },
        { "database.partitions", CT_INT, OFF(partitions), "0", 0, 1024, false,
                "hash partitions of products by sku, created with the table; 0 = one table" },
        { "aggregate.interval", CT_FLOAT, OFF(aggregate_interval), "60", 0, 86400 * 365, true,
                "seconds between refreshes of products_agg; 0 = only after loads" },
        { "aggregate.after_load", CT_BOOL, OFF(aggregate_after_load), "true", 0, 0, true,
                "refresh products_agg after each completed load" },
        { "aggregate.count_memory", CT_SIZE, OFF(aggregate_count_memory), "32M", 0, 1ULL << 31, true,
                "memory for counting names in ingestd when products_agg is built from empty; 0 = PostgreSQL counts" },
        { "retry.max_attempts", CT_INT, OFF(retry_max_attempts), "5", 1, 1000, true,
                "attempts per chunk before its file is marked failed" },
        { "retry.backoff", CT_FLOAT, OFF(retry_backoff), "1.0", 0, 3600, true,
                "seconds before the first retry; doubles with each attempt" },
        { "rejects.max_ratio", CT_FLOAT, OFF(rejects_max_ratio), "0.01", 0, 1, true,
                "fraction of rejected rows above which a file is marked failed" },
        { "limits.max_field", CT_SIZE, OFF(max_field), "65536", 1, 1ULL << 30, true,
                "longest field in bytes; longer ones reject their row" },
        { "cluster.node", CT_STRING, OFF(node), NULL, 0, 0, false,
                "this instance's name in ingest.nodes; unique among the nodes; default: the host name" },
        { "cluster.heartbeat", CT_FLOAT, OFF(heartbeat), "2", 0.1, 60, true,
                "seconds between the heartbeats of this node in ingest.nodes" },
        { "cluster.takeover_after", CT_FLOAT, OFF(takeover_after), "10", 1, 3600, true,
                "seconds without a heartbeat after which a node is dead and its chunks are taken over" },
        { "watch", CT_WATCH, OFF(watch), "inotify", 0, 0, false,
                "\"inotify\", or \"poll\" for network filesystems (inotify misses other hosts' writes)" },
        { "watch_interval", CT_FLOAT, OFF(watch_interval), "1", 0.05, 3600, false,
                "seconds between scans of the watched folders with watch = \"poll\"" },
        { "metrics.listen", CT_LISTEN, OFF(metrics_listen), "", 0, 0, false,
                "\"HOST:PORT\" serving GET /metrics (Prometheus), e.g. \"127.0.0.1:9187\"; \"\" = off" },
        { "retention.history", CT_DURATION, OFF(retention_history), "30d", 0, 86400.0 * 36500, true,
                "a done file's ingest.chunks and ingest.rejects rows are removed this long after it finished; 0 = keep" },
        { "retention.done_files", CT_DURATION, OFF(retention_done_files), "0", 0, 86400.0 * 36500, true,
                "a done file's copy in done/ is deleted this long after it finished; 0 = keep" },
};
const size_t config_n_keys = sizeof config_keys / sizeof config_keys[0];

static const char *type_name(ConfigType t)
{
        switch (t) {
        case CT_STRING: return "a string";
        case CT_INT: return "an integer";
        case CT_SIZE: return "a size (integer or string like \"16M\")";
        case CT_FLOAT: return "a number";
        case CT_BOOL: return "true or false";
        case CT_LISTEN: return "\"\" or \"HOST:PORT\" with a numeric host (\"127.0.0.1:9187\", \"[::1]:9187\")";
        case CT_KEY: return "\"sku\" or \"sku,name\"";
        case CT_WATCH: return "\"inotify\" or \"poll\"";
        case CT_DURATION: return "a duration (seconds, or a string like \"30d\", \"12h\", \"15m\")";
        }
        return "?";
}

const char *config_key_name(KeyMode k) { return k == KEY_SKU_NAME ? "sku,name" : "sku"; }
const char *config_watch_name(WatchMode w) { return w == WATCH_POLL ? "poll" : "inotify"; }

/* CT_INT, CT_FLOAT and CT_DURATION (a number with a unit), within the key's bounds. */
static int set_number(const ConfigKey *k, void *field, const char *s)
{
        char *end = (char *)"";
        double v;

        if (k->type == CT_DURATION ? parse_duration(s, &v) < 0 : (v = strtod(s, &end), *end != '\0'))
                return -ERANGE;
        if (!isfinite(v) || v < k->min || v > k->max)
                return -ERANGE;
        if (k->type == CT_INT && v != (double)(long long)v)
                return -EINVAL;
        if (k->type == CT_INT)
                *(int *)field = (int)v;
        else
                *(double *)field = v;
        return 0;
}

static int set_from_string(const ConfigKey *k, void *field, const char *s)
{
        uint64_t size;

        switch (k->type) {
        case CT_STRING:
                if (*s == '\0')
                        return -EINVAL;
                free(*(char **)field);
                *(char **)field = xstrdup(s);
                return 0;
        case CT_SIZE:
                if (parse_size(s, &size) < 0 || size < k->min || size > k->max)
                        return -ERANGE;
                *(uint64_t *)field = size;
                return 0;
        case CT_LISTEN:
                if (*s && listen_parse(s, NULL, NULL) < 0)
                        return -EINVAL;
                free(*(char **)field);
                *(char **)field = xstrdup(s);
                return 0;
        case CT_KEY:
                if (strcmp(s, "sku") == 0)
                        *(KeyMode *)field = KEY_SKU;
                else if (strcmp(s, "sku,name") == 0 || strcmp(s, "sku, name") == 0)
                        *(KeyMode *)field = KEY_SKU_NAME;
                else
                        return -EINVAL;
                return 0;
        case CT_WATCH:
                if (strcmp(s, "inotify") != 0 && strcmp(s, "poll") != 0)
                        return -EINVAL;
                *(WatchMode *)field = strcmp(s, "poll") == 0 ? WATCH_POLL : WATCH_INOTIFY;
                return 0;
        case CT_BOOL:
                if (strcmp(s, "true") != 0 && strcmp(s, "false") != 0)
                        return -EINVAL;
                *(bool *)field = strcmp(s, "true") == 0;
                return 0;
        case CT_DURATION:
        case CT_INT:
        case CT_FLOAT: return set_number(k, field, s);
        }
        return -EINVAL;
}

/* Renders a libconfig scalar as the text set_from_string() accepts, so one
 * validation path serves defaults and the file. */
static int setting_text(const config_setting_t *s, ConfigType t, char *out, size_t n)
{
        switch (config_setting_type(s)) {
        case CONFIG_TYPE_STRING:
                if (t == CT_INT || t == CT_FLOAT || t == CT_BOOL)
                        return -EINVAL;
                snprintf(out, n, "%s", config_setting_get_string(s));
                return 0;
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                if (t != CT_INT && t != CT_SIZE && t != CT_FLOAT && t != CT_DURATION)
                        return -EINVAL;
                snprintf(out, n, "%lld", config_setting_get_int64(s));
                return 0;
        case CONFIG_TYPE_FLOAT:
                if (t != CT_FLOAT && t != CT_DURATION)
                        return -EINVAL;
                snprintf(out, n, "%.17g", config_setting_get_float(s));
                return 0;
        case CONFIG_TYPE_BOOL:
                if (t != CT_BOOL)
                        return -EINVAL;
                snprintf(out, n, "%s", config_setting_get_bool(s) ? "true" : "false");
                return 0;
        default: return -EINVAL;
        }
}

static const ConfigKey *key_lookup(const char *name)
{
        for (size_t i = 0; i < config_n_keys; i++)
                if (strcmp(config_keys[i].name, name) == 0)
                        return &config_keys[i];
        return NULL;
}

static bool is_group_prefix(const char *name)
{
        size_t n = strlen(name);

        for (size_t i = 0; i < config_n_keys; i++)
                if (strncmp(config_keys[i].name, name, n) == 0 && config_keys[i].name[n] == '.')
                        return true;
        return false;
}

static int apply_setting(Config *c, const config_setting_t *s, const char *name, const char *path, char **ret_error)
{
        const ConfigKey *k = key_lookup(name);
        int line = config_setting_source_line(s);
        char text[4096];

        if (!k) {
                *ret_error = xasprintf("%s:%d: unknown key '%s'", path, line, name);
                return -EINVAL;
        }
        if (setting_text(s, k->type, text, sizeof text) < 0 || set_from_string(k, (char *)c + k->offset, text) < 0) {
                if (k->type == CT_INT || k->type == CT_FLOAT || k->type == CT_SIZE || k->type == CT_DURATION)
                        *ret_error = xasprintf("%s:%d: key '%s': expected %s between %.15g and %.15g", path, line, name,
                                type_name(k->type), k->min, k->max);
                else
                        *ret_error = xasprintf("%s:%d: key '%s': expected %s", path, line, name, type_name(k->type));
                return -EINVAL;
        }
        return 0;
}

/* Walks every setting of group g so unknown keys cannot hide. */
static int apply_group(Config *c, const config_setting_t *g, const char *prefix, const char *path, char **ret_error)
{
        int n = config_setting_length(g);

        for (int i = 0; i < n; i++) {
                const config_setting_t *s = config_setting_get_elem(g, i);
                const char *nm = config_setting_name(s);
                char name[256];
                int r;

                snprintf(name, sizeof name, "%s%s%s", prefix, *prefix ? "." : "", nm ? nm : "?");
                if (config_setting_is_group(s) && !*prefix && is_group_prefix(name))
                        r = apply_group(c, s, name, path, ret_error);
                else
                        r = apply_setting(c, s, name, path, ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}

static Config *config_defaults(void)
{
        Config *c = xcalloc(1, sizeof *c);

        for (size_t i = 0; i < config_n_keys; i++)
                if (config_keys[i].def &&
                        set_from_string(&config_keys[i], (char *)c + config_keys[i].offset, config_keys[i].def) < 0)
                        abort(); /* the table itself is wrong */
        return c;
}

/* What one key alone cannot say: defaults computed at load, and rules
 * between keys. */
static int config_complete(Config *c, const char *path, char **ret_error)
{
        if (!c->node) {
                char host[256] = "";
                if (gethostname(host, sizeof host - 1) < 0 || !host[0])
                        snprintf(host, sizeof host, "localhost");
                c->node = xstrdup(host);
        }
        for (const char *n = c->node; *n; n++)
                if (*n <= ' ' || *n == 0x7f || (n == c->node && *n == '-') || n - c->node >= 63) {
                        *ret_error = xasprintf("%s: key 'cluster.node': \"%s\" is not a node name (up to 63 "
                                               "printable characters, no spaces, not starting with '-')",
                                path, c->node);
                        return -EINVAL;
                }
        if (c->takeover_after < 2 * c->heartbeat) {
                *ret_error = xasprintf("%s: key 'cluster.takeover_after' (%g s) must be at least twice "
                                       "cluster.heartbeat (%g s), or live nodes would be taken for dead",
                        path, c->takeover_after, c->heartbeat);
                return -EINVAL;
        }
        return 0;
}

int config_load(const char *path, Config **ret, char **ret_error)
{
        config_t cfg;
        Config *c = config_defaults();
        int r = 0;

        config_init(&cfg);
        if (!config_read_file(&cfg, path)) {
                if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO) {
                        r = access(path, R_OK) < 0 ? -errno : -EIO;
                        *ret_error = xasprintf("%s: cannot read: %s", path, strerror(-r));
                } else {
                        r = -EINVAL;
                        *ret_error = xasprintf(
                                "%s:%d: syntax error: %s", path, config_error_line(&cfg), config_error_text(&cfg));
                }
                goto out;
        }
        r = apply_group(c, config_root_setting(&cfg), "", path, ret_error);
        if (r == 0)
                r = config_complete(c, path, ret_error);
out:
        config_destroy(&cfg);
        if (r < 0) {
                config_free(c);
                return r;
        }
        *ret = c;
        return 0;
}

Config *config_free(Config *c)
{
        if (!c)
                return NULL;
        free(c->conninfo);
        free(c->incoming);
        free(c->updates);
        free(c->state);
        free(c->node);
        free(c->metrics_listen);
        free(c);
        return NULL;
}

int config_workers(const Config *c)
{
        long n = c->workers > 0 ? c->workers : sysconf(_SC_NPROCESSORS_ONLN);
        return n > 0 ? (int)n : 1;
}

static void value_text(const ConfigKey *k, const Config *c, char *out, size_t n)
{
        const void *f = (const char *)c + k->offset;

        switch (k->type) {
        case CT_STRING:
        case CT_LISTEN: snprintf(out, n, "\"%s\"", *(char *const *)f); break;
        case CT_INT: snprintf(out, n, "%d", *(const int *)f); break;
        case CT_SIZE: snprintf(out, n, "%llu", (unsigned long long)*(const uint64_t *)f); break;
        case CT_FLOAT: snprintf(out, n, "%g", *(const double *)f); break;
        case CT_BOOL: snprintf(out, n, "%s", *(const bool *)f ? "true" : "false"); break;
        case CT_KEY: snprintf(out, n, "\"%s\"", config_key_name(*(const KeyMode *)f)); break;
        case CT_WATCH: snprintf(out, n, "\"%s\"", config_watch_name(*(const WatchMode *)f)); break;
        case CT_DURATION: {
                char d[64];
                format_duration(*(const double *)f, d, sizeof d);
                snprintf(out, n, "\"%s\"", *(const double *)f == 0 ? "0" : d);
                break;
        }
        }
}

void config_print(const Config *c, FILE *f)
{
        char v[4200];

        for (size_t i = 0; i < config_n_keys; i++) {
                value_text(&config_keys[i], c, v, sizeof v);
                fprintf(f, "%s = %s\n", config_keys[i].name, v);
        }
}

void config_diff(const Config *a, const Config *b, void (*fn)(const ConfigKey *k, void *ud), void *ud)
{
        char va[4200], vb[4200];

        for (size_t i = 0; i < config_n_keys; i++) {
                value_text(&config_keys[i], a, va, sizeof va);
                value_text(&config_keys[i], b, vb, sizeof vb);
                if (strcmp(va, vb) != 0)
                        fn(&config_keys[i], ud);
        }
}

void config_carry_restart_keys(Config *to, const Config *from)
{
        static const size_t size_of[] = { [CT_STRING] = sizeof(char *),
                [CT_LISTEN] = sizeof(char *),
                [CT_INT] = sizeof(int),
                [CT_SIZE] = sizeof(uint64_t),
                [CT_FLOAT] = sizeof(double),
                [CT_BOOL] = sizeof(bool),
                [CT_KEY] = sizeof(KeyMode),
                [CT_WATCH] = sizeof(WatchMode) };

        for (size_t i = 0; i < config_n_keys; i++) {
                const ConfigKey *k = &config_keys[i];
                void *dst = (char *)to + k->offset;
                const void *src = (const char *)from + k->offset;
                if (k->reloadable)
                        continue;
                if (k->type == CT_STRING || k->type == CT_LISTEN) {
                        free(*(char **)dst);
                        *(char **)dst = xstrdup(*(char *const *)src);
                } else {
                        memcpy(dst, src, size_of[k->type]);
                }
        }
}
