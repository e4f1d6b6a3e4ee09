/* term.c: the public entry points of core/term (cnb_term.h): limits, the
 * version byte and compressed terms, the fast path (input already canonical:
 * validate and copy) and the general path (term_canon.c), and compare.
 * Tests: tests/unit/test_term.c, tests/integration/term_prop_tests.erl,
 * tests/fuzz/fuzz_term.c. */
#include "term_int.h"

#include <limits.h>
#include <zlib.h>

#define STACK_OUT 512 /* canonical bytes of small terms are built on the stack */

void cnb__term_limits(const cnb_term_opts_t *opts, cnb__term_limits_t *lim)
{
    lim->max_depth = opts && opts->max_depth ? opts->max_depth : CNB__DEFAULT_MAX_DEPTH;
    lim->max_size = opts && opts->max_size ? opts->max_size : CNB__DEFAULT_MAX_SIZE;
    lim->max_decompressed =
        opts && opts->max_decompressed ? opts->max_decompressed : CNB__DEFAULT_MAX_DECOMPRESSED;
    lim->alloc = opts ? opts->alloc : NULL;
}

long cnb__term_utf8_chars(const uint8_t *s, size_t n)
{
    size_t i = 0;
    long chars = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
        } else if (c >= 0xc2 && c < 0xe0) { /* 0x80..0xc1: continuation, overlong */
            if (n - i < 2 || (s[i + 1] & 0xc0) != 0x80)
                return -1;
            i += 2;
        } else if (c >= 0xe0 && c < 0xf0) {
            if (n - i < 3 || (s[i + 1] & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80)
                return -1;
            if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] > 0x9f))
                return -1; /* overlong, or a surrogate */
            i += 3;
        } else if (c >= 0xf0 && c < 0xf5) {
            if (n - i < 4 || (s[i + 1] & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80 ||
                (s[i + 3] & 0xc0) != 0x80)
                return -1;
            if ((c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] > 0x8f))
                return -1; /* overlong, or above U+10FFFF */
            i += 4;
        } else {
            return -1;
        }
        chars++;
    }
    return chars;
}

int cnb__stack_grow(void **st, size_t *cap, void *inl, size_t elem,
                    const cnb_allocator_t *alloc)
{
    size_t ncap = *cap * 2;
    void *n;
    if (*st == inl) {
        n = cnb_alloc(alloc, ncap * elem);
        if (n)
            memcpy(n, inl, *cap * elem);
    } else {
        n = cnb_realloc(alloc, *st, ncap * elem);
    }
    if (!n)
        return CNB_ENOMEM;
    *st = n;
    *cap = ncap;
    return 0;
}

int cnb__obuf_grow(cnb__obuf_t *o, size_t n)
{
    if (n > SIZE_MAX - o->len || o->len + n > o->hard_limit)
        return CNB_ETOOBIG;
    size_t need = o->len + n, ncap = o->cap ? o->cap : 256;
    while (ncap < need)
        ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
    if (ncap > o->hard_limit)
        ncap = o->hard_limit;
    uint8_t *nb;
    if (o->owned) {
        nb = cnb_realloc(o->alloc, o->buf, ncap);
    } else {
        nb = cnb_alloc(o->alloc, ncap);
        if (nb && o->len)
            memcpy(nb, o->buf, o->len);
    }
    if (!nb)
        return CNB_ENOMEM;
    o->buf = nb;
    o->cap = ncap;
    o->owned = 1;
    return 0;
}

