/* client.c: the local proxy port. Its first byte tells SOCKS5 (5), SOCKS4/4a (4) and HTTP (a
 * method's letter) apart. A handshake object lives only until the CONNECT request is parsed;
 * then the app's bufferevent is handed to a new session and the handshake object is freed.
 * Replies are sent without waiting for the server (EagerSocks): `05 00` to a greeting offering
 * no-auth, `05 00 00 01 0.0.0.0 0` to a CONNECT, `00 5a ...` to SOCKS4, `200 Connection
 * established` to HTTP CONNECT. What cannot be served gets an answer in its protocol that says
 * so (`05 FF`, reply 07 or 08, `5b`, an HTTP status with the reason), then the socket closes. */
#include "client.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/crypto.h>

#include "addr.h"
#include "direct.h"
#include "httpreq.h"
#include "log.h"
#include "metrics.h"
#include "luahost.h"
#include "pool.h"
#include "session.h"
#include "socks.h"
#include "tls.h"
#include "udpassoc.h"
#include "writethrough.h"

struct client {
    struct event_base *base;
    const struct config *cfg;
    SSL_CTX *ctx;
    struct luahost *lua;
    struct evdns_base *dns;                 /* for direct sessions */
    struct udpassoc_env udp_env;            /* what a UDP association asks of the client */
    struct pool *pools[CONFIG_SERVERS_MAX]; /* one per server of -server.addr */
    int npools;
    struct evconnlistener *lis;
    struct event *resume;      /* re-enables accepting after running out of descriptors */
    char user[256], pass[256]; /* -socks.auth; user[0] == 0: no authentication */
    int nodelay;               /* accepted sockets: 0 unknown, 1 inherit TCP_NODELAY, -1 not */
};

enum { HS_GREETING, HS_AUTH, HS_REQUEST, HS_CLOSING };

/* What the app speaks, from its first byte. */
enum hs_proto { HS_UNKNOWN, HS_SOCKS5, HS_SOCKS4, HS_HTTP };

/* What a handshake reads into: SOCKS messages (at most 513 bytes) and what follows them fit
 * the first; an HTTP request head (up to HTTPREQ_HEAD_MAX) gets the second, allocated once the
 * first byte says HTTP. A burst of 1,000 SOCKS handshakes held 8 MiB more with one 8 KiB buffer
 * each (freed heap that glibc keeps, M_TRIM_THRESHOLD). */
#define HS_BUF_SOCKS 1024
#define HS_BUF_HTTP HTTPREQ_HEAD_MAX

/* The handshake reads the socket itself, not through the bufferevent: a bufferevent read asks
 * the kernel how much is waiting (ioctl FIONREAD) before each read, two extra system calls per
 * session for messages of a few bytes. The bufferevent is made at accept all the same (it costs
 * no system call): refusals are written through it, and the session takes it over. */
struct handshake {
    struct client *c;
    struct bufferevent *bev;
    struct event *rev;
    struct timeval deadline; /* -socks.handshake.sec after accept: for the whole handshake */
    int state;
    enum hs_proto proto;
    size_t len, nout, cap;
    uint8_t *buf; /* read, not yet parsed: small, or an HTTP head's (cap bytes) */
    uint8_t small[HS_BUF_SOCKS];
    uint8_t out[64]; /* replies not yet written (method, login, CONNECT): sent together */
    char peer[64];
};

/* The log tag of h's handshake lines. */
static const char *
hs_tag(const struct handshake *h)
{
    return h->proto == HS_HTTP ? "http" : "socks";
}

/* Frees h but not its bufferevent (a session or a direct relay has it now). Whoever takes the
 * socket watches it before rev goes, so the descriptor stays in epoll across the hand-over. */
static void
hs_release(struct handshake *h)
{
    if (h->rev != NULL) event_free(h->rev);
    if (h->buf != h->small) free(h->buf);
    free(h);
}

static void
hs_free(struct handshake *h)
{
    bufferevent_free(h->bev);
    hs_release(h);
}

static void
hs_flushed_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    hs_free(arg);
}

static void
hs_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct handshake *h = arg;

    (void)bev;
    if (what & BEV_EVENT_TIMEOUT)
        log_msg(LOG_WARN, "[%s] %s: reply not taken", hs_tag(h), h->peer);
    else if (what & BEV_EVENT_ERROR)
        log_msg(LOG_DEBUG, "[%s] %s: handshake: %s", hs_tag(h), h->peer,
                evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    hs_free(h);
}

