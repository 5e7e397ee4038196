/* Shared helpers for rtpgen.c, rtpsink.c and relay.c: clocks, option parsing, CPU pinning,
 * a log-linear histogram, socket set-up, per-socket drop counters and JSON output.
 *
 * Everything here is `static inline` so that a program that does not use a helper gets no
 * -Wunused-function warning (the build uses -Wall -Wextra -Werror). Linux only, IPv4 only.
 */
#ifndef LOADGEN_COMMON_H
#define LOADGEN_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define RTP_HEADER_LEN 12

/* ---- errors ------------------------------------------------------------------------------ */

static inline void die(const char *prog, const char *fmt, const char *arg)
{
    fprintf(stderr, "%s: ", prog);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(2);
}

static inline void die_errno(const char *prog, const char *what)
{
    fprintf(stderr, "%s: %s: %s\n", prog, what, strerror(errno));
    exit(1);
}

/* ---- clocks ------------------------------------------------------------------------------ */

static inline int64_t clock_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void sleep_until_ns(clockid_t clock, int64_t deadline)
{
    struct timespec ts = {.tv_sec = deadline / 1000000000LL, .tv_nsec = deadline % 1000000000LL};
    /* EINTR (a signal) just returns early: the caller re-checks its stop flag and the clock. */
    (void)clock_nanosleep(clock, TIMER_ABSTIME, &ts, NULL);
}

/* ---- option parsing ---------------------------------------------------------------------- */

static inline uint64_t parse_u64(const char *prog, const char *name, const char *text, uint64_t min,
                                 uint64_t max)
{
    char *end = NULL;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 0);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || value < min || value > max) {
        fprintf(stderr, "%s: %s: bad value '%s' (allowed %" PRIu64 "..%" PRIu64 ")\n", prog, name, text,
                min, max);
        exit(2);
    }
    return (uint64_t)value;
}

static inline double parse_double(const char *prog, const char *name, const char *text, double min,
                                  double max)
{
    char *end = NULL;
    errno = 0;
    double value = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value >= min && value <= max)) {
        fprintf(stderr, "%s: %s: bad value '%s' (allowed %g..%g)\n", prog, name, text, min, max);
        exit(2);
    }
    return value;
}

static inline struct in_addr parse_ipv4(const char *prog, const char *name, const char *text)
{
    struct in_addr addr;
    if (inet_pton(AF_INET, text, &addr) != 1) {
        fprintf(stderr, "%s: %s: not an IPv4 address: '%s'\n", prog, name, text);
        exit(2);
    }
    return addr;
}

/* "--cpu 0" or "--cpu 0,1" or "--cpu 0-1" as a CPU set. */
static inline cpu_set_t parse_cpu_list(const char *prog, const char *list)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    const char *p = list;
    while (*p != '\0') {
        char *end = NULL;
        long first = strtol(p, &end, 10);
        long last = first;
        if (end == p || first < 0 || first >= CPU_SETSIZE) {
            die(prog, "--cpu: bad CPU list '%s' (e.g. 0 or 0,1 or 0-1)", list);
        }
        p = end;
        if (*p == '-') {
            last = strtol(p + 1, &end, 10);
            if (end == p + 1 || last < first || last >= CPU_SETSIZE) {
                die(prog, "--cpu: bad CPU list '%s' (e.g. 0 or 0,1 or 0-1)", list);
            }
            p = end;
        }
        for (long cpu = first; cpu <= last; cpu++) {
            CPU_SET((int)cpu, &set);
        }
        if (*p == ',') {
            p++;
        } else if (*p != '\0') {
            die(prog, "--cpu: bad CPU list '%s' (e.g. 0 or 0,1 or 0-1)", list);
        }
    }
    if (CPU_COUNT(&set) == 0) {
        die(prog, "--cpu: empty CPU list '%s'", list);
    }
    return set;
}

/* The n-th CPU (round robin) of a set, for spreading threads over it. */
static inline int nth_cpu(const cpu_set_t *set, unsigned n)
{
    unsigned want = n % (unsigned)CPU_COUNT(set);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, set) && want-- == 0) {
            return cpu;
        }
    }
    return 0;
}

/* Pin the whole process before any work starts. */
static inline void pin_cpus(const char *prog, const char *list)
{
    cpu_set_t set = parse_cpu_list(prog, list);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
        die_errno(prog, "sched_setaffinity");
    }
}

/* ---- process resources ------------------------------------------------------------------- */

/* Many ports means many sockets: lift the soft descriptor limit to the hard one. */
static inline rlim_t raise_nofile(void)
{
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        return 0;
    }
    if (lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    return lim.rlim_cur;
}

static inline void check_fd_budget(const char *prog, unsigned sockets)
{
    rlim_t limit = raise_nofile();
    if (limit != 0 && limit != RLIM_INFINITY && (rlim_t)sockets + 16 > limit) {
        fprintf(stderr, "%s: %u sockets need more descriptors than RLIMIT_NOFILE allows (%llu)\n", prog,
                sockets, (unsigned long long)limit);
        exit(2);
    }
}

static inline void cpu_times(double *user_s, double *sys_s)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user_s = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys_s = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* ---- sockets ----------------------------------------------------------------------------- */

