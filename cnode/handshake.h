/* handshake.h: the distribution handshake (version 6, OTP 23+) as a pure state
 * machine: bytes in, bytes out, no sockets, so it can be fed byte by byte in the
 * unit tests (tests/unit/test_handshake.c). Used by conn_life.c, conn_out.c, conn_io.c. */
#ifndef CNB_HANDSHAKE_H
#define CNB_HANDSHAKE_H

#include <stdint.h>

#include "buf.h"

/* Distribution capability flags (erl_dist_protocol.html, "Distribution Flags"). */
#define CNB_DFLAG_PUBLISHED 0x1ULL
#define CNB_DFLAG_ATOM_CACHE 0x2ULL
#define CNB_DFLAG_EXTENDED_REFERENCES 0x4ULL
#define CNB_DFLAG_DIST_MONITOR 0x8ULL
#define CNB_DFLAG_FUN_TAGS 0x10ULL
#define CNB_DFLAG_DIST_MONITOR_NAME 0x20ULL
#define CNB_DFLAG_HIDDEN_ATOM_CACHE 0x40ULL
#define CNB_DFLAG_NEW_FUN_TAGS 0x80ULL
#define CNB_DFLAG_EXTENDED_PIDS_PORTS 0x100ULL
#define CNB_DFLAG_EXPORT_PTR_TAG 0x200ULL
#define CNB_DFLAG_BIT_BINARIES 0x400ULL
#define CNB_DFLAG_NEW_FLOATS 0x800ULL
#define CNB_DFLAG_UNICODE_IO 0x1000ULL
#define CNB_DFLAG_DIST_HDR_ATOM_CACHE 0x2000ULL
#define CNB_DFLAG_SMALL_ATOM_TAGS 0x4000ULL
#define CNB_DFLAG_UTF8_ATOMS 0x10000ULL
#define CNB_DFLAG_MAP_TAG 0x20000ULL
#define CNB_DFLAG_BIG_CREATION 0x40000ULL
#define CNB_DFLAG_SEND_SENDER 0x80000ULL
#define CNB_DFLAG_BIG_SEQTRACE_LABELS 0x100000ULL
#define CNB_DFLAG_EXIT_PAYLOAD 0x400000ULL
#define CNB_DFLAG_FRAGMENTS 0x800000ULL
#define CNB_DFLAG_HANDSHAKE_23 0x1000000ULL
#define CNB_DFLAG_UNLINK_ID 0x2000000ULL
#define CNB_DFLAG_SPAWN (1ULL << 32)
#define CNB_DFLAG_NAME_ME (1ULL << 33)
#define CNB_DFLAG_V4_NC (1ULL << 34)
#define CNB_DFLAG_ALIAS (1ULL << 35)
#define CNB_DFLAG_MANDATORY_25_DIGEST (1ULL << 36)
#define CNB_DFLAG_ALTACT_SIG (1ULL << 37) /* OTP 28+: ALTACT_SIG_SEND (0x20 << 32) */

/* What a peer must offer, or we refuse it: the flags OTP 25 makes mandatory
 * (EXTENDED_REFERENCES .. HANDSHAKE_23), plus FRAGMENTS: we always send
 * messages behind a distribution header, which a peer without FRAGMENTS (or
 * the atom cache) cannot read; every OTP release since 22 has it. OTP 26/27 make UNLINK_ID and V4_NC
 * mandatory too; we offer them but accept an OTP 25 peer without them (old
 * link protocol fallback is handled in the runtime). */
#define CNB_DFLAGS_REQUIRED                                                      \
    (CNB_DFLAG_EXTENDED_REFERENCES | CNB_DFLAG_FUN_TAGS | CNB_DFLAG_NEW_FUN_TAGS | \
     CNB_DFLAG_EXTENDED_PIDS_PORTS | CNB_DFLAG_EXPORT_PTR_TAG |                  \
     CNB_DFLAG_BIT_BINARIES | CNB_DFLAG_NEW_FLOATS | CNB_DFLAG_UTF8_ATOMS |      \
     CNB_DFLAG_MAP_TAG | CNB_DFLAG_BIG_CREATION | CNB_DFLAG_HANDSHAKE_23 |        \
     CNB_DFLAG_FRAGMENTS)