/* Sends the replies not yet written and reply (n bytes), and closes once they have left. */
static void
hs_refuse_at(struct handshake *h, const uint8_t *reply, size_t n, int level, const char *why)
{
    struct timeval tv = {h->c->cfg->socks_handshake_sec, 0};

    log_msg(level, "[%s] %s: %s", hs_tag(h), h->peer, why);
    if (h->nout == 0 && n == 0) { /* no word to say in its protocol: close now */
        hs_free(h);
        return;
    }
    h->state = HS_CLOSING;
    event_del(h->rev);
    bufferevent_setcb(h->bev, NULL, hs_flushed_cb, hs_event_cb, h);
    bufferevent_setwatermark(h->bev, EV_WRITE, 0, 0);
    bufferevent_set_timeouts(h->bev, NULL, &tv);
    bufferevent_write(h->bev, h->out, h->nout);
    bufferevent_write(h->bev, reply, n);
}

static void
hs_refuse(struct handshake *h, const uint8_t *reply, size_t n, const char *why)
{
    hs_refuse_at(h, reply, n, LOG_WARN, why);
}

/* An HTTP refusal: the status, the reason in a text body (the app's user reads it), close. */
static void
hs_refuse_http(struct handshake *h, int status, int level, const char *why)
{
    char resp[1024];
    size_t n = httpreq_error(status, why, resp, sizeof(resp));

    hs_refuse_at(h, (const uint8_t *)resp, n, level, why);
}

/* The handshake's end, timed out: HTTP learns it (408), SOCKS has no word for it. */
static void
hs_timeout(struct handshake *h)
{
    if (h->proto == HS_HTTP) {
        hs_refuse_http(h, 408, LOG_WARN, "handshake timeout: no whole request head in time");
        return;
    }
    log_msg(LOG_WARN, "[%s] %s: handshake timeout", hs_tag(h), h->peer);
    hs_free(h);
}

/* The pool for server want, or the next one that is not marked down (all down: want's). */
static struct pool *
choose_pool(struct client *c, int want, const char *dest)
{
    int i;

    for (i = 0; i < c->npools; i++) {
        struct pool *p = c->pools[(want + i) % c->npools];
        if (!pool_is_down(p)) {
            if (i > 0)
                log_msg(LOG_DEBUG, "[route] %s via %s: %s is down", dest, pool_label(p),
                        pool_label(c->pools[want]));
            return p;
        }
    }
    return c->pools[want];
}

/* Appends a reply to those not yet written. */
static void
hs_reply(struct handshake *h, const uint8_t *reply, size_t n)
{
    memcpy(h->out + h->nout, reply, n);
    h->nout += n;
}

/* Drops the first n bytes of the buffer: that message is parsed. */
static void
hs_consume(struct handshake *h, size_t n)
{
    memmove(h->buf, h->buf + n, h->len - n);
    h->len -= n;
}

/* Asks the route hook about req (counted by route). A block is answered in the app's protocol
 * (SOCKS5 reply 02, "connection not allowed by ruleset", SOCKS4 5b, HTTP 403: the app learns
 * why at once) and h is gone; else LUAHOST_TUNNEL (via server *server) or LUAHOST_DIRECT. */
static int
hs_route(struct handshake *h, const struct socks_req *req, const char *dest, int *server)
{
    uint8_t reply[10];
    char why[200], msg[SOCKS_DEST_MAX + 220];
    struct luahost_req r = {.host = req->host,
                            .port = req->port,
                            .atyp = socks_atyp_name(req->atyp),
                            .addr = req->atyp == SOCKS_ATYP_DOMAIN ? NULL : req->host,
                            .src = h->peer};
    int route = luahost_route(h->c->lua, &r, server, why, sizeof(why));

    if (route == LUAHOST_BLOCK)
        metrics.routes_block++;
    else if (route == LUAHOST_DIRECT)
        metrics.routes_direct++;
    else
        metrics.routes_tunnel++;
    if (route != LUAHOST_BLOCK) return route;
    snprintf(msg, sizeof(msg), "%s blocked%s%s", dest, why[0] ? ": " : "", why);
    if (h->proto == HS_HTTP) {
        hs_refuse_http(h, 403, LOG_INFO, msg);
    } else if (h->proto == HS_SOCKS4) {
        socks_encode_v4_reply(reply, 0);
        hs_refuse_at(h, reply, 8, LOG_INFO, msg);
    } else {
        socks_encode_reply(reply, SOCKS_REP_NOT_ALLOWED);
        hs_refuse_at(h, reply, sizeof(reply), LOG_INFO, msg);
    }
    return LUAHOST_BLOCK;
}

