/* dingtalk.c: see dingtalk.h. A connection per try (Connection: close): alerts are rare and a
 * kept-alive connection to a webhook would only go stale between them. evhttp frees a request
 * after its callback but not the connection, which must not be freed inside that callback: the
 * finished connection is parked in `dead` and freed from a zero timer. */
#include "dingtalk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "dingtalk_msg.h"
#include "log.h"
#include "metrics.h"

#define DT_QUEUE 16
#define DT_TRIES 3
#define DT_BODY_MAX 16384    /* DingTalk takes 20,000 bytes of content */
#define DT_MAX_HEADERS 16384 /* of the answer */
#define DT_MAX_BODY 65536    /* of the answer: {"errcode":0,"errmsg":"ok"} */

struct dingtalk {
    struct event_base *base;
    struct evdns_base *dns;
    const struct config *cfg;
    SSL_CTX *ctx;
    char host[256], path[1024];
    int port;
    int webhook; /* -sla.webhook.url: a generic webhook, not DingTalk's robot */
    char *queue[DT_QUEUE];
    size_t head, len;
    int tries, in_flight, closing;
    struct evhttp_connection *conn, *dead;
    struct event *retry, *reap;
};

static void start(struct dingtalk *d);

static void
reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct dingtalk *d = arg;

    (void)fd;
    (void)what;
    if (d->dead != NULL) evhttp_connection_free(d->dead);
    d->dead = NULL;
}

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start(arg);
}

static void
pop(struct dingtalk *d)
{
    free(d->queue[d->head]);
    d->queue[d->head] = NULL;
    d->head = (d->head + 1) % DT_QUEUE;
    d->len--;
    d->tries = 0;
}

static void
done_cb(struct evhttp_request *req, void *arg)
{
    struct dingtalk *d = arg;
    struct timeval now = {0, 0}, backoff;
    char why[320], body[256];
    int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
    size_t n = 0;

    if (d->closing) return; /* dingtalk_free is dropping the request */
    d->in_flight = 0;
    if (d->dead != NULL) evhttp_connection_free(d->dead);
    d->dead = d->conn;
    d->conn = NULL;
    evtimer_add(d->reap, &now);
    if (req != NULL && code != 0) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        n = evbuffer_copyout(in, body, sizeof(body) - 1);
    }
    body[n] = 0;
    body[strcspn(body, "\r\n")] = 0;
    /* DingTalk answers 200 with {"errcode":0,"errmsg":"ok"}; anything else is a failure. */
    if (code == 200 && strstr(body, "\"errcode\":0") != NULL) {
        metrics.alerts_sent++;
        log_msg(LOG_DEBUG, "[sla] alert delivered to %s", d->host);
        pop(d);
        if (d->len > 0) start(d);
        return;
    }
    if (code == 0) {
        unsigned long e = ERR_peek_last_error();
        snprintf(why, sizeof(why), "%s", e != 0 ? ERR_reason_error_string(e) : "no answer");
        ERR_clear_error();
        if (why[0] == 0) snprintf(why, sizeof(why), "no answer");
    } else {
        snprintf(why, sizeof(why), "HTTP %d %s", code, body);
    }
    d->tries++;
    if (d->tries < DT_TRIES) {
        backoff.tv_sec = 1L << (d->tries - 1);
        backoff.tv_usec = rand() % 250000; /* jitter: many tunnels, one webhook */
        log_msg(LOG_WARN, "[sla] alert to %s failed (try %d of %d): %s; again in %ld s", d->host,
                d->tries, DT_TRIES, why, (long)backoff.tv_sec);
        evtimer_add(d->retry, &backoff);
        return;
    }
    metrics.alerts_dropped++;
    log_msg(LOG_WARN, "[sla] alert to %s dropped after %d tries: %s", d->host, DT_TRIES, why);
    pop(d);
    if (d->len > 0) start(d);
}

