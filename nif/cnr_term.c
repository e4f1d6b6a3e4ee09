/* cnr_term.c: term conversions of the cnode_registry NIF: a term to canonical
 * ETF (what core/registry compares), canonical bytes back to a term, pids to
 * and from cnb_pid_t, error codes to {error, Reason}.
 * Tests: tests/integration/nif_tests.erl (canonical bytes against
 * term_to_binary(T, [deterministic, {minor_version, 2}]), pids of every kind).
 * Reading ETF, it takes tags and headers from core's term reader
 * (core/term_read.h) and keeps only its fast paths' policy. */
#include <string.h>

#include "../core/term_int.h"
#include "cnb_bytes.h"
#include "cnb_term.h"
#include "cnr.h"


/* ---- canonical encoding ---------------------------------------------------- */

/* The direct path: common terms (atoms, integers of up to 64 bits, floats,
 * binaries, tuples and proper lists of those) written straight from the term
 * into the inline buffer, as term_to_binary(T, [{minor_version, 2},
 * deterministic]) writes them. Anything else (maps, pids, refs, funs,
 * bitstrings, big integers, non-Latin-1 atoms, deep or long terms) returns 0
 * and takes the generic path; tests compare both on random terms. */

#define DIRECT_DEPTH 32

struct wbuf {
    unsigned char *p;
    size_t len, cap;
};

static int put(struct wbuf *w, const void *src, size_t n)
{
    if (w->cap - w->len < n)
        return 0;
    memcpy(w->p + w->len, src, n);
    w->len += n;
    return 1;
}

static int put1(struct wbuf *w, unsigned char b)
{
    return put(w, &b, 1);
}

static int put_be32(struct wbuf *w, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    return put(w, b, 4);
}

/* Atom text by atom: a small per-thread cache (atoms never change text). */
#define ATOM_CACHE 256
#define ATOM_MAX 64 /* bytes of UTF-8 kept per cached atom */
struct atom_slot {
    ERL_NIF_TERM atom;
    unsigned char len;
    unsigned char utf8[ATOM_MAX];
};
/* Per-thread caches (atoms here, pids below) are allocated on a thread's
 * first use and never freed: the threads that call NIFs are the VM's
 * schedulers, which live as long as the VM (a reload of this library leaves
 * the old instance's, ~64 KiB per scheduler). Only a pointer and a flag per
 * cache are thread-local, initial-exec (24 bytes, with cnr_table.c's reader
 * slot 28, of the static TLS glibc keeps for libraries loaded later), so that
 * reaching them costs a load, not a call of __tls_get_addr, on every lookup.
 * NULL when the allocation failed: no cache then. */
static __thread struct atom_slot *atom_cache __attribute__((tls_model("initial-exec")));
static __thread int atom_cache_tried __attribute__((tls_model("initial-exec")));

static void *thread_cache(size_t size, int *tried)
{
    if (*tried)
        return NULL;
    *tried = 1;
    void *p = enif_alloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}

static int put_atom(ErlNifEnv *env, struct wbuf *w, ERL_NIF_TERM t, struct atom_slot *cache)
{
    struct atom_slot one, *s = &one;
    if (cache)
        s = &cache[((uint64_t)t * 0x9E3779B97F4A7C15ULL) >> 56];
    if (!cache || s->atom != t) {
        char latin1[ATOM_MAX + 1];
        int n = enif_get_atom(env, t, latin1, sizeof latin1, ERL_NIF_LATIN1);
        if (n <= 0)
            return 0; /* long, or not Latin-1 */
        size_t o = 0;
        for (int i = 0; i < n - 1; i++) {
            unsigned char ch = (unsigned char)latin1[i];
            if (ch < 0x80) {
                if (o + 1 > ATOM_MAX)
                    return 0;
                s->utf8[o++] = ch;
            } else {
                if (o + 2 > ATOM_MAX)
                    return 0;
                s->utf8[o++] = (unsigned char)(0xC0 | (ch >> 6));
                s->utf8[o++] = (unsigned char)(0x80 | (ch & 0x3F));
            }
        }
        s->len = (unsigned char)o;
        s->atom = t;
    }
    return put1(w, CNB__TAG_SMALL_ATOM_UTF8) && put1(w, s->len) && put(w, s->utf8, s->len);
}