/* Hands the app's socket over with bytes (n) as its first: prepended to the bufferevent's input,
 * which reads on from here until the session or relay watches the socket itself (a socket
 * bufferevent's input takes appends only from its own reads: its end is frozen). 0, or -1 with h
 * freed. */
static int
hs_hand_over(struct handshake *h, const uint8_t *bytes, size_t n, const char *dest)
{
    struct bufferevent *bev = h->bev;

    if (n > 0 && evbuffer_prepend(bufferevent_get_input(bev), bytes, n) == -1) {
        log_msg(LOG_ERROR, "[sock] - %s = %u out of memory", dest, session_count());
        hs_free(h);
        return -1;
    }
    bufferevent_enable(bev, EV_READ);
    hs_release(h);
    return 0;
}

/* A CONNECT (SOCKS5, SOCKS4, HTTP): answered at once, then a session or a direct relay. */
static void
hs_connect(struct handshake *h, const uint8_t *raw, size_t rawlen, const struct socks_req *req)
{
    struct client *c = h->c;
    struct bufferevent *bev = h->bev;
    uint8_t reply[10];
    char dest[SOCKS_DEST_MAX];
    int server, route;

    socks_format_dest(req, dest, sizeof(dest));
    route = hs_route(h, req, dest, &server);
    if (route == LUAHOST_BLOCK) return;
    /* Eager: the reply leaves before the far side is reached, with any reply not yet written
     * (a greeting and its request that came together are answered in one write). */
    if (h->proto == HS_HTTP) {
        static const char established[] = "HTTP/1.1 200 Connection established\r\n\r\n";
        hs_reply(h, (const uint8_t *)established, sizeof(established) - 1);
    } else if (h->proto == HS_SOCKS4) {
        socks_encode_v4_reply(reply, 1);
        hs_reply(h, reply, 8);
    } else {
        socks_encode_reply(reply, SOCKS_REP_SUCCEEDED);
        hs_reply(h, reply, sizeof(reply));
    }
    writethrough_write(bev, h->out, h->nout);
    /* Bytes the app sent after its request are the session's first. */
    if (hs_hand_over(h, h->buf, h->len, dest) == -1) return;
    if (route == LUAHOST_DIRECT) {
        direct_open(c->dns, bev, req, c->cfg->connect_sec);
        return;
    }
    pool_open(choose_pool(c, server, dest), bev, raw, rawlen, dest);
}

/* A request to forward (GET http://host/path): no answer of ours, the destination's. Its head
 * goes on in origin form, with what of its body came along; the rest of the body follows, and
 * what the app sends after it is not carried (one request per session: Connection: close). */
static void
hs_forward(struct handshake *h, const struct httpreq *req, size_t used)
{
    struct client *c = h->c;
    struct bufferevent *bev = h->bev;
    uint8_t raw[SOCKS_REQ_MAX], head[HS_BUF_HTTP + 512];
    char dest[SOCKS_DEST_MAX];
    size_t n, body_now;
    int server, route;

    socks_format_dest(&req->dest, dest, sizeof(dest));
    n = httpreq_origin_head(h->buf, used, req, head, sizeof(head));
    if (n == 0) {
        hs_refuse_http(h, 431, LOG_WARN, "request head too long to forward");
        return;
    }
    route = hs_route(h, &req->dest, dest, &server);
    if (route == LUAHOST_BLOCK) return;
    body_now = h->len - used < (size_t)req->body ? h->len - used : (size_t)req->body;
    if (n + body_now > sizeof(head)) body_now = sizeof(head) - n;
    memcpy(head + n, h->buf + used, body_now);
    if (hs_hand_over(h, head, n + body_now, dest) == -1) return;
    if (route == LUAHOST_DIRECT) {
        direct_open_http(c->dns, bev, &req->dest, c->cfg->connect_sec,
                         req->body - (int64_t)body_now);
        return;
    }
    pool_open_http(choose_pool(c, server, dest), bev, raw, socks_encode_request(raw, &req->dest),
                   dest, req->body - (int64_t)body_now);
}