/* What we offer. Each choice, and why, is in docs/ARCHITECTURE.md ("Flags"). */
#define CNB_DFLAGS_OURS                                                         \
    (CNB_DFLAGS_REQUIRED | CNB_DFLAG_DIST_MONITOR | CNB_DFLAG_DIST_MONITOR_NAME |  \
     CNB_DFLAG_SMALL_ATOM_TAGS | CNB_DFLAG_SEND_SENDER |                          \
     CNB_DFLAG_BIG_SEQTRACE_LABELS | CNB_DFLAG_EXIT_PAYLOAD | CNB_DFLAG_FRAGMENTS | \
     CNB_DFLAG_UNLINK_ID | CNB_DFLAG_V4_NC | CNB_DFLAG_ALIAS |                    \
     CNB_DFLAG_MANDATORY_25_DIGEST | CNB_DFLAG_UNICODE_IO | CNB_DFLAG_SPAWN |       \
     CNB_DFLAG_ALTACT_SIG)

enum cnb_hs_role { CNB_HS_INITIATOR = 1, CNB_HS_ACCEPTOR = 2 };

/* Results of cnb__hs_input besides errors. */
enum cnb_hs_result {
    CNB_HS_MORE = 0,          /* need more bytes */
    CNB_HS_PROGRESS = 1,      /* consumed a packet; call again with the rest */
    CNB_HS_NAME_RECEIVED = 2, /* acceptor: peer_name is known; call cnb__hs_status */
    CNB_HS_DONE = 3           /* connection is up; switch to connected framing */
};

typedef struct cnb_hs {
    int role;
    int state;
    unsigned hdr; /* length-header size during the handshake: 2 (TCP), 4 (TLS) */
    char our_name[256];
    uint64_t our_flags;
    uint32_t our_creation;
    const char *cookie; /* borrowed; outlives the handshake */
    char expect_peer[256]; /* initiator: the node we meant to reach ("" = any) */
    char peer_name[256];
    uint64_t peer_flags;
    uint32_t peer_creation;
    uint32_t our_challenge;
    uint32_t peer_challenge;
    char status[32];  /* initiator: the status the acceptor sent */
    char err[200];    /* why the handshake failed, for the log */
} cnb_hs_t;

/* Sets up a handshake. our_challenge must be random (the caller draws it). */
void cnb__hs_init(cnb_hs_t *hs, int role, unsigned hdr, const char *our_name,
                  uint64_t our_flags, uint32_t our_creation, const char *cookie,
                  uint32_t our_challenge, const char *expect_peer);

/* Initiator: appends send_name to out. Returns 0 or CNB_ENOMEM. */
int cnb__hs_start(cnb_hs_t *hs, cnb_buf_t *out);

/* Feeds received bytes. Consumes at most one complete handshake packet and sets
 * *used to the bytes consumed (0 when the packet is incomplete). Appends any
 * reply to out. Returns a cnb_hs_result, or a negative code: CNB_EPROTO
 * (malformed, unexpected, or missing mandatory flags), CNB_ECOOKIE (digest
 * mismatch), CNB_ECLOSED (the peer refused: nok, not_allowed, alive+false),
 * CNB_ENOMEM. hs->err says why. Bytes after the final packet are not consumed:
 * they belong to the connected stream. */
int cnb__hs_input(cnb_hs_t *hs, const uint8_t *in, size_t len, size_t *used, cnb_buf_t *out);

/* Acceptor, after CNB_HS_NAME_RECEIVED: sends status ("ok", "ok_simultaneous",
 * "nok", "not_allowed" or "alive") and, for ok/ok_simultaneous, the challenge.
 * After "nok"/"not_allowed" the handshake is over (close after flushing);
 * hs->err keeps a reason the caller wrote there, else names the status.
 * Returns 0, or CNB_ENOMEM / CNB_ESTATE. */
int cnb__hs_status(cnb_hs_t *hs, const char *status, cnb_buf_t *out);

/* True when the acceptor answered "alive" and the initiator's answer ("true")
 * has been received: the caller must drop the old connection to that node. */
int cnb__hs_replaces_old(const cnb_hs_t *hs);

/* True when the n bytes at p are a node name a real node can have: exactly
 * one '@', before it one or more of [0-9A-Za-z_-] (net_kernel's rule for the
 * name part), after it one or more characters in U+0021..U+00FF, as
 * net_kernel accepts for the host, less DEL and the C1 controls; at most 255
 * bytes. A name failing it is refused in the handshake (CNB_EPROTO). */
int cnb__hs_name_ok(const uint8_t *p, size_t n);

/* Ends the handshake as failed, with code and why (copied to hs->err), for
 * a policy outside the state machine (auth_limit.c). Returns code. */
int cnb__hs_refuse(cnb_hs_t *hs, int code, const char *why);

/* For logs: what the handshake was waiting for when it stopped. */
const char *cnb__hs_phase(const cnb_hs_t *hs);

/* The MD5 digest of the cookie followed by the challenge as decimal text
 * (dist_util:gen_digest/2). */
void cnb__hs_digest(uint32_t challenge, const char *cookie, uint8_t out[16]);

#endif /* CNB_HANDSHAKE_H */
