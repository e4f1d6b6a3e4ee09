/* epmd.c: the epmd client: ALIVE2 registration (kept open for the node's life)
 * and the PORT_PLEASE2 request/reply used when connecting out.
 * Tests: tests/unit/test_frame.c (reply parsing), tests/integration/dist_tests.erl. */
#include "node_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cnb__epmd_tcp_port(void)
{
    const char *e = getenv("ERL_EPMD_PORT");
    if (e && *e) {
        long p = strtol(e, NULL, 10);
        if (p > 0 && p < 65536)
            return (int)p;
    }
    return 4369;
}

/* Reads exactly n bytes within timeout_ms. Returns 0 or a negative code. */
static int read_full(int fd, uint8_t *p, size_t n, int timeout_ms)
{
    int64_t deadline = cnb__now_ms() + timeout_ms;
    while (n > 0) {
        int64_t left = deadline - cnb__now_ms();
        if (left <= 0)
            return CNB_ETIMEDOUT;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int r = poll(&pf, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return CNB_ETIMEDOUT;
        ssize_t got = read(fd, p, n);
        if (got == 0)
            return CNB_ECLOSED;
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return CNB_ESYS;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

int cnb__epmd_register(cnb_node_t *n)
{
    int port = cnb__epmd_tcp_port();
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return CNB_ESYS;
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        cnb__log(n, CNB_LOG_ERROR,
                 "cannot reach epmd on 127.0.0.1:%d (%s); start epmd or use --no-epmd", port,
                 strerror(errno));
        close(fd);
        return CNB_ENOCONN;
    }
    /* ALIVE2_REQ: 120 PortNo NodeType Protocol High Low Nlen Name Elen Extra */
    uint8_t req[2 + 13 + CNB_NAME_MAX];
    size_t nlen = strlen(n->alive);
    uint8_t *p = req + 2;
    p[0] = 120;
    cnb__put16(p + 1, (uint16_t)n->port);
    p[3] = 72; /* hidden node */
    p[4] = 0;  /* TCP */
    cnb__put16(p + 5, 6);
    cnb__put16(p + 7, 6);
    cnb__put16(p + 9, (uint16_t)nlen);
    memcpy(p + 11, n->alive, nlen);
    cnb__put16(p + 11 + nlen, 0);
    size_t body = 13 + nlen;
    cnb__put16(req, (uint16_t)body);
    if (write(fd, req, body + 2) != (ssize_t)(body + 2)) {
        close(fd);
        return CNB_ESYS;
    }
    uint8_t r[2];
    int rc = read_full(fd, r, 2, 5000);
    if (rc == 0 && (r[0] == 118 || r[0] == 121)) {
        uint8_t c[4];
        rc = read_full(fd, c, r[0] == 118 ? 4 : 2, 5000);
        if (rc == 0 && r[1] != 0) {
            cnb__log(n, CNB_LOG_ERROR, "epmd refused the name '%s' (result %u): is it taken?",
                     n->alive, r[1]);
            close(fd);
            return CNB_EEXIST;
        }
    } else if (rc == 0) {
        rc = CNB_EPROTO;
    }
    if (rc) {
        cnb__log(n, CNB_LOG_ERROR, "epmd registration failed: %s", cnb_strerror(rc));
        close(fd);
        return rc == CNB_EEXIST ? rc : CNB_ENOCONN;
    }
    /* Our creation is our own random one, not epmd's (see ARCHITECTURE.md). */
    n->epmd_fd = fd;
    return 0;
}

int cnb__epmd_port_request(const char *alive, uint8_t *out, size_t cap)
{
    size_t n = strlen(alive);
    if (n + 3 > cap)
        return CNB_EINVAL;
    cnb__put16(out, (uint16_t)(n + 1));
    out[2] = 122;
    memcpy(out + 3, alive, n);
    return (int)(n + 3);
}

int cnb__epmd_port_reply(const uint8_t *p, size_t n)
{
    if (n < 2)
        return 0;
    if (p[0] != 119)
        return CNB_EPROTO;
    if (p[1] != 0)
        return CNB_ENOENT;
    if (n < 4)
        return 0;
    int port = cnb__get16(p + 2);
    if (n >= 8 && cnb__get16(p + 6) < 6)
        return CNB_EPROTO; /* node only speaks the pre-OTP-23 handshake */
    return port > 0 ? port : CNB_EPROTO;
}
