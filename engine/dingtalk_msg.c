/* dingtalk_msg.c: see dingtalk_msg.h. */
#include "dingtalk_msg.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

size_t
dingtalk_msg_urlencode(const char *in, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    const unsigned char *p;

    for (p = (const unsigned char *)in; *p != 0; p++) {
        int keep = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                   (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~';
        if (n + (keep ? 1 : 3) >= outlen) return 0;
        if (keep) {
            out[n++] = (char)*p;
        } else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    if (n >= outlen) return 0;
    out[n] = 0;
    return n;
}

size_t
dingtalk_msg_sign(const char *secret, long long ts_ms, char *out, size_t outlen)
{
    char data[600];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    char b64[4 * ((EVP_MAX_MD_SIZE + 2) / 3) + 1];
    int n = snprintf(data, sizeof(data), "%lld\n%s", ts_ms, secret);

    if (n < 0 || (size_t)n >= sizeof(data)) return 0;
    if (HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)data, (size_t)n, mac,
             &maclen) == NULL)
        return 0;
    EVP_EncodeBlock((unsigned char *)b64, mac, (int)maclen);
    return dingtalk_msg_urlencode(b64, out, outlen);
}

/* The length of the valid UTF-8 sequence at p (n bytes left), or 0. */
static size_t
utf8_len(const unsigned char *p, size_t n)
{
    size_t len, i;
    unsigned cp;

    if (p[0] < 0x80) return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2, cp = p[0] & 0x1f;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3, cp = p[0] & 0x0f;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4, cp = p[0] & 0x07;
    else
        return 0;
    if (len > n) return 0;
    for (i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    /* Overlong forms, surrogates and past U+10FFFF are not UTF-8. */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* text as a JSON string between head and tail (see dingtalk_msg_json). */
static size_t
json_wrap(const char *head, const char *tail, const char *text, char *out, size_t outlen)
{
    size_t hlen = strlen(head), tlen = strlen(tail);
    const unsigned char *p = (const unsigned char *)text;
    size_t left = strlen(text), n = hlen, room;
    char esc[8];

    /* Room for the tail, a "..." cut mark and the NUL. */
    if (outlen < hlen + tlen + 3 + 1) return 0;
    room = outlen - tlen - 3 - 1;
    memcpy(out, head, hlen);
    while (left > 0) {
        size_t len = utf8_len(p, left), elen;
        const char *e = esc;
        if (len == 0) {
            e = "\\ufffd";
            elen = 6;
            len = 1;
        } else if (*p == '"' || *p == '\\') {
            esc[0] = '\\', esc[1] = (char)*p, elen = 2;
        } else if (*p == '\n') {
            e = "\\n", elen = 2;
        } else if (*p == '\t') {
            e = "\\t", elen = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            elen = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", *p);
        } else {
            e = (const char *)p;
            elen = len;
        }
        if (n + elen > room) {
            memcpy(out + n, "...", 3);
            n += 3;
            break;
        }
        memcpy(out + n, e, elen);
        n += elen;
        p += len;
        left -= len;
    }
    memcpy(out + n, tail, tlen + 1);
    return n + tlen;
}

size_t
dingtalk_msg_json(const char *text, char *out, size_t outlen)
{
    return json_wrap("{\"msgtype\":\"text\",\"text\":{\"content\":\"", "\"}}", text, out, outlen);
}

size_t
dingtalk_msg_json_string(const char *text, char *out, size_t outlen)
{
    return json_wrap("\"", "\"", text, out, outlen);
}

size_t
dingtalk_msg_webhook_json(const char *text, char *out, size_t outlen)
{
    const char *p = text + strspn(text, " \t\r\n");
    size_t n = strlen(text);

    /* The script wrote the body itself (Feishu's, WeCom's, ...): sent as it is. */
    if (*p == '{' && n < outlen) {
        memcpy(out, text, n + 1);
        return n;
    }
    return json_wrap("{\"text\":\"", "\"}", text, out, outlen);
}
