/* handshake.c: the version 6 distribution handshake as a byte-driven state
 * machine (see handshake.h). Tests: tests/unit/test_handshake.c and the
 * integration suites in tests/integration/dist_tests.erl and hostile_auth_tests.erl. */
#include "handshake.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

enum {
    ST_I_START,
    ST_I_WAIT_STATUS,
    ST_I_WAIT_CHALLENGE,
    ST_I_WAIT_ACK,
    ST_A_WAIT_NAME,
    ST_A_NAME_RECEIVED,
    ST_A_WAIT_ALIVE_ANSWER,
    ST_A_WAIT_REPLY,
    ST_DONE,
    ST_FAILED
};

void cnb__hs_init(cnb_hs_t *hs, int role, unsigned hdr, const char *our_name,
                  uint64_t our_flags, uint32_t our_creation, const char *cookie,
                  uint32_t our_challenge, const char *expect_peer)
{
    memset(hs, 0, sizeof(*hs));
    hs->role = role;
    hs->state = role == CNB_HS_INITIATOR ? ST_I_START : ST_A_WAIT_NAME;
    hs->hdr = hdr == 4 ? 4 : 2;
    snprintf(hs->our_name, sizeof(hs->our_name), "%s", our_name);
    hs->our_flags = our_flags;
    hs->our_creation = our_creation;
    hs->cookie = cookie;
    hs->our_challenge = our_challenge;
    if (expect_peer)
        snprintf(hs->expect_peer, sizeof(hs->expect_peer), "%s", expect_peer);
}

void cnb__hs_digest(uint32_t challenge, const char *cookie, uint8_t out[16])
{
    char text[16];
    int n = snprintf(text, sizeof(text), "%u", challenge);
    unsigned int dlen = 16;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    /* The docs say challenge then cookie; dist_util:gen_digest/2 (what every
     * node runs) hashes the cookie first. */
    if (!ctx || !EVP_DigestInit_ex(ctx, EVP_md5(), NULL) ||
        !EVP_DigestUpdate(ctx, cookie, strlen(cookie)) ||
        !EVP_DigestUpdate(ctx, text, (size_t)n) ||
        !EVP_DigestFinal_ex(ctx, out, &dlen))
        memset(out, 0, 16); /* cannot happen with a working libcrypto; fails auth */
    EVP_MD_CTX_free(ctx);
}

const char *cnb__hs_phase(const cnb_hs_t *hs)
{
    switch (hs->state) {
    case ST_I_START:
    case ST_I_WAIT_STATUS:
        return "waiting for the peer's status";
    case ST_I_WAIT_CHALLENGE:
        return "waiting for the peer's challenge";
    case ST_I_WAIT_ACK:
        return "the peer rejected our challenge reply (wrong cookie?)";
    case ST_A_WAIT_NAME:
        return "waiting for the peer's name";
    case ST_A_NAME_RECEIVED:
    case ST_A_WAIT_ALIVE_ANSWER:
        return "waiting for the peer's answer to 'alive'";
    case ST_A_WAIT_REPLY:
        return "waiting for the peer's challenge reply";
    case ST_DONE:
        return "handshake complete";
    default:
        return "handshake failed";
    }
}

static int fail(cnb_hs_t *hs, int code, const char *why)
{
    hs->state = ST_FAILED;
    snprintf(hs->err, sizeof(hs->err), "%s", why);
    return code;
}

/* Appends one handshake packet: length header, tag, body. */
static int put_packet(cnb_hs_t *hs, cnb_buf_t *out, uint8_t tag, const uint8_t *body, size_t n)
{
    uint8_t h[5];
    size_t total = n + 1;
    if (hs->hdr == 2) {
        if (total > 0xffff)
            return CNB_EINVAL;
        cnb__put16(h, (uint16_t)total);
    } else {
        cnb__put32(h, (uint32_t)total);
    }
    h[hs->hdr] = tag;
    int rc = cnb__buf_put(out, h, hs->hdr + 1);
    return rc ? rc : cnb__buf_put(out, body, n);
}

static int send_status(cnb_hs_t *hs, cnb_buf_t *out, const char *status)
{
    return put_packet(hs, out, 's', (const uint8_t *)status, strlen(status));
}

