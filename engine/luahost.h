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

/* Loads the built-in default script, then cfg->lua_script if set, merging the two. Returns
 * NULL with err ("tunnels: -lua.script: file: reason") when a script does not load. */
struct luahost *luahost_new(const struct config *cfg, char *err, size_t errlen);
void luahost_free(struct luahost *h);

/* The id of the connection (of conns, oldest first) that takes a new session, 0 to dial a new
 * one. Falls back to the seed's rule when the hook fails or answers an id not in conns. */
uint32_t luahost_pool_pick(struct luahost *h, const struct luahost_conn *conns, size_t n);

/* 1 when the idle connection c should close now. */
int luahost_pool_idle(struct luahost *h, const struct luahost_conn *c);

#endif
