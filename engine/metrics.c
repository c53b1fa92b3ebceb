/* metrics.c: see metrics.h. The exposition is Prometheus' text format 0.0.4: a HELP and a TYPE
 * line per family, then its samples; `promtool check metrics` passes it (metrics_spec). */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "account.h"
#include "addr.h"
#include "direct.h"
#include "log.h"
#include "mux.h"
#include "session.h"
#include "udpsess.h"

struct metrics metrics;

static const char *const hook_names[HOOK_N] = {"pick", "idle", "spare", "route", "alert", "other"};
/* RESET reasons as labels (docs/PROTOCOL.md: 1 refused ... 7 aborted; 0 any other byte). */
static const char *const udp_drop_names[UDP_DROP_N] = {
    "window",    "busy",   "too_large",  "fragment", "stranger",
    "malformed", "denied", "unresolved", "send",     "no_tunnel"};

static const char *const reset_names[METRICS_RESET_REASONS] = {
    "other", "refused", "unreachable", "dns", "policy", "timeout", "protocol", "aborted"};
static const char *const tls_failure_names[TLS_FAIL_N] = {"local",   "certificate", "protocol",
                                                          "timeout", "peer_closed", "network"};
/* Upper bounds of the latency buckets, seconds: loopback, a city, a continent, a bad day. */
static const double bucket_le[METRICS_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,   0.25,   0.5,   1,    2.5,   5};

static double started_at; /* wall clock, for tunnels_start_time_seconds */

static struct {
    metrics_source_fn fn;
    void *arg;
} sources[METRICS_SOURCES];

void
metrics_add_source(metrics_source_fn fn, void *arg)
{
    int i;

    for (i = 0; i < METRICS_SOURCES; i++) {
        if (sources[i].fn == NULL) {
            sources[i].fn = fn;
            sources[i].arg = arg;
            return;
        }
    }
}

void
metrics_remove_source(metrics_source_fn fn, void *arg)
{
    int i;

    for (i = 0; i < METRICS_SOURCES; i++)
        if (sources[i].fn == fn && sources[i].arg == arg) sources[i].fn = NULL;
}

void
metrics_label(const char *text, char *out, size_t outlen)
{
    size_t n = 0;

    for (; *text != 0 && n + 3 < outlen; text++) {
        if (*text == '\\' || *text == '"') {
            out[n++] = '\\';
            out[n++] = *text;
        } else if (*text == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
        } else {
            out[n++] = *text;
        }
    }
    if (outlen > 0) out[n < outlen ? n : outlen - 1] = 0;
}

struct metrics_http {
    struct evhttp *http;
    const struct config *cfg;
};

enum metrics_hook
metrics_hook(const char *what)
{
    int i;

    for (i = 0; i < HOOK_OTHER; i++)
        if (strcmp(what, hook_names[i]) == 0) return (enum metrics_hook)i;
    return HOOK_OTHER;
}

void
metrics_reset(enum metrics_reset_dir dir, uint8_t reason)
{
    metrics.resets[dir][reason < METRICS_RESET_REASONS ? reason : 0]++;
}

void
metrics_observe(struct metrics_histogram *h, double seconds)
{
    int i;

    for (i = 0; i < METRICS_BUCKETS; i++)
        if (seconds <= bucket_le[i]) h->bucket[i]++;
    h->count++;
    h->sum += seconds;
}

static void
family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample of a labelled family: name{labels} v. */
static void
labelled(struct evbuffer *out, const char *name, const char *labels, uint64_t v)
{
    evbuffer_add_printf(out, "%s{%s} %llu\n", name, labels, (unsigned long long)v);
}

static void
one(struct evbuffer *out, const char *name, const char *type, const char *help, uint64_t v)
{
    family(out, name, type, help);
    evbuffer_add_printf(out, "%s %llu\n", name, (unsigned long long)v);
}

static void
histogram(struct evbuffer *out, const char *name, const char *help,
          const struct metrics_histogram *h)
{
    int i;

    family(out, name, "histogram", help);
    for (i = 0; i < METRICS_BUCKETS; i++)
        evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_le[i],
                            (unsigned long long)h->bucket[i]);
    evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", name,
                        (unsigned long long)h->count, name, h->sum, name,
                        (unsigned long long)h->count);
}

