/* loop.c: the I/O thread. One epoll loop owns every socket: it hands
 * readiness to the connection files (conn_life.c accepts and runs TLS
 * handshakes, conn_out.c connects out, conn_io.c reads and writes through
 * transport.c), reads again what TLS holds past a turn's budget, drains the inbox other threads
 * fill (inbox.c), and every 100 ms sends ticks, checks time-outs and gives
 * the layer above its tick. Before it blocks it may spin (block_ms).
 * Tests: tests/integration/dist_tests.erl, spin_tests.erl,
 * tests/unit/test_conn_race.c. */
#include "accept_guard.h"
#include "conn_policy.h"
#include "log.h"
#include "loop_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#define TIMER_MS 100

/* Every TIMER_MS: a tick (an empty frame) on a connection idle for a
 * quarter of net_ticktime, and time-outs: a silent peer, a stalled
 * fragmented message, a set-up past net_setuptime. */
static void timers(cnb_node_t *n)
{
    int64_t tick = (int64_t)n->opts.net_ticktime * 1000 / 4;
    int64_t dead = (int64_t)n->opts.net_ticktime * 1000;
    int64_t setup = (int64_t)n->opts.net_setuptime * 1000;
    for (cnb_conn_t *c = n->conns, *nx; c; c = nx) {
        nx = c->next;
        if (c->state == C_UP) {
            if (n->now - c->t_rx > dead) {
                char why[96];
                snprintf(why, sizeof(why), "no ticks or data for %lld ms: peer considered down",
                         (long long)(n->now - c->t_rx));
                cnb__conn_close(n, c, CNB_LOG_WARNING, why);
                continue;
            }
            if (c->frags.count) {
                char why[200];
                cnb_frag_limits_t lim = cnb__frag_limits(n);
                if (cnb__frag_stalled(&c->frags, &lim, n->now, why, sizeof(why))) {
                    cnb__conn_close(n, c, CNB_LOG_ERROR, why);
                    continue;
                }
            }
            if (n->now - c->t_tx >= tick && !c->wq_head) {
                cnb_chunk_t *ch = malloc(sizeof(*ch) + 4);
                if (ch) {
                    ch->off = 0;
                    ch->len = 4;
                    ch->dest = NULL;
                    memset(ch->data, 0, 4);
                    cnb__conn_push(c, ch);
                    cnb__conn_flush_soon(n, c);
                }
            }
        } else if (n->now - c->t_start > setup) {
            cnb__conn_close(n, c, CNB_LOG_WARNING,
                            c->state == C_TLS
                                ? "TLS handshake timed out (net_setuptime): the peer is silent, "
                                  "or it does not speak TLS"
                                : "connection setup timed out (net_setuptime)");
        }
    }
}

/* What the spinning I/O thread waits for: something in the inbox, the
 * layer above done with the calls it was handed (no reply will come), a stop. */
static int io_ready(void *arg)
{
    cnb_node_t *n = arg;
    return atomic_load_explicit(&n->inbox_ready, memory_order_acquire) ||
           !n->upper.busy(n) || atomic_load_explicit(&n->stopping, memory_order_relaxed);
}

/* What the I/O thread waits for while it spins after input: more input
 * (epoll, level triggered, reports it again to the loop's own epoll_wait),
 * something in the inbox, a stop. */
static int rx_ready(void *arg)
{
    cnb_node_t *n = arg;
    struct epoll_event ev;
    return atomic_load_explicit(&n->inbox_ready, memory_order_acquire) ||
           atomic_load_explicit(&n->stopping, memory_order_relaxed) ||
           epoll_wait(n->epfd, &ev, 1, 0) > 0;
}

/* How long this turn may block in epoll (ms): 0 when there is work at hand.
 * While the layer above handles calls (a reply is likely), spins up to
 * opts.spin_us for the inbox first. Else, when it read a peer's input since
 * it last slept (more is likely: callers pipeline, senders stream), spins up to
 * opts.spin_us for more input or the inbox, if no other thread of the node
 * spins: a peer that writes to a sleeping reader pays its wake-up inside its
 * own send (on loopback the kernel wakes the reader in the writer's system
 * call), one a spinning reader takes without it. Then, about to block, has
 * the next hand-in wake it (cnb__inbox_sleep). */
