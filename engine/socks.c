/* socks.c: the SOCKS5 greeting and request parsers and the reply encoder. Pure functions over
 * buffers so that the client, the server's header parser, the specs and the fuzzers share one
 * implementation. */
#include "socks.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

int
socks_parse_greeting(const uint8_t *b, size_t n, size_t *used, int *methods, const char **err)
{
    size_t i;

    if (n < 1) return SOCKS_NEED;
    if (b[0] != 5) {
        *err = "not a SOCKS5 greeting (version byte is not 5)";
        return SOCKS_ERR;
    }
    if (n < 2) return SOCKS_NEED;
    if (b[1] == 0) {
        *err = "SOCKS5 greeting offers no method";
        return SOCKS_ERR;
    }
    if (n < 2 + (size_t)b[1]) return SOCKS_NEED;
    *methods = 0;
    for (i = 0; i < b[1]; i++) {
        if (b[2 + i] == 0) *methods |= SOCKS_METHOD_NOAUTH;
        if (b[2 + i] == 2) *methods |= SOCKS_METHOD_USERPASS;
    }
    *used = 2 + (size_t)b[1];
    return SOCKS_OK;
}

int
socks_parse_addr(const uint8_t *b, size_t n, size_t *used, struct socks_req *r, const char **err)
{
    size_t alen, need;

    if (n < 2) return SOCKS_NEED;
    r->atyp = b[0];
    switch (r->atyp) {
    case SOCKS_ATYP_IPV4:
        alen = 4;
        need = 1 + 4 + 2;
        break;
    case SOCKS_ATYP_IPV6:
        alen = 16;
        need = 1 + 16 + 2;
        break;
    case SOCKS_ATYP_DOMAIN:
        alen = b[1];
        if (alen == 0) {
            *err = "SOCKS5 request has an empty domain";
            return SOCKS_ERR;
        }
        need = 1 + 1 + alen + 2;
        break;
    default: *err = "SOCKS5 request has an unknown address type"; return SOCKS_ERR;
    }
    if (n < need) return SOCKS_NEED;
    memset(r->addr, 0, sizeof(r->addr));
    if (r->atyp == SOCKS_ATYP_DOMAIN) {
        if (memchr(b + 2, 0, alen) != NULL) {
            *err = "SOCKS5 request has a NUL byte in its domain";
            return SOCKS_ERR;
        }
        memcpy(r->host, b + 2, alen);
        r->host[alen] = 0;
    } else {
        memcpy(r->addr, b + 1, alen);
        inet_ntop(r->atyp == SOCKS_ATYP_IPV4 ? AF_INET : AF_INET6, r->addr, r->host,
                  sizeof(r->host));
    }
    r->port = (uint16_t)(b[need - 2] << 8 | b[need - 1]);
    *used = need;
    return SOCKS_OK;
}

int
socks_parse_request(const uint8_t *b, size_t n, size_t *used, struct socks_req *r, const char **err)
{
    int rc;

    if (n >= 1 && b[0] != 5) {
        *err = "not a SOCKS5 request (version byte is not 5)";
        return SOCKS_ERR;
    }
    if (n >= 3 && b[2] != 0) {
        *err = "SOCKS5 request has a non-zero reserved byte";
        return SOCKS_ERR;
    }
    if (n < 5) return SOCKS_NEED;
    r->cmd = b[1];
    rc = socks_parse_addr(b + 3, n - 3, used, r, err);
    if (rc == SOCKS_OK) *used += 3;
    return rc;
}

