/* term_canon.c: the general path of cnb_term_canonical: decodes any valid ETF
 * of one term and writes the bytes term_to_binary(T, [{minor_version, 2},
 * deterministic]) gives on OTP 25. Iterative (an explicit frame stack), so the
 * C stack use does not depend on the nesting of the input. Headers come from
 * core's term reader (term_read.h); leaves are written by term_canon_emit.c;
 * this file keeps the containers: frames, lists, maps and their key order.
 * Tests: tests/unit/test_term.c, tests/integration/term_prop_tests.erl. */
#include "term_int.h"

enum { C_TUPLE, C_LIST, C_MAP, C_FUN };

typedef struct cframe {
    uint8_t kind;
    uint8_t all_bytes; /* C_LIST: every element so far came out as SMALL_INTEGER_EXT */
    uint8_t in_tail;   /* C_LIST: an improper tail is being written */
    uint8_t has_item;  /* C_LIST: an element was started at item_start */
    uint64_t remaining; /* items left in the current input segment */
    uint64_t count;     /* C_LIST: elements written; C_MAP: pairs */
    size_t out_start;   /* output offset of the header (C_FUN: of the Size field) */
    size_t item_start;
    size_t base; /* C_MAP: index of its first item offset in offs */
} cframe_t;

#define C_INLINE_FRAMES 32

typedef struct canon {
    const uint8_t *end;
    cnb__obuf_t *o;
    const cnb__term_limits_t *lim;
    const cnb_allocator_t *alloc;
    cframe_t *st;
    size_t cap, top;
    size_t *offs; /* output offsets of every key and value start of open maps */
    size_t noffs, offs_cap;
    cframe_t inl[C_INLINE_FRAMES];
} canon_t;

/* ---- frames, maps and lists ---------------------------------------------- */

static int push(canon_t *c, uint8_t kind, uint64_t remaining)
{
    if (c->top >= c->lim->max_depth)
        return CNB_EDEPTH;
    if (c->top == c->cap) {
        void *st = c->st;
        if (cnb__stack_grow(&st, &c->cap, c->inl, sizeof(*c->st), c->alloc))
            return CNB_ENOMEM;
        c->st = st;
    }
    cframe_t *f = &c->st[c->top++];
    memset(f, 0, sizeof(*f));
    f->kind = kind;
    f->remaining = remaining;
    f->out_start = c->o->len;
    return 0;
}

static int push_off(canon_t *c, size_t off)
{
    /* !offs too: noffs is 0 then, which clang's analyzer cannot see. */
    if (!c->offs || c->noffs == c->offs_cap) {
        size_t ncap = c->offs_cap ? c->offs_cap * 2 : 64;
        size_t *n = cnb_realloc(c->alloc, c->offs, ncap * sizeof(*n));
        if (!n)
            return CNB_ENOMEM;
        c->offs = n;
        c->offs_cap = ncap;
    }
    c->offs[c->noffs++] = off;
    return 0;
}

typedef struct keysort {
    const uint8_t *buf;
    const size_t *offs; /* key i is [offs[2i], offs[2i+1]) */
    const cnb_allocator_t *alloc;
    int err;
    int saw_equal; /* two keys that are one key to OTP 25 */
    int saw_tie;   /* two keys equal in term order, distinct only in a large map */
} keysort_t;

/* Map key order; keys equal in it but different as terms (see
 * cnb__term_cmp's tie) come in a fixed order, shorter reference first. OTP 25
 * writes such keys in hash order, which this cannot reproduce. */
static int key_cmp(keysort_t *ks, size_t i, size_t j)
{
    int order = 0, tie = 0, r;
    /* offs is never NULL here: each of a map's items pushed its offset
     * (next_item) before finish_map runs; the analyzer loses that. */
    r = cnb__term_cmp(ks->buf + ks->offs[2 * i], // NOLINT(clang-analyzer-core.NullDereference)
                      ks->offs[2 * i + 1] - ks->offs[2 * i],
                      ks->buf + ks->offs[2 * j], ks->offs[2 * j + 1] - ks->offs[2 * j], 1,
                      ks->alloc, &order, &tie);
    if (r < 0 && !ks->err)
        ks->err = r;
    if (order == 0) {
        if (tie == 0)
            ks->saw_equal = 1;
        else
            ks->saw_tie = 1;
        order = tie;
    }
    return order;
}

/* Bottom-up merge sort of idx[0..n) by key; tmp has room for n. Any two keys
 * that end up next to each other were compared, so an equal pair (a duplicate
 * key) always sets saw_equal. */
