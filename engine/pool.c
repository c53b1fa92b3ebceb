/* pool.c: the client's connections to the server. The pool owns its muxes (an array, oldest
 * first); a mux tells the pool when it closes and the pool forgets it. Decisions are the Lua
 * policy's: which connection takes a session (luahost_pool_pick) and when an idle one closes
 * (luahost_pool_idle); the mechanics (dialling, counting, the limits on connections and on
 * dials in flight) are here, and so is the queue of sessions waiting for a dial: a burst larger
 * than -remux.dial.max dials can carry waits for them, in order, rather than overrunning a
 * connection's limits or the server's table of pending handshakes. */
#include "pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "addr.h"
#include "array.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "luahost.h"
#include "mux.h"
#include "session.h"
#include "socks.h"
#include "tls.h"

#define POOL_TICKETS 4

/* A session no connection can take until a dial in flight is done: the app's socket (already
 * answered) and the session's header, waiting in order. */
struct parked {
    struct bufferevent *bev;
    uint8_t hdr[SOCKS_REQ_MAX];
    size_t hdrlen;
    char dest[SOCKS_DEST_MAX];
    int64_t asked_us; /* when the app asked (the TTFB histogram's start) */
    int http;         /* a forwarded HTTP request, body_left bytes of body to come */
    int64_t body_left;
    int64_t until_us; /* given up then (-connect.sec) */
    struct parked *next;
};

struct pool {
    struct event_base *base;
    const struct config *cfg;
    struct luahost *lua;
    SSL_CTX *ctx;
    struct sockaddr_storage sa;
    socklen_t salen;
    char name[256];        /* the server name the certificate must carry */
    char label[64];        /* the server's name in -server.addr, for the logs */
    char addr[256];        /* its host:port */
    int64_t down_until_us; /* marked down (its last dial failed) until then; 0: up */
    unsigned fails;        /* dials failed in a row */
    int closing_all;       /* shutdown: closes are not failures */
    int single;            /* one connection per session (-eagersocks.net=tls|tcp) */
    struct mux **conns;
    size_t n, cap, info_cap; /* conns and info: n used, each its own capacity */
    struct luahost_conn *info;
    struct event *tick;
    struct event *sweep; /* a connection new sessions no longer go to has emptied */
    uint32_t last_pick;  /* the connection the last session went to */
    /* Unused TLS session tickets, newest last; a dial takes one. TLS 1.3 tickets are for one
     * use (RFC 8446 C.4; the server's are single-use entries in its cache). */
    SSL_SESSION *tickets[POOL_TICKETS];
    size_t ntickets;
    int64_t path_rtt_us; /* the least RTT any connection to this server has seen */
    unsigned taken_now;  /* sessions taken since the last tick */
    unsigned taken_last; /* sessions taken between the last two ticks */
    double handshake;    /* seconds from dial to ready, smoothed; 0 before the first */
    int started;         /* the start-up pass has run */
    size_t dialing;      /* connections in their handshake (fill_all counts them) */
    struct parked *parked, *parked_tail;
    struct event *unpark; /* a dial is done: the parked sessions are placed, outside callbacks */
};

static void pool_closed(struct mux *m, void *arg);
static void pool_idle(struct mux *m, void *arg);
static void pool_ready(struct mux *m, void *arg);
static void pool_sweep(evutil_socket_t fd, short what, void *arg);
static void pool_unpark(evutil_socket_t fd, short what, void *arg);
static void fail_parked(struct pool *p, int64_t before_us, const char *why);
static struct mux *dial(struct pool *p);
static const struct mux_ops pool_ops = {
    .ready = pool_ready, .closed = pool_closed, .open = NULL, .idle = pool_idle};

/* Connections to one server share its path: a new one starts from the least RTT seen. */
static void
learn_rtt(struct pool *p, const struct mux *m)
{
    int64_t r = mux_min_rtt_us(m);

    if (r > 0 && (p->path_rtt_us == 0 || r < p->path_rtt_us)) p->path_rtt_us = r;
}

