/* rtpgen: a paced RTP sender for the forking benchmarks.
 *
 * N streams from one UDP socket per sending thread (one thread by default, so one source port
 * for all streams): stream i has SSRC ssrc_base + i and goes to dest:base_port + i * step, or to
 * dest:port i of --ports-file (for a subject that picks its own ports, such as rtpengine). With
 * --threads T, thread t sends the streams i with i % T == t from its own socket on the same
 * schedule, so T threads reach about T times the rate of one when there are cores for them.
 * Packets are PCMU-shaped: a 12-byte RTP header and a 160-byte payload by default (172 bytes),
 * 50 packets/s per stream by default; the marker bit is set on each stream's first packet.
 *
 * Pacing: packet k of a thread's share (its streams interleaved, round robin) is due at
 * t0 + k / thread_rate on CLOCK_MONOTONIC. The loop sleeps with clock_nanosleep(TIMER_ABSTIME)
 * until the next deadline (timer slack 1 ns), but wakes at most once per --tick-us (default
 * 100 us), then sends every packet that is due, up to --batch per sendmmsg call. Deadlines are
 * absolute, so a late wake-up never shifts the schedule: the run sends exactly rate * duration
 * packets, each packet leaves within about one tick of its due time (<= 100 us of jitter against
 * a 20 ms packet interval), and lateness is reported as "lag". The tick matters on a VM, where a
 * wake-up costs several us: one per packet would burn a core at 100k packets/s. --tick-us 0
 * wakes for every deadline.
 *
 * Latency stamp: the first 8 payload bytes hold CLOCK_REALTIME in ns (big-endian), read just before
 * the sendmmsg call of the batch. The sink compares it with the kernel's SO_TIMESTAMPNS receive time,
 * which is also CLOCK_REALTIME, so sender and sink must run on the same machine.
 *
 * Prints one JSON object on stdout when done (or on SIGINT/SIGTERM). Exit 0 when every planned
 * packet was handed to the kernel, 1 on a send error or an early stop, 2 on bad usage.
 */
#include "common.h"

#include <ctype.h>
#include <pthread.h>

static const char *PROG = "rtpgen";

#define MAX_BATCH 1024u

