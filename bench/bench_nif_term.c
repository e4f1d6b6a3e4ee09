/* bench_nif_term: the NIF's term fast paths that read ETF (nif/cnr_term.c:
 * cnr_decode, turning canonical keys and values back into terms, and
 * cnr_pid_get) outside the VM. It links the NIF's own object with stand-ins
 * for the enif_* calls it makes, which do next to nothing, so the figures are
 * the cost of the reading alone (the VM's share is in `nif.*` of make bench).
 * Driven by bench_paths.h (callgrind per path, or `nif_term_paths.<name>_ns`
 * lines for scripts/run-bench); docs/BENCHMARKS.md, "Term reader cost". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_paths.h"
#include "cnr.h"

struct cnr_atoms cnr_atom;
struct cnr_global cnr_g;

/* ---- stand-ins for the VM ------------------------------------------------ */

static ERL_NIF_TERM next_term = 8;
static unsigned char bin_space[256];

/* What enif_term_to_binary gives for the pid: <0.91.0> of a@host12. */
static const unsigned char pid_ext[] = {131, 88, 119, 8, 'a', '@', 'h', 'o', 's', 't', '1', '2',
                                        0,   0,  0,   91, 0,  0,   0,   0,   100, 200, 1,   2};

ERL_NIF_TERM enif_make_int(ErlNifEnv *env, int i)
{
    return (ERL_NIF_TERM)i << 4 | 0xf;
}

ERL_NIF_TERM enif_make_double(ErlNifEnv *env, double d)
{
    return next_term += 8;
}

int enif_make_existing_atom_len(ErlNifEnv *env, const char *name, size_t len, ERL_NIF_TERM *atom,
                                ErlNifCharEncoding enc)
{
    *atom = (ERL_NIF_TERM)len << 6 | 0xb;
    return 1;
}

unsigned char *enif_make_new_binary(ErlNifEnv *env, size_t size, ERL_NIF_TERM *termp)
{
    *termp = next_term += 8;
    return size <= sizeof bin_space ? bin_space : NULL;
}

ERL_NIF_TERM enif_make_list(ErlNifEnv *env, unsigned cnt, ...)
{
    return 0x3b; /* [] */
}

ERL_NIF_TERM enif_make_list_cell(ErlNifEnv *env, ERL_NIF_TERM car, ERL_NIF_TERM cdr)
{
    return next_term += 8;
}

ERL_NIF_TERM enif_make_tuple_from_array(ErlNifEnv *env, const ERL_NIF_TERM arr[], unsigned cnt)
{
    return next_term += 8;
}

ERL_NIF_TERM enif_make_tuple(ErlNifEnv *env, unsigned cnt, ...)
{
    return next_term += 8;
}

int enif_is_pid(ErlNifEnv *env, ERL_NIF_TERM term)
{
    return 1;
}

int enif_term_to_binary(ErlNifEnv *env, ERL_NIF_TERM term, ErlNifBinary *bin)
{
    memset(bin, 0, sizeof *bin);
    bin->size = sizeof pid_ext;
    bin->data = (unsigned char *)pid_ext;
    return 1;
}

void enif_release_binary(ErlNifBinary *bin)
{
}

size_t enif_binary_to_term(ErlNifEnv *env, const unsigned char *data, size_t sz, ERL_NIF_TERM *term,
                           unsigned int opts)
{
    fprintf(stderr, "bench_nif_term: a term left the fast path\n");
    exit(1);
}

/* Not reached by the paths measured here (cnr_canon, pids made). */
#define UNUSED_STUB(ret, name, args) \
    ret name args                    \
    {                                \
        abort();                     \
    }
