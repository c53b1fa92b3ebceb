/* tls.h: OpenSSL contexts for both roles (TLS 1.3 preferred, 1.2 minimum, AEAD only) and the
 * text of a TLS bufferevent's errors. */
#ifndef TUNNELS_TLS_H
#define TUNNELS_TLS_H

#include <stddef.h>
#include <openssl/ssl.h>

#include "config.h"

struct bufferevent;
struct event_base;
struct sockaddr;

/* The server's context: its identity, and client certificates required when -tls.server.ca is
 * set. Returns NULL with err naming the flag and file on failure. */
/* The ALPN name of ReMux v2 (UDP sessions; docs/PROTOCOL.md "Versions"). */
#define TLS_ALPN_V2 "remux/2"

SSL_CTX *tls_server_ctx(const struct config *cfg, char *err, size_t errlen);

/* The peer's certificate's subject (RFC 2253) and SHA-256 fingerprint in hex (flen >= 65); both
 * "" when it sent none. */
void tls_peer_identity(SSL *ssl, char *subject, size_t slen, char *fp_hex, size_t flen);

/* 1 when the peer's certificate on ssl is listed in a CRL of the PEM file crl_path. */
int tls_revoked(SSL *ssl, const char *crl_path);

/* The client's context: verifies the server against -tls.client.ca (or the system's CAs), and
 * presents -tls.client.cert when given. */
SSL_CTX *tls_client_ctx(const struct config *cfg, char *err, size_t errlen);

/* A new client SSL that checks the server's certificate names name (a DNS name or an IP). */
SSL *tls_client_ssl(SSL_CTX *ctx, const char *name);

/* The SHA-256 of the peer's certificate into out; 0, or -1 when it presented none. */
int tls_peer_fingerprint(SSL *ssl, unsigned char out[32]);

/* A TLS bufferevent over fd: OpenSSL's filter over a plain socket bufferevent, so socket reads
 * and writes move up to TLS_IO_BATCH bytes per system call instead of one 16 KiB record each.
 * With sa, the socket connects to it first. Owns fd and ssl from here, even when it fails.
 * The socket bufferevent (bufferevent_get_underlying) does not read: its owner reads the socket
 * into its input with a bulk reader (bulkread.h) and calls bufferevent_trigger(sock, EV_READ, 0).
 */
#define TLS_IO_BATCH (256 * 1024)
enum tls_side {
    TLS_DIALLED,  /* we connected: our side sends the ClientHello */
    TLS_ACCEPTED, /* the peer connected to our listener */
};
struct bufferevent *tls_bufferevent_new(struct event_base *base, int fd, SSL *ssl,
                                        enum tls_side side, const struct sockaddr *sa, int salen,
                                        int opts);

/* TCP Fast Open for a dial of tls_bufferevent_new (called with the ClientHello queued, i.e. once
 * the bufferevent is enabled): writes the ClientHello itself, so that it rides in the SYN when
 * the kernel holds a cookie for the server. See tls.c. */
void tls_fastopen_send(struct bufferevent *bev);

/* TCP Fast Open on the server's listening socket: takes a SYN's data when the host allows it.
 * Returns 1 when it is on (the host's net.ipv4.tcp_fastopen has bit 2), else 0. */
int tls_fastopen_listen(int fd);

/* Frees a bufferevent of tls_bufferevent_new; with notify, close_notify goes out first. What
 * the socket has not taken yet (records, the alert) leaves from a lingering socket for up to
 * TLS_LINGER_SEC: the encrypted queue would otherwise die with the filter. */
#define TLS_LINGER_SEC 2
enum tls_goodbye {
    TLS_CLOSE_NOTIFY, /* an orderly end of a connection that is up */
    TLS_SILENT,       /* broken, hostile, or never up: nothing more is sent */
};
void tls_bufferevent_free(struct bufferevent *bev, enum tls_goodbye goodbye);

/* Frees the lingering sockets that are still flushing (at exit). */
void tls_linger_free_all(void);

/* What the OpenSSL errors of a failed handshake were about. */
enum tls_error_kind {
    TLS_ERROR_NONE,        /* no OpenSSL error */
    TLS_ERROR_CERTIFICATE, /* a certificate: not verified, revoked, expired, missing, refused */
    TLS_ERROR_PROTOCOL,    /* anything else: versions, ciphers, not TLS at all, a bad record */
};

/* Drains the OpenSSL errors of bev (and of this thread) into out ("" when there are none) and
 * says what they were about. */
enum tls_error_kind tls_errors(struct bufferevent *bev, char *out, size_t len);

#endif
