/* sha256.h - SHA-256 of registered files, streaming, from libcrypto (already
 * in every process through libpq; it picks the CPU's SHA instructions itself). */
#pragma once
#include <stddef.h>

typedef struct Sha256 Sha256;

/* A new digest; never NULL (allocation failure exits, see util.h). */
Sha256 *sha256_new(void);
void sha256_update(Sha256 *s, const void *data, size_t n);
/* Writes 64 lowercase hex digits and a NUL, and frees s. */
void sha256_final_hex(Sha256 *s, char out[65]);
/* Frees a digest that is not finished; accepts NULL, returns NULL. */
Sha256 *sha256_free(Sha256 *s);
