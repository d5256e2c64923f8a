/* mcast: send or receive numbered UDP multicast datagrams (swarmpy overlay-network tests).
 *
 *   mcast send [-s SIZE] [-I IFADDR] GROUP PORT COUNT [RATE_PER_S] [TTL]
 *       Sends COUNT datagrams to GROUP:PORT, payloads "seq=<n> from=<hostname>" for n = 0..COUNT-1,
 *       padded with spaces to SIZE bytes (default 64; never truncated). RATE_PER_S datagrams per
 *       second (default 0 = as fast as possible), IP_MULTICAST_TTL = TTL (default 1), leaving by the
 *       interface with address IFADDR (-I) or by the routing table's choice.
 *       Prints "sent=N errors=E seconds=S" on stdout; exit 0 when all COUNT went out.
 *
 *   mcast recv [-i IDLE_S] GROUP PORT SECONDS [IFADDR]
 *       Joins GROUP (IP_ADD_MEMBERSHIP on INADDR_ANY or IFADDR), binds GROUP:PORT with SO_REUSEADDR
 *       (several receivers may share a host), announces "mcast: joined GROUP:PORT on IFADDR" on
 *       stderr, then receives for SECONDS; with -i it stops early once at least one datagram came
 *       and none came for IDLE_S seconds. SIGINT/SIGTERM also stop it. Prints one line on stdout:
 *       "received=N unique=U duplicates=D first=S last=L" (first/last: seq of the first and the last
 *       datagram received, -1 if none; datagrams without "seq=<n>" count in received only).
 *       Exit 0 (1 on bad usage or a socket error).
 *
 * Build: gcc -static -O2 -o mcast mcast.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void usage(void) {
    fprintf(stderr,
            "usage: mcast send [-s SIZE] [-I IFADDR] GROUP PORT COUNT [RATE_PER_S] [TTL]\n"
            "       mcast recv [-i IDLE_S] GROUP PORT SECONDS [IFADDR]\n");
    exit(1);
}

static void die(const char *what) {
    fprintf(stderr, "mcast: %s: %s\n", what, strerror(errno));
    exit(1);
}

static struct in_addr parse_addr(const char *s, const char *what) {
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1) {
        fprintf(stderr, "mcast: bad %s address: %s\n", what, s);
        exit(1);
    }
    return a;
}

static long parse_long(const char *s, const char *what, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "mcast: bad %s: %s\n", what, s);
        exit(1);
    }
    return v;
}

static double parse_double(const char *s, const char *what) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *s == '\0' || *end != '\0' || v < 0) {
        fprintf(stderr, "mcast: bad %s: %s\n", what, s);
        exit(1);
    }
    return v;
}

static int do_send(int argc, char **argv) {
    long size = 64;
    const char *ifaddr = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "+s:I:")) != -1) {
        if (opt == 's') size = parse_long(optarg, "size", 1, 65507);
        else if (opt == 'I') ifaddr = optarg;
        else usage();
    }
    argc -= optind;
    argv += optind;
    if (argc < 3 || argc > 5) usage();
    struct sockaddr_in dst = {.sin_family = AF_INET};
    dst.sin_addr = parse_addr(argv[0], "group");
    dst.sin_port = htons((uint16_t)parse_long(argv[1], "port", 1, 65535));
    long count = parse_long(argv[2], "count", 0, 1L << 40);
    double rate = argc > 3 ? parse_double(argv[3], "rate") : 0;
    int ttl = argc > 4 ? (int)parse_long(argv[4], "ttl", 0, 255) : 1;

    char host[256] = "?";
    gethostname(host, sizeof host - 1);

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl) < 0) die("IP_MULTICAST_TTL");
    if (ifaddr) {
        struct in_addr a = parse_addr(ifaddr, "interface");
        if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &a, sizeof a) < 0) die("IP_MULTICAST_IF");
    }

    char *buf = malloc((size_t)size + 300);
    if (!buf) die("malloc");
    long sent = 0, errors = 0;
    double t0 = now();
    for (long seq = 0; seq < count && !stop_flag; seq++) {
        if (rate > 0) {
            double due = t0 + seq / rate;
            double wait = due - now();
            if (wait > 0) {
                struct timespec ts = {(time_t)wait, (long)((wait - (time_t)wait) * 1e9)};
                nanosleep(&ts, NULL);
            }
        }
        int n = snprintf(buf, (size_t)size + 300, "seq=%ld from=%s", seq, host);
        if (n < size) {
            memset(buf + n, ' ', (size_t)(size - n));
            n = (int)size;
        }
        for (int tries = 0;; tries++) {
            if (sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&dst, sizeof dst) == n) {
                sent++;
                break;
            }
            /* a full queue when sending flat out: wait a little and try the same datagram again */
            if ((errno == ENOBUFS || errno == EAGAIN || errno == EINTR) && tries < 1000 && !stop_flag) {
                usleep(1000);
                continue;
            }
            if (errors++ == 0) fprintf(stderr, "mcast: sendto: %s\n", strerror(errno));
            break;
        }
    }
    printf("sent=%ld errors=%ld seconds=%.3f\n", sent, errors, now() - t0);
    return sent == count ? 0 : 1;
}

