/* server.c: accepts lower connections and opens sessions to destinations. The destination's
 * bufferevent exists from the session's first frame (its socket comes later), so data that
 * arrives while the name resolves or the socket connects waits in its output, bounded by the
 * session's window. A DNS lookup is owned by a small `lookup` object that the session cancels
 * if it closes first. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "addr.h"
#include "account.h"
#include "array.h"
#include "clock.h"
#include "frame.h"
#include "log.h"
#include "metrics.h"
#include "luahost.h"
#include "mux.h"
#include "session.h"
#include "socks.h"
#include "tls.h"
#include "udprelay.h"
#include "udpsess.h"

#define TENANT_BUCKETS 256
/* How long a client certificate whose connection was closed for abandoning sessions (opening
 * and resetting them, mux_abandoned) is refused new connections: without it, reconnecting
 * would make the close a mere pause in the flood. */
#define PENALTY_SEC 10
#define PENALTY_SEC_STR "10"
/* Addresses under that penalty too, at most: when full, the one whose penalty ends first goes. */
#define PENALTY_ADDRS_MAX 256

/* One client certificate, while it has connections or orphaned sessions: what all of them hold
 * (its account) and how many connections it has. Keyed by the certificate's SHA-256. */
struct tenant {
    struct account acct; /* first: a tenant is found from its account */
    unsigned char fp[32];
    unsigned conns;
    int64_t penalty_until_us;    /* a connection of it was closed for abandoning sessions: none
                                    is taken before this (mux_abandoned) */
    struct tenant *penalty_next; /* in the server's list while penalized (holding a reference) */
    int penalized;
    struct tenant *next, **pprev; /* in its bucket; pprev NULL once the server is gone */
};

struct server {
    struct event_base *base;
    const struct config *cfg;
    struct luahost *lua;
    SSL_CTX *ctx; /* NULL: plain TCP */
    struct evdns_base *dns;
    struct udprelay_env udp_env; /* what a UDP session asks of the server: its DNS, its ACL */
    struct evconnlistener *lis;
    struct event *resume;
    struct srv_conn *conns;
    size_t n, cap;
    size_t pending;       /* connections still in their TLS handshake */
    unsigned session_cap; /* sessions open at once, each a descriptor (see session_cap()) */
    unsigned cert_cap;    /* sessions open at once on the connections of one certificate */
    struct tenant *tenants[TENANT_BUCKETS];
    struct tenant *penalized; /* tenants under a penalty, each holding a reference to itself */
    /* Addresses (srv_conn.peer keys) that carried a connection closed for abandoning sessions:
     * refused at accept until the penalty ends. Refusing them after the handshake cost the
     * server a full handshake (about 1.5 ms of CPU) for every reconnect of the certificate. */
    struct {
        unsigned char key[16];
        int64_t until_us;
    } penalty_addrs[PENALTY_ADDRS_MAX];
    size_t n_penalty_addrs;
    int draining;
};

/* What the server knows of one lower connection. */
struct srv_conn {
    struct mux *m;
    unsigned char peer[16]; /* whose it is before a certificate says: the peer's address, an
                               IPv4 one v4-mapped, an IPv6 one cut to its /64 (one host's
                               share: a /64 is what one subscriber is given) */
};

struct lookup {
    struct server *srv;
    struct session *s;
    struct evdns_getaddrinfo_request *req;
    int in_call, done;
    char host[256];
    unsigned port;
    const struct mux *m; /* the session's connection (alive while the session waits here) */
};

/* The route hook's answer for a destination asked for on m: 1 to allow, 0 to deny (why filled
 * in). The hook learns who asks: the connection, its peer and its client certificate. */
static int
allowed(struct server *srv, const struct mux *m, const char *host, unsigned port, const char *atyp,
        const char *addr, char *why, size_t whylen)
{
    char src[16];
    struct luahost_req r = {.host = host,
                            .port = port,
                            .atyp = atyp,
                            .addr = addr,
                            .src = src,
                            .peer = mux_peer(m),
                            .subject = mux_subject(m),
                            .fingerprint = mux_fingerprint(m)};
    int server;

    snprintf(src, sizeof(src), "%08x", mux_id(m));
    return luahost_route(srv->lua, &r, &server, why, whylen) == LUAHOST_ALLOW;
}

/* The ACL for a UDP session's destination (udprelay.c): as allowed(), the request filled in
 * by the relay (its net "udp"). */
static int
udp_allowed(void *arg, const struct mux *m, const struct luahost_req *q, char *why, size_t whylen)
{
    struct server *srv = arg;
    struct luahost_req r = *q;
    char src[16];
    int server;

    snprintf(src, sizeof(src), "%08x", mux_id(m));
    r.src = src;
    r.peer = mux_peer(m);
    r.subject = mux_subject(m);
    r.fingerprint = mux_fingerprint(m);
    return luahost_route(srv->lua, &r, &server, why, whylen) == LUAHOST_ALLOW;
}