/* What pick and spare weigh the headroom against: the session rate (the last tick's count, or
 * this one's so far when that is more, so a burst counts at once) and the handshake time. */
static struct luahost_load
current_load(const struct pool *p)
{
    struct luahost_load load;

    load.rate = p->taken_now > p->taken_last ? p->taken_now : p->taken_last;
    load.handshake = p->handshake;
    return load;
}

static void
fill_info(struct luahost_conn *c, const struct mux *m)
{
    c->id = mux_id(m);
    c->age = mux_age(m);
    c->idle = mux_idle(m);
    c->sessions = mux_carried(m);
    c->live = mux_live(m);
    c->goaway = mux_goaway_received(m);
    c->ready = mux_is_ready(m);
}

/* What the policy sees: every connection not closing, oldest first, in p->info. */
static size_t
fill_all(struct pool *p)
{
    size_t i, k = 0;

    p->dialing = 0;
    for (i = 0; i < p->n; i++) {
        if (mux_is_closing(p->conns[i])) continue;
        fill_info(&p->info[k], p->conns[i]);
        if (!p->info[k++].ready) p->dialing++;
    }
    return k;
}

static struct mux *
find(struct pool *p, uint32_t id)
{
    size_t i;

    for (i = 0; i < p->n; i++)
        if (mux_id(p->conns[i]) == id) return p->conns[i];
    return NULL;
}

/* The policy's idle() said so. */
static void
close_idle(struct pool *p, const struct luahost_conn *c)
{
    struct mux *m = find(p, c->id);

    if (m == NULL) return;
    if (c->idle < (double)p->cfg->idle_max_sec) metrics.pool_retired++;
    mux_close(m, MUX_CLOSE_ORDERLY, LOG_INFO,
              c->idle >= (double)p->cfg->idle_max_sec ? "idle" : "retired");
}

enum idle_ask {
    ASK_ALL,    /* the tick: every connection with no session */
    ASK_PASSED, /* the sweep: only those new sessions do not go to */
};

/* Asks the policy's idle() about the connections with no session (which: enum idle_ask). */
static void
ask_idle(struct pool *p, enum idle_ask which)
{
    size_t i, k = fill_all(p);

    for (i = k; i > 0; i--) {
        const struct luahost_conn *c = &p->info[i - 1];
        if (c->live > 0 || (which == ASK_PASSED && (c->id == p->last_pick || !c->ready))) continue;
        if (luahost_pool_idle(p->lua, c, p->info, k)) close_idle(p, c);
    }
}

/* Each second (and once at start): idle connections the policy closes, and the spare it wants
 * ready before any session asks (the start-up dial is this tick's first spare). */
static void
pool_tick(evutil_socket_t fd, short what, void *arg)
{
    struct pool *p = arg;
    size_t k;

    (void)fd;
    (void)what;
    /* The start-up run is an extra pass, not a tick: the rate's window is one tick long. */
    if (what & EV_TIMEOUT && p->started) {
        p->taken_last = p->taken_now;
        p->taken_now = 0;
    }
    p->started = 1;
    ask_idle(p, ASK_ALL);
    fail_parked(p, clock_now_us(), "waited -connect.sec for a connection");
    k = fill_all(p);
    if (!p->single && p->down_until_us == 0 && !p->closing_all &&
        p->n < (size_t)p->cfg->conn_max_cnt && p->dialing < (size_t)p->cfg->dial_max) {
        struct luahost_load load = current_load(p);
        if (luahost_pool_spare(p->lua, p->info, k, &load)) {
            log_msg(LOG_DEBUG, "[pool] dialling a spare for %s", p->label);
            dial(p);
        }
    }
    /* A server marked down is probed once its time is up; sessions go elsewhere meanwhile. */
    if (p->down_until_us != 0 && clock_now_us() >= p->down_until_us && p->n == 0) {
        log_msg(LOG_INFO, "[pool] probing server %s (%s), down since %u failed dials", p->label,
                p->addr, p->fails);
        p->down_until_us = clock_now_us() + (int64_t)3600 * 1000000; /* until the probe ends */
        dial(p);
    }
}

