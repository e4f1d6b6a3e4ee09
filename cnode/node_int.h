/* node_int.h: internals of the node's connection layer (node.c, loop.c,
 * conn_policy.c, conn_hold.c, accept_guard.c, auth_limit.c, epmd.c, send.c,
 * handshake.c, frame.c, dist_decode.c): connections, connect/accept,
 * handshakes, framing, epmd. It knows no processes: the runtime above plugs
 * in through the callbacks of cnb_upper_t (node_rt.h registers them) and
 * includes this header; nothing here includes the runtime's.
 * Not part of the public API. Tests: tests/unit/test_frame.c,
 * tests/unit/test_conn_race.c, tests/integration/dist_tests.erl. */
#ifndef CNB_NODE_INT_H
#define CNB_NODE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "accept_guard.h"
#include "buf.h"
#include "cnode_bridge.h"
#include "dist_decode.h"
#include "frame.h"
#include "handshake.h"

#define CNB_NAME_MAX 256
#define CNB_NAME_TEXT 256 /* a term printed for a log line (truncated) */

/* One outgoing frame, ready for the wire (4-byte length included): what the
 * wire needs, and while it waits in the inbox to be routed, the name of its
 * destination, stored after the frame bytes in the same allocation (sized to
 * the name, not CNB_NAME_MAX). */
typedef struct cnb_chunk {
    struct cnb_chunk *next;
    const char *dest; /* destination node (inbox, routing); NULL for ticks */
    size_t len;
    size_t off; /* bytes already written */
    uint8_t data[];
} cnb_chunk_t;

/* A request to the I/O thread (cnb_node_connect, _keep_connected,
 * _disconnect): a type of its own, never a frame. */
enum cnb_ctl_kind { CTL_CONNECT = 1, CTL_KEEP, CTL_DISCONNECT };

typedef struct cnb_ctl {
    struct cnb_ctl *next;
    int kind;    /* enum cnb_ctl_kind */
    size_t after; /* frames queued in the inbox before it: the I/O thread
                     takes frames and requests in the order they were given */
    char peer[]; /* the node it is about */
} cnb_ctl_t;

/* Appends ch to the list head..tail (a write queue or a hold). */
static inline void cnb__chunk_append(cnb_chunk_t **head, cnb_chunk_t **tail, cnb_chunk_t *ch)
{
    ch->next = NULL;
    if (*tail)
        (*tail)->next = ch;
    else
        *head = ch;
    *tail = ch;
}

/* Frees a list of chunks. */
static inline void cnb__chunks_free(cnb_chunk_t *ch)
{
    while (ch) {
        cnb_chunk_t *nx = ch->next;
        free(ch);
        ch = nx;
    }
}

enum cnb_ev_kind { EV_LISTEN = 1, EV_WAKE, EV_CONN };

typedef struct cnb_ev {
    int kind;
    int fd;
} cnb_ev_t;

enum cnb_conn_state {
    C_EPMD_CONNECTING = 1, /* non-blocking connect to the peer host's epmd */
    C_EPMD_WAIT,           /* PORT_PLEASE2 sent, waiting for PORT2_RESP */
    C_CONNECTING,          /* non-blocking connect to the peer's listen port */
    C_TLS,                 /* TLS handshake (TLS distribution only, transport.c) */
    C_HANDSHAKE,
    C_UP,
    C_CLOSING /* flushing a last packet (e.g. status "nok") */
};

