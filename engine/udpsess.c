/* udpsess.c: a ReMux UDP session (udpsess.h).
 *
 * Flow control: a record (its length field, address and data) takes its bytes from the
 * session's send window, as stream bytes do; a record that does not fit is dropped, not
 * queued. The receiver hands each datagram on at once (a sendto, or a drop), so it returns the
 * whole frame as credit at once, in WINDOW frames of a quarter window: the window bounds what
 * is in flight, never what waits. The window is -remux.window.kib and does not grow: a window
 * per round trip (about 5 MB/s at 50 ms) is far above what DNS, games or voice send, and growing
 * it for bulk UDP would take the streams' auto-tuning (docs/PROTOCOL.md).
 * The client holds datagrams (at most UDPSESS_HOLD bytes) only while its connection is in its
 * TLS handshake: the server's version is not known before it ends. */
#include "udpsess.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "account.h"
#include "clock.h"
#include "config.h"
#include "dgram.h"
#include "frame.h"
#include "log.h"
#include "metrics.h"
#include "mux.h"

#define UDPSESS_HOLD (64 * 1024)
#define UDPSESS_WINDOW_LIMIT 0x7fffffffLL

struct udpsess {
    struct mux_chan chan; /* first: the mux calls the session through it */
    struct udpsess *next_closed;
    struct mux *mux;
    struct event_base *base;
    uint32_t mux_id;
    struct udpsess_owner owner;
    struct account *acct;
    int64_t charged;
    int64_t send_window, recv_window, recv_avail;
    uint64_t credit;
    struct evbuffer *held; /* client: records waiting for the handshake's end */
    struct event *timer;   /* -udp.idle.sec */
    int64_t active_us;
    uint64_t sent, received, dropped;
    unsigned held_n; /* records in held */
    long idle_sec;
    unsigned client : 1, opened : 1, closed : 1, replied : 1, going_away : 1;
};

static const struct mux_chan_ops udpsess_ops;
static unsigned udpsess_live;
static uint8_t scratch[FRAME_MAX_PAYLOAD]; /* one record (and the header), built to send */

unsigned
udpsess_count(void)
{
    return udpsess_live;
}

struct mux *
udpsess_mux(const struct udpsess *u)
{
    return u->mux;
}

/* Closed sessions, freed on a later loop pass (as streams are: session.c). */
static struct udpsess *closed_list;
static struct event *reaper;

static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct udpsess *u;

    (void)fd;
    (void)what;
    (void)arg;
    while ((u = closed_list) != NULL) {
        closed_list = u->next_closed;
        free(u);
    }
}

void
udpsess_free_closed(void)
{
    reap_cb(-1, 0, NULL);
    if (reaper != NULL) event_free(reaper);
    reaper = NULL;
}

/* The one close path: logs, leaves the mux (a FIN already sent by the caller, if any),
 * releases the charge, frees the events now and u on a later pass (a caller up the stack, the
 * frame loop of on_data, still reads u->closed). */
static void
udpsess_close(struct udpsess *u, int level, const char *why)
{
    if (u->closed) return;
    u->closed = 1;
    if (u->mux != NULL) mux_detach(u->mux, u->chan.sid);
    u->mux = NULL;
    udpsess_live--;
    account_close(u->acct, u->charged);
    if (u->held_n > 0) {
        u->dropped += u->held_n;
        metrics.udp_dropped[UDP_DROP_NO_TUNNEL] += u->held_n;
    }
    log_msg(level, "[sock] - udp = %u%s%s (sent %llu, received %llu, dropped %llu) on %08x",
            udpsess_live, *why ? " " : "", why, (unsigned long long)u->sent,
            (unsigned long long)u->received, (unsigned long long)u->dropped, u->mux_id);
    if (u->held != NULL) evbuffer_free(u->held);
    u->held = NULL;
    u->held_n = 0;
    event_free(u->timer);
    u->timer = NULL;
    u->next_closed = closed_list;
    closed_list = u;
    if (reaper == NULL) reaper = event_new(u->base, -1, 0, reap_cb, NULL);
    if (reaper != NULL) event_active(reaper, EV_TIMEOUT, 0);
    /* else out of memory: freed at exit (udpsess_free_closed), not under a caller */
}