/* Compares a and b in time that does not depend on where they differ. */
static int
same_secret(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char pa[256] = {0}, pb[256] = {0};

    memcpy(pa, a, la < sizeof(pa) ? la : sizeof(pa) - 1);
    memcpy(pb, b, lb < sizeof(pb) ? lb : sizeof(pb) - 1);
    return (CRYPTO_memcmp(pa, pb, sizeof(pa)) == 0) & (la == lb);
}

static int hs_parse_socks5(struct handshake *h);
static void hs_udp(struct handshake *h, const struct socks_req *req);

/* SOCKS4/4a: one request, no greeting, no password. */
static int
hs_parse_socks4(struct handshake *h)
{
    uint8_t refused[8], raw[SOCKS_REQ_MAX];
    struct socks_req req;
    const char *err = "";
    char why[160];
    size_t used;
    int rc = socks_parse_v4(h->buf, h->len, &used, &req, &err);

    socks_encode_v4_reply(refused, 0);
    if (rc == SOCKS_NEED) return 0;
    if (rc == SOCKS_ERR) {
        snprintf(why, sizeof(why), "bad SOCKS4 request: %s", err);
        hs_refuse(h, refused, sizeof(refused), why);
        return 1;
    }
    if (h->c->user[0] != 0) {
        hs_refuse(h, refused, sizeof(refused),
                  "SOCKS4 refused: -socks.auth asks for a password, which SOCKS4 cannot send");
        return 1;
    }
    if (req.cmd != SOCKS_CMD_CONNECT) {
        snprintf(why, sizeof(why), "SOCKS4 command %u is not supported (only CONNECT)", req.cmd);
        hs_refuse(h, refused, sizeof(refused), why);
        return 1;
    }
    if (req.atyp == SOCKS_ATYP_DOMAIN && socks_check_name(req.host, &err) == -1) {
        snprintf(why, sizeof(why), "bad SOCKS4a request: invalid destination: %s", err);
        hs_refuse(h, refused, sizeof(refused), why);
        return 1;
    }
    hs_consume(h, used);
    hs_connect(h, raw, socks_encode_request(raw, &req), &req);
    return 1;
}

/* HTTP: one request head, CONNECT or a request to forward. */
static int
hs_parse_http(struct handshake *h)
{
    struct client *c = h->c;
    struct httpreq req;
    uint8_t raw[SOCKS_REQ_MAX];
    const char *err = "";
    size_t used;
    int rc = httpreq_parse(h->buf, h->len, &used, &req, &err);

    if (rc == HTTPREQ_NEED) return 0;
    if (rc != HTTPREQ_OK) {
        hs_refuse_http(h, rc, LOG_WARN, err);
        return 1;
    }
    if (c->user[0] != 0 &&
        !(req.has_auth & same_secret(req.user, c->user) & same_secret(req.pass, c->pass))) {
        hs_refuse_http(h, 407, LOG_WARN,
                       req.has_auth ? "login refused" : "Proxy-Authorization: Basic required");
        return 1;
    }
    if (req.absolute) {
        hs_forward(h, &req, used);
        return 1;
    }
    hs_consume(h, used);
    hs_connect(h, raw, socks_encode_request(raw, &req.dest), &req.dest);
    return 1;
}

/* Parses the messages the buffer holds, in order. Returns 1 once h is gone (handed over, or
 * refused and closing), 0 while more is needed. */
