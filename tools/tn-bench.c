/* tn-bench: the benchmark's load tool. It speaks SOCKS5 like a real client (greeting, wait for
 * the method; CONNECT, wait for the reply; then the request), HTTP CONNECT with `-http H:P`
 * instead of `-socks` (CONNECT, wait for the 200, then the request, as curl does), or with
 * `-socks direct` goes straight to the destination (the floor). Destinations are tn-dest: http
 * for requests, echo for held sessions.
 *
 *   tn-bench -mode bulk -socks H:P|direct -dest H:P -c SESSIONS -bytes N
 *       SESSIONS downloads of N bytes at once; prints bytes, seconds, MB/s.
 *   tn-bench -mode rate -socks ... -dest H:P -c CONC -sec S
 *       new request/response sessions (GET /, about 100 bytes back), CONC at a time, for S s.
 *   tn-bench -mode ttfb -socks ... -dest H:P -n N -c CONC
 *       N new sessions, CONC at a time: time from connect() to the first byte of the answer,
 *       percentiles in ms. Each session's time and the cold first one are printed too.
 *   tn-bench -mode hold -socks ... -dest H:P(echo) -n N -sec S
 *       opens N sessions, each proving itself with a 1-byte echo, prints "held N", keeps
 *       them open S seconds (the caller samples memory meanwhile), then closes them.
 *   tn-bench -mode hol -socks ... -dest H:P -n N [-stall BYTES]
 *       with -stall, first opens one download of BYTES and never reads it; then N sequential
 *       requests on other sessions: latency percentiles.
 *
 * -wait S: the proxy may still be starting; wait up to S seconds for it to listen first (a
 * session that comes as the proxy starts).
 *
 * Output: one line of key=value pairs (last line), for scripts/bench.sh to parse. Exit 1 if
 * any session failed. Every wait is bounded by -timeout (30 s). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

enum { M_BULK, M_RATE, M_TTFB, M_HOLD, M_HOL };
enum { S_GREET, S_REPLY, S_BODY, S_DONE };

static struct event_base *base;
static struct sockaddr_storage proxy_sa, dest_sa;
static int proxy_salen, dest_salen, direct, http_connect, mode;
static char dest_host[256];
static unsigned dest_port;
static long n_total = 100, conc = 1, started, finished, failed, held, stall_bytes;
static long long want_bytes = 1 << 20;
static double run_sec = 5, timeout_sec = 30, wait_sec, t_start, t_first_done = -1;
static double *lat; /* per-session latency (ms), in start order */
static long nlat;
static uint64_t bytes_total;
static int stopping;

struct sess {
    long idx;
    struct bufferevent *bev;
    int state, stall;
    double t0;
    long long got, expect; /* body bytes; expect -1 until the header is parsed */
    int hdr_done, first, echoed;
    struct event *raw; /* bulk: the body read straight from the socket */
};

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
parse_addr(const char *hp, struct sockaddr_storage *ss, int *len, char *host, unsigned *port)
{
    char h[256];
    const char *colon = strrchr(hp, ':');
    struct addrinfo hints, *res;

    if (colon == NULL || (size_t)(colon - hp) >= sizeof(h)) return -1;
    memcpy(h, hp, (size_t)(colon - hp));
    h[colon - hp] = 0;
    if (h[0] == '[') {
        memmove(h, h + 1, strlen(h));
        h[strlen(h) - 1] = 0;
    }
    if (host != NULL) snprintf(host, 256, "%s", h);
    if (port != NULL) *port = (unsigned)atoi(colon + 1);
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(h, colon + 1, &hints, &res) != 0) return -1;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = (int)res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static void start_one(void);
static void finish(struct sess *s, int ok);

static void
raw_read_cb(evutil_socket_t fd, short what, void *arg)
{
    static char buf[1 << 20];
    struct sess *s = arg;
    int i;

    (void)what;
    for (i = 0; i < 16; i++) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n > 0) {
            s->got += n;
            bytes_total += (uint64_t)n;
            if (s->got >= s->expect) {
                finish(s, 1);
                return;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        finish(s, 0);
        return;
    }
}