static size_t *merge_sort(keysort_t *ks, size_t *idx, size_t *tmp, size_t n)
{
    for (size_t width = 1; width < n; width *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * width) {
            size_t mid = lo + width < n ? lo + width : n;
            size_t hi = lo + 2 * width < n ? lo + 2 * width : n;
            size_t a = lo, b = mid, k = lo;
            while (a < mid && b < hi)
                tmp[k++] = key_cmp(ks, idx[b], idx[a]) < 0 ? idx[b++] : idx[a++];
            while (a < mid)
                tmp[k++] = idx[a++];
            while (b < hi)
                tmp[k++] = idx[b++];
        }
        size_t *sw = idx;
        idx = tmp;
        tmp = sw;
    }
    return idx;
}

/* All pairs of the map on top are written; put them in key order. */
static int finish_map(canon_t *c, cframe_t *f)
{
    cnb__obuf_t *o = c->o;
    size_t n = f->count, *offs = c->offs + f->base, i;
    keysort_t ks = {o->buf, offs, c->alloc, 0, 0, 0};
    int sorted = 1, r = 0;
    size_t *idx = NULL;
    uint8_t *copy = NULL;

    for (i = 1; i < n && sorted; i++) {
        int order = key_cmp(&ks, i - 1, i);
        if (ks.err)
            return ks.err;
        if (order > 0)
            sorted = 0;
    }
    /* Duplicate keys: binary_to_term rejects them. */
    if (ks.saw_equal || (ks.saw_tie && n <= CNB__FLATMAP_MAX))
        return CNB_EMALFORMED;
    if (!sorted) {
        if (n > SIZE_MAX / (2 * sizeof(size_t)))
            return CNB_ENOMEM;
        idx = cnb_alloc(c->alloc, 2 * n * sizeof(size_t));
        if (!idx)
            return CNB_ENOMEM;
        for (i = 0; i < n; i++)
            idx[i] = i;
        size_t *res = merge_sort(&ks, idx, idx + n, n);
        if (ks.err) {
            r = ks.err;
            goto out;
        }
        if (ks.saw_equal || (ks.saw_tie && n <= CNB__FLATMAP_MAX)) {
            r = CNB_EMALFORMED;
            goto out;
        }
        size_t body = offs[0], blen = o->len - body;
        copy = cnb_alloc(c->alloc, blen);
        if (!copy) {
            r = CNB_ENOMEM;
            goto out;
        }
        memcpy(copy, o->buf + body, blen);
        uint8_t *w = o->buf + body;
        for (i = 0; i < n; i++) {
            size_t k = res[i];
            size_t s = offs[2 * k], e = k + 1 < n ? offs[2 * k + 2] : o->len;
            memcpy(w, copy + (s - body), e - s);
            w += e - s;
        }
    }
out:
    cnb_free(c->alloc, idx);
    cnb_free(c->alloc, copy);
    c->noffs = f->base;
    return r;
}

/* The list on top is complete: patch its count, fold it to STRING_EXT, or
 * drop the header of an empty prefix (LIST_EXT of 0 elements is its tail). */
static int finish_list(canon_t *c, cframe_t *f, int proper)
{
    cnb__obuf_t *o = c->o;
    size_t s = f->out_start, n;
    uint8_t *b = o->buf;
    int r;
    if (f->count > UINT32_MAX)
        return CNB_ETOOBIG;
    n = (size_t)f->count;
    if (n == 0) {
        if (proper) {
            o->len = s;
            b[o->len++] = CNB__TAG_NIL;
        } else {
            memmove(b + s, b + s + 5, o->len - s - 5);
            o->len -= 5;
        }
        return 0;
    }
    if (proper && f->all_bytes && n <= CNB__MAX_STRING_EXT) {
        b[s] = CNB__TAG_STRING;
        cnb__put16(b + s + 1, (uint32_t)n);
        for (size_t i = 0; i < n; i++)
            b[s + 3 + i] = b[s + 5 + 2 * i + 1];
        o->len = s + 3 + n;
        return 0;
    }
    cnb__put32(b + s + 1, (uint32_t)n);
    if (proper) {
        if ((r = cnb__obuf_reserve(o, 1)))
            return r;
        o->buf[o->len++] = CNB__TAG_NIL;
    }
    return 0;
}

/* ---- the walk ------------------------------------------------------------ */