/* Ends the session by itself and tells the owner. */
static void
udpsess_lost(struct udpsess *u, enum udpsess_end end, int level, const char *why)
{
    struct udpsess_owner o = u->owner;

    if (u->closed) return;
    udpsess_close(u, level, why);
    if (o.closed != NULL) o.closed(o.arg, end, why);
}

/* A FIN, when the peer knows of the session (a client's that never opened is unknown there). */
static void
send_fin(struct udpsess *u)
{
    if (u->mux != NULL && u->opened) mux_send(u->mux, u->chan.sid, NULL, 0, NULL, 0);
}

void
udpsess_end(struct udpsess *u, const char *why)
{
    if (u->closed) return;
    send_fin(u);
    udpsess_close(u, LOG_INFO, why);
}

static void
timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct udpsess *u = arg;
    int64_t left = u->active_us + (int64_t)u->idle_sec * 1000000 - clock_now_us();
    struct timeval tv;

    (void)fd;
    (void)what;
    if (left <= 0 || u->going_away) {
        send_fin(u);
        udpsess_lost(u, UDPSESS_LOST, LOG_INFO, u->going_away ? "going away" : "idle");
        return;
    }
    tv.tv_sec = left / 1000000;
    tv.tv_usec = left % 1000000;
    evtimer_add(u->timer, &tv);
}

static struct udpsess *
udpsess_new(struct mux *m, uint16_t sid, const struct udpsess_owner *o, int client)
{
    const struct config *cfg = mux_config(m);
    struct udpsess *u = calloc(1, sizeof(*u));
    struct timeval tv = {cfg->udp_idle_sec, 0};

    if (u == NULL) return NULL;
    u->chan.ops = &udpsess_ops;
    u->chan.sid = sid;
    u->mux = m;
    u->base = mux_base(m);
    u->mux_id = mux_id(m);
    u->owner = *o;
    u->client = client;
    u->opened = !client;
    u->idle_sec = cfg->udp_idle_sec;
    u->send_window = u->recv_window = u->recv_avail = (int64_t)cfg->window_kib * 1024;
    u->active_us = clock_now_us();
    u->timer = evtimer_new(u->base, timer_cb, u);
    if (u->timer == NULL || mux_attach(m, &u->chan) == -1) {
        if (u->timer != NULL) event_free(u->timer);
        free(u);
        return NULL;
    }
    evtimer_add(u->timer, &tv);
    u->acct = mux_account(m);
    account_open(u->acct);
    u->charged = u->recv_window;
    account_charge(u->acct, u->charged);
    udpsess_live++;
    metrics.udp_sessions_opened++;
    log_msg(LOG_INFO, "[sock] + udp = %u on %08x", udpsess_live, u->mux_id);
    return u;
}

struct udpsess *
udpsess_client(struct mux *m, uint16_t sid, const struct udpsess_owner *o)
{
    return udpsess_new(m, sid, o, 1);
}

struct udpsess *
udpsess_server(struct mux *m, uint16_t sid, const struct udpsess_owner *o)
{
    return udpsess_new(m, sid, o, 0);
}

static void
dropped(struct udpsess *u, enum metrics_udp_drop why)
{
    u->dropped++;
    metrics.udp_dropped[why]++;
}

/* A record of n data bytes has gone to the peer. */
static void
count_sent(struct udpsess *u, size_t n)
{
    u->sent++;
    u->replied = 1;
    metrics.udp_datagrams[0]++;
    metrics.bytes_to_peer += n;
    account_moved_to_peer(u->acct, n);
}

/* The first record held for the handshake's end: its bytes (*used of them: a record ends where
 * its address and data end, parsed again to find it) and its data's length; NULL when none. */
static const uint8_t *
held_record(struct udpsess *u, size_t *used, size_t *dlen)
{
    struct socks_req a;
    const uint8_t *data, *p;
    const char *err;
    size_t len = u->held != NULL ? evbuffer_get_length(u->held) : 0;

    if (len == 0 || (p = evbuffer_pullup(u->held, -1)) == NULL) return NULL;
    return dgram_parse_record(p, len, used, &a, &data, dlen, &err) == SOCKS_OK ? p : NULL;
}

