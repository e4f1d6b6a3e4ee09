/* registry.c: opening, creating and validating a registry segment, and mapping
 * it: each process reserves the address range every ref can reach once and maps
 * the file into it piece by piece as it grows, so the base address never moves
 * and no thread ever reads an unmapped old copy.
 *
 * A segment is a memfd sealed with F_SEAL_SHRINK | F_SEAL_SEAL: no process,
 * whatever it opens, can make the file shorter than a mapping of it (which
 * would be a SIGBUS in every process that maps it), nor add a seal. A named
 * segment is a symbolic link, path -> /proc/<creator pid>/fd/<fd>, that other
 * processes of the user open while the creator keeps the segment open; a file
 * that is not sealed so is refused before it is mapped.
 * Tests: tests/unit/test_registry.c (open, refuse, mode, growth, seals),
 * tests/unit/test_registry_hostile.c. */
#define _GNU_SOURCE 1
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "registry_int.h"

#define DEF_STRIPES 64u
#define DEF_MAX_KEY (1u << 20)
#define DEF_MAX_VALUE (64u << 20)
#define DEF_FEED_SLOTS 4096u
#define DEF_FEED_SLOT_SIZE 256u
#define DEF_NODE_CAP 4096u
#define MIN_MAX_SIZE ((uint64_t)16 << 20)
#define SEALS (F_SEAL_SHRINK | F_SEAL_SEAL)
/* Address space reserved per handle: every offset a 32-bit granule ref plus a
 * 32-bit length can reach, so that a read through a corrupt ref lands in the
 * reservation (read-only zero pages beyond the file) and never faults. */
#define RESERVE (CNB__REG_LIMIT + ((uint64_t)1 << 32))

__thread int cnb__reg_bad;

uint64_t cnb__reg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int cnb__reg_fail(char *msg, size_t msglen, const char *fmt, ...)
{
    if (msg && msglen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msglen, fmt, ap);
        va_end(ap);
    }
    return CNB_ECORRUPT;
}

