/* test_config.c - defaults, parsing, and errors that name file, line and key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char path[64];

static int load(const char *text, Config **c, char **err)
{
        strcpy(path, "/tmp/test_config_XXXXXX");
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
        close(fd);
        *err = NULL;
        int r = config_load(path, c, err);
        unlink(path);
        return r;
}

static void expect_error(const char *text, const char *needle)
{
        Config *c = NULL;
        char *err;
        assert_true(load(text, &c, &err) < 0);
        assert_null(c);
        if (!err || !strstr(err, needle) || !strstr(err, path))
                fail_msg("error '%s' lacks '%s' or the file name", err ? err : "(null)", needle);
        free(err);
}

static void test_defaults_from_empty_file(void **state)
{
        (void)state;
        Config *c;
        char *err;
        assert_int_equal(load("", &c, &err), 0);
        assert_string_equal(c->conninfo, "dbname=ingest");
        assert_string_equal(c->incoming, "/var/lib/ingestd/incoming");
        assert_int_equal(c->workers, 0);
        assert_true(config_workers(c) >= 1);
        assert_int_equal(c->chunk_size, 64u << 20);
        assert_int_equal(c->key, KEY_SKU);
        assert_true(c->aggregate_interval == 60);
        assert_true(c->aggregate_after_load);
        assert_int_equal(c->aggregate_count_memory, 32u << 20);
        assert_int_equal(c->retry_max_attempts, 5);
        assert_true(c->rejects_max_ratio == 0.01);
        assert_int_equal(c->max_field, 65536);
        char host[256] = "";
        gethostname(host, sizeof host - 1);
        assert_string_equal(c->node, host);
        assert_true(c->heartbeat == 2 && c->takeover_after == 10);
        assert_int_equal(c->watch, WATCH_INOTIFY);
        assert_true(c->watch_interval == 1);
        config_free(c);
}

static void test_full_file(void **state)
{
        (void)state;
        Config *c;
        char *err;
        const char *text = "database: { conninfo = \"host=/x dbname=y\"; };\n"
                           "paths: { incoming = \"/a\"; updates = \"/b\"; state = \"/c\"; };\n"
                           "workers = 3;\nchunk_size = \"512k\";\nkey = \"sku,name\";\n"
                           "aggregate: { interval = 2.5; after_load = false; };\n"
                           "retry: { max_attempts = 2; backoff = 0; };\n"
                           "rejects: { max_ratio = 0.5; };\nlimits: { max_field = 100; };\n";
        assert_int_equal(load(text, &c, &err), 0);
        assert_string_equal(c->conninfo, "host=/x dbname=y");
        assert_string_equal(c->state, "/c");
        assert_int_equal(config_workers(c), 3);
        assert_int_equal(c->chunk_size, 512u << 10);
        assert_int_equal(c->key, KEY_SKU_NAME);
        assert_true(c->aggregate_interval == 2.5);
        assert_false(c->aggregate_after_load);
        assert_int_equal(c->retry_max_attempts, 2);
        assert_true(c->retry_backoff == 0);
        assert_int_equal(c->max_field, 100);
        config_free(c);
}

static void test_errors_name_line_and_key(void **state)
{
        (void)state;
        expect_error("workers = 1;\nwrokers = 2;\n", ":2: unknown key 'wrokers'");
        expect_error("paths: { incomin = \"/x\"; };\n", ":1: unknown key 'paths.incomin'");
        expect_error("\n\nworkers = \"many\";\n", ":3: key 'workers': expected an integer");
        expect_error("workers = 1000;\n", "key 'workers': expected an integer between 0 and 256");
        expect_error("chunk_size = \"16Q\";\n", "key 'chunk_size'");
        expect_error("chunk_size = 0;\n", "key 'chunk_size'");
        expect_error("key = \"name\";\n", "key 'key': expected \"sku\" or \"sku,name\"");
        expect_error("rejects: { max_ratio = 2.0; };\n", "key 'rejects.max_ratio'");
        expect_error("aggregate: { after_load = 1; };\n", "key 'aggregate.after_load': expected true or false");
        expect_error("\n\nworkers = = 1;\n", ":3: syntax error");
        expect_error("database = 3;\n", "unknown key 'database'");
        expect_error("watch = \"fanotify\";\n", "key 'watch': expected \"inotify\" or \"poll\"");
        expect_error("cluster: { heartbeat = 3; takeover_after = 5; };\n",
                "key 'cluster.takeover_after' (5 s) must be at least twice cluster.heartbeat (3 s)");
        expect_error("cluster: { node = \"-x\"; };\n", "key 'cluster.node'");
        expect_error("cluster: { node = \"a b\"; };\n", "key 'cluster.node'");
        expect_error("cluster: { nodes = \"a\"; };\n", ":1: unknown key 'cluster.nodes'");
}

static void test_cluster_keys(void **state)
{
        (void)state;
        Config *c;
        char *err;
        const char *text = "cluster: { node = \"ingest-b\"; heartbeat = 0.5; takeover_after = 1; };\n"
                           "watch = \"poll\";\nwatch_interval = 0.25;\n";
        assert_int_equal(load(text, &c, &err), 0);
        assert_string_equal(c->node, "ingest-b");
        assert_true(c->heartbeat == 0.5 && c->takeover_after == 1);
        assert_int_equal(c->watch, WATCH_POLL);
        assert_true(c->watch_interval == 0.25);
        config_free(c);
}

static void test_missing_file(void **state)
{
        (void)state;
        Config *c = NULL;
        char *err = NULL;
        assert_true(config_load("/nonexistent/ingestd.conf", &c, &err) < 0);
        assert_non_null(strstr(err, "/nonexistent/ingestd.conf: cannot read"));
        free(err);
}

static void count_key(const ConfigKey *k, void *ud)
{
        (void)k;
        (*(int *)ud)++;
}

static void test_diff_and_carry_restart_keys(void **state)
{
        (void)state;
        Config *a, *b;
        char *err;
        int changed = 0;
        assert_int_equal(load("workers = 1;\nkey = \"sku\";\n", &a, &err), 0);
        assert_int_equal(load("workers = 2;\nkey = \"sku,name\";\npaths: { state = \"/z\"; };\n", &b, &err), 0);
        config_diff(a, b, count_key, &changed);
        assert_int_equal(changed, 3);
        config_carry_restart_keys(b, a);
        assert_int_equal(b->workers, 2);   /* reloadable: new value */
        assert_int_equal(b->key, KEY_SKU); /* needs restart: old value */
        assert_string_equal(b->state, "/var/lib/ingestd");
        config_free(a);
        config_free(b);
        assert_null(config_free(NULL));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults_from_empty_file),
                cmocka_unit_test(test_full_file),
                cmocka_unit_test(test_errors_name_line_and_key),
                cmocka_unit_test(test_cluster_keys),
                cmocka_unit_test(test_missing_file),
                cmocka_unit_test(test_diff_and_carry_restart_keys),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
