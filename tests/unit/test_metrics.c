/* test_metrics.c - the exposition: every counter present from the start at
 * 0, counts equal to what was recorded, histogram buckets cumulative and
 * equal to the observations at or below each bound (counted here, by the
 * test, from its own list), label values escaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static char *render(const char *node)
{
        Buf b = { 0 };
        MetricsLive live = { node, true, false, 1, 4 };

        metrics_render(&b, &live);
        buf_append(&b, "", 1);
        return b.data;
}

/* The value of the sample line that starts with `series ` exactly; -1 when absent. */
static double sample(const char *text, const char *series)
{
        size_t n = strlen(series);

        for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
                if (strncmp(p, series, n) == 0 && p[n] == ' ')
                        return strtod(p + n + 1, NULL);
        return -1;
}

static void test_counters_start_at_zero(void **state)
{
        (void)state;
        metrics_reset();
        char *t = render("n1");
        assert_true(sample(t, "ingestd_rows_total{kind=\"ingest\",outcome=\"loaded\"}") == 0);
        assert_true(sample(t, "ingestd_rows_total{kind=\"update\",outcome=\"superseded\"}") == 0);
        assert_true(sample(t, "ingestd_files_total{kind=\"update\",result=\"failed\"}") == 0);
        assert_true(sample(t, "ingestd_rejects_total{reason=\"unknown_sku\"}") == 0);
        assert_true(sample(t, "ingestd_chunks_total{result=\"retried\"}") == 0);
        assert_true(sample(t, "ingestd_worker_crashes_total") == 0);
        assert_true(sample(t, "ingestd_workers_max") == 4);
        assert_true(sample(t, "ingestd_database_up") == 1);
        assert_non_null(strstr(t, "# TYPE ingestd_rows_total counter\n"));
        assert_non_null(strstr(t, "# TYPE ingestd_chunk_duration_seconds histogram\n"));
        free(t);
}

static void test_files_rows_and_rejects(void **state)
{
        (void)state;
        metrics_reset();
        FileSummary a = { KIND_INGEST, 90, 7, 3, 1.5, { 0 } }, b = { KIND_UPDATE, 5, 2, 0, 0.2, { 0 } };
        a.rejects[REJECT_QUOTE] = 4;
        a.rejects[REJECT_NUL] = 3;
        b.rejects[REJECT_UNKNOWN_SKU] = 2;
        metrics_file_closed(&a, false);
        metrics_file_closed(&a, false);
        metrics_file_closed(&b, true);
        char *t = render("n1");
        assert_true(sample(t, "ingestd_rows_total{kind=\"ingest\",outcome=\"loaded\"}") == 180);
        assert_true(sample(t, "ingestd_rows_total{kind=\"ingest\",outcome=\"rejected\"}") == 14);
        assert_true(sample(t, "ingestd_rows_total{kind=\"ingest\",outcome=\"superseded\"}") == 6);
        assert_true(sample(t, "ingestd_rows_total{kind=\"update\",outcome=\"loaded\"}") == 5);
        assert_true(sample(t, "ingestd_files_total{kind=\"ingest\",result=\"done\"}") == 2);
        assert_true(sample(t, "ingestd_files_total{kind=\"update\",result=\"failed\"}") == 1);
        assert_true(sample(t, "ingestd_files_total{kind=\"update\",result=\"done\"}") == 0);
        assert_true(sample(t, "ingestd_rejects_total{reason=\"quote\"}") == 8);
        assert_true(sample(t, "ingestd_rejects_total{reason=\"nul\"}") == 6);
        assert_true(sample(t, "ingestd_rejects_total{reason=\"unknown_sku\"}") == 2);
        /* a failed file has no drop-to-commit time */
        assert_true(sample(t, "ingestd_file_duration_seconds_count") == 2);
        assert_true(sample(t, "ingestd_file_duration_seconds_sum") == 3.0);
        free(t);
}

static void test_chunk_histogram_is_cumulative(void **state)
{
        (void)state;
        static const double seen[] = { 0.01, 0.05, 0.3, 0.3, 7, 400, 2.5 };
        static const double bounds[] = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300 };
        metrics_reset();
        for (size_t i = 0; i < sizeof seen / sizeof *seen; i++)
                metrics_chunk_exit(CHUNK_RESULT_DONE, false, seen[i]);
        metrics_chunk_exit(CHUNK_RESULT_RETRIED, true, 99); /* not a committed chunk's time */
        char *t = render("n1");
        for (size_t i = 0; i < sizeof bounds / sizeof *bounds; i++) {
                char series[128];
                int expected = 0;
                for (size_t j = 0; j < sizeof seen / sizeof *seen; j++)
                        expected += seen[j] <= bounds[i];
                snprintf(series, sizeof series, "ingestd_chunk_duration_seconds_bucket{le=\"%g\"}", bounds[i]);
                assert_true(sample(t, series) == expected);
        }
        assert_true(sample(t, "ingestd_chunk_duration_seconds_bucket{le=\"+Inf\"}") == 7);
        assert_true(sample(t, "ingestd_chunk_duration_seconds_count") == 7);
        assert_true(sample(t, "ingestd_chunks_total{result=\"done\"}") == 7);
        assert_true(sample(t, "ingestd_chunks_total{result=\"retried\"}") == 1);
        assert_true(sample(t, "ingestd_worker_crashes_total") == 1);
        free(t);
}

static void test_values_are_short_and_exact(void **state)
{
        (void)state;
        metrics_reset();
        FileSummary f = { KIND_INGEST, 1, 0, 0, 0.247016, { 0 } };
        metrics_file_closed(&f, false);
        char *t = render("n1");
        assert_non_null(strstr(t, "\ningestd_file_duration_seconds_sum 0.247016\n"));
        assert_non_null(strstr(t, "\ningestd_file_duration_seconds_bucket{le=\"0.5\"} 1\n"));
        free(t);
        metrics_reset();
        f.seconds = 0.1 + 0.2; /* 0.30000000000000004: needs all 17 digits to read back */
        metrics_file_closed(&f, false);
        t = render("n1");
        assert_true(sample(t, "ingestd_file_duration_seconds_sum") == 0.1 + 0.2);
        free(t);
}

static void test_node_label_is_escaped(void **state)
{
        (void)state;
        metrics_reset();
        char *t = render("a\"b\\c");
        assert_true(sample(t, "ingestd_node_info{node=\"a\\\"b\\\\c\"}") == 1);
        free(t);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_counters_start_at_zero),
                cmocka_unit_test(test_files_rows_and_rejects),
                cmocka_unit_test(test_chunk_histogram_is_cumulative),
                cmocka_unit_test(test_values_are_short_and_exact),
                cmocka_unit_test(test_node_label_is_escaped),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
