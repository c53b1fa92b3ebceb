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

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <lualib.h>

#include "clock.h"
#include "dingtalk_msg.h"
#include "log.h"
#include "metrics.h"
#include "reuse.h"

#define LUAHOST_COUNT 1000

extern const char luahost_default_policy[];
extern const size_t luahost_default_policy_len;

extern const char luahost_rules_lib[];
extern const size_t luahost_rules_lib_len;

#define LUAHOST_TAGS 16

/* Hooks by slot: the script's, and the default script's to fall back on. */
enum { H_PICK, H_IDLE, H_SPARE, H_ROUTE, H_ALERT, H_TICK, H_N };
static const char *hook_names[H_N] = {"pick", "idle", "spare", "route", "alert", "alert_tick"};

/* Field names of the tables a hook gets per session. Building those tables is most of a call
 * (pick, idle), and lua_setfield interns its name on every call (strlen, hash, compare): the
 * names are interned once into a table the registry holds, and set with lua_rawset. A pick
 * over three connections: 2.5 -> 2.1 us. */
enum {
    K_ID = 1,
    K_AGE,
    K_IDLE,
    K_SESSIONS,
    K_LIVE,
    K_GOAWAY,
    K_READY,
    K_HOST,
    K_PORT,
    K_ATYP,
    K_ADDR,
    K_SRC,
    K_RATE,
    K_HANDSHAKE,
    K_PEER,
    K_SUBJECT,
    K_FINGERPRINT,
    K_NET,
    K_N
};
static const char *key_names[K_N] = {
    NULL,   "id",   "age", "idle", "sessions",  "live", "goaway",  "ready",       "host", "port",
    "atyp", "addr", "src", "rate", "handshake", "peer", "subject", "fingerprint", "net"};

/* What one state's allocator counts. Calls past max fail only while a hook runs (capped): the
 * engine's own pushes between calls must never fail, since an allocation that fails outside a
 * protected call is a panic. */
struct luamem {
    size_t used, max;
    int capped;
};

struct luahost {
    lua_State *L;
    struct luamem *mem; /* L's allocator's count; its own allocation, as L outlives a copy of h */
    int over;           /* the script holds more than -lua.mem.max.mib: hooks are skipped */
    const struct config *cfg;
    int ref_traceback;
    int ref_cfg;
    int ref_keys;     /* the field names of the tables built per call, interned once (K_*) */
    int ref[H_N];     /* the hook in force (the script's, else the default's) */
    int ref_def[H_N]; /* the default script's, LUA_NOREF when it is the one in force */
    long budget_ms;
    double deadline;
    int expired;
    struct {
        char tag[16];
        int level;
    } levels[LUAHOST_TAGS]; /* alert_levels; tag "*" is everything else */
    size_t nlevels;
};

/* This host's addresses as a list of strings (the server's ACL denies them: a listener on
 * 0.0.0.0 is reached through every one). Read with each new state: at start and on SIGHUP.
 * -1 with err set when they cannot be listed (getifaddrs needs an AF_NETLINK socket, which a
 * sandbox may forbid): a server that must deny them then refuses to run rather than let a
 * client reach a service on one of them. */
static int
push_host_addrs(lua_State *L, const struct config *cfg, char *err, size_t errlen)
{
    struct ifaddrs *ifa, *i;
    char text[INET6_ADDRSTRLEN];
    int n = 0;

    lua_newtable(L);
    if (getifaddrs(&ifa) == -1) {
        if (cfg->role_kind == ROLE_SERVER && !cfg->server_allow_local) {
            snprintf(err, errlen,
                     "tunnels: cannot list this host's addresses (getifaddrs: %s), so the ACL "
                     "could not deny them: allow AF_NETLINK sockets, or set "
                     "-server.allow.local",
                     strerror(errno));
            return -1;
        }
        log_msg(LOG_WARN, "[lua] this host's addresses are unknown (getifaddrs: %s)",
                strerror(errno));
        return 0; /* a client, or a server allowed its own addresses: nothing to deny */
    }
    for (i = ifa; i != NULL; i = i->ifa_next) {
        const void *a;
        if (i->ifa_addr == NULL) continue;
        if (i->ifa_addr->sa_family == AF_INET)
            a = &((struct sockaddr_in *)i->ifa_addr)->sin_addr;
        else if (i->ifa_addr->sa_family == AF_INET6)
            a = &((struct sockaddr_in6 *)i->ifa_addr)->sin6_addr;
        else
            continue;
        if (inet_ntop(i->ifa_addr->sa_family, a, text, sizeof(text)) == NULL) continue;
        lua_pushstring(L, text);
        lua_rawseti(L, -2, ++n);
    }
    freeifaddrs(ifa);
    return 0;
}

