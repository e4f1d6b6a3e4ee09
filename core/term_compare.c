/* term_compare.c: Erlang term order (OTP 25 `<`, `==`, and the exact order of
 * map keys) on canonical ETF, walking both terms side by side with an explicit
 * stack; headers come from core's term reader (term_read.h). Tests: tests/unit/test_term.c, tests/integration/term_prop_tests.erl. */
#include "term_int.h"

#include <math.h>

/* Type classes in term order: number < atom < reference < fun < port < pid <
 * tuple < map < nil < list < bitstring. */
enum {
    K_NUMBER = 1,
    K_ATOM,
    K_REF,
    K_FUN,
    K_PORT,
    K_PID,
    K_TUPLE,
    K_MAP,
    K_NIL,
    K_LIST,
    K_BITS
};

enum { F_SEQ, F_LIST, F_MAPK, F_MAPV };

/* An item on one side: a real term at the side's cursor, or one of the virtual
 * terms a STRING_EXT stands for (a byte, or the [] at its end). */
#define VIRT_REAL (-1)
#define VIRT_NIL 256

typedef struct kframe {
    uint8_t kind;
    uint8_t exact;   /* mode for the items of this frame (F_MAPK keys: always 1) */
    uint8_t tail_done;
    uint8_t pending; /* F_MAPK: a key compared equal; skip the values next */
    uint8_t is_str[2];
    uint64_t n;      /* items (pairs for maps) left */
    uint64_t npairs;
    uint64_t rem[2]; /* F_LIST: elements left on each side */
    const uint8_t *mstart[2];
} kframe_t;

#define K_INLINE_FRAMES 16

typedef struct cmpctx {
    const uint8_t *cur[2];
    const uint8_t *end[2];
    kframe_t *st;
    size_t cap, top;
    const cnb_allocator_t *alloc;
    int tie; /* first difference in trailing zero words of equal references */
    kframe_t inl[K_INLINE_FRAMES];
} cmpctx_t;

static int sgn(int x)
{
    return (x > 0) - (x < 0);
}

static int klass(uint8_t tag)
{
    switch (tag) {
    case CNB__TAG_SMALL_INTEGER:
    case CNB__TAG_INTEGER:
    case CNB__TAG_SMALL_BIG:
    case CNB__TAG_LARGE_BIG:
    case CNB__TAG_NEW_FLOAT:
        return K_NUMBER;
    case CNB__TAG_SMALL_ATOM_UTF8:
    case CNB__TAG_ATOM_UTF8:
        return K_ATOM;
    case CNB__TAG_NEWER_REFERENCE:
        return K_REF;
    case CNB__TAG_NEW_FUN:
    case CNB__TAG_EXPORT:
        return K_FUN;
    case CNB__TAG_NEW_PORT:
    case CNB__TAG_V4_PORT:
        return K_PORT;
    case CNB__TAG_NEW_PID:
        return K_PID;
    case CNB__TAG_SMALL_TUPLE:
    case CNB__TAG_LARGE_TUPLE:
        return K_TUPLE;
    case CNB__TAG_MAP:
        return K_MAP;
    case CNB__TAG_NIL:
        return K_NIL;
    case CNB__TAG_STRING:
    case CNB__TAG_LIST:
        return K_LIST;
    case CNB__TAG_BINARY:
    case CNB__TAG_BIT_BINARY:
        return K_BITS;
    default:
        return -1;
    }
}

/* ---- readers of canonical scalars ----------------------------------------- */

typedef struct atomv {
    const uint8_t *s;
    size_t n;
} atomv_t;

/* Reads a canonical atom at *pp. */
static int rd_atom(const uint8_t **pp, const uint8_t *end, atomv_t *a)
{
    cnb__term_head_t h;
    int r;
    if ((r = cnb__term_head(*pp, end, &h)))
        return r;
    if (h.tag != CNB__TAG_SMALL_ATOM_UTF8 && h.tag != CNB__TAG_ATOM_UTF8)
        return CNB_EMALFORMED;
    a->s = h.data;
    a->n = (size_t)h.n;
    *pp += h.size;
    return 0;
}

static int cmp_atoms(const atomv_t *a, const atomv_t *b)
{
    size_t m = a->n < b->n ? a->n : b->n;
    int c = m ? memcmp(a->s, b->s, m) : 0;
    if (c)
        return sgn(c);
    return (a->n > b->n) - (a->n < b->n);
}

