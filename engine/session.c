/* session.c: one session's relay between its local socket and its mux, le-proxy style.
 *
 * Up (local -> mux): read only while the peer's window has room and the mux is writable; what
 * is read leaves in frames of up to 64 KiB, moved (not copied) into the mux's output.
 * Down (mux -> local): payloads move into the local socket's output; as the socket takes them
 * (the output buffer's drain callback) the bytes become credit, returned to the peer in WINDOW
 * frames, so a stalled reader holds at most one window of memory.
 * Window tuning: when the bytes drained per RTT (BDP) approach the window and the reader keeps
 * up, the window doubles, up to -remux.window.max.kib (gRPC's BDP estimator, simplified). The RTT
 * is the one credit sees, queue included (mux_credit_rtt_us; docs/PROTOCOL.md why).
 * Half-close: local EOF -> a length-0 frame once everything before it left; a length-0 frame
 * -> shutdown(SHUT_WR) once the output is flushed. Both done: the session closes. */
#include "session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "account.h"
#include "addr.h"
#include "clock.h"
#include "frame.h"
#include "httpreq.h"
#include "log.h"
#include "metrics.h"
#include "mux.h"
#include "socks.h"
#include "turns.h"
#include "writethrough.h"

#define SESSION_WINDOW_LIMIT 0x7fffffffLL
/* Past a budget, a window shrinks as its bytes drain, to this: every session still moves (a
 * window of 0 would wait for a drain that never comes). */
#define SESSION_WINDOW_FLOOR (16 * 1024)

struct session {
    struct mux_chan chan; /* first: the mux calls the session through it (mux.h) */
    const struct config *cfg;
    struct event_base *base;
    struct session *next_closed; /* in the list freed on the next pass (reap) */
    struct mux *mux;
    uint16_t sid;
    uint32_t mux_id;
    struct bufferevent *bev;
    struct event *rev; /* the local socket is readable: read straight into the mux */
    struct evbuffer_cb_entry *out_cb;
    struct event *work;  /* the pump and finish, run from the loop so callbacks never recurse */
    struct event *timer; /* client: the first-frame hold; server: the connect timeout */
    void (*cancel)(void *arg);
    void *cancel_arg;
    char dest[SOCKS_DEST_MAX];
    uint8_t hdr[SOCKS_REQ_MAX];
    size_t hdr_len;      /* the EagerSocks header still to send */
    int64_t send_window; /* bytes we may still send */
    int64_t recv_window; /* the window we grant */
    int64_t recv_avail;  /* bytes the peer may still send */
    int64_t window_max;
    uint64_t credit;      /* drained, not yet granted */
    struct account *acct; /* charged with recv_avail + what waits for the local socket */
    int64_t charged;      /* ... that is, recv_window - credit */
    size_t uncredited;    /* bytes queued before the session (the SOCKS reply): no credit */
    uint64_t bdp_bytes;
    int64_t bdp_start_us;
    unsigned connected : 1, local_eof : 1, sent_fin : 1, got_fin : 1, shut_wr : 1;
    unsigned hold_done : 1, closed : 1, bev_reads : 1;
    struct turn_ticket turn;   /* its place in line for room on the mux (turns.h) */
    unsigned out_deferred : 1; /* the output waits for the mux's end of the pass */
    unsigned idle_timing : 1;  /* the timer watches for idleness (or an orphan's deadline) */
    unsigned replied : 1;      /* a data byte has gone to the peer */
    unsigned heard : 1;        /* a data byte has come from the peer */
    unsigned http_502 : 1;     /* a forwarded HTTP request: ended unheard, the app gets a 502 */
    int64_t read_left;         /* bytes the app may still send on (-1: no end); then dropped */
    int64_t asked_us;  /* client: the app's request; server: the open frame (for histograms) */
    int64_t active_us; /* when data last moved either way (with idle_timing) */
};

static const struct mux_chan_ops session_chan_ops;
static unsigned session_live;
/* Closed sessions, freed on a later loop pass (reap_cb), as muxes are: a callback that closed
 * its session, or had it closed under it, still reads s->closed, never freed memory. */
static struct session *closed_sessions;
static struct event *reaper;

static int start_reading(struct session *s);
static void session_event_cb(struct bufferevent *bev, short what, void *arg);
static void session_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);
static void session_work_cb(evutil_socket_t fd, short what, void *arg);
static void session_timer_cb(evutil_socket_t fd, short what, void *arg);
static void watch_idle(struct session *s);