static int
hs_parse(struct handshake *h)
{
    if (h->proto == HS_UNKNOWN) {
        uint8_t first = h->buf[0];
        if (first == 5)
            h->proto = HS_SOCKS5;
        else if (first == 4)
            h->proto = HS_SOCKS4;
        else if (first >= 'A' && first <= 'Z' && (h->buf = malloc(HS_BUF_HTTP)) != NULL) {
            memcpy(h->buf, h->small, h->len);
            h->cap = HS_BUF_HTTP;
            h->proto = HS_HTTP;
        } else if (first >= 'A' && first <= 'Z') {
            h->buf = h->small;
            hs_refuse(h, NULL, 0, "out of memory for an HTTP request head");
            return 1;
        } else {
            char why[96];
            snprintf(why, sizeof(why), "not SOCKS5, SOCKS4 or HTTP (first byte 0x%02x)", first);
            hs_refuse(h, NULL, 0, why);
            return 1;
        }
    }
    if (h->proto == HS_SOCKS4) return hs_parse_socks4(h);
    if (h->proto == HS_HTTP) return hs_parse_http(h);
    return hs_parse_socks5(h);
}

/* The pool a UDP association's datagram to dest goes through (the route hook's server). */
static struct pool *
udp_pool_for(void *arg, int server, const char *dest)
{
    struct client *c = arg;

    return choose_pool(c, server >= 0 && server < c->npools ? server : 0, dest);
}

/* UDP ASSOCIATE: answered at once with the relay's address; the association owns the app's
 * TCP connection from here (its end ends the association). */
static void
hs_udp(struct handshake *h, const struct socks_req *req)
{
    struct bufferevent *bev = h->bev;
    struct sockaddr_storage bound;
    uint8_t reply[22];
    char why[160], where[64];
    size_t n;

    if (udpassoc_open(&h->c->udp_env, bev, h->peer, req, &bound, why, sizeof(why)) == -1) {
        char msg[200];
        snprintf(msg, sizeof(msg), "udp associate: %s", why);
        socks_encode_reply(reply, SOCKS_REP_GENERAL_FAILURE);
        hs_refuse(h, reply, 10, msg);
        return;
    }
    socks_encode_bound(reply, &n, (struct sockaddr *)&bound);
    hs_reply(h, reply, n);
    writethrough_write(bev, h->out, h->nout);
    addr_format((struct sockaddr *)&bound, where, sizeof(where));
    log_msg(LOG_INFO, "[socks] %s: udp associate, relay %s", h->peer, where);
    hs_release(h);
}

/* SOCKS5: greeting, login (-socks.auth), request. */
static int
hs_parse_socks5(struct handshake *h)
{
    struct client *c = h->c;
    static const uint8_t no_method[2] = {5, 0xff}, ok[2] = {5, 0}, want_login[2] = {5, 2};
    static const uint8_t login_ok[2] = {1, 0}, login_bad[2] = {1, 1};
    uint8_t reply[10], raw[SOCKS_REQ_MAX];
    struct socks_req req;
    char user[256], pass[256];
    const char *err = "";
    size_t used;
    int rc, methods, need_login = c->user[0] != 0;
    char why[160];

    if (h->state == HS_GREETING) {
        rc = socks_parse_greeting(h->buf, h->len, &used, &methods, &err);
        if (rc == SOCKS_NEED) return 0;
        if (rc == SOCKS_ERR) {
            snprintf(why, sizeof(why), "bad greeting: %s", err);
            hs_refuse(h, no_method, sizeof(no_method), why);
            return 1;
        }
        if (!(methods & (need_login ? SOCKS_METHOD_USERPASS : SOCKS_METHOD_NOAUTH))) {
            hs_refuse(h, no_method, sizeof(no_method),
                      need_login
                          ? "greeting offers no acceptable method (username/password required)"
                          : "greeting offers no acceptable method (no-auth)");
            return 1;
        }
        hs_consume(h, used);
        hs_reply(h, need_login ? want_login : ok, 2);
        h->state = need_login ? HS_AUTH : HS_REQUEST;
    }
    if (h->state == HS_AUTH) {
        rc = socks_parse_auth(h->buf, h->len, &used, user, pass, &err);
        if (rc == SOCKS_NEED) return 0;
        if (rc == SOCKS_ERR || !(same_secret(user, c->user) & same_secret(pass, c->pass))) {
            snprintf(why, sizeof(why), "login refused%s%s", rc == SOCKS_ERR ? ": " : "",
                     rc == SOCKS_ERR ? err : "");
            hs_refuse(h, login_bad, sizeof(login_bad), why);
            return 1;
        }
        hs_consume(h, used);
        hs_reply(h, login_ok, sizeof(login_ok));
        h->state = HS_REQUEST;
    }
    rc = socks_parse_request(h->buf, h->len, &used, &req, &err);
    if (rc == SOCKS_NEED) return 0;
    if (rc == SOCKS_ERR) {
        snprintf(why, sizeof(why), "bad request: %s", err);
        socks_encode_reply(reply, strstr(err, "address type") != NULL
                                      ? SOCKS_REP_ADDRESS_NOT_SUPPORTED
                                      : SOCKS_REP_GENERAL_FAILURE);
        hs_refuse(h, reply, sizeof(reply), why);
        return 1;
    }
    if (req.atyp == SOCKS_ATYP_DOMAIN && socks_check_name(req.host, &err) == -1) {
        snprintf(why, sizeof(why), "bad request: invalid destination: %s", err);
        socks_encode_reply(reply, SOCKS_REP_HOST_UNREACHABLE); /* no such name can be reached */
        hs_refuse(h, reply, sizeof(reply), why);
        return 1;
    }
    if (req.cmd == SOCKS_CMD_UDP) {
        hs_udp(h, &req);
        return 1;
    }
    if (req.cmd != SOCKS_CMD_CONNECT) {
        snprintf(why, sizeof(why), "command %u is not supported (CONNECT and UDP ASSOCIATE only)",
                 req.cmd);
        socks_encode_reply(reply, SOCKS_REP_COMMAND_NOT_SUPPORTED);
        hs_refuse(h, reply, sizeof(reply), why);
        return 1;
    }
    memcpy(raw, h->buf, used); /* the request's bytes are the session's header */
    hs_consume(h, used);
    hs_connect(h, raw, used, &req);
    return 1;
}

