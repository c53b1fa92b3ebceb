/* alerts.c: see alerts.h. The sink runs inside log_msg, which may be inside a Lua hook, a mux
 * callback, anything: it only copies the event into a fixed ring and activates an event. The
 * hook runs from that event. Lines logged while the alert hook itself runs (its own errors)
 * are sent as they are, without the hook, so a failing hook cannot feed itself. The [sla] tag
 * (delivery trouble) never alerts: it would report on itself. */
#include "alerts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "addr.h"
#include "clock.h"
#include "dingtalk.h"
#include "log.h"
#include "luahost.h"
#include "mux.h"

#define SLA_RING 64
#define SLA_TEXT 2048

struct alerts_event {
    int level, raw;
    char tag[16];
    char line[1024];
    double time;
};

struct alerts {
    struct event_base *base;
    const struct config *cfg;
    struct luahost *lua;
    struct evdns_base *dns;
    struct dingtalk *dt;
    struct event *process, *tick;
    struct alerts_event ring[SLA_RING];
    size_t head, len;
    int in_hook;
    double tokens;
    int64_t refilled_us;
    unsigned held;    /* alerts held by the rate limit since the last summary */
    unsigned dropped; /* events that found the ring full, since the last summary */
    int64_t held_since_us;
    char held_first[400], held_last[400];
};

static void
sink(int level, const char *line, const char *msg, void *arg)
{
    struct alerts *s = arg;
    struct alerts_event *ev;
    char tag[16] = "";
    const char *end;
    struct timeval tv;

    if (msg[0] == '[' && (end = strchr(msg, ']')) != NULL &&
        (size_t)(end - msg - 1) < sizeof(tag)) {
        memcpy(tag, msg + 1, (size_t)(end - msg - 1));
        tag[end - msg - 1] = 0;
    }
    if (strcmp(tag, "sla") == 0) return;
    if (level < luahost_alert_level(s->lua, tag)) return;
    if (s->len == SLA_RING) {
        /* A storm: counted, and reported in the next summary. */
        if (s->held + s->dropped++ == 0) s->held_since_us = clock_now_us();
        return;
    }
    ev = &s->ring[(s->head + s->len) % SLA_RING];
    s->len++;
    ev->level = level;
    ev->raw = s->in_hook;
    snprintf(ev->tag, sizeof(ev->tag), "%s", tag);
    snprintf(ev->line, sizeof(ev->line), "%s", line);
    gettimeofday(&tv, NULL);
    ev->time = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    event_active(s->process, EV_TIMEOUT, 0);
}

static void
refill(struct alerts *s)
{
    int64_t now = clock_now_us();

    s->tokens += (double)(now - s->refilled_us) / 1e6 / (double)s->cfg->alert_every_sec;
    if (s->tokens > (double)s->cfg->alert_burst) s->tokens = (double)s->cfg->alert_burst;
    s->refilled_us = now;
}

static void
hold(struct alerts *s, const char *text)
{
    if (s->held++ + s->dropped == 0) s->held_since_us = clock_now_us();
    if (s->held_first[0] == 0)
        snprintf(s->held_first, sizeof(s->held_first), "%s", text);
    else
        snprintf(s->held_last, sizeof(s->held_last), "%s", text);
}

static void
deliver(struct alerts *s, const char *text)
{
    refill(s);
    if (s->held > 0 || s->tokens < 1) {
        hold(s, text);
        return;
    }
    if (dingtalk_send(s->dt, text) == -1) {
        hold(s, text);
        return;
    }
    s->tokens -= 1;
}