int
pool_is_down(const struct pool *p)
{
    return p->down_until_us != 0;
}

const char *
pool_label(const struct pool *p)
{
    return p->label;
}

static void
pool_ready(struct mux *m, void *arg)
{
    struct pool *p = arg;
    double took = mux_age(m);

    metrics_observe(&metrics.dial, took);
    /* Smoothed over a few dials: one slow handshake does not double the spares kept. */
    p->handshake = p->handshake == 0 ? took : 0.75 * p->handshake + 0.25 * took;
    if (p->down_until_us != 0)
        log_msg(LOG_WARN, "[pool] server %s (%s) is up again", p->label, p->addr);
    p->down_until_us = 0;
    p->fails = 0;
    if (p->parked != NULL) event_active(p->unpark, EV_TIMEOUT, 0);
}

struct pool *
pool_new(struct event_base *base, const struct config *cfg, struct luahost *lua, SSL_CTX *ctx,
         const char *label, const char *addr, const struct sockaddr *sa, socklen_t salen)
{
    struct pool *p = calloc(1, sizeof(*p));
    struct timeval tv = {1, 0};

    if (p == NULL) return NULL;
    p->base = base;
    p->cfg = cfg;
    p->lua = lua;
    p->ctx = ctx;
    memcpy(&p->sa, sa, salen);
    p->salen = salen;
    p->single = cfg->pooling == POOL_PER_SESSION;
    snprintf(p->label, sizeof(p->label), "%s", label);
    snprintf(p->addr, sizeof(p->addr), "%s", addr);
    if (cfg->tls_client_name[0] != 0)
        snprintf(p->name, sizeof(p->name), "%s", cfg->tls_client_name);
    else
        addr_host(addr, p->name, sizeof(p->name));
    p->tick = event_new(base, -1, EV_PERSIST, pool_tick, p);
    p->sweep = event_new(base, -1, 0, pool_sweep, p);
    p->unpark = event_new(base, -1, 0, pool_unpark, p);
    if (p->tick == NULL || p->sweep == NULL || p->unpark == NULL) {
        if (p->tick != NULL) event_free(p->tick);
        if (p->sweep != NULL) event_free(p->sweep);
        if (p->unpark != NULL) event_free(p->unpark);
        free(p);
        return NULL;
    }
    evtimer_add(p->tick, &tv);
    event_active(p->tick, EV_TIMEOUT, 0); /* the start-up dial, once the loop runs */
    return p;
}

void
pool_close_all(struct pool *p)
{
    p->closing_all = 1;
    while (p->n > 0)
        mux_close(p->conns[p->n - 1], MUX_CLOSE_ORDERLY, LOG_INFO, "shutdown");
}

unsigned
pool_connections(const struct pool *p)
{
    return (unsigned)p->n;
}

int64_t
pool_min_rtt_us(const struct pool *p)
{
    int64_t best = 0, r;
    size_t i;

    for (i = 0; i < p->n; i++) {
        r = mux_min_rtt_us(p->conns[i]);
        if (r > 0 && (best == 0 || r < best)) best = r;
    }
    return best;
}

void
pool_free(struct pool *p)
{
    if (p == NULL) return;
    fail_parked(p, INT64_MAX, "shutdown");
    pool_close_all(p);
    event_free(p->tick);
    event_free(p->sweep);
    event_free(p->unpark);
    while (p->ntickets > 0)
        SSL_SESSION_free(p->tickets[--p->ntickets]);
    free(p->conns);
    free(p->info);
    free(p);
}

