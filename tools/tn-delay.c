/* tn-delay: a delay link for the benchmark, where the kernel has no netem qdisc. It creates two
 * tun devices; the caller moves one into each network namespace and gives them addresses. Every
 * packet read from one is written to the other after -delay-ms, and no faster than -rate-mbit
 * (0: no cap), so a namespace pair gets a real round trip of twice the delay.
 *
 *   tn-delay -a TUN_A -b TUN_B -delay-ms 25 [-rate-mbit 1000] [-queue 8192]
 *
 * Prints "ready" once both devices exist; runs until killed. A packet that finds its direction's
 * queue full is dropped, as a router's tail drop would. Each direction is a FIFO: release times
 * only grow, so the head of the queue is always the next packet due. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define PKT_MAX 2048

struct pkt {
    int64_t due; /* ns, monotonic */
    uint16_t len;
    unsigned char data[PKT_MAX];
};

struct dir {
    int in, out;
    struct pkt *q;
    size_t head, len, cap;
    int64_t last_departure;
    unsigned long long sent, dropped;
};

static int64_t delay_ns, rate_bps;

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
tun_open(const char *name)
{
    struct ifreq ifr;
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);

    if (fd < 0) return -1;
    memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads what is waiting on d->in (a bounded batch) into the queue. */
static void
take(struct dir *d)
{
    int i;

    for (i = 0; i < 256; i++) {
        struct pkt *p;
        unsigned char drop[PKT_MAX];
        ssize_t n;
        int64_t t, start;
        if (d->len == d->cap) {
            if (read(d->in, drop, sizeof(drop)) <= 0) return;
            d->dropped++;
            continue;
        }
        p = &d->q[(d->head + d->len) % d->cap];
        n = read(d->in, p->data, sizeof(p->data));
        if (n <= 0) return;
        p->len = (uint16_t)n;
        t = now_ns();
        /* Serialisation at the capped rate, then the propagation delay. */
        start = t > d->last_departure ? t : d->last_departure;
        if (rate_bps > 0) start += (int64_t)n * 8 * 1000000000 / rate_bps;
        d->last_departure = start;
        p->due = start + delay_ns;
        d->len++;
    }
}

/* Writes every packet that is due. Returns the next due time, or -1. */
static int64_t
give(struct dir *d, int64_t t)
{
    while (d->len > 0) {
        struct pkt *p = &d->q[d->head];
        if (p->due > t) return p->due;
        if (write(d->out, p->data, p->len) < 0 && errno == EAGAIN) return t + 100000;
        d->sent++;
        d->head = (d->head + 1) % d->cap;
        d->len--;
    }
    return -1;
}

int
main(int argc, char **argv)
{
    const char *a = NULL, *b = NULL;
    long delay_ms = 25, queue = 8192;
    double rate_mbit = 0;
    struct dir d[2];
    int fa, fb, i;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-a") == 0) a = argv[i + 1];
        if (strcmp(argv[i], "-b") == 0) b = argv[i + 1];
        if (strcmp(argv[i], "-delay-ms") == 0) delay_ms = atol(argv[i + 1]);
        if (strcmp(argv[i], "-rate-mbit") == 0) rate_mbit = atof(argv[i + 1]);
        if (strcmp(argv[i], "-queue") == 0) queue = atol(argv[i + 1]);
    }
    if (a == NULL || b == NULL || queue < 16) {
        fprintf(stderr,
                "usage: tn-delay -a TUN_A -b TUN_B -delay-ms MS [-rate-mbit M] [-queue N]\n");
        return 2;
    }
    fa = tun_open(a);
    fb = tun_open(b);
    if (fa < 0 || fb < 0) {
        perror("tn-delay: tun");
        return 1;
    }
    delay_ns = (int64_t)delay_ms * 1000000;
    rate_bps = (int64_t)(rate_mbit * 1e6);
    memset(d, 0, sizeof(d));
    d[0].in = fa, d[0].out = fb;
    d[1].in = fb, d[1].out = fa;
    for (i = 0; i < 2; i++) {
        d[i].cap = (size_t)queue;
        d[i].q = malloc(sizeof(struct pkt) * d[i].cap);
        if (d[i].q == NULL) return 1;
    }
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        struct pollfd pfd[2] = {{fa, POLLIN, 0}, {fb, POLLIN, 0}};
        int64_t t = now_ns(), next = -1, n0, n1;
        struct timespec ts, *tp = NULL;
        n0 = give(&d[0], t);
        n1 = give(&d[1], t);
        next = n0 < 0 ? n1 : (n1 < 0 ? n0 : (n0 < n1 ? n0 : n1));
        if (next >= 0) {
            int64_t wait = next - now_ns();
            if (wait < 0) wait = 0;
            ts.tv_sec = wait / 1000000000;
            ts.tv_nsec = wait % 1000000000;
            tp = &ts;
        }
        if (ppoll(pfd, 2, tp, NULL) < 0 && errno != EINTR) return 1;
        if (pfd[0].revents & POLLIN) take(&d[0]);
        if (pfd[1].revents & POLLIN) take(&d[1]);
    }
}
