/* relay: the physical-limit anchor of the forking benchmark, a minimal C UDP relay.
 *
 * One thread, one epoll set, K bound input sockets (in_base + i * in_step). Whatever arrives on
 * input i is sent, from that same socket (as a forking engine does, so the receiver's RTCP would
 * come back to the advertised port), to dest:dest_base + i * dest_step. Reads with recvmmsg, writes
 * the same batch with one sendmmsg. By default the bytes are forwarded untouched; --rewrite gives
 * each output its own SSRC (ssrc_base + i) and shifts sequence number and timestamp by a per-port
 * offset, the work a recording fork does on the plain path, so the figures are comparable.
 *
 * With RTP at 50 packets/s per port, a ready socket nearly always holds one datagram, so the
 * default costs about one recvmmsg and one sendmmsg per packet. --shared-tx sends from one extra
 * socket instead and batches the sends across ports (one sendmmsg per up to --batch packets): a
 * bound on what any relay can do here, not a fork's behaviour (the source port changes).
 *
 * Runs until SIGINT/SIGTERM (or --duration) and then prints its counters as one JSON object on
 * stdout. "relay: ready" goes to stderr once every port is bound.
 */
#include "common.h"

#include <sys/epoll.h>

static const char *PROG = "relay";

#define MAX_BATCH 1024u
#define BUF_SIZE 2048u

struct port {
    int fd;
    struct sockaddr_in dest;
    uint32_t ssrc;
    uint16_t seq_offset;
    uint32_t ts_offset;
    uint64_t received;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: relay --in-base PORT --dest-base PORT [options]\n"
            "  --bind ADDR        IPv4 address of the input ports (default 127.0.0.1)\n"
            "  --in-base PORT     first input port (required)\n"
            "  --count K          number of input ports (default 1)\n"
            "  --in-step N        input port step (default 2)\n"
            "  --dest ADDR        destination IPv4 address (default 127.0.0.1)\n"
            "  --dest-base PORT   destination of input 0 (required)\n"
            "  --dest-step N      destination port step (default 2)\n"
            "  --rewrite          new SSRC per output (ssrc-base + i), shifted seq and timestamp\n"
            "  --ssrc-base X      first rewritten SSRC (default 0x20000000)\n"
            "  --shared-tx        send everything from one extra socket, batching across ports\n"
            "                     (an upper bound: a fork must send from the stream's own port)\n"
            "  --batch N          most datagrams per recvmmsg/sendmmsg (default 64, max %u)\n"
            "  --rcvbuf BYTES     SO_RCVBUF(FORCE) request per socket (default 4194304)\n"
            "  --duration S       stop after S seconds (default 0 = run until SIGINT/SIGTERM)\n"
            "  --cpu LIST         pin to CPUs, e.g. 1\n",
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

/* Datagrams received into rx slots [0, slots) of which `pending` go out as tx[0, pending). */
struct txq {
    struct mmsghdr *tx;
    unsigned slots;
    unsigned pending;
    uint64_t forwarded;
    uint64_t send_errors;
    uint64_t send_calls;
    int last_errno;
    int64_t last_tx;
};

static void flush(struct txq *q, int fd)
{
    unsigned off = 0;
    while (off < q->pending) {
        int w = sendmmsg(fd, q->tx + off, q->pending - off, 0);
        q->send_calls++;
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            q->last_errno = errno;
            q->send_errors++;
            off++; /* the first message of the rest was refused: skip it */
            continue;
        }
        q->forwarded += (uint64_t)w;
        off += (unsigned)w;
    }
    if (q->pending != 0) {
        q->last_tx = clock_ns(CLOCK_MONOTONIC);
    }
    q->slots = 0;
    q->pending = 0;
}

static inline void rewrite(uint8_t *p, unsigned len, const struct port *pt)
{
    if (len < RTP_HEADER_LEN || (p[1] >= 200 && p[1] <= 204)) {
        return; /* not RTP, or RTCP: leave it alone */
    }
    uint16_t seq = (uint16_t)(((p[2] << 8) | p[3]) + pt->seq_offset);
    uint32_t ts = (((uint32_t)p[4] << 24) | ((uint32_t)p[5] << 16) | ((uint32_t)p[6] << 8) | p[7]);
    ts += pt->ts_offset;
    p[2] = (uint8_t)(seq >> 8);
    p[3] = (uint8_t)seq;
    p[4] = (uint8_t)(ts >> 24);
    p[5] = (uint8_t)(ts >> 16);
    p[6] = (uint8_t)(ts >> 8);
    p[7] = (uint8_t)ts;
    p[8] = (uint8_t)(pt->ssrc >> 24);
    p[9] = (uint8_t)(pt->ssrc >> 16);
    p[10] = (uint8_t)(pt->ssrc >> 8);
    p[11] = (uint8_t)pt->ssrc;
}

