/* flags.c: the command line, Go `flag` style. One table lists every flag with its type, default
 * and meaning; -h prints that table, so the help can never disagree with the parser. */
#include "flags.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"

enum flag_type { F_STR, F_INT, F_BOOL, F_LEVEL };

struct flag {
    const char *name;
    enum flag_type type;
    size_t off;  /* offset of the field in struct config */
    size_t size; /* F_STR: the field's size */
    const char *def;
    long min, max; /* F_INT */
    const char *help;
};

#define S(field) F_STR, offsetof(struct config, field), sizeof(((struct config *)0)->field)
#define I(field) F_INT, offsetof(struct config, field), 0
#define B(field) F_BOOL, offsetof(struct config, field), 0

static const struct flag flags[] = {
    {"config", S(config_path), "", 0, 0,
     "a file of flags, one per line (name = value; # comments): read first, the command line "
     "overrides it"},
    {"role", S(role), "", 0, 0, "client or server (required)"},
    {"metrics.addr", S(metrics_addr), "", 0, 0,
     "host:port to serve Prometheus metrics on (GET /metrics, /healthz); \"\": none"},
    {"metrics.certs.max", I(metrics_certs_max), "64", 0, 100000,
     "server: client certificates the metrics show one by one (those with the most sessions)"},
    {"metrics.public", B(metrics_public), "false", 0, 0,
     "allow -metrics.addr off loopback (the metrics name who is served and how much)"},
    {"server.net", S(server_net), "tcp", 0, 0,
     "server: network to listen on; client: to dial (tcp, tcp4, tcp6)"},
    {"server.addr", S(server_addr), "", 0, 0,
     "server: host:port to listen on; client: the server to dial, or a comma list of "
     "[name=]host:port (the route hook picks one; one that fails is marked down, the next used)"},
    {"server.allow.local", B(server_allow_local), "false", 0, 0,
     "server: allow destinations on this host (loopback, its own addresses), link-local and "
     "metadata addresses (denied by default)"},
    {"server.allow.private", B(server_allow_private), "false", 0, 0,
     "server: allow destinations in private networks (RFC 1918, 100.64/10, fc00::/7; denied by "
     "default)"},
    {"server.open", B(server_open), "false", 0, 0,
     "server: run without -tls.server.ca, letting any client in (an open proxy)"},
    {"client.net", S(client_net), "tcp", 0, 0,
     "client: network of the local SOCKS5 listener (tcp, tcp4, tcp6)"},
    {"client.addr", S(client_addr), "127.0.0.1:1080", 0, 0,
     "client: host:port of the local SOCKS5 listener"},
    {"client.public", B(client_public), "false", 0, 0,
     "client: allow the SOCKS5 listener on a non-loopback address (whoever reaches it uses the "
     "tunnel)"},
    {"remux.reuse.max.sec", I(reuse_max_sec), "60", 0, 86400 * 365,
     "a connection in use this long (seconds) takes no new session, ever; the default policy "
     "never overruns it"},
    {"remux.reuse.max.cnt", I(reuse_max_cnt), "16", 1, 65000,
     "a connection that has carried this many sessions takes no new one, ever: each is used up "
     "to it before the next takes over, and the default policy never overruns it"},
    {"remux.idle.max.sec", I(idle_max_sec), "10", 0, 86400 * 365,
     "a connection with no session for this long (seconds) is closed"},
    {"remux.conn.max.cnt", I(conn_max_cnt), "1024", 1, 1 << 20,
     "never more connections than this at once; a session none can take is refused"},
    {"remux.dial.max", I(dial_max), "32", 1, 4096,
     "client: connections in their handshake at once; a burst that needs more waits for them "
     "(the server takes -tls.handshake.per.addr from one address)"},
    {"remux.net", S(remux_net), "tls", 0, 0, "ReMux's lower connection: tls or tcp"},
    {"remux.window.kib", I(window_kib), "256", 16, 1 << 20,
     "flow-control window per session and direction at the start (KiB)"},
    {"remux.window.max.kib", I(window_max_kib), "65536", 16, 1 << 20,
     "the auto-tuned window never grows past this (KiB)"},
    {"remux.buffer.max.mib", I(conn_buffer_max_mib), "256", 0, 1 << 20,
     "the window bytes one connection's sessions hold (what the peer may still send and what "
     "waits for the local socket, MiB): windows grow only within it, and the server refuses a "
     "session whose first window it cannot hold; 0: no limit"},
    {"remux.rtt.max.ms", I(rtt_max_ms), "1000", 1, 60000,
     "window auto-tuning takes no RTT above this (ms): a peer that delays its PONGs or ACKs "
     "cannot make a window grow past what this RTT needs"},
    {"remux.sessions.max", I(sessions_max), "1024", 1, 4096,
     "server: a connection with this many open sessions gets new ones refused (RESET, policy)"},
    {"server.sessions.max", I(server_sessions_max), "0", 0, 1 << 24,
     "server: sessions open at once in the process (each holds a descriptor); 0: the descriptor "
     "limit (raised to its hard limit at start) less a reserve of an eighth, at least 64"},
    {"server.buffer.max.mib", I(server_buffer_max_mib), "0", 0, 1 << 24,
     "server: as -remux.buffer.max.mib, for the whole process; 0: a quarter of the machine's "
     "memory"},
    {"remux.ping.sec", I(ping_sec), "15", 1, 3600,
     "a connection silent this long is pinged; silent 3 times this long, closed"},
    {"eagersocks.net", S(eagersocks_net), "remux", 0, 0,
     "EagerSocks' lower connection: remux, tls (one TLS connection per session) or tcp"},
    {"eagersocks.hold.ms", I(hold_ms), "5", 0, 1000,
     "how long the first frame waits for the app's first bytes before it leaves without them"},
    {"socks.auth", S(socks_auth), "", 0, 0,
     "client: file with one line user:password; SOCKS5 clients must then log in (RFC 1929)"},
    {"socks.handshake.sec", I(socks_handshake_sec), "10", 1, 3600,
     "client: a SOCKS5 handshake not done after this is dropped"},
    {"session.idle.sec", I(idle_sec), "1800", 0, 86400 * 365,
     "a session with no data either way for this long is closed (0: never)"},
    {"udp.idle.sec", I(udp_idle_sec), "60", 1, 86400,
     "a UDP association (client) or UDP session (server) with no datagram either way for "
     "this long ends"},
    {"session.orphan.sec", I(orphan_sec), "30", 1, 86400,
     "a session whose connection closed while it still wrote out what both ends had sent is "
     "closed after this"},
    {"connect.sec", I(connect_sec), "10", 1, 3600,
     "server: resolving and connecting to a destination times out after this"},
    {"tls.handshake.sec", I(handshake_sec), "10", 1, 3600,
     "a TLS handshake not done after this is dropped"},
    {"tls.hello.sec", I(hello_sec), "3", 1, 3600,
     "server: a connection that has sent nothing (no ClientHello) after this is dropped"},
    {"tls.handshake.max", I(handshake_max), "256", 1, 1 << 20,
     "server: TLS handshakes pending at once; past it, the oldest pending one of the source "
     "holding the most is closed for the new one"},
    {"tls.handshake.per.addr", I(handshake_per_addr), "64", 1, 1 << 20,
     "server: TLS handshakes pending at once from one address (an IPv6 /64); more are refused"},
    {"tls.client.conn.max", I(conn_per_cert_max), "1024", 1, 1 << 20,
     "server: connections one client certificate may hold open at once (a client holds one per "
     "-remux.reuse.max.cnt sessions open; its -remux.conn.max.cnt is 1024 too)"},
    {"tls.client.sessions.max", I(cert_sessions_max), "0", 0, 1 << 24,
     "server: sessions open at once on all the connections of one client certificate; 0: half "
     "of the server's most (-server.sessions.max), so one client never holds them all"},
    {"tls.client.buffer.max.mib", I(cert_buffer_max_mib), "1024", 0, 1 << 20,
     "server: as -remux.buffer.max.mib, for all the connections of one client certificate"},
    {"tls.server.key", S(tls_server_key), "", 0, 0, "server: private key file (PEM)"},
    {"tls.server.cert", S(tls_server_cert), "", 0, 0, "server: certificate chain file (PEM)"},
    {"tls.server.ca", S(tls_server_ca), "", 0, 0,
     "server: CA file client certificates must chain to (mutual TLS)"},
    {"tls.server.crl", S(tls_server_crl), "", 0, 0,
     "server: CRL file (PEM) of the client CA: a revoked client certificate is refused at its "
     "handshake; SIGHUP reloads it (and the CA and the server's certificate) and closes the "
     "connections of certificates it now lists"},
    {"tls.client.ca", S(tls_client_ca), "", 0, 0,
     "client: CA file the server is verified with (default: the system's)"},
    {"tls.client.key", S(tls_client_key), "", 0, 0,
     "client: private key file (PEM) for mutual TLS"},
    {"tls.client.cert", S(tls_client_cert), "", 0, 0,
     "client: certificate file (PEM) for mutual TLS"},
    {"tls.client.name", S(tls_client_name), "", 0, 0,
     "client: the name the server's certificate must carry (default: host of -server.addr)"},
    {"sla.log.level", F_LEVEL, offsetof(struct config, log_level), 0, "info", 0, 0,
     "debug, info, warn, error, fatal, or an integer 0-999 (debug 100 ... fatal 500)"},
    {"sla.log.path", S(log_path), "/var/log/tunnels.log", 0, 0,
     "log file, appended to (stderr as well); \"\" for stderr only"},
    {"sla.dingtalk.token", S(dingtalk_token), "", 0, 0,
     "DingTalk robot access token: error events go to the script's alert hook, then the robot; "
     "@FILE reads it from FILE, and unset it comes from $TUNNELS_DINGTALK_TOKEN"},
    {"sla.dingtalk.secret", S(dingtalk_secret), "", 0, 0,
     "DingTalk robot signing secret (requests are signed when it is set); @FILE reads it from "
     "FILE, and unset it comes from $TUNNELS_DINGTALK_SECRET"},
    {"sla.dingtalk.url", S(dingtalk_url), "https://oapi.dingtalk.com/robot/send", 0, 0,
     "the DingTalk webhook (https://host[:port]/path); the token is added as access_token"},
    {"sla.webhook.url", S(webhook_url), "", 0, 0,
     "a generic HTTPS webhook to POST alerts to instead of DingTalk (Slack, Feishu, WeCom...): "
     "the alert hook's text when it is a JSON object, else {\"text\": TEXT}; the -sla.dingtalk.ca, "
     ".timeout.sec and -sla.alert.* flags apply to it too"},
    {"sla.dingtalk.ca", S(dingtalk_ca), "", 0, 0,
     "CA file the webhook's certificate is verified with (default: the system's)"},
    {"sla.dingtalk.timeout.sec", I(dingtalk_timeout_sec), "10", 1, 300,
     "one webhook request (connect, TLS, answer) times out after this; 3 tries with backoff"},
    {"sla.alert.burst", I(alert_burst), "5", 1, 1000,
     "alerts sent at once before the rate limit holds the rest (summarised)"},
    {"sla.alert.every.sec", I(alert_every_sec), "12", 1, 86400,
     "past the burst, one alert (a summary of those held) per this many seconds"},
    {"lua.script", S(lua_script), "", 0, 0,
     "policy script; hooks it leaves out come from the built-in default (lua/policy.lua)"},
    {"lua.budget.ms", I(lua_budget_ms), "50", 1, 10000,
     "a Lua hook running longer than this is stopped and the default decision used"},
    {"lua.mem.max.mib", I(lua_mem_max_mib), "64", 1, 1 << 20,
     "the Lua state's memory: a hook allocating past it fails (the default decision used); a "
     "script holding more between calls has its hooks skipped until SIGHUP reloads it"},
    {"drain.sec", I(drain_sec), "10", 0, 3600,
     "on SIGTERM/SIGINT, sessions in flight get this long to finish"},
};
#define NFLAGS (sizeof(flags) / sizeof(flags[0]))

