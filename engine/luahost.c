/* luahost.c: one LuaJIT state per process, the gate every call goes through, and the pool
 * policy calls.
 *
 * The budget: a count hook checks a monotonic deadline every LUAHOST_COUNT instructions. Compiled
 * LuaJIT traces never run count hooks, so the JIT is switched off for the whole state: policy
 * hooks run a few times per session, where the interpreter is fast enough, and an honest budget
 * is worth more than trace speed. Once the deadline passes, the hook fires on every instruction,
 * so a script's own pcall cannot swallow the error: the next instruction outside it raises again
 * until the gate's pcall is reached. */
#include "luahost.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "log.h"

#define LUAHOST_COUNT 1000

extern const char luahost_default_policy[];
extern const size_t luahost_default_policy_len;

struct luahost {
    lua_State *L;
    const struct config *cfg;
    int ref_traceback;
    int ref_cfg;
    int ref_pick;
    int ref_idle;
    long budget_ms;
    double deadline;
    int expired;
};

/* The count hook has no user data in Lua 5.1; the process has one state. */
static struct luahost *luahost_running;

static double
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void
budget_hook(lua_State *L, lua_Debug *ar)
{
    struct luahost *h = luahost_running;

    (void)ar;
    if (h == NULL) return;
    if (!h->expired && now_ms() < h->deadline) return;
    if (!h->expired) {
        h->expired = 1;
        lua_sethook(L, budget_hook, LUA_MASKCOUNT, 1);
    }
    luaL_error(L, "stopped: ran past its budget of %d ms", (int)h->budget_ms);
}

/* The gate. The function and its nargs arguments are on top of the stack. Returns 0 with nres
 * results in their place, or -1 with the error logged and the stack as it was below them. */
static int
gate(struct luahost *h, const char *what, int nargs, int nres, double budget_ms)
{
    lua_State *L = h->L;
    int fn = lua_gettop(L) - nargs, rc;

    if (!lua_checkstack(L, 8)) {
        log_msg(LOG_ERROR, "[lua] %s: Lua stack exhausted", what);
        lua_settop(L, fn - 1);
        return -1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_traceback);
    lua_insert(L, fn);
    h->deadline = now_ms() + budget_ms;
    h->expired = 0;
    luahost_running = h;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, LUAHOST_COUNT);
    rc = lua_pcall(L, nargs, nres, fn);
    lua_sethook(L, NULL, 0, 0);
    luahost_running = NULL;
    if (rc != 0) {
        const char *msg = lua_tostring(L, -1);
        log_msg(LOG_ERROR, "[lua] %s: %s%s", what, msg != NULL ? msg : "(error is not a string)",
                rc == LUA_ERRMEM ? " (out of memory)" : "");
        lua_settop(L, fn - 1);
        return -1;
    }
    lua_remove(L, fn);
    return 0;
}

static int
l_log(lua_State *L)
{
    int level;
    const char *lv = luaL_checkstring(L, 1);
    const char *msg = luaL_checkstring(L, 2);

    if (log_parse_level(lv, &level) == -1) return luaL_error(L, "tunnels.log: bad level %s", lv);
    log_msg(level, "[lua] %s", msg);
    return 0;
}

static int
l_now(lua_State *L)
{
    lua_pushnumber(L, now_ms() / 1e3);
    return 1;
}

static void
set_num(lua_State *L, const char *k, double v)
{
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

/* Loads a chunk (buf, or the file path when buf is NULL), runs it, and checks it returned a
 * table, which is left on the stack. */
static int
load_script(struct luahost *h, const char *buf, size_t len, const char *name, char *err,
            size_t errlen)
{
    lua_State *L = h->L;
    int rc = buf != NULL ? luaL_loadbuffer(L, buf, len, name) : luaL_loadfile(L, name);

    if (rc != 0) {
        snprintf(err, errlen, "tunnels: -lua.script: %s", lua_tostring(L, -1));
        lua_pop(L, 1);
        return -1;
    }
    /* Load time may read rule files: a longer budget, still bounded. */
    if (gate(h, name, 0, 1, 5000) == -1) {
        snprintf(err, errlen, "tunnels: -lua.script: %s: failed to run (see the log)", name);
        return -1;
    }
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "tunnels: -lua.script: %s: must return a table of hooks", name);
        lua_pop(L, 1);
        return -1;
    }
    return 0;
}

