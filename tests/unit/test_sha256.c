/* test_sha256.c - FIPS 180-4 test vectors, and streaming in odd pieces. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "sha256.h"

static void hex_of(const char *s, size_t n, size_t step, char out[65])
{
        Sha256 h;
        sha256_init(&h);
        for (size_t i = 0; i < n; i += step)
                sha256_update(&h, s + i, n - i < step ? n - i : step);
        sha256_final_hex(&h, out);
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

/* Both implementations must agree on every length around block boundaries. */
static void test_hardware_matches_portable(void **state)
{
        (void)state;
        static char data[1000];
        char hw[65], sw[65];

        for (size_t i = 0; i < sizeof data; i++)
                data[i] = (char)(i * 7 + (i >> 3));
        if (!sha256_use_hardware(true)) {
                /* honest: nothing to compare on a CPU without SHA extensions */
                print_message("no SHA extensions on this CPU: portable code only\n");
                return;
        }
        for (size_t n = 0; n <= sizeof data; n += n < 200 ? 1 : 61) {
                sha256_use_hardware(true);
                hex_of(data, n, n % 3 + 1 + n / 2, hw);
                sha256_use_hardware(false);
                hex_of(data, n, n + 1, sw);
                assert_string_equal(hw, sw);
        }
}

static int use_portable(void **state) { (void)state; sha256_use_hardware(false); return 0; }
static int use_hardware(void **state) { (void)state; sha256_use_hardware(true); return 0; }

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup(test_vectors, use_portable),
                cmocka_unit_test_setup(test_million_a, use_portable),
                cmocka_unit_test_setup(test_vectors, use_hardware),
                cmocka_unit_test_setup(test_million_a, use_hardware),
                cmocka_unit_test(test_hardware_matches_portable),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
