/* cnode_bridge.h: the whole public C API of libcnode_bridge, a C node that joins
 * an Erlang/Elixir cluster. This part is the node and its distribution layer:
 * names, epmd, connections in and out, ticks, sending control messages. The
 * process runtime (workers, links, monitors, gen_server manners) builds on it.
 * Implementation: the files in cnode/. Tests: tests/unit/test_handshake.c,
 * tests/unit/test_frame.c, tests/integration/dist_*_tests.erl. */
#ifndef CNODE_BRIDGE_H
#define CNODE_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

#include <ei.h>

#include "cnb_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnb_node cnb_node_t;

enum cnb_log_level {
    CNB_LOG_ERROR = 0,
    CNB_LOG_WARNING = 1,
    CNB_LOG_INFO = 2,
    CNB_LOG_DEBUG = 3
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
    CNB_OP_UNLINK_ID_ACK = 36
};

/* One decoded incoming control message, handed to on_message on the I/O thread.
 * Everything it points to is valid only during the callback. The _TT variants
 * are reported with the op of their plain form (trace tokens are ignored), the
 * PAYLOAD_ variants with the op of their plain form and the reason in payload. */
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
} cnb_msg_t;

typedef void (*cnb_on_message_fn)(cnb_node_t *node, const cnb_msg_t *msg, void *user);
/* A connection to `peer` came up (up = 1) or went down (up = 0). I/O thread. */
typedef void (*cnb_on_node_fn)(cnb_node_t *node, const char *peer, int up, void *user);

typedef struct cnb_node_opts {
    const char *sname;       /* short name "c1" or "c1@host" (host: the short host name) */
    const char *name;        /* long name "c1@host.example" or "c1" (host: the FQDN) */
    const char *cookie;      /* the cookie text */
    const char *cookie_file; /* or a file holding it (like ~/.erlang.cookie) */
    unsigned port;           /* listen port; 0: any free port */
    int no_epmd;             /* do not register with epmd; peers need name@host:port */
    int ipv6;                /* listen on IPv6 (dual stack) and prefer IPv6 for peers */
    unsigned net_ticktime;   /* seconds (default 60, as net_kernel's); ticks at 1/4 */
    unsigned net_setuptime;  /* seconds a handshake may take (default 7) */
    size_t max_message;      /* largest incoming message in bytes (default 256 MiB) */
    size_t max_pending;      /* bytes queued per peer while connecting (default 64 MiB) */
    int log_level;           /* enum cnb_log_level (default CNB_LOG_INFO) */
    cnb_on_message_fn on_message; /* messages the node does not answer itself */
    cnb_on_node_fn on_node;
    void *user;
} cnb_node_opts_t;

/* Creates a node: resolves its full name, reads the cookie, draws a random
 * non-zero creation. Nothing is opened yet. Returns 0 or CNB_EINVAL (bad or
 * missing name/cookie; a log line says which), CNB_ENOMEM. */
int cnb_node_create(const cnb_node_opts_t *opts, cnb_node_t **out);

/* Opens the listen socket, publishes the name to epmd (unless no_epmd) and
 * starts the I/O loop on a thread of its own. Returns 0, or CNB_ESYS (socket
 * errors), CNB_EEXIST (the name is taken in epmd), CNB_ENOCONN (no epmd). */
int cnb_node_start(cnb_node_t *node);

/* Asks the node to stop: connections close, epmd registration ends. Safe from
 * any thread and from a signal handler. */
void cnb_node_stop(cnb_node_t *node);

/* Waits for the I/O thread to end (after cnb_node_stop). */
void cnb_node_join(cnb_node_t *node);

/* Stops, joins, frees. */
void cnb_node_destroy(cnb_node_t *node);

const char *cnb_node_name(const cnb_node_t *node);
uint32_t cnb_node_creation(const cnb_node_t *node);
unsigned cnb_node_port(const cnb_node_t *node);

/* Starts connecting to a node ("a@host", or "a@host:port" when epmd is not
 * used). Asynchronous: returns 0 once queued; on_node reports the outcome.
 * Any thread. */
int cnb_node_connect(cnb_node_t *node, const char *peer);

/* Closes the connection to a node, if any (like erlang:disconnect_node/1). */
int cnb_node_disconnect(cnb_node_t *node, const char *peer);

/* Copies into out up to max connected node names; returns how many are up. */
int cnb_node_connected(cnb_node_t *node, char (*out)[MAXATOMLEN_UTF8], int max);

/* A new pid / reference of this node (thread-safe, never reused in one run). */
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
 * Erlang's `!`. */
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

/* Logging through the node's logger (stderr, one line per event). */
void cnb_node_log(const cnb_node_t *node, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#ifdef __cplusplus
}
#endif
#endif /* CNODE_BRIDGE_H */
