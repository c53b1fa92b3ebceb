/* tn-dest: a destination server for specs and benchmarks.
 *
 *   tn-dest -addr HOST:PORT -mode http|sha|echo
 *
 * http: answers each request with `200 OK`; GET /bytes/N sends N bytes (one 1 MiB pseudo-random
 *       block, repeated), anything else a short
 *       greeting. One request per connection (Connection: close).
 * sha:  reads a 12-byte header (u64 BE: bytes to send back, u32 BE: seed), then sends that many
 *       pseudo-random bytes (the stream tn-load expects for the seed) while it hashes whatever
 *       else arrives; at EOF it appends the SHA-256 of what it received and closes. Full duplex
 *       and half-close in one exchange.
 * echo: sends back what it receives; half-closes when the peer does.
 * stall: accepts, half-closes at once and never reads (a 4 KiB receive buffer): what is sent
 *       to it waits in the sender, and a session to it that ends its side lingers there.
 * Prints "ready" on stdout once listening. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/evp.h>

#include "tn-rng.h"

enum { M_HTTP, M_SHA, M_ECHO, M_STALL };
static int mode;
static struct event_base *base;

#define HTTP_BLOCK (1024 * 1024)
static uint8_t http_block[HTTP_BLOCK];

struct conn {
    struct bufferevent *bev;
    EVP_MD_CTX *md;
    struct tn_rng rng;
    uint64_t to_send;
    int have_hdr, got_eof, done_sending, closing;
};

static void
conn_free(struct conn *c)
{
    if (c->md != NULL) EVP_MD_CTX_free(c->md);
    bufferevent_free(c->bev);
    free(c);
}

static void
close_when_flushed(struct conn *c)
{
    c->closing = 1;
    bufferevent_disable(c->bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) conn_free(c);
}

static void
sha_fill(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    uint8_t buf[65536];
    unsigned char dig[32];
    size_t n;

    while (c->to_send > 0 && evbuffer_get_length(out) < 256 * 1024) {
        n = c->to_send < sizeof(buf) ? (size_t)c->to_send : sizeof(buf);
        tn_rng_fill(&c->rng, buf, n);
        evbuffer_add(out, buf, n);
        c->to_send -= n;
    }
    if (c->to_send == 0 && c->got_eof && !c->done_sending) {
        c->done_sending = 1;
        EVP_DigestFinal_ex(c->md, dig, NULL);
        evbuffer_add(out, dig, sizeof(dig));
        close_when_flushed(c);
    }
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    uint8_t hdr[12];
    char line[256], resp[256];
    size_t n;

    if (c->closing) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    if (mode == M_ECHO) {
        bufferevent_write_buffer(bev, in);
        return;
    }
    if (mode == M_HTTP) {
        char *req = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF);
        unsigned long long want = 0;
        if (req == NULL) return;
        snprintf(line, sizeof(line), "%s", req);
        free(req);
        if (sscanf(line, "GET /bytes/%llu", &want) == 1) {
            snprintf(resp, sizeof(resp),
                     "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\nContent-Type: "
                     "application/octet-stream\r\nConnection: close\r\n\r\n",
                     want);
            bufferevent_write(bev, resp, strlen(resp));
            c->to_send = want;
            c->have_hdr = 2; /* sending a body */
            bufferevent_set_max_single_write(bev, HTTP_BLOCK);
            bufferevent_setwatermark(bev, EV_WRITE, HTTP_BLOCK, 0);
            bufferevent_trigger(bev, EV_WRITE, 0);
        } else {
            static const char body[] = "hello from tn-dest\n";
            snprintf(resp, sizeof(resp),
                     "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nContent-Type: text/plain\r\n"
                     "Connection: close\r\n\r\n%s",
                     sizeof(body) - 1, body);
            bufferevent_write(bev, resp, strlen(resp));
            close_when_flushed(c);
        }
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    if (!c->have_hdr) {
        if (evbuffer_get_length(in) < sizeof(hdr)) return;
        evbuffer_remove(in, hdr, sizeof(hdr));
        c->to_send =
            (uint64_t)ntohl(*(uint32_t *)(void *)hdr) << 32 | ntohl(*(uint32_t *)(void *)(hdr + 4));
        tn_rng_seed(&c->rng, ntohl(*(uint32_t *)(void *)(hdr + 8)) ^ 0x5eed);
        c->have_hdr = 1;
        sha_fill(c);
    }
    while ((n = evbuffer_get_length(in)) > 0) {
        struct evbuffer_iovec v[8];
        int k = evbuffer_peek(in, -1, NULL, v, 8), i;
        size_t used = 0;
        for (i = 0; i < k && i < 8; i++) {
            EVP_DigestUpdate(c->md, v[i].iov_base, v[i].iov_len);
            used += v[i].iov_len;
        }
        evbuffer_drain(in, used);
    }
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *out = bufferevent_get_output(bev);
    size_t n;

    if (c->closing) {
        if (evbuffer_get_length(out) == 0) conn_free(c);
        return;
    }
    if (mode == M_SHA && c->have_hdr) {
        sha_fill(c);
        return;
    }
    if (mode == M_HTTP && c->have_hdr == 2) {
        /* The body repeats one pseudo-random block by reference: a benchmark's destination
         * must cost next to nothing, or it takes the CPU the tunnels under test share. */
        while (c->to_send > 0 && evbuffer_get_length(out) < 2 * HTTP_BLOCK) {
            n = c->to_send < HTTP_BLOCK ? (size_t)c->to_send : HTTP_BLOCK;
            evbuffer_add_reference(out, http_block, n, NULL, NULL);
            c->to_send -= n;
        }
        if (c->to_send == 0) close_when_flushed(c);
    }
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;

    if ((what & BEV_EVENT_EOF) && !c->closing) {
        c->got_eof = 1;
        if (mode == M_ECHO) {
            shutdown(bufferevent_getfd(bev), SHUT_WR);
            conn_free(c);
            return;
        }
        if (mode == M_SHA && c->have_hdr) {
            sha_fill(c);
            return;
        }
    }
    conn_free(c);
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    struct conn *c = calloc(1, sizeof(*c));
    int one = 1;

    (void)l;
    (void)sa;
    (void)len;
    (void)arg;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (mode == M_STALL) {
        free(c);
        shutdown(fd, SHUT_WR);
        return; /* the descriptor stays open, never read */
    }
    c->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(c->md, EVP_sha256(), NULL);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, 128 * 1024, 0);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