static void
render(struct evbuffer *out, const struct config *cfg)
{
    const struct account *proc = account_process();
    unsigned hs, up, draining;
    int i;

    family(out, "tunnels_build_info", "gauge", "1, labelled with the role this process runs.");
    evbuffer_add_printf(out, "tunnels_build_info{role=\"%s\"} 1\n",
                        cfg->role_kind == ROLE_CLIENT ? "client" : "server");
    family(out, "tunnels_start_time_seconds", "gauge", "When the process started (Unix time).");
    evbuffer_add_printf(out, "tunnels_start_time_seconds %.3f\n", started_at);

    mux_count_states(&hs, &up, &draining);
    family(out, "tunnels_connections", "gauge",
           "Lower connections open now, by state: handshake, ready, draining (a GOAWAY went).");
    labelled(out, "tunnels_connections", "state=\"handshake\"", hs);
    labelled(out, "tunnels_connections", "state=\"ready\"", up);
    labelled(out, "tunnels_connections", "state=\"draining\"", draining);
    one(out, "tunnels_connections_opened_total", "counter", "Lower connections opened.",
        metrics.conns_opened);
    family(out, "tunnels_connections_closed_total", "counter",
           "Lower connections closed, by how: orderly (flushed, close_notify) or abort.");
    labelled(out, "tunnels_connections_closed_total", "how=\"orderly\"",
             metrics.conns_closed_orderly);
    labelled(out, "tunnels_connections_closed_total", "how=\"abort\"", metrics.conns_closed_abort);
    family(out, "tunnels_tls_handshakes_total", "counter",
           "TLS handshakes of lower connections, by result: full or resumed (failures: "
           "tunnels_tls_handshakes_failed_total).");
    labelled(out, "tunnels_tls_handshakes_total", "result=\"full\"", metrics.tls_full);
    labelled(out, "tunnels_tls_handshakes_total", "result=\"resumed\"", metrics.tls_resumed);
    family(out, "tunnels_tls_handshakes_failed_total", "counter",
           "TLS handshakes that did not finish, by reason (docs/METRICS.md).");
    for (i = 0; i < TLS_FAIL_N; i++)
        evbuffer_add_printf(out, "tunnels_tls_handshakes_failed_total{reason=\"%s\"} %llu\n",
                            tls_failure_names[i], (unsigned long long)metrics.tls_failed[i]);

    one(out, "tunnels_sessions", "gauge", "Tunnelled sessions open now (orphans included).",
        session_count());
    one(out, "tunnels_direct_sessions", "gauge", "Client: sessions routed direct, open now.",
        direct_count());
    one(out, "tunnels_sessions_opened_total", "counter", "Tunnelled sessions opened.",
        metrics.sessions_opened);
    family(out, "tunnels_sessions_closed_total", "counter",
           "Tunnelled sessions closed, by how: finished (both ways done), aborted (reset by the "
           "peer, its connection lost, or timed out) or reset (a RESET sent).");
    labelled(out, "tunnels_sessions_closed_total", "how=\"finished\"", metrics.sessions_finished);
    labelled(out, "tunnels_sessions_closed_total", "how=\"aborted\"", metrics.sessions_aborted);
    labelled(out, "tunnels_sessions_closed_total", "how=\"reset\"", metrics.sessions_reset);
    family(out, "tunnels_session_resets_total", "counter",
           "RESET frames, by direction (sent, received) and reason (docs/PROTOCOL.md).");
    for (i = 0; i < 2 * METRICS_RESET_REASONS; i++)
        evbuffer_add_printf(
            out, "tunnels_session_resets_total{direction=\"%s\",reason=\"%s\"} %llu\n",
            i < METRICS_RESET_REASONS ? "sent" : "received", reset_names[i % METRICS_RESET_REASONS],
            (unsigned long long)
                metrics.resets[i / METRICS_RESET_REASONS][i % METRICS_RESET_REASONS]);
    one(out, "tunnels_udp_sessions", "gauge", "UDP sessions open now.", udpsess_count());
    one(out, "tunnels_udp_sessions_opened_total", "counter",
        "UDP sessions opened (each one association's datagrams over one connection).",
        metrics.udp_sessions_opened);
    family(out, "tunnels_udp_datagrams_total", "counter",
           "Datagrams carried over ReMux UDP sessions: sent to the peer (to_peer) or received "
           "from it (from_peer).");
    labelled(out, "tunnels_udp_datagrams_total", "direction=\"to_peer\"", metrics.udp_datagrams[0]);
    labelled(out, "tunnels_udp_datagrams_total", "direction=\"from_peer\"",
             metrics.udp_datagrams[1]);
    family(out, "tunnels_udp_dropped_total", "counter",
           "Datagrams dropped, by reason (docs/METRICS.md): UDP is never queued without bound.");
    for (i = 0; i < UDP_DROP_N; i++)
        evbuffer_add_printf(out, "tunnels_udp_dropped_total{reason=\"%s\"} %llu\n",
                            udp_drop_names[i], (unsigned long long)metrics.udp_dropped[i]);
    family(out, "tunnels_session_bytes_total", "counter",
           "Payload bytes of tunnelled sessions: read from local sockets and sent to the peer "
           "(to_peer), or received and written to local sockets (from_peer).");
    labelled(out, "tunnels_session_bytes_total", "direction=\"to_peer\"", metrics.bytes_to_peer);
    labelled(out, "tunnels_session_bytes_total", "direction=\"from_peer\"",
             metrics.bytes_from_peer);
    one(out, "tunnels_window_bytes", "gauge",
        "Window bytes the sessions hold now (what peers may still send plus what waits for "
        "local sockets).",
        (uint64_t)(proc->bytes > 0 ? proc->bytes : 0));
    if (cfg->role_kind == ROLE_SERVER) {
        one(out, "tunnels_window_bytes_max", "gauge",
            "-server.buffer.max.mib in bytes: the process's budget of window bytes.",
            (uint64_t)proc->bytes_max);
        one(out, "tunnels_acl_denied_total", "counter",
            "Server: sessions denied by the ACL (the route hook, or the default's ranges).",
            metrics.acl_denied);
        one(out, "tunnels_dns_failures_total", "counter",
            "Server: destination names that did not resolve.", metrics.dns_failed);
        one(out, "tunnels_budget_refused_total", "counter",
            "Server: sessions refused because their first window would pass a budget.",
            metrics.budget_refused);
        one(out, "tunnels_rapid_reset_closed_total", "counter",
            "Server: connections closed for resetting or having refused most of the sessions "
            "they opened.",
            metrics.rapid_reset_closed);
        one(out, "tunnels_penalty_refused_total", "counter",
            "Server: connections refused during a penalty, at accept or after the handshake.",
            metrics.penalty_refused);
        histogram(out, "tunnels_destination_connect_seconds",
                  "Server: from a session's open to its destination's TCP connection (name "
                  "resolution and the ACL included).",
                  &metrics.connect);
    } else {
        histogram(out, "tunnels_dial_seconds",
                  "Client: from a dial's start to its connection being ready (TCP and TLS).",
                  &metrics.dial);
        histogram(out, "tunnels_ttfb_seconds",
                  "Client: from an app's request to the first byte back from its destination.",
                  &metrics.ttfb);
        family(out, "tunnels_routes_total", "counter",
               "Client: requests by the route decided for them (tunnel, direct or block).");
        labelled(out, "tunnels_routes_total", "route=\"tunnel\"", metrics.routes_tunnel);
        labelled(out, "tunnels_routes_total", "route=\"direct\"", metrics.routes_direct);
        labelled(out, "tunnels_routes_total", "route=\"block\"", metrics.routes_block);
        one(out, "tunnels_pool_retired_total", "counter",
            "Client: pool connections closed once they could take no new session (rotations).",
            metrics.pool_retired);
    }
    family(out, "tunnels_lua_calls_total", "counter", "Lua hook calls, by hook.");
    for (i = 0; i < HOOK_N; i++)
        evbuffer_add_printf(out, "tunnels_lua_calls_total{hook=\"%s\"} %llu\n", hook_names[i],
                            (unsigned long long)metrics.lua_calls[i]);
    family(out, "tunnels_lua_failures_total", "counter",
           "Lua hook calls that erred or ran past their budget, by hook (the default decided).");
    for (i = 0; i < HOOK_N; i++)
        evbuffer_add_printf(out, "tunnels_lua_failures_total{hook=\"%s\"} %llu\n", hook_names[i],
                            (unsigned long long)metrics.lua_failed[i]);
    family(out, "tunnels_lua_seconds_total", "counter", "Time spent in Lua hooks, by hook.");
    for (i = 0; i < HOOK_N; i++)
        evbuffer_add_printf(out, "tunnels_lua_seconds_total{hook=\"%s\"} %.6f\n", hook_names[i],
                            metrics.lua_seconds[i]);
    family(out, "tunnels_alerts_total", "counter",
           "Alerts to the webhook, by result: sent, or dropped after its tries.");
    labelled(out, "tunnels_alerts_total", "result=\"sent\"", metrics.alerts_sent);
    labelled(out, "tunnels_alerts_total", "result=\"dropped\"", metrics.alerts_dropped);
    for (i = 0; i < METRICS_SOURCES; i++)
        if (sources[i].fn != NULL) sources[i].fn(out, sources[i].arg);
}