static int
ref_hook(lua_State *L, int policy, const char *name)
{
    lua_getfield(L, policy, name);
    if (!lua_isfunction(L, -1)) {
        lua_pop(L, 1);
        return LUA_NOREF;
    }
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

struct luahost *
luahost_new(const struct config *cfg, char *err, size_t errlen)
{
    static const char *hooks[] = {"reusable", "pick", "idle"};
    struct luahost *h = calloc(1, sizeof(*h));
    lua_State *L;
    int policy;
    size_t i;

    if (h == NULL) return NULL;
    h->ref_pick = h->ref_idle = h->ref_cfg = h->ref_traceback = LUA_NOREF;
    h->cfg = cfg;
    h->budget_ms = cfg->lua_budget_ms;
    h->L = L = luaL_newstate();
    if (L == NULL) {
        snprintf(err, errlen, "tunnels: cannot create a Lua state");
        goto err;
    }
    luaL_openlibs(L);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);

    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    h->ref_traceback = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);

    lua_newtable(L); /* cfg */
    set_num(L, "reuse_max_sec", (double)cfg->reuse_max_sec);
    set_num(L, "reuse_max_cnt", (double)cfg->reuse_max_cnt);
    set_num(L, "idle_max_sec", (double)cfg->idle_max_sec);
    set_num(L, "conn_max_cnt", (double)cfg->conn_max_cnt);
    lua_pushstring(L, cfg->role);
    lua_setfield(L, -2, "role");
    lua_pushvalue(L, -1);
    h->ref_cfg = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_newtable(L); /* the tunnels global */
    lua_insert(L, -2);
    lua_setfield(L, -2, "config");
    lua_pushcfunction(L, l_log);
    lua_setfield(L, -2, "log");
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_setglobal(L, "tunnels");

    if (load_script(h, luahost_default_policy, luahost_default_policy_len, "@lua/policy.lua", err,
                    errlen) == -1)
        goto err;
    if (cfg->lua_script[0] != 0) {
        FILE *f = fopen(cfg->lua_script, "r");
        if (f == NULL) {
            snprintf(err, errlen, "tunnels: -lua.script: %s: %s", cfg->lua_script, strerror(errno));
            goto err;
        }
        fclose(f);
        if (load_script(h, NULL, 0, cfg->lua_script, err, errlen) == -1) goto err;
        /* Hooks the script leaves out come from the default. */
        for (i = 0; i < sizeof(hooks) / sizeof(hooks[0]); i++) {
            lua_getfield(L, -1, hooks[i]);
            if (lua_isnil(L, -1)) {
                lua_getfield(L, -3, hooks[i]);
                lua_setfield(L, -3, hooks[i]);
            }
            lua_pop(L, 1);
        }
    }
    policy = lua_gettop(L);
    lua_getglobal(L, "tunnels");
    if (cfg->lua_script[0] != 0) {
        lua_pushvalue(L, policy - 1);
        lua_setfield(L, -2, "default");
    } else {
        lua_pushvalue(L, policy);
        lua_setfield(L, -2, "default");
    }
    lua_pushvalue(L, policy);
    lua_setfield(L, -2, "policy");
    lua_pop(L, 1);
    h->ref_pick = ref_hook(L, policy, "pick");
    h->ref_idle = ref_hook(L, policy, "idle");
    lua_settop(L, 0);
    return h;
err:
    luahost_free(h);
    return NULL;
}

void
luahost_free(struct luahost *h)
{
    if (h == NULL) return;
    if (h->L != NULL) lua_close(h->L);
    free(h);
}

static void
push_conn(lua_State *L, const struct luahost_conn *c)
{
    lua_createtable(L, 0, 7);
    set_num(L, "id", c->id);
    set_num(L, "age", c->age);
    set_num(L, "idle", c->idle);
    set_num(L, "sessions", c->sessions);
    set_num(L, "live", c->live);
    lua_pushboolean(L, c->goaway);
    lua_setfield(L, -2, "goaway");
    lua_pushboolean(L, c->ready);
    lua_setfield(L, -2, "ready");
}

/* The seed's rule in C: what the default script decides, used when the script fails. */
static int
builtin_reusable(const struct config *cfg, const struct luahost_conn *c)
{
    return !c->goaway && c->age < (double)cfg->reuse_max_sec &&
           c->sessions < (unsigned)cfg->reuse_max_cnt;
}

uint32_t
luahost_pool_pick(struct luahost *h, const struct luahost_conn *conns, size_t n)
{
    lua_State *L = h->L;
    uint32_t id;
    size_t i;

    if (h->ref_pick != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_pick);
        lua_createtable(L, (int)n, 0);
        for (i = 0; i < n; i++) {
            push_conn(L, &conns[i]);
            lua_rawseti(L, -2, (int)i + 1);
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_cfg);
        if (gate(h, "pick", 2, 1, (double)h->budget_ms) == 0) {
            if (lua_isnil(L, -1) || lua_isboolean(L, -1)) {
                lua_pop(L, 1);
                return 0;
            }
            id = (uint32_t)lua_tonumber(L, -1);
            lua_pop(L, 1);
            for (i = 0; i < n; i++)
                if (conns[i].id == id) return id;
            log_msg(LOG_ERROR, "[lua] pick: answered %u, which is no live connection", id);
        }
    }
    for (i = n; i > 0; i--)
        if (builtin_reusable(h->cfg, &conns[i - 1])) return conns[i - 1].id;
    return 0;
}

int
luahost_pool_idle(struct luahost *h, const struct luahost_conn *c)
{
    lua_State *L = h->L;
    int r;

    if (h->ref_idle != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_idle);
        push_conn(L, c);
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_cfg);
        if (gate(h, "idle", 2, 1, (double)h->budget_ms) == 0) {
            r = lua_toboolean(L, -1);
            lua_pop(L, 1);
            return r;
        }
    }
    return c->live == 0 &&
           (c->idle >= (double)h->cfg->idle_max_sec || !builtin_reusable(h->cfg, c));
}