int cnb__hs_start(cnb_hs_t *hs, cnb_buf_t *out)
{
    if (hs->role != CNB_HS_INITIATOR || hs->state != ST_I_START)
        return CNB_ESTATE;
    /* 'N' Flags(8) Creation(4) Nlen(2) Name */
    uint8_t body[8 + 4 + 2 + 255];
    size_t nlen = strlen(hs->our_name);
    cnb__put64(body, hs->our_flags);
    cnb__put32(body + 8, hs->our_creation);
    cnb__put16(body + 12, (uint16_t)nlen);
    memcpy(body + 14, hs->our_name, nlen);
    hs->state = ST_I_WAIT_STATUS;
    return put_packet(hs, out, 'N', body, 14 + nlen);
}

static int send_challenge(cnb_hs_t *hs, cnb_buf_t *out)
{
    /* 'N' Flags(8) Challenge(4) Creation(4) Nlen(2) Name */
    uint8_t body[8 + 4 + 4 + 2 + 255];
    size_t nlen = strlen(hs->our_name);
    cnb__put64(body, hs->our_flags);
    cnb__put32(body + 8, hs->our_challenge);
    cnb__put32(body + 12, hs->our_creation);
    cnb__put16(body + 16, (uint16_t)nlen);
    memcpy(body + 18, hs->our_name, nlen);
    hs->state = ST_A_WAIT_REPLY;
    return put_packet(hs, out, 'N', body, 18 + nlen);
}

int cnb__hs_status(cnb_hs_t *hs, const char *status, cnb_buf_t *out)
{
    if (hs->state != ST_A_NAME_RECEIVED)
        return CNB_ESTATE;
    int rc = send_status(hs, out, status);
    if (rc)
        return rc;
    if (!strcmp(status, "ok") || !strcmp(status, "ok_simultaneous"))
        return send_challenge(hs, out);
    if (!strcmp(status, "alive")) {
        hs->state = ST_A_WAIT_ALIVE_ANSWER;
        return 0;
    }
    hs->state = ST_FAILED;
    if (!hs->err[0]) /* keep the caller's reason (conn_policy.c sets one) */
        snprintf(hs->err, sizeof(hs->err), "refused the peer with status %s", status);
    return 0;
}

int cnb__hs_replaces_old(const cnb_hs_t *hs)
{
    return hs->role == CNB_HS_ACCEPTOR && !strcmp(hs->status, "true");
}

static int check_flags(cnb_hs_t *hs, uint64_t flags)
{
    uint64_t missing = CNB_DFLAGS_REQUIRED & ~flags;
    if (missing) {
        char why[128];
        snprintf(why, sizeof(why), "peer lacks mandatory distribution flags 0x%llx",
                 (unsigned long long)missing);
        return fail(hs, CNB_EPROTO, why);
    }
    return 0;
}

int cnb__hs_name_ok(const uint8_t *p, size_t n)
{
    const uint8_t *at = memchr(p, '@', n);
    if (n > 255 || !at || at == p || at + 1 == p + n || memchr(at + 1, '@', (size_t)(p + n - at - 1)))
        return 0;
    for (const uint8_t *q = p; q < at; q++)
        if (!((*q >= '0' && *q <= '9') || (*q >= 'A' && *q <= 'Z') || (*q >= 'a' && *q <= 'z') ||
              *q == '_' || *q == '-'))
            return 0;
    for (const uint8_t *q = at + 1; q < p + n; q++) {
        if (*q >= 0x21 && *q <= 0x7e)
            continue;
        /* U+00A0..U+00FF in UTF-8: the rest of net_kernel's [!-\xff]. */
        if (q + 1 < p + n && ((*q == 0xc2 && q[1] >= 0xa0 && q[1] <= 0xbf) ||
                              (*q == 0xc3 && q[1] >= 0x80 && q[1] <= 0xbf))) {
            q++;
            continue;
        }
        return 0;
    }
    return 1;
}

/* Copies the peer's node name out of packet body b (blen bytes): its 2-byte
 * length at off, the name after it; once it fits in b and cnb__hs_name_ok
 * accepts it. what names the message in the refusal, which quotes the name as
 * received (the logger escapes it). */