static void
charge(struct session *s, int64_t delta)
{
    s->charged += delta;
    account_charge(s->acct, delta);
}
/* n payload bytes went to the peer: counted for the process and along the account chain. */
static void
sent(struct session *s, size_t n)
{
    metrics.bytes_to_peer += n;
    account_moved_to_peer(s->acct, n);
}

static void session_finish(struct session *s);
static void session_abort(struct session *s, int level, const char *why);
static void session_reset(struct session *s, int level, const char *why, uint8_t reason);

struct session *
session_new(struct mux *m, uint16_t sid, struct bufferevent *local, enum session_local state,
            const char *dest)
{
    const struct config *cfg = mux_config(m);
    struct session *s = calloc(1, sizeof(*s));
    struct timeval tv = {cfg->connect_sec, 0};

    if (s == NULL) goto err;
    s->cfg = cfg;
    s->base = mux_base(m);
    s->mux = m;
    s->sid = sid;
    s->chan.ops = &session_chan_ops;
    s->chan.sid = sid;
    s->mux_id = mux_id(m);
    s->bev = local;
    s->connected = state == SESSION_LOCAL_UP;
    snprintf(s->dest, sizeof(s->dest), "%s", dest);
    s->send_window = s->recv_window = s->recv_avail = (int64_t)cfg->window_kib * 1024;
    s->window_max = (int64_t)cfg->window_max_kib * 1024;
    s->bdp_start_us = s->asked_us = clock_now_us();
    s->read_left = -1;
    s->work = event_new(mux_base(m), -1, 0, session_work_cb, s);
    s->timer = event_new(mux_base(m), -1, 0, session_timer_cb, s);
    if (s->work == NULL || s->timer == NULL) goto err;
    s->uncredited = evbuffer_get_length(bufferevent_get_output(local));
    s->out_cb = evbuffer_add_cb(bufferevent_get_output(local), session_out_cb, s);
    if (s->out_cb == NULL || mux_attach(m, &s->chan) == -1) goto err;
    s->acct = mux_account(m);
    account_open(s->acct);
    charge(s, s->recv_window);
    bufferevent_setcb(local, NULL, NULL, session_event_cb, s);
    bufferevent_set_max_single_write(local, 256 * 1024);
    session_live++;
    metrics.sessions_opened++;
    log_msg(LOG_DEBUG, "[sess] + %08x:%u = %u", s->mux_id, sid, session_live);
    /* "on" the connection it goes over: at info, what ties a destination to a client (the
     * server's [conn] + and [tls] lines name the peer and its certificate). */
    log_msg(LOG_INFO, "[sock] + %s = %u on %08x", s->dest, session_live, s->mux_id);
    if (s->connected) {
        if (start_reading(s) == -1) {
            session_reset(s, LOG_ERROR, "out of memory", FRAME_RST_ABORTED);
            return NULL;
        }
        event_active(s->work, 0, 0); /* the app may have sent data with its request */
    } else {
        bufferevent_disable(local, EV_READ | EV_WRITE);
        evtimer_add(s->timer, &tv);
    }
    return s;
err:
    if (s != NULL) {
        if (s->out_cb != NULL) evbuffer_remove_cb_entry(bufferevent_get_output(local), s->out_cb);
        if (s->work != NULL) event_free(s->work);
        if (s->timer != NULL) event_free(s->timer);
        free(s);
    }
    bufferevent_free(local);
    return NULL;
}

void
session_set_header(struct session *s, const uint8_t *hdr, size_t len)
{
    const struct config *cfg = mux_config(s->mux);
    struct timeval tv = {0, cfg->hold_ms * 1000};

    memcpy(s->hdr, hdr, len);
    s->hdr_len = len;
    if (cfg->hold_ms == 0)
        s->hold_done = 1;
    else
        evtimer_add(s->timer, &tv);
}

void
session_set_asked(struct session *s, int64_t asked_us)
{
    s->asked_us = asked_us;
}

void
session_forward_http(struct session *s, int64_t body_left)
{
    s->read_left = body_left;
    s->http_502 = 1;
}

/* A forwarded request that ends before any byte of its answer came: the app reads why, as
 * an HTTP proxy's 502, not a bare close. */
