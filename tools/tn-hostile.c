/* tn-hostile: a client that attacks a TunneLS server, for specs and `make bench-hostile`.
 *
 *   tn-hostile -server HOST:PORT -mode MODE [-dest HOST:PORT] [-n N] [-sec S] [-sources K]
 *              [-from K]
 *              [-ca F -cert F -key F -name NAME | -tcp]
 *
 * A raw ReMux peer (with a valid client certificate, or over plain TCP with -tcp) that does what
 * no honest client does, each mode on one connection for S seconds (10):
 *
 * hog:      opens N sessions (64) to DEST and sends as fast as the server's credit allows, never
 *           reading anything but what brings credit; answers every PING with a PONG forged to
 *           claim a 500 ms round trip and sends unsolicited PONGs too: windows talked up, and
 *           the bytes held in the server for a destination that does not read.
 * flood:    opens sessions to DEST as fast as the connection takes them, keeping N (64) open
 *           (each older one RESET): the server's parse, ACL, connect and close, over and over;
 *           past the server's limits, sessions refused.
 * orphans:  opens N sessions (2) to DEST, sends on each until credit stops coming (1 s without
 *           any), sends FIN, waits for the destination's FIN, and closes the connection: sessions
 *           that live on in the server without it (orphans). Then waits S seconds.
 * slowread: opens N sessions (64), each downloading from an HTTP DEST (GET /bytes/1000000000),
 *           and never reads: the server's output toward it fills.
 * strangers: holds N (1000) TCP connections to the server that send nothing, opening a new one
 *           a second after the server drops one (no TLS, no certificate): idle strangers, not a
 *           connect flood; with -sources K, from K loopback addresses (127.0.1.1 to 127.0.1.K),
 *           as K hosts would.
 * -from K: the ReMux modes connect from 127.0.1.K (another host than an honest client's).
 *
 * Prints one line of key=value pairs (what it did and what the server answered) and exits 0,
 * or 1 when it could not connect at all. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "../engine/frame.h"

#define SIDS 65536

static const char *server = "", *dest = "127.0.0.1:1", *mode = "hog";
static const char *ca, *cert, *key, *name = "localhost";
static int plain_tcp, n_arg = -1, sources, from_arg;
static double seconds = 10;

static SSL *ssl;
static int fd = -1;
static int64_t credit[SIDS];
static unsigned char open_sid[SIDS];
static uint64_t sent_bytes, windows, resets, pings, pongs, fins;

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
split(const char *hp, char *host, size_t hl, char *port, size_t pl)
{
    const char *c = strrchr(hp, ':');

    if (c == NULL || (size_t)(c - hp) >= hl) return -1;
    memcpy(host, hp, (size_t)(c - hp));
    host[c - hp] = 0;
    snprintf(port, pl, "%s", c + 1);
    return 0;
}

/* from: 0, or the last byte of a 127.0.1.x address to connect from. */
static int
tcp_connect_from(const char *hp, int nonblock, int from)
{
    char host[256], port[16];
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;
    int s, one = 1;

    if (split(hp, host, sizeof(host), port, sizeof(port)) == -1) return -1;
    if (getaddrinfo(host, port, &hints, &ai) != 0) return -1;
    s = socket(ai->ai_family, SOCK_STREAM, 0);
    if (s >= 0) {
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (nonblock) fcntl(s, F_SETFL, O_NONBLOCK);
        if (from > 0 && ai->ai_family == AF_INET) {
            struct sockaddr_in sin = {.sin_family = AF_INET};
            sin.sin_addr.s_addr = htonl(0x7f000100u | (unsigned)from);
            if (bind(s, (struct sockaddr *)&sin, sizeof(sin)) == -1) {
                close(s);
                freeaddrinfo(ai);
                return -1;
            }
        }
        if (connect(s, ai->ai_addr, ai->ai_addrlen) == -1 && errno != EINPROGRESS) {
            close(s);
            s = -1;
        }
    }
    freeaddrinfo(ai);
    return s;
}

static int
tcp_connect(const char *hp, int nonblock)
{
    return tcp_connect_from(hp, nonblock, from_arg);
}

