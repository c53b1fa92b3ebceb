/* direct.c: a direct session relays between two plain sockets, le-proxy style: what one side
 * reads goes to the other's output; once that output holds DIRECT_HIGH bytes, reading stops
 * until it drains to half of that. A side's EOF is passed on as shutdown(SHUT_WR) once its bytes
 * have left; the session closes when both directions are done, or at once on an error. All
 * direct sessions are on one list so that shutdown can close them. */
#include "direct.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>

#include "addr.h"
#include "httpreq.h"
#include "log.h"
#include "socks.h"

#define DIRECT_HIGH (256 * 1024)

struct direct {
    struct bufferevent *app, *dst;
    struct direct *prev, *next;
    char dest[SOCKS_DEST_MAX];
    unsigned app_eof : 1, dst_eof : 1, app_shut : 1, dst_shut : 1, connected : 1;
    unsigned http : 1;  /* a forwarded HTTP request (direct_open_http) */
    unsigned heard : 1; /* a byte came from the destination */
    long long app_left; /* http: body bytes the app may still send on */
};

static struct direct *directs;
static unsigned ndirect;

unsigned
direct_count(void)
{
    return ndirect;
}

enum direct_end {
    DIRECT_FINISHED, /* both ways done: FIN */
    DIRECT_FAILED,   /* RST the app's socket, so it learns the session failed */
};

