/* common.c: error texts, names and atoms, and the default allocator
 * (cnb_common.h). Tests: tests/unit/test_registry_ops.c (the atoms). */
#include "cnb_common.h"

#include <stdlib.h>

const char *cnb_strerror(int err)
{
    switch (err) {
    case 0:
        return "success";
#define CNB__ERR_TEXT(name, code, atom, text) \
    case (code):                        \
        return text;
        CNB_ERRNO_MAP(CNB__ERR_TEXT)
#undef CNB__ERR_TEXT
    default:
        return "unknown error";
    }
}

const char *cnb_errname(int err)
{
    switch (err) {
    case 0:
        return "CNB_OK";
#define CNB__ERR_NAME(name, code, atom, text) \
    case (code):                        \
        return "CNB_" #name;
        CNB_ERRNO_MAP(CNB__ERR_NAME)
#undef CNB__ERR_NAME
    default:
        return "CNB_EUNKNOWN";
    }
}

/* One enumerator per code: their number is the list's length. */
#define CNB__ERR_ONE(name, code, atom, text) CNB__ERR_INDEX_##name,
enum cnb__err_index { CNB_ERRNO_MAP(CNB__ERR_ONE) CNB__ERR_N };
#undef CNB__ERR_ONE
_Static_assert(CNB__ERR_N == CNB_ERRNO_COUNT, "CNB_ERRNO_COUNT is the length of CNB_ERRNO_MAP");

const char *cnb_erratom(int err)
{
    switch (err) {
#define CNB__ERR_ATOM(name, code, atom, text) \
    case (code):                              \
        return #atom;
        CNB_ERRNO_MAP(CNB__ERR_ATOM)
#undef CNB__ERR_ATOM
    default:
        return "unknown";
    }
}

static void *default_alloc(void *ctx, size_t size)
{
    (void)ctx;
    return malloc(size);
}

static void *default_realloc(void *ctx, void *ptr, size_t size)
{
    (void)ctx;
    return realloc(ptr, size);
}

static void default_free(void *ctx, void *ptr)
{
    (void)ctx;
    free(ptr);
}

const cnb_allocator_t cnb_default_allocator = {
    default_alloc, default_realloc, default_free, NULL};

void *cnb_alloc(const cnb_allocator_t *a, size_t size)
{
    if (!a)
        a = &cnb_default_allocator;
    return a->alloc(a->ctx, size ? size : 1);
}

void *cnb_realloc(const cnb_allocator_t *a, void *ptr, size_t size)
{
    if (!a)
        a = &cnb_default_allocator;
    return a->realloc(a->ctx, ptr, size ? size : 1);
}

void cnb_free(const cnb_allocator_t *a, void *ptr)
{
    if (!ptr)
        return;
    if (!a)
        a = &cnb_default_allocator;
    a->free(a->ctx, ptr);
}
