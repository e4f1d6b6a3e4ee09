/* cnode_bridge.h: the C node of libcnode_bridge, a node that joins an
 * Erlang/Elixir cluster: names, epmd, connections in and out, ticks, sending
 * control messages; the process runtime (workers, links, monitors, gen_server
 * manners) on top of it; :global names. The library's whole public C API is
 * this folder (include/): this header, cnb_registry.h (the shared-memory key
 * registry), cnb_registry_worker.h (the node's own registry, served to BEAM
 * code), cnb_term.h (canonical terms) and cnb_common.h (error codes, the
 * allocator). `make install` puts them in one folder, with the libraries, the
 * cnode program and cnode_bridge.pc (`pkg-config --cflags --libs
 * cnode_bridge`); the shared library exports only cnb_* names. Implementation: cnode/ (on core/). Tests: tests/unit/test_node.c,
 * tests/unit/test_handshake.c, tests/unit/test_frame.c,
 * tests/integration/dist_tests.erl, runtime_tests.erl, global_tests.erl. */
#ifndef CNODE_BRIDGE_H
#define CNODE_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include <ei.h>

#include "cnb_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version, the one place it is written. The macros are the
 * version of these headers; a program can compare them with what
 * cnb_version() says at run time (the shared library's soname carries the
 * major: libcnode_bridge.so.MAJOR, or .so.0.MINOR before 1.0, as a 0.x minor
 * release may change the ABI: 0.2 grew cnb_node_opts_t and cnb_spawn_opts_t). The OTP application cnode_bridge has the
 * same version (its .app.src vsn; tests/integration/cli_tests.erl checks). */
#define CNB_VERSION_MAJOR 0
#define CNB_VERSION_MINOR 2
#define CNB_VERSION_PATCH 0
#define CNB_VERSION_STRING "0.2.0"
#define CNB_VERSION CNB_VERSION_STRING

/* "MAJOR.MINOR.PATCH" of the library the program runs with (static text). */
const char *cnb_version(void);

typedef struct cnb_node cnb_node_t;

/* Levels of cnb_node_opts_t.log_level; 0 (a zeroed opts) means the default,
 * CNB_LOG_INFO, as does any value out of range. */
enum cnb_log_level {
    CNB_LOG_ERROR = 1,
    CNB_LOG_WARNING = 2,
    CNB_LOG_INFO = 3,
    CNB_LOG_DEBUG = 4
};

/* Distribution control message operations we decode (erl_dist_protocol.html,
 * "Protocol between Connected Nodes"). */
enum cnb_op {
    CNB_OP_LINK = 1,
    CNB_OP_SEND = 2,
    CNB_OP_EXIT = 3,
    CNB_OP_UNLINK = 4,
    CNB_OP_REG_SEND = 6,
    CNB_OP_GROUP_LEADER = 7,
    CNB_OP_EXIT2 = 8,
    CNB_OP_SEND_TT = 12,
    CNB_OP_EXIT_TT = 13,
    CNB_OP_REG_SEND_TT = 16,
    CNB_OP_EXIT2_TT = 18,
    CNB_OP_MONITOR_P = 19,
    CNB_OP_DEMONITOR_P = 20,
    CNB_OP_MONITOR_P_EXIT = 21,
    CNB_OP_SEND_SENDER = 22,
    CNB_OP_SEND_SENDER_TT = 23,
    CNB_OP_PAYLOAD_EXIT = 24,
    CNB_OP_PAYLOAD_EXIT_TT = 25,
    CNB_OP_PAYLOAD_EXIT2 = 26,
    CNB_OP_PAYLOAD_EXIT2_TT = 27,
    CNB_OP_PAYLOAD_MONITOR_P_EXIT = 28,
    CNB_OP_SPAWN_REQUEST = 29,
    CNB_OP_SPAWN_REQUEST_TT = 30,
    CNB_OP_SPAWN_REPLY = 31,
    CNB_OP_SPAWN_REPLY_TT = 32,
    CNB_OP_ALIAS_SEND = 33,
    CNB_OP_ALIAS_SEND_TT = 34,
    CNB_OP_UNLINK_ID = 35,
    CNB_OP_UNLINK_ID_ACK = 36,
    /* OTP 28+ (DFLAG_ALTACT_SIG): {37, Flags, From, To[, Token]}, then the
     * message or, with CNB_ALTACT_EXIT, the exit reason. Decoded into the op
     * of what it carries (SEND, REG_SEND, ALIAS_SEND, EXIT2) with
     * cnb_msg_t.sig_flags set; only an exit signal through an alias keeps
     * this op. */
    CNB_OP_ALTACT_SIG_SEND = 37
};

