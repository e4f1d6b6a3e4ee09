/* node.c: the connection layer's half of a node's life (node_rt.c adds the
 * runtime's): names, cookie, creation, the listener and epoll, stopping;
 * pids and refs, the peers snapshot other threads read (the logger is log.c).
 * Tests: tests/unit/test_node.c, tests/integration/dist_tests.erl. */
#include "node_int.h"
#include "auth_limit.h"
#include "cookie.h"
#include "log.h"
#include "tls.h"
#include "../core/deadline.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/rand.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static pthread_once_t ei_once = PTHREAD_ONCE_INIT;
static void init_ei(void)
{
    (void)ei_init();
}

int64_t cnb__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cnb__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* When a spinning thread yields its CPU (sched_yield: a system call, ~2 us
 * on a virtual machine, so not at every try): soon after it starts (a
 * thread it just woke may have been queued on its CPU), then every
 * SPIN_YIELD_NS. */
#define SPIN_FIRST_YIELD_NS 2000
#define SPIN_YIELD_NS 10000
#define SPIN_TRIES 32 /* tries between two looks at the clock */

int cnb__spin_until(int (*ready)(void *), void *arg, int us)
{
    if (us <= 0)
        return ready(arg);
    int64_t t = cnb__now_ns(), end = t + (int64_t)us * 1000, yield_at = t + SPIN_FIRST_YIELD_NS;
    for (;;) {
        for (int i = 0; i < SPIN_TRIES; i++) {
            if (ready(arg))
                return 1;
            cnb__cpu_relax();
        }
        t = cnb__now_ns();
        if (t >= end)
            return ready(arg);
        if (t >= yield_at) {
            sched_yield();
            yield_at = cnb__now_ns() + SPIN_YIELD_NS;
        }
    }
}

static int spinner_free(void *arg)
{
    cnb_node_t *n = arg;
    return !atomic_load_explicit(&n->spinner, memory_order_relaxed);
}

int cnb__spin_claim(cnb_node_t *n, int wait_us)
{
    int idle = 0;
    if (atomic_compare_exchange_strong(&n->spinner, &idle, 1))
        return 1;
    if (wait_us <= 0 || !cnb__spin_until(spinner_free, n, wait_us))
        return 0;
    idle = 0; /* freed: one more try */
    return atomic_compare_exchange_strong(&n->spinner, &idle, 1);
}

void cnb__spin_release(cnb_node_t *n)
{
    atomic_store_explicit(&n->spinner, 0, memory_order_release);
}

int cnb__thread_create(pthread_t *t, void *(*fn)(void *), void *arg)
{
    pthread_attr_t at;
    if (pthread_attr_init(&at))
        return -1;
    /* Fixed, not inherited from RLIMIT_STACK: terms off the wire may be
     * CNB_ETF_MAX_DEPTH deep and ei's decoders recurse per level. */
    pthread_attr_setstacksize(&at, CNB_THREAD_STACK);
    int rc = pthread_create(t, &at, fn, arg);
    pthread_attr_destroy(&at);
    return rc;
}

uint32_t cnb__random32(void)
{
    uint32_t v = 0;
    if (RAND_bytes((unsigned char *)&v, sizeof(v)) != 1) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = (uint32_t)ts.tv_nsec ^ (uint32_t)getpid() * 2654435761u;
    }
    return v;
}

static int short_host(char *out, size_t cap)
{
    char h[CNB_NAME_MAX];
    if (gethostname(h, sizeof(h)) != 0)
        return CNB_ESYS;
    h[sizeof(h) - 1] = 0;
    char *dot = strchr(h, '.');
    if (dot)
        *dot = 0;
    snprintf(out, cap, "%s", h);
    return 0;
}

