/* term_compare.c: Erlang term order (OTP 25 `<`, `==`, and the exact order of
 * map keys) on canonical ETF, walking both terms side by side with an explicit
 * stack. Tests: tests/unit/test_term.c, tests/integration/term_prop_tests.erl. */
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
    const uint8_t *p = *pp;
    size_t avail = (size_t)(end - p);
    if (avail < 2)
        return CNB_ETRUNC;
    if (p[0] == CNB__TAG_SMALL_ATOM_UTF8) {
        a->n = p[1];
        a->s = p + 2;
    } else if (p[0] == CNB__TAG_ATOM_UTF8) {
        if (avail < 3)
            return CNB_ETRUNC;
        a->n = cnb__get16(p + 1);
        a->s = p + 3;
    } else {
        return CNB_EMALFORMED;
    }
    if ((size_t)(end - a->s) < a->n)
        return CNB_ETRUNC;
    *pp = a->s + a->n;
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
    int neg;
    const uint8_t *dig; /* little-endian magnitude, no high zero bytes */
    size_t n;
    uint8_t tmp[8];
} num_t;

static void num_from_u32(num_t *v, int neg, uint32_t m)
{
    v->is_float = 0;
    v->neg = neg && m != 0;
    for (int i = 0; i < 4; i++)
        v->tmp[i] = (uint8_t)(m >> (8 * i));
    v->dig = v->tmp;
    v->n = 4;
    while (v->n && v->dig[v->n - 1] == 0)
        v->n--;
}

/* Reads a canonical number at *pp (or the virtual byte virt). */
static int rd_num(const uint8_t **pp, const uint8_t *end, int virt, num_t *v)
{
    const uint8_t *p = *pp;
    size_t avail = (size_t)(end - p), len;
    if (virt >= 0) {
        num_from_u32(v, 0, (uint32_t)virt);
        return 0;
    }
    if (avail < 1)
        return CNB_ETRUNC;
    switch (p[0]) {
    case CNB__TAG_SMALL_INTEGER:
        if (avail < 2)
            return CNB_ETRUNC;
        num_from_u32(v, 0, p[1]);
        len = 2;
        break;
    case CNB__TAG_INTEGER: {
        if (avail < 5)
            return CNB_ETRUNC;
        int32_t s = (int32_t)cnb__get32(p + 1);
        num_from_u32(v, s < 0, s < 0 ? 0u - (uint32_t)s : (uint32_t)s);
        len = 5;
        break;
    }
    case CNB__TAG_SMALL_BIG:
    case CNB__TAG_LARGE_BIG: {
        size_t hl = p[0] == CNB__TAG_SMALL_BIG ? 3 : 6;
        if (avail < hl)
            return CNB_ETRUNC;
        v->is_float = 0;
        v->n = hl == 3 ? p[1] : cnb__get32(p + 1);
        v->neg = p[hl - 1] != 0;
        v->dig = p + hl;
        if (avail - hl < v->n)
            return CNB_ETRUNC;
        len = hl + v->n;
        while (v->n && v->dig[v->n - 1] == 0)
            v->n--;
        if (v->n == 0)
            v->neg = 0;
        break;
    }
    case CNB__TAG_NEW_FLOAT: {
        if (avail < 9)
            return CNB_ETRUNC;
        uint64_t bits = cnb__get64(p + 1);
        v->is_float = 1;
        memcpy(&v->d, &bits, 8);
        len = 9;
        break;
    }
    default:
        return CNB_EMALFORMED;
    }
    *pp = p + len;
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

static int cmp_ints(const num_t *a, const num_t *b)
{
    if (a->neg != b->neg)
        return a->neg ? -1 : 1;
    int c = cmp_mag(a->dig, a->n, b->dig, b->n);
    return a->neg ? -c : c;
}

/* sign(I - d), exactly, for an integer I and a finite double d. */
static int cmp_int_float(const num_t *i, double d)
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
        return cmp_ints(a, b);
    if (exact) /* map key order: every integer before every float */
        return a->is_float ? 1 : -1;
    return a->is_float ? -cmp_int_float(b, a->d) : cmp_int_float(a, b->d);
}

static int cmp_u64(uint64_t a, uint64_t b)
{
    return (a > b) - (a < b);
}

