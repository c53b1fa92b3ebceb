/* udpassoc.c: a SOCKS5 UDP association on the client (udpassoc.h).
 *
 * Eager, as CONNECT is: the reply with the relay's address leaves at once, and the first
 * datagram to a destination leaves with its UDP session's opening frame. Nothing waits without
 * bound: a datagram that finds no room (the session's window, a full connection, a hold while
 * a name resolves or a handshake ends) is dropped and counted; the app's protocol retries. */
#include "udpassoc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "clock.h"
#include "config.h"
#include "frame.h"
#include "log.h"
#include "luahost.h"
#include "metrics.h"
#include "mux.h"
#include "pool.h"
#include "udpdest.h"
#include "udpsess.h"

#define ASSOC_READS 64      /* datagrams read per wakeup, per socket */
#define ASSOC_V1_BACKOFF 30 /* s: a server that speaks v1 only is not asked again before */
#define ASSOC_HDR_MAX (3 + 1 + 1 + 255 + 2)

struct tunnel {
    struct pool *pool;
    struct udpsess *u;
    int64_t v1_until_us; /* the server speaks v1 only (no UDP): datagrams for it drop till then */
    struct udpassoc *a;  /* its association (the udpsess owner's arg) */
};

struct udpassoc {
    const struct udpassoc_env *env;
    struct udpassoc *next, **pprev;
    struct bufferevent *ctl;
    int relay; /* the socket the app sends to */
    struct event *relay_ev;
    struct event *timer; /* -udp.idle.sec */
    struct sockaddr_storage app;
    socklen_t app_len;
    int app_port_known;
    struct udpdest_table *dests; /* and the sockets for routes "direct" */
    struct tunnel tun[CONFIG_SERVERS_MAX];
    size_t ntun;
    char peer[64];
    int64_t active_us;
    uint64_t sent, received, dropped;
    unsigned stranger_logged : 1, bad_logged : 1, v1_logged : 1;
};

static struct udpassoc *assocs;
static unsigned assoc_live;
static uint8_t buf[FRAME_MAX_PAYLOAD + ASSOC_HDR_MAX];

unsigned
udpassoc_count(void)
{
    return assoc_live;
}

static void
drop(struct udpassoc *a, enum metrics_udp_drop why)
{
    a->dropped++;
    metrics.udp_dropped[why]++;
}

/* The one close path: nothing it calls calls back into a, which it frees. */
static void
assoc_end(struct udpassoc *a, int level, const char *why)
{
    size_t i;

    for (i = 0; i < a->ntun; i++)
        if (a->tun[i].u != NULL) udpsess_end(a->tun[i].u, "association ended");
    event_free(a->relay_ev);
    close(a->relay);
    event_free(a->timer);
    udpdest_table_free(a->dests);
    bufferevent_free(a->ctl);
    *a->pprev = a->next;
    if (a->next != NULL) a->next->pprev = a->pprev;
    assoc_live--;
    log_msg(level, "[socks] %s: udp associate ended%s%s (sent %llu, received %llu, dropped %llu)",
            a->peer, *why ? ": " : "", why, (unsigned long long)a->sent,
            (unsigned long long)a->received, (unsigned long long)a->dropped);
    free(a);
}

void
udpassoc_close_all(void)
{
    while (assocs != NULL)
        assoc_end(assocs, LOG_INFO, "shutdown");
}

/* A datagram back to the app, with its source in front (RFC 1928, 7). */
static void
to_app(struct udpassoc *a, const struct socks_req *src, const uint8_t *data, size_t n)
{
    uint8_t *p = buf;
    size_t k;

    if (!a->app_port_known) { /* no datagram from the app yet: nowhere to send */
        drop(a, UDP_DROP_STRANGER);
        return;
    }
    p[0] = p[1] = p[2] = 0;
    k = 3 + socks_encode_addr(p + 3, src);
    if (data != p + k) memmove(p + k, data, n);
    if (sendto(a->relay, p, k + n, 0, (struct sockaddr *)&a->app, a->app_len) < 0) {
        drop(a, UDP_DROP_SEND);
        return;
    }
    a->received++;
    a->active_us = clock_now_us();
}

