/* udprelay.h: the server's end of a UDP session: its own non-blocking UDP sockets (one per
 * address family, made on first use), each destination asked of the ACL once (by name, then by
 * the address it resolved to) and its answer kept (udpdest.h), datagrams sent with sendto, and
 * replies taken only from the destinations it sent to, relayed back with their source. It ends
 * with its session (udpsess.h): the peer's FIN or RESET, its connection, -udp.idle.sec. */
#ifndef TUNNELS_UDPRELAY_H
#define TUNNELS_UDPRELAY_H

#include <stddef.h>
#include <stdint.h>

#include "luahost.h"

struct evbuffer;
struct evdns_base;
struct mux;

struct udprelay_env {
    struct evdns_base *dns;
    /* The ACL's answer for a destination asked for on m (server.c): 1 allow, 0 deny (why). */
    int (*allowed)(void *arg, const struct mux *m, const struct luahost_req *r, char *why,
                   size_t whylen);
    void *arg;
};

/* Opens the UDP session sid on m, its first frame's records (len bytes at the front of in)
 * relayed. 0 (a failure to set it up is answered with a RESET and logged), or -1 with *err for
 * a protocol error in the records. env must outlive the session. */
int udprelay_open(const struct udprelay_env *env, struct mux *m, uint16_t sid, struct evbuffer *in,
                  size_t len, const char **err);

#endif
