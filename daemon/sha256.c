/* sha256.c - a plain SHA-256 so the daemon needs no crypto library; only used
 * to fingerprint input files (duplicate detection in status), not for security.
 * On x86-64 CPUs with the SHA extensions the blocks go through them: the
 * supervisor hashes every file while planning it, and the portable code ran at
 * ~250 MB/s, most of the planning time. */
#include "sha256.h"

#include <stdbool.h>

#include <stdio.h>
#include <string.h>

static const uint32_t K[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress_one(uint32_t h[8], const unsigned char *b)
{
        uint32_t w[64], a, bb, c, d, e, f, g, hh;

        for (size_t i = 0; i < 16; i++)
                w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
                       (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
        for (int i = 16; i < 64; i++) {
                uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
                uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
                w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        a = h[0]; bb = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; hh = h[7];
        for (int i = 0; i < 64; i++) {
                uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
                uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
                hh = g; g = f; f = e; e = d + t1; d = c; c = bb; bb = a; a = t1 + t2;
        }
        h[0] += a; h[1] += bb; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void compress_portable(uint32_t h[8], const unsigned char *p, size_t blocks)
{
        for (; blocks > 0; blocks--, p += 64)
                compress_one(h, p);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>

/* Four rounds at a time with SHA256RNDS2; the message schedule runs in four
 * registers, w[g % 4] holding words 4g..4g+3 (Intel's published layout:
 * state kept as ABEF and CDGH). */
__attribute__((target("sha,sse4.1,ssse3")))
static void compress_shani(uint32_t h[8], const unsigned char *p, size_t blocks)
{
        const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
        __m128i s0 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1);  /* CDAB */
        __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B);  /* EFGH */
        __m128i abef = _mm_alignr_epi8(s0, s1, 8);
        __m128i cdgh = _mm_blend_epi16(s1, s0, 0xF0);

        for (; blocks > 0; blocks--, p += 64) {
                __m128i abef_save = abef, cdgh_save = cdgh, w[4];

                for (size_t i = 0; i < 4; i++)
                        w[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), bswap);
                for (size_t g = 0; g < 16; g++) {
                        __m128i cur = w[g % 4];
                        __m128i msg = _mm_add_epi32(cur, _mm_loadu_si128((const __m128i *)&K[4 * g]));
                        cdgh = _mm_sha256rnds2_epu32(cdgh, abef, msg);
                        abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(msg, 0x0E));
                        if (g >= 3 && g <= 14) {
                                __m128i *next = &w[(g + 1) % 4], prev = w[(g + 3) % 4];
                                *next = _mm_sha256msg2_epu32(_mm_add_epi32(*next, _mm_alignr_epi8(cur, prev, 4)),
                                                             cur);
                        }
                        if (g >= 1 && g <= 12)
                                w[(g + 3) % 4] = _mm_sha256msg1_epu32(w[(g + 3) % 4], cur);
                }
                abef = _mm_add_epi32(abef, abef_save);
                cdgh = _mm_add_epi32(cdgh, cdgh_save);
        }
        s0 = _mm_shuffle_epi32(abef, 0x1B);   /* FEBA */
        s1 = _mm_shuffle_epi32(cdgh, 0xB1);   /* DCHG */
        _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(s0, s1, 0xF0));   /* DCBA */
        _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(s1, s0, 8));      /* HGFE */
}

static bool cpu_has_sha(void)
{
        unsigned a, b, c, d;

        return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b >> 29 & 1) &&
               __get_cpuid(1, &a, &b, &c, &d) && (c >> 19 & 1) && (c >> 9 & 1);   /* SSE4.1, SSSE3 */
}
#else
static bool cpu_has_sha(void) { return false; }
#define compress_shani compress_portable
#endif

static void (*compress)(uint32_t h[8], const unsigned char *p, size_t blocks);

bool sha256_use_hardware(bool want)
{
        bool hw = want && cpu_has_sha();

        compress = hw ? compress_shani : compress_portable;
        return hw;
}

void sha256_init(Sha256 *s)
{
        static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
        if (!compress)
                sha256_use_hardware(true);
        memcpy(s->h, iv, sizeof iv);
        s->len = 0;
        s->fill = 0;
}

void sha256_update(Sha256 *s, const void *data, size_t n)
{
        const unsigned char *p = data;

        s->len += n;
        if (s->fill) {
                size_t take = 64 - s->fill < n ? 64 - s->fill : n;
                memcpy(s->block + s->fill, p, take);
                s->fill += take;
                p += take;
                n -= take;
                if (s->fill < 64)
                        return;
                compress(s->h, s->block, 1);
                s->fill = 0;
        }
        compress(s->h, p, n / 64);
        p += n / 64 * 64;
        n %= 64;
        memcpy(s->block, p, n);
        s->fill = n;
}

void sha256_final_hex(Sha256 *s, char out[65])
{
        uint64_t bits = s->len * 8;
        unsigned char pad[72] = { 0x80 };
        size_t padlen = (s->fill < 56 ? 56 : 120) - s->fill;

        for (int i = 0; i < 8; i++)
                pad[padlen + i] = (unsigned char)(bits >> (56 - 8 * i));
        sha256_update(s, pad, padlen + 8);
        for (size_t i = 0; i < 8; i++)
                sprintf(out + 8 * i, "%08x", s->h[i]);
}