UNUSED_STUB(void *, enif_alloc, (size_t size))
UNUSED_STUB(void, enif_free, (void *ptr))
UNUSED_STUB(int, enif_get_atom, (ErlNifEnv * e, ERL_NIF_TERM a, char *b, unsigned l, ErlNifCharEncoding c))
UNUSED_STUB(int, enif_get_double, (ErlNifEnv * e, ERL_NIF_TERM t, double *d))
UNUSED_STUB(int, enif_get_int, (ErlNifEnv * e, ERL_NIF_TERM t, int *i))
UNUSED_STUB(int, enif_get_list_cell, (ErlNifEnv * e, ERL_NIF_TERM t, ERL_NIF_TERM *h, ERL_NIF_TERM *tl))
UNUSED_STUB(int, enif_get_list_length, (ErlNifEnv * e, ERL_NIF_TERM t, unsigned *l))
UNUSED_STUB(int, enif_get_local_pid, (ErlNifEnv * e, ERL_NIF_TERM t, ErlNifPid *p))
UNUSED_STUB(int, enif_get_long, (ErlNifEnv * e, ERL_NIF_TERM t, long *i))
UNUSED_STUB(int, enif_get_tuple, (ErlNifEnv * e, ERL_NIF_TERM t, int *a, const ERL_NIF_TERM **el))
UNUSED_STUB(int, enif_get_ulong, (ErlNifEnv * e, ERL_NIF_TERM t, unsigned long *i))
UNUSED_STUB(int, enif_inspect_binary, (ErlNifEnv * e, ERL_NIF_TERM t, ErlNifBinary *b))
UNUSED_STUB(int, enif_is_binary, (ErlNifEnv * e, ERL_NIF_TERM t))
UNUSED_STUB(int, enif_is_empty_list, (ErlNifEnv * e, ERL_NIF_TERM t))
UNUSED_STUB(ErlNifTermType, enif_term_type, (ErlNifEnv * e, ERL_NIF_TERM t))

/* ---- the paths ------------------------------------------------------------- */

#define BYTES(...) {sizeof((const unsigned char[]){__VA_ARGS__}), (const unsigned char[]){__VA_ARGS__}}

static const struct {
    size_t len;
    const unsigned char *p;
} decoded[] = {
    /* Keys as the registry stores them, and a value. */
    BYTES(131, 119, 5, 'c', 'a', 'c', 'h', 'e'),
    BYTES(131, 104, 2, 119, 5, 'c', 'a', 'c', 'h', 'e', 97, 42),
    BYTES(131, 109, 0, 0, 0, 10, 'u', 's', 'e', 'r', ':', '1', '2', '3', '4', '5'),
    BYTES(131, 98, 0, 1, 226, 64),
    BYTES(131, 104, 2, 119, 4, 'u', 's', 'e', 'r', 104, 2, 119, 7, 's', 'e', 's', 's', 'i', 'o',
          'n', 98, 0, 0, 4, 0),
    BYTES(131, 104, 3, 119, 2, 'o', 'k', 108, 0, 0, 0, 2, 97, 1, 70, 63, 240, 0, 0, 0, 0, 0, 0,
          106, 107, 0, 3, 'a', 'b', 'c'),
};

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static volatile ERL_NIF_TERM sink;

__attribute__((noinline)) static void path_decode(long iters)
{
    for (long k = 0; k < iters; k++)
        for (size_t i = 0; i < N_OF(decoded); i++) {
            ERL_NIF_TERM t;
            if (!cnr_decode(NULL, decoded[i].p, decoded[i].len, &t))
                abort();
            sink += t;
        }
}

__attribute__((noinline)) static void path_pid_get(long iters)
{
    for (long k = 0; k < iters; k++) {
        cnb_pid_t pid;
        if (!cnr_pid_get(NULL, 0x53, &pid) || pid.num != 91)
            abort();
        sink += pid.creation;
    }
}

static const bench_path_t paths[] = {
    {"decode", path_decode, N_OF(decoded)},
    {"pid_get", path_pid_get, 1},
};

int main(int argc, char **argv)
{
    return bench_paths_main("nif_term_paths", paths, N_OF(paths), argc, argv);
}