static void
pool_closed(struct mux *m, void *arg)
{
    struct pool *p = arg;
    size_t i;

    learn_rtt(p, m);
    if (!mux_is_ready(m) && !p->closing_all) {
        /* The dial or the handshake failed: mark the server down, longer each time (1 s, 2 s,
         * ... 30 s), so that sessions go to the next server meanwhile. */
        int64_t backoff = (int64_t)1000000 << (p->fails < 5 ? p->fails : 5);
        if (backoff > 30000000) backoff = 30000000;
        p->fails++;
        p->down_until_us = clock_now_us() + backoff;
        log_msg(LOG_WARN, "[pool] server %s (%s) marked down for %lld s: %u failed dials in a row",
                p->label, p->addr, (long long)(backoff / 1000000), p->fails);
        fail_parked(p, INT64_MAX, "its dial failed");
    }
    if (p->parked != NULL) event_active(p->unpark, EV_TIMEOUT, 0); /* a dial slot is free */
    for (i = 0; i < p->n; i++) {
        if (p->conns[i] == m) {
            memmove(&p->conns[i], &p->conns[i + 1], (p->n - i - 1) * sizeof(p->conns[0]));
            p->n--;
            return;
        }
    }
}

static void
pool_idle(struct mux *m, void *arg)
{
    struct pool *p = arg;

    /* A connection of its own per session ends with its session. */
    if (p->single) {
        mux_close(m, MUX_CLOSE_ORDERLY, LOG_INFO, "session ended");
        return;
    }
    /* One that new sessions no longer go to (retired, or passed over) is asked about at once,
     * not at the next tick: under a stream of new sessions a rotation every 16 sessions left
     * hundreds of empty connections open for up to a second, and every pick() walked them all.
     * The connection sessions go to waits for the tick (its idle time is what counts). Deferred:
     * the session that emptied it is still closing. */
    if (mux_id(m) != p->last_pick) event_active(p->sweep, EV_TIMEOUT, 0);
}

static void
pool_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ask_idle(arg, ASK_PASSED);
}

static int
new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct pool *p = SSL_get_app_data(ssl);

    if (p == NULL) return 0;
    if (p->ntickets == POOL_TICKETS) {
        SSL_SESSION_free(p->tickets[0]);
        memmove(&p->tickets[0], &p->tickets[1], (POOL_TICKETS - 1) * sizeof(p->tickets[0]));
        p->ntickets--;
    }
    p->tickets[p->ntickets++] = sess;
    return 1; /* we keep the reference */
}

static struct mux *
dial(struct pool *p)
{
    struct bufferevent *bev;
    struct mux *m;
    SSL *ssl = NULL;
    int fd;
    size_t i;
    const int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;

    fd = socket(p->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd == -1) {
        log_msg(LOG_ERROR, "[pool] cannot dial %s: socket: %s", p->addr, strerror(errno));
        return NULL;
    }
    addr_tune_socket(fd);
    if (p->ctx != NULL) {
        ssl = tls_client_ssl(p->ctx, p->name);
        if (ssl == NULL) {
            close(fd);
            log_msg(LOG_ERROR,
                    "[pool] cannot dial %s: no TLS for server name \"%s\" (empty or "
                    "unusable; -tls.client.name sets it)",
                    p->addr, p->name);
            return NULL;
        }
        SSL_set_app_data(ssl, p);
        if (p->ntickets > 0) {
            SSL_SESSION *t = p->tickets[--p->ntickets];
            SSL_set_session(ssl, t); /* takes a reference of its own */
            SSL_SESSION_free(t);
        }
        /* The TLS bufferevent owns ssl and fd from here, even when it fails. */
        bev = tls_bufferevent_new(p->base, fd, ssl, TLS_DIALLED, (struct sockaddr *)&p->sa,
                                  (int)p->salen, opts);
        if (bev == NULL) {
            log_msg(LOG_ERROR, "[pool] cannot dial %s: %s", p->addr, strerror(errno));
            return NULL;
        }
    } else {
        bev = bufferevent_socket_new(p->base, fd, opts);
    }
    if (bev == NULL) {
        log_msg(LOG_ERROR, "[pool] cannot dial %s: out of memory", p->addr);
        return NULL;
    }
    if (p->ctx == NULL &&
        bufferevent_socket_connect(bev, (struct sockaddr *)&p->sa, (int)p->salen) == -1) {
        log_msg(LOG_ERROR, "[pool] cannot dial %s: %s", p->addr, strerror(errno));
        bufferevent_free(bev);
        return NULL;
    }
    m = mux_new(p->base, bev, p->ctx != NULL ? MUX_TLS : MUX_TCP, MUX_CLIENT, p->cfg, &pool_ops, p,
                NULL);
    if (m == NULL) return NULL;
    if (p->ctx != NULL) tls_fastopen_send(bev); /* mux_new queued the ClientHello */
    for (i = 0; i < p->n; i++)
        learn_rtt(p, p->conns[i]);
    mux_rtt_hint(m, p->path_rtt_us);
    if (array_grow(&p->conns, &p->cap, p->n, sizeof(*p->conns), 8) == -1 ||
        array_grow(&p->info, &p->info_cap, p->n, sizeof(*p->info), 8) == -1) {
        mux_close(m, MUX_CLOSE_ABORT, LOG_ERROR, "out of memory");
        return NULL;
    }
    p->conns[p->n++] = m;
    return m;
}

