/* mux.c: a ReMux lower connection. Frames are parsed with frame.c straight from the
 * bufferevent's input; data payloads move to their session's socket with
 * evbuffer_remove_buffer (chains move, bytes are not copied). The mux never stops reading:
 * per-session windows bound what a peer may send, so one slow reader cannot stall the rest.
 *
 * Close path: mux_close() runs once (the closing flag), closes the sessions, tells the owner,
 * then lets queued output drain, sends TLS close_notify, and frees the bufferevent; the struct
 * itself is freed on a later loop pass so no callback on the stack sees freed memory. */
#include "mux.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "account.h"
#include "clock.h"
#include "log.h"
#include "metrics.h"
#include "bulkread.h"
#include "turns.h"
#include "sidmap.h"
#include "tls.h"
#include "writethrough.h"

#define MUX_OUT_HIGH (1024 * 1024)      /* past this much queued output, sessions stop reading */
#define MUX_OUT_MAX (16 * MUX_OUT_HIGH) /* only replies to a peer that never reads get here */
#define MUX_CLOSE_DRAIN_SEC 2           /* how long a closing mux may flush before it is dropped */
#define MUX_MAX_SESSIONS 4096
#define MUX_RTT_PROBES 4                  /* PINGs sent back to back when the connection comes up */
#define MUX_TLS_IN_MAX (4 * BULKREAD_MAX) /* undecrypted input the bulk reader may queue */
/* Sessions a server opens for one connection in one loop pass: the rest of what it read waits
 * for the next pass (the other connections' turn first). A read of 256 KiB holds ten thousand
 * opening frames, and a session's descriptor is freed only at the end of the pass in which it
 * closes: a peer that opened and reset sessions by the thousand held thousands of descriptors
 * at once (seen: 5,580 from one connection). */
#define MUX_OPENS_PER_PASS 64
/* Server: sessions a peer may abandon (reset before any byte came back, or have refused) before
 * its connection is closed, once they are also more than half of those it opened: opening and
 * resetting sessions at once costs the peer two frames and the server a connect each (HTTP/2's
 * "rapid reset", CVE-2023-44487). An app that gives up on a slow site now and then is far from
 * it. */
#define MUX_ABANDONED_MIN 256
/* Frames read and not yet handled, past which reading pauses (above the largest frame, which
 * must fit). Over TLS the filter stops decrypting there (a read watermark): decrypted tiny
 * records take a buffer chain each, 40 times their size (seen: 72 MiB of chains for 2 MiB of
 * opening frames held back). What is held back is packed into one chain (mux_read_cb). */
#define MUX_IN_BACKLOG_MAX (2 * (FRAME_HDR_LEN + FRAME_MAX_PAYLOAD))
#define MUX_BULK_AFTER (1 << 20)   /* bytes sent since quiet before TLS records grow */
#define MUX_RECORD_SMALL 1200      /* plaintext of a small TLS record: one or two segments */
#define MUX_QUIET_US 1000000       /* nothing sent for this long: the connection is quiet */
#define MUX_TCP_RTT_EVERY_US 10000 /* the kernel's smoothed RTT is asked at most this often */

struct mux {
    char peer[64];     /* server: the peer's address */
    char subject[256]; /* server: its client certificate's subject, once known */
    char fp[65];       /* server: its certificate's SHA-256, hex */
    struct event_base *base;
    struct bufferevent *bev;
    struct evbuffer *stage;     /* frames of this loop pass, for the bufferevent at its end */
    struct event *flush;        /* the end of the pass: moves stage to the bufferevent */
    struct event *more;         /* server: frames left for the next pass (MUX_OPENS_PER_PASS) */
    unsigned opens;             /* server: sessions opened in this pass */
    unsigned opened, abandoned; /* server: sessions opened, and of those, abandoned */
    enum metrics_tls_failure handshake_failure; /* why, if it closes before its handshake ends */
    unsigned draining : 1;       /* counted in mux_draining_count (a GOAWAY went either way) */
    unsigned abandon_closed : 1; /* closed for abandoning too many (mux_abandoned) */
    unsigned more_due : 1;       /* more is active: the pass's allowance of opens is spent */
    struct bulkread *rd;         /* plain TCP: the read side (TLS reads through the bufferevent) */
    const struct config *cfg;
    const struct mux_ops *ops;
    void *arg;
    struct sidmap *sessions;
    struct account acct; /* what its sessions hold (under its client's, on the server) */
    struct event *timer; /* handshake timeout, then the keepalive tick */
    uint32_t id;
    unsigned tls : 1, client : 1, ready : 1, closing : 1, freed_bev : 1;
    unsigned out_of_memory : 1; /* a frame could not be staged: closed at the end of the pass */
    unsigned heard : 1;         /* a byte came from the peer (server: its ClientHello began) */
    unsigned hello_due : 1;     /* server: the timer is the -tls.hello.sec deadline */
    unsigned goaway_sent : 1, goaway_rcvd : 1, overflow : 1, rd_paused : 1;
    uint16_t next_sid;  /* client: the next id to open */
    uint16_t open_next; /* client: the lowest id whose first frame has not left */
    uint16_t last_sid;  /* server: the highest id opened */
    uint16_t goaway_last;
    unsigned carried;
    struct turns turns; /* sessions waiting for output room (turns.h) */
    uint16_t *outq;     /* sids whose local socket output waits for the end of the pass */
    uint16_t outq_n;
    int64_t born_us, idle_since_us, last_rx_us, min_rtt_us;
    int64_t tcp_rtt_us, tcp_rtt_at_us; /* the kernel's smoothed RTT, and when it was asked */
    int64_t last_flush_us;
    uint64_t since_quiet; /* bytes sent since the connection was last quiet */
    unsigned rtt_samples;
    /* The PINGs not yet answered: a PONG counts only for one of these (a forged or
     * unsolicited one would set the RTT window growth trusts). */
    uint64_t ping_out[MUX_RTT_PROBES];
    unsigned nping_out;
    struct mux *all_prev, *all_next; /* every mux not yet freed, for mux_free_all() */
};