/* The flags of ALTACT_SIG_SEND (cnb_msg_t.sig_flags). */
enum cnb_altact_flag {
    CNB_ALTACT_PRIO = 1,   /* a priority signal (EEP 76): ahead of ordinary ones */
    CNB_ALTACT_TOKEN = 2,  /* a trace token follows To */
    CNB_ALTACT_ALIAS = 4,  /* To is an alias (a reference) */
    CNB_ALTACT_NAME = 8,   /* To is a registered name (an atom) */
    CNB_ALTACT_EXIT = 16   /* an exit signal: the payload is its reason */
};

/* One decoded incoming control message, handed to on_message on the I/O thread.
 * Everything it points to is valid only during the callback. The _TT variants
 * are reported with the op of their plain form (trace tokens are ignored), the
 * PAYLOAD_ variants with the op of their plain form and the reason in payload.
 * Every term in it, and every term a worker callback is given, is whole and
 * nested at most 1,000 levels deep: deeper messages are dropped with a log
 * line, deeper exit reasons arrive as the atom term_too_deep (so ei's
 * recursive decoders never need more than about 2 MB of stack on them). */
typedef struct cnb_msg {
    int op;                 /* enum cnb_op, normalised as above */
    const char *peer;       /* full name of the node it came from */
    int has_from;           /* from is set */
    erlang_pid from;        /* LINK, EXIT*, REG_SEND, SEND_SENDER, ALIAS_SEND, MONITOR_P... */
    int has_to;             /* to is set */
    erlang_pid to;          /* SEND*, LINK, EXIT*, UNLINK*, MONITOR_P_EXIT (monitoring pid) */
    int has_ref;
    erlang_ref ref;         /* MONITOR_P/DEMONITOR_P/MONITOR_P_EXIT ref, ALIAS_SEND alias */
    char toname[MAXATOMLEN_UTF8]; /* REG_SEND name; MONITOR_P/DEMONITOR_P by name */
    uint64_t unlink_id;     /* UNLINK_ID, UNLINK_ID_ACK */
    const char *ctrl;       /* the control term (ETF without version byte) */
    size_t ctrl_len;
    const char *payload;    /* message or exit reason, ETF WITH a leading 131;
                               NULL when the operation has none */
    size_t payload_len;
    unsigned sig_flags;     /* ALTACT_SIG_SEND's flags (enum cnb_altact_flag) it
                               came with; 0 for every other control message */
} cnb_msg_t;

typedef void (*cnb_on_message_fn)(cnb_node_t *node, const cnb_msg_t *msg, void *user);
/* A connection to `peer` came up (up = 1) or went down (up = 0). I/O thread. */
typedef void (*cnb_on_node_fn)(cnb_node_t *node, const char *peer, int up, void *user);
/* One log line for the host's own logger: its level (enum cnb_log_level), the
 * node's name ("cnode" while it has none yet) and the text, already escaped
 * (no control characters, no newline, at most 4 KB) and without a timestamp.
 * Lines below the node's log_level never reach it; repeated lines are rate
 * limited as on stderr. It runs on whichever thread logs (the I/O thread, a
 * pool thread, a caller's), from several at once: keep it short, thread-safe,
 * and do not log through cnb_node_log from it. After cnb_node_destroy returns
 * it is never called again for that node. */
typedef void (*cnb_log_fn)(int level, const char *node, const char *line, void *user);