/* The tunnel's UDP session: a reply. */
static void
tun_datagram(void *arg, const struct socks_req *src, const uint8_t *data, size_t n)
{
    struct tunnel *t = arg;

    to_app(t->a, src, data, n);
}

static void
tun_closed(void *arg, enum udpsess_end end, const char *why)
{
    struct tunnel *t = arg;

    (void)why; /* udpsess logged it */
    t->u = NULL;
    if (end == UDPSESS_NO_UDP)
        t->v1_until_us = clock_now_us() + (int64_t)ASSOC_V1_BACKOFF * 1000000;
}

/* The tunnel to server for a datagram: its UDP session, opened on the pool when there is
 * none. NULL: none can be had now (logged once). */
static struct udpsess *
tunnel_for(struct udpassoc *a, int server, const char *dest)
{
    struct pool *p = a->env->pool_for(a->env->arg, server, dest);
    struct udpsess_owner o = {.datagram = tun_datagram, .closed = tun_closed};
    struct tunnel *t = NULL;
    struct mux *m;
    const char *why = "no connection to the server";
    uint16_t sid;
    size_t i;

    for (i = 0; i < a->ntun; i++)
        if (a->tun[i].pool == p) t = &a->tun[i];
    if (t == NULL) {
        if (a->ntun == CONFIG_SERVERS_MAX) return NULL;
        t = &a->tun[a->ntun++];
        t->pool = p;
        t->a = a;
    }
    if (t->u != NULL) return t->u;
    if (clock_now_us() < t->v1_until_us) return NULL;
    m = pool_take_now(p, &sid);
    o.arg = t;
    if (m != NULL && mux_is_ready(m) && !mux_speaks_udp(m)) {
        why = "the server speaks ReMux v1 only (no UDP)";
        t->v1_until_us = clock_now_us() + (int64_t)ASSOC_V1_BACKOFF * 1000000;
    } else if (m != NULL) {
        t->u = udpsess_client(m, sid, &o);
        if (t->u == NULL) why = "out of memory";
    }
    if (t->u == NULL) {
        if (!a->v1_logged)
            log_msg(LOG_WARN, "[socks] %s: udp:%s: not tunnelled: %s", a->peer, dest, why);
        a->v1_logged = 1;
    }
    return t->u;
}

static void
send_direct(struct udpassoc *a, struct udpdest *d, const uint8_t *data, size_t n)
{
    if (udpdest_send(a->dests, d, data, n) == -1) {
        drop(a, UDP_DROP_SEND);
        return;
    }
    a->sent++;
}

/* Replies to direct datagrams: from the destinations sent to, no one else. */
static void
direct_reply(void *arg, struct udpdest *d, const struct sockaddr *from, const uint8_t *data,
             size_t n)
{
    struct udpassoc *a = arg;
    struct socks_req src;

    if (d == NULL || d->verdict != LUAHOST_DIRECT) {
        drop(a, UDP_DROP_STRANGER);
        return;
    }
    socks_addr_of(from, &src);
    to_app(a, &src, data, n);
}

/* A direct destination's name resolved (or did not): what was held goes, or drops. */
static void
assoc_resolved(void *arg, struct udpdest *d)
{
    struct udpassoc *a = arg;
    const uint8_t *data;
    long n;

    if (d->state != UDPDEST_READY)
        log_msg(LOG_INFO, "[sock] - udp:%s = %u direct: dns failure: %s", d->dest, udpassoc_count(),
                d->why);
    while ((n = udpdest_unhold(d, &data)) >= 0) {
        if (d->state == UDPDEST_READY)
            send_direct(a, d, data, (size_t)n);
        else
            drop(a, UDP_DROP_UNRESOLVED);
    }
}

