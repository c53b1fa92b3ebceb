-- The SOCKS5 parser (engine/socks.c): greetings, requests (also the EagerSocks header), replies.
local ffi = require("ffi")
local lib = require("spec.ffi")

local function greeting(s)
  local used, methods = ffi.new("size_t[1]"), ffi.new("int[1]")
  local err = ffi.new("const char *[1]")
  local rc = lib.socks_parse_greeting(ffi.cast("const uint8_t *", s), #s, used, methods, err)
  if rc == -1 then return "err", ffi.string(err[0]) end
  if rc == 0 then return "need" end
  return "ok", tonumber(used[0]), bit.band(methods[0], 1) ~= 0, bit.band(methods[0], 2) ~= 0
end

local function request(s)
  local used, r = ffi.new("size_t[1]"), ffi.new("struct socks_req")
  local err = ffi.new("const char *[1]")
  local rc = lib.socks_parse_request(ffi.cast("const uint8_t *", s), #s, used, r, err)
  if rc == -1 then return "err", ffi.string(err[0]) end
  if rc == 0 then return "need" end
  return "ok", tonumber(used[0]), r
end

local function dest(r)
  local buf = ffi.new("char[300]")
  lib.socks_format_dest(r, buf, 300)
  return ffi.string(buf)
end

describe("SOCKS5 greeting", function()
  it("asks for more until the methods are all there", function()
    for _, s in ipairs({ "", "\5", "\5\2", "\5\2\0" }) do assert.are.equal("need", (greeting(s))) end
  end)

  it("finds no-auth among the methods and says how many bytes it used", function()
    local st, used, noauth = greeting("\5\2\2\0extra")
    assert.are.equal("ok", st)
    assert.are.equal(4, used)
    assert.is_true(noauth)
    local userpass
    st, used, noauth, userpass = greeting("\5\1\2")
    assert.are.equal("ok", st)
    assert.is_false(noauth)
    assert.is_true(userpass)
  end)

  it("refuses another version and an empty method list", function()
    local st, err = greeting("\4\1\0")
    assert.are.equal("err", st)
    assert.matches("version", err)
    st, err = greeting("GET / HTTP/1.1\r\n")
    assert.are.equal("err", st)
    st, err = greeting("\5\0")
    assert.are.equal("err", st)
    assert.matches("no method", err)
  end)
end)

describe("SOCKS5 username/password (RFC 1929)", function()
  local function auth(s)
    local used, user, pass = ffi.new("size_t[1]"), ffi.new("char[256]"), ffi.new("char[256]")
    local err = ffi.new("const char *[1]")
    local rc = lib.socks_parse_auth(ffi.cast("const uint8_t *", s), #s, used, user, pass, err)
    if rc == -1 then return "err", ffi.string(err[0]) end
    if rc == 0 then return "need" end
    return "ok", tonumber(used[0]), ffi.string(user), ffi.string(pass)
  end

  it("parses user and password, empty or full-length passwords included", function()
    local st, used, u, p = auth("\1\5alice\6secret+rest")
    assert.are.same({ "ok", 14, "alice", "secret" }, { st, used, u, p })
    st, used, u, p = auth("\1\1b\0")
    assert.are.same({ "ok", 4, "b", "" }, { st, used, u, p })
    local long = string.rep("p", 255)
    st, used, u, p = auth("\1\1c\255" .. long)
    assert.are.same({ "ok", 259, "c", long }, { st, used, u, p })
  end)

  it("refuses a NUL byte in the username or password (the engine compares C strings)", function()
    local st, err = auth("\1\11alice\0admin\6secret")
    assert.are.same({ "err", "username/password request with a NUL byte" }, { st, err })
    st, err = auth("\1\5alice\11secret\0junk")
    assert.are.same({ "err", "username/password request with a NUL byte" }, { st, err })
  end)

  it("asks for more at every cut", function()
    local s = "\1\5alice\6secret"
    for n = 0, #s - 1 do assert.are.equal("need", (auth(s:sub(1, n))), "cut at " .. n) end
  end)

  it("refuses another version and an empty username", function()
    local st, err = auth("\5\5alice\6secret")
    assert.are.equal("err", st)
    assert.matches("version", err)
    st, err = auth("\1\0\6secret")
    assert.are.equal("err", st)
    assert.matches("empty username", err)
  end)
end)

describe("SOCKS5 request", function()
  local v4 = "\5\1\0\1\127\0\0\1\0\80"
  local v6 = "\5\1\0\4" .. string.rep("\0", 15) .. "\1" .. "\1\187"
  local dom = "\5\1\0\3\11example.com\1\187"

  it("parses IPv4, IPv6 and domain addresses", function()
    local st, used, r = request(v4 .. "data")
    assert.are.equal("ok", st)
    assert.are.equal(10, used)
    assert.are.equal("127.0.0.1:80", dest(r))
    st, used, r = request(v6)
    assert.are.equal(22, used)
    assert.are.equal("[::1]:443", dest(r))
    st, used, r = request(dom)
    assert.are.equal(18, used)
    assert.are.equal(3, r.atyp)
    assert.are.equal("example.com:443", dest(r))
  end)

  it("asks for more at every cut short of the whole request", function()
    for _, s in ipairs({ v4, v6, dom }) do
      for n = 0, #s - 1 do assert.are.equal("need", (request(s:sub(1, n))), "cut at " .. n) end
    end
  end)

  it("returns the command so the caller can answer BIND and UDP", function()
    local st, _, r = request("\5\2\0\1\1\2\3\4\0\1")
    assert.are.equal("ok", st)
    assert.are.equal(2, r.cmd)
    st, _, r = request("\5\3\0\1\1\2\3\4\0\1")
    assert.are.equal(3, r.cmd)
  end)

  it("refuses a bad version, reserved byte, address type, empty or NUL-holding domain", function()
    local cases = {
      { "\4\1\0\1\1\2\3\4\0\1", "version" },
      { "\5\1\1\1\1\2\3\4\0\1", "reserved" },
      { "\5\1\0\2\1\2\3\4\0\1", "address type" },
      { "\5\1\0\0\1\2\3\4\0\1", "address type" },
      { "\5\1\0\3\0\0\80", "empty domain" },
      { "\5\1\0\3\3a\0b\0\80", "NUL" },
    }
    for _, c in ipairs(cases) do
      local st, err = request(c[1])
      assert.are.equal("err", st)
      assert.matches(c[2], err)
    end
  end)

  it("takes the longest domain (255 bytes)", function()
    local host = string.rep("a", 255)
    local st, used, r = request("\5\1\0\3\255" .. host .. "\0\80")
    assert.are.equal("ok", st)
    assert.are.equal(262, used)
    assert.are.equal(host, ffi.string(r.host))
  end)

  it("re-encodes what it parsed byte for byte (the EagerSocks header)", function()
    for _, s in ipairs({ v4, v6, dom }) do
      local _, used, r = request(s)
      local out = ffi.new("uint8_t[262]")
      local n = lib.socks_encode_request(out, r)
      assert.are.equal(used, tonumber(n))
      assert.are.equal(s, ffi.string(out, n))
    end
  end)

  it("encodes replies as 05 REP 00 01 0.0.0.0:0", function()
    local out = ffi.new("uint8_t[10]")
    lib.socks_encode_reply(out, 7)
    assert.are.equal("\5\7\0\1\0\0\0\0\0\0", ffi.string(out, 10))
  end)

  it("survives random bytes (bounded random walk)", function()
    math.randomseed(11)
    for _ = 1, 5000 do
      local n = math.random(0, 40)
      local t = { "\5" }
      for i = 2, n do t[i] = string.char(math.random(0, 255)) end
      local st = request(table.concat(t))
      assert.is_true(st == "ok" or st == "need" or st == "err")
    end
  end)
end)

describe("destination names", function()
  local function check(name)
    local buf = ffi.new("char[256]")
    ffi.copy(buf, name)
    local err = ffi.new("const char *[1]")
    if lib.socks_check_name(buf, err) == -1 then return nil, ffi.string(err[0]) end
    return ffi.string(buf)
  end

  it("are normalised: lower case, one trailing dot dropped", function()
    assert.are.equal("db.internal.corp", check("db.internal.corp."))
    assert.are.equal("evil.example", check("Evil.EXAMPLE."))
    assert.are.equal("_sip._tcp.example-1.org", check("_sip._tcp.Example-1.org"))
    assert.are.equal("localhost", check("localhost"))
    assert.are.equal(string.rep("a", 63) .. ".b", check(string.rep("a", 63) .. ".b"))
  end)

  it("are refused with a reason when they hold anything but a host name", function()
    for _, bad in ipairs({ "", ".", "a..b", ".a", "a.b..", "a b", "a\rb", "a\nb", "a\27b", "a/b",
        "a:b", "a%b", "a\\b", "caf\195\169", string.rep("a", 64) .. ".b",
        string.rep("abcdefghi.", 25) .. "abcd" }) do
      local ok, err = check(bad)
      assert.is_nil(ok, bad)
      assert.is_truthy(err:find("name"), err)
    end
    -- 253 bytes is the most; a trailing dot does not count
    local long = string.rep("abcdefghi.", 25) .. "abc"
    assert.are.equal(253, #long)
    assert.are.equal(long, check(long .. "."))
  end)
end)
