/* tn-udp: the benchmark's UDP tool. It speaks SOCKS5 UDP ASSOCIATE as a real client does
 * (greeting, wait for the method; UDP ASSOCIATE, wait for the reply naming the relay; then
 * datagrams to the relay, each with the SOCKS5 UDP header), or with `-socks direct` sends
 * straight to the destination (the floor).
 *
 *   tn-udp -mode echo -addr H:P
 *       a UDP echo server (the destination); a datagram "?" is answered with what the sink saw
 *       (below) and resets it; every other one is echoed.
 *   tn-udp -mode rtt -socks H:P|direct -dest H:P -n N [-size B] [-fresh]
 *       N request/response exchanges, one at a time, on one association (with -fresh, each on
 *       a new association: its first datagram); time from sendto to the echo, percentiles in
 *       ms; an echo not back in 1 s is lost.
 *   tn-udp -mode flood -socks H:P|direct -dest H:P -n N [-size B]
 *       N datagrams one way as fast as the socket takes them, each marked "!" so the echo
 *       server counts them without answering; then asks it ("?") how many arrived and over how
 *       long: datagrams/s delivered and the loss.
 *
 * Output: one line of key=value pairs, for scripts/bench.sh. Every wait is bounded. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DGRAM_MAX 65536

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void
die(const char *what)
{
    fprintf(stderr, "tn-udp: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void
parse_addr(const char *text, struct sockaddr_in *sa)
{
    char host[256];
    const char *colon = strrchr(text, ':');

    if (colon == NULL || (size_t)(colon - text) >= sizeof(host)) {
        fprintf(stderr, "tn-udp: %s: not host:port\n", text);
        exit(2);
    }
    memcpy(host, text, (size_t)(colon - text));
    host[colon - text] = 0;
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        fprintf(stderr, "tn-udp: %s: not an IPv4 address\n", host);
        exit(2);
    }
}

/* Reads exactly n bytes from a TCP socket within 5 s. */
static void
read_exact(int fd, uint8_t *buf, size_t n)
{
    struct pollfd p = {fd, POLLIN, 0};
    size_t got = 0;
    ssize_t r;

    while (got < n) {
        if (poll(&p, 1, 5000) != 1) die("SOCKS reply: timeout");
        r = recv(fd, buf + got, n - got, 0);
        if (r <= 0) die("SOCKS reply");
        got += (size_t)r;
    }
}

/* A UDP association: its TCP connection (kept open: the association lives as long as it does),
 * and the relay's address. */
struct assoc {
    int tcp, udp;
    struct sockaddr_in relay, dest;
    int direct;
};