/* User text as it may appear in an error line: printable ASCII kept, anything else (a newline,
 * an escape sequence) written as \xNN, cut to 64 bytes, so the error stays one clean line.
 * Returns out. */
static const char *
printable(const char *in, size_t inlen, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, n = 0;

    for (i = 0; i < inlen && in[i] != 0 && n + 5 < outlen; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (i == 64) {
            out[n++] = '.';
            out[n++] = '.';
            out[n++] = '.';
            break;
        }
        if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
            out[n++] = (char)ch;
        } else {
            out[n++] = '\\';
            out[n++] = 'x';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    out[n] = 0;
    return out;
}

static const struct flag *
find_flag(const char *name, size_t len)
{
    size_t i;

    for (i = 0; i < NFLAGS; i++)
        if (strlen(flags[i].name) == len && memcmp(flags[i].name, name, len) == 0) return &flags[i];
    return NULL;
}

static int
set_flag(const struct flag *f, const char *val, struct config *cfg, char *err, size_t errlen)
{
    char *field = (char *)cfg + f->off;
    char *end, q[300];
    long v;

    switch (f->type) {
    case F_STR:
        if (strlen(val) >= f->size) {
            snprintf(err, errlen, "tunnels: -%s: \"%s\" is too long (at most %zu bytes)", f->name,
                     printable(val, 40, q, sizeof(q)), f->size - 1);
            return -1;
        }
        memcpy(field, val, strlen(val) + 1);
        return 0;
    case F_INT:
        errno = 0;
        v = strtol(val, &end, 10);
        if (*val == 0 || *end != 0 || errno != 0) {
            snprintf(err, errlen, "tunnels: -%s: \"%s\" is not a number", f->name,
                     printable(val, SIZE_MAX, q, sizeof(q)));
            return -1;
        }
        if (v < f->min || v > f->max) {
            snprintf(err, errlen, "tunnels: -%s: %ld is out of range (%ld to %ld)", f->name, v,
                     f->min, f->max);
            return -1;
        }
        *(long *)(void *)field = v;
        return 0;
    case F_BOOL:
        if (strcmp(val, "true") == 0 || strcmp(val, "1") == 0 || strcmp(val, "t") == 0)
            *(int *)(void *)field = 1;
        else if (strcmp(val, "false") == 0 || strcmp(val, "0") == 0 || strcmp(val, "f") == 0)
            *(int *)(void *)field = 0;
        else {
            snprintf(err, errlen, "tunnels: -%s: \"%s\" is not true or false", f->name,
                     printable(val, SIZE_MAX, q, sizeof(q)));
            return -1;
        }
        return 0;
    case F_LEVEL:
        if (log_parse_level(val, (int *)(void *)field) == -1) {
            snprintf(err, errlen,
                     "tunnels: -%s: \"%s\" is not a level (debug info warn error fatal, or 0-999)",
                     f->name, printable(val, SIZE_MAX, q, sizeof(q)));
            return -1;
        }
        return 0;
    }
    return -1;
}

void
flags_defaults(struct config *cfg)
{
    char err[256];
    size_t i;

    memset(cfg, 0, sizeof(*cfg));
    for (i = 0; i < NFLAGS; i++)
        set_flag(&flags[i], flags[i].def, cfg, err, sizeof(err));
}

static int
one_of(const char *v, const char *a, const char *b, const char *c)
{
    return strcmp(v, a) == 0 || strcmp(v, b) == 0 || (c != NULL && strcmp(v, c) == 0);
}

/* The address family of a checked -*.net value. */
static int
net_family(const char *net)
{
    if (strcmp(net, "tcp4") == 0) return AF_INET;
    if (strcmp(net, "tcp6") == 0) return AF_INET6;
    return AF_UNSPEC;
}

/* Checks that only make sense once every flag is known. */
static int split_servers(struct config *cfg, char *err, size_t errlen);

static int
check(struct config *cfg, char *err, size_t errlen)
{
    int client = strcmp(cfg->role, "client") == 0;
    char q[300];

    if (!client && strcmp(cfg->role, "server") != 0) {
        if (cfg->role[0] == 0)
            snprintf(err, errlen, "tunnels: -role: missing (client or server)");
        else
            snprintf(err, errlen, "tunnels: -role: \"%s\" is not client or server",
                     printable(cfg->role, SIZE_MAX, q, sizeof(q)));
        return -1;
    }
    if (!one_of(cfg->server_net, "tcp", "tcp4", "tcp6")) {
        snprintf(err, errlen, "tunnels: -server.net: \"%s\" is not tcp, tcp4 or tcp6",
                 printable(cfg->server_net, SIZE_MAX, q, sizeof(q)));
        return -1;
    }
    if (!one_of(cfg->client_net, "tcp", "tcp4", "tcp6")) {
        snprintf(err, errlen, "tunnels: -client.net: \"%s\" is not tcp, tcp4 or tcp6",
                 printable(cfg->client_net, SIZE_MAX, q, sizeof(q)));
        return -1;
    }
    if (!one_of(cfg->remux_net, "tls", "tcp", NULL)) {
        snprintf(err, errlen, "tunnels: -remux.net: \"%s\" is not tls or tcp",
                 printable(cfg->remux_net, SIZE_MAX, q, sizeof(q)));
        return -1;
    }
    if (!one_of(cfg->eagersocks_net, "remux", "tls", "tcp")) {
        snprintf(err, errlen, "tunnels: -eagersocks.net: \"%s\" is not remux, tls or tcp",
                 printable(cfg->eagersocks_net, SIZE_MAX, q, sizeof(q)));
        return -1;
    }
    cfg->role_kind = client ? ROLE_CLIENT : ROLE_SERVER;
    cfg->lower = strcmp(cfg->remux_net, "tcp") == 0 || strcmp(cfg->eagersocks_net, "tcp") == 0
                     ? LOWER_TCP
                     : LOWER_TLS;
    cfg->pooling = strcmp(cfg->eagersocks_net, "remux") == 0 ? POOL_REMUX : POOL_PER_SESSION;
    cfg->server_family = net_family(cfg->server_net);
    cfg->client_family = net_family(cfg->client_net);
    if (cfg->server_addr[0] == 0) {
        snprintf(err, errlen, "tunnels: -server.addr: missing (host:port %s)",
                 client ? "of the server to dial" : "to listen on");
        return -1;
    }
    if (cfg->window_max_kib < cfg->window_kib) cfg->window_max_kib = cfg->window_kib;
    if (client && split_servers(cfg, err, errlen) == -1) return -1;
    if (cfg->webhook_url[0] != 0 && cfg->dingtalk_token[0] != 0) {
        snprintf(err, errlen,
                 "tunnels: -sla.webhook.url: one alert sink at a time (-sla.dingtalk.token is "
                 "set too)");
        return -1;
    }
    if (cfg->webhook_url[0] != 0 && strncmp(cfg->webhook_url, "https://", 8) != 0) {
        snprintf(err, errlen, "tunnels: -sla.webhook.url: \"%s\" does not start with https://",
                 printable(cfg->webhook_url, SIZE_MAX, q, sizeof(q)));
        return -1;
    }
    if (cfg->dingtalk_token[0] != 0 && strncmp(cfg->dingtalk_url, "https://", 8) != 0) {
        snprintf(err, errlen, "tunnels: -sla.dingtalk.url: \"%s\" does not start with https://",
                 printable(cfg->dingtalk_url, SIZE_MAX, q, sizeof(q)));
        return -1;
    }
    return 0;
}

/* Client: -server.addr as a comma list of [name=]host:port into cfg->servers. A server without
 * a name is called by its address. */
static int
split_servers(struct config *cfg, char *err, size_t errlen)
{
    const char *p = cfg->server_addr, *end, *eq;
    char q[300];
    size_t n, i;

    cfg->nservers = 0;
    while (*p != 0) {
        end = strchr(p, ',');
        if (end == NULL) end = p + strlen(p);
        n = (size_t)(end - p);
        eq = memchr(p, '=', n);
        if (cfg->nservers == CONFIG_SERVERS_MAX) {
            snprintf(err, errlen, "tunnels: -server.addr: more than %d servers",
                     CONFIG_SERVERS_MAX);
            return -1;
        }
        if (n == 0 || (eq != NULL && (eq == p || eq + 1 == end)) ||
            (eq != NULL && (size_t)(eq - p) >= sizeof(cfg->servers[0].name)) ||
            n >= sizeof(cfg->servers[0].addr)) {
            snprintf(err, errlen, "tunnels: -server.addr: \"%s\" is not [name=]host:port",
                     printable(p, n, q, sizeof(q)));
            return -1;
        }
        if (eq != NULL) {
            memcpy(cfg->servers[cfg->nservers].name, p, (size_t)(eq - p));
            cfg->servers[cfg->nservers].name[eq - p] = 0;
            memcpy(cfg->servers[cfg->nservers].addr, eq + 1, (size_t)(end - eq - 1));
            cfg->servers[cfg->nservers].addr[end - eq - 1] = 0;
        } else {
            memcpy(cfg->servers[cfg->nservers].addr, p, n);
            cfg->servers[cfg->nservers].addr[n] = 0;
            memcpy(cfg->servers[cfg->nservers].name, p, n < 63 ? n : 63);
            cfg->servers[cfg->nservers].name[n < 63 ? n : 63] = 0;
        }
        for (i = 0; i < (size_t)cfg->nservers; i++) {
            if (strcmp(cfg->servers[i].name, cfg->servers[cfg->nservers].name) == 0) {
                snprintf(err, errlen, "tunnels: -server.addr: the name \"%s\" is used twice",
                         printable(cfg->servers[i].name, SIZE_MAX, q, sizeof(q)));
                return -1;
            }
        }
        cfg->nservers++;
        p = *end == ',' ? end + 1 : end;
        if (*end == ',' && *p == 0) {
            snprintf(err, errlen, "tunnels: -server.addr: ends with a comma");
            return -1;
        }
    }
    return 0;
}

/* Makes err "tunnels: PATH:LINE: <the rest of err>" (err says "tunnels: -flag: ..."). */
static void
at_line(char *err, size_t errlen, const char *path, unsigned line)
{
    char rest[600], q[300];
    const char *tail = strncmp(err, "tunnels: ", 9) == 0 ? err + 9 : err;

    snprintf(rest, sizeof(rest), "%s", tail);
    snprintf(err, errlen, "tunnels: %s:%u: %s", printable(path, SIZE_MAX, q, sizeof(q)), line,
             rest);
}

/* One line of a config file: "name = value", "name value", "-name=value", a bare boolean
 * name, a blank line or a # comment. The value is the rest of the line without its outer
 * blanks; double quotes around it keep blanks inside. */
static int
config_line(char *s, const char *path, unsigned line, struct config *cfg, char *err, size_t errlen)
{
    const struct flag *f;
    char *name, *val, *end, q[300];
    size_t n;

    while (*s == ' ' || *s == '\t')
        s++;
    n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = 0;
    if (*s == 0 || *s == '#') return 0;
    name = s[0] == '-' ? s + (s[1] == '-' ? 2 : 1) : s;
    end = name + strcspn(name, " \t=");
    val = end + strspn(end, " \t");
    if (*val == '=') val += 1 + strspn(val + 1, " \t");
    *end = 0;
    f = find_flag(name, strlen(name));
    if (f == NULL) {
        snprintf(err, errlen, "tunnels: %s:%u: -%s: no such flag (see -h)",
                 printable(path, SIZE_MAX, q, sizeof(q)), line,
                 printable(name, SIZE_MAX, q + 150, sizeof(q) - 150));
        return -1;
    }
    if (strcmp(f->name, "config") == 0) {
        snprintf(err, errlen, "tunnels: %s:%u: -config: a config file cannot name another",
                 printable(path, SIZE_MAX, q, sizeof(q)), line);
        return -1;
    }
    n = strlen(val);
    if (n >= 2 && val[0] == '"' && val[n - 1] == '"') {
        val[n - 1] = 0;
        val++;
    } else if (*val == 0 && f->type == F_BOOL) {
        val = "true";
    } else if (*val == 0) {
        snprintf(err, errlen, "tunnels: %s:%u: -%s: needs a value",
                 printable(path, SIZE_MAX, q, sizeof(q)), line, f->name);
        return -1;
    }
    if (set_flag(f, val, cfg, err, errlen) == -1) {
        at_line(err, errlen, path, line);
        return -1;
    }
    return 0;
}

/* The len bytes of a config file, line by line, into cfg. */
static int
config_text(const char *path, const char *text, size_t len, struct config *cfg, char *err,
            size_t errlen)
{
    char buf[CONFIG_LINE_MAX + 1], q[300];
    const char *p = text, *end = text + len, *nl;
    unsigned line = 0;
    size_t n;

    while (p < end) {
        line++;
        nl = memchr(p, '\n', (size_t)(end - p));
        n = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        if (n > CONFIG_LINE_MAX) {
            snprintf(err, errlen, "tunnels: %s:%u: longer than %d bytes",
                     printable(path, SIZE_MAX, q, sizeof(q)), line, CONFIG_LINE_MAX);
            return -1;
        }
        if (memchr(p, 0, n) != NULL) {
            snprintf(err, errlen, "tunnels: %s:%u: a NUL byte",
                     printable(path, SIZE_MAX, q, sizeof(q)), line);
            return -1;
        }
        memcpy(buf, p, n);
        buf[n] = 0;
        if (config_line(buf, path, line, cfg, err, errlen) == -1) return -1;
        p = nl != NULL ? nl + 1 : end;
    }
    return 0;
}

const char *
flags_config_path(int argc, char **argv)
{
    int i;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i] + (argv[i][0] == '-' && argv[i][1] == '-' ? 2 : 1);
        if (argv[i][0] != '-') continue;
        if (strncmp(a, "config=", 7) == 0) return a + 7;
        if (strcmp(a, "config") == 0 && i + 1 < argc) return argv[i + 1];
    }
    return NULL;
}