static inline uint8_t *wr(cnb__obuf_t *o, size_t n)
{
    uint8_t *w = o->buf + o->len;
    o->len += n;
    return w;
}

/* A tuple's header (SMALL_TUPLE_EXT up to 255 elements) and its frame. */
static int open_tuple(canon_t *c, const uint8_t *p, const cnb__term_head_t *h)
{
    cnb__obuf_t *o = c->o;
    uint64_t n = h->n;
    uint8_t *w;
    int r;
    if ((r = cnb__obuf_reserve(o, 5)))
        return r;
    if (n <= 255) {
        w = wr(o, 2);
        w[0] = CNB__TAG_SMALL_TUPLE;
        w[1] = (uint8_t)n;
    } else {
        w = wr(o, 5);
        w[0] = CNB__TAG_LARGE_TUPLE;
        cnb__put32(w + 1, (uint32_t)n);
    }
    if (n == 0)
        return 0;
    if (!cnb__term_children_fit(h, p, c->end))
        return CNB_ETRUNC;
    return push(c, C_TUPLE, n);
}

/* A list's frame and header (its count patched by finish_list). */
static int open_list(canon_t *c, const uint8_t *p, const cnb__term_head_t *h)
{
    cnb__obuf_t *o = c->o;
    int r;
    if (h->n > (size_t)(c->end - p) - h->size)
        return CNB_ETRUNC;
    if ((r = push(c, C_LIST, h->n)))
        return r;
    c->st[c->top - 1].all_bytes = 1;
    if ((r = cnb__obuf_reserve(o, 5)))
        return r;
    wr(o, 5)[0] = CNB__TAG_LIST;
    return 0;
}

/* A map's header and frame; its pairs are sorted by finish_map. */
static int open_map(canon_t *c, const uint8_t *p, const cnb__term_head_t *h)
{
    cnb__obuf_t *o = c->o;
    int r;
    if ((r = cnb__obuf_reserve(o, 5)))
        return r;
    memcpy(wr(o, 5), p, 5);
    if (h->n == 0)
        return 0;
    if (!cnb__term_children_fit(h, p, c->end))
        return CNB_ETRUNC;
    if ((r = push(c, C_MAP, h->children)))
        return r;
    c->st[c->top - 1].count = h->n;
    c->st[c->top - 1].base = c->noffs;
    return 0;
}

/* Reads the term at *pp and writes it, or the header of a container whose
 * items come next (a frame is pushed for them). */
static int emit_one(canon_t *c, const uint8_t **pp)
{
    const uint8_t *p = *pp;
    cnb__term_head_t h;
    int r;
    if ((r = cnb__term_head(p, c->end, &h)))
        return r;
    switch (h.tag) {
    /* The commonest leaves first, without the call to cnb__canon_leaf:
     * those already canonical are copied. */
    case CNB__TAG_INTEGER:
        if (cnb__get32(h.data) <= 255) { /* 0..255: a SMALL_INTEGER_EXT */
            uint8_t *w;
            if ((r = cnb__obuf_reserve(c->o, 2)))
                return r;
            w = wr(c->o, 2);
            w[0] = CNB__TAG_SMALL_INTEGER;
            w[1] = h.data[3];
            break;
        }
        /* fall through */
    case CNB__TAG_SMALL_INTEGER:
    case CNB__TAG_BINARY:
    case CNB__TAG_NIL:
        if ((r = cnb__obuf_reserve(c->o, h.size)))
            return r;
        memcpy(wr(c->o, h.size), p, h.size);
        break;
    case CNB__TAG_ATOM:
    case CNB__TAG_SMALL_ATOM:
    case CNB__TAG_ATOM_UTF8:
    case CNB__TAG_SMALL_ATOM_UTF8:
        r = cnb__canon_atom(c->o, &h);
        break;
    case CNB__TAG_SMALL_TUPLE:
    case CNB__TAG_LARGE_TUPLE:
        r = open_tuple(c, p, &h);
        break;
    case CNB__TAG_LIST:
        r = open_list(c, p, &h);
        break;
    case CNB__TAG_MAP:
        r = open_map(c, p, &h);
        break;
    case CNB__TAG_EXPORT:
        return cnb__canon_export(c->o, pp, c->end);
    case CNB__TAG_NEW_FUN: {
        size_t size_at;
        if ((r = cnb__canon_fun(c->o, pp, c->end, &h, &size_at)) ||
            (r = push(c, C_FUN, h.n)))
            return r;
        c->st[c->top - 1].out_start = size_at;
        return 0;
    }
    default:
        return cnb__canon_leaf(c->o, pp, c->end, &h);
    }
    *pp = p + h.size;
    return r;
}

