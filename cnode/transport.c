/* transport.c: reading and writing a connection through plain TCP or its
 * OpenSSL SSL, non-blocking; the TLS handshake step (see transport.h).
 * Tests: tests/integration/tls_tests.erl, dist_tests.erl. */
#include "transport.h"
#include "tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A TLS record's payload at most: what the stage gathers before writing. */
#define TX_STAGE 16384
/* A TLS record starts with its content type: 22 handshake, 21 alert. */
#define TLS_HANDSHAKE_RECORD 0x16

/* After an SSL call on c returned ret <= 0: CNB_TX_AGAIN (with the wait
 * direction noted in *wants_out) or CNB_TX_ERROR / CNB_TX_EOF. */
static ssize_t ssl_failed(cnb_conn_t *c, int ret, int *wants_out, char *why, size_t wcap)
{
    int e = SSL_get_error(c->ssl, ret);
    if (e == SSL_ERROR_WANT_READ) {
        *wants_out = 0;
        return CNB_TX_AGAIN;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        *wants_out = 1;
        return CNB_TX_AGAIN;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        return CNB_TX_EOF;
    }
    if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
        if (ret == 0 || errno == 0 || errno == ECONNRESET || errno == EPIPE) {
            c->tx_fatal = 1;
            snprintf(why, wcap, "%s", ret == 0 || errno == 0 ? "closed by peer" : strerror(errno));
            return ret == 0 || errno == 0 ? CNB_TX_EOF : CNB_TX_ERROR;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            *wants_out = 0;
            return CNB_TX_AGAIN;
        }
        snprintf(why, wcap, "%s", strerror(errno));
        c->tx_fatal = 1;
        return CNB_TX_ERROR;
    }
    c->tx_fatal = 1;
    cnb__tls_why(c->ssl, ret, why, wcap);
    return CNB_TX_ERROR;
}

/* One SSL_read into rbuf or (rbuf NULL) SSL_write from wbuf, of up to len
 * bytes. Returns the count (> 0), or as ssl_failed. */
static ssize_t ssl_io(cnb_conn_t *c, void *rbuf, const void *wbuf, size_t len, int *wants_out,
                      char *why, size_t wcap)
{
    int n = len > (size_t)1 << 30 ? 1 << 30 : (int)len;
    ERR_clear_error();
    int r = rbuf ? SSL_read(c->ssl, rbuf, n) : SSL_write(c->ssl, wbuf, n);
    return r > 0 ? r : ssl_failed(c, r, wants_out, why, wcap);
}

/* After a plain read or send failed (errno): 0 to try again (EINTR),
 * CNB_TX_AGAIN, or CNB_TX_ERROR with why. */
static ssize_t sys_failed(char *why, size_t wcap)
{
    if (errno == EINTR)
        return 0;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        return CNB_TX_AGAIN;
    snprintf(why, wcap, "%s", strerror(errno));
    return CNB_TX_ERROR;
}

ssize_t cnb__tx_read(cnb_conn_t *c, void *buf, size_t cap, char *why, size_t wcap)
{
    if (!c->ssl) {
        for (;;) {
            ssize_t r = read(c->ev.fd, buf, cap);
            if (r > 0)
                return r;
            if (r == 0)
                return CNB_TX_EOF;
            if ((r = sys_failed(why, wcap)))
                return r;
        }
    }
    int wants_out = 0;
    ssize_t rc = ssl_io(c, buf, NULL, cap, &wants_out, why, wcap);
    if (rc == CNB_TX_AGAIN)
        c->tx_rd_wants_out = wants_out;
    return rc;
}

/* One SSL_write of len bytes at p. Returns what it took (> 0), or as
 * cnb__tx_writev's failures. */
static ssize_t ssl_write(cnb_conn_t *c, const uint8_t *p, size_t len, char *why, size_t wcap)
{
    int wants_out = 1;
    ssize_t rc = ssl_io(c, NULL, p, len, &wants_out, why, wcap);
    if (rc == CNB_TX_EOF) {
        snprintf(why, wcap, "closed by peer");
        rc = CNB_TX_ERROR;
    }
    if (rc == CNB_TX_AGAIN)
        c->tx_wr_wants_in = !wants_out;
    return rc;
}

/* Writes the staged bytes. Returns 0 when they are all out, else as
 * ssl_write's failures (the stage keeps the rest: OpenSSL wants the same
 * bytes again). */
static int stage_out(cnb_conn_t *c, char *why, size_t wcap)
{
    cnb_buf_t *st = &c->tx_stage;
    while (st->off < st->len) {
        ssize_t w = ssl_write(c, st->data + st->off, st->len - st->off, why, wcap);
        if (w < 0)
            return (int)w;
        st->off += (size_t)w;
    }
    st->off = st->len = 0;
    return 0;
}

