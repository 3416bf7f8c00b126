/* test_state.c - the one mapping between state enums and their SQL text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "state.h"

static void test_file_states(void **state)
{
        (void)state;
        FileState all[] = { FILE_NEW, FILE_LOADING, FILE_DONE, FILE_FAILED };
        const char *text[] = { "new", "loading", "done", "failed" }; /* schema.sql's CHECK */

        for (size_t i = 0; i < 4; i++) {
                FileState got = FILE_NEW;
                assert_string_equal(file_state_name(all[i]), text[i]);
                assert_int_equal(file_state_parse(text[i], &got), 0);
                assert_int_equal(got, all[i]);
        }
        FileState untouched = FILE_DONE;
        assert_int_equal(file_state_parse("pending", &untouched), -EINVAL);
        assert_int_equal(untouched, FILE_DONE);
}

static void test_chunk_states(void **state)
{
        (void)state;
        ChunkState all[] = { CHUNK_PENDING, CHUNK_LOADING, CHUNK_DONE, CHUNK_FAILED };
        const char *text[] = { "pending", "loading", "done", "failed" };

        for (size_t i = 0; i < 4; i++) {
                ChunkState got = CHUNK_PENDING;
                assert_string_equal(chunk_state_name(all[i]), text[i]);
                assert_int_equal(chunk_state_parse(text[i], &got), 0);
                assert_int_equal(got, all[i]);
        }
        ChunkState untouched = CHUNK_DONE;
        assert_int_equal(chunk_state_parse("new", &untouched), -EINVAL);
        assert_int_equal(untouched, CHUNK_DONE);
        assert_string_equal(SQL_DONE, "'done'");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_file_states),
                cmocka_unit_test(test_chunk_states),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
