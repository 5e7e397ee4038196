/* rtpsink: counts what arrives, per SSRC, on a set of UDP ports, and measures latency.
 *
 * Binds count ports (base, base + step, ...; with --rtcp also each port + 1), waits on them with
 * epoll and drains each ready socket with recvmmsg. Every datagram carries the kernel's receive
 * time (SO_TIMESTAMPNS, CLOCK_REALTIME, taken when the packet entered the receive path, so the
 * sink's own queueing delay is not in it).
 *
 * Per SSRC (only the clear RTP header is read, so SRTP packets count the same way): packets,
 * bytes, lost (sequence numbers between the lowest and highest seen that never arrived),
 * duplicates and reorders (detected inside a 1024-packet window; older arrivals are "late").
 * Sequence numbers are extended across the 16-bit wrap.
 *
 * Latency: receive time minus the CLOCK_REALTIME stamp rtpgen writes into the first 8 payload
 * bytes, of the packets received --latency-after seconds or more after the first one (all packets
 * are counted; the start-up transient, e.g. a subject latching thousands of new sources at once,
 * is left out of the steady-state percentiles and counted as latency_skipped). With --srtp the payload is encrypted, so no latency is reported (the stamp cannot be
 * read without the keys); a stamp that gives a negative or > 60 s latency is counted as invalid.
 *
 * Stops after --idle-timeout without packets (once the first one arrived), after --duration,
 * once --expect packets arrived, when nothing arrived within --start-timeout, or on
 * SIGINT/SIGTERM; then prints one JSON object on stdout. "rtpsink: ready" goes to stderr once
 * every port is bound.
 */
#include "common.h"

#include <sys/epoll.h>

static const char *PROG = "rtpsink";

#define MAX_BATCH 1024u
#define BUF_SIZE 2048u
#define WINDOW 1024u /* packets of sequence history per SSRC, a power of two */
#define MAX_LATENCY_NS (60LL * 1000000000LL)

struct stream {
    uint32_t ssrc;
    uint32_t used;
    unsigned port;
    uint16_t first_seq;
    int64_t base_ext; /* lowest extended sequence number seen */
    int64_t max_ext;  /* highest extended sequence number seen */
    uint64_t packets;
    uint64_t bytes;
    uint64_t unique;
    uint64_t duplicates;
    uint64_t reorders;
    uint64_t late;
    uint64_t window[WINDOW / 64];
};

struct port {
    int fd;
    unsigned number;
    struct stream *last; /* a socket nearly always carries one SSRC: skip the hash lookup */
};

struct counters {
    uint64_t rtp_packets;
    uint64_t rtp_bytes;
    uint64_t rtcp_packets;
    uint64_t not_rtp;
    uint64_t truncated;
    uint64_t overflow; /* packets of SSRCs past --max-streams */
    uint64_t no_kernel_ts;
    uint64_t latency_invalid;
    uint64_t latency_skipped;
    uint64_t recv_calls;
    int64_t first_rx_ns;
    int64_t last_rx_ns;
};

static struct stream *g_table;  /* open addressing on the SSRC */
static uint32_t g_table_mask;
static struct stream **g_order; /* streams in order of first packet */
static unsigned g_nstreams;
static unsigned g_max_streams;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: rtpsink --base-port PORT [options]\n"
            "  --bind ADDR          IPv4 address to bind (default 127.0.0.1)\n"
            "  --base-port PORT     first port (required)\n"
            "  --count N            number of ports (default 1)\n"
            "  --step N             port step (default 2)\n"
            "  --rtcp               also bind port + 1 of each port (RTCP is counted, not analysed)\n"
            "  --srtp               payload is encrypted: count per SSRC/seq, no latency\n"
            "  --latency-after S    latency only of packets received S s or more after the first\n"
            "                       (default 0: all)\n"
            "  --idle-timeout S     stop S seconds after the last packet (default 2)\n"
            "  --start-timeout S    stop if nothing arrived after S seconds (default 30, 0 = never)\n"
            "  --duration S         stop S seconds after start (default 0 = no limit)\n"
            "  --expect N           stop once N RTP packets arrived\n"
            "  --batch N            most datagrams per recvmmsg call (default 64, max %u)\n"
            "  --rcvbuf BYTES       SO_RCVBUF(FORCE) request per socket (default 4194304)\n"
            "  --max-streams N      distinct SSRCs tracked (default 65536)\n"
            "  --poll-us N          look at the sockets every N us instead of being woken by each\n"
            "                       arrival (default 0 = woken); spares the senders the wake-ups,\n"
            "                       latency is unaffected (kernel receive stamps)\n"
            "  --cpu LIST           pin to CPUs, e.g. 1 or 0,1\n"
            "  --no-per-stream      leave the per-SSRC array out of the JSON\n",
            MAX_BATCH);
}

