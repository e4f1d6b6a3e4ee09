/* cnb_common.h: error codes (each with its text and the atom BEAM code sees),
 * cnb_strerror, cnb_erratom and the allocator, shared by every other public
 * header (cnode_bridge.h, cnb_registry.h, cnb_term.h) and by the NIF.
 * Implementation: core/common.c. Tests: tests/unit/test_registry_ops.c (the
 * atoms) and the error-code checks in tests/unit/test_term.c, test_registry.c. */
#ifndef CNB_COMMON_H
#define CNB_COMMON_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every fallible function returns 0 (or a non-negative count/length) on success
 * and one of these negative codes on failure. cnb_strerror() gives the text and
 * cnb_erratom() the atom BEAM code sees ({error, Reason}, the NIF's and the C
 * node's registry worker's alike). The list is one X-macro, so the codes, their
 * atoms and their texts cannot drift apart. */
#define CNB_ERRNO_MAP(X)                                                        \
    X(EINVAL, -1, einval, "invalid argument")                                   \
    X(ENOMEM, -2, enomem, "out of memory")                                      \
    X(EMALFORMED, -3, malformed, "malformed external term format")              \
    X(ETRUNC, -4, truncated, "truncated input")                                 \
    X(EDEPTH, -5, too_deep, "term nesting deeper than the limit")               \
    X(ETOOBIG, -6, too_big, "size over the limit")                              \
    X(EZLIB, -7, zlib, "compressed term could not be inflated")                 \
    X(ENOSPC, -8, no_space, "output buffer too small")                          \
    X(EEXIST, -9, exists, "already exists")                                     \
    X(ENOENT, -10, not_found, "not found")                                      \
    X(EBADFILE, -11, badfile, "file is not a valid segment (bad magic or layout)") \
    X(EVERSION, -12, version, "unsupported version")                            \
    X(ESYS, -13, esys, "system call failed (see errno)")                        \
    X(EPERM, -14, eperm, "permission denied")                                   \
    X(EPROTO, -15, protocol, "protocol error")                                  \
    X(ECOOKIE, -16, bad_cookie, "authentication failed (wrong cookie)")         \
    X(ECLOSED, -17, closed, "connection closed")                                \
    X(ETIMEDOUT, -18, timeout, "timed out")                                     \
    X(EAGAIN, -19, again, "try again")                                          \
    X(ENOPROC, -20, noproc, "no such process")                                  \
    X(ENOCONN, -21, noconnection, "no connection to node")                      \
    X(EBUSY, -22, busy, "busy")                                                 \
    X(ESTATE, -23, bad_state, "operation not valid in this state")              \
    X(ECORRUPT, -24, corrupt, "data structure is corrupt")

/* How many codes the list has: they are -1 .. -CNB_ERRNO_COUNT. */
#define CNB_ERRNO_COUNT 24

enum cnb_errno {
#define CNB_ERRNO_ENUMERATOR(name, code, atom, text) CNB_##name = (code),
    CNB_ERRNO_MAP(CNB_ERRNO_ENUMERATOR)
#undef CNB_ERRNO_ENUMERATOR
};

/* Returns a static, never-NULL text for a code from the list above (or for any
 * other int: "unknown error"). */
const char *cnb_strerror(int err);

/* Returns the symbolic name ("CNB_EINVAL") of a code, or "CNB_EUNKNOWN". */
const char *cnb_errname(int err);

/* Returns the atom's text ("not_found") for a code of the list, or "unknown"
 * for any other int. */
const char *cnb_erratom(int err);

/* An allocator: the C node passes NULL (malloc/realloc/free); the NIF passes one
 * built on enif_alloc. Functions that take an allocator use it for everything
 * they allocate and say who frees what they return. */
typedef struct cnb_allocator {
    void *(*alloc)(void *ctx, size_t size);
    void *(*realloc)(void *ctx, void *ptr, size_t size);
    void (*free)(void *ctx, void *ptr);
    void *ctx;
} cnb_allocator_t;

/* The malloc-based allocator used when NULL is passed. */
extern const cnb_allocator_t cnb_default_allocator;

/* Helpers that accept a NULL allocator (meaning the default). */
void *cnb_alloc(const cnb_allocator_t *a, size_t size);
void *cnb_realloc(const cnb_allocator_t *a, void *ptr, size_t size);
void cnb_free(const cnb_allocator_t *a, void *ptr);

#ifdef __cplusplus
}
#endif
#endif /* CNB_COMMON_H */