typedef struct num {
    int is_float;
    double d;
    cnb__intval_t i;
} num_t;

static void num_from_u32(num_t *v, int neg, uint32_t m)
{
    v->is_float = 0;
    cnb__intval_from_u32(&v->i, neg, m);
}

/* The number whose header h was read at p. */
static int num_of(const uint8_t *p, const cnb__term_head_t *h, num_t *v)
{
    switch (h->tag) {
    case CNB__TAG_SMALL_INTEGER:
    case CNB__TAG_INTEGER:
    case CNB__TAG_SMALL_BIG:
    case CNB__TAG_LARGE_BIG:
        v->is_float = 0;
        cnb__intval_of(p, h, &v->i);
        return 0;
    case CNB__TAG_NEW_FLOAT: {
        uint64_t bits = cnb__get64(h->data);
        v->is_float = 1;
        memcpy(&v->d, &bits, 8);
        return 0;
    }
    default:
        return CNB_EMALFORMED;
    }
}

/* Reads a canonical number at *pp (or the virtual byte virt). */
static int rd_num(const uint8_t **pp, const uint8_t *end, int virt, num_t *v)
{
    cnb__term_head_t h;
    int r;
    if (virt >= 0) {
        num_from_u32(v, 0, (uint32_t)virt);
        return 0;
    }
    if ((r = cnb__term_head(*pp, end, &h)) || (r = num_of(*pp, &h, v)))
        return r;
    *pp += h.size;
    return 0;
}

/* The commonest numbers, without the general reader of numbers: a
 * SMALL_INTEGER or INTEGER at *pp, or the virtual byte virt. Returns 1 and
 * sets *v, 0 for another number (left to rd_num). */
static inline int is_small_int(const uint8_t *p, int virt)
{
    return virt >= 0 || p[0] == CNB__TAG_SMALL_INTEGER || p[0] == CNB__TAG_INTEGER;
}

/* Reads what is_small_int accepted at *pp. Returns 0 or a negative code. */
static inline int rd_small_int(const uint8_t **pp, const uint8_t *end, int virt, int64_t *v)
{
    cnb__term_head_t h;
    int r;
    if (virt >= 0) {
        *v = virt;
        return 0;
    }
    if ((r = cnb__term_head(*pp, end, &h)))
        return r;
    *v = h.tag == CNB__TAG_SMALL_INTEGER ? h.data[0] : (int32_t)cnb__get32(h.data);
    *pp += h.size;
    return 0;
}

/* Compares magnitudes given as little-endian bytes without high zeros. */
static int cmp_mag(const uint8_t *a, size_t an, const uint8_t *b, size_t bn)
{
    if (an != bn)
        return an < bn ? -1 : 1;
    for (size_t i = an; i-- > 0;)
        if (a[i] != b[i])
            return a[i] < b[i] ? -1 : 1;
    return 0;
}

static int cmp_ints(const cnb__intval_t *a, const cnb__intval_t *b)
{
    if (a->neg != b->neg)
        return a->neg ? -1 : 1;
    int c = cmp_mag(a->dig, a->n, b->dig, b->n);
    return a->neg ? -c : c;
}

/* sign(I - d), exactly, for an integer I and a finite double d. */
static int cmp_int_float(const cnb__intval_t *i, double d)
{
    if (d == 0.0)
        return i->n == 0 ? 0 : (i->neg ? -1 : 1);
    int dneg = d < 0;
    if (i->n == 0)
        return dneg ? 1 : -1;
    if (i->neg != dneg)
        return i->neg ? -1 : 1;
    int e, c;
    double m = frexp(fabs(d), &e); /* |d| = m * 2^e, 0.5 <= m < 1 */
    if (e <= 0) {
        c = 1; /* |I| >= 1 > |d| */
    } else {
        uint64_t mant = (uint64_t)ldexp(m, 53); /* |d| = mant * 2^(e-53) */
        uint8_t ip[8 + 1024 / 8 + 8];
        size_t n;
        int frac = 0;
        memset(ip, 0, sizeof(ip));
        if (e >= 53) {
            int sh = e - 53;
            uint64_t v = mant << (sh % 8);
            for (int k = 0; k < 8; k++)
                ip[sh / 8 + k] = (uint8_t)(v >> (8 * k));
            n = (size_t)(sh / 8) + 8;
        } else {
            int sh = 53 - e;
            uint64_t v = mant >> sh;
            frac = (mant & ((UINT64_C(1) << sh) - 1)) != 0;
            for (int k = 0; k < 8; k++)
                ip[k] = (uint8_t)(v >> (8 * k));
            n = 8;
        }
        while (n && ip[n - 1] == 0)
            n--;
        c = cmp_mag(i->dig, i->n, ip, n);
        if (c == 0 && frac)
            c = -1;
    }
    return i->neg ? -c : c;
}