/* The count hook has no user data in Lua 5.1; the process has one state. */
static struct luahost *luahost_running;

static double
now_ms(void)
{
    return (double)clock_now_us() / 1e3;
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
    enum metrics_hook hook = metrics_hook(what);
    double began;

    metrics.lua_calls[hook]++;
    if (h->over) {
        metrics.lua_failed[hook]++;
        lua_settop(L, fn - 1);
        return -1;
    }
    if (!lua_checkstack(L, 8)) {
        log_msg(LOG_ERROR, "[lua] %s: Lua stack exhausted", what);
        metrics.lua_failed[hook]++;
        lua_settop(L, fn - 1);
        return -1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_traceback);
    lua_insert(L, fn);
    h->deadline = now_ms() + budget_ms;
    h->expired = 0;
    luahost_running = h;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT, LUAHOST_COUNT);
    h->mem->capped = 1;
    began = now_ms();
    rc = lua_pcall(L, nargs, nres, fn);
    metrics.lua_seconds[hook] += (now_ms() - began) / 1e3;
    if (rc != 0) metrics.lua_failed[hook]++;
    h->mem->capped = 0;
    lua_sethook(L, NULL, 0, 0);
    luahost_running = NULL;
    if (h->mem->used > h->mem->max) {
        /* Over the bound between calls (the script keeps what it made): collected, and if it
         * still holds too much, no hook runs again until SIGHUP loads the script anew; the
         * defaults decide meanwhile (on the server, the ACL denies). */
        lua_gc(L, LUA_GCCOLLECT, 0);
        if (h->mem->used > h->mem->max) {
            h->over = 1;
            log_msg(LOG_ERROR,
                    "[lua] the script holds %zu MiB, over -lua.mem.max.mib=%ld: its "
                    "hooks are skipped until SIGHUP reloads it",
                    h->mem->used >> 20, h->cfg->lua_mem_max_mib);
        }
    }
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

/* tunnels.json(text): text as a JSON string literal, for alert hooks that write a service's
 * whole body (the engine's own escaping: control bytes, quotes, bytes that are not UTF-8). */
static int
l_json(lua_State *L)
{
    size_t len, cap;
    const char *text = luaL_checklstring(L, 1, &len);
    char *out;

    if (len > 1024 * 1024) return luaL_error(L, "tunnels.json: text over 1 MiB");
    cap = 6 * len + 6;
    out = malloc(cap);
    if (out == NULL) return luaL_error(L, "tunnels.json: out of memory");
    len = dingtalk_msg_json_string(text, out, cap);
    lua_pushlstring(L, out, len);
    free(out);
    return 1;
}

