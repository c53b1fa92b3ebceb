-- The client's one local port speaks SOCKS5, SOCKS4/4a and HTTP CONNECT, told apart by the
-- first byte (engine/client.c, engine/httpreq.c): real clients (curl, wget, git) through it to
-- HTTP and HTTPS destinations, proxy logins, and the answers bad HTTP gets.
local H = require("spec.helper")

describe("the local port", function()
  local dir, pki, http, https_port, www
  H.fixture({ "http" }, function(...) dir, pki, http = ... end)
  H.dump_on_failure()

  -- Origins: python3's http.server over dir/www (it ignores a query string, so git's dumb HTTP
  -- finds info/refs), with a 1 MiB file and a bare repository; /echo-head answers with the
  -- request line and headers it got, POST with the SHA-256 of the body. One over TLS, one plain.
  local http_port
  setup(function()
    www = dir .. "/www"
    local out, code = H.sh("mkdir -p " .. www .. " && head -c 1048576 /dev/urandom >" .. www ..
      "/blob && cd " .. dir .. " && git init -q src && cd src && echo tunnelled >README && " ..
      "git add README && git -c user.name=t -c user.email=t@example.org commit -qm first && " ..
      "git clone -q --bare . " .. www .. "/repo.git && cd " .. www .. "/repo.git && " ..
      "git update-server-info")
    assert(code == 0, out)
    H.write(dir .. "/origin.py", table.concat({
      "import functools, hashlib, http.server, ssl, sys",
      "class H(http.server.SimpleHTTPRequestHandler):",
      "    protocol_version = 'HTTP/1.1'",
      "    def answer(self, body):",
      "        self.send_response(200)",
      "        self.send_header('Content-Length', str(len(body)))",
      "        self.end_headers()",
      "        self.wfile.write(body)",
      "    def do_GET(self):",
      "        if self.path == '/echo-head':",
      "            return self.answer((self.requestline + '\\n' + str(self.headers)).encode())",
      "        return super().do_GET()",
      "    def do_POST(self):",
      "        body = self.rfile.read(int(self.headers.get('Content-Length', '0')))",
      "        self.answer(hashlib.sha256(body).hexdigest().encode())",
      "srv = http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])),",
      "    functools.partial(H, directory=sys.argv[2]))",
      "if len(sys.argv) > 3:",
      "    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)",
      "    ctx.load_cert_chain(sys.argv[3], sys.argv[4])",
      "    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)",
      "srv.serve_forever()", "" }, "\n"))
    https_port, http_port = H.free_port(), H.free_port()
    H.spawn("https", { "python3", dir .. "/origin.py", tostring(https_port), www, pki.server_cert,
      pki.server_key }, dir .. "/https.log")
    H.spawn("origin", { "python3", dir .. "/origin.py", tostring(http_port), www }, dir .. "/origin.log")
    H.wait_for(function() return H.connectable(https_port) and H.connectable(http_port) end, 10,
      "the origins")
  end)

  local function sha(cmd)
    local out = H.sh(cmd .. " | sha256sum")
    return out:match("^(%x+)")
  end

  it("carries curl through HTTP CONNECT to HTTP and HTTPS destinations, byte for byte", function()
    local t = H.tunnel(dir, pki)
    local proxy = "http://127.0.0.1:" .. t.socks_port
    local direct = sha("curl -sS http://127.0.0.1:" .. http .. "/bytes/3000000")
    assert.are.equal(direct, sha("curl -sS -p -x " .. proxy .. " http://localhost:" .. http ..
      "/bytes/3000000"))
    local out, code = H.sh("curl -sS -o /dev/null -w '%{http_code} %{http_connect}' --cacert " ..
      pki.ca .. " -x " .. proxy .. " https://localhost:" .. https_port .. "/blob")
    assert.are.equal(0, code, out)
    assert.are.equal("200 200", out)
    assert.are.equal(sha("cat " .. www .. "/blob"), sha("curl -sS --cacert " .. pki.ca .. " -x " ..
      proxy .. " https://localhost:" .. https_port .. "/blob"))
    -- the same [sock] lines as SOCKS5 sessions: one per request, by name
    assert.are.equal(2, H.count(t.clog, H.LOG.sock_open .. "localhost:" .. https_port .. " "))
    H.stop_tunnel(t)
  end)

  it("carries wget and git clone through https_proxy", function()
    local t = H.tunnel(dir, pki)
    local env = "https_proxy=http://127.0.0.1:" .. t.socks_port .. " no_proxy= "
    local out, code = H.sh("cd " .. dir .. " && " .. env .. "wget -q -O wget.blob --ca-certificate=" ..
      pki.ca .. " https://localhost:" .. https_port .. "/blob")
    assert.are.equal(0, code, out)
    assert.are.equal(sha("cat " .. www .. "/blob"), sha("cat " .. dir .. "/wget.blob"))
    out, code = H.sh("cd " .. dir .. " && rm -rf clone && " .. env .. "GIT_SSL_CAINFO=" .. pki.ca ..
      " git clone -q https://localhost:" .. https_port .. "/repo.git clone && cat clone/README")
    assert.are.equal(0, code, out)
    assert.are.equal("tunnelled\n", out)
    assert.is_true(H.count(t.clog, H.LOG.sock_open .. "localhost:" .. https_port .. " ") >= 2)
    H.stop_tunnel(t)
  end)

  it("carries SOCKS4 and SOCKS4a clients", function()
    local t = H.tunnel(dir, pki)
    local body, code = H.sh("curl -sS --socks4 127.0.0.1:" .. t.socks_port .. " http://127.0.0.1:" .. http .. "/")
    assert.are.equal(0, code, body)
    assert.are.equal(H.HELLO, body)
    body, code = H.sh("curl -sS --socks4a 127.0.0.1:" .. t.socks_port .. " http://localhost:" .. http .. "/")
    assert.are.equal(0, code, body)
    assert.are.equal(H.HELLO, body)
    assert.are.equal(1, H.count(t.clog, H.LOG.sock_open .. "localhost:" .. http .. " "))
    -- BIND is not served: 5b at once
    local c = H.connect(t.socks_port)
    c:send("\4\2\0\80\127\0\0\1\0")
    assert.are.equal("\0\91\0\0\0\0\0\0", (H.recv(c, 8)))
    c:close()
    H.stop_tunnel(t)
  end)

  it("asks HTTP clients for -socks.auth's login, and refuses SOCKS4, which has none", function()
    H.write(dir .. "/login", "alice:s3cret\n")
    local t = H.tunnel(dir, pki, { client = { ["socks.auth"] = dir .. "/login" } })
    local proxy = " -p -x http://127.0.0.1:" .. t.socks_port .. " http://localhost:" .. http .. "/"
    local body, code = H.sh("curl -sS -U alice:s3cret" .. proxy)
    assert.are.equal(0, code, body)
    assert.are.equal(H.HELLO, body)
    for _, who in ipairs({ "-U alice:wrong", "-U bob:s3cret", "" }) do
      local out = H.sh("curl -s -i " .. who .. proxy)
      assert.matches("^HTTP/1%.1 407 Proxy Authentication Required\r\n", out)
      assert.matches('\r\nProxy%-Authenticate: Basic realm="tunnels"\r\n', out)
    end
    local _, rc = H.sh("curl -sS --socks4 127.0.0.1:" .. t.socks_port .. " http://127.0.0.1:" .. http .. "/")
    assert.are_not.equal(0, rc)
    assert.are.equal(1, H.count(t.clog, "%[socks%] .*SOCKS4 refused: %-socks%.auth asks for a password"))
    assert.are.equal(0, H.count(t.clog, "s3cret"))
    H.stop_tunnel(t)
  end)

  it("answers bad HTTP with a status and its reason, and goes on", function()
    local t = H.tunnel(dir, pki, { client = { ["socks.handshake.sec"] = 2 } })
    local function ask(bytes)
      local c = H.connect(t.socks_port)
      c:send(bytes)
      local out, how = H.recv_all(c, 5)
      c:close()
      return out, how
    end
    local cases = {
      { "GARBAGE\r\n\r\n", "400 Bad Request", "request line is not METHOD target HTTP/1.x" },
      { "GET / HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request", "not a proxy request" },
      { "CONNECT bad_name!:443 HTTP/1.1\r\n\r\n", "400 Bad Request", "name holds a byte" },
      { "CONNECT a.example:443 HTTP/1.1\r\nX : y\r\n\r\n", "400 Bad Request", "header name holds" },
      { "CONNECT a.example:443 HTTP/1.1\r\nX: y\r\n z\r\n\r\n", "400 Bad Request", "folded" },
      { "CONNECT a.example:0 HTTP/1.1\r\n\r\n", "400 Bad Request", "port is not a number" },
      { "CONNECT a.example:443 HTTP/2.0\r\n\r\n", "400 Bad Request", "version is not" },
      { "CONNECT a.example:443 HTTP/1.1\r\nX: " .. ("a"):rep(9000) .. "\r\n\r\n",
        "431 Request Header Fields Too Large", "longer than 8 KiB" },
      { "POST http://localhost:" .. http .. "/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "411 Length Required", "send its Content-Length" },
      { "POST http://localhost:" .. http .. "/ HTTP/1.1\r\nContent-Length: 3\r\n" ..
        "Transfer-Encoding: chunked\r\n\r\n", "400 Bad Request", "length unclear" },
      { "POST http://localhost:" .. http .. "/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "400 Bad Request", "more than one Content-Length" },
      { "GET http://user@localhost:" .. http .. "/ HTTP/1.1\r\n\r\n", "400 Bad Request", "user name" },
    }
    for _, case in ipairs(cases) do
      local out, how = ask(case[1])
      assert.are.equal("closed", how)
      assert.matches("^HTTP/1%.1 " .. case[2]:gsub("%p", "%%%0") .. "\r\n", out)
      assert.is_truthy(out:find("\r\n\r\ntunnels: [^\n]*" .. case[3]:gsub("%p", "%%%0") .. "[^\n]*\n$"), out)
    end
    -- a head that trickles in for longer than -socks.handshake.sec: 408
    local c = H.connect(t.socks_port)
    local t0 = H.now()
    for _, piece in ipairs({ "CONN", "ECT a.exa", "mple:443 HT" }) do
      c:send(piece)
      H.sleep(0.8)
    end
    local out = H.recv_all(c, 5)
    c:close()
    assert.matches("^HTTP/1%.1 408 Request Timeout\r\n", out)
    assert.is_true(H.now() - t0 < 4.5, "408 within the handshake's 2 s")
    -- neither SOCKS nor HTTP: closed without a word
    local rest, how = ask("\1\2\3")
    assert.are.equal("", rest)
    assert.are.equal("closed", how) -- at once, not at the handshake's end
    assert.are.equal(1, H.count(t.clog, "%[socks%] .*not SOCKS5, SOCKS4 or HTTP %(first byte 0x01%)"))
    -- and the port serves on
    assert.is_true(H.alive(t.client_pid))
    H.assert_hello(t.socks_port, http, "after bad HTTP")
    assert.are.equal(#cases + 1, H.count(t.clog, "%[http%] 127%.0%.0%.1:%d+: "))
    H.stop_tunnel(t)
  end)

  it("forwards plain http:// requests in origin form, hop-by-hop headers left out", function()
    H.write(dir .. "/login", "alice:s3cret\n")
    local t = H.tunnel(dir, pki, { client = { ["socks.auth"] = dir .. "/login" } })
    local x = " -U alice:s3cret -x http://127.0.0.1:" .. t.socks_port .. " "
    local direct = sha("curl -sS http://127.0.0.1:" .. http .. "/bytes/3000000")
    assert.are.equal(direct, sha("curl -sS" .. x .. "http://localhost:" .. http .. "/bytes/3000000"))
    -- what the origin saw: origin form, its Host, no proxy credentials, no hop-by-hop header
    local head = H.sh("curl -sS" .. x .. "-H 'Connection: keep-alive, X-Hop' -H 'X-Hop: 1' " ..
      "-H 'Keep-Alive: 5' -H 'X-End: 2' 'http://localhost:" .. http_port .. "/echo-head'")
    assert.matches("^GET /echo%-head HTTP/1%.1\n", head)
    assert.matches("\nHost: localhost:" .. http_port .. "\n", head)
    assert.matches("\nX%-End: 2\n", head)
    assert.matches("\nConnection: close\n", head)
    for _, gone in ipairs({ "Proxy%-Authorization", "X%-Hop", "Keep%-Alive", "Proxy%-Connection" }) do
      assert.is_nil(head:find("\n" .. gone .. ":"), gone .. " reached the origin: " .. head)
    end
    -- a body with its Content-Length arrives whole
    H.sh("head -c 300000 /dev/urandom >" .. dir .. "/post.bin")
    local posted = H.sh("curl -sS" .. x .. "--data-binary @" .. dir .. "/post.bin http://localhost:" ..
      http_port .. "/upload")
    assert.are.equal(sha("cat " .. dir .. "/post.bin"), posted)
    H.stop_tunnel(t)
  end)

  it("carries wget and git clone through http_proxy, and keeps two hosts apart on one connection", function()
    local t = H.tunnel(dir, pki)
    local env = "http_proxy=http://127.0.0.1:" .. t.socks_port .. " no_proxy= "
    local out, code = H.sh("cd " .. dir .. " && " .. env .. "wget -q -O http.blob http://localhost:" ..
      http_port .. "/blob")
    assert.are.equal(0, code, out)
    assert.are.equal(sha("cat " .. www .. "/blob"), sha("cat " .. dir .. "/http.blob"))
    out, code = H.sh("cd " .. dir .. " && rm -rf clone2 && " .. env .. "git clone -q http://localhost:" ..
      http_port .. "/repo.git clone2 && cat clone2/README")
    assert.are.equal(0, code, out)
    assert.are.equal("tunnelled\n", out)
    -- curl asks for keep-alive, for two hosts in turn: each request gets its own session, to its
    -- own host (the answers say Connection: close)
    out = H.sh("curl -sS -x http://127.0.0.1:" .. t.socks_port .. " http://localhost:" .. http_port ..
      "/echo-head http://127.0.0.1:" .. http .. "/")
    assert.matches("^GET /echo%-head HTTP/1%.1\n.*hello from tn%-dest\n$", out)
    -- a client that pipelines a second request, to another host, on the same connection: the
    -- first is answered, the second reaches no one (it would carry the first host's cookies)
    local before = H.count(t.clog, H.LOG.sock_open)
    local c = H.connect(t.socks_port)
    c:send("GET http://localhost:" .. http_port .. "/echo-head HTTP/1.1\r\nHost: x\r\n\r\n" ..
      "GET http://127.0.0.1:" .. http .. "/ HTTP/1.1\r\nHost: y\r\n\r\n")
    local answer, how = H.recv_all(c, 10)
    c:close()
    assert.are.equal("closed", how)
    assert.matches("^HTTP/1%.1 200 OK\r\n", answer)
    assert.is_nil(answer:find("hello from tn-dest", 1, true), answer)
    assert.are.equal(1, select(2, answer:gsub("HTTP/1%.1 200", "")))
    assert.are.equal(before + 1, H.count(t.clog, H.LOG.sock_open))
    H.stop_tunnel(t)
  end)

  it("answers 502 with the reason when the destination cannot be reached, tunnelled or direct", function()
    H.write(dir .. "/route502.lua", [[
      return { route = function(req, cfg)
        if req.port == 7 then return "direct" end
        return "tunnel"
      end }]])
    local t = H.tunnel(dir, pki, { client = { ["lua.script"] = dir .. "/route502.lua" } })
    local dead = H.free_port()
    for _, url in ipairs({ "http://127.0.0.1:" .. dead .. "/", "http://127.0.0.1:7/",
      "http://no-such-host.invalid/" }) do
      local out = H.sh("curl -s -i -x http://127.0.0.1:" .. t.socks_port .. " " .. url)
      assert.matches("^HTTP/1%.1 502 Bad Gateway\r\n", out)
      assert.matches("\r\n\r\ntunnels: [^\n]*: [^\n]+\n$", out)
    end
    local out = H.sh("curl -s -x http://127.0.0.1:" .. t.socks_port .. " http://127.0.0.1:" .. dead .. "/")
    assert.are.equal("tunnels: 127.0.0.1:" .. dead .. ": reset by peer: connection refused\n", out)
    out = H.sh("curl -s -x http://127.0.0.1:" .. t.socks_port .. " http://127.0.0.1:7/")
    assert.matches("^tunnels: 127%.0%.0%.1:7: connect: ", out)
    H.assert_hello(t.socks_port, http, "after the 502s")
    H.stop_tunnel(t)
  end)

  it("puts HTTP and SOCKS4 requests through the route hook: a block is 403 with the reason", function()
    H.write(dir .. "/route.lua", [[
      return { route = function(req, cfg)
        if req.host == "blocked.example" then return "block", "no " .. req.host end
        return "tunnel"
      end }]])
    local t = H.tunnel(dir, pki, { client = { ["lua.script"] = dir .. "/route.lua" } })
    local c = H.connect(t.socks_port)
    c:send("CONNECT blocked.example:80 HTTP/1.1\r\nHost: blocked.example:80\r\n\r\n")
    local out = H.recv_all(c, 5)
    c:close()
    assert.matches("^HTTP/1%.1 403 Forbidden\r\n", out)
    assert.matches("\r\n\r\ntunnels: blocked%.example:80 blocked: no blocked%.example\n$", out)
    local _, code = H.sh("curl -sS --socks4a 127.0.0.1:" .. t.socks_port .. " http://blocked.example/")
    assert.are_not.equal(0, code)
    assert.are.equal(2, H.count(t.clog, "blocked%.example:80 blocked: no blocked%.example"))
    H.assert_hello(t.socks_port, http, "an allowed name")
    H.stop_tunnel(t)
  end)
end)