/* Ask for `bytes` of socket buffer; as root go past net.core.[rw]mem_max with the FORCE variant. */
static inline void set_buffer(int fd, int force_opt, int opt, int bytes)
{
    if (bytes <= 0) {
        return;
    }
    if (setsockopt(fd, SOL_SOCKET, force_opt, &bytes, sizeof(bytes)) != 0) {
        setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof(bytes));
    }
}

static inline int udp_socket_bound(const char *prog, struct in_addr addr, unsigned port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        die_errno(prog, "socket");
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr = addr};
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        char what[64];
        snprintf(what, sizeof(what), "bind port %u", port);
        die_errno(prog, what);
    }
    return fd;
}

/* Sum of the kernel's per-socket drop counters (last column of /proc/net/udp) for the given
 * sockets, matched by inode: datagrams that arrived while the socket's receive queue was full. */
static inline int cmp_ino(const void *a, const void *b)
{
    unsigned long x = *(const unsigned long *)a;
    unsigned long y = *(const unsigned long *)b;
    return (x > y) - (x < y);
}

static inline long long udp_socket_drops(const int *fds, unsigned count)
{
    unsigned long *inodes = calloc(count ? count : 1, sizeof(*inodes));
    if (inodes == NULL) {
        return -1;
    }
    for (unsigned i = 0; i < count; i++) {
        struct stat st;
        inodes[i] = fstat(fds[i], &st) == 0 ? (unsigned long)st.st_ino : 0;
    }
    qsort(inodes, count, sizeof(*inodes), cmp_ino);
    FILE *f = fopen("/proc/net/udp", "r");
    if (f == NULL) {
        free(inodes);
        return -1;
    }
    char line[512];
    long long total = 0;
    if (fgets(line, sizeof(line), f) == NULL) { /* header line */
        fclose(f);
        free(inodes);
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        /* sl local rem st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ref pointer drops */
        unsigned long inode = 0;
        unsigned long long drops = 0;
        int n = sscanf(line, "%*s %*s %*s %*s %*s %*s %*s %*s %*s %lu %*s %*s %llu", &inode, &drops);
        if (n == 2 && inode != 0 && bsearch(&inode, inodes, count, sizeof(*inodes), cmp_ino) != NULL) {
            total += (long long)drops;
        }
    }
    fclose(f);
    free(inodes);
    return total;
}

/* ---- log-linear histogram (about 1.6 % relative resolution) ------------------------------- */

#define HIST_SUB_BITS 6
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS 4096u

struct histogram {
    uint64_t count;
    uint64_t min;
    uint64_t max;
    long double sum;
    uint64_t buckets[HIST_BUCKETS];
};

static inline void hist_init(struct histogram *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

static inline unsigned hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB) {
        return (unsigned)v;
    }
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;
    unsigned idx = shift * HIST_SUB + (unsigned)(v >> shift);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* Largest value that falls into bucket `idx`. */
static inline uint64_t hist_bucket_top(unsigned idx)
{
    if (idx < 2 * HIST_SUB) {
        return idx;
    }
    unsigned shift = idx / HIST_SUB - 1;
    uint64_t mantissa = idx - shift * HIST_SUB; /* in [HIST_SUB, 2 * HIST_SUB) */
    return ((mantissa + 1) << shift) - 1;
}

static inline void hist_add(struct histogram *h, uint64_t v)
{
    h->count++;
    h->sum += (long double)v;
    if (v < h->min) {
        h->min = v;
    }
    if (v > h->max) {
        h->max = v;
    }
    h->buckets[hist_index(v)]++;
}

/* The value at quantile q (0..1): the top of the bucket holding it, never above the maximum. */
static inline uint64_t hist_quantile(const struct histogram *h, double q)
{
    if (h->count == 0) {
        return 0;
    }
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if (rank >= h->count) {
        rank = h->count - 1;
    }
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen > rank) {
            uint64_t top = hist_bucket_top(i);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

/* Prints {"count":..,"min":..,"mean":..,"p50":..,"p90":..,"p99":..,"p999":..,"max":..} in the
 * histogram's unit divided by `div` (1 = as recorded). */
static inline void hist_json(FILE *out, const struct histogram *h, double div)
{
    if (h->count == 0) {
        fprintf(out, "{\"count\":0}");
        return;
    }
    fprintf(out,
            "{\"count\":%" PRIu64 ",\"min\":%.3f,\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
            "\"p999\":%.3f,\"max\":%.3f}",
            h->count, (double)h->min / div, (double)(h->sum / (long double)h->count) / div,
            (double)hist_quantile(h, 0.50) / div, (double)hist_quantile(h, 0.90) / div,
            (double)hist_quantile(h, 0.99) / div, (double)hist_quantile(h, 0.999) / div,
            (double)h->max / div);
}

/* ---- signals ----------------------------------------------------------------------------- */

static volatile sig_atomic_t g_stop = 0;

static inline void on_stop_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* SIGINT/SIGTERM set g_stop; no SA_RESTART, so blocking calls return EINTR and loops re-check.
 * The parent's death sends SIGTERM too, so a benchmark killed midway leaves no program behind. */
static inline void install_stop_handlers(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
}

#endif