/* package.preload["tunnels.rules"]: the rule library built into the binary. */
static int
l_require_rules(lua_State *L)
{
    if (luaL_loadbuffer(L, luahost_rules_lib, luahost_rules_lib_len, "@lua/rules.lua") != 0)
        return lua_error(L);
    lua_call(L, 0, 1);
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

static void
set_str(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

/* Reads the script's alert_levels ({tag = level, ["*"] = level}) into h->levels. */
static int
read_levels(struct luahost *h, int policy, char *err, size_t errlen)
{
    lua_State *L = h->L;
    int level;

    h->nlevels = 1;
    snprintf(h->levels[0].tag, sizeof(h->levels[0].tag), "*");
    h->levels[0].level = LOG_ERROR;
    lua_getfield(L, policy, "alert_levels");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        const char *tag = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        const char *lv = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        size_t k = 0;
        if (tag == NULL || strlen(tag) >= sizeof(h->levels[0].tag) ||
            (lv == NULL && !lua_isnumber(L, -1)) ||
            (lv != NULL && log_parse_level(lv, &level) == -1)) {
            snprintf(err, errlen,
                     "tunnels: -lua.script: alert_levels: want tag = level (\"erro\", 300, ...)");
            lua_pop(L, 3);
            return -1;
        }
        if (lv == NULL) level = (int)lua_tonumber(L, -1);
        if (strcmp(tag, "*") != 0) {
            if (h->nlevels == LUAHOST_TAGS) {
                snprintf(err, errlen, "tunnels: -lua.script: alert_levels: more than %d tags",
                         LUAHOST_TAGS - 1);
                lua_pop(L, 3);
                return -1;
            }
            k = h->nlevels++;
            snprintf(h->levels[k].tag, sizeof(h->levels[k].tag), "%s", tag);
        }
        h->levels[k].level = level;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return 0;
}

/* Builds h's state: the tunnels global, the default script, the user's, the hook refs. */
static void *
counted_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct luamem *m = ud;
    void *p;

    if (nsize == 0) {
        free(ptr);
        m->used -= osize;
        return NULL;
    }
    if (m->capped && nsize > osize && m->used + (nsize - osize) > m->max) return NULL;
    p = realloc(ptr, nsize);
    if (p != NULL) m->used = m->used - (ptr != NULL ? osize : 0) + nsize;
    return p;
}

/* A new state whose memory is counted; NULL when out of memory. A LuaJIT built without GC64
 * takes no allocator of ours on 64-bit: the state is made without the bound, and that is
 * logged. */
static lua_State *
new_state(struct luahost *h)
{
    lua_State *L;

    h->mem = calloc(1, sizeof(*h->mem));
    if (h->mem == NULL) return NULL;
    h->mem->max = (size_t)h->cfg->lua_mem_max_mib << 20;
    L = lua_newstate(counted_alloc, h->mem);
    if (L != NULL) return L;
    log_msg(LOG_WARN, "[lua] this LuaJIT takes no allocator of ours: -lua.mem.max.mib is not "
                      "enforced");
    h->mem->max = SIZE_MAX;
    return luaL_newstate();
}

static int
build(struct luahost *h, char *err, size_t errlen)
{
    const struct config *cfg = h->cfg;
    lua_State *L;
    int policy, def, i;
    char host[256];

    h->ref_cfg = h->ref_traceback = h->ref_keys = LUA_NOREF;
    for (i = 0; i < H_N; i++)
        h->ref[i] = h->ref_def[i] = LUA_NOREF;
    h->budget_ms = cfg->lua_budget_ms;
    h->L = L = new_state(h);
    if (L == NULL) {
        snprintf(err, errlen, "tunnels: cannot create a Lua state");
        return -1;
    }
    luaL_openlibs(L);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);

    lua_getglobal(L, "debug");
    lua_getfield(L, -1, "traceback");
    h->ref_traceback = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, l_require_rules);
    lua_setfield(L, -2, "tunnels.rules");
    lua_pop(L, 2);

    lua_newtable(L); /* cfg */
    set_num(L, "reuse_max_sec", (double)cfg->reuse_max_sec);
    set_num(L, "reuse_max_cnt", (double)cfg->reuse_max_cnt);
    set_num(L, "idle_max_sec", (double)cfg->idle_max_sec);
    set_num(L, "conn_max_cnt", (double)cfg->conn_max_cnt);
    lua_pushboolean(L, cfg->server_allow_local);
    lua_setfield(L, -2, "allow_local");
    lua_pushboolean(L, cfg->server_allow_private);
    lua_setfield(L, -2, "allow_private");
    if (push_host_addrs(L, cfg, err, errlen) == -1) return -1;
    lua_setfield(L, -2, "host_addrs");
    set_str(L, "role", cfg->role);
    lua_createtable(L, cfg->nservers, 0);
    for (i = 0; i < cfg->nservers; i++) {
        lua_pushstring(L, cfg->servers[i].name);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "servers");
    lua_pushvalue(L, -1);
    h->ref_cfg = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_createtable(L, K_N - 1, 0);
    for (i = 1; i < K_N; i++) {
        lua_pushstring(L, key_names[i]);
        lua_rawseti(L, -2, i);
    }
    h->ref_keys = luaL_ref(L, LUA_REGISTRYINDEX);

    lua_newtable(L); /* the tunnels global */
    lua_insert(L, -2);
    lua_setfield(L, -2, "config");
    lua_pushcfunction(L, l_log);
    lua_setfield(L, -2, "log");
    lua_pushcfunction(L, l_now);
    lua_setfield(L, -2, "now");
    lua_pushcfunction(L, l_json);
    lua_setfield(L, -2, "json");
    if (gethostname(host, sizeof(host)) != 0) snprintf(host, sizeof(host), "unknown");
    host[sizeof(host) - 1] = 0;
    set_str(L, "hostname", host);
    set_str(L, "role", cfg->role);
    lua_setglobal(L, "tunnels");

    if (load_script(h, luahost_default_policy, luahost_default_policy_len, "@lua/policy.lua", err,
                    errlen) == -1)
        return -1;
    def = lua_gettop(L);
    /* tunnels.default and tunnels.policy are the default script until the user's loads, so
     * that its top level can already read them. */
    lua_getglobal(L, "tunnels");
    lua_pushvalue(L, def);
    lua_setfield(L, -2, "default");
    lua_pushvalue(L, def);
    lua_setfield(L, -2, "policy");
    lua_pop(L, 1);
    if (cfg->lua_script[0] != 0) {
        FILE *f = fopen(cfg->lua_script, "r");
        if (f == NULL) {
            snprintf(err, errlen, "tunnels: -lua.script: %s: %s", cfg->lua_script, strerror(errno));
            return -1;
        }
        fclose(f);
        if (load_script(h, NULL, 0, cfg->lua_script, err, errlen) == -1) return -1;
        /* Hooks (and helpers like headroom) the script leaves out come from the default. */
        lua_pushnil(L);
        while (lua_next(L, def) != 0) {
            lua_pushvalue(L, -2); /* key */
            lua_rawget(L, -4);    /* the script's value for it */
            if (lua_isnil(L, -1)) {
                lua_pop(L, 1);
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                lua_rawset(L, -4);
            } else {
                lua_pop(L, 2);
            }
        }
    } else {
        lua_pushvalue(L, def);
    }
    policy = lua_gettop(L);
    lua_getglobal(L, "tunnels");
    lua_pushvalue(L, policy);
    lua_setfield(L, -2, "policy");
    lua_pop(L, 1);
    for (i = 0; i < H_N; i++) {
        h->ref[i] = ref_hook(L, policy, hook_names[i]);
        /* The default's hook to fall back on, when the script has its own. */
        lua_getfield(L, policy, hook_names[i]);
        lua_getfield(L, def, hook_names[i]);
        if (!lua_rawequal(L, -1, -2) && lua_isfunction(L, -1))
            h->ref_def[i] = luaL_ref(L, LUA_REGISTRYINDEX);
        else
            lua_pop(L, 1);
        lua_pop(L, 1);
    }
    if (read_levels(h, policy, err, errlen) == -1) return -1;
    lua_settop(L, 0);
    return 0;
}