static int put_int(struct wbuf *w, ErlNifSInt64 v)
{
    if (v >= 0 && v <= 255)
        return put1(w, CNB__TAG_SMALL_INTEGER) && put1(w, (unsigned char)v);
    if (v >= INT32_MIN && v <= INT32_MAX)
        return put1(w, CNB__TAG_INTEGER) && put_be32(w, (uint32_t)(int32_t)v);
    uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    unsigned char dig[8];
    unsigned n = 0;
    while (mag) {
        dig[n++] = (unsigned char)mag;
        mag >>= 8;
    }
    return put1(w, CNB__TAG_SMALL_BIG) && put1(w, (unsigned char)n) && put1(w, v < 0) && put(w, dig, n);
}

static int put_uint(struct wbuf *w, ErlNifUInt64 v)
{
    if (v <= (ErlNifUInt64)INT64_MAX)
        return put_int(w, (ErlNifSInt64)v);
    unsigned char dig[8];
    for (int i = 0; i < 8; i++)
        dig[i] = (unsigned char)(v >> (8 * i));
    return put1(w, CNB__TAG_SMALL_BIG) && put1(w, 8) && put1(w, 0) && put(w, dig, 8);
}

/* cache: this thread's atom_cache (looked up once per encoding). */
static int direct(ErlNifEnv *env, struct wbuf *w, ERL_NIF_TERM t, int depth,
                  struct atom_slot *cache)
{
    ErlNifSInt64 i64;
    ErlNifUInt64 u64;
    double d;
    ErlNifBinary b;
    const ERL_NIF_TERM *el;
    int arity;
    unsigned len;
    if (depth > DIRECT_DEPTH)
        return 0;
    switch (enif_term_type(env, t)) {
    case ERL_NIF_TERM_TYPE_ATOM:
        return put_atom(env, w, t, cache);
    case ERL_NIF_TERM_TYPE_INTEGER:
        if (enif_get_int64(env, t, &i64))
            return put_int(w, i64);
        if (enif_get_uint64(env, t, &u64))
            return put_uint(w, u64);
        return 0;
    case ERL_NIF_TERM_TYPE_FLOAT: {
        if (!enif_get_double(env, t, &d))
            return 0;
        uint64_t bits;
        memcpy(&bits, &d, 8);
        return put1(w, CNB__TAG_NEW_FLOAT) && put_be32(w, (uint32_t)(bits >> 32)) && put_be32(w, (uint32_t)bits);
    }
    case ERL_NIF_TERM_TYPE_BITSTRING:
        if (!enif_is_binary(env, t) || !enif_inspect_binary(env, t, &b) || b.size > UINT32_MAX)
            return 0;
        return put1(w, CNB__TAG_BINARY) && put_be32(w, (uint32_t)b.size) && put(w, b.data, b.size);
    case ERL_NIF_TERM_TYPE_TUPLE:
        if (!enif_get_tuple(env, t, &arity, &el))
            return 0;
        if (arity < 256) {
            if (!put1(w, CNB__TAG_SMALL_TUPLE) || !put1(w, (unsigned char)arity))
                return 0;
        } else if (!put1(w, CNB__TAG_LARGE_TUPLE) || !put_be32(w, (uint32_t)arity)) {
            return 0;
        }
        for (int k = 0; k < arity; k++)
            if (!direct(env, w, el[k], depth + 1, cache))
                return 0;
        return 1;
    case ERL_NIF_TERM_TYPE_LIST: {
        if (enif_is_empty_list(env, t))
            return put1(w, CNB__TAG_NIL);
        if (!enif_get_list_length(env, t, &len)) /* improper */
            return 0;
        /* A list of bytes is a STRING_EXT (up to 65535 of them). */
        ERL_NIF_TERM head, tail = t;
        int bytes = len <= 65535;
        size_t start = w->len;
        if (bytes && put1(w, CNB__TAG_STRING) && put1(w, (unsigned char)(len >> 8)) &&
            put1(w, (unsigned char)len)) {
            int v;
            while (enif_get_list_cell(env, tail, &head, &tail)) {
                if (!enif_get_int(env, head, &v) || v < 0 || v > 255 || !put1(w, (unsigned char)v)) {
                    bytes = 0;
                    break;
                }
            }
            if (bytes)
                return 1;
            w->len = start;
        }
        if (!put1(w, CNB__TAG_LIST) || !put_be32(w, len))
            return 0;
        tail = t;
        while (enif_get_list_cell(env, tail, &head, &tail))
            if (!direct(env, w, head, depth + 1, cache))
                return 0;
        return put1(w, CNB__TAG_NIL);
    }
    default:
        return 0;
    }
}