static void
finish(struct sess *s, int ok)
{
    if (!ok) failed++;
    if (s->raw != NULL) event_free(s->raw);
    if (s->bev != NULL) bufferevent_free(s->bev);
    s->bev = NULL;
    s->state = S_DONE;
    finished++;
    if (t_first_done < 0) t_first_done = now();
    free(s);
    if (mode == M_HOLD) return;
    if (!stopping && started < n_total) start_one();
    if (finished >= n_total || (stopping && finished >= started)) event_base_loopbreak(base);
}

static void
send_request(struct sess *s)
{
    char req[128];

    if (mode == M_HOLD) {
        bufferevent_write(s->bev, "x", 1);
        s->state = S_BODY;
        return;
    }
    if (s->stall)
        snprintf(req, sizeof(req), "GET /bytes/%ld HTTP/1.1\r\nHost: bench\r\n\r\n", stall_bytes);
    else if (mode == M_BULK)
        snprintf(req, sizeof(req), "GET /bytes/%lld HTTP/1.1\r\nHost: bench\r\n\r\n", want_bytes);
    else
        snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: bench\r\n\r\n");
    bufferevent_write(s->bev, req, strlen(req));
    s->state = S_BODY;
    if (s->stall) bufferevent_disable(s->bev, EV_READ);
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct sess *s = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    unsigned char b[10];

    if (s->state == S_GREET) {
        if (evbuffer_get_length(in) < 2) return;
        evbuffer_remove(in, b, 2);
        if (b[0] != 5 || b[1] != 0) {
            finish(s, 0);
            return;
        }
        {
            uint8_t r[262];
            size_t hl = strlen(dest_host), k = 0;
            r[k++] = 5, r[k++] = 1, r[k++] = 0, r[k++] = 3, r[k++] = (uint8_t)hl;
            memcpy(r + k, dest_host, hl);
            k += hl;
            r[k++] = (uint8_t)(dest_port >> 8), r[k++] = (uint8_t)dest_port;
            bufferevent_write(bev, r, k);
        }
        s->state = S_REPLY;
        return;
    }
    if (s->state == S_REPLY && http_connect) {
        struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        char status[13];
        if (p.pos < 0) return;
        evbuffer_copyout(in, status, sizeof(status) - 1);
        status[sizeof(status) - 1] = 0;
        evbuffer_drain(in, (size_t)p.pos + 4);
        if (strncmp(status, "HTTP/1.", 7) != 0 || strncmp(status + 8, " 200", 4) != 0) {
            finish(s, 0);
            return;
        }
        send_request(s);
        if (evbuffer_get_length(in) == 0) return;
    } else if (s->state == S_REPLY) {
        if (evbuffer_get_length(in) < 10) return;
        evbuffer_remove(in, b, 10); /* a domain-type reply would be longer; none of ours is */
        if (b[1] != 0) {
            finish(s, 0);
            return;
        }
        send_request(s);
        if (evbuffer_get_length(in) == 0) return;
    }
    if (s->state != S_BODY && mode != M_HOLD) return;
    if (!s->first && evbuffer_get_length(in) > 0) {
        /* The first byte of the answer. */
        s->first = 1;
        if (lat != NULL && s->idx >= 0 && s->idx < nlat) lat[s->idx] = (now() - s->t0) * 1e3;
    }
    if (mode == M_HOLD) {
        if (evbuffer_get_length(in) >= 1 && !s->echoed) {
            s->echoed = 1;
            held++;
            if (held == n_total) event_base_loopbreak(base);
        }
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    if (!s->hdr_done) {
        struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        char hdr[512];
        size_t hl;
        const char *cl;
        if (p.pos < 0) return;
        hl = (size_t)p.pos + 4;
        evbuffer_copyout(in, hdr, hl < sizeof(hdr) ? hl : sizeof(hdr) - 1);
        hdr[hl < sizeof(hdr) ? hl : sizeof(hdr) - 1] = 0;
        cl = strstr(hdr, "Content-Length: ");
        s->expect = cl != NULL ? atoll(cl + 16) : 0;
        evbuffer_drain(in, hl);
        s->hdr_done = 1;
    }
    s->got += (long long)evbuffer_get_length(in);
    bytes_total += evbuffer_get_length(in);
    evbuffer_drain(in, evbuffer_get_length(in));
    if (s->got >= s->expect) {
        finish(s, 1);
        return;
    }
    if (mode == M_BULK && s->raw == NULL) {
        /* libevent 2.1 reads 4 KiB a call: the tool would be the bottleneck. Read the body
         * straight from the socket, 1 MiB a call. */
        bufferevent_disable(bev, EV_READ);
        s->raw = event_new(base, bufferevent_getfd(bev), EV_READ | EV_PERSIST, raw_read_cb, s);
        event_add(s->raw, NULL);
    }
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct sess *s = arg;

    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (direct) {
            send_request(s);
        } else if (http_connect) {
            char req[600];
            int n = snprintf(req, sizeof(req), "CONNECT %s:%u HTTP/1.1\r\nHost: %s:%u\r\n\r\n",
                             dest_host, dest_port, dest_host, dest_port);
            bufferevent_write(bev, req, (size_t)n);
            s->state = S_REPLY;
        } else {
            static const uint8_t greet[3] = {5, 1, 0};
            bufferevent_write(bev, greet, sizeof(greet));
        }
        return;
    }
    if (s->stall) return;
    if (mode == M_HOLD && s->echoed) held--;
    finish(s, (what & BEV_EVENT_EOF) && s->hdr_done && s->got >= s->expect);
}