static void
hs_readable(evutil_socket_t fd, short what, void *arg)
{
    struct handshake *h = arg;
    struct timeval now, left;
    ssize_t got;

    if (what & EV_TIMEOUT) {
        hs_timeout(h);
        return;
    }
    got = recv(fd, h->buf + h->len, h->cap - h->len, 0);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (got <= 0) {
        if (got < 0) log_msg(LOG_DEBUG, "[socks] %s: handshake: %s", h->peer, strerror(errno));
        hs_free(h);
        return;
    }
    h->len += (size_t)got;
    if (hs_parse(h)) return;
    if (h->nout > 0) {
        writethrough_write(h->bev, h->out, h->nout);
        h->nout = 0;
    }
    /* A persistent event's timeout starts again at each read: put the handshake's own end back
     * (a client sending a byte a second must not keep its slot for minutes). */
    event_base_gettimeofday_cached(event_get_base(h->rev), &now);
    if (evutil_timercmp(&h->deadline, &now, <=)) {
        hs_timeout(h);
        return;
    }
    evutil_timersub(&h->deadline, &now, &left);
    event_add(h->rev, &left);
}

/* TCP_NODELAY is set on the listener; Linux copies it to each accepted socket, which saves a
 * setsockopt per session. Checked once, on the first socket, for kernels that do not. */
static void
tune_accepted(struct client *c, int fd)
{
    int on = 0;
    socklen_t len = sizeof(on);

    if (c->nodelay == 0)
        c->nodelay = getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, &len) == 0 && on ? 1 : -1;
    if (c->nodelay == -1) addr_tune_socket(fd);
}

static void
accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct client *c = arg;
    struct handshake *h = calloc(1, sizeof(*h));
    struct timeval tv = {c->cfg->socks_handshake_sec, 0};

    (void)lis;
    (void)salen;
    if (h == NULL) {
        evutil_closesocket(fd);
        return;
    }
    tune_accepted(c, fd);
    h->c = c;
    h->buf = h->small;
    h->cap = sizeof(h->small);
    addr_format(sa, h->peer, sizeof(h->peer));
    h->bev = bufferevent_socket_new(c->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (h->bev == NULL) {
        evutil_closesocket(fd);
        free(h);
        return;
    }
    h->rev = event_new(c->base, fd, EV_READ | EV_PERSIST, hs_readable, h);
    if (h->rev == NULL) {
        hs_free(h);
        return;
    }
    /* The bufferevent's EV_WRITE is on from creation, its event added only when a reply does
     * not leave at once; its read stays off until the hand-over. */
    bufferevent_setcb(h->bev, NULL, NULL, hs_event_cb, h);
    event_base_gettimeofday_cached(c->base, &h->deadline);
    evutil_timeradd(&h->deadline, &tv, &h->deadline);
    event_add(h->rev, &tv);
}