static struct mux *all_muxes;

static unsigned mux_open_count;
static unsigned mux_ready_count, mux_draining_count; /* of those open: handshake done; GOAWAY */

static void mux_read_cb(struct bufferevent *bev, void *arg);
static void open_in_order(struct mux *m, uint16_t sid);
static void mux_more_cb(evutil_socket_t fd, short what, void *arg);
static void mux_write_cb(struct bufferevent *bev, void *arg);
static void mux_event_cb(struct bufferevent *bev, short what, void *arg);
static void mux_timer_cb(evutil_socket_t fd, short what, void *arg);
static void mux_on_ready(struct mux *m);
static void mux_tls_in_cb(struct bufferevent *sock, void *arg);
static void mux_tls_resume(struct mux *m);
static void mux_sock_event_cb(struct bufferevent *sock, short what, void *arg);
static void send_ping(struct mux *m);
static void mux_flush_cb(evutil_socket_t fd, short what, void *arg);

struct mux *
mux_new(struct event_base *base, struct bufferevent *bev, enum mux_transport transport,
        enum mux_role role, const struct config *cfg, const struct mux_ops *ops, void *arg,
        const char *peer)
{
    struct mux *m = calloc(1, sizeof(*m));
    struct timeval tv = {cfg->handshake_sec, 0};
    /* An accepted TLS connection gets -tls.hello.sec for its first byte: a stranger that only
     * connects holds a handshake slot that long, not -tls.handshake.sec. */
    int hello = transport == MUX_TLS && role == MUX_SERVER && cfg->hello_sec < cfg->handshake_sec;

    if (m == NULL) goto err;
    account_init(&m->acct, NULL, (int64_t)cfg->conn_buffer_max_mib << 20, "-remux.buffer.max.mib");
    m->base = base;
    m->bev = bev;
    m->cfg = cfg;
    m->ops = ops;
    m->arg = arg;
    m->tls = transport == MUX_TLS;
    m->client = role == MUX_CLIENT;
    m->next_sid = 1;
    m->open_next = 1;
    m->born_us = m->idle_since_us = m->last_rx_us = clock_now_us();
    evutil_secure_rng_get_bytes(&m->id, sizeof(m->id));
    m->sessions = sidmap_new();
    m->timer = event_new(base, -1, 0, mux_timer_cb, m);
    m->stage = evbuffer_new();
    m->flush = event_new(base, -1, 0, mux_flush_cb, m);
    m->more = event_new(base, -1, 0, mux_more_cb, m);
    if (m->sessions == NULL || m->timer == NULL || m->stage == NULL || m->flush == NULL ||
        m->more == NULL)
        goto err;
    bufferevent_setcb(bev, mux_read_cb, mux_write_cb, mux_event_cb, m);
    if (!m->tls) bufferevent_set_max_single_read(bev, BULKREAD_MAX); /* TLS: tls.c sets it */
    bufferevent_set_max_single_write(bev, BULKREAD_MAX);
    bufferevent_setwatermark(bev, EV_WRITE, MUX_OUT_HIGH / 2, 0);
    if (m->tls) {
        /* The TLS filter decrypts what the bulk reader puts in the socket bufferevent below it. */
        m->rd = bulkread_new(base, bufferevent_get_underlying(bev), mux_tls_in_cb,
                             mux_sock_event_cb, m);
        if (!m->client) bufferevent_setwatermark(bev, EV_READ, 0, MUX_IN_BACKLOG_MAX);
        if (m->rd == NULL) goto err;
        bulkread_enable(m->rd);
        /* An accepted connection decrypts from its first byte on (mux_tls_in_cb): enabling
         * the filter sets up OpenSSL's buffers and a record's span (about 60 KiB), which a
         * stranger that only connects would hold for nothing. */
        bufferevent_enable(bev, m->client ? EV_READ | EV_WRITE : EV_WRITE);
    } else {
        m->rd = bulkread_new(base, bev, mux_read_cb, mux_event_cb, m);
        if (m->rd == NULL) goto err;
        bulkread_enable(m->rd);
        bufferevent_enable(bev, EV_WRITE);
    }
    if (hello) {
        tv.tv_sec = cfg->hello_sec;
        m->hello_due = 1;
    }
    evtimer_add(m->timer, &tv);
    m->all_next = all_muxes;
    if (all_muxes != NULL) all_muxes->all_prev = m;
    all_muxes = m;
    mux_open_count++;
    metrics.conns_opened++;
    if (peer != NULL) {
        snprintf(m->peer, sizeof(m->peer), "%s", peer);
        log_msg(LOG_INFO, "[conn] + %08x = %u from %s", m->id, mux_open_count, peer);
    } else {
        log_msg(LOG_INFO, "[conn] + %08x = %u", m->id, mux_open_count);
    }
    if (!m->tls && !m->client) mux_on_ready(m); /* an accepted TCP socket is up already */
    return m;
err:
    if (m != NULL) {
        bulkread_free(m->rd);
        sidmap_free(m->sessions);
        if (m->timer != NULL) event_free(m->timer);
        if (m->flush != NULL) event_free(m->flush);
        if (m->more != NULL) event_free(m->more);
        if (m->stage != NULL) evbuffer_free(m->stage);
        account_fini(&m->acct);
        free(m);
    }
    bufferevent_free(bev);
    return NULL;
}

static void
mux_free_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mux *m = arg;

    (void)fd;
    (void)what;
    if (m->all_prev != NULL)
        m->all_prev->all_next = m->all_next;
    else
        all_muxes = m->all_next;
    if (m->all_next != NULL) m->all_next->all_prev = m->all_prev;
    sidmap_free(m->sessions);
    turns_free(&m->turns);
    free(m->outq);
    account_fini(&m->acct);
    free(m);
}

