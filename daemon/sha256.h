/* sha256.h - SHA-256 (FIPS 180-4), streaming, to fingerprint registered files. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Sha256 {
        uint32_t h[8];
        uint64_t len;
        unsigned char block[64];
        size_t fill;
} Sha256;

void sha256_init(Sha256 *s);
/* Selects the CPU's SHA instructions when want is true and the CPU has them,
 * the portable code otherwise; returns whether the instructions are in use.
 * sha256_init() selects them by default. */
bool sha256_use_hardware(bool want);
void sha256_update(Sha256 *s, const void *data, size_t n);
/* Writes 64 lowercase hex digits and a NUL. */
void sha256_final_hex(Sha256 *s, char out[65]);