int
flags_parse(int argc, char **argv, struct config *cfg, char *err, size_t errlen)
{
    return flags_parse_config(argc, argv, NULL, NULL, 0, cfg, err, errlen);
}

int
flags_parse_config(int argc, char **argv, const char *path, const char *text, size_t len,
                   struct config *cfg, char *err, size_t errlen)
{
    const struct flag *f;
    const char *arg, *eq, *val;
    char q[300];
    int i;

    flags_defaults(cfg);
    if (text != NULL && config_text(path, text, len, cfg, err, errlen) == -1) return FLAGS_ERR;
    for (i = 1; i < argc; i++) {
        arg = argv[i];
        if (arg[0] != '-' || arg[1] == 0) {
            snprintf(err, errlen, "tunnels: \"%s\": unexpected argument (flags start with -)",
                     printable(arg, SIZE_MAX, q, sizeof(q)));
            return FLAGS_ERR;
        }
        arg += arg[1] == '-' ? 2 : 1;
        if (strcmp(arg, "h") == 0 || strcmp(arg, "help") == 0) return FLAGS_HELP;
        eq = strchr(arg, '=');
        f = find_flag(arg, eq != NULL ? (size_t)(eq - arg) : strlen(arg));
        if (f == NULL) {
            snprintf(err, errlen, "tunnels: -%s: no such flag (see -h)",
                     printable(arg, eq != NULL ? (size_t)(eq - arg) : SIZE_MAX, q, sizeof(q)));
            return FLAGS_ERR;
        }
        if (eq != NULL)
            val = eq + 1;
        else if (f->type == F_BOOL)
            val = "true"; /* Go: a bare boolean flag means true */
        else if (i + 1 < argc)
            val = argv[++i];
        else {
            snprintf(err, errlen, "tunnels: -%s: needs a value", f->name);
            return FLAGS_ERR;
        }
        if (set_flag(f, val, cfg, err, errlen) == -1) return FLAGS_ERR;
    }
    return check(cfg, err, errlen) == -1 ? FLAGS_ERR : FLAGS_OK;
}

void
flags_usage(FILE *out)
{
    size_t i;

    fprintf(out, "usage: tunnels -role=client|server [-flag=value ...]\n\n"
                 "A TLS tunnel: a local SOCKS5 client answered at once (EagerSocks), sessions\n"
                 "multiplexed over a pool of reused TLS connections (ReMux).\n\n");
    for (i = 0; i < NFLAGS; i++) {
        fprintf(out, "  -%s", flags[i].name);
        if (flags[i].type != F_BOOL) fprintf(out, " %s", flags[i].type == F_INT ? "int" : "string");
        fprintf(out, "\n    \t%s (default %s%s%s)\n", flags[i].help,
                flags[i].type == F_STR ? "\"" : "", flags[i].def,
                flags[i].type == F_STR ? "\"" : "");
    }
    fprintf(out,
            "\nSignals: SIGTERM/SIGINT drain and exit; SIGHUP reopens the log file and reloads\n"
            "the Lua script (the old one stays if the new one does not load).\n");
}