static void
connect_to(struct session *s, const struct sockaddr *sa, socklen_t len)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    char why[128];

    if (fd == -1) {
        snprintf(why, sizeof(why), "socket: %s", strerror(errno));
        session_fail(s, FRAME_RST_ABORTED, why);
        return;
    }
    addr_tune_socket(fd);
    addr_keepalive(fd);
    addr_limit_unsent(fd);
    session_connect_fd(s, fd, sa, len);
}

static void
lookup_cancel(void *arg)
{
    struct lookup *l = arg;

    l->s = NULL;
    if (l->req != NULL) evdns_getaddrinfo_cancel(l->req);
}

/* A name's address: the route hook is asked again on it (a name may point anywhere, the
 * server's own loopback included), then the session connects or fails. */
static void
connect_name(struct server *srv, struct session *s, const struct mux *m, const char *host,
             unsigned port, const struct sockaddr *sa, socklen_t len)
{
    char addr[INET6_ADDRSTRLEN], why[160], msg[200];
    const void *ip = sa->sa_family == AF_INET6
                         ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
                         : (const void *)&((const struct sockaddr_in *)sa)->sin_addr;

    inet_ntop(sa->sa_family, ip, addr, sizeof(addr));
    if (allowed(srv, m, host, port, "domain", addr, why, sizeof(why))) {
        connect_to(s, sa, len);
    } else {
        snprintf(msg, sizeof(msg), "denied: %s", why[0] ? why : "by the route hook");
        metrics.acl_denied++;
        session_fail(s, FRAME_RST_POLICY, msg);
    }
}

static void
lookup_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct lookup *l = arg;
    struct session *s = l->s;

    l->req = NULL;
    if (s != NULL) {
        session_on_close(s, NULL, NULL);
        if (result != 0 || res == NULL) metrics.dns_failed++;
        if (result != 0 || res == NULL)
            session_fail(s, FRAME_RST_DNS,
                         evutil_gai_strerror(result != 0 ? result : EVUTIL_EAI_FAIL));
        else
            connect_name(l->srv, s, l->m, l->host, l->port, res->ai_addr,
                         (socklen_t)res->ai_addrlen);
    }
    if (res != NULL) evutil_freeaddrinfo(res);
    if (l->in_call)
        l->done = 1; /* evdns answered before evdns_getaddrinfo returned: it frees l */
    else
        free(l);
}

