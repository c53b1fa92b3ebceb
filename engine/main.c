/* main.c: flags, logs, the role's set-up, signals, and the event loop.
 * Exit status: 0 after a drain, 1 when set-up fails (a file, a port), 2 for a bad command line. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "alerts.h"
#include "client.h"
#include "clock.h"
#include "config.h"
#include "flags.h"
#include "log.h"
#include "luahost.h"
#include "metrics.h"
#include "mux.h"
#include "notify.h"
#include "server.h"
#include "session.h"
#include "udpsess.h"
#include "tls.h"
#include "writethrough.h"

struct app {
    struct event_base *base;
    struct client *client;
    struct server *server;
    struct luahost *lua;
    struct alerts *alerts;
    struct metrics_http *metrics;
    struct event *drain;
    int64_t drain_deadline_us;
    int draining;
    long drain_sec;
};

static void
drain_tick(evutil_socket_t fd, short what, void *arg)
{
    struct app *a = arg;
    struct timeval tv = {0, 300000};

    (void)fd;
    (void)what;
    if (session_count() > 0 && clock_now_us() < a->drain_deadline_us) return;
    if (session_count() > 0)
        log_msg(LOG_WARN, "[main] drain: %u sessions still open after -drain.sec", session_count());
    if (a->client != NULL) client_close_all(a->client);
    if (a->server != NULL) server_close_all(a->server);
    event_del(a->drain);
    /* Give close_notify alerts a moment to leave. */
    event_base_loopexit(a->base, &tv);
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct app *a = arg;
    struct timeval tv = {0, 100000};

    (void)what;
    if (sig == SIGHUP) {
        char err[1024];
        notify_reloading();
        log_reopen();
        if (luahost_reload(a->lua, err, sizeof(err)) == -1)
            log_msg(LOG_ERROR,
                    "[main] SIGHUP: log reopened; script not reloaded, the old one "
                    "stays: %s",
                    err);
        else
            log_msg(LOG_INFO, "[main] SIGHUP: log reopened, script reloaded");
        if (a->server != NULL && server_reload(a->server, err, sizeof(err)) == -1)
            log_msg(LOG_ERROR, "[main] SIGHUP: TLS not reloaded, the old certificates stay: %s",
                    err + (strncmp(err, "tunnels: ", 9) == 0 ? 9 : 0));
        alerts_reload(a->alerts);
        notify_ready("reloaded (SIGHUP)");
        return;
    }
    if (a->draining) {
        log_msg(LOG_WARN, "[main] second signal: exiting now");
        event_base_loopexit(a->base, NULL);
        return;
    }
    a->draining = 1;
    notify_stopping();
    log_msg(LOG_INFO, "[main] %s: draining %u sessions", sig == SIGTERM ? "SIGTERM" : "SIGINT",
            session_count());
    if (a->client != NULL) client_stop_accepting(a->client);
    if (a->server != NULL) server_stop_accepting(a->server);
    a->drain_deadline_us = clock_now_us() + (int64_t)a->drain_sec * 1000000;
    evtimer_add(a->drain, &tv);
}

/* A secret flag's value: "@FILE" reads it from FILE's first line (a file the service's user
 * alone may read), and a flag not given takes it from the environment variable env. On the
 * command line a secret is in /proc/PID/cmdline, readable by every user of the host. */
static int
load_secret(char *val, size_t cap, const char *flag, const char *env, char *err, size_t errlen)
{
    FILE *f;
    const char *e;
    size_t n;

    if (val[0] == 0) {
        e = getenv(env);
        if (e != NULL && strlen(e) < cap) snprintf(val, cap, "%s", e);
        return 0;
    }
    if (val[0] != '@') return 0;
    f = fopen(val + 1, "r");
    if (f == NULL) {
        snprintf(err, errlen, "tunnels: -%s: %s: %s", flag, val + 1, strerror(errno));
        return -1;
    }
    if (fgets(val, (int)cap, f) == NULL) val[0] = 0;
    fclose(f);
    n = strcspn(val, "\r\n");
    val[n] = 0;
    if (n == 0) {
        snprintf(err, errlen, "tunnels: -%s: the file's first line is empty", flag);
        return -1;
    }
    return 0;
}

/* The text of the -config file (path NULL: none) into *text (malloc'd, NULL when none). At most
 * CONFIG_FILE_MAX bytes: a config file is a page of flags. */
