/* tls.h: OpenSSL contexts for both roles (TLS 1.3 preferred, 1.2 minimum, AEAD only) and the
 * text of a TLS bufferevent's errors. */
#ifndef TUNNELS_TLS_H
#define TUNNELS_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

#include "config.h"

struct bufferevent;

/* The server's context: its identity, and client certificates required when -tls.server.ca is
 * set. Returns NULL with err naming the flag and file on failure. */
SSL_CTX *tls_server_ctx(const struct config *cfg, char *err, size_t errlen);

/* The client's context: verifies the server against -tls.client.ca (or the system's CAs), and
 * presents -tls.client.cert when given. */
SSL_CTX *tls_client_ctx(const struct config *cfg, char *err, size_t errlen);

/* A new client SSL that checks the server's certificate names name (a DNS name or an IP). */
SSL *tls_client_ssl(SSL_CTX *ctx, const char *name);

/* The SHA-256 of the peer's certificate into out; 0, or -1 when it presented none. */
int tls_peer_fingerprint(SSL *ssl, unsigned char out[32]);

/* Drains the OpenSSL errors of bev (and of this thread) into out: "" when there are none. */
void tls_errors(struct bufferevent *bev, char *out, size_t len);

#endif