static const char *need_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        die(PROG, "%s needs a value", argv[*i]);
    }
    *i += 1;
    return argv[*i];
}

static inline uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline uint64_t get_be64(const uint8_t *p)
{
    return ((uint64_t)get_be32(p) << 32) | get_be32(p + 4);
}

static struct stream *lookup(uint32_t ssrc, unsigned port)
{
    uint32_t i = (ssrc * 2654435761u) & g_table_mask;
    for (;;) {
        struct stream *s = &g_table[i];
        if (!s->used) {
            if (g_nstreams >= g_max_streams) {
                return NULL;
            }
            s->used = 1;
            s->ssrc = ssrc;
            s->port = port;
            g_order[g_nstreams++] = s;
            return s;
        }
        if (s->ssrc == ssrc) {
            return s;
        }
        i = (i + 1) & g_table_mask;
    }
}

static inline int window_test(const struct stream *s, int64_t ext)
{
    uint64_t bit = (uint64_t)ext & (WINDOW - 1);
    return (int)((s->window[bit / 64] >> (bit % 64)) & 1u);
}

static inline void window_set(struct stream *s, int64_t ext)
{
    uint64_t bit = (uint64_t)ext & (WINDOW - 1);
    s->window[bit / 64] |= 1ull << (bit % 64);
}

static inline void window_clear(struct stream *s, int64_t ext)
{
    uint64_t bit = (uint64_t)ext & (WINDOW - 1);
    s->window[bit / 64] &= ~(1ull << (bit % 64));
}

/* Sequence bookkeeping for one packet of stream s. */
static inline void account_seq(struct stream *s, uint16_t seq)
{
    if (s->packets == 0) {
        s->first_seq = seq;
        s->base_ext = s->max_ext = 65536 + seq; /* room below for reordered early packets */
        s->unique = 1;
        window_set(s, s->max_ext);
        return;
    }
    /* the extended number closest to the highest seen */
    int64_t ext = s->max_ext + (int16_t)(uint16_t)(seq - (uint16_t)s->max_ext);
    if (ext > s->max_ext) {
        if (ext - s->max_ext >= (int64_t)WINDOW) {
            memset(s->window, 0, sizeof(s->window));
        } else {
            for (int64_t e = s->max_ext + 1; e < ext; e++) {
                window_clear(s, e);
            }
        }
        window_set(s, ext);
        s->max_ext = ext;
        s->unique++;
        return;
    }
    if (s->max_ext - ext >= (int64_t)WINDOW) {
        s->late++; /* too old to tell a duplicate from a reorder: counted once as new */
        s->unique++;
    } else if (window_test(s, ext)) {
        s->duplicates++;
        return;
    } else {
        window_set(s, ext);
        s->reorders++;
        s->unique++;
    }
    if (ext < s->base_ext) {
        s->base_ext = ext;
    }
}

static inline uint64_t stream_lost(const struct stream *s)
{
    if (s->packets == 0) {
        return 0;
    }
    uint64_t expected = (uint64_t)(s->max_ext - s->base_ext + 1);
    return expected > s->unique ? expected - s->unique : 0;
}