int main(int argc, char **argv)
{
    const char *bind_text = "127.0.0.1";
    const char *dest_text = "127.0.0.1";
    const char *cpus = NULL;
    unsigned in_base = 0, count = 1, in_step = 2;
    unsigned dest_base = 0, dest_step = 2;
    unsigned batch = 64;
    int do_rewrite = 0;
    int shared_tx = 0;
    int rcvbuf = 4 << 20;
    uint32_t ssrc_base = 0x20000000u;
    double duration = 0.0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--bind") == 0) {
            bind_text = need_value(argc, argv, &i);
        } else if (strcmp(a, "--in-base") == 0) {
            in_base = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, 65535);
        } else if (strcmp(a, "--count") == 0) {
            count = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, 65535);
        } else if (strcmp(a, "--in-step") == 0) {
            in_step = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, 65535);
        } else if (strcmp(a, "--dest") == 0) {
            dest_text = need_value(argc, argv, &i);
        } else if (strcmp(a, "--dest-base") == 0) {
            dest_base = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, 65535);
        } else if (strcmp(a, "--dest-step") == 0) {
            dest_step = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 0, 65535);
        } else if (strcmp(a, "--rewrite") == 0) {
            do_rewrite = 1;
        } else if (strcmp(a, "--shared-tx") == 0) {
            shared_tx = 1;
        } else if (strcmp(a, "--ssrc-base") == 0) {
            ssrc_base = (uint32_t)parse_u64(PROG, a, need_value(argc, argv, &i), 0, UINT32_MAX);
        } else if (strcmp(a, "--batch") == 0) {
            batch = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, MAX_BATCH);
        } else if (strcmp(a, "--rcvbuf") == 0) {
            rcvbuf = (int)parse_u64(PROG, a, need_value(argc, argv, &i), 0, 1 << 30);
        } else if (strcmp(a, "--duration") == 0) {
            duration = parse_double(PROG, a, need_value(argc, argv, &i), 0.0, 86400.0);
        } else if (strcmp(a, "--cpu") == 0) {
            cpus = need_value(argc, argv, &i);
        } else {
            usage(stderr);
            die(PROG, "unknown option '%s'", a);
        }
    }
    if (in_base == 0 || dest_base == 0) {
        usage(stderr);
        die(PROG, "%s", "--in-base and --dest-base are required");
    }
    if ((uint64_t)in_base + (uint64_t)(count - 1) * in_step > 65535 ||
        (uint64_t)dest_base + (uint64_t)(count - 1) * dest_step > 65535) {
        die(PROG, "%s", "a port range goes past 65535");
    }
    struct in_addr addr = parse_ipv4(PROG, "--bind", bind_text);
    struct in_addr dest = parse_ipv4(PROG, "--dest", dest_text);
    if (cpus != NULL) {
        pin_cpus(PROG, cpus);
    }
    install_stop_handlers();
    check_fd_budget(PROG, count);

    struct port *ports = calloc(count, sizeof(*ports));
    int *fds = calloc(count, sizeof(*fds));
    uint8_t *bufs = malloc((size_t)batch * BUF_SIZE);
    struct iovec *rx_iov = calloc(batch, sizeof(*rx_iov));
    struct iovec *tx_iov = calloc(batch, sizeof(*tx_iov));
    struct mmsghdr *rx = calloc(batch, sizeof(*rx));
    struct mmsghdr *tx = calloc(batch, sizeof(*tx));
    if (!ports || !fds || !bufs || !rx_iov || !tx_iov || !rx || !tx) {
        die_errno(PROG, "calloc");
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        die_errno(PROG, "epoll_create1");
    }
    for (unsigned i = 0; i < count; i++) {
        struct port *pt = &ports[i];
        pt->fd = udp_socket_bound(PROG, addr, in_base + i * in_step);
        set_buffer(pt->fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf);
        pt->dest.sin_family = AF_INET;
        pt->dest.sin_addr = dest;
        pt->dest.sin_port = htons((uint16_t)(dest_base + i * dest_step));
        pt->ssrc = ssrc_base + i;
        pt->seq_offset = (uint16_t)(i * 7919u + 1000u);
        pt->ts_offset = i * 104729u + 160000u;
        fds[i] = pt->fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, pt->fd, &ev) != 0) {
            die_errno(PROG, "epoll_ctl");
        }
    }
    int shared_fd = -1;
    if (shared_tx) {
        shared_fd = udp_socket_bound(PROG, addr, 0);
    }
    for (unsigned j = 0; j < batch; j++) {
        rx_iov[j].iov_base = tx_iov[j].iov_base = bufs + (size_t)j * BUF_SIZE;
        rx_iov[j].iov_len = BUF_SIZE;
        rx[j].msg_hdr.msg_iov = &rx_iov[j];
        rx[j].msg_hdr.msg_iovlen = 1;
        tx[j].msg_hdr.msg_iov = &tx_iov[j];
        tx[j].msg_hdr.msg_iovlen = 1;
        tx[j].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
    }
    fprintf(stderr, "relay: ready %u ports from %u to %u\n", count, in_base, dest_base);
    fflush(stderr);

    uint64_t received = 0, truncated = 0, recv_calls = 0, wakeups = 0;
    int64_t first_rx = 0;
    struct txq q = {.tx = tx};
    const int64_t start = clock_ns(CLOCK_MONOTONIC);
    struct epoll_event events[256];

    while (!g_stop) {
        int nev = epoll_wait(ep, events, 256, 100);
        if (nev < 0) {
            if (errno == EINTR) {
                continue;
            }
            die_errno(PROG, "epoll_wait");
        }
        wakeups++;
        for (int e = 0; e < nev; e++) {
            struct port *pt = &ports[events[e].data.u32];
            for (int round = 0; round < 16; round++) {
                unsigned room = batch - q.slots;
                int r = recvmmsg(pt->fd, rx + q.slots, room, MSG_DONTWAIT, NULL);
                recv_calls++;
                if (r <= 0) {
                    break;
                }
                if (first_rx == 0) {
                    first_rx = clock_ns(CLOCK_MONOTONIC);
                }
                received += (uint64_t)r;
                pt->received += (uint64_t)r;
                for (unsigned j = q.slots; j < q.slots + (unsigned)r; j++) {
                    if (rx[j].msg_hdr.msg_flags & MSG_TRUNC) {
                        truncated++;
                        continue;
                    }
                    if (do_rewrite) {
                        rewrite(rx_iov[j].iov_base, rx[j].msg_len, pt);
                    }
                    tx_iov[q.pending].iov_base = rx_iov[j].iov_base;
                    tx_iov[q.pending].iov_len = rx[j].msg_len;
                    tx[q.pending].msg_hdr.msg_name = &pt->dest;
                    q.pending++;
                }
                q.slots += (unsigned)r;
                if (shared_fd < 0) {
                    flush(&q, pt->fd); /* from the socket it arrived on */
                } else if (q.slots == batch) {
                    flush(&q, shared_fd);
                }
                if ((unsigned)r < room) {
                    break;
                }
            }
        }
        if (shared_fd >= 0) {
            flush(&q, shared_fd);
        }
        if (duration > 0 && (double)(clock_ns(CLOCK_MONOTONIC) - start) / 1e9 >= duration) {
            break;
        }
    }
    const int64_t end = clock_ns(CLOCK_MONOTONIC);
    long long socket_drops = udp_socket_drops(fds, count);
    unsigned active_ports = 0;
    for (unsigned i = 0; i < count; i++) {
        active_ports += ports[i].received != 0;
    }
    double user_s, sys_s;
    cpu_times(&user_s, &sys_s);
    double active = first_rx ? (double)(q.last_tx - first_rx) / 1e9 : 0.0;
    uint64_t forwarded = q.forwarded;
    FILE *out = stdout;
    fprintf(out, "{\"program\":\"relay\",\"bind\":\"%s\",\"in_base\":%u,\"count\":%u,\"in_step\":%u,",
            bind_text, in_base, count, in_step);
    fprintf(out, "\"dest\":\"%s\",\"dest_base\":%u,\"dest_step\":%u,", dest_text, dest_base, dest_step);
    fprintf(out, "\"rewrite\":%s,\"shared_tx\":%s,", do_rewrite ? "true" : "false",
            shared_fd >= 0 ? "true" : "false");
    fprintf(out,
            "\"received\":%" PRIu64 ",\"forwarded\":%" PRIu64 ",\"send_errors\":%" PRIu64
            ",\"last_errno\":%d,\"truncated\":%" PRIu64 ",",
            received, forwarded, q.send_errors, q.last_errno, truncated);
    fprintf(out, "\"socket_drops\":%lld,\"active_ports\":%u,", socket_drops, active_ports);
    fprintf(out,
            "\"recvmmsg_calls\":%" PRIu64 ",\"sendmmsg_calls\":%" PRIu64 ",\"epoll_wakeups\":%" PRIu64 ",",
            recv_calls, q.send_calls, wakeups);
    fprintf(out, "\"elapsed_s\":%.6f,\"active_s\":%.6f,\"rate\":%.3f,", (double)(end - start) / 1e9, active,
            active > 0 ? (double)forwarded / active : 0.0);
    fprintf(out, "\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f}\n", user_s, sys_s);
    fflush(out);
    return 0;
}