struct luahost *
luahost_new(const struct config *cfg, char *err, size_t errlen)
{
    struct luahost *h = calloc(1, sizeof(*h));

    if (h == NULL) {
        snprintf(err, errlen, "tunnels: out of memory");
        return NULL;
    }
    h->cfg = cfg;
    if (build(h, err, errlen) == -1) {
        luahost_free(h);
        return NULL;
    }
    return h;
}

int
luahost_reload(struct luahost *h, char *err, size_t errlen)
{
    struct luahost next;

    memset(&next, 0, sizeof(next));
    next.cfg = h->cfg;
    if (build(&next, err, errlen) == -1) {
        if (next.L != NULL) lua_close(next.L);
        free(next.mem);
        return -1;
    }
    lua_close(h->L);
    free(h->mem);
    *h = next;
    return 0;
}

void
luahost_free(struct luahost *h)
{
    if (h == NULL) return;
    if (h->L != NULL) lua_close(h->L);
    free(h->mem);
    free(h);
}

/* t[key k] = v for the table t on top; keys is the K_* table's stack index. */
static void
key_num(lua_State *L, int keys, int k, double v)
{
    lua_rawgeti(L, keys, k);
    lua_pushnumber(L, v);
    lua_rawset(L, -3);
}

static void
key_str(lua_State *L, int keys, int k, const char *v)
{
    lua_rawgeti(L, keys, k);
    lua_pushstring(L, v);
    lua_rawset(L, -3);
}

static void
key_bool(lua_State *L, int keys, int k, int v)
{
    lua_rawgeti(L, keys, k);
    lua_pushboolean(L, v);
    lua_rawset(L, -3);
}

/* Pushes the K_* table; the caller pops it (lua_remove) once its tables are built. */
static int
push_keys(struct luahost *h)
{
    lua_rawgeti(h->L, LUA_REGISTRYINDEX, h->ref_keys);
    return lua_gettop(h->L);
}