static int long_host(char *out, size_t cap)
{
    char h[CNB_NAME_MAX];
    if (gethostname(h, sizeof(h)) != 0)
        return CNB_ESYS;
    h[sizeof(h) - 1] = 0;
    if (strchr(h, '.')) {
        snprintf(out, cap, "%s", h);
        return 0;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_flags = AI_CANONNAME;
    if (getaddrinfo(h, NULL, &hints, &res) == 0 && res && res->ai_canonname &&
        strchr(res->ai_canonname, '.'))
        snprintf(out, cap, "%s", res->ai_canonname);
    else
        snprintf(out, cap, "%s", h);
    if (res)
        freeaddrinfo(res);
    return 0;
}

static int valid_alive(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

int cnb__node_create(const cnb_node_opts_t *opts, cnb_node_t **out)
{
    pthread_once(&ei_once, init_ei);
    *out = NULL;
    int err = CNB_EINVAL;
    cnb_node_t *n = calloc(1, sizeof(*n));
    if (!n)
        return CNB_ENOMEM;
    n->opts = *opts;
    n->log_level = opts->log_level;
    if (n->log_level < CNB_LOG_ERROR || n->log_level > CNB_LOG_DEBUG)
        n->log_level = CNB_LOG_INFO;
    if (!n->opts.net_ticktime)
        n->opts.net_ticktime = 60;
    if (!n->opts.net_setuptime)
        n->opts.net_setuptime = 7;
    if (!n->opts.max_message)
        n->opts.max_message = (size_t)256 << 20;
    if (!n->opts.max_pending)
        n->opts.max_pending = (size_t)64 << 20;
    if (!n->opts.spin_us)
        n->opts.spin_us = CNB_SPIN_US_DEFAULT;
    else if (n->opts.spin_us < 0)
        n->opts.spin_us = 0;
    n->epfd = -1;
    n->listen_ev.fd = -1;
    n->wake_ev.fd = -1;
    n->epmd_fd = -1;
    pthread_mutex_init(&n->inbox_mu, NULL);
    pthread_mutex_init(&n->peers_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->peers_cv, &ca);
    pthread_condattr_destroy(&ca);

    const char *nm = opts->sname ? opts->sname : opts->name;
    if (!nm || (opts->sname && opts->name)) {
        cnb__log(n, CNB_LOG_ERROR, "give exactly one of a short name (--sname) or a long name (--name)");
        goto bad;
    }
    n->longnames = opts->name != NULL;
    const char *at = strchr(nm, '@');
    size_t alen = at ? (size_t)(at - nm) : strlen(nm);
    if (alen == 0 || alen >= sizeof(n->alive)) {
        cnb__log(n, CNB_LOG_ERROR, "bad node name '%s'", nm);
        goto bad;
    }
    memcpy(n->alive, nm, alen);
    n->alive[alen] = 0;
    if (!valid_alive(n->alive)) {
        cnb__log(n, CNB_LOG_ERROR, "bad node name '%s': use letters, digits, '_' and '-'", nm);
        goto bad;
    }
    if (at) {
        snprintf(n->host, sizeof(n->host), "%s", at + 1);
    } else if ((n->longnames ? long_host(n->host, sizeof(n->host))
                             : short_host(n->host, sizeof(n->host))) != 0) {
        cnb__log(n, CNB_LOG_ERROR, "cannot find this host's name");
        goto bad;
    }
    if (!n->host[0]) {
        cnb__log(n, CNB_LOG_ERROR, "bad node name '%s': empty host", nm);
        goto bad;
    }
    if (!n->longnames && strchr(n->host, '.')) {
        cnb__log(n, CNB_LOG_ERROR,
                 "short name '%s' has a dotted host; use --name for long names", nm);
        goto bad;
    }
    if (strlen(n->alive) + 1 + strlen(n->host) >= sizeof(n->name)) {
        cnb__log(n, CNB_LOG_ERROR, "node name too long");
        goto bad;
    }
    snprintf(n->name, sizeof(n->name), "%s@%s", n->alive, n->host);
    if (!cnb__hs_name_ok((const uint8_t *)n->name, strlen(n->name))) {
        cnb__log(n, CNB_LOG_ERROR, "bad node name '%s': peers would refuse it", n->name);
        goto bad;
    }

    if (cnb__cookie_load(n, opts, n->cookie, sizeof(n->cookie)))
        goto bad;
    if ((err = cnb__tls_create(n, opts, &n->tls)))
        goto bad;
    /* The options' TLS strings are the caller's: only tls.c's copies stay. */
    n->opts.tls_cert = n->opts.tls_key = n->opts.tls_cacert = NULL;
    n->opts.tls_versions = n->opts.tls_ciphers = NULL;
    do {
        n->creation = cnb__random32();
    } while (n->creation == 0);
    n->ref_salt = cnb__random32();
    atomic_init(&n->pid_counter, 0);
    atomic_init(&n->ref_counter, 0);
    atomic_init(&n->stopping, 0);
    *out = n;
    return 0;
bad:
    explicit_bzero(n->cookie, sizeof(n->cookie));
    cnb__log_forget(n);
    pthread_mutex_destroy(&n->inbox_mu);
    pthread_mutex_destroy(&n->peers_mu);
    pthread_cond_destroy(&n->peers_cv);
    free(n);
    return err;
}

/* The address to listen on: opts.listen_addr (a numeric IPv4 or IPv6
 * address, as inet_dist_use_interface takes), else every interface (IPv6
 * dual stack with opts.ipv6). Returns 0 or CNB_EINVAL after a log line. */
static int listen_address(cnb_node_t *n, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    const char *addr = n->opts.listen_addr;
    if (addr && inet_pton(AF_INET, addr, &a4->sin_addr) == 1) {
        ss->ss_family = AF_INET;
    } else if (addr && inet_pton(AF_INET6, addr, &a6->sin6_addr) == 1) {
        ss->ss_family = AF_INET6;
    } else if (addr) {
        cnb__log(n, CNB_LOG_ERROR, "bad listen address '%s': give a numeric IPv4 or IPv6 address",
                 addr);
        return CNB_EINVAL;
    } else if (n->opts.ipv6) {
        ss->ss_family = AF_INET6;
        a6->sin6_addr = in6addr_any;
    } else {
        ss->ss_family = AF_INET;
        a4->sin_addr.s_addr = htonl(INADDR_ANY);
    }
    if (ss->ss_family == AF_INET) {
        a4->sin_port = htons((uint16_t)n->opts.port);
        *len = sizeof(*a4);
    } else {
        a6->sin6_port = htons((uint16_t)n->opts.port);
        *len = sizeof(*a6);
    }
    return 0;
}

static int open_listener(cnb_node_t *n)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int rc = listen_address(n, &ss, &sl);
    if (rc)
        return rc;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return CNB_ESYS;
    int on = 1, off = 0;
    if (ss.ss_family == AF_INET6 && !n->opts.listen_addr) /* dual stack */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 511) != 0)
        goto err;
    sl = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        goto err;
    n->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    n->listen_ev.kind = EV_LISTEN;
    n->listen_ev.fd = fd;
    return 0;