/* Sends close_notify (TLS) and frees the bufferevent, then the struct on a later pass. */
static void
mux_finish(struct mux *m, enum mux_close_how how)
{
    struct timeval now = {0, 0};

    if (m->freed_bev) return;
    m->freed_bev = 1;
    event_free(m->timer);
    m->timer = NULL;
    event_free(m->flush);
    m->flush = NULL;
    event_free(m->more);
    m->more = NULL;
    evbuffer_free(m->stage); /* an abrupt close drops what it holds */
    m->stage = NULL;
    bulkread_free(m->rd);
    m->rd = NULL;
    if (m->tls)
        tls_bufferevent_free(m->bev,
                             how == MUX_CLOSE_ORDERLY && m->ready ? TLS_CLOSE_NOTIFY : TLS_SILENT);
    else
        bufferevent_free(m->bev);
    m->bev = NULL;
    event_base_once(m->base, -1, EV_TIMEOUT, mux_free_cb, m, &now);
}

/* Frames are staged for the length of a loop pass and handed to the bufferevent at its end
 * (the flush event runs after the callbacks already due), so that the frames of every callback
 * in the pass share TLS records: the filter encrypts each addition to its output at once, and a
 * burst of 100 small answers left as 200 records, a third of its bytes in record overhead and
 * more than a young connection's first congestion window. (libevent's deferred evbuffer
 * callbacks would do the same inside the filter, but crash its finalisation under load.) */
static struct evbuffer *
mux_stage(struct mux *m)
{
    event_active(m->flush, EV_TIMEOUT, 0); /* once per pass: already active is a no-op */
    return m->stage;
}

/* Output not yet taken by the socket: staged frames and the bufferevent's queue. */
static size_t
mux_queued(const struct mux *m)
{
    return evbuffer_get_length(m->stage) + evbuffer_get_length(bufferevent_get_output(m->bev));
}

/* Record size: a record is decrypted only once all of it has arrived, so 16 KiB records make
 * the first of many small answers wait for the last when the connection paces or is held by
 * its congestion window. Small records until MUX_BULK_AFTER bytes have left since the
 * connection was last quiet, then 16 KiB ones: a bulk transfer pays for small records in its
 * first MiB only. (Go's crypto/tls sizes records on the same reasoning.) The filter encrypts
 * each addition to its output at once, one record per SSL_write of a buffer chain, so a small
 * record is a small addition; SSL_set_max_send_fragment cannot be raised again once OpenSSL has
 * sized its write buffer (seen: records stayed small, the client's CPU per GB doubled). */
static void
mux_flush(struct mux *m)
{
    struct evbuffer *out;
    size_t n = evbuffer_get_length(m->stage); /* freed with the flush event, after any close */
    int64_t now;

    if (n == 0) return;
    out = bufferevent_get_output(m->bev);
    if (m->tls) {
        now = clock_now_us();
        if (now - m->last_flush_us >= MUX_QUIET_US) m->since_quiet = 0;
        m->last_flush_us = now;
        m->since_quiet += n;
        /* While the socket takes what the filter writes, each addition leaves as its own
         * record; past that, what waits is encrypted later in larger pieces, as before. */
        if (m->since_quiet < MUX_BULK_AFTER)
            while (evbuffer_get_length(m->stage) > MUX_RECORD_SMALL &&
                   evbuffer_get_length(out) == 0)
                evbuffer_remove_buffer(m->stage, out, MUX_RECORD_SMALL);
    }
    evbuffer_add_buffer(out, m->stage);
}

int
mux_defer_out(struct mux *m, uint16_t sid)
{
    if (m->closing || m->freed_bev) return -1;
    if (m->outq == NULL) m->outq = malloc(MUX_MAX_SESSIONS * sizeof(*m->outq));
    /* Each session is queued once a pass (it says so itself), and at most MUX_MAX_SESSIONS
     * live on the connection. */
    if (m->outq == NULL || m->outq_n == MUX_MAX_SESSIONS) return -1;
    m->outq[m->outq_n++] = sid;
    event_active(m->flush, EV_TIMEOUT, 0);
    return 0;
}

static void
mux_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mux *m = arg;
    struct mux_chan *s;
    uint16_t i;

    (void)fd;
    (void)what;
    if (m->out_of_memory) {
        mux_close(m, MUX_CLOSE_ABORT, LOG_ERROR, "out of memory");
        return;
    }
    /* Sessions' local sockets first: the WINDOW credit their writes return joins this flush.
     * A session gone since it queued is no longer in the map (ids are not reused). */
    for (i = 0; i < m->outq_n; i++)
        if ((s = sidmap_get(m->sessions, m->outq[i])) != NULL && s->ops->flush_out != NULL)
            s->ops->flush_out(s);
    m->outq_n = 0;
    mux_flush(m);
    /* The pass's records go to the socket now (writethrough.h): waiting for EV_WRITE cost two
     * epoll_ctl and a loop pass per flush, twice per request on each end. Only on a connection
     * that is up, and not closing: the write callback that follows may finish a closing mux. */
    if (m->ready && !m->closing)
        writethrough_flush(m->tls ? bufferevent_get_underlying(m->bev) : m->bev);
}

void
mux_close(struct mux *m, enum mux_close_how how, int level, const char *reason)
{
    void *live[MUX_MAX_SESSIONS];
    size_t n, i;
    struct timeval tv = {MUX_CLOSE_DRAIN_SEC, 0};

    if (m->closing) return;
    m->closing = 1;
    mux_open_count--;
    if (m->ready) mux_ready_count--;
    if (m->draining) mux_draining_count--;
    if (how == MUX_CLOSE_ORDERLY)
        metrics.conns_closed_orderly++;
    else
        metrics.conns_closed_abort++;
    if (m->tls && !m->ready) metrics.tls_failed[m->handshake_failure]++;
    log_msg(level, "[conn] - %08x = %u%s%s", m->id, mux_open_count, *reason ? " " : "", reason);
    do {
        n = sidmap_values(m->sessions, live, MUX_MAX_SESSIONS);
        for (i = 0; i < n; i++) {
            struct mux_chan *c = live[i];
            c->ops->mux_gone(c, reason);
        }
    } while (n == MUX_MAX_SESSIONS);
    if (m->ops->closed != NULL) m->ops->closed(m, m->arg);
    bufferevent_disable(m->bev, EV_READ);
    if (m->rd != NULL) bulkread_disable(m->rd);
    /* An orderly close flushes what is queued (a RESET, a GOAWAY) before close_notify. */
    if (how == MUX_CLOSE_ORDERLY) mux_flush(m);
    if (how == MUX_CLOSE_ORDERLY && evbuffer_get_length(bufferevent_get_output(m->bev)) > 0) {
        bufferevent_setwatermark(m->bev, EV_WRITE, 0, 0);
        event_del(m->timer);
        evtimer_add(m->timer, &tv);
        return;
    }
    mux_finish(m, how);
}