static size_t sat_add(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static size_t sat_mul(size_t a, size_t b)
{
    return b && a > SIZE_MAX / b ? SIZE_MAX : a * b;
}

/* zlib allocates through the caller's allocator. */
static voidpf z_alloc(voidpf opaque, uInt items, uInt size)
{
    if (size && items > SIZE_MAX / size)
        return Z_NULL;
    return cnb_alloc((const cnb_allocator_t *)opaque, (size_t)items * size);
}

static void z_free(voidpf opaque, voidpf ptr)
{
    cnb_free((const cnb_allocator_t *)opaque, ptr);
}

/* Inflates a COMPRESSED term (p at tag 80) into a new buffer of exactly the
 * announced size; the input must end where the zlib stream ends. */
static int inflate_term(const uint8_t *p, const uint8_t *end, const cnb__term_limits_t *lim,
                        uint8_t **out, size_t *out_len)
{
    z_stream zs;
    size_t usize, in_left;
    uint8_t *buf;
    int r = 0, zr;

    if ((size_t)(end - p) < 5)
        return CNB_ETRUNC;
    usize = cnb__get32(p + 1);
    if (usize > lim->max_decompressed)
        return CNB_ETOOBIG;
    if (usize == 0)
        return CNB_EMALFORMED;
    buf = cnb_alloc(lim->alloc, usize);
    if (!buf)
        return CNB_ENOMEM;
    memset(&zs, 0, sizeof(zs));
    zs.zalloc = z_alloc;
    zs.zfree = z_free;
    zs.opaque = (voidpf)lim->alloc;
    zr = inflateInit(&zs);
    if (zr != Z_OK) {
        cnb_free(lim->alloc, buf);
        return zr == Z_MEM_ERROR ? CNB_ENOMEM : CNB_EZLIB;
    }
    p += 5;
    in_left = (size_t)(end - p);
    zs.next_out = buf;
    zs.avail_out = (uInt)usize; /* usize < 2^32 */
    for (;;) {
        if (zs.avail_in == 0 && in_left) {
            uInt chunk = in_left > UINT_MAX ? UINT_MAX : (uInt)in_left;
            zs.next_in = (Bytef *)(uintptr_t)p;
            zs.avail_in = chunk;
            p += chunk;
            in_left -= chunk;
        }
        zr = inflate(&zs, Z_NO_FLUSH);
        if (zr == Z_STREAM_END)
            break;
        if (zr == Z_OK)
            continue;
        if (zr == Z_MEM_ERROR)
            r = CNB_ENOMEM;
        else if (zr == Z_BUF_ERROR && zs.avail_in == 0 && in_left == 0)
            r = CNB_ETRUNC; /* the input ends before the stream does */
        else
            r = CNB_EZLIB; /* corrupt data, or more data than announced */
        goto out;
    }
    if (zs.total_out != usize)
        r = CNB_EZLIB; /* less data than announced */
    else if (zs.avail_in || in_left)
        r = CNB_EMALFORMED; /* bytes after the zlib stream */
out:
    inflateEnd(&zs);
    if (r) {
        cnb_free(lim->alloc, buf);
        return r;
    }
    *out = buf;
    *out_len = usize;
    return 0;
}

/* Finds the term: skips the version byte, inflates a compressed term (then
 * *inflated is set and must be freed). */
static int locate(const void *in, size_t len, const cnb__term_limits_t *lim,
                  const uint8_t **pp, const uint8_t **pend, uint8_t **inflated)
{
    const uint8_t *p = in, *end;
    *inflated = NULL;
    if (!in && len)
        return CNB_EINVAL;
    if (!len)
        return CNB_ETRUNC;
    end = p + len;
    if (p[0] == CNB__TAG_VERSION)
        p++;
    if (p == end)
        return CNB_ETRUNC;
    if (p[0] == CNB__TAG_COMPRESSED) {
        size_t ulen;
        int r = inflate_term(p, end, lim, inflated, &ulen);
        if (r)
            return r;
        p = *inflated;
        end = p + ulen;
    }
    *pp = p;
    *pend = end;
    return 0;
}

/* An output buffer for the general path: it may exceed max_size on the way
 * (a list of bytes is written twice as long before it folds to STRING_EXT),
 * never by more than about twice. */
static void obuf_init(cnb__obuf_t *o, uint8_t *buf, size_t cap, const cnb__term_limits_t *lim)
{
    o->buf = buf;
    o->cap = cap;
    o->len = 0;
    o->owned = 0;
    o->alloc = lim->alloc;
    o->hard_limit = sat_add(sat_add(sat_mul(lim->max_size, 2), 64), sat_mul(lim->max_depth, 8));
}

static int slow_path(const uint8_t *p, const uint8_t *end, const cnb__term_limits_t *lim,
                     cnb__obuf_t *o)
{
    int r;
    if ((r = cnb__obuf_reserve(o, 1)))
        return r;
    o->buf[o->len++] = CNB__TAG_VERSION;
    if ((r = cnb__term_canon_slow(p, end, lim, o)))
        return r;
    if (o->len > lim->max_size)
        return CNB_ETOOBIG;
    return 0;
}

ssize_t cnb_term_canonical(const void *in, size_t len, void *out, size_t out_cap,
                           const cnb_term_opts_t *opts)
{
    cnb__term_limits_t lim;
    const uint8_t *p, *end;
    uint8_t *inflated;
    ssize_t ret;
    int r;

    cnb__term_limits(opts, &lim);
    if ((r = locate(in, len, &lim, &p, &end, &inflated)))
        return r;
    r = cnb__term_is_canonical(p, end, lim.max_depth, lim.alloc);
    if (r < 0) {
        ret = r;
    } else if (r == 1) {
        size_t size = 1 + (size_t)(end - p);
        if (size > lim.max_size || size > (size_t)SSIZE_MAX) {
            ret = CNB_ETOOBIG;
        } else if (!out) {
            ret = (ssize_t)size;
        } else if (size > out_cap) {
            ret = CNB_ENOSPC;
        } else {
            uint8_t *o = out;
            o[0] = CNB__TAG_VERSION;
            memcpy(o + 1, p, size - 1);
            ret = (ssize_t)size;
        }
    } else {
        uint8_t stack[STACK_OUT];
        cnb__obuf_t o;
        if (out && out_cap >= STACK_OUT)
            obuf_init(&o, out, out_cap, &lim);
        else
            obuf_init(&o, stack, sizeof(stack), &lim);
        r = slow_path(p, end, &lim, &o);
        if (r) {
            ret = r;
        } else if (o.len > (size_t)SSIZE_MAX) {
            ret = CNB_ETOOBIG;
        } else if (!out || o.buf == out) {
            ret = (ssize_t)o.len;
        } else if (o.len > out_cap) {
            ret = CNB_ENOSPC;
        } else {
            memcpy(out, o.buf, o.len);
            ret = (ssize_t)o.len;
        }
        if (o.owned)
            cnb_free(lim.alloc, o.buf);
    }
    cnb_free(lim.alloc, inflated);
    return ret;
}

int cnb_term_canonical_alloc(const void *in, size_t len, void **out, size_t *out_len,
                             const cnb_term_opts_t *opts)
{
    cnb__term_limits_t lim;
    const uint8_t *p, *end;
    uint8_t *inflated;
    int r;

    if (!out || !out_len)
        return CNB_EINVAL;
    *out = NULL;
    *out_len = 0;
    cnb__term_limits(opts, &lim);
    if ((r = locate(in, len, &lim, &p, &end, &inflated)))
        return r;
    r = cnb__term_is_canonical(p, end, lim.max_depth, lim.alloc);
    if (r == 1) {
        size_t size = 1 + (size_t)(end - p);
        uint8_t *b;
        r = 0;
        if (size > lim.max_size) {
            r = CNB_ETOOBIG;
        } else if (!(b = cnb_alloc(lim.alloc, size))) {
            r = CNB_ENOMEM;
        } else {
            b[0] = CNB__TAG_VERSION;
            memcpy(b + 1, p, size - 1);
            *out = b;
            *out_len = size;
        }
    } else if (r == 0) {
        uint8_t stack[STACK_OUT];
        cnb__obuf_t o;
        obuf_init(&o, stack, sizeof(stack), &lim);
        r = slow_path(p, end, &lim, &o);
        if (!r && !o.owned) {
            uint8_t *b = cnb_alloc(lim.alloc, o.len);
            if (!b) {
                r = CNB_ENOMEM;
            } else {
                memcpy(b, o.buf, o.len);
                *out = b;
                *out_len = o.len;
            }
        } else if (!r) {
            uint8_t *b = o.buf;
            if (o.cap - o.len > 4096) { /* give back a large unused tail */
                uint8_t *s = cnb_realloc(lim.alloc, b, o.len);
                if (s)
                    b = s;
            }
            *out = b;
            *out_len = o.len;
            o.owned = 0;
        }
        if (o.owned)
            cnb_free(lim.alloc, o.buf);
    }
    cnb_free(lim.alloc, inflated);
    return r;
}

/* Checks that one compare argument is canonical ETF. Returns 0, the decoding
 * error of a malformed input, or CNB_EINVAL for a valid term that is not in
 * canonical form (for instance compressed). */
static int canonical_arg(const void *in, size_t len, const uint8_t **pp, size_t *plen)
{
    const uint8_t *p = in;
    int r;
    if (!in && len)
        return CNB_EINVAL;
    if (len && p[0] == CNB__TAG_VERSION) {
        p++;
        len--;
    }
    if (!len)
        return CNB_ETRUNC;
    r = cnb__term_is_canonical(p, p + len, SIZE_MAX, NULL);
    if (r < 0)
        return r;
    if (r == 0) {
        cnb_term_opts_t big = {SIZE_MAX, SIZE_MAX / 4, SIZE_MAX / 4, NULL};
        ssize_t s = cnb_term_canonical(p, len, NULL, 0, &big);
        return s < 0 ? (int)s : CNB_EINVAL;
    }
    *pp = p;
    *plen = len;
    return 0;
}

ssize_t cnb_term_zero_sign(void *canon, size_t len)
{
    const uint8_t *p;
    size_t n;
    int r = canonical_arg(canon, len, &p, &n);
    if (r)
        return r;
    return cnb__term_fix_negzero((uint8_t *)canon + (p - (const uint8_t *)canon), n);
}

int cnb_term_compare(const void *a, size_t alen, const void *b, size_t blen, int *order)
{
    const uint8_t *pa, *pb;
    size_t la, lb;
    int r;
    if (!order)
        return CNB_EINVAL;
    *order = 0;
    if ((r = canonical_arg(a, alen, &pa, &la)) || (r = canonical_arg(b, blen, &pb, &lb)))
        return r;
    return cnb__term_cmp(pa, la, pb, lb, 0, NULL, order, NULL);
}
