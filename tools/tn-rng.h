/* tn-rng.h: the deterministic byte stream tn-dest sends and tn-load expects (xorshift64*). */
#ifndef TN_RNG_H
#define TN_RNG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct tn_rng {
    uint64_t s;
};

static inline void
tn_rng_seed(struct tn_rng *r, uint64_t seed)
{
    r->s = seed * 0x9E3779B97F4A7C15ULL + 1;
}

static inline uint64_t
tn_rng_next(struct tn_rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1DULL;
}

/* Fills buf; the stream is the same however it is cut into calls only at multiples of 8. */
static inline void
tn_rng_fill(struct tn_rng *r, uint8_t *buf, size_t n)
{
    uint64_t v;
    size_t i;

    for (i = 0; i + 8 <= n; i += 8) {
        v = tn_rng_next(r);
        memcpy(buf + i, &v, 8);
    }
    if (i < n) {
        v = tn_rng_next(r);
        memcpy(buf + i, &v, n - i);
    }
}

#endif