/* The generic path: the VM's external format, then core's canonicaliser. */
static int canon_generic(ErlNifEnv *env, ERL_NIF_TERM t, struct cnr_canon *c)
{
    ErlNifBinary b;
    if (!enif_term_to_binary(env, t, &b))
        return CNB_ENOMEM;
    cnb_term_opts_t opts = {.alloc = &cnr_g.alloc};
    ssize_t n = cnb_term_canonical(b.data, b.size, c->inl, sizeof c->inl, &opts);
    if (n == CNB_ENOSPC) {
        n = cnb_term_canonical(b.data, b.size, NULL, 0, &opts);
        if (n >= 0) {
            unsigned char *p = enif_alloc((size_t)n);
            if (!p) {
                n = CNB_ENOMEM;
            } else {
                n = cnb_term_canonical(b.data, b.size, p, (size_t)n, &opts);
                if (n < 0)
                    enif_free(p);
                else
                    c->p = p;
            }
        }
    }
    enif_release_binary(&b);
    if (n < 0)
        return (int)n;
    c->len = (size_t)n;
    return 0;
}

int cnr_canon(ErlNifEnv *env, ERL_NIF_TERM t, struct cnr_canon *c)
{
    c->p = c->inl;
    c->len = 0;
    struct wbuf w = {c->inl, 0, sizeof c->inl};
    if (!atom_cache)
        atom_cache = thread_cache(sizeof *atom_cache * ATOM_CACHE, &atom_cache_tried);
    if (put1(&w, CNB__TAG_VERSION) && direct(env, &w, t, 0, atom_cache)) {
        c->len = w.len;
        return 0;
    }
    int rc = canon_generic(env, t, c);
    if (rc)
        c->p = c->inl;
    return rc;
}

void cnr_canon_free(struct cnr_canon *c)
{
    if (c->p && c->p != c->inl)
        enif_free(c->p);
    c->p = c->inl;
}

static int dec(ErlNifEnv *env, const unsigned char **pp, const unsigned char *end,
               ERL_NIF_TERM *out, int depth);

/* The n items of the tuple or list whose header of size bytes is at *pp,
 * into el; *pp is left after them. Returns 1, or 0 (not for the direct
 * decoder). */
static int dec_items(ErlNifEnv *env, const unsigned char **pp, const unsigned char *end,
                     size_t size, ERL_NIF_TERM *el, size_t n, int depth)
{
    const unsigned char *p = *pp + size;
    for (size_t i = 0; i < n; i++)
        if (!dec(env, &p, end, &el[i], depth + 1))
            return 0;
    *pp = p;
    return 1;
}

/* The direct decoder for common canonical terms (integers, floats, atoms that
 * exist already, binaries, tuples, lists); 0 sends the whole term to
 * enif_binary_to_term. */
