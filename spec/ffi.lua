-- ffi.lua: the engine's pure modules (frame, socks, httpreq, sidmap, dingtalk_msg, log, reuse, turns)
-- through LuaJIT's FFI, from the shared library `make` builds (build/libtunnels_pure.so). The
-- declarations mirror the headers.
local ffi = require("ffi")

-- One declaration a line. busted may load this file again for another spec file, and the FFI's
-- C declarations outlive it: a struct declared twice is an error, so each line that is known
-- already is skipped, and only a line that is new is declared.
local declarations = [[
struct frame_hdr { uint16_t sid; uint16_t len; };
struct frame_ctl { uint8_t type; uint8_t reason; uint16_t sid; uint32_t increment; uint64_t opaque; };
int frame_decode_hdr(const uint8_t *buf, size_t len, struct frame_hdr *h);
void frame_encode_hdr(uint8_t *out, uint16_t sid, uint16_t len);
int frame_decode_ctl(const uint8_t *p, size_t len, struct frame_ctl *c, const char **err);
size_t frame_encode_ctl(uint8_t *out, const struct frame_ctl *c);
const char *frame_reason_str(uint8_t reason);

struct socks_req { uint8_t cmd; uint8_t atyp; uint16_t port; uint8_t addr[16]; char host[256]; };
int socks_parse_greeting(const uint8_t *b, size_t n, size_t *used, int *methods, const char **err);
int socks_parse_auth(const uint8_t *b, size_t n, size_t *used, char *user, char *pass, const char **err);
int socks_parse_request(const uint8_t *b, size_t n, size_t *used, struct socks_req *r, const char **err);
size_t socks_encode_request(uint8_t *out, const struct socks_req *r);
void socks_encode_reply(uint8_t *out, uint8_t rep);
void socks_format_dest(const struct socks_req *r, char *buf, size_t len);
int socks_check_name(char *host, const char **err);
int socks_parse_v4(const uint8_t *b, size_t n, size_t *used, struct socks_req *r, const char **err);

struct httpreq { char method[16]; int absolute; struct socks_req dest; int has_auth; char user[256]; char pass[256]; long long body; char host[300]; size_t path, path_len; };
int httpreq_parse(const uint8_t *b, size_t n, size_t *used, struct httpreq *r, const char **err);
size_t httpreq_origin_head(const uint8_t *head, size_t len, const struct httpreq *r, uint8_t *out, size_t outlen);
size_t httpreq_error(int status, const char *text, char *out, size_t outlen);

int log_open(const char *path, int level, const char **err);
void log_msg(int level, const char *fmt, ...);

struct sidmap;
struct sidmap *sidmap_new(void);
void sidmap_free(struct sidmap *m);
void *sidmap_get(const struct sidmap *m, uint16_t sid);
int sidmap_put(struct sidmap *m, uint16_t sid, void *val);
void sidmap_del(struct sidmap *m, uint16_t sid);
size_t sidmap_count(const struct sidmap *m);

size_t dingtalk_msg_sign(const char *secret, long long ts_ms, char *out, size_t outlen);
size_t dingtalk_msg_urlencode(const char *in, char *out, size_t outlen);
size_t dingtalk_msg_json(const char *text, char *out, size_t outlen);
size_t dingtalk_msg_json_string(const char *text, char *out, size_t outlen);
size_t dingtalk_msg_webhook_json(const char *text, char *out, size_t outlen);

int reuse_allowed(long reuse_max_sec, long reuse_max_cnt, int goaway, double age, unsigned sessions);

struct turns { uint16_t *ring; uint16_t head, n; unsigned wake_all : 1; };
struct turn_ticket { unsigned waiting : 1, holding : 1; };
void turns_free(struct turns *t);
void turns_wait(struct turns *t, struct turn_ticket *k, uint16_t sid);
int turns_waiting(const struct turns *t);
uint16_t turns_next(struct turns *t);
int turns_take_wake_all(struct turns *t);
size_t turns_for_room(size_t room);
void turns_grant(struct turn_ticket *k);
int turns_held(const struct turn_ticket *k);
int turns_use(struct turn_ticket *k);
]]
for line in declarations:gmatch("[^\n]+") do
  local ok, err = pcall(ffi.cdef, line)
  if not ok and not tostring(err):find("redefine", 1, true) then error(err, 0) end
end

local root = os.getenv("TUNNELS_ROOT") or "."
return ffi.load(root .. "/build/libtunnels_pure.so")