int
socks_parse_udp(const uint8_t *b, size_t n, size_t *used, struct socks_req *r, const char **err)
{
    int rc;

    if (n < 4) {
        *err = "SOCKS5 UDP datagram shorter than its header";
        return SOCKS_ERR;
    }
    if (b[0] != 0 || b[1] != 0) {
        *err = "SOCKS5 UDP datagram has a non-zero reserved field";
        return SOCKS_ERR;
    }
    if (b[2] != 0) {
        *err = "SOCKS5 UDP datagram is a fragment (FRAG is not 0)";
        return SOCKS_ERR;
    }
    r->cmd = SOCKS_CMD_UDP;
    rc = socks_parse_addr(b + 3, n - 3, used, r, err);
    if (rc == SOCKS_NEED) *err = "SOCKS5 UDP datagram shorter than its header";
    if (rc != SOCKS_OK) return SOCKS_ERR;
    *used += 3;
    return SOCKS_OK;
}

/* The length of a NUL-terminated field of at most 255 bytes at b (n bytes there), -1 while its
 * NUL has not arrived, -2 when it is too long. */
static long
v4_field(const uint8_t *b, size_t n)
{
    const uint8_t *z = memchr(b, 0, n < 256 ? n : 256);

    if (z != NULL) return z - b;
    return n < 256 ? -1 : -2;
}

int
socks_parse_v4(const uint8_t *b, size_t n, size_t *used, struct socks_req *r, const char **err)
{
    long uid, name;
    size_t at;

    if (n >= 1 && b[0] != 4) {
        *err = "not a SOCKS4 request (version byte is not 4)";
        return SOCKS_ERR;
    }
    if (n < 9) return SOCKS_NEED;
    uid = v4_field(b + 8, n - 8);
    if (uid == -2) {
        *err = "SOCKS4 user id longer than 255 bytes";
        return SOCKS_ERR;
    }
    if (uid < 0) return SOCKS_NEED;
    at = 8 + (size_t)uid + 1;
    r->cmd = b[1];
    r->port = (uint16_t)(b[2] << 8 | b[3]);
    memset(r->addr, 0, sizeof(r->addr));
    if (b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] != 0) { /* SOCKS4a: a name follows */
        name = v4_field(b + at, n - at);
        if (name == -2) {
            *err = "SOCKS4a name longer than 255 bytes";
            return SOCKS_ERR;
        }
        if (name < 0) return SOCKS_NEED;
        if (name == 0) {
            *err = "SOCKS4a request has an empty name";
            return SOCKS_ERR;
        }
        r->atyp = SOCKS_ATYP_DOMAIN;
        memcpy(r->host, b + at, (size_t)name);
        r->host[name] = 0;
        *used = at + (size_t)name + 1;
        return SOCKS_OK;
    }
    r->atyp = SOCKS_ATYP_IPV4;
    memcpy(r->addr, b + 4, 4);
    inet_ntop(AF_INET, r->addr, r->host, sizeof(r->host));
    *used = at;
    return SOCKS_OK;
}

void
socks_encode_v4_reply(uint8_t out[8], int granted)
{
    memset(out, 0, 8);
    out[1] = granted ? 0x5a : 0x5b;
}

int
socks_check_name(char *host, const char **err)
{
    size_t n = strlen(host), i, label = 0;

    if (n > 0 && host[n - 1] == '.') host[--n] = 0;
    if (n == 0 || n > 253) {
        *err = n == 0 ? "empty name" : "name longer than 253 bytes";
        return -1;
    }
    for (i = 0; i < n; i++) {
        char c = host[i];
        if (c >= 'A' && c <= 'Z') host[i] = c = (char)(c - 'A' + 'a');
        if (c == '.') {
            if (label == 0) {
                *err = "empty label in name";
                return -1;
            }
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) {
            *err = "name holds a byte other than a letter, digit, '-', '_' or '.'";
            return -1;
        }
        if (++label > 63) {
            *err = "label longer than 63 bytes in name";
            return -1;
        }
    }
    if (label == 0) {
        *err = "empty label in name"; /* it ended in two dots */
        return -1;
    }
    return 0;
}