static int
answer_502(struct session *s, const char *why)
{
    char text[SOCKS_DEST_MAX + 200], resp[1024];
    evutil_socket_t fd = bufferevent_getfd(s->bev);
    size_t n;

    snprintf(text, sizeof(text), "%s: %s", s->dest, *why ? why : "closed without answering");
    n = httpreq_error(502, text, resp, sizeof(resp));
    return fd >= 0 && send(fd, resp, n, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n;
}

static int
session_replied(const struct mux_chan *c)
{
    const struct session *s = (const struct session *)c;

    return s->replied;
}

static void
session_send_header(struct mux_chan *c)
{
    struct session *s = (struct session *)c;

    if (s->closed || s->mux == NULL || s->hdr_len == 0) return;
    mux_send(s->mux, s->sid, s->hdr, s->hdr_len, NULL, 0);
    s->hdr_len = 0;
    watch_idle(s);
}

unsigned
session_count(void)
{
    return session_live;
}

void
session_on_close(struct session *s, void (*cancel)(void *arg), void *arg)
{
    s->cancel = cancel;
    s->cancel_arg = arg;
}

/* How a session ends (the one close path, session_close, under three names). */
enum session_end {
    END_FINISHED, /* both ways done: the local socket closes with FIN */
    END_ABORT,    /* the local socket closes with RST, so its reader sees an error, not a clean
                     end; the peer learns nothing from here (it reset, or its connection is gone) */
    END_RESET,    /* as END_ABORT, and RESET(reason) tells the peer */
};

static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s;

    (void)fd;
    (void)what;
    (void)arg;
    while ((s = closed_sessions) != NULL) {
        closed_sessions = s->next_closed;
        free(s);
    }
}

void
session_free_closed(void)
{
    reap_cb(-1, 0, NULL);
    if (reaper != NULL) event_free(reaper);
    reaper = NULL;
}

/* The one close path: logs, leaves the mux, frees the socket and events now, and s itself on a
 * later pass. */
static void
session_close(struct session *s, enum session_end how, int level, const char *why, uint8_t reason)
{
    struct linger lg = {1, 0};
    struct frame_ctl c = {.type = FRAME_CTL_RESET};
    evutil_socket_t fd;

    if (s->closed) return;
    s->closed = 1;
    /* What arrived before the end (a RESET, a failure) in the same pass still goes out first. */
    if (s->out_deferred) (void)writethrough_send_queued(s->bev);
    if (s->cancel != NULL) s->cancel(s->cancel_arg);
    s->cancel = NULL;
    if (s->mux != NULL) {
        /* A client session whose first frame never left was never opened: nothing to reset
         * (a RESET for an id the server never saw is a protocol error). */
        if (how == END_RESET && s->hdr_len == 0) {
            c.sid = s->sid;
            c.reason = reason;
            mux_send_ctl(s->mux, &c);
        }
        mux_detach(s->mux, s->sid);
        if (turns_use(&s->turn)) mux_pass_turn(s->mux); /* one it will not use: pass it on */
        s->mux = NULL;
    }
    session_live--;
    if (how == END_FINISHED)
        metrics.sessions_finished++;
    else if (how == END_ABORT)
        metrics.sessions_aborted++;
    else
        metrics.sessions_reset++;
    account_close(s->acct, s->charged);
    log_msg(LOG_DEBUG, "[sess] - %08x:%u = %u", s->mux_id, s->sid, session_live);
    log_msg(level, "[sock] - %s = %u%s%s", s->dest, session_live, *why ? " " : "", why);
    evbuffer_remove_cb_entry(bufferevent_get_output(s->bev), s->out_cb);
    if (s->rev != NULL) event_free(s->rev);
    s->rev = NULL;
    fd = bufferevent_getfd(s->bev);
    /* The 502 leaves with a FIN: a RST could overtake it. */
    if (s->http_502 && !s->heard && answer_502(s, why)) how = END_FINISHED;
    if (how != END_FINISHED && fd >= 0) setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    bufferevent_free(s->bev);
    s->bev = NULL;
    event_free(s->work);
    s->work = NULL;
    event_free(s->timer);
    s->timer = NULL;
    if (reaper == NULL) reaper = event_new(s->base, -1, 0, reap_cb, NULL);
    s->next_closed = closed_sessions;
    closed_sessions = s;
    if (reaper != NULL)
        event_active(reaper, EV_TIMEOUT, 0);
    else
        session_free_closed(); /* out of memory: free what is closed now, as before */
}

/* Both ways done. Closes s (s->closed; freed on a later pass). */
static void
session_finish(struct session *s)
{
    session_close(s, END_FINISHED, LOG_INFO, "", 0);
}

static void
session_abort(struct session *s, int level, const char *why)
{
    session_close(s, END_ABORT, level, why, 0);
}

static void
session_reset(struct session *s, int level, const char *why, uint8_t reason)
{
    session_close(s, END_RESET, level, why, reason);
}

static void
schedule_work(struct session *s) /* session_work_cb, later in this loop pass, off the stack */
{
    event_active(s->work, 0, 0);
}