static void
push_conn(lua_State *L, int keys, const struct luahost_conn *c)
{
    lua_createtable(L, 0, 7);
    key_num(L, keys, K_ID, c->id);
    key_num(L, keys, K_AGE, c->age);
    key_num(L, keys, K_IDLE, c->idle);
    key_num(L, keys, K_SESSIONS, c->sessions);
    key_num(L, keys, K_LIVE, c->live);
    key_bool(L, keys, K_GOAWAY, c->goaway);
    key_bool(L, keys, K_READY, c->ready);
}

/* The seed's rule in C: what the default script decides, used when the script fails. */
static int
builtin_reusable(const struct config *cfg, const struct luahost_conn *c)
{
    return reuse_allowed(cfg->reuse_max_sec, cfg->reuse_max_cnt, c->goaway, c->age, c->sessions);
}

static void
push_conns(lua_State *L, int keys, const struct luahost_conn *conns, size_t n)
{
    size_t i;

    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
        push_conn(L, keys, &conns[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
}

static void
push_load(lua_State *L, int keys, const struct luahost_load *load)
{
    lua_createtable(L, 0, 2);
    key_num(L, keys, K_RATE, load->rate);
    key_num(L, keys, K_HANDSHAKE, load->handshake);
}

/* The default pick's first answer in C: the oldest usable connection that is up, else the
 * oldest usable one in its handshake, else 0 (dial). */
static uint32_t
builtin_pick(const struct config *cfg, const struct luahost_conn *conns, size_t n)
{
    uint32_t pending = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        if (!builtin_reusable(cfg, &conns[i])) continue;
        if (conns[i].ready) return conns[i].id;
        if (pending == 0) pending = conns[i].id;
    }
    return pending;
}

uint32_t
luahost_pool_pick(struct luahost *h, const struct luahost_conn *conns, size_t n,
                  const struct luahost_load *load, int *dial)
{
    lua_State *L = h->L;
    uint32_t id;
    size_t i;

    *dial = 0;
    if (h->ref[H_PICK] != LUA_NOREF) {
        int keys = push_keys(h);

        lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref[H_PICK]);
        push_conns(L, keys, conns, n);
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_cfg);
        push_load(L, keys, load);
        lua_remove(L, keys);
        if (gate(h, "pick", 3, 2, (double)h->budget_ms) == 0) {
            int nil = lua_isnil(L, -2) || lua_isboolean(L, -2);
            id = nil ? 0 : (uint32_t)lua_tonumber(L, -2);
            *dial = lua_toboolean(L, -1);
            lua_pop(L, 2);
            if (nil) {
                *dial = 0; /* the session's own dial is the new connection */
                return 0;
            }
            for (i = 0; i < n; i++)
                if (conns[i].id == id) return id;
            log_msg(LOG_ERROR, "[lua] pick: answered %u, which is no live connection", id);
            *dial = 0;
        }
    }
    return builtin_pick(h->cfg, conns, n);
}

int
luahost_pool_idle(struct luahost *h, const struct luahost_conn *c, const struct luahost_conn *conns,
                  size_t n)
{
    lua_State *L = h->L;
    int r;

    if (h->ref[H_IDLE] != LUA_NOREF) {
        int keys = push_keys(h);

        lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref[H_IDLE]);
        push_conn(L, keys, c);
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_cfg);
        push_conns(L, keys, conns, n);
        lua_remove(L, keys);
        if (gate(h, "idle", 3, 1, (double)h->budget_ms) == 0) {
            r = lua_toboolean(L, -1);
            lua_pop(L, 1);
            return r;
        }
    }
    return c->live == 0 &&
           (c->idle >= (double)h->cfg->idle_max_sec || !builtin_reusable(h->cfg, c));
}

int
luahost_pool_spare(struct luahost *h, const struct luahost_conn *conns, size_t n,
                   const struct luahost_load *load)
{
    lua_State *L = h->L;
    int r, keys;

    if (h->ref[H_SPARE] == LUA_NOREF) return 0;
    keys = push_keys(h);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref[H_SPARE]);
    push_conns(L, keys, conns, n);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_cfg);
    push_load(L, keys, load);
    lua_remove(L, keys);
    if (gate(h, "spare", 3, 1, (double)h->budget_ms) == -1) return 0;
    r = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return r;
}

