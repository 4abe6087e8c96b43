/* metabench: small-file metadata micro-benchmark for bench/run.sh.
 *
 * usage: metabench DIR NFILES [SETTLE_MS]
 *        metabench -i BATCH NFILES SETTLE_MS DIR...
 *
 * In each DIR (created if missing, must be empty) runs these phases, one
 * after the other, over NFILES empty files named f0000000 ...:
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
 * which is what this benchmark is meant to measure.
 *
 * With -i (interleaved), the DIRs -- one per target under test -- take
 * turns within each phase: BATCH operations on one, then BATCH on the
 * next, the order rotating by one every batch (A B C, B C A, C A B, ...;
 * a readdir batch is one listing). Every target thus runs through the same
 * seconds of the machine's drift (a VM's CPU and memory speed change from
 * one second to the next), and the ratios between them stay put even when
 * the absolute rates do not. A target's ops/s is its operations over the
 * sum of its own batches' times.
 *
 * Prints one line per phase (per DIR with -i, prefixed by the DIR's index
 * from 0): "[INDEX] PHASE OPS_PER_S P50_US P99_US". Latency is
 * CLOCK_MONOTONIC around each single operation.
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

enum phase { CREATE, STAT, OPEN_CLOSE, READDIR, RENAME, UNLINK, NPHASES };
static const char *phase_name[NPHASES] = {"create", "stat", "open-close",
                                          "readdir", "rename", "unlink"};

struct target {
    const char *dir;
    char *path, *path2;
    size_t plen;
    double *lat;   /* per operation (per listing for readdir) */
    double busy_s; /* sum of this target's batch times in the phase */
    long done;     /* operations timed in the phase */
    long entries;  /* readdir: entries seen */
};

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

static void die(const char *what, const char *path) {
    fprintf(stderr, "metabench: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void settle(long ms) {
    if (ms <= 0) return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* One operation of phase p on file i of t; returns its latency. */
static double one_op(struct target *t, enum phase p, long i, long n) {
    struct stat st;
    double a;
    int fd;
    switch (p) {
    case CREATE:
        snprintf(t->path, t->plen, "%s/f%07ld", t->dir, i);
        a = now_s();
        fd = open(t->path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) die("create", t->path);
        close(fd);
        return now_s() - a;
    case STAT:
        snprintf(t->path, t->plen, "%s/f%07ld", t->dir, i);
        a = now_s();
        if (stat(t->path, &st)) die("stat", t->path);
        return now_s() - a;
    case OPEN_CLOSE:
        snprintf(t->path, t->plen, "%s/f%07ld", t->dir, i);
        a = now_s();
        fd = open(t->path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) die("open", t->path);
        close(fd);
        return now_s() - a;
    case READDIR: {
        a = now_s();
        DIR *d = opendir(t->dir);
        if (!d) die("opendir", t->dir);
        long seen = 0;
        while (readdir(d)) seen++;
        closedir(d);
        double l = now_s() - a;
        if (seen < n) {
            fprintf(stderr, "metabench: readdir of %s saw %ld entries, expected >= %ld\n",
                    t->dir, seen, n);
            exit(1);
        }
        t->entries += seen;
        return l;
    }
    case RENAME:
        snprintf(t->path, t->plen, "%s/f%07ld", t->dir, i);
        snprintf(t->path2, t->plen, "%s/r%07ld", t->dir, i);
        a = now_s();
        if (rename(t->path, t->path2)) die("rename", t->path);
        return now_s() - a;
    case UNLINK:
        snprintf(t->path2, t->plen, "%s/r%07ld", t->dir, i);
        a = now_s();
        if (unlink(t->path2)) die("unlink", t->path2);
        return now_s() - a;
    default:
        return 0;
    }
}

int main(int argc, char **argv) {
    long n, settle_ms = 1100, batch;
    int ntargets, first, interleaved = argc > 1 && strcmp(argv[1], "-i") == 0;
    if (interleaved) {
        if (argc < 6) goto usage;
        batch = atol(argv[2]);
        n = atol(argv[3]);
        settle_ms = atol(argv[4]);
        first = 5;
        ntargets = argc - 5;
        if (batch <= 0) goto usage;
    } else {
        if (argc < 3 || argc > 4) goto usage;
        n = atol(argv[2]);
        if (argc > 3) settle_ms = atol(argv[3]);
        first = 1;
        ntargets = 1;
        batch = n;
    }
    if (n <= 0) goto usage;

    struct target *ts = calloc(ntargets, sizeof *ts);
    if (!ts) return 1;
    for (int k = 0; k < ntargets; k++) {
        struct target *t = &ts[k];
        t->dir = argv[first + k];
        if (mkdir(t->dir, 0755) && errno != EEXIST) die("mkdir", t->dir);
        t->plen = strlen(t->dir) + 32;
        t->path = malloc(t->plen);
        t->path2 = malloc(t->plen);
        t->lat = malloc(sizeof(double) * (n > READDIR_REPS ? n : READDIR_REPS));
        if (!t->path || !t->path2 || !t->lat) return 1;
    }

    for (int p = 0; p < NPHASES; p++) {
        if (p > 0) settle(settle_ms);
        long ops = p == READDIR ? READDIR_REPS : n;
        long step = p == READDIR ? 1 : batch;
        for (int k = 0; k < ntargets; k++) {
            ts[k].busy_s = 0;
            ts[k].done = 0;
            ts[k].entries = 0;
        }
        for (long b = 0, start = 0; start < ops; b++, start += step) {
            long end = start + step < ops ? start + step : ops;
            for (int j = 0; j < ntargets; j++) {
                struct target *t = &ts[(j + b) % ntargets];
                double t0 = now_s();
                for (long i = start; i < end; i++) t->lat[t->done++] = one_op(t, p, i, n);
                t->busy_s += now_s() - t0;
            }
        }
        for (int k = 0; k < ntargets; k++) {
            struct target *t = &ts[k];
            long counted = p == READDIR ? t->entries : t->done;
            qsort(t->lat, t->done, sizeof(double), cmp_d);
            if (interleaved) printf("%d ", k);
            printf("%s %.1f %.2f %.2f\n", phase_name[p], counted / t->busy_s,
                   pct(t->lat, t->done, 0.50) * 1e6, pct(t->lat, t->done, 0.99) * 1e6);
        }
        fflush(stdout);
    }
    for (int k = 0; k < ntargets; k++) rmdir(ts[k].dir);
    return 0;

usage:
    fprintf(stderr, "usage: metabench DIR NFILES [SETTLE_MS]\n"
                    "       metabench -i BATCH NFILES SETTLE_MS DIR...\n");
    return 2;
}
