/* httpreq.h: an HTTP proxy request's head (RFC 9112) over a byte buffer, no I/O. The client's
 * listener reads HTTP CONNECT requests with it, beside SOCKS5 and SOCKS4 on the same port. */
#ifndef TUNNELS_HTTPREQ_H
#define TUNNELS_HTTPREQ_H

#include <stddef.h>
#include <stdint.h>

#include "socks.h"

/* The longest head taken (request line and headers); a longer one is answered 431. */
#define HTTPREQ_HEAD_MAX 8192

enum { HTTPREQ_NEED = 0, HTTPREQ_OK = 1 }; /* anything else: the HTTP status to answer */

struct httpreq {
    char method[16];
    int absolute;          /* the target is an absolute http:// URI: a request to forward */
    struct socks_req dest; /* the authority (CONNECT's, or the URI's), as a SOCKS CONNECT */
    int has_auth;          /* a Proxy-Authorization: Basic header came */
    char user[256], pass[256];
    /* A request to forward: */
    long long body;        /* its Content-Length (0 when none) */
    char host[300];        /* the URI's authority, for the Host header ("name", "name:port") */
    size_t path, path_len; /* where the path (and query) is in the head: origin form's target */
};

/* Parses the head at b (n bytes). Returns HTTPREQ_OK with *used (the head's length, its blank
 * line included) and *r, HTTPREQ_NEED, or a status with *err: 400 (not HTTP/1.x, a bad request
 * line, header or authority, a request that is neither CONNECT nor one to forward, a body whose
 * length is unclear: Content-Length twice, or with Transfer-Encoding), 411 (a body to forward
 * in chunks: only a Content-Length is taken), 431 (no end of head in HTTPREQ_HEAD_MAX bytes).
 * A name in the authority is checked by socks_check_name before any rule or log sees it. */
int httpreq_parse(const uint8_t *b, size_t n, size_t *used, struct httpreq *r, const char **err);

/* The head to send on for a request to forward (r from httpreq_parse over head, len bytes):
 * origin form (`GET /path HTTP/1.1`), its Host the URI's authority, hop-by-hop headers
 * (Connection and those it names, Keep-Alive, Proxy-*, TE, Trailer, Upgrade) left out, and
 * `Connection: close`: one request per session, so that the response's end is the session's.
 * Returns its length, or 0 if out (len + 400 bytes is enough) is too small. */
size_t httpreq_origin_head(const uint8_t *head, size_t len, const struct httpreq *r, uint8_t *out,
                           size_t outlen);

/* Parses an authority "host:port", "1.2.3.4:port" or "[v6]:port" (len bytes) into r as a
 * CONNECT to it. Returns 0, or -1 with *err. */
int httpreq_authority(const char *a, size_t len, struct socks_req *r, const char **err);

/* An error response: the status line, text/plain, Connection: close and, for 407,
 * Proxy-Authenticate: Basic; the body "tunnels: " text "\n", cut to fit. Returns its length. */
size_t httpreq_error(int status, const char *text, char *out, size_t outlen);

#endif