static int cmp_nums(const num_t *a, const num_t *b, int exact)
{
    if (a->is_float && b->is_float)
        return (a->d > b->d) - (a->d < b->d);
    if (!a->is_float && !b->is_float)
        return cmp_ints(&a->i, &b->i);
    if (exact) /* map key order: every integer before every float */
        return a->is_float ? 1 : -1;
    return a->is_float ? -cmp_int_float(&b->i, a->d) : cmp_int_float(&a->i, b->d);
}

static int cmp_u64(uint64_t a, uint64_t b)
{
    return (a > b) - (a < b);
}

/* A leaf of a class other than number and atom, as term order sees it. */
typedef struct leaf {
    atomv_t node;        /* pid, port, reference */
    uint32_t cre;        /* creation */
    uint64_t id;         /* port: number */
    uint32_t num, ser;   /* pid: number, serial */
    const uint8_t *data; /* reference: words; bitstring: bytes */
    uint64_t len;        /* reference: words; bitstring: bits */
} leaf_t;

/* Reads a pid, port, reference or bitstring of class k at *pp. */
static int rd_leaf(const uint8_t **pp, const uint8_t *end, int k, leaf_t *v)
{
    const uint8_t *p = *pp, *node;
    cnb__term_head_t h;
    int r;
    if ((r = cnb__term_head(p, end, &h)))
        return r;
    node = p + h.hdr;
    switch (k) {
    case K_PID: /* number, serial, creation */
        v->num = cnb__get32(h.data);
        v->ser = cnb__get32(h.data + 4);
        v->cre = cnb__get32(h.data + 8);
        break;
    case K_PORT: { /* number (4 or 8 bytes), creation */
        int v4 = h.tag == CNB__TAG_V4_PORT;
        v->id = v4 ? cnb__get64(h.data) : cnb__get32(h.data);
        v->cre = cnb__get32(h.data + (v4 ? 8 : 4));
        break;
    }
    case K_REF: /* creation, then the words, the last most significant */
        v->cre = cnb__get32(h.data);
        v->data = h.data + 4;
        v->len = h.n;
        break;
    default: /* K_BITS: the bytes, then the bit length */
        if (h.tag == CNB__TAG_BIT_BINARY && (h.n == 0 || p[5] == 0 || p[5] > 8))
            return CNB_EMALFORMED;
        v->data = h.data;
        v->len = h.tag == CNB__TAG_BINARY ? h.n * 8 : (h.n - 1) * 8 + p[5];
        *pp = p + h.size;
        return 0;
    }
    if ((r = rd_atom(&node, end, &v->node)))
        return r;
    *pp = p + h.size;
    return 0;
}

static int cmp_bits(const uint8_t *a, uint64_t abits, const uint8_t *b, uint64_t bbits)
{
    uint64_t m = abits < bbits ? abits : bbits;
    size_t full = (size_t)(m / 8);
    int c = full ? memcmp(a, b, full) : 0;
    if (c)
        return sgn(c);
    unsigned rest = (unsigned)(m % 8);
    if (rest) {
        unsigned mask = (0xffu << (8 - rest)) & 0xffu;
        unsigned x = a[full] & mask, y = b[full] & mask;
        if (x != y)
            return x < y ? -1 : 1;
    }
    return cmp_u64(abits, bbits);
}

/* A local fun's fields that take part in the order, and where its free
 * variables start. */
typedef struct funv {
    atomv_t module;
    uint32_t index;
    num_t old_uniq;
    uint32_t nfree;
    const uint8_t *env;
} funv_t;