static int dec(ErlNifEnv *env, const unsigned char **pp, const unsigned char *end,
               ERL_NIF_TERM *out, int depth)
{
    const unsigned char *p = *pp;
    ERL_NIF_TERM el[16];
    cnb__term_head_t h;
    size_t n;
    if (depth > DIRECT_DEPTH || cnb__term_head(p, end, &h))
        return 0;
    n = (size_t)h.n;
    switch (h.tag) {
    case CNB__TAG_SMALL_INTEGER:
        *out = enif_make_int(env, p[1]);
        break;
    case CNB__TAG_INTEGER:
        *out = enif_make_int(env, (int32_t)cnb__get32(h.data));
        break;
    case CNB__TAG_NEW_FLOAT: {
        uint64_t bits = cnb__get64(h.data);
        double d;
        /* NaN or infinite: no Erlang float (binary_to_term refuses it), and
         * enif_make_double would give the badarg exception term, which
         * inside a tuple or list is a broken term the VM dies copying. */
        if (!cnb__float_bits_ok(bits))
            return 0;
        memcpy(&d, &bits, 8);
        *out = enif_make_double(env, d);
        break;
    }
    case CNB__TAG_SMALL_ATOM_UTF8:
        if (!cnb__term_is_ascii(h.data, n))
            return 0;
        if (!enif_make_existing_atom_len(env, (const char *)h.data, n, out, ERL_NIF_LATIN1))
            return 0;
        break;
    case CNB__TAG_BINARY: {
        unsigned char *b = enif_make_new_binary(env, n, out);
        if (!b)
            return 0;
        memcpy(b, h.data, n);
        break;
    }
    case CNB__TAG_NIL:
        *out = enif_make_list(env, 0);
        break;
    case CNB__TAG_STRING: {
        if (n > 64)
            return 0;
        ERL_NIF_TERM l = enif_make_list(env, 0);
        for (size_t i = n; i-- > 0;)
            l = enif_make_list_cell(env, enif_make_int(env, h.data[i]), l);
        *out = l;
        break;
    }
    case CNB__TAG_SMALL_TUPLE:
        if (n > 16 || !dec_items(env, &p, end, h.size, el, n, depth))
            return 0;
        *out = enif_make_tuple_from_array(env, el, (unsigned)n);
        *pp = p;
        return 1;
    case CNB__TAG_LIST: { /* a LIST_EXT must be proper */
        if (n > 16 || !dec_items(env, &p, end, h.size, el, n, depth))
            return 0;
        if (p >= end || p[0] != CNB__TAG_NIL)
            return 0;
        ERL_NIF_TERM tail = enif_make_list(env, 0);
        for (size_t i = n; i-- > 0;)
            tail = enif_make_list_cell(env, el[i], tail);
        *out = tail;
        *pp = p + 1;
        return 1;
    }
    default:
        return 0;
    }
    *pp = p + h.size;
    return 1;
}

int cnr_decode(ErlNifEnv *env, const unsigned char *p, size_t len, ERL_NIF_TERM *out)
{
    const unsigned char *q = p + 1, *end = p + len;
    /* A small integer (a common value) without the reader's walk. */
    if (len == 3 && p[0] == CNB__TAG_VERSION && p[1] == CNB__TAG_SMALL_INTEGER) {
        *out = enif_make_int(env, p[2]);
        return 1;
    }
    if (len > 1 && p[0] == CNB__TAG_VERSION && dec(env, &q, end, out, 0) && q == end)
        return 1;
    /* Bytes that may hold an EXPORT_EXT (the tag byte anywhere: a false hit
     * only costs this check) must pass core's reading first: binary_to_term
     * takes an arity past 255 and makes a fun that OTP 27.3's VM crashes
     * on, and bytes read from a shared segment are anyone's. */
    if (memchr(p, CNB__TAG_EXPORT, len)) {
        cnb_term_opts_t opts = {.alloc = &cnr_g.alloc};
        if (cnb_term_canonical(p, len, NULL, 0, &opts) < 0)
            return 0;
    }
    /* Not == len alone: enif_binary_to_term answers 0 for bytes it refuses,
     * and an entry whose value length another process wrote as 0 then
     * "succeeded" with *out never set (a garbage term, which the VM died
     * copying: nif_tests:empty_value_in_segment). */
    return len > 0 && enif_binary_to_term(env, p, len, out, 0) == len;
}

/* ---- pids -------------------------------------------------------------------- */

/* Writes the node atom at p of a pid the reader has read (one of the four
 * atom encodings, whole) as UTF-8 into out. Returns 1, or 0 if it is empty
 * or over 255 bytes of UTF-8. */
