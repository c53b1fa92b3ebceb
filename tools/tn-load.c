/* tn-load: a SOCKS5 load and integrity client for specs and benchmarks.
 *
 *   tn-load -socks HOST:PORT -dest HOST:PORT [-n 200] [-c 200] [-max BYTES] [-seed S]
 *           [-idle SEC] [-each BYTES]
 *
 * Runs n sessions, c at a time, against a `tn-dest -mode sha` destination through a SOCKS5
 * proxy. Each session pipelines the greeting, the CONNECT and its first bytes (as browsers do
 * with a proxy that answers at once), sends a random number (0..max) of pseudo-random bytes,
 * half-closes, and reads the reply: a random number of bytes from the seed's stream, checked
 * byte for byte, then the SHA-256 the destination computed of what it received, checked
 * against the SHA-256 of what was sent. Prints one line per failure and a summary (with
 * max_stall_ms: the longest any session went with no byte moving either way); exits 0 only
 * if every session verified. A session fails on time only when no byte moved either way for
 * -idle seconds (60): one whose download is done waits as long as its upload progresses.
 *
 * With -each, every session sends nothing and downloads exactly BYTES: a measure of how fairly
 * sessions share the way down. Counted from the moment every session has its first byte (so
 * that the time it takes to open them all does not count) to the first session's last byte,
 * min_share is what the slowest session got in that span as a fraction of what the fastest got
 * (1: all in step; 0: one got nothing), taken when a session finishes and the fastest has moved
 * a quarter of its bytes in the span. A ratio within one run, not a time. -1: not measured (the
 * sessions were done before all had started; give more bytes). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/evp.h>

#include "tn-rng.h"

static struct event_base *base;
static struct sockaddr_storage socks_sa;
static int socks_salen;
static char dest_host[256];
static unsigned dest_port;
static long total = 200, conc = 200, started, finished, failed;
static uint64_t maxsize = 8 << 20, bytes_up, bytes_down;
static uint64_t seed0 = 1;
static long idle_sec = 60;
static double max_stall;   /* the longest any session went with no byte moving either way */
static uint64_t each;      /* -each: every session's download, nothing up; 0: random sizes */
static struct sess **live; /* -each: running sessions by index, for min_share */
static long flowing;       /* -each: sessions that have their first byte (all: the span opens) */
static double min_share = -1;

struct sess {
    long idx;
    struct bufferevent *bev;
    EVP_MD_CTX *md;
    struct tn_rng up_rng, down_rng;
    uint64_t up_left, down_size, down_got;
    uint64_t base; /* -each: down_got when every session was flowing */
    uint8_t expect[65536];
    size_t expect_len, expect_pos;
    uint8_t digest[32], tail[32];
    size_t tail_len;
    int replied, shut;
    double last_move; /* the last time a byte moved either way */
};

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t
rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void start_one(void);

/* -each: bytes moved for s (first: its first ones). Opens the span once every session has its
 * first byte; when a session finishes in the span, closes it: the slowest's share of the
 * fastest's. */
static void
note_progress(struct sess *s, int first)
{
    uint64_t d, lo = UINT64_MAX, hi = 0;
    long i;

    if (first && ++flowing == total)
        for (i = 0; i < total; i++)
            if (live[i] != NULL) live[i]->base = live[i]->down_got;
    if (s->down_got < s->down_size || flowing < total || min_share >= 0) return;
    for (i = 0; i < total; i++) {
        if (live[i] == NULL || live[i]->base == live[i]->down_size) continue; /* done before */
        d = live[i]->down_got - live[i]->base;
        if (d < lo) lo = d;
        if (d > hi) hi = d;
    }
    /* A span too short to say anything (the first to finish was nearly done when the last
     * started): wait for the next session to finish. */
    if (hi < s->down_size / 4) return;
    min_share = (double)lo / (double)hi;
}

static void
finish(struct sess *s, const char *fail)
{
    if (live != NULL) live[s->idx] = NULL;
    if (fail != NULL) {
        failed++;
        printf("FAIL session %ld: %s (sent %llu left, got %llu of %llu)\n", s->idx, fail,
               (unsigned long long)s->up_left, (unsigned long long)s->down_got,
               (unsigned long long)s->down_size);
    }
    finished++;
    EVP_MD_CTX_free(s->md);
    bufferevent_free(s->bev);
    free(s);
    if (started < total)
        start_one();
    else if (finished == total)
        event_base_loopexit(base, NULL);
}