/* Seen-set over sequence numbers: a bitmap that grows as needed. */
static unsigned char *seen;
static size_t seen_bytes;

static int mark_seen(unsigned long seq) {
    size_t byte = seq / 8;
    if (byte >= seen_bytes) {
        size_t want = seen_bytes ? seen_bytes : 1024;
        while (want <= byte) want *= 2;
        unsigned char *p = realloc(seen, want);
        if (!p) die("realloc");
        memset(p + seen_bytes, 0, want - seen_bytes);
        seen = p;
        seen_bytes = want;
    }
    unsigned char bit = (unsigned char)(1u << (seq % 8));
    int was = (seen[byte] & bit) != 0;
    seen[byte] |= bit;
    return was;
}

static int do_recv(int argc, char **argv) {
    double idle = 0;
    int opt;
    while ((opt = getopt(argc, argv, "+i:")) != -1) {
        if (opt == 'i') idle = parse_double(optarg, "idle seconds");
        else usage();
    }
    argc -= optind;
    argv += optind;
    if (argc < 3 || argc > 4) usage();
    struct in_addr group = parse_addr(argv[0], "group");
    uint16_t port = (uint16_t)parse_long(argv[1], "port", 1, 65535);
    double seconds = parse_double(argv[2], "seconds");
    struct in_addr ifa = {.s_addr = htonl(INADDR_ANY)};
    if (argc > 3) ifa = parse_addr(argv[3], "interface");

    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) die("socket");
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0) die("SO_REUSEADDR");
    int rcvbuf = 4 << 20; /* capped at net.core.rmem_max; a bigger queue loses less in bursts */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
#ifdef IP_MULTICAST_ALL
    int zero = 0; /* only the groups this socket joined, not every group joined on the host */
    setsockopt(fd, IPPROTO_IP, IP_MULTICAST_ALL, &zero, sizeof zero);
#endif
    /* bind the group address, not INADDR_ANY: unicast and other groups to PORT stay out */
    struct sockaddr_in local = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr = group};
    if (bind(fd, (struct sockaddr *)&local, sizeof local) < 0) die("bind");
    struct ip_mreq mreq = {.imr_multiaddr = group, .imr_interface = ifa};
    if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &mreq, sizeof mreq) < 0) die("IP_ADD_MEMBERSHIP");

    char gs[INET_ADDRSTRLEN], is[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &group, gs, sizeof gs);
    inet_ntop(AF_INET, &ifa, is, sizeof is);
    fprintf(stderr, "mcast: joined %s:%u on %s\n", gs, (unsigned)port, is);
    fflush(stderr);

    long received = 0, unique = 0, duplicates = 0, first = -1, last = -1;
    char buf[65536];
    double deadline = now() + seconds, last_rx = 0;
    while (!stop_flag) {
        double t = now();
        double left = deadline - t;
        if (idle > 0 && received > 0 && last_rx + idle - t < left) left = last_rx + idle - t;
        if (left <= 0) break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)(left * 1000) + 1);
        if (r < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        if (r == 0) continue;
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            die("recv");
        }
        buf[n] = '\0';
        received++;
        last_rx = now();
        char *s = strstr(buf, "seq=");
        char *end;
        if (!s) continue;
        unsigned long seq = strtoul(s + 4, &end, 10);
        if (end == s + 4) continue;
        if (mark_seen(seq)) duplicates++;
        else unique++;
        if (first < 0) first = (long)seq;
        last = (long)seq;
    }
    printf("received=%ld unique=%ld duplicates=%ld first=%ld last=%ld\n", received, unique, duplicates,
           first, last);
    return 0;
}

int main(int argc, char **argv) {
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: poll/sleep return early */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) usage();
    if (strcmp(argv[1], "send") == 0) return do_send(argc - 1, argv + 1);
    if (strcmp(argv[1], "recv") == 0) return do_recv(argc - 1, argv + 1);
    usage();
    return 1;
}
