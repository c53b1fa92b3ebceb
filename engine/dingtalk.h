/* dingtalk.h: delivery of alert texts to the DingTalk robot webhook (or, with -sla.webhook.url,
 * to a generic HTTPS webhook: Slack, Feishu, WeCom...): one HTTPS POST at a time
 * on the event loop (evhttp over bufferevent_openssl), the certificate verified, each try
 * bounded by -sla.dingtalk.timeout.sec, 3 tries with backoff, then the text is dropped (logged). */
#ifndef TUNNELS_DINGTALK_H
#define TUNNELS_DINGTALK_H

#include <stddef.h>

#include "config.h"

struct dingtalk;
struct event_base;
struct evdns_base;

/* NULL with err when the URL or the CA file is unusable. */
struct dingtalk *dingtalk_new(struct event_base *base, struct evdns_base *dns,
                              const struct config *cfg, char *err, size_t errlen);
void dingtalk_free(struct dingtalk *d);

/* Queues text for delivery. -1 when the queue is full (the caller holds or drops it). */
int dingtalk_send(struct dingtalk *d, const char *text);

#endif