static void
associate(struct assoc *a, const struct sockaddr_in *socks, const struct sockaddr_in *dest,
          int direct)
{
    static const uint8_t req[] = {5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0};
    uint8_t rep[2 + 10];
    struct sockaddr_in any = {.sin_family = AF_INET};

    memset(a, 0, sizeof(*a));
    a->dest = *dest;
    a->direct = direct;
    a->tcp = -1;
    a->udp = socket(AF_INET, SOCK_DGRAM, 0);
    any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (direct) any.sin_addr.s_addr = htonl(INADDR_ANY);
    if (a->udp == -1 || bind(a->udp, (struct sockaddr *)&any, sizeof(any)) == -1) die("udp socket");
    {
        int big = 4 << 20;
        setsockopt(a->udp, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
        setsockopt(a->udp, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    }
    if (direct) {
        a->relay = *dest;
        return;
    }
    a->tcp = socket(AF_INET, SOCK_STREAM, 0);
    if (a->tcp == -1 || connect(a->tcp, (const struct sockaddr *)socks, sizeof(*socks)) == -1)
        die("connect to the SOCKS port");
    /* As a real client: the greeting, its answer, then the request. */
    if (send(a->tcp, req, 3, 0) != 3) die("send");
    read_exact(a->tcp, rep, 2);
    if (send(a->tcp, req + 3, sizeof(req) - 3, 0) != (ssize_t)sizeof(req) - 3) die("send");
    read_exact(a->tcp, rep + 2, 10);
    if (rep[0] != 5 || rep[1] != 0 || rep[2] != 5 || rep[3] != 0 || rep[5] != 1) {
        fprintf(stderr, "tn-udp: UDP ASSOCIATE refused (%02x %02x %02x %02x %02x)\n", rep[0],
                rep[1], rep[2], rep[3], rep[5]);
        exit(1);
    }
    memset(&a->relay, 0, sizeof(a->relay));
    a->relay.sin_family = AF_INET;
    memcpy(&a->relay.sin_addr, rep + 6, 4);
    memcpy(&a->relay.sin_port, rep + 10, 2);
    /* A relay bound to 0.0.0.0 means "where you reached me". */
    if (a->relay.sin_addr.s_addr == 0) a->relay.sin_addr = socks->sin_addr;
}

static void
assoc_close(struct assoc *a)
{
    if (a->tcp >= 0) close(a->tcp);
    close(a->udp);
}

/* Sends n bytes of payload to the destination through the association. */
static int
assoc_send(struct assoc *a, const uint8_t *payload, size_t n)
{
    static uint8_t buf[DGRAM_MAX + 10];
    size_t k = 0;

    if (!a->direct) {
        buf[0] = buf[1] = buf[2] = 0;
        buf[3] = 1;
        memcpy(buf + 4, &a->dest.sin_addr, 4);
        memcpy(buf + 8, &a->dest.sin_port, 2);
        k = 10;
    }
    memcpy(buf + k, payload, n);
    return sendto(a->udp, buf, k + n, 0, (struct sockaddr *)&a->relay, sizeof(a->relay)) ==
                   (ssize_t)(k + n)
               ? 0
               : -1;
}

/* Waits up to ms for a datagram; its payload (after the SOCKS header) in out. -1 on timeout. */
static long
assoc_recv(struct assoc *a, uint8_t *out, size_t cap, int ms)
{
    static uint8_t buf[DGRAM_MAX + 300];
    struct pollfd p = {a->udp, POLLIN, 0};
    ssize_t r;
    size_t k = 0;

    if (poll(&p, 1, ms) != 1) return -1;
    r = recv(a->udp, buf, sizeof(buf), 0);
    if (r < 0) return -1;
    if (!a->direct) {
        if (r < 10 || buf[3] != 1) return -1; /* an IPv4 source: the destination's */
        k = 10;
    }
    if ((size_t)r - k > cap) return -1;
    memcpy(out, buf + k, (size_t)r - k);
    return (long)((size_t)r - k);
}

static int
cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static double
pct(double *v, long n, double p)
{
    long i = (long)(p * (double)(n - 1) + 0.5);
    return n > 0 ? v[i] : 0;
}

static void
run_echo(const char *addr)
{
    struct sockaddr_in sa, from;
    socklen_t fl;
    uint8_t buf[DGRAM_MAX];
    long count = 0;
    double first = 0, last = 0;
    int fd = socket(AF_INET, SOCK_DGRAM, 0), big = 8 << 20;
    ssize_t r;

    parse_addr(addr, &sa);
    /* as root past net.core.rmem_max: the sink must not be where the flood's loss is */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) == -1)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    if (fd == -1 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) die("bind");
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        fl = sizeof(from);
        r = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fl);
        if (r < 0) continue;
        if (r >= 1 && buf[0] == '!') { /* a flood's datagram: counted, not answered */
            if (count == 0) first = now_ms();
            last = now_ms();
            count++;
            continue;
        }
        if (r == 1 && buf[0] == '?') {
            r = snprintf((char *)buf, sizeof(buf), "count=%ld ms=%.3f", count,
                         count > 1 ? last - first : 0.0);
            count = 0;
        }
        sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&from, fl);
    }
}