void
pool_set_session_cb(SSL_CTX *ctx)
{
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
}

/* The connection a new session goes on, with its id; NULL when none can be had now: *wait
 * says whether one will be (dials in flight at -remux.dial.max), else the failure is logged. */
static struct mux *
take(struct pool *p, uint16_t *sid, int *wait)
{
    struct mux *m = NULL;
    uint32_t id;
    size_t k;
    int spare = 0;

    *wait = 0;
    k = fill_all(p);
    if (!p->single) {
        struct luahost_load load = current_load(p);
        id = luahost_pool_pick(p->lua, p->info, k, &load, &spare);
        if (id != 0) m = find(p, id);
    }
    if (m != NULL) *sid = mux_next_sid(m);
    if (m == NULL || *sid == 0) {
        /* No connection may take it: it gets one of its own, unless that would pass the limit
         * on connections (refused: never put on a connection past its limits) or on dials in
         * flight (it waits for one of them). */
        if (p->n >= (size_t)p->cfg->conn_max_cnt) {
            log_msg(LOG_ERROR,
                    "[pool] %s: -remux.conn.max.cnt=%ld connections open, none may take "
                    "a new session",
                    p->label, p->cfg->conn_max_cnt);
            return NULL;
        }
        if (p->dialing >= (size_t)p->cfg->dial_max) {
            *wait = 1;
            return NULL;
        }
        m = dial(p);
        if (m == NULL) return NULL;
        *sid = mux_next_sid(m);
    } else if (spare && p->n < (size_t)p->cfg->conn_max_cnt &&
               p->dialing < (size_t)p->cfg->dial_max) {
        dial(p); /* ahead of need: the next rotation waits for no handshake */
    }
    p->taken_now++;
    /* The connection sessions went to until now may be empty: the policy decides about it. */
    if (mux_id(m) != p->last_pick) {
        p->last_pick = mux_id(m);
        event_active(p->sweep, EV_TIMEOUT, 0);
    }
    return m;
}

/* The session on m: the app's socket is read from here on. */
static void
start(struct bufferevent *bev, struct mux *m, uint16_t sid, const struct parked *w)
{
    struct session *s;

    bufferevent_enable(bev, EV_READ);
    s = session_new(m, sid, bev, SESSION_LOCAL_UP, w->dest);
    if (s == NULL) {
        log_msg(LOG_ERROR, "[sock] - %s = %u out of memory", w->dest, session_count());
        return;
    }
    session_set_header(s, w->hdr, w->hdrlen);
    session_set_asked(s, w->asked_us);
    if (w->http) session_forward_http(s, w->body_left);
}