err:
    cnb__log(n, CNB_LOG_ERROR, "cannot listen on port %u of %s: %s", n->opts.port,
             n->opts.listen_addr ? n->opts.listen_addr : "every interface", strerror(errno));
    close(fd);
    return CNB_ESYS;
}

/* Everything but the I/O loop itself: sockets, epmd. */
int cnb__node_prepare(cnb_node_t *n)
{
    int rc;
    if (n->thread_started || n->epfd >= 0)
        return CNB_ESTATE;
    if ((rc = open_listener(n)))
        return rc;
    n->epfd = epoll_create1(EPOLL_CLOEXEC);
    n->wake_ev.kind = EV_WAKE;
    n->wake_ev.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (n->epfd < 0 || n->wake_ev.fd < 0) {
        cnb__log(n, CNB_LOG_ERROR, "epoll/eventfd: %s", strerror(errno));
        return CNB_ESYS;
    }
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &n->listen_ev};
    epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->listen_ev.fd, &e);
    e.data.ptr = &n->wake_ev;
    epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->wake_ev.fd, &e);
    if (!n->opts.no_epmd && (rc = cnb__epmd_register(n)))
        return rc;
    cnb__log(n, CNB_LOG_INFO, "listening on port %u of %s%s%s, creation %u", n->port,
             n->opts.listen_addr ? n->opts.listen_addr : "every interface",
             n->opts.no_epmd ? " (no epmd)" : "", n->tls ? " with TLS" : "", n->creation);
    return 0;
}