typedef struct cnb_conn {
    cnb_ev_t ev;            /* must stay first */
    struct cnb_conn *next;  /* all connections */
    struct cnb_conn *hnext; /* hash bucket chain: only authenticated (C_UP) conns */
    struct cnb_conn *dnext; /* dirty list: has output to flush */
    int in_hash;
    int dirty;
    int attempt;      /* a set-up attempt for peer: ours, or theirs answered ok,
                         ok_simultaneous or alive (conn_policy.c) */
    int refused_nok;  /* ours, and the peer answered nok: its own attempt wins */
    int closed;       /* conn_close ran: in the graveyard */
    int state;
    int initiator;
    char peer[CNB_NAME_MAX]; /* full node name, once known */
    char host[CNB_NAME_MAX]; /* initiator: host part */
    char alive[CNB_NAME_MAX];/* initiator: alive part */
    unsigned port;           /* initiator: known port (no-epmd) or from epmd */
    char addr_text[80];      /* remote address, for logs */
    cnb_hs_t hs;
    cnb_buf_t rbuf;
    cnb_buf_t hsout;         /* handshake output */
    cnb_chunk_t *wq_head, *wq_tail; /* output once up (before: conn_hold.c) */
    size_t wq_bytes;
    size_t wq_count;
    int want_out;            /* EPOLLOUT armed */
    int64_t t_start;         /* ms: when the attempt/accept began */
    int64_t t_rx;            /* ms: last bytes received */
    int64_t t_tx;            /* ms: last bytes sent */
    uint64_t peer_flags;
    uint32_t peer_creation;
    cnb_frags_t frags;
    int was_up;
    int close_reason_logged;
    /* TLS distribution (transport.c): the session, NULL on plain TCP. */
    struct ssl_st *ssl;
    int tx_want_out;      /* the TLS handshake waits for the socket to take data */
    int tx_rd_wants_out;  /* a TLS read waits for the socket to take data */
    int tx_wr_wants_in;   /* a TLS write waits for input */
    int tx_peeked;        /* acceptor: the first byte was a TLS record's */
    int tx_fatal;         /* TLS failed: no close_notify */
    int hs_seen;          /* the handshake consumed a packet (plain TCP) */
    int reread;           /* in n->reread: TLS holds input epoll will not report */
    cnb_buf_t tx_stage;   /* small frames gathered into one TLS record (transport.c) */
    struct cnb_conn *rnext;
} cnb_conn_t;

#define CNB_HASH_BUCKETS 256
#define CNB_MAX_KEEP 64

/* A peer to stay connected to (--connect): reconnected with back-off. */
typedef struct cnb_keep {
    char name[CNB_NAME_MAX]; /* as given: name@host or name@host:port */
    char node[CNB_NAME_MAX]; /* name@host */
    int64_t next_try;        /* ms */
    int64_t backoff;         /* ms */
} cnb_keep_t;

/* What the layer above (the process runtime) plugs into the connection
 * layer: set once by cnb_node_create (node_rt.c) before the node starts; the
 * connection layer calls nothing of the runtime but these. Both run on the
 * I/O thread and may send (cnb__submit routes at once there). */
typedef struct cnb_upper {
    /* One incoming message, whole and checked (dist_decode.h), with
     * d->msg.peer set. len: the body's length, for log lines. from_wire: 0
     * for what this node sent itself (loopback): that gets no reply for a
     * dead process. */
    void (*message)(cnb_node_t *n, const cnb_decoded_t *d, size_t len, int from_wire);
    /* peer is gone: its live connection closed, or none could be made.
     * Called before on_node(peer, 0). */
    void (*nodedown)(cnb_node_t *n, const char *peer);
    /* Nonzero while work handed up that asks for an answer (a call) is
     * queued or running on other threads (so output, a reply, is likely
     * soon): the I/O thread spins a while for it before it sleeps. Any
     * thread; lock-free. */
    int (*busy)(cnb_node_t *n);
    /* Every 100 ms on the I/O thread, with the loop's own time-outs. */
    void (*tick)(cnb_node_t *n);
} cnb_upper_t;

typedef struct cnb_peer_info {
    char name[CNB_NAME_MAX];
    uint64_t flags;
} cnb_peer_info_t;

struct cnb_node {
    cnb_node_opts_t opts;
    char alive[CNB_NAME_MAX];
    char host[CNB_NAME_MAX];
    char name[CNB_NAME_MAX]; /* alive@host */
    int longnames;
    char cookie[1024];
    uint32_t creation;
    int log_level;

    int epfd;
    cnb_ev_t listen_ev;
    cnb_ev_t wake_ev; /* eventfd */
    int epmd_fd;      /* registration connection; closing it unregisters */
    unsigned port;

    pthread_t thread;
    int thread_started;
    atomic_int stopping;

    atomic_uint_fast64_t pid_counter;
    atomic_uint_fast64_t ref_counter;
    uint32_t ref_salt;