int
socks_parse_auth(const uint8_t *b, size_t n, size_t *used, char *user, char *pass, const char **err)
{
    size_t ulen, plen;

    if (n < 1) return SOCKS_NEED;
    if (b[0] != 1) {
        *err = "not a username/password request (version byte is not 1)";
        return SOCKS_ERR;
    }
    if (n < 2) return SOCKS_NEED;
    ulen = b[1];
    if (ulen == 0) {
        *err = "username/password request with an empty username";
        return SOCKS_ERR;
    }
    if (n < 2 + ulen + 1) return SOCKS_NEED;
    plen = b[2 + ulen];
    if (n < 3 + ulen + plen) return SOCKS_NEED;
    /* The engine compares C strings: a NUL inside would let "alice\0anything" pass as alice. */
    if (memchr(b + 2, 0, ulen) != NULL || memchr(b + 3 + ulen, 0, plen) != NULL) {
        *err = "username/password request with a NUL byte";
        return SOCKS_ERR;
    }
    memcpy(user, b + 2, ulen);
    user[ulen] = 0;
    memcpy(pass, b + 3 + ulen, plen);
    pass[plen] = 0;
    *used = 3 + ulen + plen;
    return SOCKS_OK;
}

size_t
socks_encode_addr(uint8_t *out, const struct socks_req *r)
{
    size_t n = 1, alen;

    out[0] = r->atyp;
    if (r->atyp == SOCKS_ATYP_DOMAIN) {
        alen = strlen(r->host);
        if (alen > 255) alen = 255;
        out[n++] = (uint8_t)alen;
        memcpy(out + n, r->host, alen);
    } else {
        alen = r->atyp == SOCKS_ATYP_IPV4 ? 4 : 16;
        memcpy(out + n, r->addr, alen);
    }
    n += alen;
    out[n++] = (uint8_t)(r->port >> 8);
    out[n++] = (uint8_t)r->port;
    return n;
}

size_t
socks_encode_request(uint8_t *out, const struct socks_req *r)
{
    out[0] = 5;
    out[1] = r->cmd;
    out[2] = 0;
    return 3 + socks_encode_addr(out + 3, r);
}

void
socks_addr_of(const struct sockaddr *sa, struct socks_req *r)
{
    memset(r, 0, sizeof(*r));
    r->cmd = SOCKS_CMD_UDP;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        r->atyp = SOCKS_ATYP_IPV6;
        memcpy(r->addr, &s6->sin6_addr, 16);
        r->port = ntohs(s6->sin6_port);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        r->atyp = SOCKS_ATYP_IPV4;
        memcpy(r->addr, &s4->sin_addr, 4);
        r->port = ntohs(s4->sin_port);
    }
    inet_ntop(r->atyp == SOCKS_ATYP_IPV6 ? AF_INET6 : AF_INET, r->addr, r->host, sizeof(r->host));
}

void
socks_encode_bound(uint8_t *out, size_t *len, const struct sockaddr *sa)
{
    struct socks_req r;

    socks_addr_of(sa, &r);
    out[0] = 5;
    out[1] = SOCKS_REP_SUCCEEDED;
    out[2] = 0;
    *len = 3 + socks_encode_addr(out + 3, &r);
}

void
socks_encode_reply(uint8_t out[10], uint8_t rep)
{
    memset(out, 0, 10);
    out[0] = 5;
    out[1] = rep;
    out[3] = SOCKS_ATYP_IPV4;
}

void
socks_format_dest(const struct socks_req *r, char *buf, size_t len)
{
    if (r->atyp == SOCKS_ATYP_IPV6)
        snprintf(buf, len, "[%s]:%u", r->host, (unsigned)r->port);
    else
        snprintf(buf, len, "%s:%u", r->host, (unsigned)r->port);
}

const char *
socks_atyp_name(uint8_t atyp)
{
    if (atyp == SOCKS_ATYP_DOMAIN) return "domain";
    return atyp == SOCKS_ATYP_IPV4 ? "ipv4" : "ipv6";
}
