/* server.h: the ReMux listener. Each accepted connection becomes a mux; each new session's
 * EagerSocks header is parsed, its destination resolved (evdns) and connected, non-blocking. */
#ifndef TUNNELS_SERVER_H
#define TUNNELS_SERVER_H

#include <stddef.h>

#include "config.h"

struct event_base;
struct luahost;
struct server;

/* Sets up TLS, DNS and the listener. Returns NULL with err (exit status 1). */
struct server *server_new(struct event_base *base, const struct config *cfg, struct luahost *lua,
                          char *err, size_t errlen);
/* SIGHUP: the TLS identity, the client CA and the CRL read again for new handshakes (the old
 * ones stay in force if they do not load), and connections whose client certificate the CRL
 * now lists are closed. Returns 0, or -1 with err. */
int server_reload(struct server *s, char *err, size_t errlen);

/* Stops accepting and sends GOAWAY on every connection (the start of a drain). */
void server_stop_accepting(struct server *s);
void server_close_all(struct server *s);
void server_free(struct server *s);

#endif