typedef struct cnb_node_opts {
    const char *sname;       /* short name "c1" or "c1@host" (host: the short host name) */
    const char *name;        /* long name "c1@host.example" or "c1" (host: the FQDN) */
    const char *cookie;      /* the cookie text (copied; the caller may wipe it) */
    const char *cookie_file; /* or a file holding it, owner-only as erl wants
                                (NULL and no cookie: ~/.erlang.cookie) */
    unsigned port;           /* listen port; 0: any free port */
    const char *listen_addr; /* numeric IP address of the one interface to listen on
                                (as inet_dist_use_interface); NULL: every interface */
    int no_epmd;             /* do not register with epmd; peers need name@host:port */
    int ipv6;                /* listen on IPv6 (dual stack) and prefer IPv6 for peers */
    unsigned net_ticktime;   /* seconds (default 60, as net_kernel's); ticks at 1/4 */
    unsigned net_setuptime;  /* seconds a handshake may take (default 7) */
    size_t max_message;      /* largest incoming message in bytes (default 256 MiB) */
    size_t max_pending;      /* bytes queued per peer while connecting (default 64 MiB) */
    int log_level;           /* enum cnb_log_level (0: the default, CNB_LOG_INFO) */
    unsigned threads;        /* worker pool threads (default 2) */
    cnb_on_message_fn on_message; /* messages neither the node nor a worker takes */
    cnb_on_node_fn on_node;
    void *user;
    size_t max_links_per_peer; /* links + monitors one peer node may hold on this node's
                                  processes (default 1048576); past it new ones are
                                  refused with exit/DOWN system_limit and one log line */
    cnb_log_fn log;            /* where log lines go (NULL: stderr, one timestamped line
                                  each) */
    void *log_user;            /* passed to log */
    /* TLS distribution, as OTP's inet_tls_dist (-proto_dist inet_tls): on when
     * tls_cert is set; every connection (not epmd) then runs TLS first and
     * plain TCP peers are refused. */
    const char *tls_cert;      /* PEM certificate (chain) of this node */
    const char *tls_key;       /* PEM private key (NULL: in tls_cert's file) */
    const char *tls_cacert;    /* PEM CA certificates that peers' certificates must
                                  chain to (needed unless tls_verify_none) */
    int tls_verify_none;       /* 0 (default): verify peers both ways (mutual), and a
                                  peer's certificate must name the host of its node
                                  name; 1: accept any peer certificate */
    const char *tls_versions;  /* "1.2", "1.3" or "1.2,1.3" (NULL: 1.2 and 1.3) */
    const char *tls_ciphers;   /* allowed ciphers, OpenSSL names separated by ':' (TLS 1.2
                                  cipher names and TLS 1.3 suite names may be mixed;
                                  NULL: OpenSSL's defaults) */
    int spin_us;               /* microseconds a thread spins before it sleeps: a pool
                                  thread out of work, the I/O thread while workers run
                                  (a reply is likely) or after it read input (more is
                                  likely); a hand-off to a spinning thread
                                  costs no wake-up (0: the default, CNB_SPIN_US_DEFAULT;
                                  negative: never spin) */
    int visible;               /* 1: offer PUBLISHED (a visible node, in nodes() on every
                                  node) and answer :global's connect protocol, so
                                  global:sync() completes with us connected; 0 (default):
                                  hidden, as C nodes usually are */
    const char *pg_scopes;     /* with visible: the :pg scopes this node takes part in,
                                  comma-separated (NULL: "pg"); see cnb_pg_join */
} cnb_node_opts_t;

/* The default of cnb_node_opts_t.spin_us. */
#define CNB_SPIN_US_DEFAULT 100

/* Creates a node: resolves its full name, reads the cookie, draws a random
 * non-zero creation. Nothing is opened yet. Returns 0 or CNB_EINVAL (bad or
 * missing name/cookie; a log line says which), CNB_ENOMEM. */
int cnb_node_create(const cnb_node_opts_t *opts, cnb_node_t **out);

/* Opens the listen socket, publishes the name to epmd (unless no_epmd) and
 * starts the I/O loop on a thread of its own. Returns 0, or CNB_ESYS (socket
 * errors), CNB_EEXIST (the name is taken in epmd), CNB_ENOCONN (no epmd). */
int cnb_node_start(cnb_node_t *node);

/* The same, but runs the I/O loop on the calling thread (a host program's
 * thread of its choice) and returns only when the node stops (cnb_node_stop
 * from another thread or a signal handler). Returns 0 or as cnb_node_start. */
int cnb_node_run(cnb_node_t *node);

/* Asks the node to stop: connections close, epmd registration ends. Safe from
 * any thread and from a signal handler. */
void cnb_node_stop(cnb_node_t *node);

/* Waits for the I/O thread to end (after cnb_node_stop). */
void cnb_node_join(cnb_node_t *node);

/* Stops, joins, frees. */
void cnb_node_destroy(cnb_node_t *node);