static void
resolve(struct server *srv, struct session *s, const struct mux *m, const struct socks_req *req)
{
    struct evutil_addrinfo hints;
    struct lookup *l;
    struct evdns_getaddrinfo_request *r;
    struct sockaddr_storage ss;
    uint8_t ip[16];
    int family = 0;
    char port[8];

    /* A name that is an address literal (curl --socks5-hostname with http://10.0.0.1/) needs no
     * resolver: the same route check and connect, without evdns's lookup, its allocations and
     * its own parse of the literal (sscanf: 1 % of the server at 9,000 sessions/s). */
    if (inet_pton(AF_INET, req->host, ip) == 1)
        family = AF_INET;
    else if (inet_pton(AF_INET6, req->host, ip) == 1)
        family = AF_INET6;
    if (family != 0) {
        connect_name(srv, s, m, req->host, req->port, (struct sockaddr *)&ss,
                     addr_sockaddr(family, ip, req->port, &ss));
        return;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        session_fail(s, FRAME_RST_ABORTED, "out of memory");
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    snprintf(port, sizeof(port), "%u", req->port);
    l->s = s;
    l->srv = srv;
    snprintf(l->host, sizeof(l->host), "%s", req->host);
    l->m = m;
    l->port = req->port;
    session_on_close(s, lookup_cancel, l);
    l->in_call = 1;
    r = evdns_getaddrinfo(srv->dns, req->host, port, &hints, lookup_cb, l);
    l->in_call = 0;
    if (l->done)
        free(l);
    else
        l->req = r;
}

static void
tenant_release(struct account *a, void *arg)
{
    struct tenant *t = (struct tenant *)a;

    (void)arg;
    if (t->pprev != NULL) {
        *t->pprev = t->next;
        if (t->next != NULL) t->next->pprev = t->pprev;
    }
    account_fini(&t->acct);
    free(t);
}

/* The tenant of certificate fp, made when new; NULL when out of memory. */
static struct tenant *
tenant_get(struct server *srv, const unsigned char fp[32])
{
    struct tenant **b = &srv->tenants[fp[0]], *t;

    for (t = *b; t != NULL; t = t->next)
        if (memcmp(t->fp, fp, 32) == 0) return t;
    t = calloc(1, sizeof(*t));
    if (t == NULL) return NULL;
    account_init(&t->acct, NULL, (int64_t)srv->cfg->cert_buffer_max_mib << 20,
                 "-tls.client.buffer.max.mib");
    t->acct.release = tenant_release;
    memcpy(t->fp, fp, 32);
    t->next = *b;
    if (t->next != NULL) t->next->pprev = &t->next;
    t->pprev = b;
    *b = t;
    return t;
}

/* Refuses t new connections for PENALTY_SEC; the tenant stays (with its penalty) until then
 * even with no connection left. */
static void
penalize(struct server *srv, struct tenant *t)
{
    t->penalty_until_us = clock_now_us() + (int64_t)PENALTY_SEC * 1000000;
    if (t->penalized) return;
    t->penalized = 1;
    account_ref(&t->acct);
    t->penalty_next = srv->penalized;
    srv->penalized = t;
}

enum penalties_which {
    PENALTIES_OVER, /* those whose time is up */
    PENALTIES_ALL,  /* every one (the server is going) */
};

/* Lets go of penalized tenants. */
static void
penalties_expire(struct server *srv, enum penalties_which which)
{
    struct tenant **pp = &srv->penalized, *t;
    int64_t now = clock_now_us();

    while ((t = *pp) != NULL) {
        if (which == PENALTIES_OVER && now < t->penalty_until_us) {
            pp = &t->penalty_next;
            continue;
        }
        *pp = t->penalty_next;
        t->penalized = 0;
        account_unref(&t->acct);
    }
}

/* The address key (srv_conn.peer) carried a connection closed for abandoning its sessions. */
static void
penalize_addr(struct server *srv, const unsigned char key[16])
{
    int64_t until = clock_now_us() + (int64_t)PENALTY_SEC * 1000000;
    size_t i, slot = srv->n_penalty_addrs;

    for (i = 0; i < srv->n_penalty_addrs; i++) {
        if (memcmp(srv->penalty_addrs[i].key, key, 16) == 0) {
            srv->penalty_addrs[i].until_us = until;
            return;
        }
    }
    if (slot == PENALTY_ADDRS_MAX) { /* full: the one that ends first makes room */
        slot = 0;
        for (i = 1; i < PENALTY_ADDRS_MAX; i++)
            if (srv->penalty_addrs[i].until_us < srv->penalty_addrs[slot].until_us) slot = i;
    } else {
        srv->n_penalty_addrs++;
    }
    memcpy(srv->penalty_addrs[slot].key, key, 16);
    srv->penalty_addrs[slot].until_us = until;
}

/* 1 while key is under a penalty; drops those that ended. */
static int
addr_penalized(struct server *srv, const unsigned char key[16])
{
    int64_t now = clock_now_us();
    size_t i = 0;
    int hit = 0;

    while (i < srv->n_penalty_addrs) {
        if (now >= srv->penalty_addrs[i].until_us) {
            srv->penalty_addrs[i] = srv->penalty_addrs[--srv->n_penalty_addrs];
            continue;
        }
        if (memcmp(srv->penalty_addrs[i].key, key, 16) == 0) hit = 1;
        i++;
    }
    return hit;
}

/* m's client certificate's tenant, or NULL (an open server's client, or not known yet). */
static struct tenant *
tenant_of(struct mux *m)
{
    struct account *p = mux_account(m)->parent;

    return p == account_process() ? NULL : (struct tenant *)p;
}

/* A session refused (logged by the caller): its first frame's rest dropped, RESET(reason) to
 * the peer, and counted as abandoned against its connection (mux_abandoned). */
static void
refuse_open(struct mux *m, uint16_t sid, struct evbuffer *in, size_t len, uint8_t reason)
{
    struct frame_ctl rst = {.type = FRAME_CTL_RESET, .sid = sid, .reason = reason};

    evbuffer_drain(in, len);
    mux_send_ctl(m, &rst);
    mux_abandoned(m);
}

/* Sessions open now, UDP ones counted twice (a socket per address family they use). */
static unsigned
sessions_held(void)
{
    return session_count() + 2 * udpsess_count();
}

/* 1 when a new session on m (dest, for the log) would pass a limit: the server's sessions, its
 * certificate's, a budget, the connection's; logged. */
static int
over_limits(struct server *srv, struct mux *m, const char *dest)
{
    if (sessions_held() >= srv->session_cap) {
        log_msg(LOG_WARN,
                "[sock] - %s = %u refused: the server holds %u sessions, its most "
                "(-server.sessions.max)",
                dest, sessions_held(), srv->session_cap);
        return 1;
    }
    /* Sessions open on the connections of its certificate, orphans included (an open server's
     * clients are told apart by connection only: -remux.sessions.max below). */
    if (tenant_of(m) != NULL && tenant_of(m)->acct.sessions >= srv->cert_cap) {
        log_msg(LOG_WARN,
                "[sock] - %s = %u refused: its client certificate holds %u sessions "
                "(-tls.client.sessions.max) on %08x",
                dest, sessions_held(), srv->cert_cap, mux_id(m));
        return 1;
    }
    /* A new session's first window is charged whole at once (the peer may send it before any
     * byte drains): one that does not fit the connection's, the certificate's or the process's
     * budget is refused, so that what sessions hold never passes them. */
    if (account_room(mux_account(m)) < (int64_t)srv->cfg->window_kib * 1024) {
        const struct account *a = account_tightest(mux_account(m));
        metrics.budget_refused++;
        log_msg(LOG_WARN,
                "[sock] - %s = %u refused: its windows would pass %s=%lld on %08x (%lld KiB held)",
                dest, sessions_held(), a->name, (long long)(a->bytes_max >> 20), mux_id(m),
                (long long)(a->bytes / 1024));
        return 1;
    }
    if (mux_live(m) >= (unsigned)srv->cfg->sessions_max) {
        log_msg(LOG_WARN, "[sock] - %s = %u refused: %08x has -remux.sessions.max=%ld open", dest,
                session_count(), mux_id(m), srv->cfg->sessions_max);
        return 1;
    }
    return 0;
}

/* The first frame of a UDP session (the connection agreed v2): the same limits as a stream
 * session; the ACL is asked per destination, as datagrams come (udprelay.c). */
static int
open_udp(struct server *srv, struct mux *m, uint16_t sid, struct evbuffer *in, size_t len,
         const char **err)
{
    if (over_limits(srv, m, "udp")) {
        refuse_open(m, sid, in, len, FRAME_RST_POLICY);
        return 0;
    }
    return udprelay_open(&srv->udp_env, m, sid, in, len, err);
}

/* The first frame of session sid: the EagerSocks header, then the app's first bytes. */
static int
server_open(struct mux *m, uint16_t sid, struct evbuffer *in, size_t len, const char **err,
            void *arg)
{
    struct server *srv = arg;
    uint8_t hdr[SOCKS_REQ_MAX];
    struct socks_req req;
    struct session *s;
    struct bufferevent *bev;
    struct sockaddr_storage ss;
    size_t n = len < sizeof(hdr) ? len : sizeof(hdr), used;
    char dest[SOCKS_DEST_MAX], host[INET6_ADDRSTRLEN], why[160];
    const char *name, *bad_name;
    int rc;

    evbuffer_copyout(in, hdr, n);
    rc = socks_parse_request(hdr, n, &used, &req, err);
    if (rc == SOCKS_NEED) *err = "EagerSocks header longer than its frame";
    if (rc != SOCKS_OK) return -1;
    evbuffer_drain(in, used);
    len -= used;
    if (req.cmd != SOCKS_CMD_CONNECT && !(req.cmd == SOCKS_CMD_UDP && mux_speaks_udp(m))) {
        /* A session kind this server does not speak (BIND, a newer client's, or UDP on a
         * connection that did not agree v2): that session is refused, never the connection
         * with its healthy sessions (docs/PROTOCOL.md, "Versions"). */
        log_msg(LOG_WARN,
                "[sock] - ?:%u = %u refused: session kind %u (%s) is not spoken here, on %08x",
                (unsigned)req.port, session_count(), (unsigned)req.cmd,
                req.cmd == SOCKS_CMD_UDP    ? "UDP"
                : req.cmd == SOCKS_CMD_BIND ? "BIND"
                                            : "unknown",
                mux_id(m));
        refuse_open(m, sid, in, len, FRAME_RST_PROTOCOL);
        return 0;
    }
    if (req.cmd == SOCKS_CMD_UDP) return open_udp(srv, m, sid, in, len, err);
    if (req.atyp == SOCKS_ATYP_DOMAIN && socks_check_name(req.host, &bad_name) == -1) {
        /* One session's bad name is that session's error, not the connection's. */
        struct frame_ctl bad = {.type = FRAME_CTL_RESET, .sid = sid, .reason = FRAME_RST_PROTOCOL};
        log_msg(LOG_WARN, "[sock] - ?:%u = %u refused: invalid destination on %08x: %s",
                (unsigned)req.port, session_count(), mux_id(m), bad_name);
        evbuffer_drain(in, len);
        mux_send_ctl(m, &bad);
        return 0;
    }
    socks_format_dest(&req, dest, sizeof(dest));
    if (over_limits(srv, m, dest)) {
        refuse_open(m, sid, in, len, FRAME_RST_POLICY);
        return 0;
    }
    name = req.host;
    if (req.atyp != SOCKS_ATYP_DOMAIN) {
        inet_ntop(req.atyp == SOCKS_ATYP_IPV4 ? AF_INET : AF_INET6, req.addr, host, sizeof(host));
        name = host;
    }
    if (!allowed(srv, m, name, req.port, socks_atyp_name(req.atyp),
                 req.atyp == SOCKS_ATYP_DOMAIN ? NULL : host, why, sizeof(why))) {
        struct frame_ctl rst = {.type = FRAME_CTL_RESET, .sid = sid, .reason = FRAME_RST_POLICY};
        metrics.acl_denied++;
        log_msg(LOG_WARN, "[sock] - %s = %u denied: %s", dest, session_count(),
                why[0] ? why : "by the route hook");
        evbuffer_drain(in, len); /* a decision, not a peer's abuse: not counted as abandoned */
        mux_send_ctl(m, &rst);
        return 0;
    }
    bev = bufferevent_socket_new(srv->base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    s = bev != NULL ? session_new(m, sid, bev, SESSION_LOCAL_CONNECTING, dest) : NULL;
    if (s == NULL) {
        struct frame_ctl c = {.type = FRAME_CTL_RESET, .sid = sid, .reason = FRAME_RST_ABORTED};
        log_msg(LOG_ERROR, "[sock] - %s = %u out of memory", dest, session_count());
        evbuffer_drain(in, len);
        mux_send_ctl(m, &c);
        return 0;
    }
    if (len > 0 && session_on_data(s, in, len, err) == -1) return -1;
    if (req.atyp != SOCKS_ATYP_DOMAIN) {
        connect_to(s, (struct sockaddr *)&ss,
                   addr_sockaddr(req.atyp == SOCKS_ATYP_IPV4 ? AF_INET : AF_INET6, req.addr,
                                 req.port, &ss));
    } else {
        resolve(srv, s, m, &req);
    }
    return 0;
}

static void
server_closed(struct mux *m, void *arg)
{
    struct server *srv = arg;
    size_t i;

    if (srv->ctx != NULL && !mux_is_ready(m)) srv->pending--;
    if (tenant_of(m) != NULL) {
        tenant_of(m)->conns--;
        if (mux_abandon_closed(m)) penalize(srv, tenant_of(m));
    }
    for (i = 0; i < srv->n; i++) {
        if (srv->conns[i].m == m) {
            if (mux_abandon_closed(m)) penalize_addr(srv, srv->conns[i].peer);
            srv->conns[i] = srv->conns[--srv->n];
            return;
        }
    }
}

/* The handshake is done: the connection's account goes under its client certificate's, and
 * counts against its limit of connections. */
static void
server_ready(struct mux *m, void *arg)
{
    struct server *srv = arg;
    unsigned char fp[32] = {0};
    SSL *ssl = mux_ssl(m);
    struct tenant *t;

    if (ssl == NULL) return;
    srv->pending--;
    if (tls_peer_fingerprint(ssl, fp) == -1) return; /* an open server: no certificate */
    penalties_expire(srv, PENALTIES_OVER);
    t = tenant_get(srv, fp);
    if (t == NULL) {
        mux_close(m, MUX_CLOSE_ABORT, LOG_ERROR, "out of memory");
        return;
    }
    account_reparent(mux_account(m), &t->acct);
    if (clock_now_us() < t->penalty_until_us) {
        t->conns++; /* server_closed counts it off */
        metrics.penalty_refused++;
        mux_close(m, MUX_CLOSE_ORDERLY, LOG_WARN,
                  "refused: a connection of its client certificate abandoned its sessions less "
                  "than " PENALTY_SEC_STR " s ago");
        return;
    }
    if (t->conns++ >= (unsigned)srv->cfg->conn_per_cert_max) {
        char why[128];
        snprintf(why, sizeof(why), "refused: its client certificate holds -tls.client.conn.max=%ld",
                 srv->cfg->conn_per_cert_max);
        mux_close(m, MUX_CLOSE_ORDERLY, LOG_WARN, why);
    }
}

static void
server_idle(struct mux *m, void *arg)
{
    struct server *srv = arg;

    if (srv->draining) mux_close(m, MUX_CLOSE_ORDERLY, LOG_INFO, "shutdown");
}

static const struct mux_ops server_ops = {
    .ready = server_ready, .closed = server_closed, .open = server_open, .idle = server_idle};

/* The key handshakes are counted by: see struct srv_conn's peer. */
static void
peer_key(const struct sockaddr *sa, unsigned char key[16])
{
    memset(key, 0, 16);
    if (sa->sa_family == AF_INET) {
        key[10] = key[11] = 0xff;
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 8);
    }
}

/* A pending handshake, for choosing which one goes when the table is full. */
struct pending {
    const unsigned char *key;
    double age;
    struct mux *m;
};

/* By source, and within one the oldest first. */
static int
pending_cmp(const void *a, const void *b)
{
    const struct pending *x = a, *y = b;
    int c = memcmp(x->key, y->key, 16);

    if (c != 0) return c;
    return x->age < y->age ? 1 : x->age > y->age ? -1 : 0;
}

/* The oldest pending handshake of the source holding the most (ties: the older one). */
static struct mux *
eviction_victim(struct server *srv)
{
    struct pending *p = malloc(srv->n * sizeof(*p) + 1);
    struct mux *victim = NULL;
    size_t i, k = 0, run, best = 0;
    double best_age = -1;

    if (p == NULL) return NULL;
    for (i = 0; i < srv->n; i++) {
        if (mux_is_ready(srv->conns[i].m)) continue;
        p[k].key = srv->conns[i].peer;
        p[k].age = mux_age(srv->conns[i].m);
        p[k++].m = srv->conns[i].m;
    }
    qsort(p, k, sizeof(*p), pending_cmp);
    for (i = 0; i < k; i += run) {
        for (run = 1; i + run < k && memcmp(p[i + run].key, p[i].key, 16) == 0; run++)
            ;
        if (run > best || (run == best && p[i].age > best_age)) {
            best = run;
            best_age = p[i].age;
            victim = p[i].m;
        }
    }
    free(p);
    return victim;
}

/* Before a handshake is done nobody is known, and a stranger must not lock the others out.
 * Returns 1 to go on with a new connection from key, 0 to refuse it: a source address holds at
 * most -tls.handshake.per.addr pending handshakes; when all -tls.handshake.max are taken, the
 * oldest pending handshake of the source holding the most goes, so that strangers idling in
 * their handshakes make room for a client that finishes its own in a round trip. */
static int
admit(struct server *srv, const unsigned char key[16], const char *peer)
{
    size_t i, mine = 0;
    struct mux *victim;

    if (srv->ctx == NULL) return 1;
    if (addr_penalized(srv, key)) {
        metrics.penalty_refused++;
        log_msg(LOG_WARN,
                "[tls] %s refused: a connection from its address abandoned its sessions less "
                "than " PENALTY_SEC_STR " s ago",
                peer);
        return 0;
    }
    for (i = 0; i < srv->n; i++)
        if (!mux_is_ready(srv->conns[i].m) && memcmp(srv->conns[i].peer, key, 16) == 0) mine++;
    if (mine >= (size_t)srv->cfg->handshake_per_addr) {
        log_msg(LOG_WARN,
                "[tls] %s refused: -tls.handshake.per.addr=%ld handshakes pending from it", peer,
                srv->cfg->handshake_per_addr);
        return 0;
    }
    if (srv->pending < (size_t)srv->cfg->handshake_max) return 1;
    victim = eviction_victim(srv);
    if (victim == NULL) {
        log_msg(LOG_WARN, "[tls] %s refused: -tls.handshake.max=%ld handshakes pending", peer,
                srv->cfg->handshake_max);
        return 0;
    }
    mux_close(victim, MUX_CLOSE_ORDERLY, LOG_WARN,
              "handshake evicted: -tls.handshake.max handshakes pending");
    return 1;
}

static void
accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct server *srv = arg;
    struct bufferevent *bev;
    struct mux *m;
    SSL *ssl;
    char peer[64];
    unsigned char key[16];
    const int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;

    (void)lis;
    (void)salen;
    addr_tune_socket(fd);
    addr_format(sa, peer, sizeof(peer));
    peer_key(sa, key);
    if (!admit(srv, key, peer)) {
        evutil_closesocket(fd);
        return;
    }
    if (array_grow(&srv->conns, &srv->cap, srv->n, sizeof(*srv->conns), 16) == -1) {
        evutil_closesocket(fd);
        return;
    }
    if (srv->ctx != NULL) {
        ssl = SSL_new(srv->ctx);
        if (ssl == NULL) {
            evutil_closesocket(fd);
            return;
        }
        bev = tls_bufferevent_new(srv->base, fd, ssl, TLS_ACCEPTED, NULL, 0, opts);
    } else {
        bev = bufferevent_socket_new(srv->base, fd, opts);
    }
    if (bev == NULL) return;
    /* Counted before mux_new: a plain-TCP mux is ready (server_ready) inside it. */
    memset(&srv->conns[srv->n], 0, sizeof(srv->conns[0]));
    memcpy(srv->conns[srv->n].peer, key, 16);
    if (srv->ctx != NULL) srv->pending++;
    m = mux_new(srv->base, bev, srv->ctx != NULL ? MUX_TLS : MUX_TCP, MUX_SERVER, srv->cfg,
                &server_ops, srv, peer);
    if (m == NULL) {
        if (srv->ctx != NULL) srv->pending--;
        return;
    }
    srv->conns[srv->n++].m = m;
}