/* A GOAWAY went either way: counted once among the ready connections that drain. */
static void
now_draining(struct mux *m)
{
    if (m->ready && !m->draining) {
        m->draining = 1;
        mux_draining_count++;
    }
}

/* Tells the sessions at or below last that the connection is going away (mux_chan_ops). */
static void
chans_goaway(struct mux *m, uint16_t last)
{
    void *live[MUX_MAX_SESSIONS];
    size_t n = sidmap_values(m->sessions, live, MUX_MAX_SESSIONS), i;

    for (i = 0; i < n; i++) {
        struct mux_chan *c = live[i];
        if (c->ops->goaway != NULL && c->sid <= last) c->ops->goaway(c);
    }
}

void
mux_goaway(struct mux *m)
{
    struct frame_ctl c = {.type = FRAME_CTL_GOAWAY};

    if (m->closing || m->goaway_sent) return;
    m->goaway_sent = 1;
    now_draining(m);
    c.sid = m->last_sid;
    mux_send_ctl(m, &c);
    chans_goaway(m, m->last_sid);
}

uint16_t
mux_next_sid(struct mux *m)
{
    if (m->next_sid == 0xffff || m->goaway_rcvd || m->closing) return 0;
    return m->next_sid++;
}

int
mux_attach(struct mux *m, struct mux_chan *c)
{
    if (sidmap_count(m->sessions) >= MUX_MAX_SESSIONS) return -1;
    if (sidmap_put(m->sessions, c->sid, c) == -1) return -1;
    m->carried++;
    return 0;
}

void
mux_detach(struct mux *m, uint16_t sid)
{
    sidmap_del(m->sessions, sid);
    if (sidmap_count(m->sessions) == 0) {
        m->idle_since_us = clock_now_us();
        if (!m->closing && m->ops->idle != NULL) m->ops->idle(m, m->arg);
    }
}

void
mux_send(struct mux *m, uint16_t sid, const void *prefix, size_t plen, struct evbuffer *src,
         size_t n)
{
    struct evbuffer *out;
    struct evbuffer_iovec v;
    uint8_t *p;

    if (m->closing || m->out_of_memory) return;
    if (m->client && sid > m->open_next) open_in_order(m, sid);
    out = mux_stage(m);
    /* One copy into contiguous space: the TLS bufferevent calls SSL_write once per buffer
     * chain, so frames moved in as small chains would leave as small records (a 4-byte header
     * alone costs a record and an AEAD pass). Contiguous frames fill whole records. */
    if (evbuffer_reserve_space(out, (ev_ssize_t)(FRAME_HDR_LEN + plen + n), &v, 1) != 1) {
        /* Closed at the end of the pass, not here: the caller is a session that goes on using
         * itself after this returns, and closing the mux closes (frees) its sessions. */
        m->out_of_memory = 1;
        event_active(m->flush, EV_TIMEOUT, 0);
        return;
    }
    p = v.iov_base;
    frame_encode_hdr(p, sid, (uint16_t)(plen + n));
    if (plen > 0) memcpy(p + FRAME_HDR_LEN, prefix, plen);
    if (n > 0) evbuffer_remove(src, p + FRAME_HDR_LEN + plen, n);
    v.iov_len = FRAME_HDR_LEN + plen + n;
    evbuffer_commit_space(out, &v, 1);
}

ssize_t
mux_send_from_fd(struct mux *m, uint16_t sid, const void *prefix, size_t plen, int fd, size_t max)
{
    struct evbuffer *out;
    struct evbuffer_iovec v;
    uint8_t *p;
    ssize_t got;
    int e;

    if (m->closing) {
        errno = EPIPE;
        return -1;
    }
    if (m->client && sid > m->open_next) open_in_order(m, sid);
    out = mux_stage(m);
    if (evbuffer_reserve_space(out, (ev_ssize_t)(FRAME_HDR_LEN + plen + max), &v, 1) != 1) {
        errno = ENOMEM;
        return -1;
    }
    p = v.iov_base;
    got = read(fd, p + FRAME_HDR_LEN + plen, max);
    e = errno;
    if (got <= 0) {
        evbuffer_commit_space(out, &v, 0);
        errno = e;
        return got;
    }
    frame_encode_hdr(p, sid, (uint16_t)(plen + (size_t)got));
    if (plen > 0) memcpy(p + FRAME_HDR_LEN, prefix, plen);
    v.iov_len = FRAME_HDR_LEN + plen + (size_t)got;
    evbuffer_commit_space(out, &v, 1);
    return got;
}

void
mux_send_ctl(struct mux *m, const struct frame_ctl *c)
{
    uint8_t buf[FRAME_CTL_MAX_LEN];
    size_t n;

    if (m->closing) return;
    if (mux_queued(m) > MUX_OUT_MAX) {
        /* Data stops at MUX_OUT_HIGH; only replies (PONG, WINDOW) to a peer that sends but
         * never reads can pile up this far. Drop them and close on the timer's next pass: a
         * session's callback may be on the stack here. */
        if (!m->overflow) {
            m->overflow = 1;
            event_active(m->timer, EV_TIMEOUT, 0);
        }
        return;
    }
    n = frame_encode_ctl(buf, c);
    evbuffer_add(mux_stage(m), buf, n);
    if (c->type == FRAME_CTL_RESET) metrics_reset(RESET_SENT, c->reason);
}

