/* frame.c: connected-mode framing, distribution headers and fragment
 * reassembly (see frame.h). Tests: tests/unit/test_frame.c. */
#include "frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

long cnb__frame_next(const uint8_t *buf, size_t len, size_t max, const uint8_t **pkt,
                     size_t *pkt_len)
{
    if (len < 4)
        return 0;
    uint32_t n = cnb__get32(buf);
    if (n > max)
        return CNB_ETOOBIG;
    if (len - 4 < n)
        return 0;
    *pkt = buf + 4;
    *pkt_len = n;
    return (long)n + 4;
}

int cnb__dist_parse(const uint8_t *p, size_t n, cnb_dist_pkt_t *out)
{
    memset(out, 0, sizeof(*out));
    if (n < 1)
        return CNB_EPROTO;
    if (p[0] == 112) {
        out->kind = CNB_PKT_PASS;
        out->body = p + 1;
        out->body_len = n - 1;
        return 0;
    }
    if (p[0] != 131 || n < 2)
        return CNB_EPROTO;
    size_t off;
    switch (p[1]) {
    case 68:
        if (n < 3)
            return CNB_EPROTO;
        out->kind = CNB_PKT_HDR;
        off = 2;
        break;
    case 69:
        if (n < 19)
            return CNB_EPROTO;
        out->kind = CNB_PKT_FRAG_START;
        out->seq = cnb__get64(p + 2);
        out->frag = cnb__get64(p + 10);
        off = 18;
        break;
    case 70:
        if (n < 18)
            return CNB_EPROTO;
        out->kind = CNB_PKT_FRAG_CONT;
        out->seq = cnb__get64(p + 2);
        out->frag = cnb__get64(p + 10);
        out->body = p + 18;
        out->body_len = n - 18;
        return out->frag == 0 ? CNB_EPROTO : 0;
    default:
        return CNB_EPROTO;
    }
    /* NumberOfAtomCacheRefs: must be 0, since we never offer the atom cache. */
    if (p[off] != 0)
        return CNB_EPROTO;
    off++;
    if (out->kind == CNB_PKT_FRAG_START && out->frag == 0)
        return CNB_EPROTO;
    out->body = p + off;
    out->body_len = n - off;
    return 0;
}

static cnb_frag_t **find(cnb_frags_t *t, uint64_t seq)
{
    cnb_frag_t **pp = &t->head;
    while (*pp && (*pp)->seq != seq)
        pp = &(*pp)->next;
    return pp;
}

static void drop(cnb_frags_t *t, cnb_frag_t **pp)
{
    cnb_frag_t *f = *pp;
    *pp = f->next;
    t->bytes -= f->data.len;
    cnb__buf_free(&f->data);
    free(f);
    t->count--;
}

/* Appends fragment data to f, within the limits. Returns 0 or a code of
 * cnb__frag_add (the caller drops f on error). */
static int append(cnb_frags_t *t, cnb_frag_t *f, const cnb_dist_pkt_t *pkt,
                  const cnb_frag_limits_t *lim)
{
    if (pkt->body_len > lim->max_message - f->data.len)
        return CNB_ETOOBIG;
    if (pkt->body_len > lim->max_bytes - t->bytes)
        return CNB_ENOSPC;
    if (cnb__buf_put(&f->data, pkt->body, pkt->body_len))
        return CNB_ENOMEM;
    t->bytes += pkt->body_len;
    return 0;
}

int cnb__frag_add(cnb_frags_t *t, const cnb_dist_pkt_t *pkt, const cnb_frag_limits_t *lim,
                  int64_t now, uint8_t **msg, size_t *msg_len)
{
    cnb_frag_t **pp = find(t, pkt->seq);
    cnb_frag_t *f = *pp;
    int rc;
    if (pkt->kind == CNB_PKT_FRAG_START) {
        if (f) /* a restarted sequence replaces the old partial one */
            drop(t, pp);
        if (pkt->frag == 1) { /* a one-fragment message */
            if (pkt->body_len > lim->max_message)
                return CNB_ETOOBIG;
            uint8_t *m = malloc(pkt->body_len ? pkt->body_len : 1);
            if (!m)
                return CNB_ENOMEM;
            memcpy(m, pkt->body, pkt->body_len);
            *msg = m;
            *msg_len = pkt->body_len;
            return 1;
        }
        if (t->count >= lim->max_sequences)
            return CNB_EBUSY;
        f = calloc(1, sizeof(*f));
        if (!f)
            return CNB_ENOMEM;
        f->seq = pkt->seq;
        f->expect = pkt->frag - 1;
        f->t_last = now;
        f->next = t->head;
        t->head = f;
        t->count++;
        if ((rc = append(t, f, pkt, lim)))
            drop(t, &t->head);
        return rc;
    }
    if (!f || pkt->frag != f->expect) {
        if (f)
            drop(t, pp);
        return CNB_EPROTO;
    }
    if ((rc = append(t, f, pkt, lim))) {
        drop(t, pp);
        return rc;
    }
    f->t_last = now;
    if (--f->expect > 0)
        return 0;
    *msg = f->data.data;
    *msg_len = f->data.len;
    t->bytes -= f->data.len;
    f->data.data = NULL;
    f->data.len = 0;
    drop(t, pp);
    return 1;
}

size_t cnb__frag_stalled(const cnb_frags_t *t, const cnb_frag_limits_t *lim, int64_t now,
                         char *why, size_t cap)
{
    size_t k = 0;
    for (const cnb_frag_t *f = t->head; f; f = f->next)
        if (now - f->t_last >= lim->timeout_ms)
            k++;
    if (k)
        snprintf(why, cap,
                 "%zu of %zu incomplete fragmented message(s) got no fragment for %lld ms "
                 "(%zu bytes held)",
                 k, t->count, (long long)lim->timeout_ms, t->bytes);
    return k;
}

const char *cnb__frag_why(int rc, const cnb_frags_t *t, const cnb_frag_limits_t *lim,
                          char *buf, size_t cap)
{
    switch (rc) {
    case CNB_ETOOBIG:
        snprintf(buf, cap, "incoming fragmented message exceeds the limit of %zu bytes",
                 lim->max_message);
        break;
    case CNB_ENOSPC:
        snprintf(buf, cap,
                 "%zu incomplete fragmented message(s) would hold more than the limit of %zu "
                 "bytes (%zu held)",
                 t->count, lim->max_bytes, t->bytes);
        break;
    case CNB_EBUSY:
        snprintf(buf, cap,
                 "more than %zu incomplete fragmented messages at once (%zu bytes held)",
                 lim->max_sequences, t->bytes);
        break;
    default:
        snprintf(buf, cap, "bad fragment sequence: %s", cnb_strerror(rc));
        break;
    }
    return buf;
}

void cnb__frag_clear(cnb_frags_t *t)
{
    size_t held = t->bytes;
    while (t->head)
        drop(t, &t->head);
#ifdef __GLIBC__
    /* Fragments are below glibc's mmap threshold, so a connection closed for
     * holding many leaves them in the heap: give that memory back to the
     * system rather than keep the peak (measured: +64 MB of RSS kept after
     * 1,024 sequences of 64 KB, without). */
    if (held >= ((size_t)1 << 20))
        malloc_trim(0);
#else
    (void)held;
#endif
}