static void
resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *srv = arg;

    (void)fd;
    (void)what;
    if (!srv->draining && srv->lis != NULL) evconnlistener_enable(srv->lis);
}

static void
accept_error_cb(struct evconnlistener *lis, void *arg)
{
    struct server *srv = arg;

    addr_listener_pause(lis, srv->resume);
}

int
server_reload(struct server *srv, char *err, size_t errlen)
{
    SSL_CTX *ctx;
    size_t i, closed = 0;

    if (srv->ctx == NULL) return 0;
    ctx = tls_server_ctx(srv->cfg, err, errlen);
    if (ctx == NULL) return -1;
    /* Connections in flight keep the context they started with (each SSL holds a reference). */
    SSL_CTX_free(srv->ctx);
    srv->ctx = ctx;
    if (srv->cfg->tls_server_crl[0] == 0) return 0;
    for (i = srv->n; i > 0; i--) {
        struct mux *m = srv->conns[i - 1].m;
        SSL *ssl = mux_ssl(m);
        if (ssl == NULL || !mux_is_ready(m) || !tls_revoked(ssl, srv->cfg->tls_server_crl))
            continue;
        mux_close(m, MUX_CLOSE_ORDERLY, LOG_WARN,
                  "its client certificate is revoked (-tls.server.crl)");
        closed++;
    }
    if (closed > 0)
        log_msg(LOG_WARN, "[tls] SIGHUP: %zu connections of revoked certificates closed", closed);
    return 0;
}

