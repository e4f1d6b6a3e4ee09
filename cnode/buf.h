/* buf.h: a growable byte buffer used by the connection
 * layer (handshake, framing, epmd). Internal to cnode/. Tests: tests/unit/test_frame.c. */
#ifndef CNB_BUF_H
#define CNB_BUF_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/cnb_bytes.h"
#include "cnb_common.h"

typedef struct cnb_buf {
    uint8_t *data;
    size_t len; /* bytes in use */
    size_t off; /* bytes already consumed from the front (readers) */
    size_t cap;
} cnb_buf_t;

/* Makes room for `more` bytes after len. Returns 0 or CNB_ENOMEM. */
static inline int cnb__buf_reserve(cnb_buf_t *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    if (b->off > 0 && b->off == b->len) { /* all consumed: restart at 0 */
        b->off = b->len = 0;
        if (more <= b->cap)
            return 0;
    }
    size_t ncap = b->cap ? b->cap : 256;
    while (ncap < b->len + more) {
        if (ncap > SIZE_MAX / 2)
            return CNB_ENOMEM;
        ncap *= 2;
    }
    uint8_t *n = realloc(b->data, ncap);
    if (!n)
        return CNB_ENOMEM;
    b->data = n;
    b->cap = ncap;
    return 0;
}

static inline int cnb__buf_put(cnb_buf_t *b, const void *p, size_t n)
{
    int rc = cnb__buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}


/* Drops consumed bytes from the front when that frees a useful amount. */
static inline void cnb__buf_compact(cnb_buf_t *b)
{
    if (b->off == 0)
        return;
    if (b->off == b->len) {
        b->off = b->len = 0;
    } else if (b->off >= 65536 || b->off * 2 >= b->len) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
}

static inline void cnb__buf_free(cnb_buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

#endif /* CNB_BUF_H */