static void
resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;

    (void)fd;
    (void)what;
    if (c->lis != NULL) evconnlistener_enable(c->lis);
}

static void
accept_error_cb(struct evconnlistener *lis, void *arg)
{
    struct client *c = arg;

    addr_listener_pause(lis, c->resume);
}

/* Reads -socks.auth: one line "user:password". */
static int
load_login(struct client *c, const char *path, char *err, size_t errlen)
{
    char line[600], *colon;
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL) {
        snprintf(err, errlen, "tunnels: -socks.auth: %s: %s", path, strerror(errno));
        return -1;
    }
    if (fgets(line, sizeof(line), f) == NULL) line[0] = 0;
    fclose(f);
    n = strcspn(line, "\r\n");
    line[n] = 0;
    colon = strchr(line, ':');
    if (colon == NULL || colon == line || colon - line > 255 || strlen(colon + 1) > 255) {
        snprintf(err, errlen,
                 "tunnels: -socks.auth: %s: the first line must be user:password "
                 "(each 1-255 bytes, the password may be empty)",
                 path);
        return -1;
    }
    /* Lengths checked above: each fits its 256-byte field with the NUL. */
    memcpy(c->user, line, (size_t)(colon - line));
    c->user[colon - line] = 0;
    memcpy(c->pass, colon + 1, strlen(colon + 1) + 1);
    return 0;
}

/* Per server of -server.addr (at most CONFIG_SERVERS_MAX: a bounded label set). */
static void
client_metrics(struct evbuffer *out, void *arg)
{
    struct client *c = arg;
    char name[160];
    int i;

    evbuffer_add_printf(out,
                        "# HELP tunnels_udp_associations Client: SOCKS5 UDP associations open "
                        "now.\n# TYPE tunnels_udp_associations gauge\ntunnels_udp_associations "
                        "%u\n# HELP tunnels_udp_associations_opened_total Client: SOCKS5 UDP "
                        "associations opened.\n# TYPE tunnels_udp_associations_opened_total "
                        "counter\ntunnels_udp_associations_opened_total %llu\n",
                        udpassoc_count(), (unsigned long long)metrics.udp_associations_opened);
    evbuffer_add_printf(out, "# HELP tunnels_server_up Client: 1 while a server of -server.addr "
                             "is not marked down.\n# TYPE tunnels_server_up gauge\n");
    for (i = 0; i < c->npools; i++) {
        metrics_label(pool_label(c->pools[i]), name, sizeof(name));
        evbuffer_add_printf(out, "tunnels_server_up{server=\"%s\"} %d\n", name,
                            !pool_is_down(c->pools[i]));
    }
    evbuffer_add_printf(out, "# HELP tunnels_server_connections Client: pool connections to a "
                             "server, open now.\n# TYPE tunnels_server_connections gauge\n");
    for (i = 0; i < c->npools; i++) {
        metrics_label(pool_label(c->pools[i]), name, sizeof(name));
        evbuffer_add_printf(out, "tunnels_server_connections{server=\"%s\"} %u\n", name,
                            pool_connections(c->pools[i]));
    }
    evbuffer_add_printf(out, "# HELP tunnels_server_rtt_seconds Client: the least PING round "
                             "trip seen on a server's connections.\n"
                             "# TYPE tunnels_server_rtt_seconds gauge\n");
    for (i = 0; i < c->npools; i++) {
        int64_t us = pool_min_rtt_us(c->pools[i]);
        if (us <= 0) continue;
        metrics_label(pool_label(c->pools[i]), name, sizeof(name));
        evbuffer_add_printf(out, "tunnels_server_rtt_seconds{server=\"%s\"} %.6f\n", name,
                            (double)us / 1e6);
    }
}

