/* c_service.c: a small C service on libcnode_bridge. It joins the cluster as
 * node NAME, keeps connected to PEER and runs one worker, `counter`, until
 * SIGTERM or SIGINT:
 *   gen_server:call({counter, Node}, get)            -> N
 *   gen_server:call({counter, Node}, {add, K})        -> N + K
 *   gen_server:call({counter, Node}, {later, Ms, T})  -> {later, T}, sent Ms ms
 *                                      later from a thread of its own
 *   gen_server:cast({counter, Node}, {add, K})
 *   {counter, Node} ! {ping, Pid}                     -> Pid gets {pong, Counter}
 * The worker is {c_service, counter} in :global and in the node's shared
 * registry (value <<"counter">>), and is linked to OWNER, a process
 * registered on PEER, when one is named: when OWNER ends, it ends with the
 * same reason. Build: make (pkg-config cnode_bridge). Run:
 *   CNB_COOKIE=secret ./c_service svc app@myhost [OWNER]
 * Tests: tests/integration/c_service_tests.erl (README.md shows this file). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cnb_registry_worker.h>
#include <cnode_bridge.h>

static cnb_node_t *node;
static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int pending; /* replies later_reply still has to send */
static pthread_mutex_t pending_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct later {
    cnb_from_t from; /* a copy: the caller's From outlives the callback */
    unsigned ms;
    ei_x_buff reply;
} later_t;

/* A thread of its own: waits, replies, frees. */
static void *later_reply(void *arg)
{
    later_t *l = arg;
    sleep_ms(l->ms);
    cnb_reply(node, &l->from, l->reply.buff, (size_t)l->reply.index);
    ei_x_free(&l->reply);
    free(l);
    pthread_mutex_lock(&pending_mu);
    pending--;
    pthread_mutex_unlock(&pending_mu);
    return NULL;
}

/* {later, Ms, T} (req[*i] is at Ms): {later, T} goes out Ms ms from now. */
static int reply_later(const char *req, int *i, const cnb_from_t *from)
{
    long ms;
    int t = 0;
    later_t *l = calloc(1, sizeof(*l));
    if (!l)
        return CNB_ENOMEM;
    l->from = *from;
    if (ei_decode_long(req, i, &ms) || ms < 0 || ms > 10000 || (t = *i, ei_skip_term(req, i)) ||
        ei_x_new_with_version(&l->reply) || ei_x_encode_tuple_header(&l->reply, 2) ||
        ei_x_encode_atom(&l->reply, "later") || ei_x_append_buf(&l->reply, req + t, *i - t)) {
        ei_x_free(&l->reply);
        free(l);
        return CNB_EINVAL; /* the worker exits {callback_failed, handle_call, einval} */
    }
    l->ms = (unsigned)ms;
    pthread_t th;
    pthread_mutex_lock(&pending_mu);
    int rc = pthread_create(&th, NULL, later_reply, l);
    pending += rc == 0;
    pthread_mutex_unlock(&pending_mu);
    if (rc) {
        ei_x_free(&l->reply);
        free(l);
        return CNB_ENOMEM;
    }
    pthread_detach(th);
    return CNB_CONTINUE; /* no reply now */
}

/* The request's tag: Atom, or the first element of {Atom, ...} (*arity then
 * the tuple's size, else 0). *i is left after the tag. */
static int tag(const char *t, int *i, char *atom, int *arity)
{
    int ver;
    *arity = 0;
    if (ei_decode_version(t, i, &ver))
        return -1;
    if (!ei_decode_tuple_header(t, i, arity) && *arity < 1)
        return -1;
    return ei_decode_atom(t, i, atom);
}

static int counter_call(cnb_proc_t *self, void *state, const char *req, size_t len,
                        const cnb_from_t *from, ei_x_buff *reply)
{
    long *n = state, k;
    char op[MAXATOMLEN_UTF8];
    int i = 0, arity;
    if (tag(req, &i, op, &arity) == 0) {
        if (!strcmp(op, "get") && arity == 0)
            return ei_x_encode_long(reply, *n) ? CNB_ENOMEM : CNB_REPLY;
        if (!strcmp(op, "add") && arity == 2 && !ei_decode_long(req, &i, &k))
            return ei_x_encode_long(reply, *n += k) ? CNB_ENOMEM : CNB_REPLY;
        if (!strcmp(op, "later") && arity == 3)
            return reply_later(req, &i, from);
    }
    return ei_x_encode_tuple_header(reply, 2) || ei_x_encode_atom(reply, "error") ||
                   ei_x_encode_atom(reply, "unknown_request")
               ? CNB_ENOMEM
               : CNB_REPLY;
}

static int counter_cast(cnb_proc_t *self, void *state, const char *msg, size_t len)
{
    long *n = state, k;
    char op[MAXATOMLEN_UTF8];
    int i = 0, arity;
    if (!tag(msg, &i, op, &arity) && !strcmp(op, "add") && arity == 2 &&
        !ei_decode_long(msg, &i, &k))
        *n += k;
    return CNB_CONTINUE;
}

/* {ping, Pid}: Pid gets {pong, Self}. {'EXIT', Owner, Reason} (it traps
 * exits): the owner ended, so does the worker, with Reason. */