/* Re-reads the TLS certificate, key and CA files for connections made from
 * now on; live connections stay as they are. Safe from any thread (not from
 * a signal handler). Returns 0, CNB_EINVAL (a file did not load: a log line
 * says which, and the old files stay in use) or CNB_ESTATE (TLS is off). */
int cnb_node_tls_reload(cnb_node_t *node);

const char *cnb_node_name(const cnb_node_t *node);
uint32_t cnb_node_creation(const cnb_node_t *node);
unsigned cnb_node_port(const cnb_node_t *node);

/* Starts connecting to a node ("a@host", or "a@host:port" when epmd is not
 * used). Asynchronous: returns 0 once queued; on_node reports the outcome.
 * Any thread. */
int cnb_node_connect(cnb_node_t *node, const char *peer);

/* Like cnb_node_connect, and stays connected: whenever the connection is lost
 * or cannot be made, the node tries again with back-off (0.2 s doubling to
 * 10 s). These nodes are also the first choice for :global operations. */
int cnb_node_keep_connected(cnb_node_t *node, const char *peer);

/* Waits until the connection to peer ("a@host"; a ":port" suffix is ignored)
 * is up, or with peer NULL until any node is connected, for at most
 * timeout_ms. It starts nothing: call cnb_node_connect or
 * cnb_node_keep_connected first. Any thread but the I/O thread (not from a
 * callback of on_node, on_message or log, nor an inline worker's). Returns 0
 * (connected, maybe already before the call), CNB_ETIMEDOUT, CNB_ECLOSED (the
 * node is stopping), CNB_ESTATE (called on the I/O thread) or CNB_EINVAL. */
int cnb_node_wait_connected(cnb_node_t *node, const char *peer, unsigned timeout_ms);

/* Copies into out up to max of the keep-connected nodes (name@host), in the
 * order given; returns how many there are. Any thread. */
int cnb_node_anchors(cnb_node_t *node, char (*out)[MAXATOMLEN_UTF8], int max);

/* Closes the connection to a node, if any (like erlang:disconnect_node/1). */
int cnb_node_disconnect(cnb_node_t *node, const char *peer);

/* Copies into out up to max connected node names; returns how many are up. */
int cnb_node_connected(cnb_node_t *node, char (*out)[MAXATOMLEN_UTF8], int max);

/* A new pid / reference of this node (thread-safe). A pid's num and serial
 * (15 + 13 bits, as a peer without V4_NC holds them) count the pids made so
 * far, so they repeat after 2^28 pids; the runtime never gives a new worker
 * the pid of a live one. References (82 bits of counter) do not repeat in
 * one run. */
void cnb_node_make_pid(cnb_node_t *node, erlang_pid *pid);
void cnb_node_make_ref(cnb_node_t *node, erlang_ref *ref);

/* True when pid / ref names this node in this incarnation (same name and
 * creation). */
int cnb_node_is_local_pid(const cnb_node_t *node, const erlang_pid *pid);
int cnb_node_is_local_ref(const cnb_node_t *node, const erlang_ref *ref);

/* Sending. Any thread; never blocks on the network: the message is queued to
 * the I/O thread, which connects on demand. msg is ETF with the 131 version
 * byte (an ei_x_buff's buff/index). Returns 0 once queued, CNB_EINVAL,
 * CNB_ENOMEM, CNB_ECLOSED (node stopping). Delivery is not confirmed, as with
 * Erlang's `!`. from: the sender, which REG_SEND and ALIAS_SEND carry (NULL:
 * a fresh pid of this node); cnb_send ignores it, since the distribution
 * protocol's SEND names no sender (the receiver cannot see one). */
int cnb_send(cnb_node_t *node, const erlang_pid *from, const erlang_pid *to,
             const char *msg, size_t len);
int cnb_reg_send(cnb_node_t *node, const erlang_pid *from, const char *peer,
                 const char *name, const char *msg, size_t len);
int cnb_alias_send(cnb_node_t *node, const erlang_pid *from, const erlang_ref *alias,
                   const char *msg, size_t len);

/* Sends any control message: ctrl is the control tuple and payload the optional
 * message/reason, both ETF with the 131 version byte; payload may be NULL. */
int cnb_send_ctrl(cnb_node_t *node, const char *peer, const char *ctrl, size_t ctrl_len,
                  const char *payload, size_t payload_len);

/* Peer capability flags of a connected node (0 when not connected). */
uint64_t cnb_node_peer_flags(cnb_node_t *node, const char *peer);

