/* term_hash.c: cnb_term_hash, a fixed 64-bit non-cryptographic hash of
 * canonical ETF. Built on one primitive: the 128-bit product of two 64-bit
 * words folded to 64 bits (high half xor low half), which spreads every input
 * bit over the whole word. Input words are read little-endian whatever the
 * host, so the value is the same on every machine. The constants are
 * arbitrary odd numbers; changing any of them changes every stored hash.
 * Tests: tests/unit/test_term.c (equal encodings hash equal, known values). */
#include "term_int.h"

#define S0 UINT64_C(0x3948aaf37f3c77c1)
#define S1 UINT64_C(0x7d1ba489d1b43c67)
#define S2 UINT64_C(0x899813b3c7167f17)
#define S3 UINT64_C(0xc94aae14714ff5f7)
#define S4 UINT64_C(0x453ad31741ec684f)
#define S5 UINT64_C(0xdb26a0ab67326a6d)
#define S6 UINT64_C(0xdb3544b0d2a4c003)

static inline uint64_t fold_mul(uint64_t a, uint64_t b)
{
#ifdef __SIZEOF_INT128__
    unsigned __int128 r = (unsigned __int128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
#else
    /* The same product from 32-bit halves, for compilers without __int128. */
    uint64_t al = (uint32_t)a, ah = a >> 32, bl = (uint32_t)b, bh = b >> 32;
    uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
    uint64_t mid = (ll >> 32) + (uint32_t)lh + (uint32_t)hl;
    uint64_t lo = (mid << 32) | (uint32_t)ll;
    uint64_t hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
    return lo ^ hi;
#endif
}

static inline uint64_t ld64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* Up to 8 bytes, little-endian, zero-filled. */
static inline uint64_t ld_part(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

uint64_t cnb_term_hash(const void *canon, size_t len)
{
    const uint8_t *p = canon;
    if (!p)
        len = 0;
    if (len && p[0] == CNB__TAG_VERSION) {
        p++;
        len--;
    }
    uint64_t h = S0 ^ fold_mul((uint64_t)len ^ S1, S2);
    size_t n = len;

    /* Two independent lanes over 32-byte blocks, for large binaries. */
    if (n >= 32) {
        uint64_t g = rotl(h, 32) ^ S3;
        while (n >= 32) {
            h = fold_mul(ld64(p) ^ S1 ^ h, ld64(p + 8) ^ S2) ^ rotl(h, 29);
            g = fold_mul(ld64(p + 16) ^ S3 ^ g, ld64(p + 24) ^ S4) ^ rotl(g, 29);
            p += 32;
            n -= 32;
        }
        h = fold_mul(h ^ S5, g ^ S6) ^ h;
    }
    while (n >= 16) {
        h = fold_mul(ld64(p) ^ S1 ^ h, ld64(p + 8) ^ S2) ^ rotl(h, 29);
        p += 16;
        n -= 16;
    }
    uint64_t t0, t1;
    /* The tail's bytes, zero-filled: when at least 8 bytes end at the tail's
     * end, one load of those 8 shifted down (the same value as byte by byte). */
    if (n > 8) {
        t0 = ld64(p);
        t1 = ld64(p + n - 8) >> (8 * (16 - n));
    } else if (n && len >= 8) {
        t0 = ld64(p + n - 8) >> (8 * (8 - n));
        t1 = 0;
    } else {
        t0 = ld_part(p, n);
        t1 = 0;
    }
    h = fold_mul(t0 ^ S3 ^ h, t1 ^ S4 ^ (uint64_t)n) ^ rotl(h, 29);
    h = fold_mul(h ^ S5, (uint64_t)len ^ S6);
    return fold_mul(h, S0) ^ h;
}
