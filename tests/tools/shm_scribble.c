/* shm_scribble: a hostile same-user process for registry segments. Maps the
 * segment at PATH (a /dev/shm name or a /proc/PID/fd/N path) and, for SECONDS,
 * writes random bytes (and values chosen to hurt: 0, all ones, huge refs, odd
 * sequence numbers) at random offsets, and tries to truncate it each round.
 * Used by tests/integration/nif_tests.erl (hostile_segment).
 *
 * Usage: shm_scribble PATH SECONDS SEED. Prints one line "writes N truncations
 * refused M" and exits 0; exits 3 if a truncation succeeded (the segment was
 * not sealed), 2 if the segment cannot be opened or mapped. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static uint64_t state;

static uint64_t rnd(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static uint64_t nasty(void)
{
    static const uint64_t v[] = {0, 1, 3, 0xFFFFFFFFu, 0xFFFFFFF0u, 0x7FFFFFFFu, ~(uint64_t)0,
                                 0x1000, 0xFF, 0x3F00000001ULL};
    return rnd() % 2 ? v[rnd() % (sizeof v / sizeof v[0])] : rnd();
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: shm_scribble PATH SECONDS SEED\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || sb.st_size < 4096) {
        fprintf(stderr, "shm_scribble: %s: %s\n", argv[1], strerror(errno));
        return 2;
    }
    size_t len = (size_t)sb.st_size;
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "shm_scribble: mmap: %s\n", strerror(errno));
        return 2;
    }
    state = strtoull(argv[3], NULL, 10) | 1;
    time_t end = time(NULL) + atoi(argv[2]);
    unsigned long writes = 0, refused = 0;
    while (time(NULL) < end) {
        for (int i = 0; i < 32; i++, writes++) {
            uint64_t v = nasty();
            size_t size = (size_t)1 << (rnd() % 4);
            size_t off = (size_t)(rnd() % (len - 8)) & ~(size - 1);
            memcpy(p + off, &v, size);
        }
        if (ftruncate(fd, 0) == 0 || errno != EPERM) {
            printf("truncated: %s\n", strerror(errno));
            return 3;
        }
        refused++;
        struct timespec ts = {0, 500000};
        nanosleep(&ts, NULL);
    }
    printf("writes %lu truncations refused %lu\n", writes, refused);
    return 0;
}