int
main(int argc, char **argv)
{
    const char *mode = "", *socks_arg = "direct", *dest_arg = "", *addr = "";
    long n = 100, size = 64, i, lost = 0, k = 0;
    int fresh = 0, direct;
    struct sockaddr_in socks = {0}, dest;
    struct assoc a;
    static uint8_t payload[DGRAM_MAX], back[DGRAM_MAX];
    double *lat, t0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-fresh") == 0) {
            fresh = 1;
            continue;
        }
        if (i + 1 >= argc) break;
        if (strcmp(argv[i], "-mode") == 0)
            mode = argv[++i];
        else if (strcmp(argv[i], "-socks") == 0)
            socks_arg = argv[++i];
        else if (strcmp(argv[i], "-dest") == 0)
            dest_arg = argv[++i];
        else if (strcmp(argv[i], "-addr") == 0)
            addr = argv[++i];
        else if (strcmp(argv[i], "-n") == 0)
            n = atol(argv[++i]);
        else if (strcmp(argv[i], "-size") == 0)
            size = atol(argv[++i]);
        else
            break;
    }
    if (strcmp(mode, "echo") == 0) run_echo(addr);
    if ((strcmp(mode, "rtt") != 0 && strcmp(mode, "flood") != 0) || dest_arg[0] == 0 || n < 1 ||
        size < 16 || size > 60000) {
        fprintf(stderr, "usage: tn-udp -mode echo -addr H:P | -mode rtt|flood -socks H:P|direct "
                        "-dest H:P [-n N] [-size B] [-fresh]\n");
        return 2;
    }
    direct = strcmp(socks_arg, "direct") == 0;
    if (!direct) parse_addr(socks_arg, &socks);
    parse_addr(dest_arg, &dest);
    memset(payload, 'x', sizeof(payload));
    if (strcmp(mode, "flood") == 0) {
        long got = -1, r;
        double ms = 0, t_send;
        associate(&a, &socks, &dest, direct);
        payload[0] = '?'; /* a report read now empties what an earlier run left */
        assoc_send(&a, payload, 1);
        (void)assoc_recv(&a, back, sizeof(back), 1000);
        payload[0] = '!';
        t0 = now_ms();
        for (i = 0; i < n; i++)
            if (assoc_send(&a, payload, (size_t)size) == -1) k++;
        t_send = now_ms() - t0;
        usleep(500 * 1000); /* what is still in flight lands */
        payload[0] = '?';
        for (i = 0; i < 10 && got < 0; i++) {
            assoc_send(&a, payload, 1);
            r = assoc_recv(&a, back, sizeof(back) - 1, 1000);
            if (r <= 0) continue;
            back[r] = 0;
            if (sscanf((char *)back, "count=%ld ms=%lf", &got, &ms) != 2) got = -1;
        }
        assoc_close(&a);
        if (got < 0) {
            fprintf(stderr, "tn-udp: no report from the echo server\n");
            return 1;
        }
        printf("sent=%ld send_failed=%ld send_ms=%.1f delivered=%ld loss=%.4f dps=%.0f\n", n, k,
               t_send, got, 1.0 - (double)got / (double)n,
               ms > 0 ? (double)got / (ms / 1000.0) : 0.0);
        return 0;
    }
    lat = calloc((size_t)n, sizeof(*lat));
    if (lat == NULL) die("calloc");
    if (!fresh) associate(&a, &socks, &dest, direct);
    for (i = 0; i < n; i++) {
        long r;
        if (fresh) associate(&a, &socks, &dest, direct);
        snprintf((char *)payload, 24, "%08ld", i % 100000000); /* told apart from a late echo */
        t0 = now_ms();
        if (assoc_send(&a, payload, (size_t)size) == -1) die("sendto");
        for (;;) {
            double left = 1000 - (now_ms() - t0);
            r = left > 0 ? assoc_recv(&a, back, sizeof(back), (int)left + 1) : -1;
            if (r < 0 || (r == size && memcmp(back, payload, 8) == 0)) break;
        }
        if (r < 0)
            lost++;
        else
            lat[k++] = now_ms() - t0;
        if (fresh) assoc_close(&a);
    }
    if (!fresh) assoc_close(&a);
    qsort(lat, (size_t)k, sizeof(*lat), cmp);
    printf("n=%ld lost=%ld p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n", n, lost, pct(lat, k, 0.5),
           pct(lat, k, 0.99), k > 0 ? lat[k - 1] : 0.0);
    free(lat);
    return lost == n;
}