static int take_name(cnb_hs_t *hs, const uint8_t *b, size_t blen, size_t off, const char *what)
{
    size_t n = cnb__get16(b + off);
    const uint8_t *p = b + off + 2;
    if (off + 2 + n > blen) {
        char why[sizeof(hs->err)];
        snprintf(why, sizeof(why), "%s: name runs past the packet", what);
        return fail(hs, CNB_EPROTO, why);
    }
    if (!cnb__hs_name_ok(p, n)) {
        char why[sizeof(hs->err)];
        snprintf(why, sizeof(why),
                 "bad node name \"%.*s\"%s in the handshake (want name@host: the name of "
                 "[0-9A-Za-z_-], the host of printable characters)",
                 (int)(n < 80 ? n : 80), (const char *)p, n > 80 ? "..." : "");
        return fail(hs, CNB_EPROTO, why);
    }
    memcpy(hs->peer_name, p, n);
    hs->peer_name[n] = 0;
    return 0;
}

int cnb__hs_refuse(cnb_hs_t *hs, int code, const char *why)
{
    return fail(hs, code, why);
}

/* The acceptor's steps: one whole packet (tag, body b of n bytes) in the
 * current state; returns as cnb__hs_input. */
static int acceptor_step(cnb_hs_t *hs, uint8_t tag, const uint8_t *b, size_t n, cnb_buf_t *out)
{
    int rc;
    switch (hs->state) {
    case ST_A_WAIT_NAME:
        if (tag == 'n')
            return fail(hs, CNB_EPROTO, "peer uses the pre-OTP-23 handshake (version 5)");
        if (tag != 'N' || n < 14)
            return fail(hs, CNB_EPROTO, "expected send_name ('N')");
        hs->peer_flags = cnb__get64(b);
        hs->peer_creation = cnb__get32(b + 8);
        if ((rc = take_name(hs, b, n, 12, "send_name")))
            return rc;
        if (hs->peer_flags & CNB_DFLAG_NAME_ME)
            return fail(hs, CNB_EPROTO, "peer asks for a dynamic name (NAME_ME); not supported");
        if ((rc = check_flags(hs, hs->peer_flags)))
            return rc;
        hs->state = ST_A_NAME_RECEIVED;
        return CNB_HS_NAME_RECEIVED;

    case ST_A_WAIT_ALIVE_ANSWER:
        if (tag != 's')
            return fail(hs, CNB_EPROTO, "expected the initiator's answer to 'alive'");
        if (n == 4 && !memcmp(b, "true", 4)) {
            strcpy(hs->status, "true");
            if ((rc = send_challenge(hs, out)))
                return rc;
            return CNB_HS_PROGRESS;
        }
        return fail(hs, CNB_ECLOSED, "initiator withdrew (answered false to 'alive')");

    case ST_A_WAIT_REPLY: {
        if (tag != 'r' || n != 20)
            return fail(hs, CNB_EPROTO, "expected challenge_reply ('r')");
        uint8_t want[16];
        cnb__hs_digest(hs->our_challenge, hs->cookie, want);
        if (CRYPTO_memcmp(want, b + 4, 16))
            return fail(hs, CNB_ECOOKIE, "challenge digest mismatch (wrong cookie)");
        hs->peer_challenge = cnb__get32(b);
        uint8_t dig[16];
        cnb__hs_digest(hs->peer_challenge, hs->cookie, dig);
        if ((rc = put_packet(hs, out, 'a', dig, 16)))
            return rc;
        hs->state = ST_DONE;
        return CNB_HS_DONE;
    }

    default:
        return fail(hs, CNB_ESTATE, "handshake in an impossible state");
    }
}