static int block_ms(cnb_node_t *n, int64_t next_timer)
{
    if (n->dirty || n->reread || atomic_load_explicit(&n->inbox_ready, memory_order_acquire))
        return 0;
    int64_t left = next_timer - cnb__now_ms();
    if (left <= 0)
        return 0;
    if (n->opts.spin_us > 0 && n->upper.busy && n->upper.busy(n) && cnb__spin_claim(n, CNB_SPIN_CLAIM_WAIT_US)) {
        cnb__spin_until(io_ready, n, n->opts.spin_us);
        cnb__spin_release(n);
        if (atomic_load_explicit(&n->inbox_ready, memory_order_acquire))
            return 0;
    } else if (n->rx_hot && n->opts.spin_us > 0 && cnb__spin_claim(n, 0)) {
        n->rx_hot = 0;
        int more = cnb__spin_until(rx_ready, n, n->opts.spin_us);
        cnb__spin_release(n);
        if (more)
            return 0;
    }
    n->rx_hot = 0;
    return cnb__inbox_sleep(n) ? (int)left : 0;
}

void *cnb__loop(void *arg)
{
    cnb_node_t *n = arg;
    struct epoll_event evs[64];
    int64_t next_timer = cnb__now_ms() + TIMER_MS;
    n->now = cnb__now_ms();
    cnb__drain_inbox(n); /* whatever was sent before the loop ran */
    while (!atomic_load(&n->stopping)) {
        int timeout = block_ms(n, next_timer);
        int k = epoll_wait(n->epfd, evs, 64, timeout);
        if (timeout)
            cnb__inbox_awake(n);
        n->now = cnb__now_ms();
        for (int i = 0; i < k; i++) {
            cnb_ev_t *ev = evs[i].data.ptr;
            if (ev->kind == EV_LISTEN) {
                cnb__accept(n);
            } else if (ev->kind == EV_WAKE) {
                cnb__inbox_woken(n);
                cnb__drain_inbox(n);
            } else {
                cnb_conn_t *c = (cnb_conn_t *)ev;
                if (c->ev.fd < 0)
                    continue;
                if (evs[i].events & (EPOLLOUT))
                    cnb__conn_writable(n, c);
                if (c->ev.fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                    if (c->state == C_EPMD_CONNECTING || c->state == C_CONNECTING)
                        cnb__conn_writable(n, c); /* reports the connect error */
                    else
                        cnb__conn_readable(n, c);
                }
            }
        }
        /* Connections whose TLS input outlasted their read budget last turn. */
        cnb_conn_t *again = n->reread;
        n->reread = NULL;
        for (cnb_conn_t *c = again, *nx; c; c = nx) {
            nx = c->rnext;
            c->reread = 0;
            if (c->ev.fd >= 0)
                cnb__conn_readable(n, c);
        }
        cnb__drain_inbox(n); /* handed in during the turn (no wake-up was asked) */
        if (n->now >= next_timer) {
            timers(n);
            cnb__hold_timers(n);
            cnb__accept_guard_tick(n);
            cnb__keep_check(n);
            if (n->upper.tick)
                n->upper.tick(n);
            cnb__log_tick(); /* reports lines the logger held back */
            next_timer = n->now + TIMER_MS;
        }
        while (n->dirty) {
            cnb_conn_t *c = n->dirty;
            n->dirty = c->dnext;
            c->dirty = 0;
            if (c->ev.fd >= 0)
                cnb__conn_flush(n, c);
        }
        cnb__conn_bury(n);
    }
    /* Shutting down: a last best-effort flush, then close everything. */
    cnb__drain_inbox(n);
    for (cnb_conn_t *c = n->conns; c; c = c->next)
        if (c->state == C_UP && c->ev.fd >= 0)
            cnb__conn_flush(n, c);
    while (n->conns)
        cnb__conn_close(n, n->conns, CNB_LOG_DEBUG, "node stopping");
    n->dirty = NULL;
    cnb__conn_bury(n);
    cnb__hold_free_all(n);
    return NULL;
}
