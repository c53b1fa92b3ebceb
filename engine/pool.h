/* pool.h: the client's ReMux pool: the live connections to the server, which one takes a new
 * session (asked of the Lua policy), dialling, and closing idle ones on a 1 s tick. With
 * -eagersocks.net=tls|tcp every session gets a connection of its own instead. */
#ifndef TUNNELS_POOL_H
#define TUNNELS_POOL_H

#include <openssl/ssl.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

struct event_base;
struct luahost;
struct mux;
struct pool;

/* ctx is NULL for plain-TCP lower connections. */
struct pool *pool_new(struct event_base *base, const struct config *cfg, struct luahost *lua,
                      SSL_CTX *ctx, const char *label, const char *addr, const struct sockaddr *sa,
                      socklen_t salen);

/* 1 while the server is marked down: its last dial or handshake failed. It is probed again
 * after a backoff (1 s doubling to 30 s); the first connection that comes up clears it. */
int pool_is_down(const struct pool *p);

/* The server's name in -server.addr. */
const char *pool_label(const struct pool *p);
/* Its connections now, and the least PING round trip seen on them (0: none yet). */
unsigned pool_connections(const struct pool *p);
int64_t pool_min_rtt_us(const struct pool *p);
void pool_free(struct pool *p);

struct bufferevent;

/* Opens a session to dest for the app's socket bev (its SOCKS request answered; hdr is the
 * EagerSocks header): on a connection now, or once a dial in flight is done (in order, for at
 * most -connect.sec). Owns bev from here; a failure is logged and bev freed. */
void pool_open(struct pool *p, struct bufferevent *bev, const uint8_t *hdr, size_t hdrlen,
               const char *dest);

/* As pool_open, for a forwarded HTTP request whose head (origin form) is in bev's input and
 * whose body has body_left bytes still to come (session_forward_http). */
void pool_open_http(struct pool *p, struct bufferevent *bev, const uint8_t *hdr, size_t hdrlen,
                    const char *dest, int64_t body_left);

/* A connection for a UDP session now, with its id (*sid): one that is up or in its handshake
 * (the session holds its first datagrams until it ends); NULL when none can be had without
 * waiting for a dial in flight (a datagram does not wait: it is dropped). */
struct mux *pool_take_now(struct pool *p, uint16_t *sid);

/* Makes ctx hand new TLS sessions to the pool, which offers the latest to its next dial. */
void pool_set_session_cb(SSL_CTX *ctx);

/* Closes every connection (shutdown). */
void pool_close_all(struct pool *p);

#endif