/* Client: the opening frame: the header, and the first held record with it; then the rest of
 * what was held, a frame each. */
static void
send_open(struct udpsess *u)
{
    const uint8_t *p;
    size_t used, dlen;

    dgram_encode_open(scratch);
    while ((p = held_record(u, &used, &dlen)) != NULL) {
        if (!u->opened) {
            memcpy(scratch + DGRAM_OPEN_LEN, p, used);
            mux_send(u->mux, u->chan.sid, scratch, DGRAM_OPEN_LEN + used, NULL, 0);
        } else {
            mux_send(u->mux, u->chan.sid, p, used, NULL, 0);
        }
        evbuffer_drain(u->held, used);
        u->held_n--;
        u->opened = 1;
        count_sent(u, dlen);
    }
    if (!u->opened) mux_send(u->mux, u->chan.sid, scratch, DGRAM_OPEN_LEN, NULL, 0);
    u->opened = 1;
    if (u->held != NULL) evbuffer_free(u->held);
    u->held = NULL;
    u->held_n = 0;
}

int
udpsess_send(struct udpsess *u, const struct socks_req *a, const uint8_t *data, size_t n)
{
    size_t len = dgram_record_len(a, n);

    if (u->closed || u->mux == NULL) return -1;
    u->active_us = clock_now_us();
    if (len == 0) {
        dropped(u, UDP_DROP_TOO_LARGE);
        return -1;
    }
    if ((int64_t)len > u->send_window) {
        dropped(u, UDP_DROP_WINDOW);
        return -1;
    }
    if (!mux_writable(u->mux)) {
        dropped(u, UDP_DROP_BUSY);
        return -1;
    }
    if (u->client && !u->opened && !mux_is_ready(u->mux)) {
        /* The server's version is known at the handshake's end (udpsess_ready). */
        if (u->held == NULL) u->held = evbuffer_new();
        if (u->held == NULL || evbuffer_get_length(u->held) + len > UDPSESS_HOLD) {
            dropped(u, UDP_DROP_BUSY);
            return -1;
        }
        dgram_encode_record(scratch, a, data, n);
        evbuffer_add(u->held, scratch, len);
        u->held_n++;
        u->send_window -= (int64_t)len;
        return 0;
    } else if (u->client && !u->opened) {
        dgram_encode_open(scratch);
        dgram_encode_record(scratch + DGRAM_OPEN_LEN, a, data, n);
        mux_send(u->mux, u->chan.sid, scratch, DGRAM_OPEN_LEN + len, NULL, 0);
        u->opened = 1;
    } else {
        dgram_encode_record(scratch, a, data, n);
        mux_send(u->mux, u->chan.sid, scratch, len, NULL, 0);
    }
    u->send_window -= (int64_t)len;
    count_sent(u, n);
    return 0;
}

static int
on_data(struct mux_chan *c, struct evbuffer *src, size_t n, const char **err)
{
    struct udpsess *u = (struct udpsess *)c;
    const uint8_t *p, *data;
    struct socks_req a;
    size_t off = 0, used, dlen;
    struct frame_ctl w = {.type = FRAME_CTL_WINDOW, .sid = c->sid};

    if ((int64_t)n > u->recv_avail) {
        *err = "window overflow (UDP records past the window)";
        return -1;
    }
    p = evbuffer_pullup(src, (ev_ssize_t)n);
    if (p == NULL) {
        *err = "out of memory";
        return -1;
    }
    u->recv_avail -= (int64_t)n;
    u->active_us = clock_now_us();
    while (off < n) {
        if (dgram_parse_record(p + off, n - off, &used, &a, &data, &dlen, err) != SOCKS_OK)
            return -1;
        off += used;
        if (a.atyp == SOCKS_ATYP_DOMAIN && u->client) {
            *err = "UDP record from a name (a source is an address)";
            return -1;
        }
        u->received++;
        metrics.udp_datagrams[1]++;
        metrics.bytes_from_peer += dlen;
        account_moved_from_peer(u->acct, dlen);
        if (!u->closed && u->owner.datagram != NULL)
            u->owner.datagram(u->owner.arg, &a, data, dlen);
    }
    evbuffer_drain(src, n);
    /* Handed on, every one: the frame's bytes are credit now. */
    u->credit += n;
    if (!u->closed && u->mux != NULL && u->credit >= (uint64_t)u->recv_window / 4) {
        w.increment = (uint32_t)u->credit;
        mux_send_ctl(u->mux, &w);
        u->recv_avail += (int64_t)u->credit;
        u->credit = 0;
    }
    return 0;
}

