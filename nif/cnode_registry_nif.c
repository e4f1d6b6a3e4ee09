/* cnode_registry_nif.c: the entry point of the cnode_registry NIF (module
 * cnode_registry_nif): atoms (core's error atoms among them), the resource types, load / upgrade /
 * unload, and the function table. The registry resource is in cnr_reg.c, the
 * operations in cnr_ops.c and cnr_scan.c. Tests: tests/integration/nif_tests.erl,
 * tests/integration/exunit/registry_compat_test.exs.
 *
 * Upgrade: a new instance of cnode_registry_nif loads this same library; the
 * static data (atoms, the table of registries by name) is shared, so registries
 * keep working across a code reload. Every instance takes the resource type
 * over. The table is emptied when the last instance is unloaded; registries
 * still referenced elsewhere close when their last reference goes. */
#include <string.h>

#include "cnr.h"

struct cnr_atoms cnr_atom;
ERL_NIF_TERM cnr_err_atom[CNB_ERRNO_COUNT + 1];
struct cnr_global cnr_g;

static void *a_alloc(void *ctx, size_t n)
{
    (void)ctx;
    return enif_alloc(n);
}

static void *a_realloc(void *ctx, void *p, size_t n)
{
    (void)ctx;
    return enif_realloc(p, n);
}

static void a_free(void *ctx, void *p)
{
    (void)ctx;
    enif_free(p);
}

static void make_atoms(ErlNifEnv *env)
{
#define CNR__MAKE(a, text) cnr_atom.a = enif_make_atom(env, text);
    CNR_ATOMS(CNR__MAKE)
#undef CNR__MAKE
    for (int i = 0; i <= CNB_ERRNO_COUNT; i++)
        cnr_err_atom[i] = enif_make_atom(env, cnb_erratom(-i));
}

ERL_NIF_TERM cnr_code_atom(int code)
{
    return cnr_err_atom[code < 0 && code >= -CNB_ERRNO_COUNT ? -code : 0];
}

ERL_NIF_TERM cnr_error(ErlNifEnv *env, int code)
{
    return enif_make_tuple2(env, cnr_atom.error, cnr_code_atom(code));
}

ERL_NIF_TERM cnr_raise(ErlNifEnv *env, int code)
{
    return enif_raise_exception(env,
                                enif_make_tuple2(env, cnr_atom.cnode_registry, cnr_code_atom(code)));
}

static int open_types(ErlNifEnv *env)
{
    ErlNifResourceTypeInit init = {.dtor = cnr_reg_dtor};
    ErlNifResourceType *rt = enif_open_resource_type_x(
        env, "cnr_registry", &init, ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    if (!rt)
        return -1;
    cnr_g.reg_rt = rt;
    ErlNifResourceTypeInit sinit = {.dtor = cnr_snap_dtor};
    rt = enif_open_resource_type_x(env, "cnr_snapshot", &sinit,
                                   ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    if (!rt)
        return -1;
    cnr_g.snap_rt = rt;
    ErlNifResourceTypeInit winit = {.dtor = cnr_watch_dtor, .down = cnr_watch_down};
    rt = enif_open_resource_type_x(env, "cnr_watch", &winit,
                                   ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER, NULL);
    if (!rt)
        return -1;
    cnr_g.watch_rt = rt;
    return 0;
}

static int setup(ErlNifEnv *env, void **priv)
{
    if (!cnr_g.table_lock) {
        cnr_g.table_lock = enif_rwlock_create("cnr_table");
        if (!cnr_g.table_lock)
            return -1;
        cnr_g.alloc.alloc = a_alloc;
        cnr_g.alloc.realloc = a_realloc;
        cnr_g.alloc.free = a_free;
        cnr_g.alloc.ctx = NULL;
    }
    cnr_table_init();
    make_atoms(env);
    if (open_types(env))
        return -1;
    cnr_g.loads++;
    *priv = &cnr_g;
    return 0;
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info)
{
    (void)info;
    return setup(env, priv);
}

static int upgrade(ErlNifEnv *env, void **priv, void **old_priv, ERL_NIF_TERM info)
{
    (void)old_priv;
    (void)info;
    return setup(env, priv);
}

static void unload(ErlNifEnv *env, void *priv)
{
    (void)env;
    (void)priv;
    if (cnr_g.loads > 0 && --cnr_g.loads == 0)
        cnr_table_clear();
    /* The lock stays: the library may stay mapped while resources live, and a
     * later load reuses it. */
}

/* os_pid_alive(OsPid) -> boolean(): core's view of "gone" (cnb_registry.h):
 * a zombie or a process already exiting counts as gone, so the attachment
 * that saw a killed C node's connection drop purges its entries at once. */
static CNR_NIF(cnr_os_pid_alive)
{
    (void)argc;
    int pid;
    if (!enif_get_int(env, argv[0], &pid))
        return enif_make_badarg(env);
    return cnb_registry_os_pid_alive(pid) ? cnr_atom.true_ : cnr_atom.false_;
}

static ErlNifFunc funcs[] = {
    {"new", 3, cnr_new, 0},
    {"attach", 6, cnr_attach, 0},
    {"add_remote", 4, cnr_add_remote, 0},
    {"drop", 1, cnr_drop, 0},
    {"info", 1, cnr_info, 0},
    {"register", 3, cnr_register, 0},
    {"unregister", 2, cnr_unregister, 0},
    {"unregister_values", 3, cnr_unregister_values, 0},
    {"notify_unregister", 2, cnr_notify_unregister, 0},
    {"lookup", 2, cnr_lookup, 0},
    {"lookup_many", 2, cnr_lookup_many, 0},
    {"values", 3, cnr_values, 0},
    {"keys", 2, cnr_keys, 0},
    {"update_value", 3, cnr_update_value, 0},
    {"count", 1, cnr_count, 0},
    {"meta", 2, cnr_meta, 0},
    {"put_meta", 3, cnr_put_meta, 0},
    {"delete_meta", 2, cnr_delete_meta, 0},
    {"remove_node", 3, cnr_remove_node, 0},
    {"canonical", 1, cnr_canonical, 0},
    {"lookup_open", 3, cnr_lookup_open, 0},
    {"lookup_next", 2, cnr_lookup_next, 0},
    {"remove_owner", 2, cnr_remove_owner, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"scan", 3, cnr_scan, 0},
    {"feed_head", 1, cnr_feed_head, 0},
    {"feed_poll", 3, cnr_feed_poll, 0},
    {"os_pid_alive", 1, cnr_os_pid_alive, 0},
};

ERL_NIF_INIT(cnode_registry_nif, funcs, load, NULL, upgrade, unload)