/* Waits in line for room on the mux (turns.h). */
static void
get_in_line(struct session *s)
{
    mux_wait_turn(s->mux, &s->turn, s->sid);
}

/* Local -> mux, for bytes already in the bufferevent's input (what the app sent along with its
 * SOCKS request): send what the window and the mux allow; the FIN once everything has left; and
 * decide whether to watch the socket for more. */
static void
pump_up(struct session *s)
{
    struct evbuffer *in;
    size_t len, n;
    int want_read = 0;

    if (s->closed || !s->connected || s->mux == NULL) return;
    in = bufferevent_get_input(s->bev);
    len = evbuffer_get_length(in);
    if (s->hdr_len > 0 && len == 0 && !s->local_eof && !s->hold_done) {
        want_read = 1; /* the first bytes will join the header in session_readable() */
        goto out;
    }
    if (s->hdr_len > 0) {
        n = len;
        if ((int64_t)n > s->send_window) n = (size_t)s->send_window;
        if (n > FRAME_MAX_PAYLOAD - s->hdr_len) n = FRAME_MAX_PAYLOAD - s->hdr_len;
        mux_send(s->mux, s->sid, s->hdr, s->hdr_len, in, n);
        s->send_window -= (int64_t)n;
        sent(s, n);
        s->replied |= n > 0;
        s->hdr_len = 0;
        watch_idle(s);
        len -= n;
    }
    while (len > 0 && s->send_window > 0 && mux_writable(s->mux)) {
        n = len;
        if ((int64_t)n > s->send_window) n = (size_t)s->send_window;
        if (n > FRAME_MAX_PAYLOAD) n = FRAME_MAX_PAYLOAD;
        mux_send(s->mux, s->sid, NULL, 0, in, n);
        s->send_window -= (int64_t)n;
        sent(s, n);
        s->replied = 1;
        len -= n;
    }
    if (len == 0 && s->local_eof && !s->sent_fin) {
        mux_send(s->mux, s->sid, NULL, 0, NULL, 0);
        s->sent_fin = 1;
    }
    /* Blocked on a full connection with bytes to send, or with more to read: wait in line.
     * Bytes already read count even after the app's EOF (the bufferevent read them along with
     * the SOCKS request): such a session was not queued and stalled until something else woke
     * it (seen: 60 s under the sanitizers, 200 sessions on one connection). */
    if (!mux_writable(s->mux) && (len > 0 || !s->local_eof)) {
        get_in_line(s);
        goto out;
    }
    if (s->local_eof) goto out;
    /* le-proxy: watch the socket only while what is read can leave; past a forwarded request's
     * body, for its EOF. */
    want_read = (len == 0 && s->send_window > 0) || s->read_left == 0;
out:
    if (s->rev == NULL) return;
    if (want_read)
        event_add(s->rev, NULL);
    else
        event_del(s->rev);
    if (s->bev_reads) {
        s->bev_reads = 0;
        bufferevent_disable(s->bev, EV_READ);
    }
}

/* A forwarded HTTP request's body is sent: what else the app sends (a pipelined request this
 * session does not carry: the app sends it again on a new connection) is read and dropped, so
 * that its EOF is seen and the close that follows is a FIN, not a RST that could cut the
 * response short in the app's receive buffer. 64 KiB a wakeup. */
static void
drop_rest(struct session *s, evutil_socket_t fd)
{
    char scrap[4096];
    ssize_t got = 0;
    int i;

    for (i = 0; i < 16 && (got = recv(fd, scrap, sizeof(scrap), 0)) > 0; i++)
        ;
    if (got == 0) {
        s->local_eof = 1;
        event_del(s->rev);
        schedule_work(s);
    } else if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        session_reset(s, LOG_INFO, "read: the app's socket failed", FRAME_RST_ABORTED);
    }
}

/* The local socket is readable: frames of up to 64 KiB read straight into the mux's output,
 * up to 256 KiB a wakeup, within the peer's window. While sessions wait in line for room on
 * the mux, a session reads only on its turn, and one turn's worth (mux.h). */