static int rd_fun(const uint8_t *p, const uint8_t *end, funv_t *f)
{
    cnb__term_head_t h;
    num_t oi;
    int r;
    if ((r = cnb__term_head(p, end, &h)))
        return r;
    f->index = cnb__get32(p + CNB__FUN_INDEX_AT);
    f->nfree = (uint32_t)h.n;
    p += h.size;
    if ((r = rd_atom(&p, end, &f->module)))
        return r;
    if ((r = rd_num(&p, end, VIRT_REAL, &oi)) || (r = rd_num(&p, end, VIRT_REAL, &f->old_uniq)))
        return r;
    if (oi.is_float || f->old_uniq.is_float)
        return CNB_EMALFORMED;
    if ((size_t)(end - p) < 1 || p[0] != CNB__TAG_NEW_PID)
        return CNB_EMALFORMED;
    if ((r = cnb__term_head(p, end, &h)))
        return r;
    f->env = p + h.size;
    return 0;
}

/* ---- the walk ------------------------------------------------------------- */

static int push(cmpctx_t *c, uint8_t kind, uint8_t exact)
{
    if (c->top == c->cap) {
        void *st = c->st;
        if (cnb__stack_grow(&st, &c->cap, c->inl, sizeof(*c->st), c->alloc))
            return CNB_ENOMEM;
        c->st = st;
    }
    kframe_t *f = &c->st[c->top++];
    memset(f, 0, sizeof(*f));
    f->kind = kind;
    f->exact = exact;
    return 0;
}

static int item_class(const cmpctx_t *c, int s, int virt)
{
    if (virt == VIRT_NIL)
        return K_NIL;
    if (virt >= 0)
        return K_NUMBER;
    if (c->cur[s] >= c->end[s])
        return -1;
    return klass(c->cur[s][0]);
}

/* Term order of two pids, ports, references or bitstrings of class k. */
static int cmp_leaves(cmpctx_t *c, int k, const leaf_t *a, const leaf_t *b)
{
    int o;
    switch (k) {
    case K_PID: /* serial, number, node name, creation */
        o = cmp_u64(a->ser, b->ser);
        if (!o)
            o = cmp_u64(a->num, b->num);
        if (!o)
            o = cmp_atoms(&a->node, &b->node);
        return o ? o : cmp_u64(a->cre, b->cre);
    case K_PORT: /* node name, creation, number */
        o = cmp_atoms(&a->node, &b->node);
        if (!o)
            o = cmp_u64(a->cre, b->cre);
        return o ? o : cmp_u64(a->id, b->id);
    case K_REF: /* node name, creation, the words (missing ones count as 0) */
        o = cmp_atoms(&a->node, &b->node);
        if (!o)
            o = cmp_u64(a->cre, b->cre);
        for (size_t i = a->len > b->len ? a->len : b->len; !o && i-- > 0;)
            o = cmp_u64(i < a->len ? cnb__get32(a->data + 4 * i) : 0,
                        i < b->len ? cnb__get32(b->data + 4 * i) : 0);
        if (!o && a->len != b->len && !c->tie)
            c->tie = a->len < b->len ? -1 : 1;
        return o;
    default: /* K_BITS: the common prefix of bits, then the bit length */
        return cmp_bits(a->data, a->len, b->data, b->len);
    }
}

/* Two funs: local before external; externals by module, function, arity;
 * locals by module, index, OldUniq, free-variable count, then (a frame is
 * pushed) the free variables. */
static int cmp_funs(cmpctx_t *c, int exact, int *ord)
{
    const uint8_t **pa = &c->cur[0], **pb = &c->cur[1];
    const uint8_t *ea = c->end[0], *eb = c->end[1];
    int xa = (*pa)[0] == CNB__TAG_EXPORT, xb = (*pb)[0] == CNB__TAG_EXPORT, r;
    if (xa != xb) { /* OTP 25: local funs before external funs */
        *ord = xa ? 1 : -1;
        return 0;
    }
    if (xa) {
        atomv_t ma, fa, mb, fb;
        num_t aa, ab;
        const uint8_t *a = *pa + 1, *b = *pb + 1;
        if ((r = rd_atom(&a, ea, &ma)) || (r = rd_atom(&a, ea, &fa)) ||
            (r = rd_num(&a, ea, VIRT_REAL, &aa)) || (r = rd_atom(&b, eb, &mb)) ||
            (r = rd_atom(&b, eb, &fb)) || (r = rd_num(&b, eb, VIRT_REAL, &ab)))
            return r;
        int o = cmp_atoms(&ma, &mb);
        if (!o)
            o = cmp_atoms(&fa, &fb);
        if (!o)
            o = cmp_nums(&aa, &ab, 0);
        *ord = o;
        *pa = a;
        *pb = b;
        return 0;
    }
    funv_t fa, fb;
    if ((r = rd_fun(*pa, ea, &fa)) || (r = rd_fun(*pb, eb, &fb)))
        return r;
    int o = cmp_atoms(&fa.module, &fb.module);
    if (!o)
        o = cmp_u64(fa.index, fb.index);
    if (!o)
        o = cmp_ints(&fa.old_uniq.i, &fb.old_uniq.i);
    if (!o)
        o = cmp_u64(fa.nfree, fb.nfree);
    *pa = fa.env;
    *pb = fb.env;
    if (o || fa.nfree == 0) {
        *ord = o;
        return 0;
    }
    if ((r = push(c, F_SEQ, (uint8_t)exact)))
        return r;
    c->st[c->top - 1].n = fa.nfree;
    return 0;
}

