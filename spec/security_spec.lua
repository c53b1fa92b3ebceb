-- Who gets in, and what bad input costs: mutual TLS refusals, server-name checks, and ReMux
-- protocol errors that close one connection while the others carry on.
local H = require("spec.helper")
H.dump_on_failure()

local function be16(n) return string.char(math.floor(n / 256) % 256, n % 256) end
local function frame(sid, payload) return be16(sid) .. be16(#payload) .. payload end
local function header(host, port) return "\5\1\0\3" .. string.char(#host) .. host .. be16(port) end

-- Reads one frame: sid, payload (nil on close or timeout).
local function read_frame(c, timeout)
  local h = H.recv(c, 4, timeout)
  if not h or #h < 4 then return nil end
  local sid, len = h:byte(1) * 256 + h:byte(2), h:byte(3) * 256 + h:byte(4)
  local p = len > 0 and H.recv(c, len) or ""
  return sid, p
end

-- The next frame for a session (control frames, such as the server's first PING, skipped).
local function read_data(c)
  for _ = 1, 10 do
    local sid, p = read_frame(c)
    if sid ~= 0 then return sid, p end
  end
end

describe("mutual TLS", function()
  local dir, pki, http, t

  H.fixture({ "http" }, function(...)
    dir, pki, http = ...
    t = H.tunnel(dir, pki)
  end)

  -- A second client with these TLS flags; returns its socks port and log path.
  local function client(flags)
    local port = H.free_port()
    local log = dir .. "/c" .. port .. ".log"
    local argv = { H.bin, "-role=client", "-server.addr=127.0.0.1:" .. t.server_port,
      "-client.addr=127.0.0.1:" .. port, "-sla.log.path=" .. log }
    for _, f in ipairs(flags) do argv[#argv + 1] = f end
    local pid = H.spawn("client" .. port, argv, log .. ".out")
    H.wait_for(function() return H.count(log, "client: SOCKS5 on") > 0 end, 10, "the client to listen")
    return port, log, pid
  end

  -- The client learns of a refusal by the server's TLS alert or by a reset, whichever comes
  -- first (TLS 1.3 finishes the client's side of the handshake before the server checks it).
  local client_lost = "%[erro%] %[conn%] %- %x+ = %d+ "

  local function refused(flags, client_pat, server_pat)
    local before = server_pat and H.count(t.slog, server_pat) or 0
    local port, log, pid = client(flags)
    local body, code = H.curl(port, "http://localhost:" .. http .. "/")
    assert.are_not.equal(0, code, body)
    H.wait_for(function() return H.count(log, client_pat) >= 1 end, 5, "the client's error line")
    if server_pat then
      H.wait_for(function() return H.count(t.slog, server_pat) > before end, 5, "the server's error line")
    end
    H.stop(pid)
    -- and it cost nothing else
    H.assert_hello(t.socks_port, http)
  end

  it("refuses a client without a certificate", function()
    refused({ "-tls.client.ca=" .. pki.ca },
      client_lost,
      "%[erro%] %[conn%] %- %x+ = %d+ tls handshake: .*peer did not return a certificate")
  end)

  it("refuses a client whose certificate comes from another CA", function()
    refused({ "-tls.client.ca=" .. pki.ca, "-tls.client.cert=" .. pki.other_cert, "-tls.client.key=" .. pki.other_key },
      client_lost,
      "%[erro%] %[conn%] %- %x+ = %d+ tls handshake: .*certificate verify failed")
  end)

  it("refuses a client whose certificate has expired", function()
    refused({ "-tls.client.ca=" .. pki.ca, "-tls.client.cert=" .. pki.expired_cert, "-tls.client.key=" .. pki.expired_key },
      client_lost,
      "%[erro%] %[conn%] %- %x+ = %d+ tls handshake: .*certificate verify failed %(certificate has expired%)")
  end)

  it("makes the client refuse a server its CA did not sign", function()
    refused({ "-tls.client.ca=" .. dir .. "/other-ca.pem", "-tls.client.cert=" .. pki.client_cert,
      "-tls.client.key=" .. pki.client_key },
      "%[erro%] %[conn%] %- %x+ = %d+ tls handshake: .*certificate verify failed", nil)
  end)

  it("makes the client refuse a server certificate for another name", function()
    refused({ "-tls.client.ca=" .. pki.ca, "-tls.client.cert=" .. pki.client_cert,
      "-tls.client.key=" .. pki.client_key, "-tls.client.name=tunnel.example.org" },
      "%[erro%] %[conn%] %- %x+ = %d+ tls handshake: .*certificate verify failed", nil)
  end)

  it("makes the client refuse to dial when it has no server name to check", function()
    -- ":port" has no host: OpenSSL would have checked no name at all, so any certificate of
    -- the CA (another client's, say) would have passed for the server's
    refused({ "-server.addr=:" .. t.server_port, "-tls.client.ca=" .. pki.ca,
      "-tls.client.cert=" .. pki.client_cert, "-tls.client.key=" .. pki.client_key },
      '%[erro%] %[pool%] cannot dial :%d+: no TLS for server name "" ', nil)
  end)

  -- A certificate's SHA-256 fingerprint as the server logs it (lower-case hex).
  local function fingerprint(pem)
    local out = H.sh("openssl x509 -in " .. pem .. " -noout -fingerprint -sha256")
    return (out:match("=([%x:]+)"):gsub(":", ""):lower())
  end

  it("says at info who connected (address, subject, fingerprint) and ties each session to it", function()
    local before = H.count(t.slog, H.LOG.conn_open)
    H.assert_hello(t.socks_port, http)
    local fp = fingerprint(pki.client_cert)
    local log = H.read(t.slog)
    -- the client's connection: accepted from its address, then identified by its certificate
    local id = log:match("%[info%] %[conn%] %+ (%x+) = %d+ from 127%.0%.0%.1:%d+\n")
    assert.is_truthy(id, log:sub(-2000))
    assert.is_true(H.count(t.slog, "%[info%] %[tls%] ~ " .. id .. " TLSv1%.3 [%w_]+ from 127%.0%.0%.1:%d+: " ..
      '"CN=tunnels client" sha256 ' .. fp .. "$") == 1)
    -- and the session by the connection it came on
    assert.is_true(H.count(t.slog, "%[info%] %[sock%] %+ localhost:" .. http .. " = %d+ on %x+$") >= 1)
    assert.is_true(H.count(t.slog, H.LOG.conn_open) >= before)
  end)

  it("tells the server's route hook which client asks", function()
    local fp = fingerprint(pki.client_cert)
    H.write(dir .. "/who.lua", [[
      return { route = function(req, cfg)
        if req.subject == "CN=tunnels client" and req.fingerprint == "]] .. fp .. [[" and
            req.peer:find("^127%.0%.0%.1:%d+$") and req.src:find("^%x+$") then
          return tunnels.default.route(req, cfg)
        end
        return "deny", "not for " .. tostring(req.subject)
      end }
    ]])
    local w = H.tunnel(dir, pki, { server = { ["lua.script"] = dir .. "/who.lua" } })
    H.assert_hello(w.socks_port, http)
    -- another certificate of the CA is told apart
    local port = H.free_port()
    local pid = H.spawn("client-who", { H.bin, "-role=client", "-server.addr=127.0.0.1:" .. w.server_port,
      "-client.addr=127.0.0.1:" .. port, "-sla.log.path=" .. dir .. "/who-c.log", "-tls.client.ca=" .. pki.ca,
      "-tls.client.cert=" .. pki.revoked_cert, "-tls.client.key=" .. pki.revoked_key }, dir .. "/who-c.log.out")
    H.wait_for(function() return H.connectable(port) end, 10, "the second client")
    local _, code = H.curl(port, "http://localhost:" .. http .. "/")
    assert.are_not.equal(0, code)
    H.wait_for(function() return H.count(w.slog, "denied: not for CN=revoked client") == 1 end, 5, "the denial")
    H.stop(pid)
    H.stop_tunnel(w)
  end)

  it("refuses a revoked client certificate (-tls.server.crl), and lets the others in", function()
    local r = H.tunnel(dir, pki, { server = { ["tls.server.crl"] = pki.crl } })
    H.assert_hello(r.socks_port, http) -- tunnels client: not revoked
    local port, log = H.free_port(), dir .. "/revoked-c.log"
    local pid = H.spawn("client-revoked", { H.bin, "-role=client", "-server.addr=127.0.0.1:" .. r.server_port,
      "-client.addr=127.0.0.1:" .. port, "-sla.log.path=" .. log, "-tls.client.ca=" .. pki.ca,
      "-tls.client.cert=" .. pki.revoked_cert, "-tls.client.key=" .. pki.revoked_key }, log .. ".out")
    H.wait_for(function() return H.connectable(port) end, 10, "the revoked client")
    local _, code = H.curl(port, "http://localhost:" .. http .. "/")
    assert.are_not.equal(0, code)
    H.wait_for(function() return H.count(r.slog, "%[conn%] %- %x+ = %d+ tls handshake: .*certificate revoked") >= 1 end,
      5, "the server's refusal")
    H.stop(pid)
    H.assert_hello(r.socks_port, http)
    H.stop_tunnel(r)
  end)

  it("on SIGHUP reads the CRL again and closes the connections of a certificate it now lists", function()
    H.sh("cp " .. pki.crl_none .. " " .. dir .. "/live-crl.pem")
    local r = H.tunnel(dir, pki, { server = { ["tls.server.crl"] = dir .. "/live-crl.pem" },
      client = { ["tls.client.cert"] = pki.revoked_cert, ["tls.client.key"] = pki.revoked_key } })
    H.assert_hello(r.socks_port, http) -- not revoked yet
    H.sh("cp " .. pki.crl .. " " .. dir .. "/live-crl.pem")
    H.sh("kill -HUP " .. r.server_pid)
    H.wait_for(function() return H.count(r.slog, "%[conn%] %- %x+ = %d+ its client certificate is revoked") >= 1 end,
      5, "the revoked certificate's connection closed")
    assert.are.equal(1, H.count(r.slog, "%[tls%] SIGHUP: %d+ connections of revoked certificates closed"))
    -- and its next dial is refused
    local _, code = H.curl(r.socks_port, "http://localhost:" .. http .. "/")
    assert.are_not.equal(0, code)
    H.wait_for(function() return H.count(r.slog, "tls handshake: .*certificate revoked") >= 1 end, 5, "the refusal")
    -- a CRL that does not load leaves the old one in force, logged
    H.write(dir .. "/live-crl.pem", "not a CRL\n")
    H.sh("kill -HUP " .. r.server_pid)
    H.wait_for(function() return H.count(r.slog, "%[main%] SIGHUP: TLS not reloaded, the old certificates stay: %-tls%.server%.crl") == 1 end,
      5, "the failed reload")
    H.stop_tunnel(r)
  end)

  it("lets a client in by name (localhost) as well as by address", function()
    local port, _, pid = client({ "-tls.client.ca=" .. pki.ca, "-tls.client.cert=" .. pki.client_cert,
      "-tls.client.key=" .. pki.client_key, "-tls.client.name=localhost" })
    H.assert_hello(port, http)
    H.stop(pid)
  end)
end)

describe("ReMux protocol errors", function()
  local echo, t

  H.fixture({ "echo" }, function(dir, _, echo_port)
    echo = echo_port
    t = H.tunnel(dir, nil, { tcp = true, no_client = true })
  end)

  -- A healthy raw ReMux connection with one session open to the echo destination.
  local function healthy()
    local c = H.connect(t.server_port)
    c:send(frame(1, header("localhost", echo) .. "ping?"))
    return c
  end

  local function echoed(c, what)
    local sid, p = read_data(c)
    assert.are.equal(1, sid, what)
    assert.are.equal("ping?", p, what)
  end

  local cases = {
    { "a WINDOW for a session never opened", frame(0, "\1\0\9\0\0\1\0"), "WINDOW for a session never opened" },
    { "an unknown control type", frame(0, "\9"), "unknown control frame type" },
    { "a control frame of the wrong length", frame(0, "\3\1\2"), "control frame has the wrong length" },
    { "an oversized control frame", frame(0, string.rep("\1", 40)), "control frame too long" },
    { "a session opened with an empty frame", frame(3, ""), "a session opened with an empty frame" },
    { "a malformed EagerSocks header", frame(1, "\4\1\0\1\127\0\0\1\0\80"), "not a SOCKS5 request" },
    { "an EagerSocks header cut short", frame(1, "\5\1\0\3\20abc"), "EagerSocks header longer than its frame" },
    { "a WINDOW for session 0", frame(0, "\1\0\0\0\0\1\0"), "WINDOW for session 0" },
  }
  for i, c in ipairs(cases) do
    it("close only the offending connection, logged at erro: " .. c[1], function()
      local good = healthy()
      echoed(good, "before")
      local bad = H.connect(t.server_port)
      bad:send(c[2])
      local _, how = H.recv_all(bad, 5)
      bad:close()
      assert.is_truthy(how == "closed" or how == "connection reset by peer", how)
      H.wait_for(function()
        return H.count(t.slog, "%[erro%] %[conn%] %- %x+ = %d+ protocol error: " .. c[3]:gsub("%p", "%%%0")) == 1
      end, 5, "the erro line for " .. c[1])
      -- the healthy connection still carries its session
      good:send(frame(1, "ping?"))
      echoed(good, "after " .. i)
      good:close()
    end)
  end

  it("refuse a session kind it does not speak with RESET, never its connection", function()
    local good = healthy()
    echoed(good, "before")
    -- BIND (2) and an unknown kind (9) on the healthy connection, each with data (UDP, 3, is
    -- spoken on plain TCP, where v2 is assumed; without ALPN remux/2 on TLS it is refused the
    -- same way: udp_spec)
    for i, cmd in ipairs({ 2, 9 }) do
      local sid = 1 + 2 * i
      good:send(frame(sid, "\5" .. string.char(cmd) .. "\0\1\127\0\0\1\0\53" .. "datagram"))
      local rsid, p
      for _ = 1, 10 do
        rsid, p = read_frame(good)
        if rsid == 0 and p:byte(1) == 2 then break end
      end
      assert.are.equal("\2" .. string.char(0, sid) .. "\6", p, "RESET(protocol error) for kind " .. cmd)
    end
    good:send(frame(1, "ping?"))
    echoed(good, "after the refusals")
    good:close()
    assert.are.equal(2, H.count(t.slog, "%[warn%] %[sock%] %- %?:53 = %d+ refused: session kind %d+ %(%a+%) is not spoken here"))
    assert.are.equal(1, H.count(t.slog, "session kind 2 %(BIND%)"))
    assert.are.equal(0, H.count(t.slog, "is not a CONNECT")) -- the connection error it was
  end)

  it("close a connection that sends data for a session after ending it", function()
    local c = H.connect(t.server_port)
    c:send(frame(1, header("localhost", echo) .. "x") .. frame(1, "") .. frame(1, "late"))
    local _, how = H.recv_all(c, 5)
    c:close()
    assert.is_truthy(how == "closed" or how == "connection reset by peer", how)
    H.wait_for(function() return H.count(t.slog, "%[erro%] %[conn%] %- %x+ = %d+ protocol error: data after the end of a session") == 1 end, 5, "erro line")
  end)

  it("answer PING with PONG carrying the same bytes", function()
    local c = H.connect(t.server_port)
    c:send(frame(0, "\3\1\2\3\4\5\6\7\8"))
    local pong
    for _ = 1, 3 do
      local sid, p = read_frame(c)
      if sid == 0 and p:byte(1) == 4 then pong = p break end
    end
    assert.are.equal("\4\1\2\3\4\5\6\7\8", pong)
    c:close()
  end)
end)

describe("ReMux flow control and keepalive", function()
  local echo, dir

  H.fixture({ "echo" }, function(d, _, echo_port)
    dir, echo = d, echo_port
  end)

  it("grows no window on a forged PONG: only an outstanding PING's answer is an RTT", function()
    local sha = H.dest(dir, "sha")
    local t = H.tunnel(dir, nil, { tcp = true, no_client = true })
    local c = H.connect(t.server_port)
    local ping
    for _ = 1, 10 do
      local sid, p = read_frame(c)
      if sid == 0 and p:byte(1) == 3 then ping = p:sub(2) break end
    end
    assert.is_truthy(ping, "the server's first PING")
    -- a PONG "200 ms" older than the PING: the RTT it claims sizes windows for a 200 ms path
    local v = 0
    for i = 1, 8 do v = v * 256 + ping:byte(i) end
    v = v - 200000
    local forged = {}
    for i = 8, 1, -1 do forged[i] = string.char(v % 256) v = math.floor(v / 256) end
    c:send(frame(0, "\4" .. table.concat(forged)))
    -- then 3 s of data up one session at 6.4 MB/s (64 KiB every 10 ms), which the destination
    -- keeps up with: the pace at which a window grows to its bandwidth-delay product
    local chunk, credit, sent = string.rep("u", 16000), 256 * 1024, 0
    c:send(frame(1, header("localhost", sha)))
    local deadline = H.now() + 3
    while H.now() < deadline do
      for _ = 1, 4 do
        while credit < #chunk do
          local sid, p = read_frame(c)
          assert.is_truthy(sid, "the connection stays up")
          if sid == 0 and p:byte(1) == 1 then
            credit = credit + ((p:byte(4) * 256 + p:byte(5)) * 256 + p:byte(6)) * 256 + p:byte(7)
          end
        end
        c:send(frame(1, chunk))
        credit, sent = credit - #chunk, sent + #chunk
      end
      H.sleep(0.01)
    end
    c:close()
    -- on loopback the path's RTT is well under a millisecond: 6.4 MB/s needs no window above
    -- the first (the forged 200 ms sized it for 1.3 MB in flight: 4 MiB)
    local largest = 256
    for kib in H.read(t.slog):gmatch("%[flow%] %x+:%d+ window (%d+) KiB") do largest = math.max(largest, tonumber(kib)) end
    assert.is_true(largest <= 512, "the server granted a window of " .. largest .. " KiB")
    assert.is_true(sent >= 8 * 1048576, sent .. " bytes sent")
    H.stop_tunnel(t)
  end)

  it("refuse a session whose first window -remux.buffer.max.mib or -server.buffer.max.mib cannot hold", function()
    local sha = H.dest(dir, "sha")
    for _, flag in ipairs({ "remux.buffer.max.mib", "server.buffer.max.mib" }) do
      -- 1 MiB holds four first windows of 256 KiB
      local t = H.tunnel(dir, nil, { tcp = true, no_client = true, server = { [flag] = 1 } })
      local c = H.connect(t.server_port)
      local function resets(quiet)
        local got = {}
        for _ = 1, 1000 do
          local sid, p = read_frame(c, quiet)
          if not sid then break end
          if sid == 0 and p:byte(1) == 2 then got[#got + 1] = (p:byte(2) * 256 + p:byte(3)) .. ":" .. p:byte(4) end
        end
        return table.concat(got, " ")
      end
      for sid = 1, 5 do c:send(frame(sid, header("localhost", sha) .. string.rep("\0", 12))) end
      -- the fifth is refused (RESET, policy), the others go on
      assert.are.equal("5:4", resets(1), flag)
      assert.are.equal(1, H.count(t.slog, H.LOG.sock_close .. "localhost:" .. sha .. " = 4 refused: its windows would pass %-" ..
        flag:gsub("%.", "%%.") .. "=1 on %x+ %(%d+ KiB held%)$"), flag)
      -- one ends (the peer resets it): its window is free again for a new one
      c:send(frame(0, "\2\0\1\7"))
      H.wait_for(function() return H.count(t.slog, H.LOG.sock_close .. "localhost:" .. sha .. " = 3 reset by peer") == 1 end, 5, "the end")
      c:send(frame(6, header("localhost", sha) .. string.rep("\0", 12)))
      assert.are.equal("", resets(1), flag)
      assert.are.equal(5, H.count(t.slog, H.LOG.sock_open .. "localhost:" .. sha), flag)
      c:close()
      H.stop_tunnel(t)
    end
  end)

  it("closes a connection whose peer sends past the window (window overflow)", function()
    local socket = require("socket")
    -- A destination that never completes a connect: its one-slot accept queue is full, so the
    -- server's connect hangs and nothing drains the session.
    local blackhole = assert(socket.bind("127.0.0.1", 0, 0))
    local _, bport = blackhole:getsockname()
    local fillers = {}
    for i = 1, 4 do
      local c = socket.tcp()
      c:settimeout(0)
      c:connect("127.0.0.1", bport)
      fillers[i] = c
    end
    local t = H.tunnel(dir, nil, { tcp = true, no_client = true })
    local c = H.connect(t.server_port)
    local chunk = string.rep("x", 60000)
    local frames = { frame(1, "\5\1\0\1\127\0\0\1" .. be16(tonumber(bport)) .. "start") }
    for i = 1, 5 do frames[#frames + 1] = frame(1, chunk) end -- 300,005 bytes > 256 KiB
    c:send(table.concat(frames))
    local _, how = H.recv_all(c, 5)
    c:close()
    assert.is_truthy(how == "closed" or how == "connection reset by peer", how)
    H.wait_for(function()
      return H.count(t.slog, "%[erro%] %[conn%] %- %x+ = %d+ protocol error: window overflow") == 1
    end, 5, "the window overflow line")
    for _, f in ipairs(fillers) do f:close() end
    blackhole:close()
    H.stop_tunnel(t)
  end)

  it("notices a silent peer within 3 x -remux.ping.sec and closes its sessions", function()
    local t = H.tunnel(dir, nil, { tcp = true, no_client = true, server = { ["remux.ping.sec"] = 1 } })
    local c = H.connect(t.server_port)
    c:send(frame(1, header("localhost", echo) .. "hi"))
    local t0 = H.now()
    H.wait_for(function()
      return H.count(t.slog, "%[erro%] %[conn%] %- %x+ = %d+ keepalive timeout: nothing received for %d s") == 1
    end, 8, "the keepalive timeout")
    local took = H.now() - t0
    assert.is_true(took >= 2.5 and took < 5, "took " .. took)
    assert.are.equal(1, H.count(t.slog, "%[sock%] %- localhost:%d+ = 0 connection lost: keepalive timeout"))
    c:close()
    H.stop_tunnel(t)
  end)
end)

describe("SOCKS5 login (RFC 1929, -socks.auth)", function()
  local dir, pki, http

  H.fixture({ "http" }, function(...)
    dir, pki, http = ...
  end)

  it("lets in the right user and password only", function()
    H.write(dir .. "/login", "alice:s3cret:with:colons\n")
    local t = H.tunnel(dir, pki, { client = { ["socks.auth"] = dir .. "/login" } })
    local url = "http://localhost:" .. http .. "/"
    local body, code = H.sh("curl -sS --max-time 10 --proxy socks5h://alice:s3cret:with:colons@127.0.0.1:" .. t.socks_port .. " " .. url)
    assert.are.equal(0, code, body)
    assert.are.equal(H.HELLO, body)
    body, code = H.sh("curl -sS --max-time 10 --proxy socks5h://alice:wrong@127.0.0.1:" .. t.socks_port .. " " .. url)
    assert.are_not.equal(0, code, body)
    body, code = H.sh("curl -sS --max-time 10 --proxy socks5h://mallory:s3cret:with:colons@127.0.0.1:" .. t.socks_port .. " " .. url)
    assert.are_not.equal(0, code, body)
    assert.are.equal(2, H.count(t.clog, "%[warn%] %[socks%] 127%.0%.0%.1:%d+: login refused"))
    -- a client offering only no-auth is told no method is acceptable
    local c = H.connect(t.socks_port)
    c:send("\5\1\0")
    assert.are.equal("\5\255", (H.recv(c, 2)))
    c:close()
    H.stop_tunnel(t)
  end)

  it("answers a greeting, login, request and the app's first bytes sent in one write, in order", function()
    H.write(dir .. "/login", "alice:pw\n")
    local t = H.tunnel(dir, pki, { client = { ["socks.auth"] = dir .. "/login" } })
    local c = H.connect(t.socks_port)
    c:send("\5\1\2" .. "\1\5alice\2pw" .. header("localhost", http) .. "GET / HTTP/1.0\r\n\r\n")
    -- method, login and CONNECT replies, then the destination's answer: nothing lost or reordered
    assert.are.equal("\5\2" .. "\1\0" .. "\5\0\0\1\0\0\0\0\0\0", (H.recv(c, 14)))
    local rest, how = H.recv_all(c, 10)
    c:close()
    assert.are.equal("closed", how)
    assert.truthy(rest:find(H.HELLO, 1, true), rest)
    H.stop_tunnel(t)
  end)

  it("names a login file that is missing or malformed, exit 1", function()
    H.write(dir .. "/bad-login", "no colon here\n")
    for _, f in ipairs({ dir .. "/bad-login", dir .. "/absent" }) do
      local out, code = H.sh(H.bin .. " -role=client -server.addr=127.0.0.1:1 -client.addr=127.0.0.1:" ..
        H.free_port() .. " -sla.log.path= -tls.client.ca=" .. pki.ca .. " -socks.auth=" .. f)
      assert.are.equal(1, code, out)
      assert.matches("-socks.auth: " .. f:gsub("%p", "%%%0"), out)
    end
  end)
end)

describe("limits", function()
  local dir, pki, echo, http

  H.fixture({ "echo", "http" }, function(...)
    dir, pki, echo, http = ...
  end)

  -- An app's SOCKS session through t to host:port, its replies read.
  local function app(t, host, port)
    local c = H.connect(t.socks_port)
    c:send(H.socks_connect(host, port))
    assert.are.equal(12, #(H.recv(c, 12) or ""))
    return c
  end

  it("close a session idle for -session.idle.sec on both ends; the app learns it", function()
    local t = H.tunnel(dir, pki, { server = { ["session.idle.sec"] = 1 }, client = { ["session.idle.sec"] = 30 } })
    local c = app(t, "localhost", echo)
    c:send("once")
    assert.are.equal("once", H.recv(c, 4))
    -- then quiet: the server closes it after 1 s and resets it; the client closes the app's socket
    local _, how = H.recv_all(c, 5)
    c:close()
    assert.is_truthy(how == "closed" or how == "connection reset by peer", how)
    H.wait_for(function() return H.count(t.slog, H.LOG.sock_close .. "localhost:" .. echo .. " = %d+ idle for 1 s$") == 1 end, 5, "the server's line")
    H.wait_for(function() return H.count(t.clog, H.LOG.sock_close .. "localhost:" .. echo .. " = %d+ reset by peer: timeout") == 1 end, 5, "the client's line")
    -- a session that keeps talking is not idle, however long it lives
    local busy = app(t, "localhost", echo)
    for i = 1, 6 do
      busy:send("x" .. i)
      assert.are.equal("x" .. i, H.recv(busy, 2), "round " .. i)
      H.sleep(0.4)
    end
    busy:close()
    H.stop_tunnel(t)
  end)

  it("set TCP keepalive on every destination socket", function()
    local t = H.tunnel(dir, pki)
    local c = app(t, "localhost", echo)
    c:send("k")
    assert.are.equal("k", H.recv(c, 1))
    -- the server's socket to the destination: keepalive armed, 60 s before the first probe
    local out = H.sh("ss -tnoH state established '( dport = :" .. echo .. " )'")
    assert.is_truthy(out:find("timer:%(keepalive,"), out)
    c:close()
    H.stop_tunnel(t)
  end)

  it("give a session whose connection closed -session.orphan.sec to finish, then close it with a line", function()
    local socket = require("socket")
    -- a destination that answers with a FIN at once and never reads (an 8 KiB receive
    -- buffer): most of the session's 250 KB stay in the server's output when the client's
    -- connection is gone
    local sink = assert(socket.tcp4())
    assert(sink:setoption("recv-buffer-size", 4096)) -- inherited by what it accepts
    assert(sink:bind("127.0.0.1", 0))
    assert(sink:listen(4))
    local _, sport = sink:getsockname()
    local t = H.tunnel(dir, nil, { tcp = true, no_client = true, server = { ["session.orphan.sec"] = 1 } })
    local c = H.connect(t.server_port)
    local chunk = string.rep("o", 16000)
    c:send(frame(1, "\5\1\0\1\127\0\0\1" .. be16(tonumber(sport)) .. chunk))
    sink:settimeout(5)
    local d = assert(sink:accept())
    d:shutdown("send")
    -- send until the kernel's buffers toward the destination are full and credit stops (the
    -- session's output then holds up to a window), at most 20 s
    local credit, deadline = 256 * 1024 - #chunk, H.now() + 20
    while H.now() < deadline do
      while credit >= #chunk do
        c:send(frame(1, chunk))
        credit = credit - #chunk
      end
      local h = H.recv(c, 4, 1)
      if not h or #h < 4 then break end -- no WINDOW for a second: stuck
      local len = h:byte(3) * 256 + h:byte(4)
      local p = len > 0 and H.recv(c, len) or ""
      if h:byte(1) == 0 and h:byte(2) == 0 and p:byte(1) == 1 then
        credit = credit + ((p:byte(4) * 256 + p:byte(5)) * 256 + p:byte(6)) * 256 + p:byte(7)
      end
    end
    c:send(frame(1, "")) -- our FIN; the destination's came first
    H.sleep(0.2)
    c:close()
    H.wait_for(function() return H.count(t.slog, H.LOG.sock_close .. "127%.0%.0%.1:" .. sport ..
      " = %d+ orphan: not done 1 s after its connection closed$") == 1 end, 5, "the orphan's end")
    d:close()
    sink:close()
    H.stop_tunnel(t)
  end)

  it("refuse a session whose first window its certificate's -tls.client.buffer.max.mib cannot hold", function()
    -- 1 MiB: four first windows, whichever connections they are on (two a connection here)
    local t = H.tunnel(dir, pki, {
      server = { ["tls.client.buffer.max.mib"] = 1, ["remux.buffer.max.mib"] = 0 },
      client = { ["remux.reuse.max.cnt"] = 2 } })
    local apps = {}
    for i = 1, 4 do
      apps[i] = app(t, "localhost", echo)
      apps[i]:send("x")
      assert.are.equal("x", H.recv(apps[i], 1), "session " .. i)
    end
    local c = app(t, "localhost", echo)
    local _, how = H.recv_all(c, 5)
    c:close()
    assert.is_truthy(how == "closed" or how == "connection reset by peer", how)
    assert.are.equal(1, H.count(t.slog, H.LOG.sock_close .. "localhost:" .. echo ..
      " = 4 refused: its windows would pass %-tls%.client%.buffer%.max%.mib=1 on %x+ %(%d+ KiB held%)$"))
    assert.is_true(H.count(t.slog, "%[conn%] %+ %x+ = 2 from") >= 1, "two connections")
    -- one ends: a new session fits again
    apps[1]:close()
    H.wait_for(function() return H.count(t.slog, H.LOG.sock_close .. "localhost:" .. echo .. " = 3") >= 1 end, 5, "the end")
    apps[1] = app(t, "localhost", echo)
    apps[1]:send("y")
    assert.are.equal("y", H.recv(apps[1], 1))
    for i = 1, 4 do apps[i]:close() end
    H.stop_tunnel(t)
  end)

  it("count a certificate's orphans against its sessions until they end", function()
    -- a destination that half-closes at once and never reads: a session's bytes, all sent with
    -- its FIN, wait in the server when the client's connection goes (tn-hostile -mode orphans)
    local stall = H.dest(dir, "stall")
    local t = H.tunnel(dir, pki, { no_client = true,
      server = { ["tls.client.sessions.max"] = 2, ["session.orphan.sec"] = 3 } })
    local out, code = H.sh(H.build .. "/tn-hostile -mode orphans -n 2 -sec 2 -server 127.0.0.1:" .. t.server_port ..
      " -dest 127.0.0.1:" .. stall .. " -ca " .. pki.ca .. " -cert " .. pki.client_cert .. " -key " .. pki.client_key)
    assert.are.equal(0, code, out)
    H.wait_for(function() return H.count(t.slog, H.LOG.conn_close) >= 1 end, 5, "the connection's end")
    assert.are.equal(0, H.count(t.slog, H.LOG.sock_close .. "127%.0%.0%.1:" .. stall), "orphans, not closed")
    -- the same certificate again: its orphans still hold both of its sessions
    local again = H.tunnel(dir, pki, { no_server = true, server_port = t.server_port })
    local c = H.connect(again.socks_port)
    c:send(H.socks_connect("localhost", http))
    local _, how = H.recv_all(c, 5)
    c:close()
    assert.is_truthy(how == "closed" or how == "connection reset by peer", how)
    assert.are.equal(1, H.count(t.slog, "refused: its client certificate holds 2 sessions"))
    -- they end at their deadline, with their lines, and the certificate is served again
    H.wait_for(function() return H.count(t.slog, H.LOG.sock_close .. "127%.0%.0%.1:" .. stall ..
      " = %d+ orphan: not done 3 s after its connection closed$") == 2 end, 10, "the orphans' end")
    H.assert_hello(again.socks_port, http)
    H.stop(again.client_pid)
    H.stop(t.server_pid)
  end)

  it("park at most 256 KiB unsent in the kernel toward a destination that never reads", function()
    -- Four sessions upload as fast as their windows allow to a destination that never reads.
    -- The kernel's send buffer grows to ~3 MiB a socket (net.ipv4.tcp_wmem), outside every
    -- budget (seen: 2,988,032 bytes each); TCP_NOTSENT_LOWAT keeps it to 256 KiB, and the rest
    -- waits in the session, counted by its window.
    local stall = H.dest(dir, "stall")
    local t = H.tunnel(dir, pki, { no_client = true })
    local hog = H.spawn("hog", { H.build .. "/tn-hostile", "-mode", "hog", "-n", "4", "-sec", "4",
      "-server", "127.0.0.1:" .. t.server_port, "-dest", "127.0.0.1:" .. stall, "-ca", pki.ca,
      "-cert", pki.mallory_cert, "-key", pki.mallory_key }, dir .. "/hog.out")
    local function queues()
      local q = {}
      for line in H.sh("ss -Htn '( dport = :" .. stall .. " )'"):gmatch("[^\n]+") do
        q[#q + 1] = tonumber(line:match("^%S+%s+%d+%s+(%d+)"))
      end
      return q
    end
    -- the uploads have filled what they can once the queues stop growing
    local last
    H.wait_for(function()
      local q = queues()
      if #q < 4 then return false end
      local sum = 0
      for _, v in ipairs(q) do sum = sum + v end
      local same = sum == last
      last = sum
      H.sleep(0.2)
      return same and sum > 0
    end, 10, "four full send queues")
    -- the kernel checks the bound before each new buffer, so one more (64 KiB) may pass it
    for _, v in ipairs(queues()) do
      assert.is_true(v <= 320 * 1024, "a destination socket holds " .. v .. " bytes unsent")
    end
    H.wait_for(function() return not H.alive(hog) end, 10, "the hog to end")
    H.stop(t.server_pid)
  end)

  it("close a connection that opens and resets sessions at once; refuse its address and certificate 10 s", function()
    local sha = H.dest(dir, "sha")
    local t = H.tunnel(dir, pki)
    local function hostile(from)
      return H.build .. "/tn-hostile -mode flood -n 64 -sec 3 -from " .. from .. " -server 127.0.0.1:" .. t.server_port ..
        " -dest 127.0.0.1:" .. sha .. " -ca " .. pki.ca .. " -cert " .. pki.mallory_cert .. " -key " .. pki.mallory_key
    end
    local out, code = H.sh(hostile(9)) -- from 127.0.1.9
    assert.are.equal(0, code, out)
    assert.are.equal(1, H.count(t.slog, "%[warn%] %[conn%] %- %x+ = %d+ closed: 256 of its %d+ sessions reset before any reply or refused$"))
    local opened = H.count(t.slog, H.LOG.sock_open)
    -- at once again from the same address: refused at accept, before any handshake
    H.sh(hostile(9))
    assert.are.equal(1, H.count(t.slog, "%[warn%] %[tls%] 127%.0%.1%.9:%d+ refused: a connection from its address abandoned its sessions less than 10 s ago$"))
    -- from another address: refused once its certificate is known, its sessions never opened
    out, code = H.sh(hostile(10))
    assert.are.equal(0, code, out)
    assert.are.equal(1, H.count(t.slog, "refused: a connection of its client certificate abandoned its sessions less than 10 s ago$"))
    assert.are.equal(opened, H.count(t.slog, H.LOG.sock_open))
    -- the other certificate, from 127.0.0.1, was served all along
    H.assert_hello(t.socks_port, http)
    H.stop_tunnel(t)
  end)

  it("set up no TLS buffers for strangers that send nothing, however fast they come and go", function()
    -- 1,000 strangers from 16 addresses for 2 s: the handshake limits evict and refuse most of
    -- them, so thousands of connections come and go. OpenSSL's buffers are set up at a
    -- connection's first byte, not at accept: set up for each stranger, they took the server
    -- from 8 to 86 MiB here (freed memory the allocator keeps); at the first byte, to 30 MiB.
    -- Under ASan its quarantine would keep what is freed (see faults_spec).
    local asan = os.getenv("ASAN_OPTIONS")
    local env = asan and ("ASAN_OPTIONS='" .. asan .. ":quarantine_size_mb=0'") or nil
    local t = H.tunnel(dir, pki, { no_client = true, env = env })
    local function rss() return tonumber(H.read("/proc/" .. t.server_pid .. "/status"):match("VmRSS:%s*(%d+)")) end
    local before = rss()
    local hold = H.spawn("strangers", { H.build .. "/tn-hostile", "-mode", "strangers", "-n", "1000", "-sources", "16",
      "-sec", "3", "-server", "127.0.0.1:" .. t.server_port }, dir .. "/strangers.out")
    H.wait_for(function() return H.count(t.slog, H.LOG.conn_open) >= 1500 end, 10, "1,500 connections")
    local grown = rss() - before
    H.wait_for(function() return not H.alive(hold) end, 10, "the strangers to go")
    assert.is_true(grown < (asan and 64 or 48) * 1024, "the server grew by " .. grown .. " KiB")
    H.stop(t.server_pid)
  end)

  it("keep one client from holding every descriptor: a process cap, half of it per certificate", function()
    -- 256 descriptors: at most 192 sessions (a reserve of 64), 96 per client certificate
    local t = H.tunnel(dir, pki, { env = "ulimit -n 256;" })
    H.wait_for(function() return H.count(t.slog, "%[main%] server: at most 192 sessions at once %(RLIMIT_NOFILE 256%)") == 1 end,
      5, "the cap")
    -- client A holds 150 sessions open: 96 are served, the rest refused
    local hold = H.spawn("tn-bench-hold", { H.build .. "/tn-bench", "-mode", "hold", "-socks", "127.0.0.1:" .. t.socks_port,
      "-dest", "127.0.0.1:" .. echo, "-n", "150", "-sec", "8", "-timeout", "5" }, dir .. "/hold.out")
    H.wait_for(function() return H.read(dir .. "/hold.out"):find("held") ~= nil end, 20, "the sessions held")
    assert.is_truthy(H.read(dir .. "/hold.out"):find("held 96", 1, true), H.read(dir .. "/hold.out"))
    assert.are.equal(54, H.count(t.slog, "refused: its client certificate holds 96 sessions %(%-tls%.client%.sessions%.max%)"))
    -- while A holds them, client B (another certificate) is served
    local port, log = H.free_port(), dir .. "/b.log"
    local b = H.spawn("client-b", { H.bin, "-role=client", "-server.addr=127.0.0.1:" .. t.server_port,
      "-client.addr=127.0.0.1:" .. port, "-sla.log.path=" .. log, "-tls.client.ca=" .. pki.ca,
      "-tls.client.cert=" .. pki.revoked_cert, "-tls.client.key=" .. pki.revoked_key }, log .. ".out")
    H.wait_for(function() return H.connectable(port) end, 10, "client B")
    for i = 1, 5 do H.assert_hello(port, http, "client B, request " .. i) end
    H.stop(b)
    H.stop(hold)
    H.stop_tunnel(t)
  end)

  it("refuse a session past -remux.sessions.max on its connection (RESET, policy)", function()
    local t = H.tunnel(dir, nil, { tcp = true, no_client = true, server = { ["remux.sessions.max"] = 2 } })
    local c = H.connect(t.server_port)
    c:send(frame(1, header("localhost", echo) .. "one") .. frame(2, header("localhost", echo) .. "two") ..
      frame(3, header("localhost", echo) .. "three"))
    local got = {}
    for _ = 1, 12 do
      local sid, p = read_frame(c)
      if sid == nil then break end
      if sid == 0 and p:byte(1) == 2 then got.reset = p end
      if sid == 1 or sid == 2 then got[sid] = p end
      if got.reset and got[1] and got[2] then break end
    end
    c:close()
    assert.are.equal("one", got[1])
    assert.are.equal("two", got[2])
    assert.are.equal("\2\0\3\4", got.reset) -- RESET sid 3, reason 4 (refused by policy)
    assert.are.equal(1, H.count(t.slog, "%[warn%] %[sock%] %- localhost:%d+ = %d+ refused: %x+ has %-remux%.sessions%.max=2 open"))
    H.stop_tunnel(t)
  end)

  -- Idle TCP connections to the server from a loopback address of their own (127.0.0.0/8 is
  -- all this host's), as strangers who never send a ClientHello.
  local function strangers(port, from, n)
    local socket = require("socket")
    local held = {}
    for i = 1, n do
      local c = socket.tcp()
      assert(c:bind(from, 0))
      c:settimeout(5)
      assert(c:connect("127.0.0.1", port))
      held[i] = c
    end
    return held
  end

  local function count_closed(held)
    local closed = 0
    for _, c in ipairs(held) do
      local _, how = H.recv_all(c, 0.2)
      if how == "closed" or how == "connection reset by peer" then closed = closed + 1 end
      c:close()
    end
    return closed
  end

  it("drop a connection that sends no ClientHello within -tls.hello.sec; one that began keeps its time", function()
    local t = H.tunnel(dir, pki, { server = { ["tls.hello.sec"] = 1, ["tls.handshake.sec"] = 30 } })
    H.wait_for(function() return H.count(t.slog, "%[tls%] ~ %x+ TLS") == 1 end, 10, "the start-up dial")
    local idle = strangers(t.server_port, "127.0.0.21", 1)
    local slow = strangers(t.server_port, "127.0.0.22", 1)
    slow[1]:send("\22\3\1\2\0\1\0\1\252\3\3") -- the start of a ClientHello, then nothing
    H.wait_for(function() return H.count(t.slog, "%[warn%] %[conn%] %- %x+ = %d+ no ClientHello in 1 s %(%-tls%.hello%.sec%)") == 1 end,
      5, "the idle one dropped")
    assert.are.equal(1, count_closed(idle))
    H.sleep(1.5)
    assert.are.equal(0, count_closed(slow)) -- still within -tls.handshake.sec
    H.stop_tunnel(t)
  end)

  it("refuse handshakes past -tls.handshake.per.addr from one address", function()
    local t = H.tunnel(dir, pki, { server = { ["tls.handshake.per.addr"] = 5, ["tls.hello.sec"] = 30 } })
    H.wait_for(function() return H.count(t.slog, "%[tls%] ~ %x+ TLS") == 1 end, 10, "the start-up dial")
    local held = strangers(t.server_port, "127.0.0.9", 8)
    H.wait_for(function() return H.count(t.slog, "%[warn%] %[tls%] 127%.0%.0%.9:%d+ refused: %-tls%.handshake%.per%.addr=5") == 3 end, 5, "3 refusals")
    assert.are.equal(3, count_closed(held))
    -- another address is not counted with it
    H.assert_hello(t.socks_port, http)
    H.stop_tunnel(t)
  end)

  it("let a client with a certificate in when strangers hold every -tls.handshake.max slot", function()
    local t = H.tunnel(dir, pki, { server = { ["tls.handshake.max"] = 6, ["tls.handshake.per.addr"] = 4,
      ["tls.hello.sec"] = 30 } })
    -- the client's start-up dial is a handshake too: done before the strangers arrive
    H.wait_for(function() return H.count(t.slog, "%[tls%] ~ %x+ TLS") == 1 end, 10, "the start-up dial")
    local held = {}
    for _, from in ipairs({ "127.0.0.11", "127.0.0.12" }) do
      for _, c in ipairs(strangers(t.server_port, from, 3)) do held[#held + 1] = c end
    end
    H.sleep(0.3) -- all six pending, the table full
    -- a new connection of the client's: its handshake evicts a stranger's, and it is served
    local out, code = H.sh(H.build .. "/tn-bench -socks 127.0.0.1:" .. t.socks_port .. " -dest 127.0.0.1:" ..
      http .. " -mode ttfb -n 40 -c 40")
    assert.are.equal(0, code, out)
    assert.is_truthy(out:find("failed=0", 1, true), out)
    assert.is_true(H.count(t.slog, "%[conn%] %- %x+ = %d+ handshake evicted: %-tls%.handshake%.max") >= 1)
    assert.are.equal(0, H.count(t.slog, "%[tls%] [^ ]+ refused: %-tls%.handshake%.max"))
    assert.is_true(count_closed(held) >= 1)
    H.stop_tunnel(t)
  end)

  it("close a client certificate's connections past -tls.client.conn.max", function()
    local t = H.tunnel(dir, pki, { server = { ["tls.client.conn.max"] = 2 }, client = { ["eagersocks.net"] = "tls" } })
    local apps = {}
    for i = 1, 2 do
      apps[i] = H.connect(t.socks_port)
      apps[i]:send(H.socks_connect("localhost", echo) .. "n" .. i)
      assert.are.equal("\5\0\5\0\0\1\0\0\0\0\0\0n" .. i, (H.recv(apps[i], 14)), "app " .. i)
    end
    -- the third connection of the same certificate: refused once its handshake is done, so its
    -- app sees the eager reply and then the close, never an echo
    apps[3] = H.connect(t.socks_port)
    apps[3]:send(H.socks_connect("localhost", echo) .. "n3")
    local data, how = H.recv_all(apps[3], 5)
    assert.are.equal("\5\0\5\0\0\1\0\0\0\0\0\0", data)
    assert.is_truthy(how == "closed" or how == "connection reset by peer", how)
    H.wait_for(function()
      return H.count(t.slog, "%[warn%] %[conn%] %- %x+ = %d+ refused: its client certificate holds %-tls%.client%.conn%.max=2") == 1
    end, 5, "the refusal")
    for i = 1, 3 do apps[i]:close() end
    H.stop_tunnel(t)
  end)
end)

describe("TLS versions and suites", function()
  local dir, pki, t

  H.fixture({}, function(...)
    dir, pki = ...
    t = H.tunnel(dir, pki, { no_client = true })
  end)

  -- openssl s_client with the given options against the server; true if the handshake completed.
  local function handshake(opts)
    local out = H.sh("echo | timeout 10 openssl s_client -connect 127.0.0.1:" .. t.server_port ..
      " -CAfile " .. pki.ca .. " -cert " .. pki.client_cert .. " -key " .. pki.client_key .. " " .. opts)
    return out:find("Verify return code: 0", 1, true) ~= nil and out:find("Cipher is (NONE)", 1, true) == nil, out
  end

  it("speaks TLS 1.3 by default and accepts TLS 1.2 with an AEAD suite", function()
    local ok, out = handshake("")
    assert.is_true(ok, out)
    assert.matches("TLSv1%.3", out)
    ok, out = handshake("-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256")
    assert.is_true(ok, out)
  end)

  it("refuses TLS 1.1 and TLS 1.2 suites without AEAD", function()
    local ok, out = handshake("-tls1_1 -cipher 'DEFAULT:@SECLEVEL=0'")
    assert.is_false(ok, out)
    ok, out = handshake("-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA")
    assert.is_false(ok, out)
    ok, out = handshake("-tls1_2 -cipher ECDHE-ECDSA-AES256-SHA384")
    assert.is_false(ok, out)
    H.wait_for(function() return H.count(t.slog, "%[erro%] %[conn%] %- %x+ = %d+ tls handshake: ") >= 3 end, 5, "3 logged refusals")
  end)
end)

describe("an orderly TLS close", function()
  local dir, pki, t

  H.fixture({}, function(...)
    dir, pki = ...
    t = H.tunnel(dir, pki, { no_client = true })
  end)

  it("sends close_notify to a connected peer when the server shuts down", function()
    -- s_client holds the connection open (stdin stays open 4 s) and prints every TLS message;
    -- "<<<" lines are what it received. The alert leaves through the TLS filter's socket queue.
    local out = dir .. "/s_client.out"
    os.execute("(sleep 4 | timeout 10 openssl s_client -connect 127.0.0.1:" .. t.server_port ..
      " -CAfile " .. pki.ca .. " -cert " .. pki.client_cert .. " -key " .. pki.client_key ..
      " -msg >" .. out .. " 2>&1 &)")
    H.wait_for(function() return H.count(t.slog, "%[conn%] %+ %x+ = 1") >= 1 end, 10, "the connection")
    H.sleep(0.3) -- past the handshake's last flight
    os.execute("kill -TERM " .. t.server_pid)
    H.wait_for(function()
      local f = io.open(out, "rb")
      local text = f and f:read("*a") or ""
      if f then f:close() end
      return text:find("<<< TLS 1.3, Alert [length 0002], warning close_notify", 1, true) ~= nil
    end, 10, "close_notify from the server")
    H.wait_for(function() return H.count(t.slog, "%[main%] exit") >= 1 end, 10, "the server's exit")
  end)
end)

describe("a lower connection cut with RST", function()
  local dir, echo, t

  H.fixture({ "echo" }, function(d, _, echo_port)
    dir, echo = d, echo_port
    t = H.tunnel(dir, nil, { tcp = true, no_client = true })
  end)

  it("closes its sessions with the cause, and only those", function()
    local other = H.connect(t.server_port)
    other:send(frame(1, header("localhost", echo) .. "ping?"))
    local sid, p = read_data(other)
    assert.are.same({ 1, "ping?" }, { sid, p })
    local c = H.connect(t.server_port)
    c:send(frame(1, header("localhost", echo) .. "x"))
    read_data(c)
    c:setoption("linger", { on = true, timeout = 0 })
    c:close() -- RST
    H.wait_for(function()
      return H.count(t.slog, "%[erro%] %[conn%] %- %x+ = %d+ Connection reset by peer") == 1
    end, 5, "the reset logged")
    H.wait_for(function()
      return H.count(t.slog, "%[sock%] %- localhost:%d+ = %d+ connection lost: Connection reset by peer") == 1
    end, 5, "its session closed with the cause")
    other:send(frame(1, "again"))
    sid, p = read_data(other)
    assert.are.same({ 1, "again" }, { sid, p })
    other:close()
  end)
end)

describe("a peer that stops reading", function()
  local dir, http, t

  H.fixture({ "http" }, function(d, _, http_port)
    dir, http = d, http_port
    t = H.tunnel(dir, nil, { tcp = true, no_client = true, server = { ["remux.ping.sec"] = 1 } })
  end)

  it("is closed by the write timeout even while it keeps sending", function()
    local c = H.connect(t.server_port)
    c:setoption("recv-buffer-size", 4096) -- (tcp_rmem lets a receive buffer absorb 32 MiB)
    -- 64 big downloads it never reads (64 windows of 256 KiB: more than the socket buffers
    -- hold, so our writes stall), and PINGs so that it never looks silent
    local opens = {}
    for sid = 1, 64 do
      opens[sid] = frame(sid, header("localhost", http) .. "GET /bytes/1073741824 HTTP/1.0\r\n\r\n")
    end
    c:send(table.concat(opens))
    local t0 = H.now()
    local closed
    for _ = 1, 40 do
      H.sleep(0.25)
      local ok = c:send(frame(0, "\3\0\0\0\0\0\0\0\1"))
      if H.count(t.slog, "%[erro%] %[conn%] %- %x+ = %d+ write timeout: the peer read nothing for 3 s") == 1 then
        closed = H.now() - t0
        break
      end
      if not ok then break end
    end
    c:close()
    assert.is_truthy(closed, "no write timeout logged")
    assert.is_true(closed >= 2.5 and closed < 8, "took " .. tostring(closed))
    assert.are.equal(0, H.count(t.slog, "keepalive timeout"))
  end)
end)
