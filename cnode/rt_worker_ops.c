/* rt_worker_ops.c: links and monitors of a worker asked for from any thread
 * (cnb_worker_link, _unlink, _monitor, _demonitor). A worker's link and
 * monitor records belong to the pool thread running it (runtime.c), so the
 * request goes through its mailbox as a signal of its own and the worker
 * carries it out with cnb_link (etc.) on its own thread, in mailbox order.
 * Tests: tests/unit/test_node.c (worker_ops_from_any_thread),
 * tests/integration/c_service_tests.erl (a link made from a service's thread). */
#include <string.h>

#include "runtime_int.h"

/* What travels in the signal's data (copied in, read back on the worker's
 * thread). */
typedef struct worker_op {
    int op;
    erlang_pid to;
    erlang_ref ref;
} worker_op_t;

enum { OP_LINK = 1, OP_UNLINK, OP_MONITOR, OP_DEMONITOR };

/* Queues op to worker's mailbox. Returns 0, CNB_ENOPROC (no live worker of
 * that pid), CNB_EINVAL or CNB_ENOMEM. */
static int queue_op(cnb_node_t *n, const erlang_pid *worker, const worker_op_t *op)
{
    if (!n || !worker || !n->rt)
        return CNB_EINVAL;
    if (!cnb_node_is_local_pid(n, worker))
        return CNB_ENOPROC;
    sig_t *s = cnb__sig_new(SIG_WORKER_OP, (const char *)op, sizeof(*op), 0);
    if (!s)
        return CNB_ENOMEM;
    cnb_rt_t *rt = n->rt;
    /* Under tab_lock a worker found is still in the table, so its end has not
     * taken its mailbox yet: what is pushed now is seen (run, or freed). */
    pthread_rwlock_rdlock(&rt->tab_lock);
    cnb_proc_t *p = cnb__pt_find_locked(rt, worker);
    if (p)
        cnb__mbox_push(p, s);
    pthread_rwlock_unlock(&rt->tab_lock);
    if (!p) {
        free(s);
        return CNB_ENOPROC;
    }
    return 0;
}

/* A link or unlink of worker with to. */
static int queue_pid_op(cnb_node_t *n, const erlang_pid *worker, const erlang_pid *to, int kind)
{
    worker_op_t op = {.op = kind};
    if (!to)
        return CNB_EINVAL;
    op.to = *to;
    return queue_op(n, worker, &op);
}

int cnb_worker_link(cnb_node_t *n, const erlang_pid *worker, const erlang_pid *to)
{
    return queue_pid_op(n, worker, to, OP_LINK);
}

int cnb_worker_unlink(cnb_node_t *n, const erlang_pid *worker, const erlang_pid *to)
{
    return queue_pid_op(n, worker, to, OP_UNLINK);
}

int cnb_worker_monitor(cnb_node_t *n, const erlang_pid *worker, const erlang_pid *to,
                       erlang_ref *ref)
{
    worker_op_t op = {.op = OP_MONITOR};
    if (!n || !to)
        return CNB_EINVAL;
    op.to = *to;
    cnb_node_make_ref(n, &op.ref);
    int rc = queue_op(n, worker, &op);
    if (!rc && ref)
        *ref = op.ref;
    return rc;
}

int cnb_worker_demonitor(cnb_node_t *n, const erlang_pid *worker, const erlang_ref *ref)
{
    worker_op_t op = {.op = OP_DEMONITOR};
    if (!ref)
        return CNB_EINVAL;
    op.ref = *ref;
    return queue_op(n, worker, &op);
}

void cnb__worker_op_sig(cnb_proc_t *p, const sig_t *s)
{
    worker_op_t op;
    if (s->len != sizeof(op))
        return;
    memcpy(&op, s->data, sizeof(op));
    int rc = 0;
    const char *what = "link";
    switch (op.op) {
    case OP_LINK:
        rc = cnb_link(p, &op.to);
        break;
    case OP_UNLINK:
        what = "unlink";
        rc = cnb_unlink(p, &op.to);
        break;
    case OP_MONITOR:
        what = "monitor";
        rc = cnb__links_monitor_ref(p, &op.to, &op.ref);
        break;
    case OP_DEMONITOR:
        what = "demonitor";
        rc = cnb_demonitor(p, &op.ref);
        break;
    default:
        return;
    }
    if (rc)
        cnb__log(p->node, CNB_LOG_WARNING, "worker <%u.%u>: %s asked from another thread failed: %s",
                 p->pid.num, p->pid.serial, what, cnb_strerror(rc));
}
