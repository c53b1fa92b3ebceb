/* frame.h: the ReMux v1 frame codec. Bytes in, frames out; no I/O. See docs/PROTOCOL.md. */
#ifndef TUNNELS_FRAME_H
#define TUNNELS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HDR_LEN 4
#define FRAME_MAX_PAYLOAD 65535
#define FRAME_CTL_MAX_LEN 16 /* the largest control frame, header included, rounded up */

enum frame_ctl_type {
    FRAME_CTL_WINDOW = 1,
    FRAME_CTL_RESET = 2,
    FRAME_CTL_PING = 3,
    FRAME_CTL_PONG = 4,
    FRAME_CTL_GOAWAY = 5,
};

/* RESET reasons. */
enum frame_reason {
    FRAME_RST_REFUSED = 1,     /* the destination refused the connection */
    FRAME_RST_UNREACHABLE = 2, /* no route to the destination network or host */
    FRAME_RST_DNS = 3,         /* the destination name did not resolve */
    FRAME_RST_POLICY = 4,      /* refused by policy (ACL, route hook, going away) */
    FRAME_RST_TIMEOUT = 5,     /* connecting or resolving timed out */
    FRAME_RST_PROTOCOL = 6,    /* the session broke the protocol (bad header, overflow) */
    FRAME_RST_ABORTED = 7,     /* the local socket failed or was reset */
};

struct frame_hdr {
    uint16_t sid;
    uint16_t len;
};

struct frame_ctl {
    uint8_t type;
    uint8_t reason;     /* RESET */
    uint16_t sid;       /* WINDOW, RESET; GOAWAY: last sid */
    uint32_t increment; /* WINDOW */
    uint64_t opaque;    /* PING, PONG */
};

/* Decodes a frame header from the first bytes of buf. Returns 1 with *h filled, or 0 when fewer
 * than FRAME_HDR_LEN bytes are there. A header is never malformed by itself. */
int frame_decode_hdr(const uint8_t *buf, size_t len, struct frame_hdr *h);

/* Writes a frame header into out. */
void frame_encode_hdr(uint8_t out[FRAME_HDR_LEN], uint16_t sid, uint16_t len);

/* Decodes the payload of a session-0 frame. Returns 0, or -1 with *err saying what is wrong
 * (unknown type, wrong length, a WINDOW or RESET naming session 0, a zero increment). */
int frame_decode_ctl(const uint8_t *p, size_t len, struct frame_ctl *c, const char **err);

/* Encodes a whole control frame (header included) into out, which holds FRAME_CTL_MAX_LEN
 * bytes. Returns the number of bytes written. */
size_t frame_encode_ctl(uint8_t *out, const struct frame_ctl *c);

/* A short, stable text for a RESET reason ("connection refused", ...). */
const char *frame_reason_str(uint8_t reason);

#endif