/* The route hook's answer for a new destination, counted and logged as for a request. */
static void
route(struct udpassoc *a, struct udpdest *d)
{
    char why[200];
    struct luahost_req r = {.host = d->req.host,
                            .port = d->req.port,
                            .atyp = socks_atyp_name(d->req.atyp),
                            .addr = d->req.atyp == SOCKS_ATYP_DOMAIN ? NULL : d->req.host,
                            .src = a->peer,
                            .net = LUAHOST_NET_UDP};

    d->verdict = luahost_route(a->env->lua, &r, &d->server, why, sizeof(why));
    if (d->verdict == LUAHOST_BLOCK) {
        metrics.routes_block++;
        log_msg(LOG_INFO, "[socks] %s: udp:%s blocked%s%s", a->peer, d->dest, why[0] ? ": " : "",
                why);
    } else if (d->verdict == LUAHOST_DIRECT) {
        metrics.routes_direct++;
        log_msg(LOG_INFO, "[sock] + udp:%s = %u direct", d->dest, udpassoc_count());
        udpdest_resolve(d);
    } else {
        metrics.routes_tunnel++;
        log_msg(LOG_INFO, "[sock] + udp:%s = %u", d->dest, udpassoc_count());
    }
}

/* 1 when sa may speak for the app: its TCP connection's address, and its port once known. */
static int
from_app(struct udpassoc *a, const struct sockaddr_storage *sa, socklen_t len)
{
    if (sa->ss_family != a->app.ss_family) return 0;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)sa;
        struct sockaddr_in *y = (struct sockaddr_in *)&a->app;
        if (x->sin_addr.s_addr != y->sin_addr.s_addr) return 0;
        if (a->app_port_known) return x->sin_port == y->sin_port;
        y->sin_port = x->sin_port;
    } else {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)sa;
        struct sockaddr_in6 *y = (struct sockaddr_in6 *)&a->app;
        if (memcmp(&x->sin6_addr, &y->sin6_addr, 16) != 0) return 0;
        if (a->app_port_known) return x->sin6_port == y->sin6_port;
        y->sin6_port = x->sin6_port;
    }
    a->app_len = len;
    a->app_port_known = 1; /* the first datagram's port is the app's from here on */
    return 1;
}

/* One datagram from the app. */
static void
from_app_datagram(struct udpassoc *a, const uint8_t *p, size_t n)
{
    struct socks_req req;
    struct udpdest *d;
    const char *err;
    size_t used;
    int fresh;

    if (socks_parse_udp(p, n, &used, &req, &err) != SOCKS_OK ||
        (req.atyp == SOCKS_ATYP_DOMAIN && socks_check_name(req.host, &err) == -1)) {
        if (!a->bad_logged) log_msg(LOG_WARN, "[socks] %s: udp: dropped: %s", a->peer, err);
        a->bad_logged = 1;
        drop(a, n >= 3 && p[2] != 0 ? UDP_DROP_FRAGMENT : UDP_DROP_MALFORMED);
        return;
    }
    d = udpdest_get(a->dests, &req, &fresh);
    if (d == NULL) {
        drop(a, UDP_DROP_BUSY);
        return;
    }
    if (fresh) route(a, d);
    if (d->verdict == LUAHOST_BLOCK) {
        drop(a, UDP_DROP_DENIED);
    } else if (d->verdict == LUAHOST_DIRECT) {
        if (d->state == UDPDEST_READY)
            send_direct(a, d, p + used, n - used);
        else if (d->state != UDPDEST_RESOLVING || udpdest_hold(d, p + used, n - used) == -1)
            drop(a, UDP_DROP_UNRESOLVED);
    } else {
        struct udpsess *u = tunnel_for(a, d->server, d->dest);
        if (u == NULL)
            drop(a, UDP_DROP_NO_TUNNEL);
        else if (udpsess_send(u, &req, p + used, n - used) == 0)
            a->sent++;
        else
            a->dropped++; /* counted by reason in udpsess */
    }
}

static void
relay_readable(evutil_socket_t fd, short what, void *arg)
{
    struct udpassoc *a = arg;
    struct sockaddr_storage ss;
    socklen_t sl;
    ssize_t got;
    int i;

    (void)what;
    for (i = 0; i < ASSOC_READS; i++) {
        sl = sizeof(ss);
        got = recvfrom(fd, buf, FRAME_MAX_PAYLOAD, 0, (struct sockaddr *)&ss, &sl);
        if (got < 0) break;
        if (!from_app(a, &ss, sl)) {
            if (!a->stranger_logged)
                log_msg(LOG_WARN, "[socks] %s: udp: dropped a datagram from another address",
                        a->peer);
            a->stranger_logged = 1;
            drop(a, UDP_DROP_STRANGER);
            continue;
        }
        a->active_us = clock_now_us();
        from_app_datagram(a, buf, (size_t)got);
    }
}