int cnb__node_launch(cnb_node_t *n)
{
    if (cnb__thread_create(&n->thread, cnb__loop, n) != 0) {
        cnb__log(n, CNB_LOG_ERROR, "cannot start the I/O thread");
        return CNB_ESYS;
    }
    n->thread_started = 1;
    return 0;
}

void cnb_node_stop(cnb_node_t *n)
{
    atomic_store(&n->stopping, 1);
    if (n->wake_ev.fd >= 0) {
        uint64_t one = 1;
        ssize_t w = write(n->wake_ev.fd, &one, sizeof(one));
        (void)w;
    }
}

void cnb_node_join(cnb_node_t *n)
{
    if (n->thread_started == 1) {
        pthread_join(n->thread, NULL);
        n->thread_started = 0;
    }
}

void cnb__node_free(cnb_node_t *n)
{
    cnb__inbox_free(n);
    if (n->listen_ev.fd >= 0)
        close(n->listen_ev.fd);
    if (n->wake_ev.fd >= 0)
        close(n->wake_ev.fd);
    if (n->epmd_fd >= 0)
        close(n->epmd_fd);
    if (n->epfd >= 0)
        close(n->epfd);
    pthread_mutex_destroy(&n->inbox_mu);
    pthread_mutex_destroy(&n->peers_mu);
    pthread_cond_destroy(&n->peers_cv);
    free(n->peers);
    cnb__auth_free(n->auth);
    cnb__tls_free(n->tls);
    cnb__log_forget(n);
    free(n);
}

int cnb_node_tls_reload(cnb_node_t *n)
{
    if (!n->tls)
        return CNB_ESTATE;
    int rc = cnb__tls_reload(n, n->tls);
    if (!rc)
        cnb__log(n, CNB_LOG_INFO, "TLS: certificates reloaded for new connections");
    return rc;
}

const char *cnb_node_name(const cnb_node_t *n)
{
    return n->name;
}

uint32_t cnb_node_creation(const cnb_node_t *n)
{
    return n->creation;
}

unsigned cnb_node_port(const cnb_node_t *n)
{
    return n->port;
}

void cnb_node_make_pid(cnb_node_t *n, erlang_pid *pid)
{
    uint64_t c = atomic_fetch_add(&n->pid_counter, 1) + 1;
    memset(pid, 0, sizeof(*pid));
    snprintf(pid->node, sizeof(pid->node), "%s", n->name);
    /* 15 + 13 bits, so a peer without V4_NC can still hold them. */
    pid->num = (unsigned)(c & 0x7fff);
    pid->serial = (unsigned)((c >> 15) & 0x1fff);
    pid->creation = n->creation;
}

void cnb_node_make_ref(cnb_node_t *n, erlang_ref *ref)
{
    uint64_t c = atomic_fetch_add(&n->ref_counter, 1) + 1;
    memset(ref, 0, sizeof(*ref));
    snprintf(ref->node, sizeof(ref->node), "%s", n->name);
    ref->len = 3;
    ref->n[0] = (unsigned)(c & 0x3ffff);
    ref->n[1] = (unsigned)(c >> 18);
    ref->n[2] = n->ref_salt;
    ref->creation = n->creation;
}

int cnb_node_is_local_pid(const cnb_node_t *n, const erlang_pid *pid)
{
    return pid->creation == n->creation && !strcmp(pid->node, n->name);
}