static void
push_req(lua_State *L, int keys, const struct luahost_req *r)
{
    lua_createtable(L, 0, 10);
    key_str(L, keys, K_HOST, r->host);
    key_str(L, keys, K_NET, r->net == LUAHOST_NET_UDP ? "udp" : "tcp");
    key_num(L, keys, K_PORT, r->port);
    key_str(L, keys, K_ATYP, r->atyp);
    if (r->addr != NULL) key_str(L, keys, K_ADDR, r->addr);
    if (r->src != NULL) key_str(L, keys, K_SRC, r->src);
    if (r->peer != NULL && r->peer[0] != 0) key_str(L, keys, K_PEER, r->peer);
    if (r->subject != NULL && r->subject[0] != 0) key_str(L, keys, K_SUBJECT, r->subject);
    if (r->fingerprint != NULL && r->fingerprint[0] != 0)
        key_str(L, keys, K_FINGERPRINT, r->fingerprint);
}

/* The server named by the answer at idx (a name from -server.addr, or a 1-based index), or -1. */
static int
server_index(const struct config *cfg, lua_State *L, int idx)
{
    int i;

    if (lua_type(L, idx) == LUA_TNUMBER) {
        i = (int)lua_tonumber(L, idx);
        return i >= 1 && i <= cfg->nservers ? i - 1 : -1;
    }
    if (lua_type(L, idx) != LUA_TSTRING) return -1;
    for (i = 0; i < cfg->nservers; i++)
        if (strcmp(lua_tostring(L, idx), cfg->servers[i].name) == 0) return i;
    return -1;
}

/* One route call through ref. Returns the decision, or -1 (logged) when the hook failed or
 * answered what this role does not know. */
static int
try_route(struct luahost *h, int ref, const struct luahost_req *r, int *server, char *why,
          size_t whylen)
{
    lua_State *L = h->L;
    int client = h->cfg->role_kind == ROLE_CLIENT, d = -1, k, keys;
    const char *a, *detail;

    keys = push_keys(h);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    push_req(L, keys, r);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_cfg);
    lua_remove(L, keys);
    if (gate(h, "route", 2, 2, (double)h->budget_ms) == -1) return -1;
    a = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    detail = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    *server = 0;
    if (detail != NULL) snprintf(why, whylen, "%s", detail);
    if (client) {
        if (a != NULL && strcmp(a, "direct") == 0)
            d = LUAHOST_DIRECT;
        else if (a != NULL && strcmp(a, "block") == 0)
            d = LUAHOST_BLOCK;
        else if (a != NULL && strcmp(a, "tunnel") == 0) {
            d = LUAHOST_TUNNEL;
            /* A server's name or index; any other string is a note (the rule library gives
             * the matching rule's text), and the first server is used. */
            if ((k = server_index(h->cfg, L, -1)) >= 0)
                *server = k;
            else if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
                d = -1;
        } else if ((k = server_index(h->cfg, L, -2)) >= 0) {
            d = LUAHOST_TUNNEL; /* a server's name alone means through it */
            *server = k;
        }
    } else {
        if (lua_type(L, -2) == LUA_TBOOLEAN)
            d = lua_toboolean(L, -2) ? LUAHOST_ALLOW : LUAHOST_DENY;
        else if (a != NULL && strcmp(a, "allow") == 0)
            d = LUAHOST_ALLOW;
        else if (a != NULL && strcmp(a, "deny") == 0)
            d = LUAHOST_DENY;
    }
    if (d == -1) {
        char got[96];
        /* Described from its type, never with tostring: a table's __tostring is the script's
         * code, and it may raise (outside the gate, that was a LuaJIT panic: the process died). */
        int t = lua_type(L, -2);
        if (t == LUA_TSTRING)
            snprintf(got, sizeof(got), "\"%s\"", lua_tostring(L, -2));
        else if (t == LUA_TNUMBER)
            snprintf(got, sizeof(got), "%g", lua_tonumber(L, -2));
        else
            snprintf(got, sizeof(got), "%s", lua_typename(L, t));
        if (lua_type(L, -1) != LUA_TNIL && lua_type(L, -1) != LUA_TSTRING)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), ", %s",
                     lua_typename(L, lua_type(L, -1)));
        else if (detail != NULL)
            snprintf(got + strlen(got), sizeof(got) - strlen(got), ", \"%s\"", detail);
        log_msg(LOG_ERROR, "[lua] route: answered %s for %s:%u; want %s", got, r->host, r->port,
                client ? "\"tunnel\" [, server], \"direct\", \"block\" [, why] or a server name"
                       : "\"allow\" or \"deny\" [, why]");
    }
    lua_pop(L, 2);
    return d;
}

