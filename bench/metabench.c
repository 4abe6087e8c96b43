/* metabench: small-file metadata micro-benchmark for bench/run.sh.
 *
 * usage: metabench DIR NFILES [SETTLE_MS]
 *
 * In DIR (created if missing, must be empty) runs these phases, one after the
 * other, over NFILES empty files named f0000000 ...:
 *   create      open(O_CREAT|O_EXCL|O_WRONLY) + close
 *   stat        stat(path)
 *   open-close  open(O_RDONLY) + close
 *   readdir     opendir + readdir to the end + closedir of DIR, repeated
 *               READDIR_REPS times; ops/s counts entries, latency is per
 *               whole listing
 *   rename      rename(fN, rN) within DIR
 *   unlink      unlink(rN)
 * Before each phase after "create" it sleeps SETTLE_MS (default 1100 ms) so
 * that the kernel's FUSE entry/attr caches (1 s in both mergerfs and
 * smoothfs by default) have expired: every FUSE op then reaches the daemon,
 * which is what this benchmark is meant to measure. Native runs sleep too.
 *
 * Prints one line per phase: "PHASE OPS_PER_S P50_US P99_US".
 * Latency is CLOCK_MONOTONIC around each single operation.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define READDIR_REPS 10

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, long n, double p) {
    if (n <= 0) return 0;
    long i = (long)(p * (n - 1) + 0.5);
    if (i >= n) i = n - 1;
    return v[i];
}

static void report(const char *phase, double *lat, long n, double total_s, long ops) {
    qsort(lat, n, sizeof(double), cmp_d);
    printf("%s %.1f %.2f %.2f\n", phase, ops / total_s, pct(lat, n, 0.50) * 1e6,
           pct(lat, n, 0.99) * 1e6);
    fflush(stdout);
}

static void die(const char *what, const char *path) {
    fprintf(stderr, "metabench: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void settle(long ms) {
    if (ms <= 0) return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: metabench DIR NFILES [SETTLE_MS]\n");
        return 2;
    }
    const char *dir = argv[1];
    long n = atol(argv[2]);
    long settle_ms = argc > 3 ? atol(argv[3]) : 1100;
    if (n <= 0) return 2;
    if (mkdir(dir, 0755) && errno != EEXIST) die("mkdir", dir);

    size_t plen = strlen(dir) + 32;
    char *path = malloc(plen), *path2 = malloc(plen);
    double *lat = malloc(sizeof(double) * (n > READDIR_REPS ? n : READDIR_REPS));
    if (!path || !path2 || !lat) return 1;
    double t0, t1, a;

    /* create */
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        snprintf(path, plen, "%s/f%07ld", dir, i);
        a = now_s();
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) die("create", path);
        close(fd);
        lat[i] = now_s() - a;
    }
    t1 = now_s();
    report("create", lat, n, t1 - t0, n);

    /* stat */
    settle(settle_ms);
    struct stat st;
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        snprintf(path, plen, "%s/f%07ld", dir, i);
        a = now_s();
        if (stat(path, &st)) die("stat", path);
        lat[i] = now_s() - a;
    }
    t1 = now_s();
    report("stat", lat, n, t1 - t0, n);

    /* open-close */
    settle(settle_ms);
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        snprintf(path, plen, "%s/f%07ld", dir, i);
        a = now_s();
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) die("open", path);
        close(fd);
        lat[i] = now_s() - a;
    }
    t1 = now_s();
    report("open-close", lat, n, t1 - t0, n);

    /* readdir */
    settle(settle_ms);
    long entries = 0;
    t0 = now_s();
    for (int r = 0; r < READDIR_REPS; r++) {
        a = now_s();
        DIR *d = opendir(dir);
        if (!d) die("opendir", dir);
        long seen = 0;
        while (readdir(d)) seen++;
        closedir(d);
        lat[r] = now_s() - a;
        if (seen < n) {
            fprintf(stderr, "metabench: readdir saw %ld entries, expected >= %ld\n", seen, n);
            return 1;
        }
        entries += seen;
    }
    t1 = now_s();
    report("readdir", lat, READDIR_REPS, t1 - t0, entries);

    /* rename */
    settle(settle_ms);
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        snprintf(path, plen, "%s/f%07ld", dir, i);
        snprintf(path2, plen, "%s/r%07ld", dir, i);
        a = now_s();
        if (rename(path, path2)) die("rename", path);
        lat[i] = now_s() - a;
    }
    t1 = now_s();
    report("rename", lat, n, t1 - t0, n);

    /* unlink */
    settle(settle_ms);
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        snprintf(path2, plen, "%s/r%07ld", dir, i);
        a = now_s();
        if (unlink(path2)) die("unlink", path2);
        lat[i] = now_s() - a;
    }
    t1 = now_s();
    report("unlink", lat, n, t1 - t0, n);

    rmdir(dir);
    return 0;
}