/* The TCP connection: the association lives as long as it does (RFC 1928, 7); what the app
 * sends on it means nothing and is read and dropped. */
static void
ctl_read_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
}

static void
ctl_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    assoc_end(arg, LOG_INFO, (what & BEV_EVENT_EOF) ? "" : "its TCP connection failed");
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct udpassoc *a = arg;
    int64_t left = a->active_us + (int64_t)a->env->cfg->udp_idle_sec * 1000000 - clock_now_us();
    struct timeval tv;

    (void)fd;
    (void)what;
    if (left <= 0) {
        assoc_end(a, LOG_INFO, "idle");
        return;
    }
    tv.tv_sec = left / 1000000;
    tv.tv_usec = left % 1000000;
    evtimer_add(a->timer, &tv);
}

int
udpassoc_open(const struct udpassoc_env *env, struct bufferevent *ctl, const char *peer,
              const struct socks_req *req, struct sockaddr_storage *bound, char *why, size_t whylen)
{
    struct udpassoc *a = calloc(1, sizeof(*a));
    evutil_socket_t cfd = bufferevent_getfd(ctl);
    struct sockaddr_storage local;
    socklen_t len = sizeof(local);
    struct timeval tv = {env->cfg->udp_idle_sec, 0};

    if (a == NULL) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    a->env = env;
    a->relay = -1;
    a->app_len = sizeof(a->app);
    if (getsockname(cfd, (struct sockaddr *)&local, &len) == -1 ||
        getpeername(cfd, (struct sockaddr *)&a->app, &a->app_len) == -1) {
        snprintf(why, whylen, "getsockname: %s", strerror(errno));
        goto err;
    }
    /* The relay beside the listener: the app reaches it where it reached the listener. */
    if (local.ss_family == AF_INET)
        ((struct sockaddr_in *)&local)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&local)->sin6_port = 0;
    a->relay = socket(local.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->relay == -1 || bind(a->relay, (struct sockaddr *)&local, len) == -1 ||
        getsockname(a->relay, (struct sockaddr *)bound, &len) == -1) {
        snprintf(why, whylen, "relay socket: %s", strerror(errno));
        goto err;
    }
    /* A port in the request is the app's (RFC 1928: where it will send from); 0: its first
     * datagram's. The address is always the TCP connection's: another host cannot claim it. */
    if (req->port != 0) {
        if (a->app.ss_family == AF_INET)
            ((struct sockaddr_in *)&a->app)->sin_port = htons(req->port);
        else
            ((struct sockaddr_in6 *)&a->app)->sin6_port = htons(req->port);
        a->app_port_known = 1;
    }
    {
        struct udpdest_owner d = {.resolved = assoc_resolved, .reply = direct_reply, .arg = a};
        a->dests = udpdest_table_new(env->base, env->dns, &d);
    }
    a->relay_ev = event_new(env->base, a->relay, EV_READ | EV_PERSIST, relay_readable, a);
    a->timer = evtimer_new(env->base, timer_cb, a);
    if (a->dests == NULL || a->relay_ev == NULL || a->timer == NULL ||
        event_add(a->relay_ev, NULL) == -1) {
        snprintf(why, whylen, "out of memory");
        goto err;
    }
    evtimer_add(a->timer, &tv);
    snprintf(a->peer, sizeof(a->peer), "%s", peer);
    a->ctl = ctl;
    a->active_us = clock_now_us();
    bufferevent_setcb(ctl, ctl_read_cb, NULL, ctl_event_cb, a);
    bufferevent_enable(ctl, EV_READ);
    a->next = assocs;
    if (a->next != NULL) a->next->pprev = &a->next;
    a->pprev = &assocs;
    assocs = a;
    assoc_live++;
    metrics.udp_associations_opened++;
    return 0;
err:
    if (a->relay_ev != NULL) event_free(a->relay_ev);
    if (a->timer != NULL) event_free(a->timer);
    udpdest_table_free(a->dests);
    if (a->relay >= 0) close(a->relay);
    free(a);
    return -1;
}