    /* Owned by the I/O thread. */
    cnb_conn_t *conns;
    cnb_conn_t *hash[CNB_HASH_BUCKETS];
    cnb_conn_t *dirty;
    cnb_conn_t *graveyard; /* closed this loop turn; freed at its end */
    cnb_conn_t *reread;    /* to read again next turn without waiting (cnb_conn_t.reread) */
    int rx_hot;            /* a peer's input read since the loop last slept (loop.c) */
    struct cnb_tls *tls;   /* TLS distribution's context (tls.h); NULL: plain TCP */
    struct cnb_hold *holds; /* messages for peers being connected (conn_hold.c) */
    cnb_accept_guard_t accept_guard; /* fd exhaustion back-off (accept_guard.c) */
    cnb_keep_t keep[CNB_MAX_KEEP];
    struct cnb_auth_limit *auth; /* failed cookie checks per address (auth_limit.c) */
    int nkeep;
    int64_t now;

    /* Cross-thread inbox (inbox.c): frames to route and control requests. */
    pthread_mutex_t inbox_mu;
    cnb_chunk_t *inbox_head, *inbox_tail;
    size_t inbox_frames; /* frames in it, the clock of cnb_ctl_t.after */
    cnb_ctl_t *ctl_head, *ctl_tail;
    int inbox_signalled; /* no eventfd write needed: one is pending, or the I/O
                            thread is awake and drains the inbox before it sleeps */
    atomic_int inbox_ready; /* frames or requests wait (read without the lock) */
    atomic_int spinner;     /* a thread of the node spins (cnb__spin_claim) */

    /* The layer above (see cnb_upper_t). */
    cnb_upper_t upper;

    /* The runtime's own state, kept in the node for it (node_rt.c creates
     * and frees it): the connection layer never looks inside. The process
     * runtime, calls from C, timers; global resolvers other nodes run for us
     * (spawn_relay.c, I/O thread). */
    struct cnb_rt *rt;
    struct cnb_calls *calls;
    struct cnb_timers *timers;
    struct cnb_relay *relays;
    unsigned nrelays;
    struct cnb_visible *vis; /* visible mode's global_name_server (visible.c) */
    struct cnb_pg *pg;       /* visible mode's pg scopes (pg_scope.c) */
    struct cnb_greg *greg;   /* visible mode's :global registrar (glob_reg.c) */

    /* Snapshot of connected peers for other threads; peers_cv (on
     * CLOCK_MONOTONIC) is broadcast at every change, for
     * cnb_node_wait_connected. */
    pthread_mutex_t peers_mu;
    pthread_cond_t peers_cv;
    cnb_peer_info_t *peers;
    int npeers, peers_cap;
};

/* Spinning before sleeping (opts.spin_us): a thread that will soon be
 * handed work (a pool thread out of it, the I/O thread while workers run)
 * polls for it a while, so that the hand-off costs no wake-up (a futex or
 * eventfd wake and the sleeper's rescheduling: tens of microseconds on a
 * virtual machine, where a spinning hand-off costs well under one). */
static inline void cnb__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* CLOCK_MONOTONIC in nanoseconds (vDSO: no system call). */
int64_t cnb__now_ns(void);

/* Polls ready(arg) with a CPU pause between tries for up to us microseconds;
 * every SPIN_YIELD_NS of it the thread yields its CPU to runnable threads
 * (on a machine with few cores the thread that will hand over the work may
 * be waiting for this one's). Returns 1 as soon as ready() does, 0 when
 * the time is up. */
int cnb__spin_until(int (*ready)(void *), void *arg, int us);

/* One thread of a node spins at a time (the I/O thread for a reply, or one
 * pool thread for work), so that on a machine of few cores spinning never
 * takes every core from the threads that make the work. Claims the role,
 * waiting up to wait_us for its holder to give it up; 1 when claimed (give
 * it back with cnb__spin_release), 0 when not. */
int cnb__spin_claim(cnb_node_t *n, int wait_us);
/* How long a thread waits for the role: its holder gives it up within a
 * microsecond once what it waited for came (the pool thread spinning for
 * work that the I/O thread just queued, the I/O thread for a reply). */
#define CNB_SPIN_CLAIM_WAIT_US 5
void cnb__spin_release(cnb_node_t *n);

/* node.c: the connection layer's half of a node's life; node_rt.c wraps it
 * with the runtime's. node_create: names, cookie, creation (nothing opened);
 * 0 or CNB_EINVAL, CNB_ENOMEM. node_prepare: listener, epoll, epmd; 0 or
 * as cnb_node_start. node_launch: the I/O loop on a thread of its own.
 * node_free: closes and frees what node_create and node_prepare made
 * (the I/O thread stopped first). */