static void
session_readable(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    struct mux *m = s->mux;
    size_t budget = 256 * 1024, max;
    ssize_t got;
    char why[160];
    int turn = turns_use(&s->turn);

    (void)what;
    s->active_us = clock_now_us();
    if (s->closed || m == NULL) return;
    if (s->read_left == 0) {
        drop_rest(s, fd);
        if (turn) mux_pass_turn(m);
        return;
    }
    if (mux_has_waiters(m)) {
        if (!turn) {
            get_in_line(s);
            event_del(s->rev);
            mux_pass_turn(m); /* room now: the line moves */
            return;
        }
        budget = TURN_BYTES;
    }
    while (budget > 0 && s->send_window > 0 && mux_writable(s->mux)) {
        max = FRAME_MAX_PAYLOAD - s->hdr_len;
        if ((int64_t)max > s->send_window) max = (size_t)s->send_window;
        if (max > budget) max = budget;
        if (s->read_left >= 0 && (int64_t)max > s->read_left) max = (size_t)s->read_left;
        if (max == 0) break;
        got = mux_send_from_fd(s->mux, s->sid, s->hdr, s->hdr_len, fd, max);
        if (got > 0) {
            if (s->read_left > 0) s->read_left -= got;
            s->send_window -= got;
            sent(s, (size_t)got);
            s->replied = 1;
            budget -= (size_t)got;
            if (s->hdr_len > 0) {
                s->hdr_len = 0;
                watch_idle(s);
            }
            if ((size_t)got < max) break; /* the socket is drained for now */
            continue;
        }
        if (got == 0) {
            s->local_eof = 1;
            break;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
        snprintf(why, sizeof(why), "read: %s", strerror(errno));
        session_reset(s, LOG_INFO, why, FRAME_RST_ABORTED);
        if (turn) mux_pass_turn(m); /* the mux outlives this pass */
        return;
    }
    pump_up(s);
    if (s->local_eof) schedule_work(s);
    if (turn) mux_pass_turn(m);
}

/* Bytes wait in the output: the bufferevent writes them once the socket takes them. A server
 * session's bufferevent has EV_WRITE off while its output is empty (payloads are written through
 * at once; on, it would watch an empty output: two epoll_ctl and a wakeup per session). A client
 * session's has it on from creation, its event added only when bytes wait. */
static void
want_write(struct session *s)
{
    if (s->connected && evbuffer_get_length(bufferevent_get_output(s->bev)) > 0 &&
        !(bufferevent_get_enabled(s->bev) & EV_WRITE))
        bufferevent_enable(s->bev, EV_WRITE);
}

/* The socket is up: from now on the session reads it itself (the bufferevent only writes). */
static int
start_reading(struct session *s)
{
    evutil_socket_t fd = bufferevent_getfd(s->bev);

    if (s->rev != NULL) /* the connect watcher, done: the same event reads now */
        event_assign(s->rev, mux_base(s->mux), fd, EV_READ | EV_PERSIST, session_readable, s);
    else
        s->rev = event_new(mux_base(s->mux), fd, EV_READ | EV_PERSIST, session_readable, s);
    if (s->rev == NULL) return -1;
    /* The bufferevent keeps reading (into its input, which pump_up() sends first) until
     * pump_up() has watched rev: handing over in that order keeps the descriptor in epoll, so
     * the hand-over costs no epoll_ctl. */
    s->bev_reads = (bufferevent_get_enabled(s->bev) & EV_READ) != 0;
    return 0;
}

/* A server session's destination answered the connect. */
static void
session_connected(struct session *s)
{
    struct evbuffer *out = bufferevent_get_output(s->bev);

    s->connected = 1;
    metrics_observe(&metrics.connect, (double)(clock_now_us() - s->asked_us) / 1e6);
    watch_idle(s);
    s->cancel = NULL;
    log_msg(LOG_DEBUG, "[dest] %s connected", s->dest);
    if (start_reading(s) == -1) {
        session_fail(s, FRAME_RST_ABORTED, "out of memory");
        return;
    }
    /* What the client sent along with its request goes out now; the socket's buffer is empty.
     * A write error is the bufferevent's to report, with the rest. */
    if (evbuffer_get_length(out) > 0) evbuffer_write(out, bufferevent_getfd(s->bev));
    want_write(s);
    schedule_work(s);
}

static void
session_work_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    evutil_socket_t sock;

    (void)fd;
    (void)what;
    pump_up(s);
    if (s->got_fin && !s->shut_wr && s->connected &&
        evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
        /* With both ways done the close below sends the FIN (nothing unread: EOF was read). */
        sock = bufferevent_getfd(s->bev);
        if (sock >= 0 && !s->sent_fin) shutdown(sock, SHUT_WR);
        s->shut_wr = 1;
    }
    if (s->sent_fin && s->shut_wr) {
        session_finish(s);
        return;
    }
    if (turns_held(&s->turn)) {
        /* Its turn for room on the mux: read now, in the order the sessions blocked, not when
         * epoll reports the socket (its order let the same sessions win every time: with 200
         * sessions on one connection some got no byte for 60 s). Last: it may close s. A
         * session with nothing it may read now (no window) passes the turn on. */
        if (s->rev != NULL && event_pending(s->rev, EV_READ, NULL)) {
            session_readable(event_get_fd(s->rev), EV_READ, s);
        } else {
            turns_use(&s->turn);
            if (s->mux != NULL) mux_pass_turn(s->mux);
        }
    }
}