/* Two tuples, maps or lists (class k): sizes first for tuples and maps;
 * when they are equal and not empty, a frame for their contents. */
static int open_pair(cmpctx_t *c, int k, int exact, int *ord)
{
    cnb__term_head_t h[2];
    kframe_t *f;
    int r;
    for (int s = 0; s < 2; s++)
        if ((r = cnb__term_head(c->cur[s], c->end[s], &h[s])))
            return r;
    if (k == K_LIST) {
        if ((r = push(c, F_LIST, (uint8_t)exact)))
            return r;
        f = &c->st[c->top - 1];
        for (int s = 0; s < 2; s++) {
            f->is_str[s] = h[s].tag == CNB__TAG_STRING;
            f->rem[s] = h[s].n;
            c->cur[s] = f->is_str[s] ? h[s].data : c->cur[s] + h[s].size;
        }
        return 0;
    }
    c->cur[0] += h[0].size;
    c->cur[1] += h[1].size;
    if (h[0].n != h[1].n || h[0].n == 0) {
        *ord = cmp_u64(h[0].n, h[1].n);
        return 0;
    }
    if ((r = push(c, k == K_TUPLE ? F_SEQ : F_MAPK, (uint8_t)exact)))
        return r;
    f = &c->st[c->top - 1];
    f->n = h[0].n;
    if (k == K_MAP) {
        f->npairs = h[0].n;
        f->mstart[0] = c->cur[0];
        f->mstart[1] = c->cur[1];
    }
    return 0;
}

/* Compares the items on both sides. Sets *ord when they differ; when they are
 * compound and their headers are equal, pushes a frame for their contents. */
static int cmp_items(cmpctx_t *c, const int virt[2], int exact, int *ord)
{
    int ka = item_class(c, 0, virt[0]), kb = item_class(c, 1, virt[1]), r;
    const uint8_t **pa = &c->cur[0], **pb = &c->cur[1];
    const uint8_t *ea = c->end[0], *eb = c->end[1];
    *ord = 0;
    if (ka < 0 || kb < 0)
        return c->cur[ka < 0 ? 0 : 1] >= c->end[ka < 0 ? 0 : 1] ? CNB_ETRUNC : CNB_EMALFORMED;
    if (ka != kb) {
        *ord = ka < kb ? -1 : 1;
        return 0;
    }
    switch (ka) {
    case K_NUMBER: {
        num_t x, y;
        if (is_small_int(*pa, virt[0]) && is_small_int(*pb, virt[1])) {
            int64_t i, j;
            if ((r = rd_small_int(pa, ea, virt[0], &i)) || (r = rd_small_int(pb, eb, virt[1], &j)))
                return r;
            *ord = (i > j) - (i < j);
            return 0;
        }
        if ((r = rd_num(pa, ea, virt[0], &x)) || (r = rd_num(pb, eb, virt[1], &y)))
            return r;
        *ord = cmp_nums(&x, &y, exact);
        return 0;
    }
    case K_ATOM: {
        atomv_t x, y;
        if ((r = rd_atom(pa, ea, &x)) || (r = rd_atom(pb, eb, &y)))
            return r;
        *ord = cmp_atoms(&x, &y);
        return 0;
    }
    case K_REF:
    case K_PORT:
    case K_PID:
    case K_BITS: {
        leaf_t x, y;
        if ((r = rd_leaf(pa, ea, ka, &x)) || (r = rd_leaf(pb, eb, ka, &y)))
            return r;
        *ord = cmp_leaves(c, ka, &x, &y);
        return 0;
    }
    case K_FUN:
        return cmp_funs(c, exact, ord);
    case K_NIL:
        if (virt[0] == VIRT_REAL)
            *pa += 1;
        if (virt[1] == VIRT_REAL)
            *pb += 1;
        return 0;
    default: /* K_TUPLE, K_MAP, K_LIST */
        return open_pair(c, ka, exact, ord);
    }
}

