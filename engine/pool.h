/* pool.h: the client's ReMux pool: the live connections to the server, which one takes a new
 * session (asked of the Lua policy), dialling, and closing idle ones on a 1 s tick. With
 * -eagersocks.net=tls|tcp every session gets a connection of its own instead. */
#ifndef TUNNELS_POOL_H
#define TUNNELS_POOL_H

#include <openssl/ssl.h>
#include <sys/socket.h>

#include "config.h"

struct event_base;
struct luahost;
struct mux;
struct pool;

/* ctx is NULL for plain-TCP lower connections. */
struct pool *pool_new(struct event_base *base, const struct config *cfg, struct luahost *lua,
                      SSL_CTX *ctx, const struct sockaddr *sa, socklen_t salen);
void pool_free(struct pool *p);

/* The connection a new session goes on and its session id; NULL when none can be had (the
 * failure is logged). */
struct mux *pool_take(struct pool *p, uint16_t *sid);

/* Makes ctx hand new TLS sessions to the pool, which offers the latest to its next dial. */
void pool_set_session_cb(SSL_CTX *ctx);

/* Closes every connection (shutdown). */
void pool_close_all(struct pool *p);

#endif
