/* registry_attach.c: attach records (one per open handle: pid, process start
 * time, optional owner node) and the purge of leftovers of attachers whose OS
 * process is gone. Tests: tests/unit/test_registry.c (attach, purge). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "registry_int.h"

/* The kernel's PF_EXITING (include/linux/sched.h): set on a task as soon as
 * it starts to exit (before its memory and files are released), so a process
 * killed with SIGKILL shows it while its sockets close, before it is a zombie. */
#define PF_EXITING_FLAG 0x4ULL

uint64_t cnb__reg_stat_start(const char *stat)
{
    const char *p = strrchr(stat, ')');
    if (!p || p[1] != ' ')
        return 0;
    p += 2;
    if (*p == 'Z' || *p == 'X')
        return 0; /* a zombie is gone for our purposes */
    /* Fields after the command: state is field 3, flags field 9, starttime
     * field 22. */
    uint64_t start = 0;
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return 0;
        p++;
        if (field + 1 == 9) {
            char *end;
            unsigned long long flags = strtoull(p, &end, 10);
            if (end == p || (flags & PF_EXITING_FLAG))
                return 0; /* being torn down: as good as gone */
        }
    }
    char *end;
    start = strtoull(p, &end, 10);
    return end == p ? 0 : start;
}

uint64_t cnb__reg_proc_start(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return cnb__reg_stat_start(buf);
}

int cnb_registry_os_pid_alive(int pid)
{
    return pid > 0 && cnb__reg_proc_start(pid) != 0;
}

static int alock(struct cnb_registry *reg)
{
    return cnb__reg_lock_simple(&reg->hdr->alock, NULL, reg);
}

static void aunlock(struct cnb_registry *reg)
{
    cnb__reg_mutex_unlock(&reg->hdr->alock);
}

static void try_simple(struct cnb_registry *reg, pthread_mutex_t *m,
                       void (*repair)(struct cnb_registry *))
{
    int rc = cnb__reg_mutex_trylock(m);
    if (rc == EOWNERDEAD) {
        if (repair)
            repair(reg);
        pthread_mutex_consistent(m);
        cnb__reg_mutex_unlock(m);
    } else if (rc == 0) {
        cnb__reg_mutex_unlock(m);
    }
}

static void glog_repair(struct cnb_registry *reg)
{
    cnb__reg_log_rollback(reg, &reg->hdr->glog);
}

void cnb__reg_sweep_locks(struct cnb_registry *reg)
{
    for (uint32_t si = 0; si <= reg->nstripes; si++)
        cnb__reg_stripe_try_repair(reg, si);
    try_simple(reg, &reg->hdr->glock, glog_repair);
    try_simple(reg, &reg->hdr->nlock, cnb__reg_node_repair);
    try_simple(reg, &reg->hdr->flock, NULL);
    try_simple(reg, &reg->hdr->alock, NULL);
}

ssize_t cnb_registry_purge(struct cnb_registry *reg)
{
    if (!reg)
        return CNB_EINVAL;
    struct cnb__reg_attach *at = reg->attach;
    uint32_t cap = reg->attach_cap;
    int rc = alock(reg);
    if (rc)
        return rc;
    for (uint32_t i = 0; i < cap; i++) {
        if (atomic_load(&at[i].state) != CNB__ATT_LIVE)
            continue;
        if (cnb__reg_proc_start(at[i].pid) != at[i].start)
            atomic_store(&at[i].state, CNB__ATT_DEAD);
    }
    aunlock(reg);
    cnb__reg_sweep_locks(reg);
    ssize_t n = 0;
    for (uint32_t i = 0; i < cap; i++) {
        if (atomic_load(&at[i].state) != CNB__ATT_DEAD)
            continue;
        if ((rc = alock(reg)) != 0)
            return rc;
        int dead = atomic_load(&at[i].state) == CNB__ATT_DEAD;
        uint32_t node = at[i].node, creation = at[i].creation;
        int32_t pid = at[i].pid;
        uint64_t start = at[i].start;
        aunlock(reg);
        if (!dead)
            continue;
        /* Idempotent: several purgers may do this at once; the record is freed
         * only after the entries are gone, so a purger that dies is redone. */
        if (node) {
            ssize_t r = cnb__reg_remove_node_idx(reg, node, creation);
            if (r < 0)
                return r;
        }
        if ((rc = alock(reg)) != 0)
            return rc;
        if (atomic_load(&at[i].state) == CNB__ATT_DEAD && at[i].pid == pid &&
            at[i].start == start) {
            atomic_store(&at[i].state, CNB__ATT_FREE);
            n++;
        }
        aunlock(reg);
    }
    return n;
}

int cnb__reg_attach(struct cnb_registry *reg)
{
    ssize_t p = cnb_registry_purge(reg);
    if (p < 0)
        return (int)p;
    int rc = alock(reg);
    if (rc)
        return rc;
    reg->attach_slot = -1;
    for (uint32_t i = 0; i < reg->attach_cap; i++) {
        struct cnb__reg_attach *a = &reg->attach[i];
        if (atomic_load(&a->state) != CNB__ATT_FREE)
            continue;
        a->pid = (int32_t)getpid();
        a->start = cnb__reg_proc_start((int)getpid());
        a->node = reg->owner_node;
        a->creation = reg->owner_creation;
        a->when_ns = cnb__reg_now_ns();
        atomic_store(&a->state, CNB__ATT_LIVE);
        reg->attach_slot = (int)i;
        break;
    }
    aunlock(reg);
    /* A full table only means this attacher is not recorded. */
    return 0;
}

void cnb__reg_detach(struct cnb_registry *reg)
{
    if (reg->attach_slot < 0)
        return;
    if (alock(reg) != 0)
        return;
    struct cnb__reg_attach *a = &reg->attach[reg->attach_slot];
    if (a->pid == (int32_t)getpid())
        atomic_store(&a->state, CNB__ATT_FREE);
    aunlock(reg);
    reg->attach_slot = -1;
}