int
mux_writable(const struct mux *m)
{
    return !m->closing && mux_queued(m) < MUX_OUT_HIGH;
}

/* Client: session sid is sending a frame. Sessions below it that have not sent their first
 * send their EagerSocks header alone now: ids must open on the wire in ascending order, since
 * the server takes a frame for an id at or below the highest it opened for a session already
 * closed (and drops it). Here, not in session.c, so that no path of a session can forget it. */
static void
open_in_order(struct mux *m, uint16_t sid)
{
    while (m->open_next < sid) {
        struct mux_chan *s = sidmap_get(m->sessions, m->open_next);
        m->open_next++;
        /* a no-op for one that has sent it */
        if (s != NULL && s->ops->send_header != NULL) s->ops->send_header(s);
    }
}

void
mux_wait_turn(struct mux *m, struct turn_ticket *k, uint16_t sid)
{
    turns_wait(&m->turns, k, sid);
}

int
mux_has_waiters(const struct mux *m)
{
    return turns_waiting(&m->turns);
}

/* Wakes the first session in line that still exists; 0 when the line is empty. */
static int
wake_next(struct mux *m)
{
    struct mux_chan *s;
    uint16_t sid;

    while ((sid = turns_next(&m->turns)) != 0) {
        s = sidmap_get(m->sessions, sid);
        if (s != NULL) {
            if (s->ops->wake != NULL) s->ops->wake(s);
            return 1;
        }
    }
    return 0;
}

void
mux_pass_turn(struct mux *m)
{
    if (mux_writable(m)) wake_next(m);
}

/* Room came (the output fell to its low-water mark): as many turns as it holds (turns.h). */
static void
wake_waiting(struct mux *m)
{
    void *live[MUX_MAX_SESSIONS];
    size_t out = mux_queued(m), k, i;
    size_t turns = turns_for_room(out < MUX_OUT_HIGH ? MUX_OUT_HIGH - out : 0);

    if (turns_take_wake_all(&m->turns)) {
        k = sidmap_values(m->sessions, live, MUX_MAX_SESSIONS);
        for (i = 0; i < k; i++) {
            struct mux_chan *c = live[i];
            if (c->ops->wake != NULL) c->ops->wake(c);
        }
    }
    while (turns-- > 0 && wake_next(m))
        ;
}

static void
send_ping(struct mux *m)
{
    struct frame_ctl c = {.type = FRAME_CTL_PING};

    c.opaque = (uint64_t)clock_now_us();
    if (m->nping_out == MUX_RTT_PROBES) { /* the oldest is taken as lost */
        memmove(&m->ping_out[0], &m->ping_out[1], (MUX_RTT_PROBES - 1) * sizeof(m->ping_out[0]));
        m->nping_out--;
    }
    m->ping_out[m->nping_out++] = c.opaque;
    mux_send_ctl(m, &c);
}

/* 1 if opaque answers a PING still outstanding (which is then answered), else 0. */
static int
ping_answered(struct mux *m, uint64_t opaque)
{
    unsigned i;

    for (i = 0; i < m->nping_out; i++) {
        if (m->ping_out[i] != opaque) continue;
        memmove(&m->ping_out[i], &m->ping_out[i + 1],
                (m->nping_out - i - 1) * sizeof(m->ping_out[0]));
        m->nping_out--;
        return 1;
    }
    return 0;
}

void
mux_abandoned(struct mux *m)
{
    char why[128];

    if (++m->abandoned < MUX_ABANDONED_MIN || m->abandoned * 2 <= m->opened || m->closing) return;
    snprintf(why, sizeof(why), "closed: %u of its %u sessions reset before any reply or refused",
             m->abandoned, m->opened);
    m->abandon_closed = 1;
    metrics.rapid_reset_closed++;
    mux_close(m, MUX_CLOSE_ORDERLY, LOG_WARN, why);
}

static int
handle_ctl(struct mux *m, const uint8_t *p, size_t len, const char **err)
{
    struct frame_ctl c;
    struct mux_chan *s;
    int64_t rtt;

    if (frame_decode_ctl(p, len, &c, err) == -1) return -1;
    switch (c.type) {
    case FRAME_CTL_WINDOW:
    case FRAME_CTL_RESET:
        if (c.type == FRAME_CTL_RESET) metrics_reset(RESET_RECEIVED, c.reason);
        s = sidmap_get(m->sessions, c.sid);
        if (s == NULL) {
            /* A session that ended a moment ago may still get one: only ids never opened are
             * an error. */
            if (m->client ? c.sid >= m->next_sid : c.sid > m->last_sid) {
                *err = c.type == FRAME_CTL_WINDOW ? "WINDOW for a session never opened"
                                                  : "RESET for a session never opened";
                return -1;
            }
            return 0;
        }
        if (c.type == FRAME_CTL_WINDOW) return s->ops->on_window(s, c.increment, err);
        if (!m->client && !s->ops->replied(s)) {
            s->ops->on_reset(s, c.reason);
            mux_abandoned(m);
            return 0;
        }
        s->ops->on_reset(s, c.reason);
        return 0;
    case FRAME_CTL_PING:
        c.type = FRAME_CTL_PONG;
        mux_send_ctl(m, &c);
        return 0;
    case FRAME_CTL_PONG:
        if (!ping_answered(m, c.opaque)) return 0; /* not one of ours: ignored */
        rtt = clock_now_us() - (int64_t)c.opaque;
        /* The smallest sample is the path's RTT; the others include queueing behind data
         * (a PONG waits in the peer's output), and a window sized to a queue grows the queue.
         * A few samples back to back at the start: the first one includes handshake work. */
        if (m->min_rtt_us == 0 || rtt < m->min_rtt_us) m->min_rtt_us = rtt;
        if (++m->rtt_samples < MUX_RTT_PROBES) send_ping(m);
        return 0;
    case FRAME_CTL_GOAWAY: {
        void *live[MUX_MAX_SESSIONS];
        size_t n, i;

        m->goaway_rcvd = 1;
        m->goaway_last = c.sid;
        now_draining(m);
        log_msg(LOG_INFO, "[ctrl] %08x goaway (last session %u)", m->id, c.sid);
        /* Sessions above the last id were never taken by the peer. */
        n = sidmap_values(m->sessions, live, MUX_MAX_SESSIONS);
        for (i = 0; i < n; i++) {
            struct mux_chan *ch = live[i];
            if (ch->sid > c.sid) ch->ops->on_reset(ch, FRAME_RST_POLICY);
        }
        chans_goaway(m, c.sid);
        return 0;
    }
    }
    return 0;
}