int cnb__node_create(const cnb_node_opts_t *opts, cnb_node_t **out);
int cnb__node_prepare(cnb_node_t *n);
int cnb__node_launch(cnb_node_t *n);
void cnb__node_free(cnb_node_t *n);
int64_t cnb__now_ms(void);
/* The stack of the I/O thread and the worker pool's threads: room for ei's
 * recursive decoders on terms of CNB_ETF_MAX_DEPTH (see etf_check.h). */
#define CNB_THREAD_STACK ((size_t)8 << 20)
/* pthread_create with a CNB_THREAD_STACK stack; returns pthread_create's result. */
int cnb__thread_create(pthread_t *t, void *(*fn)(void *), void *arg);
uint32_t cnb__random32(void);
void cnb__peers_set(cnb_node_t *n, const char *peer, uint64_t flags, int up);

/* log.c: one escaped, rate-limited line (see log.h). */
void cnb__log(const cnb_node_t *n, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Would a line of level be written for n? (Spares building what it says.) */
int cnb__log_on(const cnb_node_t *n, int level);
/* The term t (len bytes, with or without its 131) as Erlang prints it, cut to
 * cap - 1 bytes ("..." at the end when cut), for a log line; "?" when it
 * does not decode. Returns out. */
const char *cnb__log_term(const char *t, size_t len, char *out, size_t cap);

/* epmd.c */
int cnb__epmd_register(cnb_node_t *n);
int cnb__epmd_port_request(const char *alive, uint8_t *out, size_t cap);
/* Parses PORT2_RESP. Returns the port (>0), 0 when incomplete, or a negative
 * code: CNB_ENOENT (not registered), CNB_EPROTO. */
int cnb__epmd_port_reply(const uint8_t *p, size_t n);
int cnb__epmd_tcp_port(void);

/* The I/O thread's files: loop.c (the epoll loop and its timer),
 * conn_life.c (a connection's life: table, accept, up, close), conn_out.c
 * (connecting out: epmd, TCP, keep-connected), conn_io.c (reading, framing,
 * writing, routing), inbox.c (what other threads hand it). */
void *cnb__loop(void *arg);
/* The authenticated (C_UP) connection to peer (name@host), or NULL: pending
 * ones are never found here, so they shadow nothing. */
cnb_conn_t *cnb__conn_find(cnb_node_t *n, const char *peer);
void cnb__conn_enqueue(cnb_node_t *n, cnb_conn_t *c, cnb_chunk_t *ch);
/* Sends ch (ch->dest set) on the live connection to its node, or holds it
 * while one is made; to this node itself, delivers it here. Takes ch. */
void cnb__route(cnb_node_t *n, cnb_chunk_t *ch);
/* Starts (or returns the running) outgoing attempt to spec (name@host[:port]);
 * NULL when none could be started (then whatever was held for it is dropped
 * and the layer above told nodedown). */
cnb_conn_t *cnb__connect_out(cnb_node_t *n, const char *spec);
/* Closes c now (a log line at level when why is set); freed at the end of
 * the loop turn (cnb__conn_bury). A live one's peer is reported down. */
void cnb__conn_close(cnb_node_t *n, cnb_conn_t *c, int level, const char *why);
/* Has c's write queue flushed at the end of this loop turn. */
void cnb__conn_flush_soon(cnb_node_t *n, cnb_conn_t *c);

/* send.c: builds a frame for peer (NULL: no destination): 4-byte length,
 * 131 68 header, ctrl, payload. NULL when out of memory or too big. */
cnb_chunk_t *cnb__chunk_frame(const char *peer, const char *ctrl, size_t ctrl_len,
                              const char *payload, size_t payload_len);
/* inbox.c: hands a frame (ch->dest set) to the I/O thread, which routes it;
 * on the I/O thread, routes it at once. Takes ch. Returns 0 or CNB_ECLOSED. */
int cnb__submit(cnb_node_t *n, cnb_chunk_t *ch);
/* Frees the inbox's frames and requests (node_free). */
void cnb__inbox_free(cnb_node_t *n);

/* conn_io.c: hands one incoming message body up (decoded and checked; bad ones
 * dropped here with one log line). c: NULL for loopback. */
void cnb__deliver_up(cnb_node_t *n, cnb_conn_t *c, const uint8_t *body, size_t len,
                     int versioned);

#endif /* CNB_NODE_INT_H */