/* The one close path. */
static void
direct_close(struct direct *d, enum direct_end how, int level, const char *why)
{
    struct linger lg = {1, 0};
    evutil_socket_t fd = bufferevent_getfd(d->app);

    /* A forwarded request that ends unanswered: the app reads why (502), sent ahead of a FIN
     * (a RST could overtake it). */
    if (d->http && !d->heard && fd >= 0) {
        char text[SOCKS_DEST_MAX + 200], resp[1024];
        size_t n;
        snprintf(text, sizeof(text), "%s: %s", d->dest, *why ? why : "closed without answering");
        n = httpreq_error(502, text, resp, sizeof(resp));
        if (send(fd, resp, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n) how = DIRECT_FINISHED;
    }
    if (how == DIRECT_FAILED && fd >= 0) setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    if (d->prev != NULL)
        d->prev->next = d->next;
    else
        directs = d->next;
    if (d->next != NULL) d->next->prev = d->prev;
    ndirect--;
    log_msg(level, "[sock] - %s = %u direct%s%s", d->dest, ndirect, *why ? " " : "", why);
    bufferevent_free(d->app);
    bufferevent_free(d->dst);
    free(d);
}

void
direct_close_all(void)
{
    while (directs != NULL)
        direct_close(directs, DIRECT_FAILED, LOG_INFO, "shutdown");
}

static struct bufferevent *
other(struct direct *d, struct bufferevent *bev)
{
    return bev == d->app ? d->dst : d->app;
}

/* Passes EOF on once the bytes before it have left; closes when both directions are done. */
static int
maybe_shut(struct direct *d)
{
    if (d->app_eof && !d->dst_shut && d->connected &&
        evbuffer_get_length(bufferevent_get_output(d->dst)) == 0) {
        shutdown(bufferevent_getfd(d->dst), SHUT_WR);
        d->dst_shut = 1;
    }
    if (d->dst_eof && !d->app_shut && evbuffer_get_length(bufferevent_get_output(d->app)) == 0) {
        shutdown(bufferevent_getfd(d->app), SHUT_WR);
        d->app_shut = 1;
    }
    if (d->app_shut && d->dst_shut) {
        direct_close(d, DIRECT_FINISHED, LOG_INFO, "");
        return 1;
    }
    return 0;
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct direct *d = arg;
    struct bufferevent *to = other(d, bev);
    struct evbuffer *out = bufferevent_get_output(to), *in = bufferevent_get_input(bev);

    if (bev == d->dst && evbuffer_get_length(in) > 0) d->heard = 1;
    if (bev == d->app && d->http) {
        /* The body goes on; a pipelined request after it is dropped (the app sends it again
         * on a new connection: the answer says Connection: close). */
        size_t n = evbuffer_get_length(in);
        if ((long long)n > d->app_left) n = (size_t)d->app_left;
        d->app_left -= (long long)evbuffer_remove_buffer(in, out, n);
        evbuffer_drain(in, evbuffer_get_length(in));
    }
    evbuffer_add_buffer(out, in);
    if (evbuffer_get_length(out) >= DIRECT_HIGH) {
        bufferevent_disable(bev, EV_READ);
        bufferevent_setwatermark(to, EV_WRITE, DIRECT_HIGH / 2, 0);
    }
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
    struct direct *d = arg;
    struct bufferevent *from = other(d, bev);

    /* Below the low watermark again: the side feeding us may read. */
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    if (!(from == d->app ? d->app_eof : d->dst_eof)) bufferevent_enable(from, EV_READ);
    maybe_shut(d);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct direct *d = arg;
    char why[160];

    if (what & BEV_EVENT_CONNECTED) {
        d->connected = 1;
        bufferevent_set_timeouts(d->dst, NULL, NULL);
        addr_tune_socket(bufferevent_getfd(d->dst));
        log_msg(LOG_DEBUG, "[dest] %s direct connected", d->dest);
        maybe_shut(d);
        return;
    }
    if (what & BEV_EVENT_EOF) {
        read_cb(bev, d); /* anything still in the input goes first */
        if (bev == d->dst && d->http && !d->heard) {
            direct_close(d, DIRECT_FAILED, LOG_INFO, "closed without answering");
            return;
        }
        if (bev == d->app)
            d->app_eof = 1;
        else
            d->dst_eof = 1;
        bufferevent_disable(bev, EV_READ);
        maybe_shut(d);
        return;
    }
    if (bev == d->dst && !d->connected) {
        int dnserr = bufferevent_socket_get_dns_error(d->dst);
        if (what & BEV_EVENT_TIMEOUT)
            snprintf(why, sizeof(why), "connect: timed out");
        else if (dnserr != 0)
            snprintf(why, sizeof(why), "resolve: %s", evutil_gai_strerror(dnserr));
        else
            snprintf(why, sizeof(why), "connect: %s",
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        direct_close(d, DIRECT_FAILED, LOG_ERROR, why);
        return;
    }
    snprintf(why, sizeof(why), "%s: %s", bev == d->app ? "app" : "destination",
             (what & BEV_EVENT_TIMEOUT) ? "timed out"
                                        : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    direct_close(d, DIRECT_FAILED, LOG_INFO, why);
}

enum direct_kind {
    DIRECT_RELAY,        /* a CONNECT: bytes both ways as they come */
    DIRECT_HTTP_FORWARD, /* one forwarded HTTP request (direct_open_http) */
};

static void open_direct(struct evdns_base *dns, struct bufferevent *app,
                        const struct socks_req *req, long connect_sec, enum direct_kind kind,
                        long long body_left);

void
direct_open(struct evdns_base *dns, struct bufferevent *app, const struct socks_req *req,
            long connect_sec)
{
    open_direct(dns, app, req, connect_sec, DIRECT_RELAY, 0);
}

void
direct_open_http(struct evdns_base *dns, struct bufferevent *app, const struct socks_req *req,
                 long connect_sec, long long body_left)
{
    open_direct(dns, app, req, connect_sec, DIRECT_HTTP_FORWARD, body_left);
}

static void
open_direct(struct evdns_base *dns, struct bufferevent *app, const struct socks_req *req,
            long connect_sec, enum direct_kind kind, long long body_left)
{
    struct direct *d = calloc(1, sizeof(*d));
    struct sockaddr_storage ss;
    struct timeval tv = {connect_sec, 0};
    int rc;

    if (d == NULL) {
        bufferevent_free(app);
        return;
    }
    socks_format_dest(req, d->dest, sizeof(d->dest));
    d->app = app;
    d->http = kind == DIRECT_HTTP_FORWARD;
    /* The head (and what came of the body) waits in the input already. */
    d->app_left = body_left + (long long)evbuffer_get_length(bufferevent_get_input(app));
    d->dst = bufferevent_socket_new(bufferevent_get_base(app), -1,
                                    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (d->dst == NULL) {
        log_msg(LOG_ERROR, "[sock] - %s = %u direct out of memory", d->dest, ndirect);
        bufferevent_free(app);
        free(d);
        return;
    }
    d->next = directs;
    if (directs != NULL) directs->prev = d;
    directs = d;
    ndirect++;
    log_msg(LOG_INFO, "[sock] + %s = %u direct", d->dest, ndirect);
    bufferevent_setcb(d->app, read_cb, write_cb, event_cb, d);
    bufferevent_setcb(d->dst, read_cb, write_cb, event_cb, d);
    bufferevent_set_timeouts(d->dst, NULL, &tv); /* the connect; cleared once up */
    bufferevent_enable(d->app, EV_READ | EV_WRITE);
    bufferevent_enable(d->dst, EV_READ | EV_WRITE);
    /* Bytes the app sent along with its request wait in its input: no read will come for them
     * if the app now waits for an answer. Queued for the destination, they leave on connect. */
    if (evbuffer_get_length(bufferevent_get_input(d->app)) > 0) read_cb(d->app, d);
    memset(&ss, 0, sizeof(ss));
    if (req->atyp == SOCKS_ATYP_DOMAIN) {
        rc = bufferevent_socket_connect_hostname(d->dst, dns, AF_UNSPEC, req->host, req->port);
    } else if (req->atyp == SOCKS_ATYP_IPV4) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, req->addr, 4);
        sin->sin_port = htons(req->port);
        rc = bufferevent_socket_connect(d->dst, (struct sockaddr *)sin, sizeof(*sin));
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, req->addr, 16);
        sin6->sin6_port = htons(req->port);
        rc = bufferevent_socket_connect(d->dst, (struct sockaddr *)sin6, sizeof(*sin6));
    }
    /* bufferevent_free drops callbacks still deferred, so closing here is the only close. */
    if (rc == -1) direct_close(d, DIRECT_FAILED, LOG_ERROR, "connect: cannot start");
}