static void
start(struct dingtalk *d)
{
    const struct config *cfg = d->cfg;
    struct evhttp_request *req;
    struct evkeyvalq *hdr;
    struct bufferevent *bev;
    struct timeval tv;
    SSL *ssl;
    char *body, uri[2048], tok[768], sign[256];
    size_t blen;
    int n;

    if (d->in_flight || d->len == 0) return;
    body = malloc(DT_BODY_MAX);
    ssl = SSL_new(d->ctx);
    if (body == NULL || ssl == NULL) goto fail;
    blen = d->webhook ? dingtalk_msg_webhook_json(d->queue[d->head], body, DT_BODY_MAX)
                      : dingtalk_msg_json(d->queue[d->head], body, DT_BODY_MAX);
    SSL_set_tlsext_host_name(ssl, d->host);
    SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set1_host(ssl, d->host) != 1) goto fail;
    bev = bufferevent_openssl_socket_new(d->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                         BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    ssl = NULL; /* the bufferevent owns it now */
    if (bev == NULL) goto fail;
    /* The robot's peer may close without close_notify once the answer is out. */
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    d->conn = evhttp_connection_base_bufferevent_new(d->base, d->dns, bev, d->host,
                                                     (unsigned short)d->port);
    if (d->conn == NULL) goto fail;
    evhttp_connection_set_timeout(d->conn, (int)cfg->dingtalk_timeout_sec);
    /* The answer is a short JSON object: a webhook that sends more is not believed, nor kept
     * (evhttp would buffer any body whole). */
    evhttp_connection_set_max_headers_size(d->conn, DT_MAX_HEADERS);
    evhttp_connection_set_max_body_size(d->conn, DT_MAX_BODY);
    req = evhttp_request_new(done_cb, d);
    if (req == NULL) goto fail;
    hdr = evhttp_request_get_output_headers(req);
    evhttp_add_header(hdr, "Host", d->host);
    evhttp_add_header(hdr, "Content-Type", "application/json; charset=utf-8");
    evhttp_add_header(hdr, "Connection", "close");
    evbuffer_add(evhttp_request_get_output_buffer(req), body, blen);
    if (d->webhook) { /* its URL carries whatever secret it has: sent as it is */
        snprintf(uri, sizeof(uri), "%s", d->path);
        goto send;
    }
    dingtalk_msg_urlencode(cfg->dingtalk_token, tok, sizeof(tok));
    n = snprintf(uri, sizeof(uri), "%s%caccess_token=%s", d->path,
                 strchr(d->path, '?') != NULL ? '&' : '?', tok);
    if (cfg->dingtalk_secret[0] != 0) {
        long long ms;
        gettimeofday(&tv, NULL);
        ms = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
        dingtalk_msg_sign(cfg->dingtalk_secret, ms, sign, sizeof(sign));
        snprintf(uri + n, sizeof(uri) - (size_t)n, "&timestamp=%lld&sign=%s", ms, sign);
    }
send:
    free(body);
    d->in_flight = 1;
    if (evhttp_make_request(d->conn, req, EVHTTP_REQ_POST, uri) == -1 && d->in_flight) {
        /* Failed before any callback (evhttp freed req): counts as a try, retried later. */
        struct timeval later = {1, 0};
        d->in_flight = 0;
        d->tries++;
        log_msg(LOG_WARN, "[sla] alert to %s failed (try %d of %d): cannot start the request",
                d->host, d->tries, DT_TRIES);
        if (d->tries >= DT_TRIES) pop(d);
        evtimer_add(d->retry, &later);
    }
    return;
fail:
    free(body);
    if (ssl != NULL) SSL_free(ssl);
    if (d->conn != NULL) evhttp_connection_free(d->conn);
    d->conn = NULL;
    metrics.alerts_dropped++;
    log_msg(LOG_WARN, "[sla] alert to %s dropped: out of memory", d->host);
    pop(d);
}

int
dingtalk_send(struct dingtalk *d, const char *text)
{
    char *t;

    if (d->len == DT_QUEUE) return -1;
    t = strdup(text);
    if (t == NULL) return -1;
    d->queue[(d->head + d->len) % DT_QUEUE] = t;
    d->len++;
    if (!d->in_flight && !evtimer_pending(d->retry, NULL)) start(d);
    return 0;
}

struct dingtalk *
dingtalk_new(struct event_base *base, struct evdns_base *dns, const struct config *cfg, char *err,
             size_t errlen)
{
    struct dingtalk *d = calloc(1, sizeof(*d));
    int webhook = cfg->webhook_url[0] != 0;
    const char *url = webhook ? cfg->webhook_url : cfg->dingtalk_url;
    const char *flag = webhook ? "sla.webhook.url" : "sla.dingtalk.url";
    struct evhttp_uri *u = evhttp_uri_parse(url);
    const char *scheme = u != NULL ? evhttp_uri_get_scheme(u) : NULL;
    const char *host = u != NULL ? evhttp_uri_get_host(u) : NULL;
    const char *path = u != NULL ? evhttp_uri_get_path(u) : NULL;
    const char *query = u != NULL ? evhttp_uri_get_query(u) : NULL;

    if (d == NULL) goto oom;
    d->base = base;
    d->dns = dns;
    d->cfg = cfg;
    d->webhook = webhook;
    if (scheme == NULL || strcmp(scheme, "https") != 0 || host == NULL || host[0] == 0) {
        snprintf(err, errlen, "tunnels: -%s: \"%s\" is not https://host[:port]/path", flag, url);
        goto err;
    }
    snprintf(d->host, sizeof(d->host), "%s", host);
    d->port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 443;
    snprintf(d->path, sizeof(d->path), "%s%s%s", path != NULL && path[0] ? path : "/",
             query != NULL ? "?" : "", query != NULL ? query : "");
    d->ctx = SSL_CTX_new(TLS_client_method());
    if (d->ctx == NULL) goto oom;
    SSL_CTX_set_min_proto_version(d->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(d->ctx, SSL_VERIFY_PEER, NULL);
    if (cfg->dingtalk_ca[0] != 0) {
        if (SSL_CTX_load_verify_locations(d->ctx, cfg->dingtalk_ca, NULL) != 1) {
            snprintf(err, errlen, "tunnels: -sla.dingtalk.ca: %s: cannot load", cfg->dingtalk_ca);
            goto err;
        }
    } else if (SSL_CTX_set_default_verify_paths(d->ctx) != 1) {
        snprintf(err, errlen, "tunnels: -sla.dingtalk.ca: the system's CA store does not load");
        goto err;
    }
    d->retry = evtimer_new(base, retry_cb, d);
    d->reap = evtimer_new(base, reap_cb, d);
    if (d->retry == NULL || d->reap == NULL) goto oom;
    evhttp_uri_free(u);
    return d;
oom:
    snprintf(err, errlen, "tunnels: out of memory");
err:
    if (u != NULL) evhttp_uri_free(u);
    dingtalk_free(d);
    return NULL;
}

void
dingtalk_free(struct dingtalk *d)
{
    if (d == NULL) return;
    d->closing = 1;
    if (d->conn != NULL) evhttp_connection_free(d->conn);
    if (d->dead != NULL) evhttp_connection_free(d->dead);
    if (d->retry != NULL) event_free(d->retry);
    if (d->reap != NULL) event_free(d->reap);
    while (d->len > 0)
        pop(d);
    if (d->ctx != NULL) SSL_CTX_free(d->ctx);
    free(d);
}