/* A session for the app's socket bev: on a connection now, or parked until a dial is up. */
static void
open_session(struct pool *p, struct bufferevent *bev, const struct parked *req)
{
    struct timeval tv = {p->cfg->connect_sec, 0};
    struct parked *w;
    struct mux *m;
    uint16_t sid;
    int wait;

    /* Behind others already waiting: sessions are placed in the order they came. */
    m = p->parked == NULL ? take(p, &sid, &wait) : NULL;
    if (m != NULL) {
        start(bev, m, sid, req);
        return;
    }
    if (p->parked == NULL && !wait) {
        log_msg(LOG_ERROR, "[sock] - %s = %u no connection to the server", req->dest,
                session_count());
        bufferevent_free(bev);
        return;
    }
    w = malloc(sizeof(*w));
    if (w == NULL) {
        log_msg(LOG_ERROR, "[sock] - %s = %u out of memory", req->dest, session_count());
        bufferevent_free(bev);
        return;
    }
    /* Nothing is read from the app while it waits: its socket buffer holds what it sends. */
    bufferevent_disable(bev, EV_READ);
    bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
    *w = *req;
    w->bev = bev;
    w->until_us = w->asked_us + (int64_t)tv.tv_sec * 1000000;
    w->next = NULL;
    if (p->parked_tail != NULL)
        p->parked_tail->next = w;
    else
        p->parked = w;
    p->parked_tail = w;
}

/* The request as a parked entry (not yet parked: open_session copies it if it must wait). */
static void
describe(struct parked *w, const uint8_t *hdr, size_t hdrlen, const char *dest)
{
    memset(w, 0, sizeof(*w));
    memcpy(w->hdr, hdr, hdrlen);
    w->hdrlen = hdrlen;
    snprintf(w->dest, sizeof(w->dest), "%s", dest);
    w->asked_us = clock_now_us();
}

void
pool_open(struct pool *p, struct bufferevent *bev, const uint8_t *hdr, size_t hdrlen,
          const char *dest)
{
    struct parked w;

    describe(&w, hdr, hdrlen, dest);
    open_session(p, bev, &w);
}

void
pool_open_http(struct pool *p, struct bufferevent *bev, const uint8_t *hdr, size_t hdrlen,
               const char *dest, int64_t body_left)
{
    struct parked w;

    describe(&w, hdr, hdrlen, dest);
    w.http = 1;
    w.body_left = body_left;
    open_session(p, bev, &w);
}

struct mux *
pool_take_now(struct pool *p, uint16_t *sid)
{
    int wait;

    return take(p, sid, &wait);
}

/* Ends the parked sessions that came before before_us (all: INT64_MAX), logged with why. */
static void
fail_parked(struct pool *p, int64_t before_us, const char *why)
{
    while (p->parked != NULL && p->parked->until_us <= before_us) {
        struct parked *w = p->parked;
        p->parked = w->next;
        if (p->parked == NULL) p->parked_tail = NULL;
        log_msg(LOG_ERROR, "[sock] - %s = %u no connection to the server: %s", w->dest,
                session_count(), why);
        bufferevent_free(w->bev);
        free(w);
    }
}

/* Places parked sessions, in order, for as long as connections take them. */
static void
pool_unpark(evutil_socket_t fd, short what, void *arg)
{
    struct pool *p = arg;
    struct mux *m;
    uint16_t sid;
    int wait;

    (void)fd;
    (void)what;
    while (p->parked != NULL) {
        struct parked *w = p->parked;
        m = take(p, &sid, &wait);
        if (m == NULL && wait) return;
        p->parked = w->next;
        if (p->parked == NULL) p->parked_tail = NULL;
        if (m != NULL) {
            start(w->bev, m, sid, w);
        } else {
            log_msg(LOG_ERROR, "[sock] - %s = %u no connection to the server", w->dest,
                    session_count());
            bufferevent_free(w->bev);
        }
        free(w);
    }
}