/* Logging through the node's logger (opts.log, else stderr; one line per event). */
void cnb_node_log(const cnb_node_t *node, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ======================================================================
 * The process runtime: C workers with real pids, mailboxes, names, links,
 * monitors and gen_server manners. A worker handles one message at a time, in
 * arrival order, on a small pool of threads; callbacks never run on the I/O
 * thread. Terms are ETF with the 131 version byte (ei_x_buff buff/index).
 * ====================================================================== */

typedef struct cnb_proc cnb_proc_t;

/* The From of a gen_server call: the caller and the call's tag. Copy it to
 * reply later, from any thread, with cnb_reply. */
typedef struct cnb_from {
    erlang_pid pid;
    size_t tag_len;
    char tag[1100]; /* the tag term, ETF without version byte */
} cnb_from_t;

/* Callback results. A negative CNB_E* code makes the worker exit with reason
 * {callback_failed, Callback, Reason}: Callback is the atom handle_call,
 * handle_cast or handle_info, Reason the code's atom from cnb_erratom
 * (CNB_ENOMEM: enomem, CNB_ETIMEDOUT: timeout, ...) or, for a code not in
 * cnb_common.h's list, {unknown_error, Code}. Its links and monitors fire. */
enum cnb_cb_result {
    CNB_CONTINUE = 0, /* go on (handle_call: no reply now; reply later) */
    CNB_REPLY = 1,    /* handle_call: send *reply to the caller now */
    CNB_STOP = 2      /* stop; reason from cnb_proc_set_reason (default normal);
                         handle_call may also fill *reply, sent first */
};

typedef struct cnb_worker_ops {
    /* Runs in cnb_spawn on the caller's thread. Return 0 (and set *state), or
     * a negative code: cnb_spawn then fails with it and nothing is started. */
    int (*init)(cnb_proc_t *self, void *arg, void **state);
    /* gen_server:call. req: the request. reply: an ei_x_buff holding a version
     * byte; encode the reply term into it and return CNB_REPLY. */
    int (*handle_call)(cnb_proc_t *self, void *state, const char *req, size_t len,
                       const cnb_from_t *from, ei_x_buff *reply);
    int (*handle_cast)(cnb_proc_t *self, void *state, const char *msg, size_t len);
    /* Any other message, {'EXIT', Pid, Reason} when trapping exits, and
     * {'DOWN', Ref, process, Obj, Reason} for monitors the worker holds. */
    int (*handle_info)(cnb_proc_t *self, void *state, const char *msg, size_t len);
    /* Always runs when the worker ends (reason given). Free the state here. */
    void (*terminate)(cnb_proc_t *self, void *state, const char *reason, size_t len);
    /* Optional: a term describing the state, for sys:get_state/get_status. */
    int (*format_status)(cnb_proc_t *self, void *state, ei_x_buff *out);
} cnb_worker_ops_t;

typedef struct cnb_spawn_opts {
    const char *name;        /* register locally under this name (NULL: none) */
    int trap_exit;           /* start trapping exits */
    const erlang_pid *link;  /* link to this pid at start (spawn_link) */
    /* Inline worker (issue 19): a signal that arrives from the network while
     * the worker is idle is handled on the I/O thread itself, at once, with
     * no hand-off to a pool thread and back (a call's reply leaves in the same
     * loop turn). When it is busy on a pool thread, signals queue as for any
     * worker; never two threads at once, signal order unchanged. Contract:
     * its callbacks must not block nor take long, as every connection of the
     * node waits meanwhile; calls that wait for another node (cnb_call,
     * cnb_rpc, cnb_global_*, cnb_node_wait_connected) fail with CNB_ESTATE
     * there instead of stalling the I/O thread for good. */
    int run_inline;
} cnb_spawn_opts_t;

/* Starts a worker: runs init, then registers the name (if any) and makes the
 * pid live. Any thread. The pid exists while init runs: signals sent to it
 * then (a monitor from :global when init registers a global name) wait in its
 * mailbox; if init fails they are answered as for a process that ended with
 * the reason init set with cnb_proc_set_reason (default init_failed). Returns
 * 0 and *pid, or: CNB_EEXIST (name taken; *pid is the owner), the code init
 * returned, CNB_ENOMEM, CNB_ECLOSED (stopping). */
int cnb_spawn(cnb_node_t *node, const cnb_worker_ops_t *ops, void *arg,
              const cnb_spawn_opts_t *opts, erlang_pid *pid);

/* 1 when the calling thread is node's I/O thread (an inline worker's
 * callback, on_message, on_node): nothing here may block. */
int cnb_on_io_thread(const cnb_node_t *node);

/* ----------------------------------------------------------------------
 * Worker types: C workers that BEAM code starts with Erlang's own remote
 * spawn, so that they can be children of BEAM supervisors:
 *   erlang:spawn_request(CNode, Type, start, Args, [link, monitor])
 *   Node.spawn_link(cnode, Type, :start, args)
 *   cnode_bridge:start_link(CNode, Type, Args)   (init's result as {ok, Pid}
 *                                                 or {error, Reason})
 * A SPAWN_REQUEST for Type:start/N runs the type's init (on a thread of its
 * own, never the I/O thread) with arg pointing to a cnb_spawn_args_t; the
 * requester's link and monitor are set up before the worker runs, and the
 * spawn reply goes out before anything the worker sends afterwards. If init
 * fails, the requester gets the error `init_failed` (and, when it passed the
 * option `cnb_error_reason`, the message {cnb_spawn_error, ReqId, Reason}
 * just before it, Reason as set with cnb_proc_set_reason, else init_failed).
 * A spawn of anything not registered as a type is refused with `notsup`.
 * ---------------------------------------------------------------------- */

/* What a type's init gets as arg. Valid during init only: copy what it keeps. */
typedef struct cnb_spawn_args {
    const char *args;        /* the argument list, ETF with version byte */
    size_t len;
    int argc;                /* its length */
    const erlang_pid *parent; /* the process that asked for the spawn */
} cnb_spawn_args_t;

/* Registers ops (kept by reference: it must outlive the node) as the type
 * named type (an atom's text: Module in the spawn request). Any thread, before
 * or after the node starts. Returns 0, CNB_EEXIST (a type of that name
 * exists), CNB_EINVAL (no ops, empty or too long a name), CNB_ENOMEM. */
int cnb_register_type(cnb_node_t *node, const char *type, const cnb_worker_ops_t *ops);

/* Inside callbacks: the worker itself. */
const erlang_pid *cnb_self(const cnb_proc_t *self);
cnb_node_t *cnb_proc_node(const cnb_proc_t *self);
/* Sets the exit reason used when a callback returns CNB_STOP. Returns 0,
 * CNB_EINVAL (not a term with its version byte), or CNB_ENOMEM (then the
 * worker ends with out_of_memory). */
int cnb_proc_set_reason(cnb_proc_t *self, const char *reason, size_t len);
int cnb_trap_exit(cnb_proc_t *self, int on);
/* Links and monitors (Erlang semantics; UNLINK_ID protocol with peers that
 * have it). A link or monitor to a pid that does not exist gets an EXIT /
 * DOWN noproc; to a node that cannot be reached, noconnection. These take
 * effect at once, and only inside the worker's own callbacks (self is the
 * worker the callback runs for); from any other thread use cnb_worker_*
 * below. */
int cnb_link(cnb_proc_t *self, const erlang_pid *to);
int cnb_unlink(cnb_proc_t *self, const erlang_pid *to);
int cnb_monitor(cnb_proc_t *self, const erlang_pid *to, erlang_ref *ref);
int cnb_monitor_name(cnb_proc_t *self, const char *name, const char *node, erlang_ref *ref);
int cnb_demonitor(cnb_proc_t *self, const erlang_ref *ref);

/* The same four from any thread, on behalf of the worker whose pid is
 * worker (a worker of this node). A worker's links and monitors belong to
 * the thread running it, so these do not act at once: the request is queued
 * in the worker's mailbox, behind what is already there, and the worker
 * carries it out on its own thread before it takes the next message, as if
 * its next callback began with cnb_link (etc.). So from another thread a
 * link is in place, and a DOWN or EXIT can come, only once the worker has
 * reached it; if the worker ends first the request is dropped (no link is
 * made, nobody is told). cnb_worker_monitor gives the monitor's reference
 * at once (*ref, may be NULL): the DOWN will carry it and
 * cnb_worker_demonitor takes it. Inside a callback of that same worker they
 * work too, queued after the current message. Returns 0 once queued,
 * CNB_ENOPROC (no live worker has that pid), CNB_EINVAL, CNB_ENOMEM. (An
 * error inside the worker, out of memory, is logged.) To end a worker from
 * outside, send it an exit signal with cnb_exit. */
int cnb_worker_link(cnb_node_t *node, const erlang_pid *worker, const erlang_pid *to);
int cnb_worker_unlink(cnb_node_t *node, const erlang_pid *worker, const erlang_pid *to);
int cnb_worker_monitor(cnb_node_t *node, const erlang_pid *worker, const erlang_pid *to,
                       erlang_ref *ref);
int cnb_worker_demonitor(cnb_node_t *node, const erlang_pid *worker, const erlang_ref *ref);

/* Any thread. */
/* Replies to a gen_server call (through the caller's alias when it has one):
 * from the callback with CNB_CONTINUE, or later from any thread with a copy
 * of *from. */
int cnb_reply(cnb_node_t *node, const cnb_from_t *from, const char *term, size_t len);
/* exit(To, Reason) sent from `from` (NULL: a fresh pid of this node), from
 * any thread: an exit signal, as erlang:exit/2 sends (kill cannot be
 * trapped; a worker of this node takes it through its mailbox). */
int cnb_exit(cnb_node_t *node, const erlang_pid *from, const erlang_pid *to,
             const char *reason, size_t len);
/* Local registered names. */
int cnb_register(cnb_node_t *node, const char *name, const erlang_pid *pid);
int cnb_unregister(cnb_node_t *node, const char *name);
int cnb_whereis(cnb_node_t *node, const char *name, erlang_pid *pid); /* 0 or CNB_ENOENT */
/* Sends msg to `to` after ms milliseconds; *tref (may be NULL) can cancel it. */
int cnb_send_after(cnb_node_t *node, unsigned ms, const erlang_pid *to, const char *msg,
                   size_t len, uint64_t *tref);
int cnb_cancel_timer(cnb_node_t *node, uint64_t tref); /* 0, or CNB_ENOENT (fired/gone) */

/* gen_server:call(Dest, Req, Timeout) from C: Dest is a pid (to), or a name
 * registered on `peer` (to NULL). Blocks the calling thread (avoid calling a
 * worker of this node from a pool thread when all pool threads may be
 * waiting). On success returns 0 and *reply holds the reply term (with version
 * byte; ei_x_free it). Errors: CNB_ETIMEDOUT (a late reply is dropped),
 * CNB_ENOPROC (no such process, or it exited: *reply holds the exit reason),
 * CNB_ENOCONN (node unreachable), CNB_EINVAL, CNB_ENOMEM, CNB_ESTATE (called
 * on the I/O thread: from an inline worker's callback or on_message, where
 * the reply could never be read). */
int cnb_call(cnb_node_t *node, const erlang_pid *to, const char *name, const char *peer,
             const char *req, size_t len, unsigned timeout_ms, ei_x_buff *reply);
/* rpc:call(Peer, Mod, Fun, Args) through the peer's rex server; args is the
 * ETF of the argument list. Returns as cnb_call (*reply holds the result, or
 * {badrpc, Reason} as Erlang's rpc gives). */
int cnb_rpc(cnb_node_t *node, const char *peer, const char *mod, const char *fun,
            const char *args, size_t len, unsigned timeout_ms, ei_x_buff *reply);

/* ======================================================================
 * :pg process groups (visible nodes only: opts.visible). The node runs one
 * scope process per scope in opts.pg_scopes (registered under the scope's
 * name, as pg:start_link(Scope) does) that speaks pg's protocol with every
 * node's scope of that name, so a C worker that joins a group is listed by
 * pg:get_members/2 on every node and gets what is sent to the group. A
 * worker's memberships end when it ends; when this node goes, every other
 * node drops them itself. Groups are any term (ETF with version byte); scope
 * NULL means "pg". Any thread.
 * ====================================================================== */

/* Joins the local worker pid to group (again, if already a member: pg counts
 * each join). Returns 0, CNB_EINVAL (not a local pid, bad term), CNB_ESTATE
 * (the node is not visible), CNB_ENOENT (no such scope), CNB_ENOMEM. */
int cnb_pg_join(cnb_node_t *node, const char *scope, const char *group, size_t len,
                const erlang_pid *pid);
/* Undoes one join. Returns 0, CNB_ENOENT (pid was not a member), or as join. */
int cnb_pg_leave(cnb_node_t *node, const char *scope, const char *group, size_t len,
                 const erlang_pid *pid);
/* The members of group that this node knows (its own and those the other
 * nodes' scopes told it of) as an ETF list of pids in *out (made here with a
 * version byte; the caller frees it with ei_x_free, also on an error). Returns
 * 0, CNB_ESTATE, CNB_ENOENT (no such scope), CNB_EINVAL, CNB_ENOMEM. */
int cnb_pg_members(cnb_node_t *node, const char *scope, const char *group, size_t len,
                   ei_x_buff *out);

/* ======================================================================
 * :global names for C workers. Each operation runs `global` on a connected
 * Erlang node (the keep-connected anchors first, then any other connected
 * node, until one answers), so the C node stays hidden and the name maps to
 * the worker's own pid: every node's global_name_server then monitors that
 * pid through its own connection to this node, and drops the name the moment
 * the worker ends or this node goes away. Names are any term (ETF with version
 * byte). When no node at all is connected yet, a call first waits within
 * timeout_ms for one (as cnb_node_wait_connected(node, NULL, ...)), so a
 * registration made just after cnb_node_keep_connected does not fail with
 * CNB_ENOCONN while the connection is still being made; with any node
 * connected it goes on at once. Calls block the calling thread for at most
 * timeout_ms for that wait, then at most timeout_ms per node tried.
 * On a visible node (opts.visible) there is no anchor: register,
 * re_register and unregister run global's own protocol from this node (its
 * locks on every known node, then the change on each: when register returns
 * 0, global:whereis_name/1 on every node that knows this one returns the
 * pid), one request at a time, within timeout_ms (CNB_ETIMEDOUT: not done;
 * see docs/ARCHITECTURE.md, "Visible mode"); whereis, send and
 * registered_names read the node's own copy of the name table. Every call
 * that waits returns CNB_ESTATE on the I/O thread, as cnb_call does.
 * ====================================================================== */

enum cnb_global_resolve {
    CNB_GLOBAL_RANDOM_EXIT = 0,   /* global:random_exit_name/3 (the default): the
                                     loser of a conflict is killed */
    CNB_GLOBAL_RANDOM_NOTIFY = 1, /* random_notify_name: the loser gets
                                     {global_name_conflict, Name} */
    CNB_GLOBAL_NOTIFY_ALL = 2     /* notify_all_name: both get
                                     {global_name_conflict, Name, OtherPid} and
                                     the name is unregistered */
};

/* Registers pid under name. Returns 0 (yes), CNB_EEXIST (no: the name is
 * taken; *owner, if given, is its pid when it can be read), CNB_ENOCONN (no
 * Erlang node answered), CNB_EINVAL. */
int cnb_global_register(cnb_node_t *node, const char *name, size_t len, const erlang_pid *pid,
                        int resolve, unsigned timeout_ms, erlang_pid *owner);
/* global:re_register_name/3: takes the name whoever has it. */
int cnb_global_re_register(cnb_node_t *node, const char *name, size_t len,
                           const erlang_pid *pid, int resolve, unsigned timeout_ms);
int cnb_global_unregister(cnb_node_t *node, const char *name, size_t len, unsigned timeout_ms);
/* 0 and *pid, or CNB_ENOENT (undefined), CNB_ENOCONN. */
int cnb_global_whereis(cnb_node_t *node, const char *name, size_t len, erlang_pid *pid,
                       unsigned timeout_ms);
/* whereis, then send. CNB_ENOENT when the name is not registered. */
int cnb_global_send(cnb_node_t *node, const char *name, size_t len, const char *msg,
                    size_t mlen, unsigned timeout_ms);
/* The list term of global:registered_names() into *out (version byte; free it). */
int cnb_global_registered_names(cnb_node_t *node, unsigned timeout_ms, ei_x_buff *out);

/* How many workers are alive. */
size_t cnb_node_process_count(cnb_node_t *node);

/* Clean shutdown: every worker terminates with reason `shutdown` (terminate
 * runs; links and monitors fire with shutdown), then the node stops. Waits at
 * most timeout_ms for the workers. Any thread except a pool thread. */
int cnb_node_shutdown(cnb_node_t *node, unsigned timeout_ms);

#ifdef __cplusplus
}
#endif
#endif /* CNODE_BRIDGE_H */
