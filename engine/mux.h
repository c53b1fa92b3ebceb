/* mux.h: one ReMux lower connection (TLS or TCP): reads and writes frames, keeps the table of
 * its sessions, answers PING, honours GOAWAY, and closes exactly once. The client's pool and
 * the server's listener own muxes; sessions belong to the mux they ride on. */
#ifndef TUNNELS_MUX_H
#define TUNNELS_MUX_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "frame.h"

struct bufferevent;
struct event_base;
struct evbuffer;
struct mux;
struct session;
struct turn_ticket;

/* What rides on a session id: a stream (session.c) or a UDP session (udpsess.c). Each kind's
 * struct starts with a struct mux_chan; the mux calls it only through these. Each returns 0,
 * or -1 with *err for a protocol error (the mux closes). */
struct mux_chan;
struct mux_chan_ops {
    int (*on_data)(struct mux_chan *c, struct evbuffer *src, size_t n, const char **err);
    int (*on_fin)(struct mux_chan *c, const char **err);
    int (*on_window)(struct mux_chan *c, uint32_t inc, const char **err);
    void (*on_reset)(struct mux_chan *c, uint8_t reason);
    /* The mux is closing: close without a frame (or live on alone: needs_mux). */
    void (*mux_gone)(struct mux_chan *c, const char *why);
    int (*needs_mux)(const struct mux_chan *c); /* 0 once it can finish without the mux */
    int (*replied)(const struct mux_chan *c);   /* 1 once a data byte went to the peer */
    /* Optional. Room on the mux (turns.h); the end of a pass (mux_defer_out); client: send the
     * opening frame now, a higher id is opening (ids open in ascending order); client: the
     * lower connection is up (its ALPN agreed: mux_speaks_udp). */
    void (*wake)(struct mux_chan *c);
    void (*flush_out)(struct mux_chan *c);
    void (*send_header)(struct mux_chan *c);
    void (*ready)(struct mux_chan *c);
    /* Optional. The connection is going away (a GOAWAY sent, or received with this id at or
     * below its last): a session that can move does, later in the pass (UDP: it ends, and its
     * association's next datagram opens one on another connection). */
    void (*goaway)(struct mux_chan *c);
};
struct mux_chan {
    const struct mux_chan_ops *ops;
    uint16_t sid;
};

struct mux_ops {
    /* The lower connection is up (TLS handshake done). */
    void (*ready)(struct mux *m, void *arg);
    /* The mux is closing; its sessions are already closed. It is freed after this returns, on a
     * later loop pass: drop every pointer to it. */
    void (*closed)(struct mux *m, void *arg);
    /* Server: the first frame of a new session, len payload bytes at the front of in. Returns 0
     * having consumed exactly len bytes, or -1 with *err (a protocol error: the mux closes). */
    int (*open)(struct mux *m, uint16_t sid, struct evbuffer *in, size_t len, const char **err,
                void *arg);
    /* The last session on the mux ended. Optional. */
    void (*idle)(struct mux *m, void *arg);
};

enum mux_transport {
    MUX_TCP, /* bev is a socket bufferevent */
    MUX_TLS, /* bev is a TLS bufferevent of tls_bufferevent_new */
};
enum mux_role {
    MUX_CLIENT, /* dialled by the pool: opens sessions */
    MUX_SERVER, /* accepted by the server: sessions are opened by the peer */
};

/* Wraps bev (a connected or connecting socket or TLS bufferevent, which the mux now owns).
 * peer: the accepted peer's address as text, for the `[conn] +` line (NULL when dialling). */
struct mux *mux_new(struct event_base *base, struct bufferevent *bev, enum mux_transport transport,
                    enum mux_role role, const struct config *cfg, const struct mux_ops *ops,
                    void *arg, const char *peer);

/* Server: who is on the other end: the peer's address, and once the TLS handshake is done its
 * certificate's subject (RFC 2253) and SHA-256 fingerprint (hex); "" when not known. */
const char *mux_peer(const struct mux *m);
const char *mux_subject(const struct mux *m);
const char *mux_fingerprint(const struct mux *m);

/* How a close ends the lower connection. */
enum mux_close_how {
    MUX_CLOSE_ORDERLY, /* what is queued (a RESET, a GOAWAY) leaves first, then close_notify */
    MUX_CLOSE_ABORT,   /* broken, timed out or hostile: dropped at once, nothing flushed */
};

/* Closes the mux and every session on it, logging `[conn] - id = n reason` at level. Safe to
 * call more than once; only the first call acts. */
void mux_close(struct mux *m, enum mux_close_how how, int level, const char *reason);