/* Past the limit, one message tells what was held. */
static void
flush_held(struct alerts *s)
{
    char text[SLA_TEXT];

    refill(s);
    if (s->held + s->dropped == 0 || s->tokens < 1 || s->len > 0) return;
    snprintf(text, sizeof(text), "%u alerts held by the rate limit over the last %lld s%s%s%s%s",
             s->held + s->dropped, (long long)((clock_now_us() - s->held_since_us) / 1000000),
             s->held_first[0] ? "; first: " : "", s->held_first, s->held_last[0] ? "; last: " : "",
             s->held_last);
    if (dingtalk_send(s->dt, text) == -1) return;
    s->tokens -= 1;
    s->held = s->dropped = 0;
    s->held_first[0] = s->held_last[0] = 0;
}

static void
process_cb(evutil_socket_t fd, short what, void *arg)
{
    struct alerts *s = arg;
    char text[SLA_TEXT];

    (void)fd;
    (void)what;
    while (s->len > 0) {
        struct alerts_event ev = s->ring[s->head];
        const char *msg = strstr(ev.line, "] [");
        struct luahost_event le = {ev.level, ev.tag, "", ev.line, ev.time};
        int r;
        s->head = (s->head + 1) % SLA_RING;
        s->len--;
        /* text: what follows "[tag] " */
        if (msg != NULL && (msg = strchr(msg + 2, ']')) != NULL)
            le.text = msg[1] == ' ' ? msg + 2 : msg + 1;
        if (ev.raw) {
            snprintf(text, sizeof(text), "%s", ev.line);
            r = 1;
        } else {
            s->in_hook = 1;
            r = luahost_alert(s->lua, &le, text, sizeof(text));
            s->in_hook = 0;
        }
        if (r == 1 && text[0] != 0) deliver(s, text);
    }
}

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct alerts *s = arg;
    char text[SLA_TEXT];
    int r;

    (void)fd;
    (void)what;
    s->in_hook = 1;
    r = luahost_alert_tick(s->lua, text, sizeof(text));
    s->in_hook = 0;
    if (r == 1 && text[0] != 0) deliver(s, text);
    flush_held(s);
}

void
alerts_reload(struct alerts *s)
{
    if (s != NULL) log_set_sink(sink, luahost_alert_min_level(s->lua), s);
}

struct alerts *
alerts_new(struct event_base *base, const struct config *cfg, struct luahost *lua, char *err,
           size_t errlen)
{
    struct alerts *s = calloc(1, sizeof(*s));
    struct timeval sec = {1, 0};

    if (s == NULL) {
        snprintf(err, errlen, "tunnels: out of memory");
        return NULL;
    }
    s->base = base;
    s->cfg = cfg;
    s->lua = lua;
    s->tokens = (double)cfg->alert_burst;
    s->refilled_us = clock_now_us();
    s->dns = addr_dns_new(base);
    if (s->dns == NULL) {
        snprintf(err, errlen, "tunnels: cannot set up DNS for alerts");
        goto err;
    }
    s->dt = dingtalk_new(base, s->dns, cfg, err, errlen);
    if (s->dt == NULL) goto err;
    s->process = event_new(base, -1, 0, process_cb, s);
    s->tick = event_new(base, -1, EV_PERSIST, tick_cb, s);
    if (s->process == NULL || s->tick == NULL) {
        snprintf(err, errlen, "tunnels: out of memory");
        goto err;
    }
    evtimer_add(s->tick, &sec);
    alerts_reload(s);
    log_msg(LOG_INFO, "[sla] alerts to %s (%s): burst %ld, then one per %ld s",
            cfg->webhook_url[0] != 0 ? "a webhook" : "DingTalk",
            cfg->webhook_url[0] != 0 ? cfg->webhook_url : cfg->dingtalk_url, cfg->alert_burst,
            cfg->alert_every_sec);
    return s;
err:
    alerts_free(s);
    return NULL;
}

void
alerts_free(struct alerts *s)
{
    if (s == NULL) return;
    log_set_sink(NULL, LOG_ERROR, NULL);
    if (s->process != NULL) event_free(s->process);
    if (s->tick != NULL) event_free(s->tick);
    dingtalk_free(s->dt);
    if (s->dns != NULL) evdns_base_free(s->dns, 1);
    free(s);
}
