/* transport.h: a connection's bytes through plain TCP or TLS (an OpenSSL SSL
 * on the same non-blocking socket), so the rest of the connection layer
 * reads and writes one way. Runs on the I/O thread only.
 * Tests: tests/integration/tls_tests.erl, dist_tests.erl. */
#ifndef CNB_TRANSPORT_H
#define CNB_TRANSPORT_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "node_int.h"

/* Results of cnb__tx_read / cnb__tx_writev besides a byte count. */
#define CNB_TX_EOF 0    /* read: the peer closed */
#define CNB_TX_AGAIN -1 /* nothing now: wait for the socket (c's flags say which way) */
#define CNB_TX_ERROR -2 /* the connection is broken; why says how */

/* Reads up to cap bytes. Returns the count (> 0), CNB_TX_EOF, CNB_TX_AGAIN
 * or CNB_TX_ERROR (why, wcap). A TLS read that needs to write first sets
 * c->tx_rd_wants_out: the caller arms EPOLLOUT and reads again when the
 * socket takes data. */
ssize_t cnb__tx_read(cnb_conn_t *c, void *buf, size_t cap, char *why, size_t wcap);

/* Writes what it can of iov[0..cnt) in order. Returns the bytes taken
 * (> 0; 0 only for cnt 0), CNB_TX_AGAIN (nothing taken: the socket is
 * full, or a TLS write waits for input, c->tx_wr_wants_in) or
 * CNB_TX_ERROR. Over TLS small pieces are copied into a stage of up to one
 * record and count as taken; what the socket did not take of it stays
 * there (cnb__tx_backlog) and goes first on the next call, which may have
 * cnt 0. A large piece is written in place: after CNB_TX_AGAIN the caller
 * offers the same bytes again (the queue's front does not change until
 * written), as OpenSSL requires. */
ssize_t cnb__tx_writev(cnb_conn_t *c, const struct iovec *iov, int cnt, char *why, size_t wcap);

/* True when staged TLS bytes still wait for the socket. */
int cnb__tx_backlog(const cnb_conn_t *c);

/* One step of the TLS handshake. Returns 1 when it is done, 0 when it waits
 * (c->tx_want_out: for the socket to take data, else for input), or -1
 * with the cause in why. The acceptor first looks at the peer's first byte:
 * a peer that is not speaking TLS is named as such. */
int cnb__tx_handshake(cnb_conn_t *c, char *why, size_t wcap);

/* True when TLS holds input already taken off the socket (epoll will not
 * report it): the caller reads again without waiting. */
int cnb__tx_pending(const cnb_conn_t *c);

/* Ends TLS on c (a close_notify when the session is sound) and frees it;
 * the socket stays for the caller to close. No-op on plain TCP. */
void cnb__tx_end(cnb_conn_t *c);

#endif /* CNB_TRANSPORT_H */