/* Sets the open error text (if asked for) and returns code. */
static int openerr(const cnb_registry_opts_t *o, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int openerr(const cnb_registry_opts_t *o, int code, const char *fmt, ...)
{
    if (o->errbuf && o->errbuf_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(o->errbuf, o->errbuf_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static uint64_t checksum(const struct cnb__reg_hdr *h)
{
    const unsigned char *p = (const unsigned char *)h;
    uint64_t x = 14695981039346656037ULL;
    for (size_t i = 0; i < offsetof(struct cnb__reg_hdr, checksum); i++) {
        x ^= p[i];
        x *= 1099511628211ULL;
    }
    return x;
}

/* Region offsets from the sizing fields. */
static void layout(struct cnb__reg_hdr *h)
{
    uint64_t off = round_up(sizeof(struct cnb__reg_hdr), 64);
    h->stripes_off = off;
    off += (uint64_t)(h->nstripes + 1) * sizeof(struct cnb__reg_stripe);
    h->counts_off = off = round_up(off, 64);
    off += (uint64_t)(h->nstripes + 1) * 8;
    h->attach_off = off = round_up(off, 64);
    off += (uint64_t)h->attach_cap * sizeof(struct cnb__reg_attach);
    h->nodes_off = off = round_up(off, 64);
    off += (uint64_t)h->node_cap * sizeof(struct cnb__reg_node);
    h->nodeidx_off = off = round_up(off, 64);
    off += (uint64_t)h->node_cap * 2 * 4;
    h->feed_off = off = round_up(off, 64);
    off += (uint64_t)h->feed_slots * h->feed_slot_size;
    h->arena_off = round_up(off, h->page_size);
}

/* Reserve the address space and map the first `size` bytes of fd. `reserve` is
 * how far the segment may grow; the range reserved is RESERVE, read-only
 * anonymous memory (not charged to the commit limit) beyond the file. */
static int map_segment(struct cnb_registry *reg, uint64_t reserve, uint64_t size)
{
    void *base = mmap(NULL, RESERVE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                      -1, 0);
    if (base == MAP_FAILED)
        return CNB_ENOMEM;
    if (mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, reg->fd, 0) ==
        MAP_FAILED) {
        munmap(base, RESERVE);
        return CNB_ESYS;
    }
    reg->base = base;
    reg->reserve = reserve;
    atomic_store(&reg->mapped, size);
    return 0;
}

static void bind(struct cnb_registry *reg)
{
    struct cnb__reg_hdr *h = (struct cnb__reg_hdr *)reg->base;
    reg->hdr = h;
    reg->stripes = CNB__AT(reg, h->stripes_off);
    reg->counts = CNB__AT(reg, h->counts_off);
    reg->attach = CNB__AT(reg, h->attach_off);
    reg->nodes = CNB__AT(reg, h->nodes_off);
    reg->nodeidx = CNB__AT(reg, h->nodeidx_off);
    reg->feed = CNB__AT(reg, h->feed_off);
    reg->nstripes = h->nstripes;
    reg->sbits = h->sbits;
    reg->kind = h->kind;
    reg->max_key = h->max_key;
    reg->max_value = h->max_value;
    reg->node_cap = h->node_cap;
    reg->feed_slots = h->feed_slots;
    reg->feed_slot_size = h->feed_slot_size;
    reg->attach_cap = h->attach_cap;
    reg->page_size = h->page_size;
    reg->arena_off = h->arena_off;
    reg->feed_off = h->feed_off;
    reg->max_size = h->max_size;
}

int cnb__reg_remap(struct cnb_registry *reg)
{
    int rc = 0;
    pthread_mutex_lock(&reg->map_lock);
    uint64_t want = atomic_load_explicit(&reg->hdr->file_size, memory_order_acquire);
    uint64_t have = atomic_load_explicit(&reg->mapped, memory_order_relaxed);
    if (want > reg->reserve)
        want = reg->reserve;
    if (want > have) {
        /* The header's size is only a claim: never map past the end of the
         * file (a page there is a SIGBUS when touched). */
        struct stat sb;
        if (fstat(reg->fd, &sb) != 0)
            want = have;
        else if (want > (uint64_t)sb.st_size)
            want = (uint64_t)sb.st_size / reg->page_size * reg->page_size;
    }
    if (want > have) {
        if (mmap(reg->base + have, want - have, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_FIXED, reg->fd, (off_t)have) == MAP_FAILED) {
            rc = CNB_ESYS;
        } else {
            /* No MADV_HUGEPAGE: growth fallocates (so a full tmpfs is ENOMEM, not
             * SIGBUS later), which allocates small pages; and huge pages measured
             * no faster for one-key lookups at 1M entries (DRAM latency, not the
             * TLB, bounds them), 10 % faster for batched ones. */
            atomic_store_explicit(&reg->mapped, want, memory_order_release);
        }
    }
    pthread_mutex_unlock(&reg->map_lock);
    return rc;
}

int cnb__reg_grow(struct cnb_registry *reg, uint64_t need)
{
    struct cnb__reg_hdr *h = reg->hdr;
    struct stat sb;
    if (fstat(reg->fd, &sb) != 0)
        return CNB_ESYS;
    /* The header's size is believed only as far as the file goes. */
    uint64_t fs = atomic_load_explicit(&h->file_size, memory_order_relaxed);
    if (fs > (uint64_t)sb.st_size)
        fs = (uint64_t)sb.st_size;
    if (need > fs) {
        uint64_t nsz = fs + fs / 2;
        if (nsz < fs + ((uint64_t)1 << 20))
            nsz = fs + ((uint64_t)1 << 20);
        if (nsz < need)
            nsz = need;
        nsz = round_up(nsz, reg->page_size);
        if (nsz > reg->reserve)
            nsz = reg->reserve;
        if (nsz < need)
            return CNB_ENOMEM;
        if ((uint64_t)sb.st_size < nsz && ftruncate(reg->fd, (off_t)nsz) != 0)
            return errno == EFBIG || errno == ENOSPC ? CNB_ENOMEM : CNB_ESYS;
        atomic_store_explicit(&h->file_size, nsz, memory_order_release);
        atomic_fetch_add_explicit(&h->generation, 1, memory_order_relaxed);
    }
    return cnb__reg_remap(reg);
}

static int init_mutex(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc == 0)
        rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (rc == 0)
        rc = pthread_mutex_init(m, &a);
    pthread_mutexattr_destroy(&a);
    return rc ? CNB_ESYS : 0;
}

/* Build a fresh segment in the empty file reg->fd. */
static int create_segment(struct cnb_registry *reg, const cnb_registry_opts_t *o)
{
    struct cnb__reg_hdr t;
    memset(&t, 0, sizeof t);
    memcpy(t.magic, CNB__REG_MAGIC, 8);
    t.version = CNB__REG_VERSION;
    t.hdr_size = sizeof(struct cnb__reg_hdr);
    t.endian = CNB__REG_ENDIAN;
    t.mutex_size = sizeof(pthread_mutex_t);
    t.stripe_size = sizeof(struct cnb__reg_stripe);
    t.page_size = (uint32_t)sysconf(_SC_PAGESIZE);
    t.kind = o->kind ? (uint32_t)o->kind : CNB_REG_UNIQUE;
    t.nstripes = o->stripes ? o->stripes : DEF_STRIPES;
    while ((1u << t.sbits) < t.nstripes)
        t.sbits++;
    t.node_cap = o->node_capacity ? o->node_capacity : DEF_NODE_CAP;
    while (!is_pow2(t.node_cap))
        t.node_cap++;
    t.feed_slots = o->feed_slots ? o->feed_slots : DEF_FEED_SLOTS;
    t.feed_slot_size = o->feed_slot_size ? o->feed_slot_size : DEF_FEED_SLOT_SIZE;
    t.attach_cap = CNB__REG_ATTACH_CAP;
    t.max_key = o->max_key_size ? o->max_key_size : DEF_MAX_KEY;
    t.max_value = o->max_value_size ? o->max_value_size : DEF_MAX_VALUE;
    t.max_size = o->max_size ? o->max_size : CNB__REG_LIMIT;
    t.created_ns = cnb__reg_now_ns();
    layout(&t);
    t.max_size = round_up(t.max_size, t.page_size);
    if (t.max_size < t.arena_off + MIN_MAX_SIZE)
        t.max_size = t.arena_off + MIN_MAX_SIZE;
    if (t.max_size > CNB__REG_LIMIT)
        return openerr(o, CNB_EINVAL, "max_size is over the 64 GiB limit");
    t.checksum = checksum(&t);

    if (fchmod(reg->fd, 0600) != 0 || ftruncate(reg->fd, (off_t)t.arena_off) != 0)
        return openerr(o, CNB_ESYS, "cannot size the new segment: %s", strerror(errno));
    if (fallocate(reg->fd, 0, 0, (off_t)t.arena_off) != 0 && errno != EOPNOTSUPP &&
        errno != ENOSYS)
        return openerr(o, errno == ENOSPC ? CNB_ENOMEM : CNB_ESYS,
                       "cannot allocate the new segment: %s", strerror(errno));
    if (fcntl(reg->fd, F_ADD_SEALS, SEALS) != 0)
        return openerr(o, CNB_ESYS, "cannot seal the new segment: %s", strerror(errno));
    int rc = map_segment(reg, t.max_size, t.arena_off);
    if (rc)
        return openerr(o, rc, "cannot map the new segment: %s", strerror(errno));
    struct cnb__reg_hdr *h = (struct cnb__reg_hdr *)reg->base;
    memcpy(h, &t, offsetof(struct cnb__reg_hdr, glock));
    bind(reg);
    rc = init_mutex(&h->glock);
    rc = rc ? rc : init_mutex(&h->nlock);
    rc = rc ? rc : init_mutex(&h->flock);
    rc = rc ? rc : init_mutex(&h->alock);
    for (uint32_t si = 0; rc == 0 && si <= h->nstripes; si++) {
        struct cnb__reg_stripe *st = &reg->stripes[si];
        rc = init_mutex(&st->lock);
        st->chunk_g = CNB__REG_CHUNK_MIN_G;
    }
    if (rc)
        return openerr(o, rc, "cannot initialise process-shared locks");
    atomic_store(&h->ncount, 1);
    atomic_store(&h->feed_head, 1);
    atomic_store(&h->top, t.arena_off);
    atomic_store(&h->file_size, t.arena_off);
    return 0;
}

/* Check an existing segment's header (read with pread) and map it. */
static int attach_segment(struct cnb_registry *reg, const cnb_registry_opts_t *o)
{
    const char *path = o->path;
    struct stat sb;
    struct cnb__reg_hdr t;
    /* The header is read before the file's size: a writer growing the segment
     * extends the file before it publishes the new size in the header, so a
     * size read after the header is never smaller than the header says. The
     * mutable sizes are re-read a few times before they count as corrupt, since
     * one pread is not an atomic snapshot of a header another process writes. */
    for (int tries = 0;; tries++) {
        ssize_t got = pread(reg->fd, &t, sizeof t, 0);
        if (fstat(reg->fd, &sb) != 0)
            return openerr(o, CNB_ESYS, "%s: fstat failed: %s", path, strerror(errno));
        if (!S_ISREG(sb.st_mode))
            return openerr(o, CNB_EPERM, "%s: not a regular file", path);
        if (sb.st_uid != geteuid())
            return openerr(o, CNB_EPERM, "%s: owned by uid %u, not by this user (%u)",
                           path, (unsigned)sb.st_uid, (unsigned)geteuid());
        if (sb.st_mode & 077)
            return openerr(o, CNB_EPERM, "%s: mode %03o, a registry segment must be 0600",
                           path, (unsigned)(sb.st_mode & 0777));
        if (got >= 0 && (size_t)got < sizeof t)
            return openerr(o, CNB_EBADFILE,
                           "%s: %lld bytes, too small to be a registry segment", path,
                           (long long)sb.st_size);
        if (got < 0)
            return openerr(o, CNB_ESYS, "%s: cannot read the header: %s", path,
                           strerror(errno));
        uint64_t fs = atomic_load(&t.file_size), tp = atomic_load(&t.top);
        if ((fs <= (uint64_t)sb.st_size && tp <= fs) || tries == 20)
            break;
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    if (memcmp(t.magic, CNB__REG_MAGIC, 6) != 0)
        return openerr(o, CNB_EBADFILE, "%s: bad magic: not a cnode_bridge registry", path);
    if (t.endian != CNB__REG_ENDIAN)
        return openerr(o, CNB_EBADFILE, "%s: made on a machine of another byte order",
                       path);
    if (t.version != CNB__REG_VERSION || memcmp(t.magic, CNB__REG_MAGIC, 8) != 0)
        return openerr(o, CNB_EVERSION, "%s: format version %u, this build reads %u", path,
                       t.version, CNB__REG_VERSION);
    if (t.hdr_size != sizeof t || t.mutex_size != sizeof(pthread_mutex_t) ||
        t.stripe_size != sizeof(struct cnb__reg_stripe) ||
        t.page_size != (uint32_t)sysconf(_SC_PAGESIZE))
        return openerr(o, CNB_EBADFILE,
                       "%s: layout differs from this build (header %u, mutex %u, stripe "
                       "%u, page %u bytes)",
                       path, t.hdr_size, t.mutex_size, t.stripe_size, t.page_size);
    if (t.checksum != checksum(&t))
        return openerr(o, CNB_ECORRUPT, "%s: header checksum mismatch: corrupt", path);
    struct cnb__reg_hdr l = t;
    layout(&l);
    if ((t.kind != CNB_REG_UNIQUE && t.kind != CNB_REG_DUPLICATE) || !is_pow2(t.nstripes) ||
        t.nstripes > CNB__REG_MAX_STRIPES || (1u << t.sbits) != t.nstripes ||
        !is_pow2(t.node_cap) || !is_pow2(t.feed_slots) || t.feed_slot_size < 128 ||
        t.feed_slot_size % 64 || t.attach_cap == 0 || l.arena_off != t.arena_off ||
        l.feed_off != t.feed_off || t.max_size > CNB__REG_LIMIT ||
        t.max_size < t.arena_off)
        return openerr(o, CNB_ECORRUPT, "%s: header fields inconsistent: corrupt", path);
    uint64_t fsize = atomic_load(&t.file_size), top = atomic_load(&t.top);
    if (fsize < t.arena_off || fsize > (uint64_t)sb.st_size || fsize > t.max_size ||
        top < t.arena_off || top > fsize)
        return openerr(o, CNB_ECORRUPT,
                       "%s: sizes inconsistent (file %lld, mapped %llu, top %llu): corrupt",
                       path, (long long)sb.st_size, (unsigned long long)fsize,
                       (unsigned long long)top);
    if (o->kind && (uint32_t)o->kind != t.kind)
        return openerr(o, CNB_EINVAL, "%s: is a %s registry", path,
                       t.kind == CNB_REG_UNIQUE ? "unique" : "duplicate");
    int seals = fcntl(reg->fd, F_GET_SEALS);
    if (seals < 0 || (seals & SEALS) != SEALS)
        return openerr(o, CNB_EPERM,
                       "%s: not sealed against shrinking (F_SEAL_SHRINK): a process could "
                       "truncate it under the mapping; not mapped",
                       path);
    int rc = map_segment(reg, t.max_size, fsize);
    if (rc)
        return openerr(o, rc, "%s: cannot map: %s", path, strerror(errno));
    bind(reg);
    return cnb__reg_remap(reg);
}

static int check_opts(const cnb_registry_opts_t *o)
{
    if (o->kind && o->kind != CNB_REG_UNIQUE && o->kind != CNB_REG_DUPLICATE)
        return openerr(o, CNB_EINVAL, "kind must be CNB_REG_UNIQUE or CNB_REG_DUPLICATE");
    if (o->stripes && (!is_pow2(o->stripes) || o->stripes > CNB__REG_MAX_STRIPES))
        return openerr(o, CNB_EINVAL, "stripes must be a power of two up to %u",
                       CNB__REG_MAX_STRIPES);
    if (o->feed_slots && !is_pow2(o->feed_slots))
        return openerr(o, CNB_EINVAL, "feed_slots must be a power of two");
    if (o->feed_slot_size && (o->feed_slot_size < 128 || o->feed_slot_size % 64 ||
                              o->feed_slot_size > (1u << 20)))
        return openerr(o, CNB_EINVAL, "feed_slot_size must be a multiple of 64 >= 128");
    if (o->node_capacity > (1u << 24))
        return openerr(o, CNB_EINVAL, "node_capacity is at most 2^24");
    if (o->max_size > CNB__REG_LIMIT)
        return openerr(o, CNB_EINVAL, "max_size is at most 64 GiB");
    if (o->max_key_size > (256u << 20) || o->max_value_size > (1u << 30))
        return openerr(o, CNB_EINVAL, "max_key_size <= 256 MiB, max_value_size <= 1 GiB");
    return 0;
}

static void unmap(struct cnb_registry *reg)
{
    if (reg->base)
        munmap(reg->base, RESERVE);
    reg->base = NULL;
    atomic_store(&reg->mapped, 0);
}

/* A new sealed segment in reg->fd (a memfd). */
static int create_memfd(struct cnb_registry *reg, const cnb_registry_opts_t *o)
{
    reg->fd = memfd_create("cnb_registry", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (reg->fd < 0)
        return openerr(o, CNB_ESYS, "memfd_create: %s", strerror(errno));
    return create_segment(reg, o);
}

static void drop_segment(struct cnb_registry *reg)
{
    unmap(reg);
    if (reg->fd >= 0)
        close(reg->fd);
    reg->fd = -1;
}

/* Opens the segment named by path (following the link to the creator's fd),
 * or creates one and links path to it. */
static int open_path(struct cnb_registry *reg, const cnb_registry_opts_t *o, int *created)
{
    const char *path = o->path;
    for (int tries = 0; tries < 8; tries++) {
        struct stat lsb;
        int is_link = lstat(path, &lsb) == 0 && S_ISLNK(lsb.st_mode);
        if (is_link && lsb.st_uid != geteuid())
            return openerr(o, CNB_EPERM, "%s: a link owned by uid %u, not by this user", path,
                           (unsigned)lsb.st_uid);
        /* O_NONBLOCK: a FIFO or device put in the segment's place must not block
         * the open; anything but a regular file is refused right after. */
        reg->fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
        if (reg->fd >= 0) {
            if ((o->flags & CNB_REG_CREATE) && (o->flags & CNB_REG_EXCL))
                return openerr(o, CNB_EEXIST, "%s: exists", path);
            return attach_segment(reg, o);
        }
        if (errno == EACCES || errno == EPERM || errno == ELOOP)
            return openerr(o, CNB_EPERM, "%s: %s", path, strerror(errno));
        if (errno != ENOENT)
            return openerr(o, CNB_ESYS, "%s: %s", path, strerror(errno));
        if (!(o->flags & CNB_REG_CREATE))
            return openerr(o, CNB_ENOENT, "%s: no such registry", path);
        /* A link whose target is gone: its creator closed the segment or
         * died, and the segment went with the last process that had it. */
        if (is_link) {
            (void)unlink(path);
            continue;
        }
        /* Build it, then link it into place: nobody ever opens a half-made
         * segment, and two creators cannot both win. */
        int rc = create_memfd(reg, o);
        if (rc) {
            drop_segment(reg);
            return rc;
        }
        char target[64];
        snprintf(target, sizeof target, "/proc/%d/fd/%d", (int)getpid(), reg->fd);
        if (symlink(target, path) == 0) {
            *created = 1;
            return 0;
        }
        int e = errno;
        drop_segment(reg);
        if (e != EEXIST)
            return openerr(o, e == EACCES ? CNB_EPERM : CNB_ESYS, "%s: cannot link: %s", path,
                           strerror(e));
        if (o->flags & CNB_REG_EXCL)
            return openerr(o, CNB_EEXIST, "%s: exists", path);
    }
    return openerr(o, CNB_ESYS, "%s: keeps appearing and vanishing", path);
}

int cnb_registry_open(const cnb_registry_opts_t *opts, struct cnb_registry **out)
{
    if (!opts || !out)
        return CNB_EINVAL;
    *out = NULL;
    if (opts->errbuf && opts->errbuf_len)
        opts->errbuf[0] = 0;
    int rc = check_opts(opts);
    if (rc)
        return rc;
    const cnb_allocator_t *a = opts->alloc ? opts->alloc : &cnb_default_allocator;
    struct cnb_registry *reg = cnb_alloc(a, sizeof *reg);
    if (!reg)
        return CNB_ENOMEM;
    memset(reg, 0, sizeof *reg);
    reg->alloc = *a;
    reg->fd = -1;
    reg->attach_slot = -1;
    pthread_mutex_init(&reg->map_lock, NULL);
    int created = 0;
    if (!opts->path) {
        rc = create_memfd(reg, opts);
        created = 1;
    } else {
        rc = open_path(reg, opts, &created);
    }
    if (rc == 0 && opts->owner_node) {
        int node = cnb__reg_node_intern(reg, opts->owner_node);
        if (node < 0)
            rc = openerr(opts, node, "owner_node: bad or too many node names");
        else
            reg->owner_node = (uint32_t)node;
        reg->owner_creation = opts->owner_creation;
    }
    if (rc == 0 && created && opts->initial_capacity) {
        uint64_t per = opts->initial_capacity / reg->nstripes + 1;
        for (uint32_t si = 0; rc == 0 && si < reg->nstripes; si++)
            rc = cnb__reg_presize(reg, si, per);
    }
    if (rc == 0)
        rc = cnb__reg_attach(reg);
    if (rc) {
        unmap(reg);
        if (reg->fd >= 0)
            close(reg->fd);
        pthread_mutex_destroy(&reg->map_lock);
        cnb_free(a, reg);
        return rc;
    }
    *out = reg;
    return 0;
}

void cnb_registry_close(struct cnb_registry *reg)
{
    if (!reg)
        return;
    cnb__reg_detach(reg);
    unmap(reg);
    if (reg->fd >= 0)
        close(reg->fd);
    pthread_mutex_destroy(&reg->map_lock);
    cnb_allocator_t a = reg->alloc;
    cnb_free(&a, reg);
}

int cnb_registry_unlink(const char *path)
{
    if (!path)
        return CNB_EINVAL;
    if (unlink(path) == 0)
        return 0;
    return errno == ENOENT ? CNB_ENOENT : CNB_ESYS;
}

int cnb_registry_info(struct cnb_registry *reg, cnb_registry_info_t *info)
{
    if (!reg || !info)
        return CNB_EINVAL;
    struct cnb__reg_hdr *h = reg->hdr;
    memset(info, 0, sizeof *info);
    info->kind = (int)reg->kind;
    info->stripes = reg->nstripes;
    info->max_key_size = reg->max_key;
    info->max_value_size = reg->max_value;
    info->count = cnb_registry_count(reg);
    info->file_size = atomic_load(&h->file_size);
    uint64_t top = atomic_load(&h->top);
    info->arena_used = top > reg->arena_off ? top - reg->arena_off : 0;
    info->generation = atomic_load(&h->generation);
    info->feed_head = atomic_load(&h->feed_head);
    info->nodes = atomic_load(&h->ncount) - 1;
    for (uint32_t i = 0; i < reg->attach_cap; i++)
        info->attached += atomic_load(&reg->attach[i].state) == CNB__ATT_LIVE;
    return 0;
}