static int
handle_data(struct mux *m, uint16_t sid, struct evbuffer *in, size_t len, const char **err)
{
    struct mux_chan *s = sidmap_get(m->sessions, sid);
    struct frame_ctl rst = {.type = FRAME_CTL_RESET, .reason = FRAME_RST_POLICY};

    if (s != NULL) return len == 0 ? s->ops->on_fin(s, err) : s->ops->on_data(s, in, len, err);
    if (m->client) {
        if (sid >= m->next_sid) {
            *err = "data for a session never opened";
            return -1;
        }
        evbuffer_drain(in, len); /* a session we closed a moment ago */
        return 0;
    }
    if (sid <= m->last_sid) {
        evbuffer_drain(in, len);
        return 0;
    }
    if (len == 0) {
        *err = "a session opened with an empty frame";
        return -1;
    }
    m->last_sid = sid;
    m->opens++;
    m->opened++;
    if (m->goaway_sent) {
        rst.sid = sid;
        mux_send_ctl(m, &rst);
        evbuffer_drain(in, len);
        return 0;
    }
    return m->ops->open(m, sid, in, len, err, m->arg);
}

static void
mux_read_cb(struct bufferevent *bev, void *arg)
{
    struct mux *m = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    uint8_t buf[FRAME_HDR_LEN + FRAME_CTL_MAX_LEN];
    struct frame_hdr h;
    const char *err = NULL;
    char why[128];
    size_t have;

    m->last_rx_us = clock_now_us();
    mux_tls_resume(m);
    if (!m->more_due) m->opens = 0; /* a new pass */
    while (!m->closing) {
        if (m->opens >= MUX_OPENS_PER_PASS && !m->client) {
            /* The rest on the next pass; past a backlog, nothing more is read meanwhile. */
            /* A timer of 0, not event_active: an active event queued from a callback runs
             * in the same pass, before the loop polls again (seen: an honest client's requests
             * waited 0.6-1.9 s behind a flood's backlog). The timer waits for the next poll. */
            if (!m->more_due) {
                struct timeval zero = {0, 0};
                evtimer_add(m->more, &zero);
            }
            m->more_due = 1;
            evbuffer_pullup(in, -1);
            if (!m->tls && evbuffer_get_length(in) > MUX_IN_BACKLOG_MAX && m->rd != NULL) {
                bulkread_disable(m->rd);
                m->rd_paused = 1;
            }
            break;
        }
        have = evbuffer_get_length(in);
        if (evbuffer_copyout(in, buf, FRAME_HDR_LEN) < FRAME_HDR_LEN) break;
        frame_decode_hdr(buf, FRAME_HDR_LEN, &h);
        if (h.sid == 0 && h.len > FRAME_CTL_MAX_LEN) {
            err = "control frame too long";
            break;
        }
        if (have < FRAME_HDR_LEN + (size_t)h.len) break;
        if (h.sid == 0) {
            evbuffer_remove(in, buf, FRAME_HDR_LEN + h.len);
            if (handle_ctl(m, buf + FRAME_HDR_LEN, h.len, &err) == -1) break;
        } else {
            evbuffer_drain(in, FRAME_HDR_LEN);
            if (handle_data(m, h.sid, in, h.len, &err) == -1) break;
        }
    }
    if (err != NULL && !m->closing) {
        snprintf(why, sizeof(why), "protocol error: %s", err);
        mux_close(m, MUX_CLOSE_ABORT, LOG_ERROR, why);
    }
}

static void
mux_write_cb(struct bufferevent *bev, void *arg)
{
    struct mux *m = arg;

    if (m->closing) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0) mux_finish(m, MUX_CLOSE_ORDERLY);
        return;
    }
    wake_waiting(m);
}

/* Why the peer's certificate was refused ("certificate has expired"), or NULL. */
static const char *
verify_detail(const struct mux *m)
{
    SSL *ssl = m->tls ? bufferevent_openssl_get_ssl(m->bev) : NULL;
    long r = ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK;

    return r == X509_V_OK ? NULL : X509_verify_cert_error_string(r);
}

/* Client: sessions that waited for the handshake to learn what the server speaks (a UDP
 * session opens only on a connection that agreed v2). */
static void
chans_ready(struct mux *m)
{
    void *live[MUX_MAX_SESSIONS];
    size_t n = sidmap_values(m->sessions, live, MUX_MAX_SESSIONS), i;

    for (i = 0; i < n && !m->closing; i++) {
        struct mux_chan *c = live[i];
        if (c->ops->ready != NULL && sidmap_get(m->sessions, c->sid) == c) c->ops->ready(c);
    }
}

/* The lower connection is up: the keepalive tick replaces the handshake timeout. */
static void
mux_on_ready(struct mux *m)
{
    struct timeval tv = {m->cfg->ping_sec, 0};
    struct timeval wtv = {3 * m->cfg->ping_sec, 0};

    m->ready = 1;
    mux_ready_count++;
    m->last_rx_us = clock_now_us();
    if (m->tls && SSL_session_reused(mux_ssl(m)))
        metrics.tls_resumed++;
    else if (m->tls)
        metrics.tls_full++;
    event_del(m->timer);
    event_assign(m->timer, m->base, -1, EV_PERSIST, mux_timer_cb, m);
    evtimer_add(m->timer, &tv);
    /* A peer that stops reading: no write progress for as long as keepalive allows silence. */
    bufferevent_set_timeouts(m->bev, NULL, &wtv);
    send_ping(m); /* the first RTT sample, for window tuning */
    if (m->ops->ready != NULL) m->ops->ready(m, m->arg);
    if (m->client && !m->closing) chans_ready(m);
}

