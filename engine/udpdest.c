/* udpdest.c: a UDP session's destinations (udpdest.h). */
#include "udpdest.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "addr.h"
#include "clock.h"
#include "frame.h"

/* Datagrams read per wakeup, per socket: one busy destination does not starve the others. */
#define UDPDEST_READS 64

/* One lookup in flight. evdns calls back after a cancel too (EVUTIL_EAI_CANCEL, on a later
 * pass): the slot outlives its entry, which it forgets at the cancel. */
struct lookup_slot {
    struct udpdest *d;
    struct evdns_getaddrinfo_request *req;
    int in_call, done;
};

struct udpdest_table {
    struct event_base *base;
    struct evdns_base *dns;
    struct udpdest_owner o;
    int fd[2]; /* AF_INET, AF_INET6; -1 until first used */
    struct event *ev[2];
    struct udpdest *d[UDPDEST_MAX];
    size_t n;
    int64_t second_us; /* the second new ones are counted in */
    unsigned made;     /* ... and how many were made in it */
};

struct udpdest_table *
udpdest_table_new(struct event_base *base, struct evdns_base *dns, const struct udpdest_owner *o)
{
    struct udpdest_table *t = calloc(1, sizeof(*t));

    if (t == NULL) return NULL;
    t->base = base;
    t->dns = dns;
    t->o = *o;
    t->fd[0] = t->fd[1] = -1;
    return t;
}

static void
dest_free(struct udpdest *d)
{
    if (d->lookup != NULL) {
        struct lookup_slot *l = d->lookup;
        l->d = NULL;
        if (l->req != NULL) evdns_getaddrinfo_cancel(l->req);
    }
    if (d->held != NULL) evbuffer_free(d->held);
    free(d);
}

void
udpdest_table_free(struct udpdest_table *t)
{
    size_t i;

    if (t == NULL) return;
    for (i = 0; i < t->n; i++)
        dest_free(t->d[i]);
    for (i = 0; i < 2; i++) {
        if (t->ev[i] != NULL) event_free(t->ev[i]);
        if (t->fd[i] >= 0) close(t->fd[i]);
    }
    free(t);
}

static int
same_req(const struct socks_req *a, const struct socks_req *b)
{
    return a->atyp == b->atyp && a->port == b->port && strcmp(a->host, b->host) == 0;
}

struct udpdest *
udpdest_get(struct udpdest_table *t, const struct socks_req *a, int *fresh)
{
    struct udpdest *d;
    size_t i, victim = UDPDEST_MAX;

    *fresh = 0;
    for (i = 0; i < t->n; i++) {
        if (same_req(&t->d[i]->req, a)) {
            t->d[i]->used_us = clock_now_us();
            return t->d[i];
        }
    }
    if (clock_now_us() - t->second_us >= 1000000) {
        t->second_us = clock_now_us();
        t->made = 0;
    }
    if (t->made >= UDPDEST_NEW_PER_SEC) return NULL;
    if (t->n == UDPDEST_MAX) {
        for (i = 0; i < t->n; i++)
            if (t->d[i]->state != UDPDEST_RESOLVING &&
                (victim == UDPDEST_MAX || t->d[i]->used_us < t->d[victim]->used_us))
                victim = i;
        if (victim == UDPDEST_MAX) return NULL;
        dest_free(t->d[victim]);
        t->d[victim] = t->d[--t->n];
    }
    d = calloc(1, sizeof(*d));
    if (d == NULL) return NULL;
    d->req = *a;
    socks_format_dest(a, d->dest, sizeof(d->dest));
    d->t = t;
    d->used_us = clock_now_us();
    t->d[t->n++] = d;
    t->made++;
    *fresh = 1;
    return d;
}

static int
same_addr(const struct sockaddr_storage *ss, const struct sockaddr *sa)
{
    if (ss->ss_family != sa->sa_family) return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)ss;
        const struct sockaddr_in *y = (const struct sockaddr_in *)sa;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)ss;
        const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)sa;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

/* The READY entry whose address is sa (family, address and port), or NULL. */
static struct udpdest *
by_addr(struct udpdest_table *t, const struct sockaddr *sa)
{
    size_t i;

    for (i = 0; i < t->n; i++)
        if (t->d[i]->state == UDPDEST_READY && same_addr(&t->d[i]->sa, sa)) {
            t->d[i]->used_us = clock_now_us();
            return t->d[i];
        }
    return NULL;
}

static void
set_addr(struct udpdest *d, const struct sockaddr *sa, socklen_t len)
{
    memset(&d->sa, 0, sizeof(d->sa));
    memcpy(&d->sa, sa, len < sizeof(d->sa) ? len : sizeof(d->sa));
    d->salen = len;
    d->state = UDPDEST_READY;
}