static struct sess *
open_sess(int stall)
{
    struct sess *s = calloc(1, sizeof(*s));
    struct timeval tv = {(long)timeout_sec, 0};

    s->idx = stall ? -1 : started++;
    s->stall = stall;
    s->expect = -1;
    s->state = direct ? S_BODY : S_GREET;
    s->t0 = now();
    s->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(s->bev, read_cb, NULL, event_cb, s);
    if (mode != M_HOLD && !stall) bufferevent_set_timeouts(s->bev, &tv, &tv);
    bufferevent_enable(s->bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(s->bev, (struct sockaddr *)(direct ? &dest_sa : &proxy_sa),
                                   direct ? dest_salen : proxy_salen) == -1) {
        finish(s, 0);
        return NULL;
    }
    return s;
}

static void
start_one(void)
{
    open_sess(0);
}

static int
cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
pct(const double *v, long n, double p)
{
    long i = (long)(p / 100.0 * (double)(n - 1) + 0.5);
    return n > 0 ? v[i < n ? i : n - 1] : 0;
}

static void
stop_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    stopping = 1;
    if (mode == M_HOLD || finished >= started) event_base_loopbreak(base);
}

static void
print_lat(const char *prefix)
{
    double *v = malloc(sizeof(double) * (size_t)(nlat > 0 ? nlat : 1));
    long i, k = 0;

    for (i = 0; i < nlat; i++)
        if (lat[i] > 0) v[k++] = lat[i];
    printf("%scold_ms=%.3f ", prefix, nlat > 0 ? lat[0] : 0);
    qsort(v, (size_t)k, sizeof(double), cmp);
    printf("n=%ld p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f", k, pct(v, k, 50), pct(v, k, 90),
           pct(v, k, 99), k > 0 ? v[k - 1] : 0);
    free(v);
}

/* -wait: a blocking connect() every millisecond until the proxy listens, or sec have passed.
 * The probe closes at once: the proxy sees a connection that says nothing, not a session. */
static int
wait_listen(double sec)
{
    double end = now() + sec;
    int fd, up;

    for (;;) {
        fd = socket(proxy_sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd == -1) return -1;
        up = connect(fd, (struct sockaddr *)&proxy_sa, proxy_salen) == 0;
        close(fd);
        if (up) return 0;
        if (now() > end) return -1;
        usleep(1000);
    }
}

