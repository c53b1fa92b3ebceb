/* udpsess.h: one ReMux UDP session (docs/PROTOCOL.md, "UDP sessions"): the datagrams of one
 * association over one session id, each record carrying its destination on the way out and its
 * source on the way back (dgram.h). It keeps the session's window: a datagram that does not fit,
 * or meets a full connection, is dropped and counted, never queued. It returns credit as soon
 * as a datagram is handed on, ends after -udp.idle.sec without a datagram either way, and
 * closes exactly once. Its owner holds the sockets and the destinations: udpassoc.c on the
 * client, udprelay.c on the server. The mux owns the session while it is open. */
#ifndef TUNNELS_UDPSESS_H
#define TUNNELS_UDPSESS_H

#include <stddef.h>
#include <stdint.h>

#include "socks.h"

struct evbuffer;
struct mux;
struct udpsess;

enum udpsess_end {
    UDPSESS_LOST,   /* the peer's FIN or RESET, its connection lost, idle, going away */
    UDPSESS_NO_UDP, /* the server does not speak UDP sessions: its connection agreed v1, or it
                       refused the session as a kind it does not speak (RESET 6) */
};

struct udpsess_owner {
    /* A datagram from the peer: to a (server: its destination) or from a (client: its
     * source). The owner may end the session from here. */
    void (*datagram)(void *arg, const struct socks_req *a, const uint8_t *data, size_t n);
    /* The session ended by itself, as end says (why, for a log, says more). Not called after
     * udpsess_end. Drop the pointer. */
    void (*closed)(void *arg, enum udpsess_end end, const char *why);
    void *arg;
};

/* Client: a UDP session on m under sid (from the pool; m not known to speak v1 only:
 * mux_speaks_udp), opened by the first datagram sent: at once on a connection that agreed v2,
 * after the handshake on one still in it. NULL when out of memory. */
struct udpsess *udpsess_client(struct mux *m, uint16_t sid, const struct udpsess_owner *o);

/* Server: the session the peer opened under sid; its first frame's records follow
 * (udpsess_on_first). NULL when out of memory. */
struct udpsess *udpsess_server(struct mux *m, uint16_t sid, const struct udpsess_owner *o);
/* The records after the header in the opening frame (len bytes at the front of in). */
int udpsess_on_first(struct udpsess *u, struct evbuffer *in, size_t len, const char **err);

/* Sends one datagram to (client) or from (server) a. 0, or -1: dropped and counted (the
 * window, a full connection, too large). */
int udpsess_send(struct udpsess *u, const struct socks_req *a, const uint8_t *data, size_t n);

/* Ends the session: a FIN to the peer (when it was opened), then the close, logged with why.
 * The owner is not called back. */
void udpsess_end(struct udpsess *u, const char *why);

/* The connection under u (its identity for the server's ACL); NULL once it has closed. */
struct mux *udpsess_mux(const struct udpsess *u);
unsigned udpsess_count(void); /* UDP sessions open now, in the process */
/* At exit, once the loop has stopped: frees the closed sessions no pass will free now. */
void udpsess_free_closed(void);

#endif
