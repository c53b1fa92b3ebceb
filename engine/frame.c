/* frame.c: encode and decode ReMux v1 frames over plain byte buffers. The engine's mux layer
 * feeds it bytes it has peeked from a connection; the specs and fuzzers call it directly. */
#include "frame.h"

static uint16_t
get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t
get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void
put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

int
frame_decode_hdr(const uint8_t *buf, size_t len, struct frame_hdr *h)
{
    if (len < FRAME_HDR_LEN) return 0;
    h->sid = get16(buf);
    h->len = get16(buf + 2);
    return 1;
}

void
frame_encode_hdr(uint8_t out[FRAME_HDR_LEN], uint16_t sid, uint16_t len)
{
    put16(out, sid);
    put16(out + 2, len);
}

/* Body length per control type; 0 for an unknown type. */
static size_t
ctl_body_len(uint8_t type)
{
    switch (type) {
    case FRAME_CTL_WINDOW: return 6;
    case FRAME_CTL_RESET: return 3;
    case FRAME_CTL_PING:
    case FRAME_CTL_PONG: return 8;
    case FRAME_CTL_GOAWAY: return 2;
    default: return 0;
    }
}

int
frame_decode_ctl(const uint8_t *p, size_t len, struct frame_ctl *c, const char **err)
{
    size_t want;

    if (len == 0) {
        *err = "empty control frame";
        return -1;
    }
    c->type = p[0];
    c->reason = 0;
    c->sid = 0;
    c->increment = 0;
    c->opaque = 0;
    want = ctl_body_len(c->type);
    if (want == 0) {
        *err = "unknown control frame type";
        return -1;
    }
    if (len - 1 != want) {
        *err = "control frame has the wrong length";
        return -1;
    }
    p++;
    switch (c->type) {
    case FRAME_CTL_WINDOW:
        c->sid = get16(p);
        c->increment = get32(p + 2);
        if (c->sid == 0) {
            *err = "WINDOW for session 0";
            return -1;
        }
        if (c->increment == 0) {
            *err = "WINDOW with a zero increment";
            return -1;
        }
        break;
    case FRAME_CTL_RESET:
        c->sid = get16(p);
        c->reason = p[2];
        if (c->sid == 0) {
            *err = "RESET for session 0";
            return -1;
        }
        break;
    case FRAME_CTL_PING:
    case FRAME_CTL_PONG: c->opaque = (uint64_t)get32(p) << 32 | get32(p + 4); break;
    case FRAME_CTL_GOAWAY: c->sid = get16(p); break;
    }
    return 0;
}

size_t
frame_encode_ctl(uint8_t *out, const struct frame_ctl *c)
{
    size_t body = ctl_body_len(c->type);
    uint8_t *p = out + FRAME_HDR_LEN;

    frame_encode_hdr(out, 0, (uint16_t)(body + 1));
    *p++ = c->type;
    switch (c->type) {
    case FRAME_CTL_WINDOW:
        put16(p, c->sid);
        put32(p + 2, c->increment);
        break;
    case FRAME_CTL_RESET:
        put16(p, c->sid);
        p[2] = c->reason;
        break;
    case FRAME_CTL_PING:
    case FRAME_CTL_PONG:
        put32(p, (uint32_t)(c->opaque >> 32));
        put32(p + 4, (uint32_t)c->opaque);
        break;
    case FRAME_CTL_GOAWAY: put16(p, c->sid); break;
    }
    return FRAME_HDR_LEN + 1 + body;
}

const char *
frame_reason_str(uint8_t reason)
{
    switch (reason) {
    case FRAME_RST_REFUSED: return "connection refused";
    case FRAME_RST_UNREACHABLE: return "unreachable";
    case FRAME_RST_DNS: return "dns failure";
    case FRAME_RST_POLICY: return "refused by policy";
    case FRAME_RST_TIMEOUT: return "timeout";
    case FRAME_RST_PROTOCOL: return "protocol error";
    case FRAME_RST_ABORTED: return "aborted";
    default: return "unknown reason";
    }
}
