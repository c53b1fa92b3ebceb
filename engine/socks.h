/* socks.h: SOCKS5 (RFC 1928) parsing and encoding over byte buffers, no I/O. The same request
 * parser reads the EagerSocks header at the front of a session's first frame. */
#ifndef TUNNELS_SOCKS_H
#define TUNNELS_SOCKS_H

#include <stddef.h>
#include <stdint.h>

enum { SOCKS_ERR = -1, SOCKS_NEED = 0, SOCKS_OK = 1 };

enum {
    SOCKS_CMD_CONNECT = 1,
    SOCKS_CMD_BIND = 2,
    SOCKS_CMD_UDP = 3,
};

/* Reply codes (RFC 1928, 6). */
enum {
    SOCKS_REP_SUCCEEDED = 0,
    SOCKS_REP_GENERAL_FAILURE = 1,
    SOCKS_REP_NOT_ALLOWED = 2,
    SOCKS_REP_HOST_UNREACHABLE = 4,
    SOCKS_REP_COMMAND_NOT_SUPPORTED = 7,
    SOCKS_REP_ADDRESS_NOT_SUPPORTED = 8,
};

enum {
    SOCKS_ATYP_IPV4 = 1,
    SOCKS_ATYP_DOMAIN = 3,
    SOCKS_ATYP_IPV6 = 4,
};

#define SOCKS_REQ_MAX 262  /* 4 + 1 + 255 + 2: the longest request */
#define SOCKS_DEST_MAX 300 /* "[v6]:port" or "domain:port", NUL included */

struct socks_req {
    uint8_t cmd;
    uint8_t atyp;
    uint16_t port;
    uint8_t addr[16]; /* IPv4 or IPv6 in network order */
    char host[256];   /* the domain (ATYP 3) or the address as text, NUL-terminated */
};

#define SOCKS_METHOD_NOAUTH 0x01 /* bits of *methods below */
#define SOCKS_METHOD_USERPASS 0x02

/* Parses a greeting `05 NMETHODS METHODS...`. Returns SOCKS_OK with *used and *methods (the
 * SOCKS_METHOD_* bits offered), SOCKS_NEED, or SOCKS_ERR with *err (not version 5, no method). */
int socks_parse_greeting(const uint8_t *b, size_t n, size_t *used, int *methods, const char **err);

/* Parses a request `05 CMD 00 ATYP ADDR PORT`. Returns SOCKS_OK with *used and *r set,
 * SOCKS_NEED, or SOCKS_ERR with *err (version, reserved byte, address type, empty or
 * NUL-holding domain). The command is returned, not judged: the caller answers BIND / UDP. */
int socks_parse_request(const uint8_t *b, size_t n, size_t *used, struct socks_req *r,
                        const char **err);

/* Parses an address `ATYP ADDR PORT` (as in a request after its first three bytes). Returns
 * SOCKS_OK with *used and r's atyp, addr, host and port, SOCKS_NEED, or SOCKS_ERR with *err. */
int socks_parse_addr(const uint8_t *b, size_t n, size_t *used, struct socks_req *r,
                     const char **err);

/* Parses the header of a datagram an app sends to a UDP ASSOCIATE relay (RFC 1928, 7):
 * `00 00 FRAG ATYP ADDR PORT`, the data after it. The datagram is whole: a short one is an
 * error, not SOCKS_NEED. FRAG != 0 is an error (fragments are not reassembled: RFC 1928
 * allows dropping them). Returns SOCKS_OK with *used (the header's length) and *r (cmd UDP),
 * or SOCKS_ERR with *err. */
int socks_parse_udp(const uint8_t *b, size_t n, size_t *used, struct socks_req *r,
                    const char **err);

/* Parses a SOCKS4 or SOCKS4a request `04 CMD PORT IPV4 USERID 00 [DOMAIN 00]` (SOCKS4a: the
 * address 0.0.0.x, x != 0, and the name follows the user id). Returns SOCKS_OK with *used and
 * *r (cmd as sent: 1 CONNECT, 2 BIND; atyp IPv4 or domain), SOCKS_NEED, or SOCKS_ERR with *err
 * (not version 4, a user id or name over 255 bytes, an empty name). The user id is skipped:
 * SOCKS4 has no password to check it with. */
int socks_parse_v4(const uint8_t *b, size_t n, size_t *used, struct socks_req *r, const char **err);

/* Writes the SOCKS4 reply `00 REP 0 0.0.0.0` (8 bytes): REP 0x5a granted, 0x5b refused. */
void socks_encode_v4_reply(uint8_t out[8], int granted);

/* Normalises a destination name in place (ASCII lower case, one trailing dot removed) and
 * checks it: letters, digits, '-' and '_' in dot-separated labels of 1 to 63 bytes, 253 bytes
 * in all. Both ends call it on every ATYP 3 name before a rule, the resolver or a log sees it,
 * so `Evil.Example.` and `evil.example` are one name to the rules. Returns 0, or -1 with *err. */
int socks_check_name(char *host, const char **err);

/* Parses a username/password request (RFC 1929) `01 ULEN UNAME PLEN PASSWD`. Returns SOCKS_OK
 * with *used and the NUL-terminated user and pass (each 256 bytes), SOCKS_NEED, or SOCKS_ERR
 * with *err (not version 1, an empty user, a NUL byte in either). */
int socks_parse_auth(const uint8_t *b, size_t n, size_t *used, char *user, char *pass,
                     const char **err);

/* Encodes a request for r (the EagerSocks header). Returns its length (at most SOCKS_REQ_MAX). */
size_t socks_encode_request(uint8_t *out, const struct socks_req *r);

/* Encodes `ATYP ADDR PORT` for r; returns its length (at most SOCKS_REQ_MAX - 3). */
size_t socks_encode_addr(uint8_t *out, const struct socks_req *r);

struct sockaddr;
/* The address of sa (AF_INET or AF_INET6) as a SOCKS address: atyp, addr, host (as text), port;
 * cmd UDP (a datagram's source). */
void socks_addr_of(const struct sockaddr *sa, struct socks_req *r);

/* Writes the success reply `05 00 00 ATYP ADDR PORT` naming sa (an AF_INET or AF_INET6
 * address: a UDP ASSOCIATE's relay) into out (22 bytes), its length in *len. */
void socks_encode_bound(uint8_t *out, size_t *len, const struct sockaddr *sa);

/* Writes the reply `05 REP 00 01 0.0.0.0 0` (10 bytes) into out. */
void socks_encode_reply(uint8_t out[10], uint8_t rep);

/* Formats "host:port", "1.2.3.4:port" or "[::1]:port" into buf (SOCKS_DEST_MAX bytes). */
void socks_format_dest(const struct socks_req *r, char *buf, size_t len);

/* What a route hook calls the address type (req.atyp): "domain", "ipv4" or "ipv6". */
const char *socks_atyp_name(uint8_t atyp);

#endif