static int skip_both(cmpctx_t *c)
{
    int r;
    for (int s = 0; s < 2; s++)
        if ((r = cnb__term_skip(c->cur[s], c->end[s], &c->cur[s])))
            return r;
    return 0;
}

int cnb__term_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen, int exact,
                  const cnb_allocator_t *alloc, int *order, int *tie)
{
    cmpctx_t c;
    int virt[2] = {VIRT_REAL, VIRT_REAL}, ex = exact != 0, ord = 0, r = 0;
    kframe_t *f;

    c.cur[0] = a;
    c.cur[1] = b;
    c.end[0] = a + alen;
    c.end[1] = b + blen;
    c.st = c.inl;
    c.cap = K_INLINE_FRAMES;
    c.top = 0;
    c.alloc = alloc;
    c.tie = 0;
    *order = 0;
    if (tie)
        *tie = 0;

compare:
    if ((r = cmp_items(&c, virt, ex, &ord)) || ord)
        goto out;
next:
    if (c.top == 0) {
        if (c.cur[0] != c.end[0] || c.cur[1] != c.end[1])
            r = CNB_EMALFORMED;
        goto out;
    }
    f = &c.st[c.top - 1];
    virt[0] = virt[1] = VIRT_REAL;
    switch (f->kind) {
    case F_SEQ:
        if (f->n == 0)
            break;
        f->n--;
        ex = f->exact;
        goto compare;
    case F_MAPK:
        /* Skip the values to reach the next keys (not after the last key: the
         * value phase starts again from the first pair). */
        if (f->pending && f->n) {
            if ((r = skip_both(&c)))
                goto out;
        }
        f->pending = 0;
        if (f->n == 0) {
            /* Every key is equal: compare the values, in key order. */
            f->kind = F_MAPV;
            f->n = f->npairs;
            c.cur[0] = f->mstart[0];
            c.cur[1] = f->mstart[1];
            goto next;
        }
        f->n--;
        f->pending = 1;
        ex = 1;
        goto compare;
    case F_MAPV:
        if (f->n == 0)
            break;
        f->n--;
        if ((r = skip_both(&c)))
            goto out;
        ex = f->exact;
        goto compare;
    case F_LIST: {
        if (f->tail_done)
            break;
        int za = f->rem[0] == 0, zb = f->rem[1] == 0;
        if (!za && !zb) {
            for (int s = 0; s < 2; s++) {
                f->rem[s]--;
                if (f->is_str[s])
                    virt[s] = *c.cur[s]++;
            }
            ex = f->exact;
            goto compare;
        }
        if (za && zb) {
            f->tail_done = 1;
            for (int s = 0; s < 2; s++)
                if (f->is_str[s])
                    virt[s] = VIRT_NIL;
            ex = f->exact;
            goto compare;
        }
        /* One list ended: its tail (never a list in canonical form) against
         * the rest of the other, which is a non-empty list. */
        int s = za ? 0 : 1;
        int k = f->is_str[s] ? K_NIL : item_class(&c, s, VIRT_REAL);
        if (k < 0) {
            r = CNB_EMALFORMED;
            goto out;
        }
        ord = k < K_LIST ? -1 : 1;
        if (!za)
            ord = -ord;
        goto out;
    }
    }
    c.top--;
    goto next;

out:
    if (c.st != c.inl)
        cnb_free(alloc, c.st);
    if (r)
        return r;
    *order = ord;
    if (tie && !ord)
        *tie = c.tie;
    return 0;
}

/* ---- skipping ------------------------------------------------------------- */

int cnb__term_skip(const uint8_t *p, const uint8_t *end, const uint8_t **next)
{
    uint64_t remaining = 1;
    cnb__term_head_t h;
    int r;
    while (remaining) {
        if ((r = cnb__term_head(p, end, &h)))
            return r;
        remaining += h.children - 1;
        p += h.size;
    }
    *next = p;
    return 0;
}