static void usage(FILE *out)
{
    fprintf(out,
            "usage: rtpgen --base-port PORT [options]\n"
            "  --dest ADDR        destination IPv4 address (default 127.0.0.1)\n"
            "  --base-port PORT   destination port of stream 0 (required unless --ports-file)\n"
            "  --ports-file PATH  destination port of each stream, one number per stream (whitespace\n"
            "                     or comma separated); sets --streams to their count\n"
            "  --step N           port step between streams (default 2: RTP ports are even)\n"
            "  --streams N        number of streams (default 1)\n"
            "  --pps P            packets/s per stream (default 50)\n"
            "  --rate R           total packets/s for all streams (overrides --pps)\n"
            "  --duration S       seconds to send (default 1); the run sends round(R * S) packets\n"
            "  --packets N        total packets to send instead of --duration\n"
            "  --batch N          most packets per sendmmsg call (default 64, max %u)\n"
            "  --threads T        sending threads, each with its own socket (default 1)\n"
            "  --tick-us N        wake at most every N us and send what is due (default 100)\n"
            "  --payload BYTES    payload size (default 160; at least 8 for the time stamp)\n"
            "  --pt N             RTP payload type (default 0 = PCMU)\n"
            "  --ts-step N        RTP timestamp increment per packet (default 160)\n"
            "  --ssrc-base X      SSRC of stream 0; stream i gets X + i (default 0x10000000)\n"
            "  --seq-start N      first sequence number of every stream (default 0)\n"
            "  --bind ADDR        source address (default: any)\n"
            "  --src-port PORT    source port (default: ephemeral)\n"
            "  --sndbuf BYTES     SO_SNDBUF(FORCE) request (default 4194304)\n"
            "  --cpu LIST         pin to CPUs, e.g. 0 or 0,1 (thread t gets the t-th CPU of the list)\n"
            "  --no-per-stream    leave the sent_per_stream array out of the JSON\n",
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

/* Destination ports from a file of numbers separated by whitespace or commas; returns how many. */
static unsigned read_ports(const char *path, uint16_t **out)
{
    FILE *in = fopen(path, "r");
    if (in == NULL) {
        die_errno(PROG, path);
    }
    size_t cap = 1024, n = 0;
    uint16_t *ports = malloc(cap * sizeof(*ports));
    if (ports == NULL) {
        die_errno(PROG, "malloc");
    }
    char word[32];
    int c = 0;
    while (c != EOF) {
        size_t len = 0;
        while ((c = fgetc(in)) != EOF && c != ',' && !isspace(c)) {
            if (len + 1 >= sizeof(word)) {
                die(PROG, "%s", "--ports-file holds a word that is not a port number");
            }
            word[len++] = (char)c;
        }
        if (len == 0) {
            continue;
        }
        word[len] = '\0';
        if (n == 65535) {
            die(PROG, "%s", "--ports-file lists more than 65535 ports");
        }
        if (n == cap) {
            cap *= 2;
            ports = realloc(ports, cap * sizeof(*ports));
            if (ports == NULL) {
                die_errno(PROG, "realloc");
            }
        }
        ports[n++] = (uint16_t)parse_u64(PROG, "--ports-file", word, 1, 65535);
    }
    fclose(in);
    if (n == 0) {
        die(PROG, "%s", "--ports-file lists no port");
    }
    *out = ports;
    return (unsigned)n;
}

static inline void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

struct config {
    struct in_addr src;
    unsigned src_port;
    unsigned streams;
    unsigned threads;
    unsigned batch;
    unsigned payload;
    unsigned pt;
    uint32_t ts_step;
    uint32_t ssrc_base;
    uint16_t seq_start;
    int sndbuf;
    int64_t tick_ns;
    int pin; /* pin each thread to one CPU of `cpus` */
    cpu_set_t cpus;
    int64_t t0; /* common start on CLOCK_MONOTONIC */
    const struct sockaddr_in *dests;
    uint64_t *sent_per_stream; /* each stream belongs to one thread: no sharing */
};

struct worker {
    const struct config *cfg;
    unsigned index;
    unsigned nstreams; /* streams index, index + T, index + 2T, ... */
    double rate;
    uint64_t planned;
    uint64_t sent;
    uint64_t send_errors;
    uint64_t calls;
    int last_errno;
    unsigned src_port;
    int64_t first_stamp;
    int64_t last_stamp;
    int64_t end;
    struct histogram lag;
    pthread_t thread;
};

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    const struct config *cfg = w->cfg;
    const unsigned T = cfg->threads;
    if (cfg->pin) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(nth_cpu(&cfg->cpus, w->index), &one);
        pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
    }
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL); /* wake at the deadline, not up to 50 us after */

    int fd = udp_socket_bound(PROG, cfg->src, cfg->src_port ? cfg->src_port + w->index : 0);
    set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, cfg->sndbuf);
    struct sockaddr_in local;
    socklen_t local_len = sizeof(local);
    getsockname(fd, (struct sockaddr *)&local, &local_len);
    w->src_port = ntohs(local.sin_port);

    const unsigned batch = cfg->batch;
    const size_t pkt_len = RTP_HEADER_LEN + cfg->payload;
    uint8_t *bufs = calloc(batch, pkt_len);
    struct iovec *iov = calloc(batch, sizeof(*iov));
    struct mmsghdr *msgs = calloc(batch, sizeof(*msgs));
    unsigned *stream_of = calloc(batch, sizeof(*stream_of));
    if (!bufs || !iov || !msgs || !stream_of) {
        die_errno(PROG, "calloc");
    }
    for (unsigned j = 0; j < batch; j++) {
        uint8_t *p = bufs + (size_t)j * pkt_len;
        memset(p + RTP_HEADER_LEN, 0xFF, cfg->payload); /* PCMU silence after the stamp */
        iov[j].iov_base = p;
        iov[j].iov_len = pkt_len;
        msgs[j].msg_hdr.msg_iov = &iov[j];
        msgs[j].msg_hdr.msg_iovlen = 1;
        msgs[j].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
    }

    const long double ns_per_packet = 1e9L / (long double)w->rate;
    const uint64_t total = w->planned;
    const int64_t t0 = cfg->t0;
    sleep_until_ns(CLOCK_MONOTONIC, t0);
    int64_t last_wake = t0;
    uint64_t k = 0; /* next packet of this thread's share */
    while (k < total && !g_stop) {
        int64_t now = clock_ns(CLOCK_MONOTONIC);
        int64_t deadline = t0 + (int64_t)((long double)k * ns_per_packet);
        if (now < deadline) {
            int64_t wake = deadline;
            if (wake < last_wake + cfg->tick_ns) {
                wake = last_wake + cfg->tick_ns;
            }
            sleep_until_ns(CLOCK_MONOTONIC, wake);
            last_wake = wake;
            continue;
        }
        uint64_t due = (uint64_t)((long double)(now - t0) / ns_per_packet) + 1;
        if (due <= k) {
            due = k + 1;
        }
        if (due > total) {
            due = total;
        }
        unsigned n = (due - k) < batch ? (unsigned)(due - k) : batch;
        hist_add(&w->lag, (uint64_t)(now - deadline));

        int64_t stamp = clock_ns(CLOCK_REALTIME);
        if (w->first_stamp == 0) {
            w->first_stamp = stamp;
        }
        w->last_stamp = stamp;
        for (unsigned j = 0; j < n; j++) {
            uint64_t g = k + j;
            unsigned s = w->index + (unsigned)(g % w->nstreams) * T;
            uint64_t nth = g / w->nstreams; /* packet number within its stream */
            uint8_t *p = bufs + (size_t)j * pkt_len;
            p[0] = 0x80; /* V=2, no padding, no extension, no CSRC */
            p[1] = (uint8_t)((nth == 0 ? 0x80u : 0u) | cfg->pt); /* marker on a stream's first packet */
            put_be16(p + 2, (uint16_t)(cfg->seq_start + nth));
            put_be32(p + 4, (uint32_t)(nth * cfg->ts_step));
            put_be32(p + 8, cfg->ssrc_base + s);
            put_be64(p + RTP_HEADER_LEN, (uint64_t)stamp);
            msgs[j].msg_hdr.msg_name = (void *)&cfg->dests[s];
            stream_of[j] = s;
        }
        unsigned off = 0;
        while (off < n) {
            int r = sendmmsg(fd, msgs + off, n - off, 0);
            w->calls++;
            if (r < 0) {
                if (errno == EINTR) {
                    continue;
                }
                w->last_errno = errno;
                w->send_errors++;
                off++; /* the first message of the rest was refused: skip it */
                continue;
            }
            for (int j = 0; j < r; j++) {
                cfg->sent_per_stream[stream_of[off + (unsigned)j]]++;
            }
            w->sent += (uint64_t)r;
            off += (unsigned)r;
        }
        k += n;
    }
    w->end = clock_ns(CLOCK_MONOTONIC);
    close(fd);
    free(bufs);
    free(iov);
    free(msgs);
    free(stream_of);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *dest_text = "127.0.0.1";
    const char *bind_text = NULL;
    const char *cpus = NULL;
    const char *ports_file = NULL;
    unsigned base_port = 0;
    unsigned step = 2;
    unsigned streams = 1;
    unsigned threads = 1;
    unsigned tick_us = 100;
    unsigned batch = 64;
    unsigned payload = 160;
    unsigned pt = 0;
    unsigned src_port = 0;
    uint32_t ts_step = 160;
    uint32_t ssrc_base = 0x10000000u;
    uint16_t seq_start = 0;
    double pps = 50.0;
    double rate = 0.0;
    double duration = 1.0;
    uint64_t packets = 0;
    int sndbuf = 4 << 20;
    int per_stream = 1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--dest") == 0) {
            dest_text = need_value(argc, argv, &i);
        } else if (strcmp(a, "--base-port") == 0) {
            base_port = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, 65535);
        } else if (strcmp(a, "--ports-file") == 0) {
            ports_file = need_value(argc, argv, &i);
        } else if (strcmp(a, "--step") == 0) {
            step = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 0, 65535);
        } else if (strcmp(a, "--streams") == 0) {
            streams = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, 65535);
        } else if (strcmp(a, "--threads") == 0) {
            threads = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, 64);
        } else if (strcmp(a, "--tick-us") == 0) {
            tick_us = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 0, 1000000);
        } else if (strcmp(a, "--pps") == 0) {
            pps = parse_double(PROG, a, need_value(argc, argv, &i), 0.001, 1e7);
        } else if (strcmp(a, "--rate") == 0) {
            rate = parse_double(PROG, a, need_value(argc, argv, &i), 0.001, 1e8);
        } else if (strcmp(a, "--duration") == 0) {
            duration = parse_double(PROG, a, need_value(argc, argv, &i), 0.0, 86400.0);
        } else if (strcmp(a, "--packets") == 0) {
            packets = parse_u64(PROG, a, need_value(argc, argv, &i), 1, UINT64_MAX / 2);
        } else if (strcmp(a, "--batch") == 0) {
            batch = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 1, MAX_BATCH);
        } else if (strcmp(a, "--payload") == 0) {
            payload = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 8, 1400);
        } else if (strcmp(a, "--pt") == 0) {
            pt = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 0, 127);
        } else if (strcmp(a, "--ts-step") == 0) {
            ts_step = (uint32_t)parse_u64(PROG, a, need_value(argc, argv, &i), 0, UINT32_MAX);
        } else if (strcmp(a, "--ssrc-base") == 0) {
            ssrc_base = (uint32_t)parse_u64(PROG, a, need_value(argc, argv, &i), 0, UINT32_MAX);
        } else if (strcmp(a, "--seq-start") == 0) {
            seq_start = (uint16_t)parse_u64(PROG, a, need_value(argc, argv, &i), 0, 65535);
        } else if (strcmp(a, "--bind") == 0) {
            bind_text = need_value(argc, argv, &i);
        } else if (strcmp(a, "--src-port") == 0) {
            src_port = (unsigned)parse_u64(PROG, a, need_value(argc, argv, &i), 0, 65535);
        } else if (strcmp(a, "--sndbuf") == 0) {
            sndbuf = (int)parse_u64(PROG, a, need_value(argc, argv, &i), 0, 1 << 30);
        } else if (strcmp(a, "--cpu") == 0) {
            cpus = need_value(argc, argv, &i);
        } else if (strcmp(a, "--no-per-stream") == 0) {
            per_stream = 0;
        } else {
            usage(stderr);
            die(PROG, "unknown option '%s'", a);
        }
    }
    uint16_t *port_list = NULL;
    if (ports_file != NULL) {
        streams = read_ports(ports_file, &port_list);
    } else if (base_port == 0) {
        usage(stderr);
        die(PROG, "%s", "--base-port (or --ports-file) is required");
    }
    if (port_list == NULL && (uint64_t)base_port + (uint64_t)(streams - 1) * step > 65535) {
        die(PROG, "%s", "base-port + (streams - 1) * step is past 65535");
    }
    if (threads > streams) {
        threads = streams;
    }
    if (src_port != 0 && src_port + threads - 1 > 65535) {
        die(PROG, "%s", "src-port + threads - 1 is past 65535");
    }
    if (rate <= 0.0) {
        rate = pps * streams;
    }

    struct config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.src.s_addr = htonl(INADDR_ANY);
    if (bind_text != NULL) {
        cfg.src = parse_ipv4(PROG, "--bind", bind_text);
    }
    struct in_addr dest = parse_ipv4(PROG, "--dest", dest_text);
    if (cpus != NULL) {
        cfg.cpus = parse_cpu_list(PROG, cpus);
        cfg.pin = 1;
        pin_cpus(PROG, cpus);
    }
    install_stop_handlers();

    struct sockaddr_in *dests = calloc(streams, sizeof(*dests));
    uint64_t *sent_per = calloc(streams, sizeof(*sent_per));
    struct worker *workers = calloc(threads, sizeof(*workers));
    if (!dests || !sent_per || !workers) {
        die_errno(PROG, "calloc");
    }
    for (unsigned s = 0; s < streams; s++) {
        dests[s].sin_family = AF_INET;
        dests[s].sin_addr = dest;
        dests[s].sin_port = htons(port_list ? port_list[s] : (uint16_t)(base_port + s * step));
    }
    cfg.src_port = src_port;
    cfg.streams = streams;
    cfg.threads = threads;
    cfg.batch = batch;
    cfg.payload = payload;
    cfg.pt = pt;
    cfg.ts_step = ts_step;
    cfg.ssrc_base = ssrc_base;
    cfg.seq_start = seq_start;
    cfg.sndbuf = sndbuf;
    cfg.tick_ns = 1000 * (int64_t)tick_us;
    cfg.dests = dests;
    cfg.sent_per_stream = sent_per;

    uint64_t planned = 0;
    uint64_t assigned = 0;
    for (unsigned t = 0; t < threads; t++) {
        struct worker *w = &workers[t];
        w->cfg = &cfg;
        w->index = t;
        w->nstreams = (streams - t + threads - 1) / threads;
        w->rate = rate * w->nstreams / streams;
        if (packets != 0) { /* split --packets in proportion, the remainder to the last thread */
            w->planned = t + 1 < threads ? packets * w->nstreams / streams : packets - assigned;
            assigned += w->planned;
        } else {
            w->planned = (uint64_t)(duration * w->rate + 0.5);
        }
        planned += w->planned;
        hist_init(&w->lag);
    }
    cfg.t0 = clock_ns(CLOCK_MONOTONIC) + 2000000; /* 2 ms for the threads to get ready */
    for (unsigned t = 0; t < threads; t++) {
        int err = pthread_create(&workers[t].thread, NULL, run_worker, &workers[t]);
        if (err != 0) {
            errno = err;
            die_errno(PROG, "pthread_create");
        }
    }

    uint64_t sent = 0, send_errors = 0, calls = 0;
    int last_errno = 0;
    int64_t first_stamp = 0, last_stamp = 0, t_end = cfg.t0;
    struct histogram *lag = malloc(sizeof(*lag));
    if (lag == NULL) {
        die_errno(PROG, "malloc");
    }
    hist_init(lag);
    for (unsigned t = 0; t < threads; t++) {
        struct worker *w = &workers[t];
        pthread_join(w->thread, NULL);
        sent += w->sent;
        send_errors += w->send_errors;
        calls += w->calls;
        if (w->last_errno != 0) {
            last_errno = w->last_errno;
        }
        if (w->first_stamp != 0 && (first_stamp == 0 || w->first_stamp < first_stamp)) {
            first_stamp = w->first_stamp;
        }
        if (w->last_stamp > last_stamp) {
            last_stamp = w->last_stamp;
        }
        if (w->end > t_end) {
            t_end = w->end;
        }
        lag->count += w->lag.count;
        lag->sum += w->lag.sum;
        lag->min = w->lag.min < lag->min ? w->lag.min : lag->min;
        lag->max = w->lag.max > lag->max ? w->lag.max : lag->max;
        for (unsigned b = 0; b < HIST_BUCKETS; b++) {
            lag->buckets[b] += w->lag.buckets[b];
        }
    }

    double user_s, sys_s;
    cpu_times(&user_s, &sys_s);
    double elapsed = (double)(t_end - cfg.t0) / 1e9;
    FILE *out = stdout;
    fprintf(out, "{\"program\":\"rtpgen\",\"dest\":\"%s\",\"base_port\":%u,\"step\":%u,", dest_text,
            base_port, step);
    fprintf(out, "\"src_ports\":[");
    for (unsigned t = 0; t < threads; t++) {
        fprintf(out, "%s%u", t ? "," : "", workers[t].src_port);
    }
    fprintf(out, "],\"threads\":%u,\"tick_us\":%u,\"streams\":%u,", threads, tick_us, streams);
    fprintf(out, "\"packet_size\":%u,\"target_rate\":%.3f,", RTP_HEADER_LEN + payload, rate);
    fprintf(out, "\"planned\":%" PRIu64 ",\"sent\":%" PRIu64 ",\"send_errors\":%" PRIu64 ",", planned, sent,
            send_errors);
    fprintf(out, "\"last_errno\":%d,\"stopped\":%s,", last_errno, g_stop ? "true" : "false");
    fprintf(out, "\"elapsed_s\":%.6f,\"achieved_rate\":%.3f,\"sendmmsg_calls\":%" PRIu64 ",", elapsed,
            elapsed > 0 ? (double)sent / elapsed : 0.0, calls);
    fprintf(out, "\"first_stamp_ns\":%" PRId64 ",\"last_stamp_ns\":%" PRId64 ",", first_stamp, last_stamp);
    fprintf(out, "\"lag_us\":");
    hist_json(out, lag, 1000.0);
    fprintf(out, ",\"cpu_user_s\":%.3f,\"cpu_sys_s\":%.3f", user_s, sys_s);
    if (per_stream) {
        fprintf(out, ",\"sent_per_stream\":[");
        for (unsigned s = 0; s < streams; s++) {
            fprintf(out, "%s%" PRIu64, s ? "," : "", sent_per[s]);
        }
        fprintf(out, "]");
    }
    fprintf(out, "}\n");
    fflush(out);
    return (sent == planned && send_errors == 0) ? 0 : 1;
}