static uint8_t
errno_reason(int e)
{
    switch (e) {
    case ECONNREFUSED: return FRAME_RST_REFUSED;
    case ENETUNREACH:
    case EHOSTUNREACH:
    case EADDRNOTAVAIL: return FRAME_RST_UNREACHABLE;
    case ETIMEDOUT: return FRAME_RST_TIMEOUT;
    default: return FRAME_RST_ABORTED;
    }
}

static void
session_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct session *s = arg;
    int e = EVUTIL_SOCKET_ERROR();
    char why[160];

    (void)bev;
    if (what & BEV_EVENT_EOF) {
        s->local_eof = 1;
        schedule_work(s);
        return;
    }
    if (!s->connected) {
        snprintf(why, sizeof(why), "%s", evutil_socket_error_to_string(e));
        session_fail(s, errno_reason(e), why);
        return;
    }
    snprintf(why, sizeof(why), "%s: %s", what & BEV_EVENT_WRITING ? "write" : "read",
             evutil_socket_error_to_string(e));
    session_reset(s, LOG_INFO, why, FRAME_RST_ABORTED);
}

/* From the first frame on (the connect, on the server), the timer watches the session: one
 * quiet both ways for -session.idle.sec is closed; one whose connection is gone (an orphan,
 * still writing out what both ends sent) gets -session.orphan.sec to finish. Re-armed lazily:
 * data only notes the time. */
static void
watch_idle(struct session *s)
{
    struct timeval tv = {s->mux == NULL ? s->cfg->orphan_sec : s->cfg->idle_sec, 0};

    s->idle_timing = 1;
    s->active_us = clock_now_us();
    if (tv.tv_sec == 0) {
        event_del(s->timer);
        return;
    }
    evtimer_add(s->timer, &tv);
}

static void
idle_check(struct session *s)
{
    int64_t quiet = clock_now_us() - s->active_us, limit = (int64_t)s->cfg->idle_sec * 1000000;
    struct timeval tv;
    char why[96];

    if (s->mux == NULL) {
        snprintf(why, sizeof(why), "orphan: not done %ld s after its connection closed",
                 s->cfg->orphan_sec);
        session_abort(s, LOG_INFO, why);
        return;
    }
    if (quiet >= limit) {
        snprintf(why, sizeof(why), "idle for %ld s", s->cfg->idle_sec);
        session_reset(s, LOG_INFO, why, FRAME_RST_TIMEOUT);
        return;
    }
    tv.tv_sec = (limit - quiet) / 1000000;
    tv.tv_usec = (limit - quiet) % 1000000;
    evtimer_add(s->timer, &tv);
}

static void
session_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;

    (void)fd;
    (void)what;
    if (s->idle_timing) {
        idle_check(s);
        return;
    }
    if (!s->connected) {
        session_fail(s, FRAME_RST_TIMEOUT, "connect timeout");
        return;
    }
    s->hold_done = 1;
    pump_up(s);
}

/* Returns drained bytes to the peer as WINDOW credit, growing the window when the reader keeps
 * up with a bandwidth-delay product near the window. Within the budgets (the connection's, its
 * client's, the process's: account.h): past one, credit is held back (the window shrinks as its
 * bytes drain, to SESSION_WINDOW_FLOOR) and no window grows; a window shrunk below the first one
 * gets it back when there is room again. */