/* Sessions that still need the connection (those done both ways finish without it). */
static size_t
sessions_needing(const struct mux *m)
{
    void *live[MUX_MAX_SESSIONS];
    size_t n = sidmap_values(m->sessions, live, MUX_MAX_SESSIONS), i, k = 0;

    for (i = 0; i < n; i++)
        if (((struct mux_chan *)live[i])->ops->needs_mux(live[i])) k++;
    return k;
}

static void
mux_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct mux *m = arg;
    char why[512], tlserr[384];
    const char *detail;
    int e = EVUTIL_SOCKET_ERROR(), lost;
    enum tls_error_kind kind = TLS_ERROR_NONE;
    SSL *ssl;

    if (what & BEV_EVENT_CONNECTED) {
        ssl = m->tls ? bufferevent_openssl_get_ssl(bev) : NULL;
        if (ssl != NULL && !m->client) {
            /* Who connected, at info: the line that ties the [conn] id (and so its [sock]
             * lines) to a client certificate. */
            tls_peer_identity(ssl, m->subject, sizeof(m->subject), m->fp, sizeof(m->fp));
            log_msg(LOG_INFO, "[tls] ~ %08x %s %s%s from %s: \"%s\" sha256 %s", m->id,
                    SSL_get_version(ssl), SSL_get_cipher_name(ssl),
                    SSL_session_reused(ssl) ? " resumed" : "", m->peer,
                    m->subject[0] ? m->subject : "(no certificate)", m->fp[0] ? m->fp : "-");
        } else if (ssl != NULL) {
            log_msg(LOG_DEBUG, "[tls] ~ %08x %s %s%s", m->id, SSL_get_version(ssl),
                    SSL_get_cipher_name(ssl), SSL_session_reused(ssl) ? " resumed" : "");
        }
        mux_on_ready(m);
        return;
    }
    if (m->closing) {
        mux_finish(m, MUX_CLOSE_ABORT);
        return;
    }
    lost = sessions_needing(m) > 0;
    tlserr[0] = 0;
    if (m->tls) kind = tls_errors(bev, tlserr, sizeof(tlserr));
    if (kind == TLS_ERROR_CERTIFICATE || verify_detail(m) != NULL)
        m->handshake_failure = TLS_FAIL_CERTIFICATE;
    else if (kind == TLS_ERROR_PROTOCOL)
        m->handshake_failure = TLS_FAIL_PROTOCOL;
    else if (what & BEV_EVENT_EOF)
        m->handshake_failure = TLS_FAIL_PEER_CLOSED;
    else
        m->handshake_failure = TLS_FAIL_NETWORK;
    if (what & BEV_EVENT_TIMEOUT)
        snprintf(why, sizeof(why), "write timeout: the peer read nothing for %ld s",
                 3 * m->cfg->ping_sec);
    else if (what & BEV_EVENT_EOF)
        snprintf(why, sizeof(why), "%s", lost ? "unexpected EOF" : "closed by peer");
    else if (tlserr[0] != 0 && (detail = verify_detail(m)) != NULL)
        snprintf(why, sizeof(why), "tls handshake: %s (%s)", tlserr, detail);
    else if (tlserr[0] != 0)
        snprintf(why, sizeof(why), "%s%s", m->ready ? "tls: " : "tls handshake: ", tlserr);
    else if (e != 0)
        snprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(e));
    else
        snprintf(why, sizeof(why), "%s", m->ready ? "connection error" : "handshake failed");
    if (!m->ready && m->tls && (what & BEV_EVENT_EOF))
        snprintf(why, sizeof(why), "tls handshake: peer closed");
    if ((what & BEV_EVENT_EOF) && !lost)
        mux_close(m, MUX_CLOSE_ORDERLY, LOG_INFO, why);
    else
        mux_close(m, MUX_CLOSE_ABORT, LOG_ERROR, why);
    mux_finish(m, MUX_CLOSE_ABORT);
}

/* The next pass: a new allowance of opens for what is left. */
static void
mux_more_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mux *m = arg;

    (void)fd;
    (void)what;
    m->more_due = 0;
    if (!m->closing) mux_read_cb(m->bev, m);
    if (!m->closing && !m->more_due) mux_tls_resume(m); /* the backlog is handled */
}

/* TLS: ciphertext the bulk reader got is in the socket bufferevent's input; its read callback is
 * the filter's, which decrypts it all into our input and calls mux_read_cb. The filter consumes
 * everything unless its reading is off (closing); past MUX_TLS_IN_MAX the bulk reader pauses until
 * the filter catches up (mux_read_cb and the tick resume it). */
static void
mux_tls_in_cb(struct bufferevent *sock, void *arg)
{
    struct mux *m = arg;

    if (!m->heard && !m->client && !m->closing) bufferevent_enable(m->bev, EV_READ);
    m->heard = 1;
    bufferevent_trigger(sock, EV_READ, 0);
    if (m->rd != NULL && !m->closing &&
        evbuffer_get_length(bufferevent_get_input(sock)) > MUX_TLS_IN_MAX) {
        bulkread_disable(m->rd);
        m->rd_paused = 1;
    }
}

static void
mux_tls_resume(struct mux *m)
{
    if (!m->rd_paused || m->closing || m->rd == NULL) return;
    if (m->tls && evbuffer_get_length(bufferevent_get_input(bufferevent_get_underlying(m->bev))) >
                      MUX_TLS_IN_MAX)
        return;
    if (!m->tls && evbuffer_get_length(bufferevent_get_input(m->bev)) > MUX_IN_BACKLOG_MAX) return;
    m->rd_paused = 0;
    bulkread_enable(m->rd);
}

/* TLS: EOF or an error on the socket itself (the filter reports TLS errors and close_notify). */
static void
mux_sock_event_cb(struct bufferevent *sock, short what, void *arg)
{
    struct mux *m = arg;

    (void)sock;
    mux_event_cb(m->bev, what, m);
}