/* A byte moved for s: the gap since the last one is a stall (unfair sharing shows here). */
static void
moved(struct sess *s)
{
    double t = now();

    if (t - s->last_move > max_stall) max_stall = t - s->last_move;
    s->last_move = t;
}

static void
fill_up(struct sess *s)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);
    uint8_t buf[65536];
    size_t n;

    moved(s); /* called as the output drains */
    while (s->up_left > 0 && evbuffer_get_length(out) < 256 * 1024) {
        n = s->up_left < sizeof(buf) ? (size_t)s->up_left : sizeof(buf);
        tn_rng_fill(&s->up_rng, buf, n);
        EVP_DigestUpdate(s->md, buf, n);
        evbuffer_add(out, buf, n);
        s->up_left -= n;
        bytes_up += n;
    }
    if (s->up_left == 0 && !s->shut && evbuffer_get_length(out) == 0) {
        s->shut = 1;
        EVP_DigestFinal_ex(s->md, s->digest, NULL);
        shutdown(bufferevent_getfd(s->bev), SHUT_WR);
    }
}

/* Checks n received bytes against the expected stream; 0 or -1. */
static int
check_down(struct sess *s, const uint8_t *p, size_t n)
{
    size_t k;

    while (n > 0) {
        if (s->expect_pos == s->expect_len) {
            uint64_t left = s->down_size - s->down_got;
            s->expect_len = left < sizeof(s->expect) ? (size_t)left : sizeof(s->expect);
            tn_rng_fill(&s->down_rng, s->expect, s->expect_len);
            s->expect_pos = 0;
        }
        k = s->expect_len - s->expect_pos;
        if (k > n) k = n;
        if (memcmp(p, s->expect + s->expect_pos, k) != 0) return -1;
        s->expect_pos += k;
        s->down_got += k;
        p += k;
        n -= k;
    }
    return 0;
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct sess *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    uint8_t rep[12], buf[65536];
    size_t n, k;

    moved(s);
    if (!s->replied) {
        if (evbuffer_get_length(in) < 12) return;
        evbuffer_remove(in, rep, 12);
        if (rep[0] != 5 || rep[1] != 0 || rep[2] != 5 || rep[3] != 0) {
            finish(s, "bad SOCKS5 reply");
            return;
        }
        s->replied = 1;
    }
    while ((n = evbuffer_get_length(in)) > 0) {
        if (s->down_got < s->down_size) {
            k = n;
            if (k > sizeof(buf)) k = sizeof(buf);
            if (k > s->down_size - s->down_got) k = (size_t)(s->down_size - s->down_got);
            evbuffer_remove(in, buf, k);
            bytes_down += k;
            if (check_down(s, buf, k) == -1) {
                finish(s, "received bytes differ from what the destination sent");
                return;
            }
            if (live != NULL) note_progress(s, s->down_got == k);
            continue;
        }
        k = n < 32 - s->tail_len ? n : 32 - s->tail_len;
        if (k == 0) {
            finish(s, "more bytes than the destination sent");
            return;
        }
        evbuffer_remove(in, s->tail + s->tail_len, k);
        s->tail_len += k;
    }
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    fill_up(arg);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct sess *s = arg;

    (void)bev;
    if (what & BEV_EVENT_CONNECTED) return;
    if (what & BEV_EVENT_EOF) {
        read_cb(s->bev, s); /* anything left in the buffer */
        if (s->down_got != s->down_size || s->tail_len != 32)
            finish(s, "stream ended early (truncated)");
        else if (!s->shut)
            finish(s, "closed before everything was sent");
        else if (memcmp(s->tail, s->digest, 32) != 0)
            finish(s, "SHA-256 of what arrived differs from what was sent");
        else
            finish(s, NULL);
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && now() - s->last_move < (double)idle_sec) {
        /* This direction idled, the other moved: go on (libevent turned it off). */
        bufferevent_enable(s->bev, (what & BEV_EVENT_READING) ? EV_READ : EV_WRITE);
        return;
    }
    finish(s, !(what & BEV_EVENT_TIMEOUT)  ? "connection error"
              : (what & BEV_EVENT_READING) ? "timeout: no byte either way, waiting to read"
                                           : "timeout: no byte either way, waiting to write");
}