/* After an element of the list f: at its end, a LIST_EXT tail extends it, a
 * STRING_EXT tail is unfolded into it, NIL closes it, anything else is its
 * improper tail. Returns 1 when a term is to be read at *pp next, 0 when f
 * is complete (to be popped), or a negative code. */
static int list_next(canon_t *c, cframe_t *f, const uint8_t **pp)
{
    cnb__obuf_t *o = c->o;
    const uint8_t *p = *pp, *end = c->end;
    cnb__term_head_t h;
    int r;
    if (f->has_item) {
        if (o->len - f->item_start != 2 || o->buf[f->item_start] != CNB__TAG_SMALL_INTEGER)
            f->all_bytes = 0;
        f->has_item = 0;
    }
    if (f->in_tail)
        return finish_list(c, f, 0);
    for (;;) {
        if (f->remaining) {
            f->remaining--;
            f->count++;
            f->has_item = 1;
            f->item_start = o->len;
            return 1;
        }
        if (p >= end)
            return CNB_ETRUNC;
        if (p[0] != CNB__TAG_LIST)
            break;
        /* A list whose tail is a list: one longer list. */
        if ((r = cnb__term_head(p, end, &h)))
            return r;
        p += h.size;
        if (h.n > (size_t)(end - p))
            return CNB_ETRUNC;
        f->remaining = h.n;
        *pp = p;
    }
    if (p[0] == CNB__TAG_STRING) {
        if ((r = cnb__term_head(p, end, &h)))
            return r;
        size_t n = (size_t)h.n;
        if ((r = cnb__obuf_reserve(o, 2 * n)))
            return r;
        uint8_t *w = wr(o, 2 * n);
        for (size_t i = 0; i < n; i++) {
            w[2 * i] = CNB__TAG_SMALL_INTEGER;
            w[2 * i + 1] = h.data[i];
        }
        f->count += n;
        *pp = p + h.size;
        return finish_list(c, f, 1);
    }
    if (p[0] == CNB__TAG_NIL) {
        *pp = p + 1;
        return finish_list(c, f, 1);
    }
    f->in_tail = 1;
    return 1;
}

/* After a term: the frame on top takes its next item, or is complete and
 * closed (a map sorted, a fun's Size patched, a list finished) and popped.
 * Returns 1 when a term is to be read at *pp next, 0 when the outermost term
 * is complete and the input ends there, or a negative code. */
static int next_item(canon_t *c, const uint8_t **pp)
{
    cnb__obuf_t *o = c->o;
    int r;
    for (; c->top > 0; c->top--) {
        cframe_t *f = &c->st[c->top - 1];
        switch (f->kind) {
        case C_TUPLE:
        case C_FUN:
            if (f->remaining) {
                f->remaining--;
                return 1;
            }
            if (f->kind == C_FUN) {
                if (o->len - f->out_start > UINT32_MAX)
                    return CNB_ETOOBIG;
                cnb__put32(o->buf + f->out_start, (uint32_t)(o->len - f->out_start));
            }
            break;
        case C_MAP:
            if (f->remaining) {
                f->remaining--;
                if ((r = push_off(c, o->len)))
                    return r;
                return 1;
            }
            if ((r = finish_map(c, f)))
                return r;
            break;
        case C_LIST:
            if ((r = list_next(c, f, pp)))
                return r;
            break;
        }
    }
    return *pp == c->end ? 0 : CNB_EMALFORMED;
}

static int run(canon_t *c, const uint8_t *p)
{
    int r;
    do {
        if ((r = emit_one(c, &p)))
            return r;
    } while ((r = next_item(c, &p)) > 0);
    return r;
}

int cnb__term_canon_slow(const uint8_t *p, const uint8_t *end, const cnb__term_limits_t *lim,
                         cnb__obuf_t *o)
{
    canon_t c;
    int r;
    c.end = end;
    c.o = o;
    c.lim = lim;
    c.alloc = lim->alloc;
    c.st = c.inl;
    c.cap = C_INLINE_FRAMES;
    c.top = 0;
    c.offs = NULL;
    c.noffs = c.offs_cap = 0;
    r = run(&c, p);
    if (c.st != c.inl)
        cnb_free(c.alloc, c.st);
    cnb_free(c.alloc, c.offs);
    return r;
}