/* TLS: small pieces are gathered into c->tx_stage, so a batch of small
 * frames becomes one record and one send, as sendmsg makes them one send on
 * TCP; a piece of TX_STAGE bytes or more is written from where it lies (the
 * queue's front stays put until written, as OpenSSL wants after WANT_WRITE).
 * Bytes copied into the stage count as written. */
static ssize_t tls_writev(cnb_conn_t *c, const struct iovec *iov, int cnt, char *why,
                          size_t wcap)
{
    ssize_t taken = 0;
    int rc = stage_out(c, why, wcap);
    if (rc)
        return rc;
    for (int i = 0; i < cnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        if (len >= TX_STAGE) {
            if (c->tx_stage.len && (rc = stage_out(c, why, wcap)))
                return taken ? taken : rc;
            ssize_t w = ssl_write(c, p, len, why, wcap);
            if (w < 0)
                return taken ? taken : w;
            return taken + w;
        }
        if (c->tx_stage.len + len > TX_STAGE && (rc = stage_out(c, why, wcap)))
            return taken ? taken : rc;
        if (cnb__buf_put(&c->tx_stage, p, len)) {
            snprintf(why, wcap, "out of memory");
            return CNB_TX_ERROR;
        }
        taken += (ssize_t)len;
    }
    rc = stage_out(c, why, wcap);
    return taken ? taken : rc;
}

int cnb__tx_backlog(const cnb_conn_t *c)
{
    return c->tx_stage.len > c->tx_stage.off;
}

ssize_t cnb__tx_writev(cnb_conn_t *c, const struct iovec *iov, int cnt, char *why, size_t wcap)
{
    if (!c->ssl) {
        struct msghdr mh;
        memset(&mh, 0, sizeof(mh));
        mh.msg_iov = (struct iovec *)iov;
        mh.msg_iovlen = (size_t)cnt;
        for (;;) {
            ssize_t w = sendmsg(c->ev.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w >= 0 || (w = sys_failed(why, wcap)))
                return w;
        }
    }
    return tls_writev(c, iov, cnt, why, wcap);
}

int cnb__tx_handshake(cnb_conn_t *c, char *why, size_t wcap)
{
    if (!c->initiator && !c->tx_peeked) {
        unsigned char b;
        ssize_t r = recv(c->ev.fd, &b, 1, MSG_PEEK);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            c->tx_want_out = 0;
            return 0;
        }
        if (r <= 0) {
            snprintf(why, wcap, "TLS: %s before the TLS handshake",
                     r == 0 ? "closed by peer" : strerror(errno));
            return -1;
        }
        if (b != TLS_HANDSHAKE_RECORD) {
            snprintf(why, wcap,
                     "TLS: the peer speaks plain TCP distribution, not TLS (this node runs "
                     "inet_tls_dist)");
            return -1;
        }
        c->tx_peeked = 1;
    }
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1)
        return 1;
    int wants_out = 0;
    ssize_t rc = ssl_failed(c, r, &wants_out, why, wcap);
    if (rc == CNB_TX_AGAIN) {
        c->tx_want_out = wants_out;
        return 0;
    }
    if (rc == CNB_TX_ERROR && strncmp(why, "TLS:", 4)) { /* a system error */
        char sys[120];
        snprintf(sys, sizeof(sys), "%s", why);
        snprintf(why, wcap, "TLS: %s during the TLS handshake (the peer refused it)", sys);
    } else if (rc == CNB_TX_EOF) {
        /* The peer hung up mid-handshake: its side refused something (it
         * logs which) or it is not a TLS node. */
        long vr = SSL_get_verify_result(c->ssl);
        if (vr != X509_V_OK)
            cnb__tls_why(c->ssl, r, why, wcap);
        else
            snprintf(why, wcap,
                     "TLS: the peer closed the connection during the TLS handshake (it refused "
                     "our certificate, or it does not speak TLS)");
    }
    return -1;
}

int cnb__tx_pending(const cnb_conn_t *c)
{
    return c->ssl && SSL_has_pending(c->ssl);
}

void cnb__tx_end(cnb_conn_t *c)
{
    if (!c->ssl)
        return;
    if (!c->tx_fatal && SSL_is_init_finished(c->ssl)) {
        ERR_clear_error();
        (void)SSL_shutdown(c->ssl); /* best effort: the socket is non-blocking */
    }
    ERR_clear_error();
    SSL_free(c->ssl);
    c->ssl = NULL;
    cnb__buf_free(&c->tx_stage);
}