/* Every session holds a descriptor (its destination's socket), and so does every connection:
 * sessions are capped below the descriptor limit, keeping a reserve (an eighth, at least 64) so
 * that accepting a connection and its handshake go on when one client holds its most. The soft
 * limit is raised to the hard one first. -server.sessions.max, when set, is used if lower. */
static unsigned
session_cap(const struct config *cfg)
{
    struct rlimit rl;
    rlim_t n, reserve;

    if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
        return cfg->server_sessions_max > 0 ? (unsigned)cfg->server_sessions_max : 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == -1) (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    n = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1048576 ? 1048576 : rl.rlim_cur;
    reserve = n / 8 > 64 ? n / 8 : 64;
    n = n > reserve + 16 ? n - reserve : 16;
    if (cfg->server_sessions_max > 0 && (rlim_t)cfg->server_sessions_max < n)
        n = (rlim_t)cfg->server_sessions_max;
    log_msg(LOG_INFO, "[main] server: at most %lu sessions at once (RLIMIT_NOFILE %lu)",
            (unsigned long)n, (unsigned long)rl.rlim_cur);
    return (unsigned)n;
}

/* The window bytes the process's sessions may hold (-server.buffer.max.mib; 0: a quarter of
 * the machine's memory, at least 64 MiB). */