/* The initiator's steps, as acceptor_step. */
static int initiator_step(cnb_hs_t *hs, uint8_t tag, const uint8_t *b, size_t n, cnb_buf_t *out)
{
    int rc;
    switch (hs->state) {
    case ST_I_WAIT_STATUS:
        if (tag != 's')
            return fail(hs, CNB_EPROTO, "expected status ('s')");
        if (n >= sizeof(hs->status))
            return fail(hs, CNB_EPROTO, "status too long");
        memcpy(hs->status, b, n);
        hs->status[n] = 0;
        if (!strcmp(hs->status, "ok") || !strcmp(hs->status, "ok_simultaneous")) {
            hs->state = ST_I_WAIT_CHALLENGE;
            return CNB_HS_PROGRESS;
        }
        if (!strcmp(hs->status, "alive")) {
            /* We only initiate when we hold no live connection to the peer, so
             * the one it remembers is dead: continue (doc step 3B). */
            if ((rc = send_status(hs, out, "true")))
                return rc;
            hs->state = ST_I_WAIT_CHALLENGE;
            return CNB_HS_PROGRESS;
        }
        if (!strncmp(hs->status, "named:", 6))
            return fail(hs, CNB_EPROTO, "peer sent 'named:' though we never asked");
        {
            char why[96];
            snprintf(why, sizeof(why), "peer refused the connection (status %s)", hs->status);
            return fail(hs, CNB_ECLOSED, why);
        }

    case ST_I_WAIT_CHALLENGE: {
        if (tag != 'N' || n < 18)
            return fail(hs, CNB_EPROTO, "expected challenge ('N')");
        hs->peer_flags = cnb__get64(b);
        hs->peer_challenge = cnb__get32(b + 8);
        hs->peer_creation = cnb__get32(b + 12);
        if ((rc = take_name(hs, b, n, 16, "challenge")))
            return rc;
        if (hs->expect_peer[0] && strcmp(hs->expect_peer, hs->peer_name)) {
            char why[200];
            snprintf(why, sizeof(why), "reached node %.80s instead of %.80s", hs->peer_name,
                     hs->expect_peer);
            return fail(hs, CNB_EPROTO, why);
        }
        if ((rc = check_flags(hs, hs->peer_flags)))
            return rc;
        uint8_t body[20];
        cnb__put32(body, hs->our_challenge);
        cnb__hs_digest(hs->peer_challenge, hs->cookie, body + 4);
        if ((rc = put_packet(hs, out, 'r', body, 20)))
            return rc;
        hs->state = ST_I_WAIT_ACK;
        return CNB_HS_PROGRESS;
    }

    case ST_I_WAIT_ACK: {
        if (tag != 'a' || n != 16)
            return fail(hs, CNB_EPROTO, "expected challenge_ack ('a')");
        uint8_t want[16];
        cnb__hs_digest(hs->our_challenge, hs->cookie, want);
        if (CRYPTO_memcmp(want, b, 16))
            return fail(hs, CNB_ECOOKIE, "challenge_ack digest mismatch (wrong cookie)");
        hs->state = ST_DONE;
        return CNB_HS_DONE;
    }
    default:
        return fail(hs, CNB_ESTATE, "handshake in an impossible state");
    }
}

int cnb__hs_input(cnb_hs_t *hs, const uint8_t *in, size_t len, size_t *used, cnb_buf_t *out)
{
    *used = 0;
    if (hs->state == ST_DONE || hs->state == ST_FAILED || hs->state == ST_I_START ||
        hs->state == ST_A_NAME_RECEIVED)
        return hs->state == ST_FAILED ? CNB_EPROTO : CNB_ESTATE;
    if (len < hs->hdr)
        return CNB_HS_MORE;
    size_t plen = hs->hdr == 2 ? cnb__get16(in) : cnb__get32(in);
    if (plen == 0 || plen > 2048)
        return fail(hs, CNB_EPROTO, "handshake packet with an impossible length");
    if (len < hs->hdr + plen)
        return CNB_HS_MORE;
    const uint8_t *p = in + hs->hdr;
    uint8_t tag = p[0];
    const uint8_t *b = p + 1;
    size_t n = plen - 1;
    *used = hs->hdr + plen;

    if (hs->state == ST_A_WAIT_NAME || hs->state == ST_A_WAIT_ALIVE_ANSWER ||
        hs->state == ST_A_WAIT_REPLY)
        return acceptor_step(hs, tag, b, n, out);
    return initiator_step(hs, tag, b, n, out);
}
