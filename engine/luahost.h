/* luahost.h: the embedded LuaJIT state and the policy decisions asked of it. Every call goes
 * through one gate (traceback, pcall, time budget); on any failure the caller gets the built-in
 * default, so a broken script never stops the tunnel. */
#ifndef TUNNELS_LUAHOST_H
#define TUNNELS_LUAHOST_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct luahost;

/* What the pool tells the policy about one connection. */
struct luahost_conn {
    uint32_t id;
    double age;        /* seconds since it was dialled */
    double idle;       /* seconds since its last session ended (0 while it has one) */
    unsigned sessions; /* carried so far */
    unsigned live;     /* open now */
    int goaway;
    int ready;
};

/* How busy the pool is, for pick and spare: new sessions a second (the last second's count or
 * the current second's so far, whichever is more) and the seconds a recent dial took to be
 * ready (0 before the first). */
struct luahost_load {
    double rate;
    double handshake;
};

/* A destination for the route hook. */
enum luahost_net { LUAHOST_NET_TCP, LUAHOST_NET_UDP };

struct luahost_req {
    const char *host; /* the name, or the address as text */
    unsigned port;
    const char *atyp; /* "domain", "ipv4" or "ipv6": how the app asked */
    const char *addr; /* the address as text; NULL while only a name is known */
    const char *src;  /* who asks: the app's address (client), the connection's id (server) */
    /* server: the client: its address, its certificate's subject and SHA-256 (NULL or "" when
     * not known) */
    const char *peer, *subject, *fingerprint;
    enum luahost_net net; /* req.net: "tcp" (a stream) or "udp" (a datagram's destination) */
};

/* Route answers. */
enum { LUAHOST_TUNNEL, LUAHOST_DIRECT, LUAHOST_BLOCK, LUAHOST_ALLOW, LUAHOST_DENY };

/* One log event for the alert hook. */
struct luahost_event {
    int level;
    const char *tag;  /* "conn", "sock", ... (the log line's [tag]) */
    const char *text; /* the line after the tag */
    const char *line; /* the whole line, as logged */
    double time;      /* seconds since the epoch */
};

/* Loads the built-in default script, then cfg->lua_script if set, merging the two. Returns
 * NULL with err ("tunnels: -lua.script: file: reason") when a script does not load. */
struct luahost *luahost_new(const struct config *cfg, char *err, size_t errlen);
void luahost_free(struct luahost *h);

/* SIGHUP: loads the script again into a new state and swaps it in only if it loads; otherwise
 * the old state stays. Returns 0, or -1 with err. */
int luahost_reload(struct luahost *h, char *err, size_t errlen);

/* Client: LUAHOST_TUNNEL (through cfg->servers[*server]), LUAHOST_DIRECT or LUAHOST_BLOCK.
 * Server: LUAHOST_ALLOW or LUAHOST_DENY. why gets the script's reason for a block or a deny.
 * A hook that fails or answers nonsense is logged and the default script's decision used. */
int luahost_route(struct luahost *h, const struct luahost_req *r, int *server, char *why,
                  size_t whylen);

/* The alert text for ev in out: 1 to send it, 0 when the hook drops the event. */
int luahost_alert(struct luahost *h, const struct luahost_event *ev, char *out, size_t outlen);

/* The script's periodic chance to send what it aggregated: 1 with text in out, else 0. */
int luahost_alert_tick(struct luahost *h, char *out, size_t outlen);

/* The lowest level of events with this tag that go to the alert hook (the script's
 * alert_levels; erro by default). */
int luahost_alert_level(const struct luahost *h, const char *tag);

/* The lowest level any tag subscribes to. */
int luahost_alert_min_level(const struct luahost *h);

/* The id of the connection (of conns, oldest first) that takes a new session, 0 to dial a new
 * one for it. *dial: also dial a spare now, in the background (the script finds the headroom
 * left too small for load). The answer is honoured even past a connection's limits: a script
 * may overrun them, the default never does. Falls back to the default's first answer in C (the
 * oldest usable connection, no spare) when the hook fails or answers an id not in conns. */
uint32_t luahost_pool_pick(struct luahost *h, const struct luahost_conn *conns, size_t n,
                           const struct luahost_load *load, int *dial);

/* 1 when the connection c (with no session open) should close now; conns is the whole pool. */
int luahost_pool_idle(struct luahost *h, const struct luahost_conn *c,
                      const struct luahost_conn *conns, size_t n);

/* 1 when a connection should be dialled now with no session waiting (the warm spare; asked at
 * start and every second). */
int luahost_pool_spare(struct luahost *h, const struct luahost_conn *conns, size_t n,
                       const struct luahost_load *load);

#endif