static int read_node(const unsigned char *p, char out[256])
{
    const unsigned char *s;
    size_t n = cnb__term_node_text(p, &s), o = 0;
    if (n == 0)
        return 0;
    if (!cnb__term_atom_is_latin1(p[0])) {
        if (n > 255)
            return 0;
        memcpy(out, s, n);
        out[n] = 0;
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = s[i];
        if (ch >= 0x80) {
            if (o + 2 > 255)
                return 0;
            out[o++] = (char)(0xC0 | (ch >> 6));
            out[o++] = (char)(0x80 | (ch & 0x3F));
        } else {
            if (o + 1 > 255)
                return 0;
            out[o++] = (char)ch;
        }
    }
    out[o] = 0;
    return 1;
}

int cnr_pid_get(ErlNifEnv *env, ERL_NIF_TERM t, cnb_pid_t *out)
{
    ErlNifBinary b;
    int ok = 0;
    if (!enif_is_pid(env, t) || !enif_term_to_binary(env, t, &b))
        return 0;
    const unsigned char *p = b.data, *end = b.data + b.size;
    cnb__term_head_t h;
    if (b.size < 3 || p[0] != CNB__TAG_VERSION || (p[1] != CNB__TAG_NEW_PID && p[1] != CNB__TAG_PID))
        goto out;
    if (cnb__term_head(p + 1, end, &h) || !read_node(p + 1 + h.hdr, out->node))
        goto out;
    out->num = cnb__get32(h.data);
    out->serial = cnb__get32(h.data + 4);
    out->creation = h.tag == CNB__TAG_NEW_PID ? cnb__get32(h.data + 8) : h.data[8];
    ok = 1;
out:
    enif_release_binary(&b);
    return ok;
}

/* Local pid terms by (node, number, serial, creation): a per-thread cache. A
 * local pid is an immediate term, valid in any environment for the life of
 * the VM, and the mapping never changes; remote pids live on a heap and are
 * made each time. */
#define PID_CACHE 512
#define PID_NODE_MAX 64
struct pid_slot {
    uint32_t num, serial, creation, nlen;
    ERL_NIF_TERM term;
    char node[PID_NODE_MAX];
};
static __thread struct pid_slot *pid_cache __attribute__((tls_model("initial-exec")));
static __thread int pid_cache_tried __attribute__((tls_model("initial-exec")));

int cnr_pid_make(ErlNifEnv *env, const char *node, uint32_t num, uint32_t serial,
                 uint32_t creation, ERL_NIF_TERM *out)
{
    unsigned char buf[4 + 256 + 12];
    size_t nl = strnlen(node, 256), i = 0;
    if (nl == 0 || nl > 255)
        return 0;
    uint32_t h = (num * 0x9E3779B1u) ^ (serial * 0x85EBCA77u) ^ creation;
    struct pid_slot one, *s = &one;
    one.term = 0; /* a miss */
    if (!pid_cache)
        pid_cache = thread_cache(sizeof *pid_cache * PID_CACHE, &pid_cache_tried);
    if (pid_cache)
        s = &pid_cache[(h ^ (h >> 16)) & (PID_CACHE - 1)];
    if (s->term && s->num == num && s->serial == serial && s->creation == creation &&
        s->nlen == nl && memcmp(s->node, node, nl) == 0) {
        *out = s->term;
        return 1;
    }
    buf[i++] = CNB__TAG_VERSION;
    buf[i++] = CNB__TAG_NEW_PID;
    buf[i++] = CNB__TAG_SMALL_ATOM_UTF8;
    buf[i++] = (unsigned char)nl;
    memcpy(buf + i, node, nl);
    i += nl;
    cnb__put32(buf + i, num);
    cnb__put32(buf + i + 4, serial);
    cnb__put32(buf + i + 8, creation);
    i += 12;
    if (enif_binary_to_term(env, buf, i, out, 0) != i)
        return 0;
    ErlNifPid lp;
    if (nl <= PID_NODE_MAX && enif_get_local_pid(env, *out, &lp)) {
        s->num = num;
        s->serial = serial;
        s->creation = creation;
        s->nlen = (uint32_t)nl;
        memcpy(s->node, node, nl);
        s->term = *out;
    }
    return 1;
}
