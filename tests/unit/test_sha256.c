/* test_sha256.c - FIPS 180-4 test vectors through libcrypto, and streaming in odd pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "sha256.h"

static void hex_of(const char *s, size_t n, size_t step, char out[65])
{
        Sha256 *h = sha256_new();
        for (size_t i = 0; i < n; i += step)
                sha256_update(h, s + i, n - i < step ? n - i : step);
        sha256_final_hex(h, out);
}

static void test_vectors(void **state)
{
        (void)state;
        char out[65];
        hex_of("", 0, 1, out);
        assert_string_equal(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        hex_of("abc", 3, 1, out);
        assert_string_equal(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
        for (size_t step = 1; step <= 64; step += 7) {
                hex_of(two, strlen(two), step, out);
                assert_string_equal(out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
        }
}

static void test_million_a(void **state)
{
        (void)state;
        static char a[1000000];
        char out[65];
        memset(a, 'a', sizeof a);
        hex_of(a, sizeof a, 4099, out);
        assert_string_equal(out, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* Any split of the input into pieces gives the digest of the whole. */
static void test_pieces_match_whole(void **state)
{
        (void)state;
        static char data[1000];
        char whole[65], pieces[65];

        for (size_t i = 0; i < sizeof data; i++)
                data[i] = (char)(i * 7 + (i >> 3));
        for (size_t n = 0; n <= sizeof data; n += n < 200 ? 1 : 61) {
                hex_of(data, n, n + 1, whole);
                hex_of(data, n, n % 3 + 1 + n / 2, pieces);
                assert_string_equal(whole, pieces);
        }
}

static void test_free_unfinished(void **state)
{
        (void)state;
        Sha256 *h = sha256_new();
        sha256_update(h, "abc", 3);
        assert_null(sha256_free(h));
        assert_null(sha256_free(NULL));
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_vectors),
                cmocka_unit_test(test_million_a),
                cmocka_unit_test(test_pieces_match_whole),
                cmocka_unit_test(test_free_unfinished),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