static int counter_info(cnb_proc_t *self, void *state, const char *msg, size_t len)
{
    char op[MAXATOMLEN_UTF8];
    int i = 0, arity, r;
    erlang_pid pid;
    if (tag(msg, &i, op, &arity) || ei_decode_pid(msg, &i, &pid))
        return CNB_CONTINUE;
    if (!strcmp(op, "ping") && arity == 2) {
        ei_x_buff pong;
        int e = ei_x_new_with_version(&pong) || ei_x_encode_tuple_header(&pong, 2) ||
                ei_x_encode_atom(&pong, "pong") || ei_x_encode_pid(&pong, cnb_self(self));
        if (!e)
            cnb_send(cnb_proc_node(self), cnb_self(self), &pid, pong.buff, (size_t)pong.index);
        ei_x_free(&pong);
        return CNB_CONTINUE;
    }
    if (strcmp(op, "EXIT") || arity != 3)
        return CNB_CONTINUE;
    ei_x_buff why;
    r = i;
    if (ei_x_new_with_version(&why) || ei_skip_term(msg, &i) ||
        ei_x_append_buf(&why, msg + r, i - r) ||
        cnb_proc_set_reason(self, why.buff, (size_t)why.index)) {
        ei_x_free(&why);
        return CNB_ENOMEM;
    }
    ei_x_free(&why);
    return CNB_STOP;
}

static int counter_init(cnb_proc_t *self, void *arg, void **state)
{
    *state = calloc(1, sizeof(long));
    return *state ? 0 : CNB_ENOMEM;
}

static void counter_terminate(cnb_proc_t *self, void *state, const char *r, size_t l)
{
    free(state);
}

static const cnb_worker_ops_t counter = {.init = counter_init,
                                         .handle_call = counter_call,
                                         .handle_cast = counter_cast,
                                         .handle_info = counter_info,
                                         .terminate = counter_terminate};

/* The pid of the process registered as name on peer (erlang:whereis/1). */
static int whereis_on(const char *peer, const char *name, erlang_pid *pid)
{
    ei_x_buff args, res;
    int i = 0, ver, rc = CNB_ENOMEM;
    if (ei_x_new_with_version(&args) || ei_x_encode_list_header(&args, 1) ||
        ei_x_encode_atom(&args, name) || ei_x_encode_empty_list(&args))
        goto out;
    rc = cnb_rpc(node, peer, "erlang", "whereis", args.buff, (size_t)args.index, 5000, &res);
    if (!rc && (ei_decode_version(res.buff, &i, &ver) || ei_decode_pid(res.buff, &i, pid)))
        rc = CNB_ENOENT; /* undefined */
    ei_x_free(&res);
out:
    ei_x_free(&args);
    return rc;
}

/* Starts the node and the worker and names it; 0 or the first error. */
static int start(const char *peer, const char *owner, struct cnb_registry **reg)
{
    erlang_pid w, o;
    ei_x_buff name = {0}, value = {0};
    cnb_spawn_opts_t so = {.name = "counter", .trap_exit = 1};
    int rc = cnb_node_start(node);
    if (rc || (rc = cnb_registry_worker_start(node, NULL, reg)) ||
        (rc = cnb_node_keep_connected(node, peer)) ||
        (rc = cnb_spawn(node, &counter, NULL, &so, &w)))
        return rc;
    if (ei_x_new_with_version(&name) || ei_x_encode_tuple_header(&name, 2) ||
        ei_x_encode_atom(&name, "c_service") || ei_x_encode_atom(&name, "counter") ||
        ei_x_new_with_version(&value) || ei_x_encode_binary(&value, "counter", 7))
        rc = CNB_ENOMEM;
    /* :global waits (within its timeout) for the connection to PEER. */
    if (!rc)
        rc = cnb_global_register(node, name.buff, (size_t)name.index, &w,
                                 CNB_GLOBAL_RANDOM_EXIT, 30000, NULL);
    if (!rc)
        rc = cnb_registry_register_term(*reg, &w, name.buff, (size_t)name.index, value.buff,
                                        (size_t)value.index);
    ei_x_free(&name);
    ei_x_free(&value);
    /* A link made from this thread: the worker makes it before its next message. */
    if (!rc && owner && !(rc = whereis_on(peer, owner, &o)))
        rc = cnb_worker_link(node, &w, &o);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: CNB_COOKIE=secret %s NAME PEER [OWNER]\n", argv[0]);
        return 2;
    }
    /* SIGTERM and SIGINT blocked in every thread (the node's inherit this
     * mask), taken by sigwait below. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    cnb_node_opts_t o = {.sname = argv[1], .cookie = getenv("CNB_COOKIE"), .threads = 2};
    struct cnb_registry *reg = NULL;
    int rc = cnb_node_create(&o, &node), sig;
    if (rc)
        return 1;
    if ((rc = start(argv[2], argc > 3 ? argv[3] : NULL, &reg)) == 0) {
        printf("READY %s\n", cnb_node_name(node));
        fflush(stdout);
        sigwait(&stop, &sig);
    } else {
        fprintf(stderr, "c_service: %s\n", cnb_strerror(rc));
    }
    cnb_node_shutdown(node, 5000); /* every worker's terminate runs */
    for (;;) {                     /* replies still in flight go (or fail) */
        pthread_mutex_lock(&pending_mu);
        int left = pending;
        pthread_mutex_unlock(&pending_mu);
        if (!left)
            break;
        sleep_ms(10);
    }
    cnb_registry_close(reg);
    cnb_node_destroy(node);
    return rc ? 1 : 0;
}
