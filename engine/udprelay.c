/* udprelay.c: the server's end of a UDP session (udprelay.h).
 *
 * A hostile client's reach: each datagram it sends costs it the same bytes over TLS, so the
 * relay amplifies nothing; it reaches only destinations the ACL allows (asked again on the
 * address a name resolved to, as for TCP); it holds at most UDPDEST_MAX destinations and a few
 * datagrams for each name being resolved; a datagram that meets a full socket or window is
 * dropped. A stranger who learns the relay's port reaches no one: only replies from an address
 * the session sent to are relayed (the filtering of RFC 4787's "address and port-dependent"
 * NAT), and they spend the session's window, not the server's memory. */
#include "udprelay.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "frame.h"
#include "log.h"
#include "metrics.h"
#include "mux.h"
#include "udpdest.h"
#include "udpsess.h"

struct udprelay {
    const struct udprelay_env *env;
    struct udpsess *u;
    struct udpdest_table *dests; /* and the sockets that reach them */
    unsigned bad_logged : 1;
};

static void
relay_free(struct udprelay *r)
{
    udpdest_table_free(r->dests);
    free(r);
}

static void
relay_closed(void *arg, enum udpsess_end end, const char *why)
{
    (void)end;
    (void)why; /* udpsess logged it */
    relay_free(arg);
}

static void
drop(struct udprelay *r, enum metrics_udp_drop why)
{
    (void)r;
    metrics.udp_dropped[why]++;
}

static void
send_to(struct udprelay *r, struct udpdest *d, const uint8_t *data, size_t n)
{
    if (udpdest_send(r->dests, d, data, n) == -1) drop(r, UDP_DROP_SEND);
}

/* The ACL on d, by name or address; 1 allow. Logs the answer, once per destination. */
static int
ask(struct udprelay *r, struct udpdest *d, const char *addr)
{
    struct mux *m = udpsess_mux(r->u);
    char why[160];
    struct luahost_req q = {.host = d->req.host,
                            .port = d->req.port,
                            .atyp = socks_atyp_name(d->req.atyp),
                            .addr = addr,
                            .net = LUAHOST_NET_UDP};

    if (m == NULL) return 0;
    if (r->env->allowed(r->env->arg, m, &q, why, sizeof(why))) return 1;
    metrics.acl_denied++;
    log_msg(LOG_WARN, "[sock] - udp:%s = %u denied: %s", d->dest, udpsess_count(),
            why[0] ? why : "by the route hook");
    return 0;
}

static void
allowed_now(struct udprelay *r, struct udpdest *d)
{
    struct mux *m = udpsess_mux(r->u);

    d->verdict = LUAHOST_ALLOW;
    log_msg(LOG_INFO, "[sock] + udp:%s = %u on %08x", d->dest, udpsess_count(),
            m != NULL ? mux_id(m) : 0);
}

/* A name resolved (or failed): asked again on its address, then what was held goes or drops. */
static void
relay_resolved(void *arg, struct udpdest *d)
{
    struct udprelay *r = arg;
    const uint8_t *data;
    long n;

    if (d->state == UDPDEST_READY) {
        struct socks_req a;
        socks_addr_of((struct sockaddr *)&d->sa, &a);
        if (ask(r, d, a.host))
            allowed_now(r, d);
        else
            d->verdict = LUAHOST_DENY;
    } else {
        metrics.dns_failed++;
        log_msg(LOG_WARN, "[sock] - udp:%s = %u dns failure: %s", d->dest, udpsess_count(), d->why);
    }
    while ((n = udpdest_unhold(d, &data)) >= 0) {
        if (d->state == UDPDEST_READY && d->verdict == LUAHOST_ALLOW)
            send_to(r, d, data, (size_t)n);
        else
            drop(r, d->state == UDPDEST_READY ? UDP_DROP_DENIED : UDP_DROP_UNRESOLVED);
    }
}

/* A datagram from the client, to a. */
static void
relay_datagram(void *arg, const struct socks_req *a0, const uint8_t *data, size_t n)
{
    struct udprelay *r = arg;
    struct socks_req a = *a0;
    struct udpdest *d;
    const char *bad;
    int fresh;

    if (a.atyp == SOCKS_ATYP_DOMAIN && socks_check_name(a.host, &bad) == -1) {
        if (!r->bad_logged)
            log_msg(LOG_WARN, "[sock] - udp:?:%u = %u refused: invalid destination: %s",
                    (unsigned)a.port, udpsess_count(), bad);
        r->bad_logged = 1;
        drop(r, UDP_DROP_MALFORMED);
        return;
    }
    d = udpdest_get(r->dests, &a, &fresh);
    if (d == NULL) {
        drop(r, UDP_DROP_BUSY);
        return;
    }
    if (fresh) {
        d->verdict = LUAHOST_DENY;
        if (!ask(r, d, a.atyp == SOCKS_ATYP_DOMAIN ? NULL : a.host)) {
            drop(r, UDP_DROP_DENIED);
            return;
        }
        d->verdict = LUAHOST_ALLOW;
        udpdest_resolve(d); /* an address: READY now; a name: relay_resolved, maybe at once */
        if (d->state == UDPDEST_READY && a.atyp != SOCKS_ATYP_DOMAIN) allowed_now(r, d);
    }
    if (d->verdict != LUAHOST_ALLOW) {
        drop(r, UDP_DROP_DENIED);
    } else if (d->state == UDPDEST_READY) {
        send_to(r, d, data, n);
    } else if (d->state == UDPDEST_RESOLVING) {
        if (udpdest_hold(d, data, n) == -1) drop(r, UDP_DROP_UNRESOLVED);
    } else {
        drop(r, UDP_DROP_UNRESOLVED);
    }
}

/* Replies: from a destination the session sent to (and the ACL allowed), back with their
 * source; anyone else's are dropped. */
static void
relay_reply(void *arg, struct udpdest *d, const struct sockaddr *from, const uint8_t *data,
            size_t n)
{
    struct udprelay *r = arg;
    struct socks_req src;

    if (d == NULL || d->verdict != LUAHOST_ALLOW) {
        drop(r, UDP_DROP_STRANGER);
        return;
    }
    socks_addr_of(from, &src);
    (void)udpsess_send(r->u, &src, data, n); /* a drop is counted there */
}

int
udprelay_open(const struct udprelay_env *env, struct mux *m, uint16_t sid, struct evbuffer *in,
              size_t len, const char **err)
{
    struct udprelay *r = calloc(1, sizeof(*r));
    struct udpsess_owner o = {.datagram = relay_datagram, .closed = relay_closed};
    struct frame_ctl rst = {.type = FRAME_CTL_RESET, .sid = sid, .reason = FRAME_RST_ABORTED};

    if (r != NULL) {
        struct udpdest_owner d = {.resolved = relay_resolved, .reply = relay_reply, .arg = r};
        r->env = env;
        r->dests = udpdest_table_new(mux_base(m), env->dns, &d);
        o.arg = r;
    }
    if (r == NULL || r->dests == NULL || (r->u = udpsess_server(m, sid, &o)) == NULL) {
        log_msg(LOG_ERROR, "[sock] - udp = %u out of memory", udpsess_count());
        if (r != NULL) relay_free(r);
        evbuffer_drain(in, len);
        mux_send_ctl(m, &rst);
        return 0;
    }
    return udpsess_on_first(r->u, in, len, err);
}
