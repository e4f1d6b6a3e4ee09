/* loop_int.h: what the I/O thread's files (loop.c, conn_life.c, conn_out.c,
 * conn_io.c, inbox.c, transport.c) share beyond node_int.h. All run on the I/O thread.
 * Tests: tests/unit/test_conn_race.c, tests/integration/dist_tests.erl. */
#ifndef CNB_LOOP_INT_H
#define CNB_LOOP_INT_H

#include <sys/socket.h>

#include "node_int.h"

/* conn_life.c */
/* A connection on fd (-1: none yet), in the node's list. NULL: no memory. */
cnb_conn_t *cnb__conn_new(cnb_node_t *n, int fd);
void cnb__conn_epoll_add(cnb_node_t *n, cnb_conn_t *c, uint32_t events);
/* Arms (want_out) or disarms EPOLLOUT for c. */
void cnb__conn_events(cnb_node_t *n, cnb_conn_t *c, int want_out);
/* "addr:port" of sa for log lines. */
void cnb__addr_text(const struct sockaddr *sa, char *out, size_t cap);
/* Accepts what the listener has (at most 64 a turn). */
void cnb__accept(cnb_node_t *n);
/* Starts the distribution handshake on c, connected (and through TLS when
 * c->ssl): the initiator sends its name. */
void cnb__conn_hs_begin(cnb_node_t *n, cnb_conn_t *c);
/* C_TLS: one step of the TLS handshake on readiness; once done, the
 * distribution handshake begins inside TLS. Closes c when it fails. */
void cnb__conn_tls_step(cnb_node_t *n, cnb_conn_t *c);
/* c has completed the handshake and no other live connection to its peer
 * exists: it becomes the peer's connection and carries what was held. */
void cnb__conn_up(cnb_node_t *n, cnb_conn_t *c);
/* Frees the connections closed this loop turn. */
void cnb__conn_bury(cnb_node_t *n);

/* conn_out.c */
/* Splits "alive@host[:port]" (or alive@[v6]:port) into its parts and
 * name = alive@host (each CNB_NAME_MAX). Returns 0 or CNB_EINVAL. */
int cnb__parse_peer(const char *spec, char *alive, char *host, unsigned *port, char *name);
/* C_EPMD_WAIT: reads epmd's PORT2_RESP from c's input; once whole, dials the
 * port it gives. Returns 0 (waiting, or dialling), -1 when c was closed. */
int cnb__epmd_reply_in(cnb_node_t *n, cnb_conn_t *c);
/* EPOLLOUT (or an error) on c: completes a connect, else flushes. */
void cnb__conn_writable(cnb_node_t *n, cnb_conn_t *c);
/* Keep-connected peers: added once, tried at once, then whenever not up,
 * with back-off (keep_check, on the loop's timer). */
void cnb__keep_add(cnb_node_t *n, const char *spec);
void cnb__keep_check(cnb_node_t *n);

/* conn_io.c */
/* Appends ch to c's write queue (the caller has it flushed). */
void cnb__conn_push(cnb_conn_t *c, cnb_chunk_t *ch);
/* Writes handshake bytes, then (once up) queued frames with one sendmsg per
 * batch. Returns 0, or -1 when the connection was closed. */
int cnb__conn_flush(cnb_node_t *n, cnb_conn_t *c);
/* Reads what c has (up to a per-turn budget) and handles it. */
void cnb__conn_readable(cnb_node_t *n, cnb_conn_t *c);
cnb_frag_limits_t cnb__frag_limits(const cnb_node_t *n);

/* inbox.c: routes the frames and carries out the requests other threads
 * handed in, in the order they were given (nothing when none wait). */
void cnb__drain_inbox(cnb_node_t *n);
/* Before the I/O thread blocks: 1 when the inbox is empty, and from then on
 * a hand-in writes the eventfd; 0 when something waits (do not block). */
int cnb__inbox_sleep(cnb_node_t *n);
/* After it blocked: awake again, it drains the inbox before it next blocks,
 * so a hand-in needs no eventfd write. */
void cnb__inbox_awake(cnb_node_t *n);
/* The eventfd fired: consumes its count. */
void cnb__inbox_woken(cnb_node_t *n);

#endif /* CNB_LOOP_INT_H */