int
luahost_route(struct luahost *h, const struct luahost_req *r, int *server, char *why, size_t whylen)
{
    int d = -1;

    int client = h->cfg->role_kind == ROLE_CLIENT;

    why[0] = 0;
    *server = 0;
    if (h->ref[H_ROUTE] != LUA_NOREF) d = try_route(h, h->ref[H_ROUTE], r, server, why, whylen);
    /* The server's ACL fails closed: when the operator's hook errs, overruns or answers
     * anything but allow or deny, the session is denied (a whitelist that answered nil let
     * everything through the default). The client falls back to the default's decision. */
    if (d == -1 && client && h->ref_def[H_ROUTE] != LUA_NOREF) {
        why[0] = 0;
        d = try_route(h, h->ref_def[H_ROUTE], r, server, why, whylen);
    }
    if (d != -1) return d;
    snprintf(why, whylen, "the route hook failed (the [lua] line says how)");
    return client ? LUAHOST_TUNNEL : LUAHOST_DENY;
}

static void
push_event(lua_State *L, const struct luahost_event *ev)
{
    lua_createtable(L, 0, 7);
    set_str(L, "level", log_level_tag(ev->level));
    set_num(L, "severity", ev->level);
    set_str(L, "tag", ev->tag);
    set_str(L, "text", ev->text);
    set_str(L, "line", ev->line);
    set_num(L, "time", ev->time);
}

/* Runs ref with the arguments pushed by the caller; the answer must be a string (send it) or
 * nil/false (drop). Returns 1, 0, or -1 when the hook failed. */
static int
text_answer(struct luahost *h, const char *what, int nargs, char *out, size_t outlen)
{
    lua_State *L = h->L;
    int r;

    lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_cfg);
    if (gate(h, what, nargs + 1, 1, (double)h->budget_ms) == -1) return -1;
    if (lua_isnil(L, -1) || (lua_isboolean(L, -1) && !lua_toboolean(L, -1))) {
        r = 0;
    } else if (lua_type(L, -1) == LUA_TSTRING) {
        snprintf(out, outlen, "%s", lua_tostring(L, -1));
        r = 1;
    } else {
        log_msg(LOG_ERROR, "[lua] %s: answered a %s; want a string, or nil to drop", what,
                lua_typename(L, lua_type(L, -1)));
        r = -1;
    }
    lua_pop(L, 1);
    return r;
}

int
luahost_alert(struct luahost *h, const struct luahost_event *ev, char *out, size_t outlen)
{
    lua_State *L = h->L;
    int r = -1;

    if (h->ref[H_ALERT] != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref[H_ALERT]);
        push_event(L, ev);
        r = text_answer(h, "alert", 1, out, outlen);
    }
    if (r == -1 && h->ref_def[H_ALERT] != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref_def[H_ALERT]);
        push_event(L, ev);
        r = text_answer(h, "alert (default)", 1, out, outlen);
    }
    if (r == -1) {
        snprintf(out, outlen, "%s", ev->line);
        r = 1;
    }
    return r;
}

int
luahost_alert_tick(struct luahost *h, char *out, size_t outlen)
{
    lua_State *L = h->L;

    if (h->ref[H_TICK] == LUA_NOREF) return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref[H_TICK]);
    lua_pushnumber(L, now_ms() / 1e3);
    return text_answer(h, "alert_tick", 1, out, outlen) == 1;
}

int
luahost_alert_level(const struct luahost *h, const char *tag)
{
    size_t i;

    for (i = 1; i < h->nlevels; i++)
        if (strcmp(h->levels[i].tag, tag) == 0) return h->levels[i].level;
    return h->nlevels > 0 ? h->levels[0].level : LOG_ERROR;
}

int
luahost_alert_min_level(const struct luahost *h)
{
    int min = h->nlevels > 0 ? h->levels[0].level : LOG_ERROR;
    size_t i;

    for (i = 1; i < h->nlevels; i++)
        if (h->levels[i].level < min) min = h->levels[i].level;
    return min;
}