int
main(int argc, char **argv)
{
    const char *proxy = NULL, *dest = NULL, *m = "bulk";
    struct rlimit rl;
    struct event *stop;
    struct timeval tv;
    int i, verbose = 0;
    double t_end;

    for (i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "-mode") == 0)
            m = v;
        else if (strcmp(k, "-socks") == 0)
            proxy = v;
        else if (strcmp(k, "-http") == 0)
            proxy = v, http_connect = 1;
        else if (strcmp(k, "-dest") == 0)
            dest = v;
        else if (strcmp(k, "-n") == 0)
            n_total = atol(v);
        else if (strcmp(k, "-c") == 0)
            conc = atol(v);
        else if (strcmp(k, "-bytes") == 0)
            want_bytes = atoll(v);
        else if (strcmp(k, "-sec") == 0)
            run_sec = atof(v);
        else if (strcmp(k, "-stall") == 0)
            stall_bytes = atol(v);
        else if (strcmp(k, "-timeout") == 0)
            timeout_sec = atof(v);
        else if (strcmp(k, "-wait") == 0)
            wait_sec = atof(v);
        else if (strcmp(k, "-v") == 0)
            verbose = atoi(v);
        else {
            fprintf(stderr, "tn-bench: unknown flag %s\n", k);
            return 2;
        }
    }
    mode = strcmp(m, "rate") == 0   ? M_RATE
           : strcmp(m, "ttfb") == 0 ? M_TTFB
           : strcmp(m, "hold") == 0 ? M_HOLD
           : strcmp(m, "hol") == 0  ? M_HOL
                                    : M_BULK;
    direct = proxy != NULL && strcmp(proxy, "direct") == 0;
    if (proxy == NULL || dest == NULL ||
        (!direct && parse_addr(proxy, &proxy_sa, &proxy_salen, NULL, NULL) == -1) ||
        parse_addr(dest, &dest_sa, &dest_salen, dest_host, &dest_port) == -1) {
        fprintf(stderr, "usage: tn-bench -mode bulk|rate|ttfb|hold|hol -socks H:P|direct|-http H:P "
                        "-dest H:P [-n N] [-c C] [-bytes B] [-sec S] [-stall B] [-wait S]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (!direct && wait_sec > 0 && wait_listen(wait_sec) == -1) {
        fprintf(stderr, "tn-bench: nothing listens on %s after %.1f s\n", proxy, wait_sec);
        return 1;
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    base = event_base_new();
    if (mode == M_BULK) n_total = conc;
    if (mode == M_RATE) n_total = 1L << 40;
    if (mode == M_TTFB || mode == M_HOL) {
        lat = calloc((size_t)n_total, sizeof(double));
        nlat = n_total;
    }
    t_start = now();
    if (mode == M_HOL && stall_bytes > 0) {
        open_sess(1);
        /* Let the stalled download fill every buffer on its way. */
        tv.tv_sec = 1, tv.tv_usec = 0;
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    if (mode == M_HOL) conc = 1;
    t_start = now();
    if (mode == M_HOLD) conc = n_total;
    for (i = 0; i < conc && started < n_total; i++)
        start_one();
    tv.tv_sec = (long)(mode == M_RATE ? run_sec : timeout_sec + 5);
    tv.tv_usec = (long)((mode == M_RATE ? run_sec : timeout_sec) * 1e6) % 1000000;
    stop = evtimer_new(base, stop_cb, NULL);
    evtimer_add(stop, &tv);
    event_base_dispatch(base);
    t_end = now();
    if (mode == M_HOLD) {
        printf("held %ld\n", held);
        fflush(stdout);
        event_del(stop);
        tv.tv_sec = (long)run_sec, tv.tv_usec = 0;
        evtimer_add(stop, &tv);
        event_base_dispatch(base);
        printf("mode=hold n=%ld held=%ld failed=%ld open_sec=%.3f\n", n_total, held, n_total - held,
               t_end - t_start);
        event_free(stop);
        return held == n_total ? 0 : 1;
    }
    if (verbose && lat != NULL)
        for (i = 0; i < nlat; i++)
            printf("lat %d %.3f\n", i, lat[i]);
    if (mode == M_BULK)
        printf("mode=bulk sessions=%ld bytes=%llu sec=%.3f MBps=%.1f failed=%ld\n", conc,
               (unsigned long long)bytes_total, t_end - t_start,
               (double)bytes_total / 1e6 / (t_end - t_start), failed);
    else if (mode == M_RATE)
        printf("mode=rate conc=%ld done=%ld sec=%.3f per_sec=%.0f failed=%ld\n", conc,
               finished - failed, t_end - t_start, (double)(finished - failed) / (t_end - t_start),
               failed);
    else {
        print_lat(mode == M_TTFB ? "mode=ttfb " : "mode=hol ");
        printf(" conc=%ld failed=%ld\n", conc, failed);
    }
    event_free(stop); /* the sanitizer build reports what is left at exit */
    return failed == 0 ? 0 : 1;
}