int main(int argc, char **argv)
{
    const char *bind_text = "127.0.0.1";
    const char *cpus = NULL;
    unsigned base_port = 0;
    unsigned count = 1;
    unsigned step = 2;
    unsigned batch = 64;
    int rtcp = 0;
    int srtp = 0;
    int64_t poll_ns = 0;
    int per_stream = 1;
    int rcvbuf = 4 << 20;
    double idle_timeout = 2.0;
    double start_timeout = 30.0;
    double duration = 0.0;
    double latency_after = 0.0;
    uint64_t expect = 0;
    g_max_streams = 65536;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--bind") == 0) {
            bind_text = need_value(argc, argv, &i);
        } else if (strcmp(a, "--base-port") == 0) {
            base_port = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, 65535);
        } else if (strcmp(a, "--count") == 0) {
            count = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, 65535);
        } else if (strcmp(a, "--step") == 0) {
            step = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, 65535);
        } else if (strcmp(a, "--rtcp") == 0) {
            rtcp = 1;
        } else if (strcmp(a, "--srtp") == 0) {
            srtp = 1;
        } else if (strcmp(a, "--poll-us") == 0) {
            poll_ns = 1000 * (int64_t)parse_u64(PROG, a, need_value(argc, argv, &i), 0, 1000000);
        } else if (strcmp(a, "--idle-timeout") == 0) {
            idle_timeout = parse_double(PROG, a, need_value(argc, argv, &i), 0.001, 86400.0);
        } else if (strcmp(a, "--start-timeout") == 0) {
            start_timeout = parse_double(PROG, a, need_value(argc, argv, &i), 0.0, 86400.0);
        } else if (strcmp(a, "--latency-after") == 0) {
            latency_after = parse_double(PROG, a, need_value(argc, argv, &i), 0.0, 86400.0);
        } else if (strcmp(a, "--duration") == 0) {
            duration = parse_double(PROG, a, need_value(argc, argv, &i), 0.0, 86400.0);
        } else if (strcmp(a, "--expect") == 0) {
            expect = parse_u64(PROG, a, need_value(argc, argv, &i), 1, UINT64_MAX / 2);
        } else if (strcmp(a, "--batch") == 0) {
            batch = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, MAX_BATCH);
        } else if (strcmp(a, "--rcvbuf") == 0) {
            rcvbuf = (int)parse_u64(PROG, a, need_value(argc, argv, &i), 0, 1 << 30);
        } else if (strcmp(a, "--max-streams") == 0) {
            g_max_streams = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, 1u << 22);
        } else if (strcmp(a, "--cpu") == 0) {
            cpus = need_value(argc, argv, &i);
        } else if (strcmp(a, "--no-per-stream") == 0) {
            per_stream = 0;
        } else {
            usage(stderr);
            die(PROG, "unknown option '%s'", a);
        }
    }
    if (base_port == 0) {
        usage(stderr);
        die(PROG, "%s", "--base-port is required");
    }
    if ((uint64_t)base_port + (uint64_t)(count - 1) * step + (rtcp ? 1 : 0) > 65535) {
        die(PROG, "%s", "base-port + (count - 1) * step is past 65535");
    }
    if (rtcp && step < 2) {
        die(PROG, "%s", "--rtcp needs --step 2 or more (port + 1 is the RTCP port)");
    }
    struct in_addr addr = parse_ipv4(PROG, "--bind", bind_text);
    const int64_t latency_after_ns = (int64_t)(latency_after * 1e9);
    if (cpus != NULL) {
        pin_cpus(PROG, cpus);
    }
    install_stop_handlers();

    unsigned nports = count * (rtcp ? 2u : 1u);
    check_fd_budget(PROG, nports);
    uint32_t capacity = 1;
    while (capacity < 2u * g_max_streams) {
        capacity <<= 1;
    }
    g_table_mask = capacity - 1;
    g_table = calloc(capacity, sizeof(*g_table));
    g_order = calloc(g_max_streams, sizeof(*g_order));
    struct port *ports = calloc(nports, sizeof(*ports));
    int *fds = calloc(nports, sizeof(*fds));
    uint8_t *bufs = malloc((size_t)batch * BUF_SIZE);
    struct iovec *iov = calloc(batch, sizeof(*iov));
    struct mmsghdr *msgs = calloc(batch, sizeof(*msgs));
    const size_t ctl_size = CMSG_SPACE(sizeof(struct timespec)) + CMSG_SPACE(sizeof(uint32_t));
    uint8_t *ctl = calloc(batch, ctl_size);
    struct histogram *latency = malloc(sizeof(*latency));
    if (!g_table || !g_order || !ports || !fds || !bufs || !iov || !msgs || !ctl || !latency) {
        die_errno(PROG, "calloc");
    }
    hist_init(latency);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        die_errno(PROG, "epoll_create1");
    }
    const int on = 1;
    for (unsigned i = 0; i < nports; i++) {
        unsigned number = base_port + (i % count) * step + (i >= count ? 1u : 0u);
        int fd = udp_socket_bound(PROG, addr, number);
        if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0) {
            die_errno(PROG, "SO_TIMESTAMPNS");
        }
        set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf);
        ports[i].fd = fd;
        ports[i].number = number;
        fds[i] = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            die_errno(PROG, "epoll_ctl");
        }
    }
    for (unsigned j = 0; j < batch; j++) {
        iov[j].iov_base = bufs + (size_t)j * BUF_SIZE;
        iov[j].iov_len = BUF_SIZE;
        msgs[j].msg_hdr.msg_iov = &iov[j];
        msgs[j].msg_hdr.msg_iovlen = 1;
        msgs[j].msg_hdr.msg_control = ctl + (size_t)j * ctl_size;
    }
    fprintf(stderr, "rtpsink: ready %u ports from %u\n", nports, base_port);
    fflush(stderr);

    struct counters c;
    memset(&c, 0, sizeof(c));
    const char *reason = "signal";
    const int64_t start = clock_ns(CLOCK_MONOTONIC);
    int64_t last_rx_mono = 0;
    int64_t next_poll = start;
    struct epoll_event events[256];

    while (!g_stop) {
        int nev = epoll_wait(ep, events, 256, poll_ns ? 0 : 20);
        if (nev < 0 && errno != EINTR) {
            die_errno(PROG, "epoll_wait");
        }
        uint64_t before = c.rtp_packets + c.rtcp_packets + c.not_rtp;
        for (int e = 0; e < nev; e++) {
            struct port *pt = &ports[events[e].data.u32];
            for (int round = 0; round < 16; round++) {
                for (unsigned j = 0; j < batch; j++) {
                    msgs[j].msg_hdr.msg_controllen = ctl_size;
                }
                int r = recvmmsg(pt->fd, msgs, batch, MSG_DONTWAIT, NULL);
                c.recv_calls++;
                if (r <= 0) {
                    break;
                }
                for (int j = 0; j < r; j++) {
                    const uint8_t *p = iov[j].iov_base;
                    unsigned len = msgs[j].msg_len;
                    int64_t rx_ns = 0;
                    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msgs[j].msg_hdr); cm != NULL;
                         cm = CMSG_NXTHDR(&msgs[j].msg_hdr, cm)) {
                        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                            struct timespec ts;
                            memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
                            rx_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
                        }
                    }
                    if (rx_ns == 0) {
                        c.no_kernel_ts++;
                        rx_ns = clock_ns(CLOCK_REALTIME);
                    }
                    if (msgs[j].msg_hdr.msg_flags & MSG_TRUNC) {
                        c.truncated++;
                        continue;
                    }
                    if (len < RTP_HEADER_LEN || (p[0] & 0xC0) != 0x80) {
                        c.not_rtp++;
                        continue;
                    }
                    if (p[1] >= 200 && p[1] <= 204) { /* SR, RR, SDES, BYE, APP (RFC 5761) */
                        c.rtcp_packets++;
                        continue;
                    }
                    if (c.first_rx_ns == 0) {
                        c.first_rx_ns = rx_ns;
                    }
                    c.last_rx_ns = rx_ns;
                    c.rtp_packets++;
                    c.rtp_bytes += len;
                    uint32_t ssrc = get_be32(p + 8);
                    struct stream *s = pt->last;
                    if (s == NULL || s->ssrc != ssrc) {
                        s = lookup(ssrc, pt->number);
                        if (s == NULL) {
                            c.overflow++;
                            continue;
                        }
                        pt->last = s;
                    }
                    account_seq(s, (uint16_t)((p[2] << 8) | p[3]));
                    s->packets++;
                    s->bytes += len;
                    if (srtp) {
                        continue;
                    }
                    if (rx_ns - c.first_rx_ns < latency_after_ns) {
                        c.latency_skipped++;
                        continue;
                    }
                    unsigned off = RTP_HEADER_LEN + 4u * (p[0] & 0x0Fu);
                    if ((p[0] & 0x10) && off + 4 <= len) { /* header extension */
                        off += 4 + 4u * (((unsigned)p[off + 2] << 8) | p[off + 3]);
                    }
                    if (off + 8 > len) {
                        c.latency_invalid++;
                        continue;
                    }
                    int64_t lat = rx_ns - (int64_t)get_be64(p + off);
                    if (lat < 0 || lat > MAX_LATENCY_NS) {
                        c.latency_invalid++;
                    } else {
                        hist_add(latency, (uint64_t)lat);
                    }
                }
                if ((unsigned)r < batch) {
                    break;
                }
            }
        }
        int64_t now = clock_ns(CLOCK_MONOTONIC);
        if (c.rtp_packets + c.rtcp_packets + c.not_rtp != before) {
            last_rx_mono = now;
        }
        if (expect != 0 && c.rtp_packets >= expect) {
            reason = "expect";
            break;
        }
        if (last_rx_mono != 0 && (double)(now - last_rx_mono) / 1e9 >= idle_timeout) {
            reason = "idle";
            break;
        }
        if (last_rx_mono == 0 && start_timeout > 0 && (double)(now - start) / 1e9 >= start_timeout) {
            reason = "start_timeout";
            break;
        }
        if (duration > 0 && (double)(now - start) / 1e9 >= duration) {
            reason = "duration";
            break;
        }
        if (poll_ns != 0 && nev < 256) { /* everything ready was read: wait for the next tick */
            next_poll += poll_ns;
            if (next_poll <= now) {
                next_poll = now + poll_ns;
            }
            sleep_until_ns(CLOCK_MONOTONIC, next_poll);
        }
    }
    const int64_t end = clock_ns(CLOCK_MONOTONIC);
    long long socket_drops = udp_socket_drops(fds, nports);

    uint64_t lost = 0, dups = 0, reorders = 0, late = 0;
    for (unsigned i = 0; i < g_nstreams; i++) {
        lost += stream_lost(g_order[i]);
        dups += g_order[i]->duplicates;
        reorders += g_order[i]->reorders;
        late += g_order[i]->late;
    }
    double user_s, sys_s;
    cpu_times(&user_s, &sys_s);
    double active = (double)(c.last_rx_ns - c.first_rx_ns) / 1e9;
    FILE *out = stdout;
    fprintf(out, "{\"program\":\"rtpsink\",\"bind\":\"%s\",\"base_port\":%u,\"count\":%u,\"step\":%u,",
            bind_text, base_port, count, step);
    fprintf(out, "\"srtp\":%s,\"stop_reason\":\"%s\",\"elapsed_s\":%.6f,\"active_s\":%.6f,",
            srtp ? "true" : "false", reason, (double)(end - start) / 1e9, active);
    fprintf(out, "\"packets\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"rate\":%.3f,", c.rtp_packets,
            c.rtp_bytes, active > 0 ? (double)(c.rtp_packets - 1) / active : 0.0);
    fprintf(out,
            "\"lost\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"reorders\":%" PRIu64 ",\"late\":%" PRIu64
            ",",
            lost, dups, reorders, late);
    fprintf(out,
            "\"rtcp_packets\":%" PRIu64 ",\"not_rtp\":%" PRIu64 ",\"truncated\":%" PRIu64
            ",\"overflow\":%" PRIu64 ",",
            c.rtcp_packets, c.not_rtp, c.truncated, c.overflow);
    fprintf(out, "\"socket_drops\":%lld,\"no_kernel_ts\":%" PRIu64 ",\"recvmmsg_calls\":%" PRIu64 ",",
            socket_drops, c.no_kernel_ts, c.recv_calls);
    fprintf(out, "\"first_rx_ns\":%" PRId64 ",\"last_rx_ns\":%" PRId64 ",\"streams_seen\":%u,",
            c.first_rx_ns, c.last_rx_ns, g_nstreams);
    fprintf(out, "\"latency_invalid\":%" PRIu64 ",\"latency_skipped\":%" PRIu64 ",\"latency_us\":",
            c.latency_invalid, c.latency_skipped);
    if (srtp) {
        fprintf(out, "null");
    } else {
        hist_json(out, latency, 1000.0);
    }
    fprintf(out, ",\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f", user_s, sys_s);
    if (per_stream) {
        fprintf(out, ",\"streams\":[");
        for (unsigned i = 0; i < g_nstreams; i++) {
            const struct stream *s = g_order[i];
            fprintf(out,
                    "%s{\"ssrc\":%" PRIu32 ",\"port\":%u,\"packets\":%" PRIu64 ",\"bytes\":%" PRIu64
                    ",\"first_seq\":%u,\"expected\":%" PRId64 ",\"lost\":%" PRIu64
                    ",\"duplicates\":%" PRIu64 ",\"reorders\":%" PRIu64 ",\"late\":%" PRIu64 "}",
                    i ? "," : "", s->ssrc, s->port, s->packets, s->bytes, (unsigned)s->first_seq,
                    s->max_ext - s->base_ext + 1, stream_lost(s), s->duplicates, s->reorders, s->late);
        }
        fprintf(out, "]");
    }
    fprintf(out, "}\n");
    fflush(out);
    return 0;
}