int
main(int argc, char **argv)
{
    const char *addr = "127.0.0.1:0", *m = "http";
    struct sockaddr_storage ss;
    int sslen = sizeof(ss), i;
    struct evconnlistener *lis;

    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "-addr") == 0) addr = argv[i + 1];
        if (strcmp(argv[i], "-mode") == 0) m = argv[i + 1];
    }
    mode = strcmp(m, "sha") == 0     ? M_SHA
           : strcmp(m, "echo") == 0  ? M_ECHO
           : strcmp(m, "stall") == 0 ? M_STALL
                                     : M_HTTP;
    signal(SIGPIPE, SIG_IGN);
    {
        struct tn_rng r;
        tn_rng_seed(&r, 1);
        tn_rng_fill(&r, http_block, sizeof(http_block));
    }
    base = event_base_new();
    if (evutil_parse_sockaddr_port(addr, (struct sockaddr *)&ss, &sslen) == -1) {
        fprintf(stderr, "tn-dest: -addr: %s is not host:port\n", addr);
        return 2;
    }
    lis = evconnlistener_new_bind(base, accept_cb, NULL, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE,
                                  1024, (struct sockaddr *)&ss, sslen);
    if (lis == NULL) {
        perror("tn-dest: listen");
        return 1;
    }
    if (mode == M_STALL) {
        /* What accepted sockets inherit: the least receive buffer. */
        int small = 4096;
        setsockopt(evconnlistener_get_fd(lis), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    }
    printf("ready\n");
    fflush(stdout);
    event_base_dispatch(base);
    return 0;
}
