/* metrics.h: what the engine counts, and its Prometheus text exposition on -metrics.addr
 * (GET /metrics; GET /healthz for load balancers). Counters are plain increments of one
 * process-wide struct: no lock, no system call, nothing on the data path but an add. Gauges
 * (connections, sessions, window bytes) are read from their owners when scraped. */
#ifndef TUNNELS_METRICS_H
#define TUNNELS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* The Lua hooks, a label each (a bounded set: any other name counts as "other"). */
enum metrics_hook { HOOK_PICK, HOOK_IDLE, HOOK_SPARE, HOOK_ROUTE, HOOK_ALERT, HOOK_OTHER, HOOK_N };

/* Why a TLS handshake failed, a label each (a bounded set). */
enum metrics_tls_failure {
    TLS_FAIL_LOCAL,       /* this end gave up on it: shutting down, draining, over a limit */
    TLS_FAIL_CERTIFICATE, /* a certificate refused by either end */
    TLS_FAIL_PROTOCOL,    /* any other TLS error: version, cipher, not TLS at all */
    TLS_FAIL_TIMEOUT,     /* no ClientHello in -tls.hello.sec, or not done in -tls.handshake.sec */
    TLS_FAIL_PEER_CLOSED, /* the peer closed the connection mid-handshake */
    TLS_FAIL_NETWORK,     /* a socket error: refused, reset, unreachable */
    TLS_FAIL_N
};

/* A RESET frame's direction, and its reason (FRAME_RST_*, 1-7; 0: any other). */
enum metrics_reset_dir { RESET_SENT, RESET_RECEIVED };

/* Why a datagram was not carried (tunnels_udp_dropped_total{reason}). */
enum metrics_udp_drop {
    UDP_DROP_WINDOW,     /* the UDP session's send window had no room for it */
    UDP_DROP_BUSY,       /* no room: the connection over its output bound, a hold full, or past
                            UDPDEST_NEW_PER_SEC new destinations a second */
    UDP_DROP_TOO_LARGE,  /* it would not fit in one frame with its address */
    UDP_DROP_FRAGMENT,   /* client: a SOCKS5 fragment (FRAG != 0) */
    UDP_DROP_STRANGER,   /* from an address the association or session does not serve */
    UDP_DROP_MALFORMED,  /* client: a bad SOCKS5 UDP header or destination name */
    UDP_DROP_DENIED,     /* refused by the route hook or the ACL */
    UDP_DROP_UNRESOLVED, /* its name did not resolve, or was still resolving with a full hold */
    UDP_DROP_SEND,       /* the socket refused it (its buffer full, an ICMP error) */
    UDP_DROP_NO_TUNNEL,  /* client: no connection could carry it (none, or a v1 server) */
    UDP_DROP_N
};
#define METRICS_RESET_REASONS 8

/* A latency histogram: the buckets' upper bounds (seconds) are metrics.c's, +Inf is count. */
#define METRICS_BUCKETS 12
struct metrics_histogram {
    uint64_t bucket[METRICS_BUCKETS], count;
    double sum;
};

struct metrics {
    uint64_t conns_opened, conns_closed_orderly, conns_closed_abort;
    uint64_t tls_full, tls_resumed, tls_failed[TLS_FAIL_N];
    uint64_t sessions_opened, sessions_finished, sessions_aborted, sessions_reset;
    uint64_t resets[2][METRICS_RESET_REASONS]; /* RESET frames, by direction and reason */
    uint64_t bytes_to_peer, bytes_from_peer; /* payload: read from local sockets, written to them */
    uint64_t acl_denied, dns_failed, budget_refused, rapid_reset_closed, penalty_refused;
    uint64_t lua_calls[HOOK_N], lua_failed[HOOK_N];
    double lua_seconds[HOOK_N];
    uint64_t alerts_sent, alerts_dropped;
    struct metrics_histogram dial;    /* client: a dial's start to its connection being ready */
    struct metrics_histogram ttfb;    /* client: a request to its first byte back */
    struct metrics_histogram connect; /* server: a session's open to its destination's connect */
    uint64_t routes_tunnel, routes_direct, routes_block; /* client: the route of each request */
    uint64_t pool_retired; /* client: connections closed once they took no new session */
    uint64_t udp_sessions_opened, udp_associations_opened;
    uint64_t udp_datagrams[2]; /* carried over ReMux: [0] to the peer, [1] from it */
    uint64_t udp_dropped[UDP_DROP_N];
};

extern struct metrics metrics;

/* The label of hook what ("pick", "route", ...). */
enum metrics_hook metrics_hook(const char *what);

/* A RESET frame went (or came) with reason. */
void metrics_reset(enum metrics_reset_dir dir, uint8_t reason);

/* One observation of seconds into h. */
void metrics_observe(struct metrics_histogram *h, double seconds);

struct event_base;
struct evbuffer;
struct metrics_http;

/* A module's own samples, added to each scrape (the client's per server, the server's per client
 * certificate). At most METRICS_SOURCES at once. */
#define METRICS_SOURCES 4
typedef void (*metrics_source_fn)(struct evbuffer *out, void *arg);
void metrics_add_source(metrics_source_fn fn, void *arg);
void metrics_remove_source(metrics_source_fn fn, void *arg);

/* text as a Prometheus label value (backslash, double quote and newline escaped) into out. */
void metrics_label(const char *text, char *out, size_t outlen);

/* Serves -metrics.addr (NULL when it is ""). Refuses an address off loopback unless
 * -metrics.public. NULL with err when it cannot listen. */
struct metrics_http *metrics_http_new(struct event_base *base, const struct config *cfg,
                                      int *failed, char *err, size_t errlen);
void metrics_http_free(struct metrics_http *h);

#endif