struct client *
client_new(struct event_base *base, const struct config *cfg, struct luahost *lua, char *err,
           size_t errlen)
{
    struct client *c = calloc(1, sizeof(*c));
    struct sockaddr_storage ss;
    socklen_t sslen;
    char why[256];
    int tls = cfg->lower == LOWER_TLS, i;

    if (c == NULL) return NULL;
    c->base = base;
    c->cfg = cfg;
    c->lua = lua;
    if (tls) {
        c->ctx = tls_client_ctx(cfg, err, errlen);
        if (c->ctx == NULL) goto err;
        pool_set_session_cb(c->ctx);
    }
    if (cfg->socks_auth[0] != 0 && load_login(c, cfg->socks_auth, err, errlen) == -1) goto err;
    for (i = 0; i < cfg->nservers; i++) {
        if (addr_resolve(cfg->servers[i].addr, cfg->server_family, ADDR_TO_DIAL, &ss, &sslen, why,
                         sizeof(why)) == -1) {
            snprintf(err, errlen, "tunnels: -server.addr: %s", why);
            goto err;
        }
        c->pools[i] = pool_new(base, cfg, lua, c->ctx, cfg->servers[i].name, cfg->servers[i].addr,
                               (struct sockaddr *)&ss, sslen);
        if (c->pools[i] == NULL) {
            snprintf(err, errlen, "tunnels: out of memory");
            goto err;
        }
        c->npools = i + 1;
    }
    c->dns = addr_dns_new(base);
    if (c->dns == NULL) {
        snprintf(err, errlen, "tunnels: cannot set up DNS");
        goto err;
    }
    c->udp_env.base = base;
    c->udp_env.cfg = cfg;
    c->udp_env.lua = lua;
    c->udp_env.dns = c->dns;
    c->udp_env.pool_for = udp_pool_for;
    c->udp_env.arg = c;
    if (addr_resolve(cfg->client_addr, cfg->client_family, ADDR_TO_LISTEN_ON, &ss, &sslen, why,
                     sizeof(why)) == -1) {
        snprintf(err, errlen, "tunnels: -client.addr: %s", why);
        goto err;
    }
    if (!addr_is_loopback((struct sockaddr *)&ss)) {
        if (!cfg->client_public) {
            snprintf(err, errlen,
                     "tunnels: -client.addr: %s is not a loopback address: anyone who reaches it "
                     "could use the tunnel; add -client.public to mean it",
                     cfg->client_addr);
            goto err;
        }
        log_msg(LOG_WARN,
                "[main] the SOCKS5 listener %s is not on loopback (-client.public): "
                "anyone who reaches it can use the tunnel",
                cfg->client_addr);
    }
    c->resume = evtimer_new(base, resume_cb, c);
    c->lis = evconnlistener_new_bind(
        base, accept_cb, c, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 1024,
        (struct sockaddr *)&ss, (int)sslen);
    if (c->lis == NULL || c->resume == NULL) {
        snprintf(err, errlen, "tunnels: -client.addr: cannot listen on %s: %s", cfg->client_addr,
                 strerror(errno));
        goto err;
    }
    evconnlistener_set_error_cb(c->lis, accept_error_cb);
    addr_tune_socket(evconnlistener_get_fd(c->lis));
    log_msg(LOG_INFO, "[main] client: SOCKS5 on %s, server %s over %s", cfg->client_addr,
            cfg->server_addr,
            strcmp(cfg->eagersocks_net, "remux") == 0 ? cfg->remux_net : cfg->eagersocks_net);
    metrics_add_source(client_metrics, c);
    return c;
err:
    client_free(c);
    return NULL;
}

void
client_stop_accepting(struct client *c)
{
    /* Close the socket: a disabled listener still completes handshakes in the kernel. */
    if (c->lis != NULL) evconnlistener_free(c->lis);
    c->lis = NULL;
    event_del(c->resume);
}

void
client_close_all(struct client *c)
{
    int i;

    direct_close_all();
    udpassoc_close_all();
    for (i = 0; i < c->npools; i++)
        pool_close_all(c->pools[i]);
}

void
client_free(struct client *c)
{
    int i;

    if (c == NULL) return;
    metrics_remove_source(client_metrics, c);
    if (c->lis != NULL) evconnlistener_free(c->lis);
    if (c->resume != NULL) event_free(c->resume);
    direct_close_all();
    udpassoc_close_all();
    for (i = 0; i < c->npools; i++)
        pool_free(c->pools[i]);
    if (c->dns != NULL) evdns_base_free(c->dns, 1);
    if (c->ctx != NULL) SSL_CTX_free(c->ctx);
    free(c);
}