static void
grant(struct session *s, size_t pending)
{
    struct frame_ctl c = {.type = FRAME_CTL_WINDOW};
    int64_t now, rtt, grow = 0, give = (int64_t)s->credit, room, first;
    double bdp;

    if (s->mux == NULL || s->got_fin || s->credit < (uint64_t)s->recv_window / 4) return;
    room = account_room(s->acct);
    s->bdp_bytes += s->credit;
    if (give > room) {
        int64_t floor = SESSION_WINDOW_FLOOR - s->charged;
        give = room > floor ? room : floor;
        if (give < 0) give = 0;
        s->recv_window -= (int64_t)s->credit - give;
        log_msg(LOG_DEBUG, "[flow] %08x:%u window %lld KiB: held back by %s", s->mux_id, s->sid,
                (long long)(s->recv_window / 1024), account_tightest(s->acct)->name);
        s->bdp_start_us = clock_now_us();
        s->bdp_bytes = 0;
        goto send;
    }
    room -= give;
    first = (int64_t)s->cfg->window_kib * 1024;
    now = clock_now_us();
    rtt = mux_credit_rtt_us(s->mux);
    if (s->recv_window < first) {
        grow = first - s->recv_window; /* back from a shrink */
    } else if (rtt > 0 && now - s->bdp_start_us >= rtt) {
        bdp = (double)s->bdp_bytes * (double)rtt / (double)(now - s->bdp_start_us);
        if (bdp * 2 > (double)s->recv_window && pending < (size_t)s->recv_window / 4 &&
            s->recv_window < s->window_max) {
            grow = s->recv_window;
            if (s->recv_window + grow > s->window_max) grow = s->window_max - s->recv_window;
        }
        s->bdp_start_us = now;
        s->bdp_bytes = 0;
    }
    if (grow > room) grow = room > 0 ? room : 0;
    if (grow > 0) {
        s->recv_window += grow;
        log_msg(LOG_DEBUG, "[flow] %08x:%u window %lld KiB", s->mux_id, s->sid,
                (long long)(s->recv_window / 1024));
    }
send:
    s->credit = 0;
    if (give + grow == 0) return; /* a WINDOW of 0 is a protocol error */
    c.sid = s->sid;
    c.increment = (uint32_t)(give + grow);
    s->recv_avail += give + grow;
    charge(s, give + grow);
    mux_send_ctl(s->mux, &c);
}

static void
session_out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct session *s = arg;
    size_t n = info->n_deleted, skip;

    if (n == 0 || s->closed) return;
    skip = n < s->uncredited ? n : s->uncredited;
    s->uncredited -= skip;
    s->credit += n - skip;
    charge(s, -(int64_t)(n - skip));
    grant(s, evbuffer_get_length(buf));
    if (s->got_fin && evbuffer_get_length(buf) == 0) schedule_work(s);
}

static void
session_connect_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    int e = 0;
    socklen_t len = sizeof(e);

    (void)what;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == -1) e = errno;
    if (e == EINPROGRESS || e == EINTR) {
        event_add(s->rev, NULL); /* not yet after all */
        return;
    }
    if (e != 0) {
        session_fail(s, errno_reason(e), strerror(e));
        return;
    }
    session_connected(s);
}

/* The connect is the session's own, not bufferevent_socket_connect(): that one watches
 * EV_WRITE through the bufferevent, drops it, and has it added again (six epoll_ctl per
 * session with the read event). Here: the one-shot watcher below, then the same event reads. */
void
session_connect_fd(struct session *s, int fd, const struct sockaddr *sa, socklen_t len)
{
    char why[160];

    bufferevent_setfd(s->bev, fd); /* it owns fd now; disabled, it watches nothing yet */
    s->rev = event_new(mux_base(s->mux), fd, EV_WRITE, session_connect_cb, s);
    if (s->rev == NULL) {
        session_fail(s, FRAME_RST_ABORTED, "out of memory");
        return;
    }
    if (connect(fd, sa, len) == 0) {
        session_connected(s);
        return;
    }
    if (errno != EINPROGRESS) {
        snprintf(why, sizeof(why), "connect: %s", strerror(errno));
        session_fail(s, errno_reason(errno), why);
        return;
    }
    /* To an address of this host the whole TCP handshake runs inside connect(): the SYN, the
     * SYN-ACK and the ACK are processed before it returns, which still says EINPROGRESS.
     * Asking the socket (one getsockopt, as SO_ERROR was after the wait) saves the loop pass
     * and the two epoll_ctl of waiting for EV_WRITE: a tunnel server in front of services on
     * its own host. Elsewhere the SYN has not even left: no question asked. */
    if (addr_is_loopback(sa) && addr_tcp_established(fd)) {
        session_connected(s);
        return;
    }
    event_add(s->rev, NULL);
}

void
session_fail(struct session *s, uint8_t reason, const char *why)
{
    char buf[256];

    snprintf(buf, sizeof(buf), "%s (%s)", frame_reason_str(reason), why);
    /* A warning: the destination failed the user (and ops may subscribe alerts to it). */
    session_reset(s, LOG_WARN, buf, reason);
}