static int64_t
buffer_cap(const struct config *cfg)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    int64_t n = pages > 0 && size > 0 ? (int64_t)pages * size / 4 : (int64_t)1 << 30;

    if (cfg->server_buffer_max_mib > 0) n = (int64_t)cfg->server_buffer_max_mib << 20;
    if (n < (int64_t)64 << 20 && cfg->server_buffer_max_mib == 0) n = (int64_t)64 << 20;
    log_msg(LOG_INFO, "[main] server: sessions hold at most %lld MiB of window bytes",
            (long long)(n >> 20));
    return n;
}

static int
by_sessions(const void *a, const void *b)
{
    const struct tenant *x = *(const struct tenant *const *)a,
                        *y = *(const struct tenant *const *)b;

    return x->acct.sessions < y->acct.sessions ? 1 : x->acct.sessions > y->acct.sessions ? -1 : 0;
}

/* The label of t: the first 16 hex digits of its certificate's SHA-256. */
static const char *
fp_label(const struct tenant *t, char out[17])
{
    int b;

    for (b = 0; b < 8; b++)
        snprintf(out + 2 * b, 3, "%02x", t->fp[b]);
    return out;
}

/* Per client certificate, labelled by the first 16 hex digits of its SHA-256: the
 * -metrics.certs.max with the most sessions (a bounded set of series however many clients). */
