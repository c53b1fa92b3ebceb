/* httpreq.c: see httpreq.h. Strict where RFC 9112 says a server must be (no whitespace before a
 * header's colon, no obsolete line folding, no control bytes), lenient where it allows (a bare
 * LF ends a line): a proxy that reads a head differently from the server behind it is how
 * request smuggling starts. */
#include "httpreq.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 9110 tchar: the bytes of a method or a header name. */
static int
is_tchar(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* The end of the line starting at p (before its CR LF or LF), or NULL when none in [p, end). */
static const uint8_t *
line_end(const uint8_t *p, const uint8_t *end)
{
    const uint8_t *lf = memchr(p, '\n', (size_t)(end - p));

    if (lf == NULL) return NULL;
    return lf > p && lf[-1] == '\r' ? lf - 1 : lf;
}

/* Past the line end at e (CR LF or LF). */
static const uint8_t *
next_line(const uint8_t *e)
{
    return *e == '\r' ? e + 2 : e + 1;
}

int
httpreq_authority(const char *a, size_t len, struct socks_req *r, const char **err)
{
    const char *colon, *host = a;
    size_t hlen;
    char buf[256], *stop;
    unsigned long port;

    memset(r, 0, sizeof(*r));
    r->cmd = SOCKS_CMD_CONNECT;
    if (len > 0 && a[0] == '[') {
        const char *close = memchr(a, ']', len);
        if (close == NULL || close + 1 >= a + len || close[1] != ':') {
            *err = "authority: an IPv6 address needs [addr]:port";
            return -1;
        }
        host = a + 1;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = NULL;
        for (const char *p = a; p < a + len; p++)
            if (*p == ':') colon = p;
        if (colon == NULL) {
            *err = "authority has no port";
            return -1;
        }
        hlen = (size_t)(colon - a);
    }
    if (hlen == 0 || hlen >= sizeof(buf)) {
        *err = hlen == 0 ? "authority has no host" : "authority's host is longer than 255 bytes";
        return -1;
    }
    if (a + len - colon - 1 < 1 || a + len - colon - 1 > 5) {
        *err = "authority's port is not a number from 1 to 65535";
        return -1;
    }
    memcpy(buf, colon + 1, (size_t)(a + len - colon - 1));
    buf[a + len - colon - 1] = 0;
    if (buf[0] < '0' || buf[0] > '9') {
        *err = "authority's port is not a number from 1 to 65535";
        return -1;
    }
    port = strtoul(buf, &stop, 10);
    if (*stop != 0 || port == 0 || port > 65535) {
        *err = "authority's port is not a number from 1 to 65535";
        return -1;
    }
    r->port = (uint16_t)port;
    memcpy(buf, host, hlen);
    buf[hlen] = 0;
    if (host != a) { /* bracketed: IPv6 only */
        if (inet_pton(AF_INET6, buf, r->addr) != 1) {
            *err = "authority's [address] is not IPv6";
            return -1;
        }
        r->atyp = SOCKS_ATYP_IPV6;
        inet_ntop(AF_INET6, r->addr, r->host, sizeof(r->host));
        return 0;
    }
    if (inet_pton(AF_INET, buf, r->addr) == 1) {
        r->atyp = SOCKS_ATYP_IPV4;
        inet_ntop(AF_INET, r->addr, r->host, sizeof(r->host));
        return 0;
    }
    r->atyp = SOCKS_ATYP_DOMAIN;
    memcpy(r->host, buf, hlen + 1);
    return socks_check_name(r->host, err) == 0 ? 0 : -1;
}

/* The value of base64 digit c, or -1. */
static int
b64_digit(uint8_t c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes padded base64 (len a multiple of 4) into out; its length, or -1 when it is not. */
static long
b64_decode(const uint8_t *in, size_t len, uint8_t *out)
{
    size_t i, n = 0;

    if (len == 0 || len % 4 != 0) return -1;
    for (i = 0; i < len; i += 4) {
        int d[4], k, pad = 0;
        for (k = 0; k < 4; k++) {
            d[k] = b64_digit(in[i + k]);
            if (in[i + k] == '=' && i + 4 == len && k >= 2) {
                d[k] = 0, pad++;
                continue;
            }
            if (d[k] < 0 || pad > 0) return -1; /* not a digit, or a digit after '=' */
        }
        out[n++] = (uint8_t)(d[0] << 2 | d[1] >> 4);
        if (pad < 2) out[n++] = (uint8_t)(d[1] << 4 | d[2] >> 2);
        if (pad < 1) out[n++] = (uint8_t)(d[2] << 6 | d[3]);
    }
    return (long)n;
}

/* Proxy-Authorization's value (len bytes): "Basic base64(user:pass)". 0, or -1 with *err. */
static int
basic_auth(const uint8_t *v, size_t len, struct httpreq *r, const char **err)
{
    uint8_t out[600], *colon;
    long n;

    if (len < 6 || strncasecmp((const char *)v, "basic ", 6) != 0) {
        *err = "Proxy-Authorization is not Basic";
        return -1;
    }
    v += 6, len -= 6;
    while (len > 0 && (*v == ' ' || *v == '\t'))
        v++, len--;
    n = len < 800 ? b64_decode(v, len, out) : -1;
    if (n < 0) {
        *err = "Proxy-Authorization: Basic credentials are not base64";
        return -1;
    }
    colon = memchr(out, ':', (size_t)n);
    /* The engine compares C strings: a NUL inside would let "alice\0anything" pass as alice. */
    if (colon == NULL || memchr(out, 0, (size_t)n) != NULL || colon - out > 255 ||
        out + n - colon - 1 > 255) {
        *err = "Proxy-Authorization: Basic credentials are not user:password";
        return -1;
    }
    memcpy(r->user, out, (size_t)(colon - out));
    r->user[colon - out] = 0;
    memcpy(r->pass, colon + 1, (size_t)(out + n - colon - 1));
    r->pass[out + n - colon - 1] = 0;
    r->has_auth = 1;
    return 0;
}

/* A header's value, after its colon and before the line's end e, without the blanks around it:
 * [*v, *q). */
static void
trimmed_value(const uint8_t *colon, const uint8_t *e, const uint8_t **v, const uint8_t **q)
{
    *v = colon + 1;
    while (*v < e && (**v == ' ' || **v == '\t'))
        (*v)++;
    *q = e;
    while (*q > *v && ((*q)[-1] == ' ' || (*q)[-1] == '\t'))
        (*q)--;
}

int
httpreq_parse(const uint8_t *b, size_t n, size_t *used, struct httpreq *r, const char **err)
{
    const uint8_t *end = b + (n < HTTPREQ_HEAD_MAX ? n : HTTPREQ_HEAD_MAX), *p = b, *e, *sp1, *sp2;
    const uint8_t *blank = NULL;
    size_t mlen;
    int length_seen = 0, chunked = 0;

    memset(r, 0, sizeof(*r));
    /* Where the head ends: the first empty line. */
    for (p = b; p < end; p = next_line(e)) {
        e = line_end(p, end);
        if (e == NULL) break;
        if (e == p) {
            blank = e;
            break;
        }
    }
    if (blank == NULL) {
        if (n < HTTPREQ_HEAD_MAX) return HTTPREQ_NEED;
        *err = "request head longer than 8 KiB";
        return 431;
    }
    /* The request line: METHOD SP target SP HTTP/1.x */
    e = line_end(b, end);
    sp1 = memchr(b, ' ', (size_t)(e - b));
    sp2 = sp1 != NULL ? memchr(sp1 + 1, ' ', (size_t)(e - sp1 - 1)) : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == b || sp2 == sp1 + 1) {
        *err = "request line is not METHOD target HTTP/1.x";
        return 400;
    }
    mlen = (size_t)(sp1 - b);
    for (p = b; p < sp1; p++)
        if (!is_tchar(*p)) {
            *err = "request line's method is not a token";
            return 400;
        }
    if (mlen >= sizeof(r->method)) {
        *err = "request line's method is longer than 15 bytes";
        return 400;
    }
    for (p = sp1 + 1; p < sp2; p++)
        if (*p <= 0x20 || *p >= 0x7f) {
            *err = "request line's target holds a space, control or non-ASCII byte";
            return 400;
        }
    if (e - sp2 - 1 != 8 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
        (sp2[8] != '0' && sp2[8] != '1')) {
        *err = "request line's version is not HTTP/1.0 or HTTP/1.1";
        return 400;
    }
    memcpy(r->method, b, mlen);
    r->method[mlen] = 0;
    /* Headers: name ":" value; only Proxy-Authorization matters here. */
    for (p = next_line(e); p < blank; p = next_line(e)) {
        const uint8_t *colon, *v, *q;
        e = line_end(p, end);
        if (*p == ' ' || *p == '\t') {
            *err = "header line folded (obsolete line folding)";
            return 400;
        }
        colon = memchr(p, ':', (size_t)(e - p));
        if (colon == NULL || colon == p) {
            *err = "header line without a name and a colon";
            return 400;
        }
        for (q = p; q < colon; q++)
            if (!is_tchar(*q)) {
                *err = "header name holds a byte that is not a token's (whitespace before ':'?)";
                return 400;
            }
        for (q = colon + 1; q < e; q++)
            if ((*q < 0x20 && *q != '\t') || *q == 0x7f) {
                *err = "header value holds a control byte";
                return 400;
            }
        if (colon - p == 14 && strncasecmp((const char *)p, "content-length", 14) == 0) {
            char num[24], *stop;
            trimmed_value(colon, e, &v, &q);
            if (q == v || q - v >= (long)sizeof(num) || length_seen) {
                *err =
                    length_seen ? "more than one Content-Length" : "Content-Length is not a number";
                return 400;
            }
            memcpy(num, v, (size_t)(q - v));
            num[q - v] = 0;
            if (num[0] < '0' || num[0] > '9' || (r->body = strtoll(num, &stop, 10)) < 0 ||
                *stop != 0 || q - v > 18) {
                *err = "Content-Length is not a number";
                return 400;
            }
            length_seen = 1;
        }
        if (colon - p == 17 && strncasecmp((const char *)p, "transfer-encoding", 17) == 0)
            chunked = 1;
        if (colon - p == 19 && strncasecmp((const char *)p, "proxy-authorization", 19) == 0) {
            trimmed_value(colon, e, &v, &q);
            if (r->has_auth) {
                *err = "more than one Proxy-Authorization header";
                return 400;
            }
            if (basic_auth(v, (size_t)(q - v), r, err) == -1) return 400;
        }
    }
    *used = (size_t)(next_line(blank) - b);
    if (strcmp(r->method, "CONNECT") == 0) {
        if (httpreq_authority((const char *)sp1 + 1, (size_t)(sp2 - sp1 - 1), &r->dest, err) == -1)
            return 400;
        return HTTPREQ_OK;
    }
    if (sp2 - sp1 - 1 >= 7 && strncasecmp((const char *)sp1 + 1, "http://", 7) == 0) {
        const char *auth = (const char *)sp1 + 8, *stop = (const char *)sp2, *slash;
        size_t alen;
        char hostport[310];
        r->absolute = 1;
        slash = memchr(auth, '/', (size_t)(stop - auth));
        if (slash == NULL) slash = memchr(auth, '?', (size_t)(stop - auth));
        alen = (size_t)((slash != NULL ? slash : stop) - auth);
        if (alen == 0 || alen >= sizeof(r->host) - 4 || memchr(auth, '@', alen) != NULL) {
            *err = alen == 0 || alen >= sizeof(r->host) - 4
                       ? "URI has no host, or one longer than 255 bytes"
                       : "URI carries a user name (user@host): not forwarded";
            return 400;
        }
        memcpy(r->host, auth, alen);
        r->host[alen] = 0;
        /* The authority with its port, or with :80, parsed as CONNECT's would be. */
        if (r->host[alen - 1] == ']' || strrchr(r->host, ':') == NULL ||
            (r->host[0] == '[' && strrchr(r->host, ']') > strrchr(r->host, ':')))
            snprintf(hostport, sizeof(hostport), "%s:80", r->host);
        else
            snprintf(hostport, sizeof(hostport), "%s", r->host);
        if (httpreq_authority(hostport, strlen(hostport), &r->dest, err) == -1) return 400;
        r->path = slash != NULL ? (size_t)(slash - (const char *)b) : 0;
        r->path_len = slash != NULL ? (size_t)(stop - slash) : 0;
        if (chunked) {
            *err = length_seen ? "both Content-Length and Transfer-Encoding: length unclear"
                               : "a body in chunks (Transfer-Encoding) is not forwarded: send "
                                 "its Content-Length";
            return length_seen ? 400 : 411;
        }
        return HTTPREQ_OK;
    }
    *err = "not a proxy request (neither CONNECT host:port nor an absolute http:// URI)";
    return 400;
}

/* Whether header name (len bytes) is hop-by-hop: this connection's, not the request's. */
static int
hop_by_hop(const uint8_t *name, size_t len, const uint8_t *named, size_t named_len)
{
    static const char *const hop[] = {"connection",
                                      "keep-alive",
                                      "proxy-connection",
                                      "proxy-authorization",
                                      "proxy-authenticate",
                                      "te",
                                      "trailer",
                                      "upgrade",
                                      "host"};
    size_t i;
    /* named is NULL when there is no Connection header: no offset from it (UBSan). */
    const uint8_t *p = named, *end = named != NULL ? named + named_len : NULL;

    for (i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (strlen(hop[i]) == len && strncasecmp((const char *)name, hop[i], len) == 0) return 1;
    /* The names the Connection header lists (comma-separated tokens). */
    while (p < end) {
        const uint8_t *t, *te;
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        t = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t')
            p++;
        te = p;
        if ((size_t)(te - t) == len && len > 0 &&
            strncasecmp((const char *)t, (const char *)name, len) == 0)
            return 1;
    }
    return 0;
}

size_t
httpreq_origin_head(const uint8_t *head, size_t len, const struct httpreq *r, uint8_t *out,
                    size_t outlen)
{
    const uint8_t *end = head + len, *p, *e, *named = NULL;
    size_t n = 0, named_len = 0;
    int w;

    /* The Connection header's value first: the names it lists are hop-by-hop too. */
    for (p = next_line(line_end(head, end)); p < end; p = next_line(e)) {
        const uint8_t *colon;
        e = line_end(p, end);
        if (e == NULL || e == p) break;
        colon = memchr(p, ':', (size_t)(e - p));
        if (colon != NULL && colon - p == 10 &&
            strncasecmp((const char *)p, "connection", 10) == 0) {
            named = colon + 1;
            named_len = (size_t)(e - named);
        }
    }
    /* An empty path is "/"; one that starts with its query gets the "/" in front. */
    w = snprintf((char *)out, outlen, "%s %s%.*s HTTP/1.1\r\nHost: %s\r\n", r->method,
                 r->path_len == 0 || head[r->path] == '?' ? "/" : "", (int)r->path_len,
                 (const char *)head + r->path, r->host);
    if (w < 0 || (size_t)w >= outlen) return 0;
    n = (size_t)w;
    for (p = next_line(line_end(head, end)); p < end; p = next_line(e)) {
        const uint8_t *colon;
        e = line_end(p, end);
        if (e == NULL || e == p) break;
        colon = memchr(p, ':', (size_t)(e - p));
        if (colon == NULL || hop_by_hop(p, (size_t)(colon - p), named, named_len)) continue;
        if (n + (size_t)(e - p) + 2 > outlen) return 0;
        memcpy(out + n, p, (size_t)(e - p));
        n += (size_t)(e - p);
        memcpy(out + n, "\r\n", 2);
        n += 2;
    }
    if (n + 21 > outlen) return 0;
    memcpy(out + n, "Connection: close\r\n\r\n", 21);
    return n + 21;
}

static const char *
reason_phrase(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 411: return "Length Required";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    default: return "Bad Gateway";
    }
}

size_t
httpreq_error(int status, const char *text, char *out, size_t outlen)
{
    char head[256];
    size_t tlen = strlen(text), hlen;
    int n;

    if (outlen < 256) return 0;
    /* The body is cut, not the head: it must say how long the body is. */
    if (tlen > outlen - 256 - 11) tlen = outlen - 256 - 11;
    n = snprintf(head, sizeof(head),
                 "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n%s\r\n",
                 status, reason_phrase(status), tlen + 10,
                 status == 407 ? "Proxy-Authenticate: Basic realm=\"tunnels\"\r\n" : "");
    hlen = (size_t)n;
    memcpy(out, head, hlen);
    memcpy(out + hlen, "tunnels: ", 9);
    memcpy(out + hlen + 9, text, tlen);
    out[hlen + 9 + tlen] = '\n';
    out[hlen + 10 + tlen] = 0;
    return hlen + 10 + tlen;
}
