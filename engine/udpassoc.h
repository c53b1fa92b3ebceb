/* udpassoc.h: the client's end of a SOCKS5 UDP ASSOCIATE (RFC 1928, 7): a relay socket the
 * app sends its datagrams to, taken only from the app's address (the TCP connection's peer,
 * its port as the request gives it or as its first datagram shows it), fragments dropped; each
 * destination routed once by the route hook (req.net "udp") and the answer kept: tunnelled in
 * a UDP session over the pool (one per server, opened by the first datagram), sent direct from
 * a socket of its own, or blocked. Replies go back to the app with their source. It ends with
 * its TCP connection, or after -udp.idle.sec without a datagram either way. */
#ifndef TUNNELS_UDPASSOC_H
#define TUNNELS_UDPASSOC_H

#include <stddef.h>
#include <sys/socket.h>

#include "socks.h"

struct bufferevent;
struct config;
struct evdns_base;
struct luahost;
struct pool;

struct udpassoc_env {
    struct event_base *base;
    const struct config *cfg;
    struct luahost *lua;
    struct evdns_base *dns; /* for destinations routed direct */
    /* The pool for the route hook's server (or the next one up), as for a TCP session. */
    struct pool *(*pool_for)(void *arg, int server, const char *dest);
    void *arg;
};

/* A new association for the app whose TCP connection is ctl (peer: its address, for the logs)
 * and whose request is req: binds the relay beside the listener's address (*bound, for the
 * reply). Returns 0, ctl owned by the association from here (the caller writes the reply
 * through it first), or -1 with why (ctl still the caller's). */
int udpassoc_open(const struct udpassoc_env *env, struct bufferevent *ctl, const char *peer,
                  const struct socks_req *req, struct sockaddr_storage *bound, char *why,
                  size_t whylen);

/* Ends every association (shutdown). */
void udpassoc_close_all(void);
unsigned udpassoc_count(void);

#endif