static void
mux_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mux *m = arg;
    int64_t quiet = clock_now_us() - m->last_rx_us, ping = (int64_t)m->cfg->ping_sec * 1000000;
    char why[96];

    (void)fd;
    (void)what;
    if (m->closing) {
        mux_finish(m, MUX_CLOSE_ABORT); /* the drain took too long */
        return;
    }
    if (!m->ready && m->hello_due) {
        struct timeval rest = {m->cfg->handshake_sec - m->cfg->hello_sec, 0};
        m->hello_due = 0;
        if (!m->heard) {
            snprintf(why, sizeof(why), "no ClientHello in %ld s (-tls.hello.sec)",
                     m->cfg->hello_sec);
            m->handshake_failure = TLS_FAIL_TIMEOUT;
            mux_close(m, MUX_CLOSE_ORDERLY, LOG_WARN, why);
            return;
        }
        evtimer_add(m->timer, &rest); /* the rest of -tls.handshake.sec */
        return;
    }
    if (!m->ready) {
        m->handshake_failure = TLS_FAIL_TIMEOUT;
        mux_close(m, MUX_CLOSE_ABORT, LOG_ERROR,
                  m->tls ? "tls handshake timeout" : "connect timeout");
        return;
    }
    if (m->overflow) {
        mux_close(m, MUX_CLOSE_ABORT, LOG_ERROR, "output over 16 MiB: the peer is not reading");
        return;
    }
    mux_tls_resume(m);
    if (quiet >= 3 * ping) {
        snprintf(why, sizeof(why), "keepalive timeout: nothing received for %lld s",
                 (long long)(quiet / 1000000));
        mux_close(m, MUX_CLOSE_ABORT, LOG_ERROR, why);
    } else if (quiet >= ping - 100000) {
        send_ping(m);
    }
}

unsigned
mux_count(void)
{
    return mux_open_count;
}

void
mux_count_states(unsigned *handshake, unsigned *ready, unsigned *draining)
{
    *handshake = mux_open_count - mux_ready_count;
    *ready = mux_ready_count - mux_draining_count;
    *draining = mux_draining_count;
}

int
mux_abandon_closed(const struct mux *m)
{
    return m->abandon_closed;
}

struct account *
mux_account(struct mux *m)
{
    return &m->acct;
}

uint32_t
mux_id(const struct mux *m)
{
    return m->id;
}

struct event_base *
mux_base(const struct mux *m)
{
    return m->base;
}

const struct config *
mux_config(const struct mux *m)
{
    return m->cfg;
}

unsigned
mux_live(const struct mux *m)
{
    return (unsigned)sidmap_count(m->sessions);
}

unsigned
mux_carried(const struct mux *m)
{
    return m->carried;
}

double
mux_age(const struct mux *m)
{
    return (double)(clock_now_us() - m->born_us) / 1e6;
}

double
mux_idle(const struct mux *m)
{
    if (sidmap_count(m->sessions) > 0) return 0;
    return (double)(clock_now_us() - m->idle_since_us) / 1e6;
}

int
mux_is_ready(const struct mux *m)
{
    return m->ready;
}

int
mux_speaks_udp(const struct mux *m)
{
    const unsigned char *p;
    unsigned len = 0;

    if (!m->ready) return 0;
    if (!m->tls) return 1;
    SSL_get0_alpn_selected(bufferevent_openssl_get_ssl(m->bev), &p, &len);
    return len == sizeof(TLS_ALPN_V2) - 1 && memcmp(p, TLS_ALPN_V2, len) == 0;
}

int
mux_is_closing(const struct mux *m)
{
    return m->closing;
}

int
mux_goaway_received(const struct mux *m)
{
    return m->goaway_rcvd;
}

const char *
mux_peer(const struct mux *m)
{
    return m->peer;
}

const char *
mux_subject(const struct mux *m)
{
    return m->subject;
}

const char *
mux_fingerprint(const struct mux *m)
{
    return m->fp;
}

int64_t
mux_min_rtt_us(const struct mux *m)
{
    return m->min_rtt_us;
}

int64_t
mux_credit_rtt_us(struct mux *m)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    struct bufferevent *sock;
    int64_t now = clock_now_us(), rtt;
    evutil_socket_t fd;

    if (m->bev != NULL && now - m->tcp_rtt_at_us >= MUX_TCP_RTT_EVERY_US) {
        m->tcp_rtt_at_us = now;
        sock = m->tls ? bufferevent_get_underlying(m->bev) : m->bev;
        fd = sock != NULL ? bufferevent_getfd(sock) : -1;
        if (fd >= 0 && getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0)
            m->tcp_rtt_us = ti.tcpi_rtt;
    }
    rtt = m->tcp_rtt_us > m->min_rtt_us ? m->tcp_rtt_us : m->min_rtt_us;
    /* Both come from the peer's pace (its PONGs, its ACKs): capped, so that a peer cannot
     * talk a window up to -remux.window.max.kib by answering slowly. */
    return rtt < m->cfg->rtt_max_ms * 1000 ? rtt : m->cfg->rtt_max_ms * 1000;
}

void
mux_rtt_hint(struct mux *m, int64_t us)
{
    if (us > 0 && (m->min_rtt_us == 0 || us < m->min_rtt_us)) m->min_rtt_us = us;
}

SSL *
mux_ssl(const struct mux *m)
{
    return m->tls ? bufferevent_openssl_get_ssl(m->bev) : NULL;
}

void
mux_free_all(void)
{
    static const struct mux_ops gone = {0};

    while (all_muxes != NULL) {
        struct mux *m = all_muxes;
        if (!m->closing) {
            m->ops = &gone; /* its owner is freed already */
            mux_close(m, MUX_CLOSE_ORDERLY, LOG_DEBUG, "exit");
        }
        mux_finish(m, MUX_CLOSE_ABORT); /* no-op when done; else drops what could not leave */
        mux_free_cb(-1, 0, m);          /* the pass that would have freed it will not come */
    }
}
