/* client.h: the local SOCKS5 listener. Each accepted connection is answered at once
 * (EagerSocks) and becomes a session on a connection the pool picks. */
#ifndef TUNNELS_CLIENT_H
#define TUNNELS_CLIENT_H

#include <stddef.h>

#include "config.h"

struct event_base;
struct luahost;
struct client;

/* Sets up TLS, the pool and the listener. Returns NULL with err (exit status 1). */
struct client *client_new(struct event_base *base, const struct config *cfg, struct luahost *lua,
                          char *err, size_t errlen);
/* Stops accepting (the start of a drain). */
void client_stop_accepting(struct client *c);
/* Closes every connection to the server. */
void client_close_all(struct client *c);
void client_free(struct client *c);

#endif