int
udpsess_on_first(struct udpsess *u, struct evbuffer *in, size_t len, const char **err)
{
    return len == 0 ? 0 : on_data(&u->chan, in, len, err);
}

/* Either end's FIN ends the session: there is no half-closed datagram flow. */
static int
on_fin(struct mux_chan *c, const char **err)
{
    (void)err;
    udpsess_lost((struct udpsess *)c, UDPSESS_LOST, LOG_INFO, "");
    return 0;
}

static int
on_window(struct mux_chan *c, uint32_t inc, const char **err)
{
    struct udpsess *u = (struct udpsess *)c;

    if (u->send_window + (int64_t)inc > UDPSESS_WINDOW_LIMIT) {
        *err = "window overflow (WINDOW past 2^31-1)";
        return -1;
    }
    u->send_window += inc;
    return 0;
}

static void
on_reset(struct mux_chan *c, uint8_t reason)
{
    struct udpsess *u = (struct udpsess *)c;
    char why[96];

    /* A v1 server refuses the session kind with reason 6 (docs/PROTOCOL.md, "Versions"). */
    snprintf(why, sizeof(why), "reset by peer: %s", frame_reason_str(reason));
    udpsess_lost(u, reason == FRAME_RST_PROTOCOL ? UDPSESS_NO_UDP : UDPSESS_LOST, LOG_INFO, why);
}

static void
mux_gone(struct mux_chan *c, const char *why)
{
    char buf[256];

    snprintf(buf, sizeof(buf), "connection lost: %s", why);
    udpsess_lost((struct udpsess *)c, UDPSESS_LOST, LOG_INFO, buf);
}

static int
needs_mux(const struct mux_chan *c)
{
    (void)c;
    return 1;
}

static int
replied(const struct mux_chan *c)
{
    return ((const struct udpsess *)c)->replied;
}

/* Client: a higher id opens on the connection while this one waits for the handshake: ids open
 * in ascending order, so this one opens now (the header alone) or never. Never, unless the
 * server is known to speak v2: a v1 server before 2026-12-03 closed the connection for it. */
static void
send_header(struct mux_chan *c)
{
    struct udpsess *u = (struct udpsess *)c;

    if (u->opened || u->closed) return;
    if (mux_is_ready(u->mux) && mux_speaks_udp(u->mux)) {
        send_open(u);
        return;
    }
    udpsess_lost(u, UDPSESS_LOST, LOG_INFO,
                 "a later session opened first on a connection in its handshake");
}

/* Client: the handshake is done; the server's version is known. */
static void
ready(struct mux_chan *c)
{
    struct udpsess *u = (struct udpsess *)c;

    if (u->opened || u->closed) return;
    if (!mux_speaks_udp(u->mux)) {
        udpsess_lost(u, UDPSESS_NO_UDP, LOG_WARN, "the server speaks ReMux v1 only (no UDP)");
        return;
    }
    if (u->held != NULL && evbuffer_get_length(u->held) > 0) send_open(u);
}

/* The connection is going away: nothing is in flight that a new session would lose (a
 * datagram in the air is lost or not either way), so the session ends now, on the timer's pass
 * (never under the caller's loop over the connections), rather than holding a draining server
 * for -udp.idle.sec; the association's next datagram opens one on another connection. */
static void
goaway(struct mux_chan *c)
{
    struct udpsess *u = (struct udpsess *)c;

    if (u->closed) return;
    u->going_away = 1;
    event_active(u->timer, EV_TIMEOUT, 0);
}

static const struct mux_chan_ops udpsess_ops = {
    .on_data = on_data,
    .on_fin = on_fin,
    .on_window = on_window,
    .on_reset = on_reset,
    .mux_gone = mux_gone,
    .needs_mux = needs_mux,
    .replied = replied,
    .send_header = send_header,
    .ready = ready,
    .goaway = goaway,
};