int
session_on_data(struct session *s, struct evbuffer *src, size_t n, const char **err)
{
    struct evbuffer *out;
    size_t direct;

    if (s->got_fin) {
        *err = "data after the end of a session";
        return -1;
    }
    if ((int64_t)n > s->recv_avail) {
        *err = "window overflow";
        return -1;
    }
    s->recv_avail -= (int64_t)n;
    if (!s->heard && n > 0) {
        s->heard = 1;
        if (s->cfg->role_kind == ROLE_CLIENT)
            metrics_observe(&metrics.ttfb, (double)(clock_now_us() - s->asked_us) / 1e6);
    }
    metrics.bytes_from_peer += n;
    account_moved_from_peer(s->acct, n);
    s->active_us = clock_now_us();
    if (!s->connected) {
        evbuffer_remove_buffer(src, bufferevent_get_output(s->bev), n);
        return 0;
    }
    /* The frames of one loop pass go to the socket in one write at its end (mux_defer_out):
     * a frame is at most 64 KiB, a pass of a bulk transfer decrypts several, and each write to
     * a loopback socket runs the receiver's whole TCP path in this process. The bytes move
     * (their buffer chains, not a copy) into an output that is empty or already waits; what the
     * app leaves queued is copied from then on (writethrough_move), as before. */
    out = bufferevent_get_output(s->bev);
    if (s->out_deferred || (evbuffer_get_length(out) == 0 && mux_defer_out(s->mux, s->sid) == 0)) {
        s->out_deferred = 1;
        evbuffer_remove_buffer(src, out, n);
        want_write(s); /* armed and, once the write empties the output, dropped in this pass */
        return 0;
    }
    /* Bytes the socket took at once never pass the output buffer and its drain callback:
     * they are credit now. */
    direct = writethrough_move(s->bev, src, n);
    if (direct > 0 && !s->closed) {
        s->credit += direct;
        charge(s, -(int64_t)direct);
        grant(s, evbuffer_get_length(bufferevent_get_output(s->bev)));
    }
    if (!s->closed) want_write(s);
    return 0;
}

static int
session_chan_data(struct mux_chan *c, struct evbuffer *src, size_t n, const char **err)
{
    return session_on_data((struct session *)c, src, n, err);
}

static void
session_flush_out(struct mux_chan *c)
{
    struct session *s = (struct session *)c;

    if (!s->out_deferred) return;
    s->out_deferred = 0;
    writethrough_flush(s->bev); /* credit for what it writes: session_out_cb */
}

static int
session_on_fin(struct mux_chan *c, const char **err)
{
    struct session *s = (struct session *)c;

    if (s->got_fin) {
        *err = "a session ended twice";
        return -1;
    }
    s->got_fin = 1;
    schedule_work(s);
    return 0;
}

static int
session_on_window(struct mux_chan *c, uint32_t inc, const char **err)
{
    struct session *s = (struct session *)c;

    if (s->send_window + (int64_t)inc > SESSION_WINDOW_LIMIT) {
        *err = "window overflow (WINDOW past 2^31-1)";
        return -1;
    }
    s->send_window += inc;
    schedule_work(s);
    return 0;
}

static void
session_on_reset(struct mux_chan *c, uint8_t reason)
{
    struct session *s = (struct session *)c;
    char why[96];

    snprintf(why, sizeof(why), "reset by peer: %s", frame_reason_str(reason));
    session_abort(s, LOG_INFO, why);
}

static int
session_needs_mux(const struct mux_chan *c)
{
    const struct session *s = (const struct session *)c;

    return !(s->got_fin && s->sent_fin);
}

static void
session_mux_gone(struct mux_chan *c, const char *why)
{
    struct session *s = (struct session *)c;
    char buf[256];

    /* Both ends have sent everything: what is left is the output to the local socket, which
     * needs no connection. The peer may close the connection as soon as its side of the last
     * session ends, before this side has run its own close (seen: a third of the sessions of
     * every retired connection cut off), or while a slow local reader still drains. */
    if (!session_needs_mux(&s->chan)) {
        struct account *client = s->acct->parent;
        /* Its charge goes up to its client's account, which it keeps until it ends. */
        account_open(client);
        account_charge(client, s->charged);
        account_close(s->acct, s->charged);
        s->acct = client;
        mux_detach(s->mux, s->sid);
        s->mux = NULL;
        watch_idle(s); /* the orphan's deadline */
        schedule_work(s);
        return;
    }
    snprintf(buf, sizeof(buf), "connection lost: %s", why);
    session_abort(s, LOG_INFO, buf);
}

static void
session_wake(struct mux_chan *c)
{
    struct session *s = (struct session *)c;

    turns_grant(&s->turn);
    schedule_work(s);
}

static const struct mux_chan_ops session_chan_ops = {
    .on_data = session_chan_data,
    .on_fin = session_on_fin,
    .on_window = session_on_window,
    .on_reset = session_on_reset,
    .mux_gone = session_mux_gone,
    .needs_mux = session_needs_mux,
    .replied = session_replied,
    .wake = session_wake,
    .flush_out = session_flush_out,
    .send_header = session_send_header,
};