static void
start_one(void)
{
    struct sess *s = calloc(1, sizeof(*s));
    uint8_t hdr[3 + 5 + 255 + 2 + 12];
    size_t n = 0, hl = strlen(dest_host);
    uint64_t r = seed0 * 1000003 + (uint64_t)started * 7919 + 1;
    struct timeval tv = {idle_sec, 0};

    s->idx = started++;
    s->last_move = now();
    rnd(&r);
    s->up_left = maxsize ? rnd(&r) % (maxsize + 1) : 0;
    s->down_size = maxsize ? rnd(&r) % (maxsize + 1) : 0;
    if (each > 0) {
        s->up_left = 0;
        s->down_size = each;
        live[s->idx] = s;
    }
    tn_rng_seed(&s->up_rng, r);
    tn_rng_seed(&s->down_rng, (uint32_t)s->idx ^ 0x5eed);
    s->md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(s->md, EVP_sha256(), NULL);
    s->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(s->bev, read_cb, write_cb, event_cb, s);
    bufferevent_setwatermark(s->bev, EV_WRITE, 64 * 1024, 0);
    bufferevent_set_timeouts(s->bev, &tv, &tv);
    hdr[n++] = 5;
    hdr[n++] = 1;
    hdr[n++] = 0; /* greeting: no-auth */
    hdr[n++] = 5;
    hdr[n++] = 1;
    hdr[n++] = 0;
    hdr[n++] = 3; /* CONNECT, domain */
    hdr[n++] = (uint8_t)hl;
    memcpy(hdr + n, dest_host, hl);
    n += hl;
    hdr[n++] = (uint8_t)(dest_port >> 8);
    hdr[n++] = (uint8_t)dest_port;
    /* the destination's header: bytes to send back, seed */
    uint32_t w = htonl((uint32_t)(s->down_size >> 32));
    memcpy(hdr + n, &w, 4);
    w = htonl((uint32_t)s->down_size);
    memcpy(hdr + n + 4, &w, 4);
    w = htonl((uint32_t)s->idx);
    memcpy(hdr + n + 8, &w, 4);
    n += 12;
    bufferevent_write(s->bev, hdr, n);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(s->bev, (struct sockaddr *)&socks_sa, socks_salen) == -1) {
        finish(s, "cannot connect to the SOCKS5 proxy");
        return;
    }
    {
        int one = 1;
        setsockopt(bufferevent_getfd(s->bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    fill_up(s);
}

int
main(int argc, char **argv)
{
    const char *socks = "127.0.0.1:1080", *dest = NULL;
    struct timespec t0, t1;
    double secs;
    int i;
    char *colon;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-socks") == 0)
            socks = argv[i + 1];
        else if (strcmp(argv[i], "-dest") == 0)
            dest = argv[i + 1];
        else if (strcmp(argv[i], "-n") == 0)
            total = atol(argv[i + 1]);
        else if (strcmp(argv[i], "-c") == 0)
            conc = atol(argv[i + 1]);
        else if (strcmp(argv[i], "-max") == 0)
            maxsize = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "-seed") == 0)
            seed0 = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "-idle") == 0)
            idle_sec = atol(argv[i + 1]);
        else if (strcmp(argv[i], "-each") == 0)
            each = strtoull(argv[i + 1], NULL, 10);
        else {
            fprintf(stderr, "tn-load: %s: no such flag\n", argv[i]);
            return 2;
        }
    }
    socks_salen = sizeof(socks_sa);
    if (dest == NULL || (colon = strrchr(dest, ':')) == NULL ||
        evutil_parse_sockaddr_port(socks, (struct sockaddr *)&socks_sa, &socks_salen) == -1) {
        fprintf(stderr, "usage: tn-load -socks HOST:PORT -dest HOST:PORT [-n N] [-c C] [-max B] "
                        "[-seed S] [-idle SEC] [-each BYTES]\n");
        return 2;
    }
    snprintf(dest_host, sizeof(dest_host), "%.*s", (int)(colon - dest), dest);
    dest_port = (unsigned)atoi(colon + 1);
    if (each > 0 && conc < total) {
        fprintf(stderr, "tn-load: -each measures sessions that all run at once: -c must be -n\n");
        return 2;
    }
    if (each > 0 && (live = calloc((size_t)total, sizeof(*live))) == NULL) return 1;
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (i = 0; i < conc && started < total; i++)
        start_one();
    if (total > 0) event_base_dispatch(base);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("tn-load: sessions=%ld ok=%ld failed=%ld up=%llu down=%llu secs=%.3f "
           "max_stall_ms=%.0f\n",
           total, total - failed, failed, (unsigned long long)bytes_up,
           (unsigned long long)bytes_down, secs, max_stall * 1000);
    if (each > 0) printf("tn-load: min_share=%.3f\n", min_share);
    free(live);
    return failed == 0 ? 0 : 1;
}