/* NEW_PID_EXT: ordered by serial, number, node name, creation. */
static int cmp_pids(const uint8_t **pa, const uint8_t *ea, const uint8_t **pb,
                    const uint8_t *eb, int *ord)
{
    atomv_t na, nb;
    const uint8_t *a = *pa + 1, *b = *pb + 1;
    int r;
    if ((r = rd_atom(&a, ea, &na)) || (r = rd_atom(&b, eb, &nb)))
        return r;
    if ((size_t)(ea - a) < 12 || (size_t)(eb - b) < 12)
        return CNB_ETRUNC;
    int c = cmp_u64(cnb__get32(a + 4), cnb__get32(b + 4));
    if (!c)
        c = cmp_u64(cnb__get32(a), cnb__get32(b));
    if (!c)
        c = cmp_atoms(&na, &nb);
    if (!c)
        c = cmp_u64(cnb__get32(a + 8), cnb__get32(b + 8));
    *ord = c;
    *pa = a + 12;
    *pb = b + 12;
    return 0;
}

/* NEW_PORT_EXT/V4_PORT_EXT: node name, creation, then number. */
static int rd_port(const uint8_t **pp, const uint8_t *end, atomv_t *node, uint64_t *id,
                   uint32_t *cre)
{
    const uint8_t *p = *pp + 1;
    int v4 = **pp == CNB__TAG_V4_PORT, r;
    if ((r = rd_atom(&p, end, node)))
        return r;
    if ((size_t)(end - p) < (v4 ? 12u : 8u))
        return CNB_ETRUNC;
    *id = v4 ? cnb__get64(p) : cnb__get32(p);
    p += v4 ? 8 : 4;
    *cre = cnb__get32(p);
    *pp = p + 4;
    return 0;
}

/* NEWER_REFERENCE_EXT: node name, creation, then the words as one number with
 * the last word most significant (missing words count as zero). */
static int rd_ref(const uint8_t **pp, const uint8_t *end, atomv_t *node, uint32_t *cre,
                  const uint8_t **words, size_t *nw)
{
    const uint8_t *p = *pp + 1;
    int r;
    if ((size_t)(end - p) < 2)
        return CNB_ETRUNC;
    *nw = cnb__get16(p);
    p += 2;
    if ((r = rd_atom(&p, end, node)))
        return r;
    if ((size_t)(end - p) < 4 + 4 * *nw)
        return CNB_ETRUNC;
    *cre = cnb__get32(p);
    *words = p + 4;
    *pp = p + 4 + 4 * *nw;
    return 0;
}

