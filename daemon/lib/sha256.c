/* sha256.c - a thin wrapper over libcrypto's EVP digest: one type for the
 * planner and the tests, and allocation failure handled as everywhere else. */
#include "sha256.h"
#include "util.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

struct Sha256 {
        EVP_MD_CTX *ctx;
};

Sha256 *sha256_new(void)
{
        Sha256 *s = xmalloc(sizeof *s);

        s->ctx = EVP_MD_CTX_new();
        if (!s->ctx || EVP_DigestInit_ex(s->ctx, EVP_sha256(), NULL) != 1) {
                fputs("ingestd: libcrypto: cannot start a SHA-256 digest\n", stderr);
                exit(70); /* EX_SOFTWARE: as an allocation failure */
        }
        return s;
}

void sha256_update(Sha256 *s, const void *data, size_t n) { EVP_DigestUpdate(s->ctx, data, n); }

void sha256_final_hex(Sha256 *s, char out[65])
{
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int n = 0;

        EVP_DigestFinal_ex(s->ctx, md, &n);
        for (size_t i = 0; i < n && i < 32; i++)
                snprintf(out + 2 * i, 3, "%02x", md[i]);
        out[64] = '\0';
        sha256_free(s);
}

Sha256 *sha256_free(Sha256 *s)
{
        if (s) {
                EVP_MD_CTX_free(s->ctx);
                free(s);
        }
        return NULL;
}