static void
server_metrics(struct evbuffer *out, void *arg)
{
    struct server *srv = arg;
    struct tenant **all, *t;
    size_t n = 0, i, b, shown;
    char fp[17];

    for (b = 0; b < TENANT_BUCKETS; b++)
        for (t = srv->tenants[b]; t != NULL; t = t->next)
            n++;
    evbuffer_add_printf(out,
                        "# HELP tunnels_client_certs Server: client certificates with "
                        "connections or sessions now.\n# TYPE tunnels_client_certs gauge\n"
                        "tunnels_client_certs %zu\n",
                        n);
    all = n > 0 ? malloc(n * sizeof(*all)) : NULL;
    if (all == NULL) return;
    n = 0;
    for (b = 0; b < TENANT_BUCKETS; b++)
        for (t = srv->tenants[b]; t != NULL; t = t->next)
            all[n++] = t;
    qsort(all, n, sizeof(*all), by_sessions);
    shown = n < (size_t)srv->cfg->metrics_certs_max ? n : (size_t)srv->cfg->metrics_certs_max;
    evbuffer_add_printf(out, "# HELP tunnels_client_sessions Server: sessions of a client "
                             "certificate open now (orphans included).\n"
                             "# TYPE tunnels_client_sessions gauge\n");
    for (i = 0; i < shown; i++)
        evbuffer_add_printf(out, "tunnels_client_sessions{cert=\"%s\"} %u\n", fp_label(all[i], fp),
                            all[i]->acct.sessions);
    evbuffer_add_printf(out, "# HELP tunnels_client_connections Server: connections of a client "
                             "certificate open now.\n# TYPE tunnels_client_connections gauge\n");
    for (i = 0; i < shown; i++) {
        fp_label(all[i], fp);
        evbuffer_add_printf(out, "tunnels_client_connections{cert=\"%s\"} %u\n", fp, all[i]->conns);
    }
    evbuffer_add_printf(out, "# HELP tunnels_client_bytes_total Server: payload bytes of a client "
                             "certificate's sessions, to or from the client, while it has been "
                             "connected.\n# TYPE tunnels_client_bytes_total counter\n");
    for (i = 0; i < shown; i++) {
        fp_label(all[i], fp);
        evbuffer_add_printf(out,
                            "tunnels_client_bytes_total{cert=\"%s\",direction=\"to_client\"} "
                            "%llu\ntunnels_client_bytes_total{cert=\"%s\",direction="
                            "\"from_client\"} %llu\n",
                            fp, (unsigned long long)all[i]->acct.to_peer, fp,
                            (unsigned long long)all[i]->acct.from_peer);
    }
    free(all);
}

