/* cnb_bytes.h: big-endian reads and writes of 16/32/64-bit integers, the
 * byte order of the external term format and of every distribution and epmd
 * message. Internal (not in the public include/): shared by core/, cnode/
 * (as "../core/cnb_bytes.h") and nif/.
 * Tests: tests/unit/test_term.c, tests/unit/test_frame.c. */
#ifndef CNB_BYTES_H
#define CNB_BYTES_H

#include <stdint.h>

static inline uint16_t cnb__get16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static inline uint32_t cnb__get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t cnb__get64(const uint8_t *p)
{
    return (uint64_t)cnb__get32(p) << 32 | cnb__get32(p + 4);
}

/* put16 keeps the low 16 bits of v. */
static inline void cnb__put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void cnb__put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void cnb__put64(uint8_t *p, uint64_t v)
{
    cnb__put32(p, (uint32_t)(v >> 32));
    cnb__put32(p + 4, (uint32_t)v);
}

#endif /* CNB_BYTES_H */