/* Bitstrings: the common prefix of bits, then the bit length. */
static int rd_bits(const uint8_t **pp, const uint8_t *end, const uint8_t **data,
                   uint64_t *nbits)
{
    const uint8_t *p = *pp;
    size_t avail = (size_t)(end - p), n;
    if (p[0] == CNB__TAG_BINARY) {
        if (avail < 5)
            return CNB_ETRUNC;
        n = cnb__get32(p + 1);
        if (avail - 5 < n)
            return CNB_ETRUNC;
        *data = p + 5;
        *nbits = (uint64_t)n * 8;
        *pp = p + 5 + n;
    } else {
        if (avail < 6)
            return CNB_ETRUNC;
        n = cnb__get32(p + 1);
        if (avail - 6 < n)
            return CNB_ETRUNC;
        if (n == 0 || p[5] == 0 || p[5] > 8)
            return CNB_EMALFORMED;
        *data = p + 6;
        *nbits = (uint64_t)(n - 1) * 8 + p[5];
        *pp = p + 6 + n;
    }
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
    int r;
    num_t oi;
    if ((size_t)(end - p) < 30)
        return CNB_ETRUNC;
    f->index = cnb__get32(p + 22);
    f->nfree = cnb__get32(p + 26);
    p += 30;
    if ((r = rd_atom(&p, end, &f->module)))
        return r;
    if ((r = rd_num(&p, end, VIRT_REAL, &oi)) || (r = rd_num(&p, end, VIRT_REAL, &f->old_uniq)))
        return r;
    if (oi.is_float || f->old_uniq.is_float)
        return CNB_EMALFORMED;
    if ((size_t)(end - p) < 1 || p[0] != CNB__TAG_NEW_PID)
        return CNB_EMALFORMED;
    const uint8_t *after;
    if ((r = cnb__term_skip(p, end, &after)))
        return r;
    f->env = after;
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
    case K_REF: {
        atomv_t na, nb;
        uint32_t ca, cb;
        const uint8_t *wa, *wb;
        size_t la, lb;
        if ((r = rd_ref(pa, ea, &na, &ca, &wa, &la)) || (r = rd_ref(pb, eb, &nb, &cb, &wb, &lb)))
            return r;
        int o = cmp_atoms(&na, &nb);
        if (!o)
            o = cmp_u64(ca, cb);
        for (size_t i = la > lb ? la : lb; !o && i-- > 0;)
            o = cmp_u64(i < la ? cnb__get32(wa + 4 * i) : 0, i < lb ? cnb__get32(wb + 4 * i) : 0);
        if (!o && la != lb && !c->tie)
            c->tie = la < lb ? -1 : 1;
        *ord = o;
        return 0;
    }
    case K_PORT: {
        atomv_t na, nb;
        uint64_t ia, ib;
        uint32_t ca, cb;
        if ((r = rd_port(pa, ea, &na, &ia, &ca)) || (r = rd_port(pb, eb, &nb, &ib, &cb)))
            return r;
        int o = cmp_atoms(&na, &nb);
        if (!o)
            o = cmp_u64(ca, cb);
        if (!o)
            o = cmp_u64(ia, ib);
        *ord = o;
        return 0;
    }
    case K_PID:
        return cmp_pids(pa, ea, pb, eb, ord);
    case K_FUN: {
        int xa = (*pa)[0] == CNB__TAG_EXPORT, xb = (*pb)[0] == CNB__TAG_EXPORT;
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
            o = cmp_ints(&fa.old_uniq, &fb.old_uniq);
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
    case K_TUPLE: {
        uint64_t na, nb;
        const uint8_t *a = *pa, *b = *pb;
        size_t ha = a[0] == CNB__TAG_SMALL_TUPLE ? 2 : 5, hb = b[0] == CNB__TAG_SMALL_TUPLE ? 2 : 5;
        if ((size_t)(ea - a) < ha || (size_t)(eb - b) < hb)
            return CNB_ETRUNC;
        na = ha == 2 ? a[1] : cnb__get32(a + 1);
        nb = hb == 2 ? b[1] : cnb__get32(b + 1);
        *pa = a + ha;
        *pb = b + hb;
        if (na != nb || na == 0) {
            *ord = cmp_u64(na, nb);
            return 0;
        }
        if ((r = push(c, F_SEQ, (uint8_t)exact)))
            return r;
        c->st[c->top - 1].n = na;
        return 0;
    }
    case K_MAP: {
        if ((size_t)(ea - *pa) < 5 || (size_t)(eb - *pb) < 5)
            return CNB_ETRUNC;
        uint64_t na = cnb__get32(*pa + 1), nb = cnb__get32(*pb + 1);
        *pa += 5;
        *pb += 5;
        if (na != nb || na == 0) {
            *ord = cmp_u64(na, nb);
            return 0;
        }
        if ((r = push(c, F_MAPK, (uint8_t)exact)))
            return r;
        kframe_t *f = &c->st[c->top - 1];
        f->n = f->npairs = na;
        f->mstart[0] = *pa;
        f->mstart[1] = *pb;
        return 0;
    }
    case K_NIL:
        if (virt[0] == VIRT_REAL)
            *pa += 1;
        if (virt[1] == VIRT_REAL)
            *pb += 1;
        return 0;
    case K_LIST: {
        if ((r = push(c, F_LIST, (uint8_t)exact)))
            return r;
        kframe_t *f = &c->st[c->top - 1];
        for (int s = 0; s < 2; s++) {
            const uint8_t *p = c->cur[s];
            size_t avail = (size_t)(c->end[s] - p);
            if (p[0] == CNB__TAG_STRING) {
                if (avail < 3)
                    return CNB_ETRUNC;
                f->is_str[s] = 1;
                f->rem[s] = cnb__get16(p + 1);
                if (avail - 3 < f->rem[s])
                    return CNB_ETRUNC;
                c->cur[s] = p + 3;
            } else {
                if (avail < 5)
                    return CNB_ETRUNC;
                f->rem[s] = cnb__get32(p + 1);
                c->cur[s] = p + 5;
            }
        }
        return 0;
    }
    case K_BITS: {
        const uint8_t *da, *db;
        uint64_t la, lb;
        if ((r = rd_bits(pa, ea, &da, &la)) || (r = rd_bits(pb, eb, &db, &lb)))
            return r;
        *ord = cmp_bits(da, la, db, lb);
        return 0;
    }
    }
    return CNB_EMALFORMED;
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
