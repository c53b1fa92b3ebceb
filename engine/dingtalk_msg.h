/* dingtalk_msg.h: the DingTalk robot message, with no I/O: the request signature and the JSON body
 * (and a generic webhook's).
 * Pure, so the specs check them byte for byte through the FFI. */
#ifndef TUNNELS_DINGTALK_MSG_H
#define TUNNELS_DINGTALK_MSG_H

#include <stddef.h>

/* DingTalk's signature for timestamp ts_ms (milliseconds since the epoch):
 * urlencode(base64(HMAC-SHA256(key = secret, data = ts_ms "\n" secret))). Returns its length,
 * or 0 if out is too small. */
size_t dingtalk_msg_sign(const char *secret, long long ts_ms, char *out, size_t outlen);

/* in percent-encoded for a URL query (RFC 3986 unreserved bytes kept). Returns the length, or 0
 * if out is too small (and in is not empty). */
size_t dingtalk_msg_urlencode(const char *in, char *out, size_t outlen);

/* The body of a text message, {"msgtype":"text","text":{"content":"..."}}, with text escaped
 * for JSON (control bytes as \n or \u00XX, bytes that are not UTF-8 as U+FFFD) and cut at a
 * character boundary if out is short ("..." marks the cut). Returns the length, 0 if out cannot
 * hold even the envelope. */
size_t dingtalk_msg_json(const char *text, char *out, size_t outlen);

/* text as a JSON string literal, quotes included, escaped as above; out needs 6 bytes a byte
 * of text plus 6 to hold it whole (the cut mark's room). Returns the length, 0 if out cannot
 * hold "". */
size_t dingtalk_msg_json_string(const char *text, char *out, size_t outlen);

/* The body for a generic webhook (-sla.webhook.url): text itself when it is a JSON object (it
 * starts with "{" after blanks: the alert hook wrote it for its service) and fits, else
 * {"text":"..."} (Slack's incoming webhooks and many others), escaped and cut as above.
 * Returns the length, 0 if out cannot hold the envelope. */
size_t dingtalk_msg_webhook_json(const char *text, char *out, size_t outlen);

#endif