int cnb_node_is_local_ref(const cnb_node_t *n, const erlang_ref *ref)
{
    return ref->creation == n->creation && !strcmp(ref->node, n->name);
}

void cnb__peers_set(cnb_node_t *n, const char *peer, uint64_t flags, int up)
{
    pthread_mutex_lock(&n->peers_mu);
    int i;
    for (i = 0; i < n->npeers; i++)
        if (!strcmp(n->peers[i].name, peer))
            break;
    if (up) {
        if (i == n->npeers) {
            if (n->npeers == n->peers_cap) {
                int nc = n->peers_cap ? n->peers_cap * 2 : 16;
                cnb_peer_info_t *p = realloc(n->peers, (size_t)nc * sizeof(*p));
                if (!p)
                    goto out;
                n->peers = p;
                n->peers_cap = nc;
            }
            n->npeers++;
        }
        snprintf(n->peers[i].name, sizeof(n->peers[i].name), "%s", peer);
        n->peers[i].flags = flags;
    } else if (i < n->npeers) {
        n->peers[i] = n->peers[--n->npeers];
    }
out:
    pthread_cond_broadcast(&n->peers_cv);
    pthread_mutex_unlock(&n->peers_mu);
}

uint64_t cnb_node_peer_flags(cnb_node_t *n, const char *peer)
{
    uint64_t f = 0;
    pthread_mutex_lock(&n->peers_mu);
    for (int i = 0; i < n->npeers; i++)
        if (!strcmp(n->peers[i].name, peer))
            f = n->peers[i].flags;
    pthread_mutex_unlock(&n->peers_mu);
    return f;
}

int cnb_node_connected(cnb_node_t *n, char (*out)[MAXATOMLEN_UTF8], int max)
{
    pthread_mutex_lock(&n->peers_mu);
    int cnt = n->npeers;
    for (int i = 0; i < cnt && i < max; i++)
        snprintf(out[i], MAXATOMLEN_UTF8, "%s", n->peers[i].name);
    pthread_mutex_unlock(&n->peers_mu);
    return cnt;
}

/* peers_mu held: whether peer (its first len bytes: "a@host" without a
 * ":port") is among the connected nodes; with peer NULL, whether any is. */
static int peer_up_locked(const cnb_node_t *n, const char *peer, size_t len)
{
    if (!peer)
        return n->npeers > 0;
    for (int i = 0; i < n->npeers; i++)
        if (strlen(n->peers[i].name) == len && !memcmp(n->peers[i].name, peer, len))
            return 1;
    return 0;
}

/* Waits on peers_cv in slices of at most 100 ms, so that a stop (which a
 * signal handler may ask for, and so cannot broadcast) ends the wait too. */
int cnb_node_wait_connected(cnb_node_t *n, const char *peer, unsigned timeout_ms)
{
    size_t len = peer ? strcspn(peer, ":") : 0;
    if (!n || (peer && (!memchr(peer, '@', len) || len >= CNB_NAME_MAX)))
        return CNB_EINVAL;
    if (cnb_on_io_thread(n))
        return CNB_ESTATE; /* the connection could only come up through this thread */
    int64_t end = cnb__now_ms() + timeout_ms;
    int rc = CNB_ETIMEDOUT;
    pthread_mutex_lock(&n->peers_mu);
    for (;;) {
        if (peer_up_locked(n, peer, len)) {
            rc = 0;
            break;
        }
        if (atomic_load(&n->stopping)) {
            rc = CNB_ECLOSED;
            break;
        }
        int64_t left = end - cnb__now_ms();
        if (left <= 0)
            break;
        struct timespec ts;
        cnb__deadline(CLOCK_MONOTONIC, left < 100 ? left : 100, &ts);
        pthread_cond_timedwait(&n->peers_cv, &n->peers_mu, &ts);
    }
    pthread_mutex_unlock(&n->peers_mu);
    return rc;
}

const char *cnb_version(void)
{
    return CNB_VERSION_STRING;
}