struct server *
server_new(struct event_base *base, const struct config *cfg, struct luahost *lua, char *err,
           size_t errlen)
{
    struct server *srv = calloc(1, sizeof(*srv));
    struct sockaddr_storage ss;
    socklen_t sslen;
    char why[256];
    int tls = cfg->lower == LOWER_TLS;
    int fastopen;

    if (srv == NULL) return NULL;
    srv->base = base;
    srv->cfg = cfg;
    srv->session_cap = session_cap(cfg);
    srv->cert_cap = cfg->cert_sessions_max > 0  ? (unsigned)cfg->cert_sessions_max
                    : srv->session_cap / 2 > 16 ? srv->session_cap / 2
                                                : 16;
    account_process_limit(buffer_cap(cfg));
    srv->lua = lua;
    if (!cfg->server_open && (!tls || cfg->tls_server_ca[0] == 0)) {
        snprintf(err, errlen,
                 "tunnels: %s: any client could use this server as an open proxy; "
                 "set -tls.server.ca for mutual TLS, or -server.open to mean it",
                 tls ? "-tls.server.ca is not set" : "plain TCP has no client authentication");
        goto err;
    }
    if (tls) {
        srv->ctx = tls_server_ctx(cfg, err, errlen);
        if (srv->ctx == NULL) goto err;
    }
    srv->dns = addr_dns_new(base);
    srv->udp_env.dns = srv->dns;
    srv->udp_env.allowed = udp_allowed;
    srv->udp_env.arg = srv;
    if (srv->dns == NULL) {
        snprintf(err, errlen, "tunnels: cannot set up DNS");
        goto err;
    }
    if (addr_resolve(cfg->server_addr, cfg->server_family, ADDR_TO_LISTEN_ON, &ss, &sslen, why,
                     sizeof(why)) == -1) {
        snprintf(err, errlen, "tunnels: -server.addr: %s", why);
        goto err;
    }
    srv->resume = evtimer_new(base, resume_cb, srv);
    srv->lis = evconnlistener_new_bind(
        base, accept_cb, srv, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        1024, (struct sockaddr *)&ss, (int)sslen);
    if (srv->lis == NULL || srv->resume == NULL) {
        snprintf(err, errlen, "tunnels: -server.addr: cannot listen on %s: %s", cfg->server_addr,
                 strerror(errno));
        goto err;
    }
    evconnlistener_set_error_cb(srv->lis, accept_error_cb);
    /* Plain TCP stays without Fast Open: a SYN's data can be replayed, and there it would be
     * frames that open sessions; a ClientHello replayed is harmless. */
    fastopen = tls && tls_fastopen_listen(evconnlistener_get_fd(srv->lis));
    log_msg(LOG_INFO, "[main] server: listening on %s (%s%s%s)", cfg->server_addr,
            tls ? "tls" : "tcp",
            cfg->tls_server_ca[0] != 0 && tls ? ", client certificates required" : ", open",
            fastopen ? ", TCP Fast Open" : "");
    metrics_add_source(server_metrics, srv);
    return srv;
err:
    server_free(srv);
    return NULL;
}

void
server_stop_accepting(struct server *srv)
{
    size_t i;

    srv->draining = 1;
    /* Close the socket, not just stop accepting: the kernel would still complete handshakes
     * into the backlog, and a new instance may want the port. */
    if (srv->lis != NULL) evconnlistener_free(srv->lis);
    srv->lis = NULL;
    for (i = 0; i < srv->n; i++)
        mux_goaway(srv->conns[i].m);
    for (i = srv->n; i > 0; i--)
        if (mux_live(srv->conns[i - 1].m) == 0)
            mux_close(srv->conns[i - 1].m, MUX_CLOSE_ORDERLY, LOG_INFO, "shutdown");
}

void
server_close_all(struct server *srv)
{
    while (srv->n > 0)
        mux_close(srv->conns[srv->n - 1].m, MUX_CLOSE_ORDERLY, LOG_INFO, "shutdown");
}

void
server_free(struct server *srv)
{
    if (srv == NULL) return;
    metrics_remove_source(server_metrics, srv);
    server_close_all(srv);
    if (srv->lis != NULL) evconnlistener_free(srv->lis);
    if (srv->resume != NULL) event_free(srv->resume);
    if (srv->dns != NULL) evdns_base_free(srv->dns, 1);
    if (srv->ctx != NULL) SSL_CTX_free(srv->ctx);
    free(srv->conns);
    penalties_expire(srv, PENALTIES_ALL);
    /* Tenants still charged (by a connection or an orphan freed later) outlive their table. */
    for (size_t b = 0; b < TENANT_BUCKETS; b++)
        for (struct tenant *t = srv->tenants[b]; t != NULL; t = t->next)
            t->pprev = NULL;
    free(srv);
}
