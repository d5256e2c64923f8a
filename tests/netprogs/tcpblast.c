/* tcpblast: TCP bulk-throughput sink and sender (swarmpy overlay-network tests and benchmarks).
 *
 *   tcpblast sink PORT
 *       Listens on PORT (IPv6 any, dual-stack, or IPv4 any where there is no IPv6), accepts
 *       connections forever, one thread each, and discards what they send. Prints nothing.
 *
 *   tcpblast send HOST PORT SECONDS [STREAMS]
 *       Opens STREAMS (default 1) parallel connections to HOST:PORT (a numeric address, a name from
 *       /etc/hosts or a DNS name), retrying for up to 10 s while the sink is not up yet, writes
 *       128 KiB buffers on each for SECONDS, then prints on stdout
 *       "bytes=N seconds=S gbit_per_s=G" (N: bytes written by all streams, S: from the first
 *       write to the last stream's end). Exit 0, or 1 when no stream could connect or write.
 *
 * Build: gcc -static -O2 -pthread -o tcpblast tcpblast.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (128 * 1024)
#define CONNECT_RETRY_S 10.0

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void usage(void) {
    fprintf(stderr, "usage: tcpblast sink PORT\n"
                    "       tcpblast send HOST PORT SECONDS [STREAMS]\n");
    exit(1);
}

static long parse_long(const char *s, const char *what, long lo, long hi) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "tcpblast: bad %s: %s\n", what, s);
        exit(1);
    }
    return v;
}

/* ---- sink ---- */

static void *drain(void *arg) {
    int fd = (int)(intptr_t)arg;
    enum { DRAIN_SIZE = 256 * 1024 };
    char *buf = malloc(DRAIN_SIZE);
    for (; buf;) {
        ssize_t n = read(fd, buf, DRAIN_SIZE);
        if (n > 0) continue;
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    free(buf);
    close(fd);
    return NULL;
}

static int listen_on(uint16_t port) {
    int one = 1, zero = 0;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd >= 0) {
        struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any};
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, (struct sockaddr *)&a6, sizeof a6) == 0 && listen(fd, 128) == 0) return fd;
        close(fd);
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a4 = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_ANY)};
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a4, sizeof a4) < 0 || listen(fd, 128) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int do_sink(int argc, char **argv) {
    if (argc != 1) usage();
    uint16_t port = (uint16_t)parse_long(argv[0], "port", 1, 65535);
    int lfd = listen_on(port);
    if (lfd < 0) {
        fprintf(stderr, "tcpblast: listen on port %u: %s\n", (unsigned)port, strerror(errno));
        return 1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
                if (errno != EINTR && errno != ECONNABORTED) usleep(10000);
                continue;
            }
            fprintf(stderr, "tcpblast: accept: %s\n", strerror(errno));
            return 1;
        }
        pthread_t t;
        if (pthread_create(&t, &attr, drain, (void *)(intptr_t)fd) != 0) close(fd);
    }
}

/* ---- send ---- */

static struct sockaddr_storage target;
static socklen_t target_len;
static double t_start, t_end_due;
static _Atomic long long total_bytes;
static pthread_barrier_t ready;

struct stream {
    int fd;
    int ok;
};

static int connect_retry(const char *host, uint16_t port, double give_up) {
    int last_errno = 0;
    for (;;) {
        if (target_len == 0) {
            /* static glibc >= 2.34 resolves through /etc/hosts and DNS without NSS modules */
            struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
            char service[8];
            snprintf(service, sizeof service, "%u", (unsigned)port);
            int rc = getaddrinfo(host, service, &hints, &res);
            if (rc != 0) {
                if (now() > give_up) {
                    fprintf(stderr, "tcpblast: cannot resolve %s: %s\n", host, gai_strerror(rc));
                    return -1;
                }
                usleep(200000);
                continue;
            }
            memcpy(&target, res->ai_addr, res->ai_addrlen);
            target_len = res->ai_addrlen;
            freeaddrinfo(res);
        }
        int fd = socket(target.ss_family, SOCK_STREAM, 0);
        if (fd < 0) return -1;
        if (connect(fd, (struct sockaddr *)&target, target_len) == 0) return fd;
        last_errno = errno;
        close(fd);
        if (now() > give_up) {
            fprintf(stderr, "tcpblast: connect %s:%u: %s\n", host, (unsigned)port, strerror(last_errno));
            return -1;
        }
        usleep(100000);
    }
}

static void *blast(void *arg) {
    struct stream *s = arg;
    char *buf = malloc(BUF_SIZE);
    if (buf) memset(buf, 'x', BUF_SIZE);
    pthread_barrier_wait(&ready);
    long long mine = 0;
    while (buf && now() < t_end_due) {
        ssize_t n = write(s->fd, buf, BUF_SIZE);
        if (n < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "tcpblast: write: %s\n", strerror(errno));
            break;
        }
        mine += n;
        s->ok = 1;
    }
    free(buf);
    shutdown(s->fd, SHUT_WR);
    close(s->fd);
    atomic_fetch_add(&total_bytes, mine);
    return NULL;
}

static int do_send(int argc, char **argv) {
    if (argc < 3 || argc > 4) usage();
    const char *host = argv[0];
    uint16_t port = (uint16_t)parse_long(argv[1], "port", 1, 65535);
    char *end;
    double seconds = strtod(argv[2], &end);
    if (*argv[2] == '\0' || *end != '\0' || seconds <= 0) {
        fprintf(stderr, "tcpblast: bad seconds: %s\n", argv[2]);
        return 1;
    }
    int streams = argc > 3 ? (int)parse_long(argv[3], "streams", 1, 1024) : 1;
    signal(SIGPIPE, SIG_IGN);

    struct stream *ss = calloc((size_t)streams, sizeof *ss);
    pthread_t *ts = calloc((size_t)streams, sizeof *ts);
    if (!ss || !ts) return 1;
    double give_up = now() + CONNECT_RETRY_S;
    for (int i = 0; i < streams; i++) {
        ss[i].fd = connect_retry(host, port, give_up);
        if (ss[i].fd < 0) return 1;
        int one = 1;
        setsockopt(ss[i].fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    pthread_barrier_init(&ready, NULL, (unsigned)streams + 1);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < streams; i++) {
        if (pthread_create(&ts[i], &attr, blast, &ss[i]) != 0) {
            fprintf(stderr, "tcpblast: pthread_create failed\n");
            return 1;
        }
    }
    t_start = now();
    t_end_due = t_start + seconds;
    pthread_barrier_wait(&ready);
    int any_ok = 0;
    for (int i = 0; i < streams; i++) {
        pthread_join(ts[i], NULL);
        any_ok |= ss[i].ok;
    }
    double elapsed = now() - t_start;
    long long bytes = atomic_load(&total_bytes);
    printf("bytes=%lld seconds=%.3f gbit_per_s=%.3f\n", bytes, elapsed,
           elapsed > 0 ? bytes * 8.0 / elapsed / 1e9 : 0.0);
    return any_ok ? 0 : 1;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) usage();
    if (strcmp(argv[1], "sink") == 0) return do_sink(argc - 2, argv + 2);
    if (strcmp(argv[1], "send") == 0) return do_send(argc - 2, argv + 2);
    usage();
    return 1;
}