#define CONFIG_FILE_MAX (1024 * 1024)
static int
read_config(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
    FILE *f;
    size_t n;

    *text = NULL;
    *len = 0;
    if (path == NULL) return 0;
    f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(err, errlen, "tunnels: -config: %s: %s", path, strerror(errno));
        return -1;
    }
    *text = malloc(CONFIG_FILE_MAX + 1);
    if (*text == NULL) {
        fclose(f);
        snprintf(err, errlen, "tunnels: -config: %s: out of memory", path);
        return -1;
    }
    n = fread(*text, 1, CONFIG_FILE_MAX + 1, f);
    if (ferror(f) || n > CONFIG_FILE_MAX) {
        snprintf(err, errlen, "tunnels: -config: %s: %s", path,
                 ferror(f) ? strerror(errno) : "larger than 1 MiB");
        fclose(f);
        free(*text);
        *text = NULL;
        return -1;
    }
    fclose(f);
    *len = n;
    return 0;
}

static struct event_base *
new_base(void)
{
    struct event_config *ec = event_config_new();
    struct event_base *b;

    if (ec == NULL) return NULL;
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    b = event_base_new_with_config(ec);
    event_config_free(ec);
    return b;
}

int
main(int argc, char **argv)
{
    static struct config cfg;
    struct app a;
    struct luahost *lua = NULL;
    char *conf;
    size_t conf_len;
    struct event *sigs[4];
    const int signums[4] = {SIGTERM, SIGINT, SIGHUP, 0};
    char err[1024];
    const char *why = "";
    int rc, i;

    memset(&a, 0, sizeof(a));
    if (read_config(flags_config_path(argc, argv), &conf, &conf_len, err, sizeof(err)) == -1) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    rc = flags_parse_config(argc, argv, flags_config_path(argc, argv), conf, conf_len, &cfg, err,
                            sizeof(err));
    free(conf);
    if (rc == FLAGS_HELP) {
        flags_usage(stdout);
        return 0;
    }
    if (rc == FLAGS_ERR) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (!writethrough_libevent_ok(err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (load_secret(cfg.dingtalk_token, sizeof(cfg.dingtalk_token), "sla.dingtalk.token",
                    "TUNNELS_DINGTALK_TOKEN", err, sizeof(err)) == -1 ||
        load_secret(cfg.dingtalk_secret, sizeof(cfg.dingtalk_secret), "sla.dingtalk.secret",
                    "TUNNELS_DINGTALK_SECRET", err, sizeof(err)) == -1) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    if (log_open(cfg.log_path, cfg.log_level, &why) == -1) {
        fprintf(stderr, "tunnels: -sla.log.path: %s: %s\n", cfg.log_path, why);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    /* Relay buffers come and go in 64-256 KiB pieces; glibc would give each back to the kernel
     * (brk, mmap) and fault it in again on the next read. Keep up to 8 MiB of freed heap. */
    mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
    mallopt(M_TRIM_THRESHOLD, 8 * 1024 * 1024);
    a.base = new_base();
    if (a.base == NULL) {
        fprintf(stderr, "tunnels: cannot create the event loop\n");
        return 1;
    }
    lua = luahost_new(&cfg, err, sizeof(err));
    if (lua == NULL) goto fail;
    a.lua = lua;
    if (cfg.dingtalk_token[0] != 0 || cfg.webhook_url[0] != 0) {
        a.alerts = alerts_new(a.base, &cfg, lua, err, sizeof(err));
        if (a.alerts == NULL) goto fail;
    }
    a.metrics = metrics_http_new(a.base, &cfg, &rc, err, sizeof(err));
    if (rc) goto fail;
    if (cfg.role_kind == ROLE_CLIENT) {
        a.client = client_new(a.base, &cfg, lua, err, sizeof(err));
        if (a.client == NULL) goto fail;
    } else {
        a.server = server_new(a.base, &cfg, lua, err, sizeof(err));
        if (a.server == NULL) goto fail;
    }
    a.drain = event_new(a.base, -1, EV_PERSIST, drain_tick, &a);
    for (i = 0; signums[i] != 0; i++) {
        sigs[i] = evsignal_new(a.base, signums[i], signal_cb, &a);
        evsignal_add(sigs[i], NULL);
    }
    sigs[i] = NULL;
    a.drain_sec = cfg.drain_sec;
    /* Listening (client_new and server_new bind before they return) and the signals watched:
     * a unit that waits for this one may start. */
    notify_ready(cfg.role_kind == ROLE_CLIENT ? "SOCKS5 listener up" : "listening");
    event_base_dispatch(a.base);
    log_msg(LOG_INFO, "[main] exit");
    metrics_http_free(a.metrics);
    client_free(a.client);
    server_free(a.server);
    alerts_free(a.alerts);
    luahost_free(lua);
    for (i = 0; sigs[i] != NULL; i++)
        event_free(sigs[i]);
    event_free(a.drain);
    mux_free_all();
    session_free_closed();
    udpsess_free_closed();
    tls_linger_free_all();
    event_base_free(a.base);
    return 0;
fail:
    fprintf(stderr, "%s\n", err);
    metrics_http_free(a.metrics);
    alerts_free(a.alerts);
    luahost_free(lua);
    event_base_free(a.base);
    return 1;
}