static int
link_up(void)
{
    SSL_CTX *ctx;

    fd = tcp_connect(server, 0);
    if (fd < 0) return -1;
    if (plain_tcp) return 0;
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
        return -1;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, name);
    SSL_set1_host(ssl, name);
    return SSL_connect(ssl) == 1 ? 0 : -1;
}

static int
put(const void *buf, size_t n)
{
    const char *p = buf;

    while (n > 0) {
        ssize_t w = ssl != NULL ? SSL_write(ssl, p, (int)n) : write(fd, p, n);
        if (w <= 0) {
            if (ssl == NULL && w < 0 && errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads exactly n bytes, waiting at most ms for the first; 0, -1 (closed) or -2 (nothing came). */
static int
get(void *buf, size_t n, int ms)
{
    char *p = buf;

    while (n > 0) {
        ssize_t r;
        if (ssl == NULL || SSL_pending(ssl) == 0) {
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            int k = poll(&pfd, 1, ms);
            if (k == 0) return -2;
            if (k < 0) return -1;
        }
        r = ssl != NULL ? SSL_read(ssl, p, (int)n) : read(fd, p, n);
        if (r <= 0) {
            if (ssl != NULL && SSL_get_error(ssl, (int)r) == SSL_ERROR_WANT_READ) continue;
            return -1;
        }
        p += r;
        n -= (size_t)r;
        ms = 5000; /* the rest of a frame that began */
    }
    return 0;
}

static int
send_frame(uint16_t sid, const void *p, size_t n)
{
    uint8_t h[FRAME_HDR_LEN];

    frame_encode_hdr(h, sid, (uint16_t)n);
    if (put(h, sizeof(h)) == -1) return -1;
    return n > 0 ? put(p, n) : 0;
}

static int
send_ctl(const struct frame_ctl *c)
{
    uint8_t b[FRAME_CTL_MAX_LEN];

    return put(b, frame_encode_ctl(b, c));
}

/* A PONG that claims the PING it answers left 500 ms before it did. */
static int
forged_pong(uint64_t opaque)
{
    struct frame_ctl c = {.type = FRAME_CTL_PONG, .opaque = opaque - 500000};

    pongs++;
    return send_ctl(&c);
}

/* Reads one frame, waiting at most ms: 1 (handled), 0 (nothing came), -1 (the link is gone).
 * WINDOW adds credit, RESET closes the session, PING gets a forged PONG; data is dropped. */
static int
one_frame(int ms)
{
    uint8_t h[FRAME_HDR_LEN], p[FRAME_MAX_PAYLOAD];
    struct frame_hdr fh;
    struct frame_ctl c;
    const char *err;

    int r = get(h, sizeof(h), ms);

    if (r != 0) return r == -2 ? 0 : -1;
    frame_decode_hdr(h, sizeof(h), &fh);
    if (fh.len > 0 && get(p, fh.len, 5000) != 0) return -1;
    if (fh.sid != 0) {
        if (fh.len == 0) fins++;
        return 1;
    }
    if (frame_decode_ctl(p, fh.len, &c, &err) == -1) return 1;
    switch (c.type) {
    case FRAME_CTL_WINDOW:
        credit[c.sid] += c.increment;
        windows++;
        break;
    case FRAME_CTL_RESET:
        open_sid[c.sid] = 0;
        resets++;
        break;
    case FRAME_CTL_PING:
        pings++;
        if (forged_pong(c.opaque) == -1) return -1;
        break;
    case FRAME_CTL_GOAWAY: return -1;
    }
    return 1;
}

/* The EagerSocks header for dest, then extra bytes. Returns its length. */
static size_t
open_header(uint8_t *b, const uint8_t *extra, size_t n)
{
    char host[256], port[16];
    size_t len = 0, hl;
    unsigned p;

    split(dest, host, sizeof(host), port, sizeof(port));
    p = (unsigned)atoi(port);
    hl = strlen(host);
    b[len++] = 5;
    b[len++] = 1;
    b[len++] = 0;
    b[len++] = 3;
    b[len++] = (uint8_t)hl;
    memcpy(b + len, host, hl);
    len += hl;
    b[len++] = (uint8_t)(p >> 8);
    b[len++] = (uint8_t)p;
    if (n > 0) memcpy(b + len, extra, n); /* extra may be NULL when n is 0 */
    return len + n;
}

static int
open_session(uint16_t sid, const void *extra, size_t n)
{
    uint8_t b[512];

    open_sid[sid] = 1;
    credit[sid] = 256 * 1024 - (int64_t)n;
    return send_frame(sid, b, open_header(b, extra, n));
}

static void
hog(int n, double end)
{
    static uint8_t chunk[16384];
    /* tn-dest sha: 12 bytes first (send nothing back); everything after is hashed */
    static const uint8_t sha_hdr[12];
    double next_pong = 0;
    int sid;

    memset(chunk, 'h', sizeof(chunk));
    for (sid = 1; sid <= n; sid++)
        if (open_session((uint16_t)sid, sha_hdr, sizeof(sha_hdr)) == -1) return;
    while (now() < end) {
        int moved = 0;
        for (sid = 1; sid <= n; sid++) {
            size_t k = sizeof(chunk);
            if (!open_sid[sid] || credit[sid] <= 0) continue;
            if ((int64_t)k > credit[sid]) k = (size_t)credit[sid];
            if (send_frame((uint16_t)sid, chunk, k) == -1) return;
            credit[sid] -= (int64_t)k;
            sent_bytes += k;
            moved = 1;
        }
        if (now() >= next_pong) { /* unsolicited, claiming an old PING */
            if (forged_pong((uint64_t)(now() * 1e6)) == -1) return;
            next_pong = now() + 0.05;
        }
        int r;
        while ((r = one_frame(moved ? 0 : 100)) == 1) {
        }
        if (r == -1) return;
    }
}

static void
flood(int n, double end)
{
    uint32_t sid = 0;
    uint64_t opened = 0;

    while (now() < end) {
        struct frame_ctl rst = {.type = FRAME_CTL_RESET, .reason = FRAME_RST_ABORTED};
        sid++;
        if (sid > 65535) break; /* a connection's ids are used up */
        if (open_session((uint16_t)sid, NULL, 0) == -1) break;
        opened++;
        if (sid > (uint32_t)n && open_sid[sid - n]) {
            rst.sid = (uint16_t)(sid - n);
            open_sid[sid - n] = 0;
            if (send_ctl(&rst) == -1) break;
        }
        int r;
        while ((r = one_frame(0)) == 1) {
        }
        if (r == -1) break;
    }
    sent_bytes = opened;
}

static void
orphans(int n, double end)
{
    static uint8_t chunk[16384];
    static const uint8_t sha_hdr[12];
    double quiet;
    int sid;

    memset(chunk, 'o', sizeof(chunk));
    for (sid = 1; sid <= n; sid++)
        if (open_session((uint16_t)sid, sha_hdr, sizeof(sha_hdr)) == -1) return;
    quiet = now() + 1;
    while (now() < quiet && now() < end) {
        for (sid = 1; sid <= n; sid++) {
            while (credit[sid] > 0) {
                size_t k =
                    credit[sid] < (int64_t)sizeof(chunk) ? (size_t)credit[sid] : sizeof(chunk);
                if (send_frame((uint16_t)sid, chunk, k) == -1) return;
                credit[sid] -= (int64_t)k;
                sent_bytes += k;
            }
        }
        uint64_t had = windows;
        int r = one_frame(100);
        if (r == -1) return;
        if (windows > had) quiet = now() + 1;
    }
    for (sid = 1; sid <= n; sid++)
        if (send_frame((uint16_t)sid, NULL, 0) == -1) return; /* FIN */
    /* Everything the server sent is read before the close: unread input would make it a
     * reset, which can discard the FIN frames before the server reads them. */
    quiet = now() + 1;
    while (now() < quiet && one_frame(100) >= 0) {
    }
    if (ssl != NULL) SSL_shutdown(ssl);
    close(fd);
    fd = -1;
    while (now() < end)
        usleep(100000);
}

static void
slowread(int n, double end)
{
    static const char get_req[] = "GET /bytes/1000000000 HTTP/1.1\r\nHost: x\r\n\r\n";
    int sid;

    for (sid = 1; sid <= n; sid++)
        if (open_session((uint16_t)sid, get_req, sizeof(get_req) - 1) == -1) return;
    while (now() < end)
        usleep(100000);
}

static void
strangers(int n, double end)
{
    int *fds = calloc((size_t)n, sizeof(int)), i;
    double *again = calloc((size_t)n, sizeof(double)); /* when a dropped one may reconnect */
    uint64_t made = 0, dropped = 0;
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    for (i = 0; i < n; i++)
        fds[i] = -1;
    while (now() < end) {
        for (i = 0; i < n; i++) {
            char b[64];
            if (fds[i] >= 0) {
                ssize_t r = recv(fds[i], b, sizeof(b), MSG_DONTWAIT);
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != ENOTCONN)) {
                    close(fds[i]);
                    fds[i] = -1;
                    dropped++;
                    again[i] = now() + 1;
                }
            }
            if (fds[i] < 0 && now() >= again[i]) {
                fds[i] = tcp_connect_from(server, 1, sources > 0 ? 1 + i % sources : 0);
                if (fds[i] >= 0) made++;
            }
        }
        usleep(50000);
    }
    printf("mode=strangers held=%d made=%llu dropped=%llu\n", n, (unsigned long long)made,
           (unsigned long long)dropped);
    free(fds);
    free(again);
}

int
main(int argc, char **argv)
{
    double end;
    int i, n;

    for (i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (strcmp(argv[i], "-tcp") == 0) {
            plain_tcp = 1;
            continue;
        }
        if (strcmp(argv[i], "-server") == 0)
            server = v;
        else if (strcmp(argv[i], "-dest") == 0)
            dest = v;
        else if (strcmp(argv[i], "-mode") == 0)
            mode = v;
        else if (strcmp(argv[i], "-n") == 0)
            n_arg = atoi(v);
        else if (strcmp(argv[i], "-sec") == 0)
            seconds = atof(v);
        else if (strcmp(argv[i], "-sources") == 0)
            sources = atoi(v) > 254 ? 254 : atoi(v);
        else if (strcmp(argv[i], "-from") == 0)
            from_arg = atoi(v) > 254 ? 254 : atoi(v);
        else if (strcmp(argv[i], "-ca") == 0)
            ca = v;
        else if (strcmp(argv[i], "-cert") == 0)
            cert = v;
        else if (strcmp(argv[i], "-key") == 0)
            key = v;
        else if (strcmp(argv[i], "-name") == 0)
            name = v;
        else {
            fprintf(stderr, "tn-hostile: unknown flag %s\n", argv[i]);
            return 2;
        }
        i++;
    }
    signal(SIGPIPE, SIG_IGN);
    end = now() + seconds;
    if (strcmp(mode, "strangers") == 0) {
        strangers(n_arg > 0 ? n_arg : 1000, end);
        return 0;
    }
    if (!plain_tcp && (ca == NULL || cert == NULL || key == NULL)) {
        fprintf(stderr, "tn-hostile: -ca, -cert and -key (or -tcp)\n");
        return 2;
    }
    if (link_up() == -1) {
        fprintf(stderr, "tn-hostile: cannot connect to %s\n", server);
        ERR_print_errors_fp(stderr);
        return 1;
    }
    n = n_arg;
    if (strcmp(mode, "hog") == 0)
        hog(n > 0 ? n : 64, end);
    else if (strcmp(mode, "flood") == 0)
        flood(n > 0 ? n : 64, end);
    else if (strcmp(mode, "orphans") == 0)
        orphans(n > 0 ? n : 2, end);
    else if (strcmp(mode, "slowread") == 0)
        slowread(n > 0 ? n : 64, end);
    else {
        fprintf(stderr, "tn-hostile: unknown mode %s\n", mode);
        return 2;
    }
    printf("mode=%s sent=%llu windows=%llu resets=%llu fins=%llu pings=%llu pongs=%llu\n", mode,
           (unsigned long long)sent_bytes, (unsigned long long)windows, (unsigned long long)resets,
           (unsigned long long)fins, (unsigned long long)pings, (unsigned long long)pongs);
    return 0;
}
