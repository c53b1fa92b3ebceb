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
    int absolute;          /* the target is an absolute URI (a request to forward) */
    struct socks_req dest; /* CONNECT: its authority, as a SOCKS CONNECT request would carry */
    int has_auth;          /* a Proxy-Authorization: Basic header came */
    char user[256], pass[256];
};

/* Parses the head at b (n bytes). Returns HTTPREQ_OK with *used (the head's length, its blank
 * line included) and *r, HTTPREQ_NEED, or a status with *err: 400 (not HTTP/1.x, a bad request
 * line, header or authority, a request that is not CONNECT and not to forward), 431 (no end of
 * head in HTTPREQ_HEAD_MAX bytes), 501 (an absolute URI: forwarding is not built yet). A name
 * in the authority is checked by socks_check_name before any rule or log sees it. */
int httpreq_parse(const uint8_t *b, size_t n, size_t *used, struct httpreq *r, const char **err);

/* Parses an authority "host:port", "1.2.3.4:port" or "[v6]:port" (len bytes) into r as a
 * CONNECT to it. Returns 0, or -1 with *err. */
int httpreq_authority(const char *a, size_t len, struct socks_req *r, const char **err);

#endif