/* Server: the peer abandoned a session it opened: it reset it before any byte came back, or
 * opened it past a limit (refused). A peer whose abandoned sessions pass 256 and half of those
 * it opened is closed (HTTP/2's "rapid reset": each costs it two frames, the server a
 * connect). */
void mux_abandoned(struct mux *m);
/* 1 when m was closed for that. */
int mux_abandon_closed(const struct mux *m);

/* Server: sends GOAWAY (the last session id seen) and refuses any newer session. */
void mux_goaway(struct mux *m);

/* Client: the id for a new session, or 0 when this connection has used them all. */
uint16_t mux_next_sid(struct mux *m);

/* Registers c under c->sid; returns 0 or -1 (out of memory). */
int mux_attach(struct mux *m, struct mux_chan *c);
void mux_detach(struct mux *m, uint16_t sid);

/* Queues one frame: header, then prefix (plen bytes), then n bytes moved out of src. On the
 * client, a session's first frame makes the sessions below it that have not sent theirs send
 * their EagerSocks header alone first (ids open in ascending order: mux.c, open_in_order). */
void mux_send(struct mux *m, uint16_t sid, const void *prefix, size_t plen, struct evbuffer *src,
              size_t n);
/* Reads up to max bytes from fd straight into the output as one frame (header, prefix, data):
 * no copy in user space. Returns the bytes read; 0 at EOF; -1 with errno (EAGAIN: none now). */
ssize_t mux_send_from_fd(struct mux *m, uint16_t sid, const void *prefix, size_t plen, int fd,
                         size_t max);
void mux_send_ctl(struct mux *m, const struct frame_ctl *c);

/* 0 while the lower connection's output is over its bound: sessions stop reading. */
int mux_writable(const struct mux *m);

/* Room on a full connection goes to sessions in turn (turns.h): a session that found the mux
 * full, or others waiting, gets in line with mux_wait_turn. When room comes, the mux gives
 * turns in line order (session_wake); a session that used one passes the next on
 * (mux_pass_turn) while room is left. */
void mux_wait_turn(struct mux *m, struct turn_ticket *k, uint16_t sid);
/* 1 while sessions wait in line: one that is not on its turn must queue, not read. */
int mux_has_waiters(const struct mux *m);
/* Wakes the next session in line if the mux is writable. */
void mux_pass_turn(struct mux *m);

/* Session sid has put bytes for its local socket in the socket's output: the mux writes them
 * (session_flush_out) at the end of the loop pass, with what the rest of the pass's frames add,
 * in one system call instead of one per frame. Returns 0, or -1 (closing, out of memory): the
 * session writes now itself. */
int mux_defer_out(struct mux *m, uint16_t sid);

/* What the sessions on m hold (account.h); the server hangs it under its client's account. */
struct account *mux_account(struct mux *m);
uint32_t mux_id(const struct mux *m);
struct event_base *mux_base(const struct mux *m);
const struct config *mux_config(const struct mux *m);
unsigned mux_count(void); /* lower connections open now, in the process */
/* Of those: in their handshake, ready, and ready but draining (a GOAWAY went either way). */
void mux_count_states(unsigned *handshake, unsigned *ready, unsigned *draining);
unsigned mux_live(const struct mux *m);    /* sessions open now */
unsigned mux_carried(const struct mux *m); /* sessions carried so far */
double mux_age(const struct mux *m);       /* seconds */
double mux_idle(const struct mux *m);      /* seconds since the last session ended, 0 if live */
int mux_is_ready(const struct mux *m);
/* 1 when the two ends agreed ReMux v2 (UDP sessions): ALPN `remux/2` on TLS; plain TCP (tests,
 * baselines) assumes both ends are current. 0 before the TLS handshake is done. */
int mux_speaks_udp(const struct mux *m);
int mux_is_closing(const struct mux *m);

/* At exit, once the loop has stopped and the owners are freed: frees every mux still around (a
 * close still flushing its last frames, one whose final free was due on the next pass). */
void mux_free_all(void);
int mux_goaway_received(const struct mux *m);
int64_t mux_min_rtt_us(const struct mux *m); /* the least PING/PONG RTT seen, 0 before one */
/* The round trip a WINDOW's credit takes now: the kernel's smoothed RTT of the connection (it
 * holds the queue a congestion control such as BBR keeps in flight, up to about one more path
 * RTT), never below the least PING RTT; 0 before either is known. */
int64_t mux_credit_rtt_us(struct mux *m);
/* The path's RTT as its owner knows it from sibling connections: a connection dialled under
 * load samples only queueing (seen: 16 ms on loopback, so windows grew to megabytes). */
void mux_rtt_hint(struct mux *m, int64_t us);
/* The TLS connection under m, or NULL for plain TCP. */
struct ssl_st *mux_ssl(const struct mux *m);

#endif
