-- The local port's other parsers, byte for byte through the FFI (engine/httpreq.c, socks.c):
-- SOCKS4/4a requests, HTTP proxy heads read strictly, a request rewritten to origin form.
local ffi = require("ffi")
local lib = require("spec.ffi")

local function parse(text)
  local r, used, err = ffi.new("struct httpreq"), ffi.new("size_t[1]"), ffi.new("const char *[1]")
  local rc = lib.httpreq_parse(text, #text, used, r, err)
  return rc, r, tonumber(used[0]), err[0] ~= nil and ffi.string(err[0]) or nil
end

local function origin(text)
  local rc, r, used = parse(text)
  assert(rc == 1, "not parsed")
  local out = ffi.new("uint8_t[?]", used + 512)
  return ffi.string(out, lib.httpreq_origin_head(text, used, r, out, used + 512))
end

describe("SOCKS4", function()
  local function v4(bytes)
    local r, used, err = ffi.new("struct socks_req"), ffi.new("size_t[1]"), ffi.new("const char *[1]")
    local rc = lib.socks_parse_v4(bytes, #bytes, used, r, err)
    return rc, r, tonumber(used[0]), err[0] ~= nil and ffi.string(err[0]) or nil
  end

  it("reads SOCKS4 and SOCKS4a requests, and asks for more until the user id ends", function()
    local rc, r, used = v4("\4\1\0\80\10\0\0\1alice\0rest")
    assert.are.same({ 1, 1, 80, "10.0.0.1", 14 }, { rc, r.atyp, r.port, ffi.string(r.host), used })
    rc, r, used = v4("\4\1\1\187\0\0\0\9\0example.org\0")
    assert.are.same({ 1, 3, 443, "example.org", 21 }, { rc, r.atyp, r.port, ffi.string(r.host), used })
    assert.are.equal(0, (v4("\4\1\0\80\10\0\0\1ali")))
    assert.are.equal(0, (v4("\4\1\1\187\0\0\0\9\0example")))
    local _, _, _, err = v4("\4\1\0\80\10\0\0\1" .. ("u"):rep(300))
    assert.matches("user id longer than 255", err)
    _, _, _, err = v4("\4\1\0\80\0\0\0\1\0\0")
    assert.matches("empty name", err)
    _, _, _, err = v4("\5\1\0\80\10\0\0\1\0")
    assert.matches("not a SOCKS4 request", err)
  end)
end)

describe("HTTP proxy heads", function()
  it("read CONNECT with its authority, a login, and the head's length", function()
    local rc, r, used = parse("CONNECT Example.ORG:443 HTTP/1.1\r\nHost: x\r\n" ..
      "Proxy-Authorization: Basic YWxpY2U6czNjcjp0\r\n\r\nTLS bytes")
    assert.are.same({ 1, "CONNECT", "example.org", 443, 3, 1, "alice", "s3cr:t" },
      { rc, ffi.string(r.method), ffi.string(r.dest.host), r.dest.port, r.dest.atyp, r.has_auth,
        ffi.string(r.user), ffi.string(r.pass) })
    assert.are.equal(#"CONNECT Example.ORG:443 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: Basic YWxpY2U6czNjcjp0\r\n\r\n", used)
    rc, r = parse("CONNECT [::1]:8443 HTTP/1.0\n\n")
    assert.are.same({ 1, 4, "::1", 8443 }, { rc, r.dest.atyp, ffi.string(r.dest.host), r.dest.port })
    rc, r = parse("CONNECT 10.1.2.3:22 HTTP/1.1\r\n\r\n")
    assert.are.same({ 1, 1, "10.1.2.3" }, { rc, r.dest.atyp, ffi.string(r.dest.host) })
  end)

  it("ask for more until the blank line, and refuse what a server must refuse", function()
    assert.are.equal(0, (parse("CONNECT a.example:443 HTTP/1.1\r\nHost: a")))
    local cases = {
      { "CONNECT a.example HTTP/1.1\r\n\r\n", 400, "no port" },
      { "CONNECT a.example:65536 HTTP/1.1\r\n\r\n", 400, "port is not a number" },
      { "CONNECT [1.2.3.4]:1 HTTP/1.1\r\n\r\n", 400, "not IPv6" },
      { "CONNECT a b:1 HTTP/1.1\r\n\r\n", 400, "version is not" },
      { "CONNECT a.example:1 HTTP/1.1\r\nX : y\r\n\r\n", 400, "whitespace before" },
      { "CONNECT a.example:1 HTTP/1.1\r\nX: y\r\n\tz\r\n\r\n", 400, "folding" },
      { "CONNECT a.example:1 HTTP/1.1\r\nX: \1\r\n\r\n", 400, "control byte" },
      { "CONNECT a.example:1 HTTP/1.1\r\nProxy-Authorization: Digest x\r\n\r\n", 400, "not Basic" },
      { "CONNECT a.example:1 HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U=\r\n\r\n", 400, "user:password" },
      { "CONNECT a.example:1 HTTP/1.1\r\nProxy-Authorization: Basic YQBiOmM=\r\n\r\n", 400, "user:password" },
      { "CONNECT a.example:1 HTTP/1.1\r\nProxy-Authorization: Basic !!!!\r\n\r\n", 400, "not base64" },
      { "GET / HTTP/1.1\r\n\r\n", 400, "not a proxy request" },
      { "POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "chunks" },
      { "POST http://a.example/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400, "more than one" },
      { "POST http://a.example/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "not a number" },
      { "GET http://u:p@a.example/ HTTP/1.1\r\n\r\n", 400, "user name" },
      { "CONNECT a.example:1 HTTP/1.1\r\nX: " .. ("a"):rep(9000), 431, "longer than 8 KiB" },
    }
    for _, c in ipairs(cases) do
      local rc, _, _, err = parse(c[1])
      assert.are.equal(c[2], rc, c[1])
      assert.is_truthy(err and err:find(c[3], 1, true), tostring(err) .. " for " .. c[1]:sub(1, 60))
    end
  end)

  it("rewrite a request to forward: origin form, its Host, no hop-by-hop header, Connection: close", function()
    assert.are.equal("GET /a/b?c=d HTTP/1.1\r\nHost: Example.org:8080\r\nAccept: */*\r\n" ..
      "Connection: close\r\n\r\n", origin("GET http://Example.org:8080/a/b?c=d HTTP/1.1\r\n" ..
      "Host: wrong\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\nProxy-Authorization: Basic YTpi\r\n\r\n"))
    assert.are.equal("HEAD / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
      origin("HEAD http://a.example HTTP/1.0\r\n\r\n"))
    assert.are.equal("GET /?q HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
      origin("GET http://a.example?q HTTP/1.1\r\n\r\n"))
    -- the names Connection lists are hop-by-hop too
    assert.are.equal("POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 2\r\nConnection: close\r\n\r\n",
      origin("POST http://a.example/x HTTP/1.1\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\n" ..
      "Keep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\n"))
    local rc, r = parse("PUT http://[::1]:81/ HTTP/1.1\r\nContent-Length: 12\r\n\r\n")
    assert.are.same({ 1, 1, 12, 4, 81 }, { rc, r.absolute, tonumber(r.body), r.dest.atyp, r.dest.port })
  end)

  it("write error responses that say how long their reason is", function()
    local out = ffi.new("char[1024]")
    local s = ffi.string(out, lib.httpreq_error(407, "login refused", out, 1024))
    assert.are.equal("HTTP/1.1 407 Proxy Authentication Required\r\nContent-Type: text/plain\r\n" ..
      "Content-Length: 23\r\nConnection: close\r\nProxy-Authenticate: Basic realm=\"tunnels\"\r\n\r\n" ..
      "tunnels: login refused\n", s)
    s = ffi.string(out, lib.httpreq_error(502, ("x"):rep(2000), out, 1024))
    local len = tonumber(s:match("Content%-Length: (%d+)"))
    assert.are.equal(len, #s - #s:match("^(.-\r\n\r\n)"))
    assert.is_true(#s < 1024)
  end)
end)