static void
reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
    struct evbuffer *body = evbuffer_new();

    if (body == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    evbuffer_add(body, text, strlen(text));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evhttp_send_reply(req, code, reason, body);
    evbuffer_free(body);
}

static void
on_request(struct evhttp_request *req, void *arg)
{
    struct metrics_http *h = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    struct evbuffer *body;

    if (path == NULL) path = "";
    if (strcmp(path, "/healthz") == 0) {
        reply_text(req, HTTP_OK, "OK", "ok\n");
        return;
    }
    if (strcmp(path, "/metrics") != 0) {
        reply_text(req, HTTP_NOTFOUND, "Not Found", "not found: /metrics, /healthz\n");
        return;
    }
    body = evbuffer_new();
    if (body == NULL) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    render(body, h->cfg);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, HTTP_OK, "OK", body);
    evbuffer_free(body);
}

struct metrics_http *
metrics_http_new(struct event_base *base, const struct config *cfg, int *failed, char *err,
                 size_t errlen)
{
    struct metrics_http *h;
    struct evconnlistener *lis;
    struct sockaddr_storage ss;
    socklen_t sslen;
    char why[256];

    *failed = 0;
    started_at = (double)time(NULL);
    if (cfg->metrics_addr[0] == 0) return NULL;
    *failed = 1;
    if (addr_resolve(cfg->metrics_addr, AF_UNSPEC, ADDR_TO_LISTEN_ON, &ss, &sslen, why,
                     sizeof(why)) == -1) {
        snprintf(err, errlen, "tunnels: -metrics.addr: %s", why);
        return NULL;
    }
    /* The counters say who is served and how much: kept to this host unless told otherwise. */
    if (!cfg->metrics_public && !addr_is_loopback((struct sockaddr *)&ss)) {
        snprintf(err, errlen,
                 "tunnels: -metrics.addr: %s is not a loopback address (-metrics.public allows "
                 "it)",
                 cfg->metrics_addr);
        return NULL;
    }
    h = calloc(1, sizeof(*h));
    if (h == NULL) {
        snprintf(err, errlen, "tunnels: -metrics.addr: out of memory");
        return NULL;
    }
    h->cfg = cfg;
    h->http = evhttp_new(base);
    lis = evconnlistener_new_bind(base, NULL, NULL, LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_FREE, 16,
                                  (struct sockaddr *)&ss, (int)sslen);
    if (h->http == NULL || lis == NULL || evhttp_bind_listener(h->http, lis) == NULL) {
        snprintf(err, errlen, "tunnels: -metrics.addr: cannot listen on %s", cfg->metrics_addr);
        if (lis != NULL) evconnlistener_free(lis);
        metrics_http_free(h);
        return NULL;
    }
    /* A scraper sends a request line and a few headers: anything bigger or slower is not one. */
    evhttp_set_max_headers_size(h->http, 8192);
    evhttp_set_max_body_size(h->http, 0);
    evhttp_set_timeout(h->http, 10);
    evhttp_set_allowed_methods(h->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_gencb(h->http, on_request, h);
    *failed = 0;
    log_msg(LOG_INFO, "[main] metrics on http://%s/metrics", cfg->metrics_addr);
    return h;
}

void
metrics_http_free(struct metrics_http *h)
{
    if (h == NULL) return;
    if (h->http != NULL) evhttp_free(h->http);
    free(h);
}