static void
lookup_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct lookup_slot *l = arg;
    struct udpdest *d = l->d;

    l->req = NULL;
    if (d != NULL) {
        d->lookup = NULL;
        if (result == 0 && res != NULL) {
            set_addr(d, res->ai_addr, (socklen_t)res->ai_addrlen);
        } else {
            d->state = UDPDEST_FAILED;
            d->why = evutil_gai_strerror(result != 0 ? result : EVUTIL_EAI_FAIL);
        }
        d->t->o.resolved(d->t->o.arg, d);
    }
    if (res != NULL) evutil_freeaddrinfo(res);
    if (l->in_call)
        l->done = 1; /* answered before evdns_getaddrinfo returned: it frees l */
    else
        free(l);
}

void
udpdest_resolve(struct udpdest *d)
{
    struct evutil_addrinfo hints;
    struct lookup_slot *l;
    struct evdns_getaddrinfo_request *r;
    char port[8];

    if (d->state != UDPDEST_NEW) return;
    if (d->req.atyp == SOCKS_ATYP_IPV4 || d->req.atyp == SOCKS_ATYP_IPV6) {
        struct sockaddr_storage ss;
        socklen_t len = addr_sockaddr(d->req.atyp == SOCKS_ATYP_IPV4 ? AF_INET : AF_INET6,
                                      d->req.addr, d->req.port, &ss);
        set_addr(d, (struct sockaddr *)&ss, len);
        return;
    }
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        d->state = UDPDEST_FAILED;
        d->why = "out of memory";
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_protocol = IPPROTO_UDP;
    snprintf(port, sizeof(port), "%u", (unsigned)d->req.port);
    l->d = d;
    d->lookup = l;
    d->state = UDPDEST_RESOLVING;
    l->in_call = 1;
    r = evdns_getaddrinfo(d->t->dns, d->req.host, port, &hints, lookup_cb, l);
    l->in_call = 0;
    if (l->done)
        free(l);
    else
        l->req = r;
}

int
udpdest_hold(struct udpdest *d, const uint8_t *data, size_t n)
{
    uint8_t len[2] = {(uint8_t)(n >> 8), (uint8_t)n};

    if (d->held_n >= UDPDEST_HOLD_N || n > 0xffff) return -1;
    if (d->held == NULL) d->held = evbuffer_new();
    if (d->held == NULL || evbuffer_get_length(d->held) + n > UDPDEST_HOLD_BYTES) return -1;
    if (evbuffer_add(d->held, len, 2) == -1 || evbuffer_add(d->held, data, n) == -1) return -1;
    d->held_n++;
    return 0;
}

long
udpdest_unhold(struct udpdest *d, const uint8_t **data)
{
    static uint8_t buf[0xffff];
    uint8_t len[2];
    size_t n;

    if (d->held == NULL || d->held_n == 0 || evbuffer_remove(d->held, len, 2) != 2) return -1;
    n = (size_t)len[0] << 8 | len[1];
    if (evbuffer_remove(d->held, buf, n) != (int)n) return -1;
    d->held_n--;
    *data = buf;
    return (long)n;
}

static void
readable(evutil_socket_t fd, short what, void *arg)
{
    static uint8_t buf[FRAME_MAX_PAYLOAD + 1];
    struct udpdest_table *t = arg;
    struct sockaddr_storage ss;
    socklen_t sl;
    ssize_t got;
    int i;

    (void)what;
    for (i = 0; i < UDPDEST_READS; i++) {
        sl = sizeof(ss);
        got = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&ss, &sl);
        if (got < 0) break; /* EAGAIN, or an ICMP error for an earlier send: nothing to hand on */
        t->o.reply(t->o.arg, by_addr(t, (struct sockaddr *)&ss), (struct sockaddr *)&ss, buf,
                   (size_t)got);
    }
}

/* The socket for family (made on first use), or -1. */
static int
socket_for(struct udpdest_table *t, int family)
{
    int k = family == AF_INET6, fd, on = 1;

    if (t->fd[k] >= 0) return t->fd[k];
    fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) return -1;
    if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
    t->ev[k] = event_new(t->base, fd, EV_READ | EV_PERSIST, readable, t);
    if (t->ev[k] == NULL || event_add(t->ev[k], NULL) == -1) {
        if (t->ev[k] != NULL) event_free(t->ev[k]);
        t->ev[k] = NULL;
        close(fd);
        return -1;
    }
    t->fd[k] = fd;
    return fd;
}

int
udpdest_send(struct udpdest_table *t, const struct udpdest *d, const uint8_t *data, size_t n)
{
    int fd = socket_for(t, d->sa.ss_family);

    if (fd == -1 || sendto(fd, data, n, 0, (const struct sockaddr *)&d->sa, d->salen) < 0)
        return -1;
    return 0;
}
