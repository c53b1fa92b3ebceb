-- UDP through the tunnel (engine/udpassoc.c, udpsess.c, udprelay.c): SOCKS5 UDP ASSOCIATE with a
-- real client (PySocks, python3-socks) to UDP echo servers and to a real DNS server (dnsmasq),
-- routes per destination, the server's ACL, what a stranger or a flood gets, and the version
-- both ends agree in the TLS handshake (ALPN remux/2) against a build of the last v1 commit.
local H = require("spec.helper")
local socket = require("socket")

local PY = "python3"
-- The last commit whose ReMux is v1 (TCP sessions only): built by the version specs.
local V1_COMMIT = "708d8a1"

describe("UDP", function()
  local dir, pki, http
  H.fixture({ "http" }, function(...) dir, pki, http = ... end)
  H.dump_on_failure()

  local echo = {}
  setup(function()
    for i = 1, 3 do
      echo[i] = H.free_port()
      H.spawn("udp-echo" .. i, { PY, H.root .. "/spec/udp_tool.py", "echo", tostring(echo[i]) },
        dir .. "/echo" .. i .. ".log")
    end
    H.sleep(0.3)
  end)

  local function tool(...)
    local args = { PY, H.root .. "/spec/udp_tool.py", ... }
    for i, a in ipairs(args) do args[i] = H.quote(tostring(a)) end
    return H.sh("timeout 30 " .. table.concat(args, " ") .. " 2>&1")
  end

  -- A raw association (luasocket): the TCP connection, a UDP socket of the app's, the relay's
  -- port.
  local function associate(socks_port)
    local c = H.connect(socks_port)
    assert(c:send("\5\1\0" .. "\5\3\0\1\0\0\0\0\0\0"))
    local r = H.recv(c, 12)
    assert.are.equal("\5\0\5\0\0\1", r:sub(1, 6))
    assert.are.equal("\127\0\0\1", r:sub(7, 10))
    local u = assert(socket.udp())
    assert(u:setsockname("127.0.0.1", 0))
    u:settimeout(2)
    return c, u, r:byte(11) * 256 + r:byte(12)
  end

  local function hdr(port, frag)
    return "\0\0" .. string.char(frag or 0) .. "\1\127\0\0\1" .. string.char(math.floor(port / 256), port % 256)
  end

  local function metric(port, line)
    local out = H.sh("curl -sS --max-time 5 http://127.0.0.1:" .. port .. "/metrics")
    local v = out:match("\n" .. line:gsub("[%[%]%(%)%.%-%+%*%?%^%$]", "%%%0") .. " (%d+)")
    return tonumber(v or "-1")
  end

  it("carries PySocks' datagrams to many destinations on one association, byte for byte", function()
    local t = H.tunnel(dir, pki)
    local out = tool("send", t.socks_port, "127.0.0.1:" .. echo[1], "127.0.0.1:" .. echo[2],
      "localhost:" .. echo[3], "-n", 5, "-size", 1200)
    -- each answered from the destination's own address (a name's, resolved on the server)
    assert.truthy(out:find("127.0.0.1:" .. echo[1] .. " got 5 of 5 from 127.0.0.1:" .. echo[1], 1, true), out)
    assert.truthy(out:find("127.0.0.1:" .. echo[2] .. " got 5 of 5 from 127.0.0.1:" .. echo[2], 1, true), out)
    assert.truthy(out:find("localhost:" .. echo[3] .. " got 5 of 5 from 127.0.0.1:" .. echo[3], 1, true), out)
    -- a large one (60,000 bytes: one record, one frame) and an empty one
    out = tool("send", t.socks_port, "127.0.0.1:" .. echo[1], "-size", 60000)
    assert.truthy(out:find("got 1 of 1", 1, true), out)
    H.wait_for(function() return H.count(t.slog, "%[sock%] %- udp = ") >= 2 end, 5, "the sessions' ends")
    -- one UDP session per association, one [sock] line per destination on each end
    assert.are.equal(1, H.count(t.slog, "%[sock%] %+ udp:localhost:" .. echo[3] .. " = %d+ on %x+$"))
    assert.are.equal(1, H.count(t.clog, "%[sock%] %+ udp:localhost:" .. echo[3] .. " = %d+$"))
    assert.are.equal(2, H.count(t.slog, "%[sock%] %+ udp = 1 on "))
    assert.are.equal(1, H.count(t.slog, "%[sock%] %- udp = %d+ %(sent 15, received 15, dropped 0%)"))
    H.stop_tunnel(t)
  end)

  it("asks a real DNS server (dnsmasq) a real query through the tunnel", function()
    local dport = H.free_port()
    H.spawn("dnsmasq", { "dnsmasq", "-k", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
      "--listen-address=127.0.0.1", "--bind-interfaces", "-p", tostring(dport),
      "--address=/tunnels.test/192.0.2.53", "--user=" .. (os.getenv("USER") or "root"),
      "--pid-file=" .. dir .. "/dnsmasq.pid" }, dir .. "/dnsmasq.log")
    H.sleep(0.3)
    local t = H.tunnel(dir, pki)
    local out = tool("dns", t.socks_port, "127.0.0.1:" .. dport, "www.tunnels.test")
    assert.are.equal("rcode 0 answers 192.0.2.53\n", out)
    out = tool("dns", t.socks_port, "localhost:" .. dport, "tunnels.test")
    assert.are.equal("rcode 0 answers 192.0.2.53\n", out)
    H.stop_tunnel(t)
  end)

  it("carries IPv6: a local port on [::1], a destination on [::1]", function()
    local e6 = H.free_port()
    H.spawn("udp-echo6", { PY, H.root .. "/spec/udp_tool.py", "echo", tostring(e6), "::1" },
      dir .. "/echo6.log")
    local t = H.tunnel(dir, pki, { no_client = true })
    local cport = H.free_port()
    local clog = dir .. "/client6.log"
    local cpid = H.spawn("client6", { H.bin, "-role=client", "-server.addr=127.0.0.1:" .. t.server_port,
      "-client.addr=[::1]:" .. cport, "-tls.client.ca=" .. pki.ca, "-tls.client.cert=" .. pki.client_cert,
      "-tls.client.key=" .. pki.client_key, "-sla.log.path=" .. clog, "-sla.log.level=debug" }, clog .. ".out")
    H.wait_for(function() return H.connectable(cport, "::1") end, 10, "the client on [::1]")
    local c = assert(socket.tcp6())
    c:settimeout(5)
    assert(c:connect("::1", cport))
    assert(c:send("\5\1\0" .. "\5\3\0\1\0\0\0\0\0\0"))
    local r = H.recv(c, 2 + 22)
    -- the relay is named as an IPv6 address: the listener's
    assert.are.equal("\5\0\5\0\0\4" .. string.rep("\0", 15) .. "\1", r:sub(1, 22))
    local relay = r:byte(23) * 256 + r:byte(24)
    local u = assert(socket.udp6())
    assert(u:setsockname("::1", 0))
    u:settimeout(2)
    local h6 = "\0\0\0\4" .. string.rep("\0", 15) .. "\1" .. string.char(math.floor(e6 / 256), e6 % 256)
    assert(u:sendto(h6 .. "over six", "::1", relay))
    assert.are.equal(h6 .. "over six", u:receive())
    c:close()
    H.wait_for(function() return H.count(clog, "udp associate ended %(sent 1, received 1") == 1 end, 5, "its end")
    assert.are.equal(1, H.count(t.slog, "%[sock%] %+ udp:%[::1%]:" .. e6 .. " = 1 on "))
    H.stop(cpid)
    H.assert_log_shape(clog)
    H.stop_tunnel(t)
  end)

  it("ends the association with its TCP connection, and after -udp.idle.sec", function()
    local t = H.tunnel(dir, pki, { client = { ["udp.idle.sec"] = 1 } })
    local c, u, relay = associate(t.socks_port)
    assert(u:sendto(hdr(echo[1]) .. "first", "127.0.0.1", relay))
    assert.are.equal(hdr(echo[1]) .. "first", u:receive())
    c:close()
    H.wait_for(function() return H.count(t.clog, "udp associate ended %(sent 1, received 1") == 1 end,
      5, "the association's end")
    -- the server's end of it too (the client's FIN), and the relay is gone
    H.wait_for(function() return H.count(t.slog, "%[sock%] %- udp = 0 %(sent 1, received 1") == 1 end,
      5, "the server's session end")
    u:sendto(hdr(echo[1]) .. "late", "127.0.0.1", relay)
    u:settimeout(0.5)
    assert.is_nil(u:receive())
    -- idle: the association ends by itself, and its TCP connection with it
    c, u, relay = associate(t.socks_port)
    assert(u:sendto(hdr(echo[1]) .. "x", "127.0.0.1", relay))
    assert.truthy(u:receive())
    local data, err = H.recv_all(c, 5)
    assert.are.equal("", data)
    assert.are.equal("closed", err)
    assert.are.equal(1, H.count(t.clog, "udp associate ended: idle"))
    H.stop_tunnel(t)
  end)

  it("drops datagrams from a stranger, fragments and bad headers, and goes on", function()
    local cm = H.free_port()
    local t = H.tunnel(dir, pki, { client = { ["metrics.addr"] = "127.0.0.1:" .. cm } })
    local c, u, relay = associate(t.socks_port)
    assert(u:sendto(hdr(echo[1]) .. "mine", "127.0.0.1", relay))
    assert.are.equal(hdr(echo[1]) .. "mine", u:receive())
    -- another port on the same host: the association's app is the first datagram's port
    local stranger = assert(socket.udp())
    assert(stranger:setsockname("127.0.0.1", 0))
    stranger:settimeout(0.5)
    assert(stranger:sendto(hdr(echo[1]) .. "theirs", "127.0.0.1", relay))
    assert.is_nil(stranger:receive())
    -- a fragment, a header cut short, a bad name: dropped, nothing sent
    assert(u:sendto(hdr(echo[1], 1) .. "frag", "127.0.0.1", relay))
    assert(u:sendto("\0\0\0\1\127\0", "127.0.0.1", relay))
    assert(u:sendto("\0\0\0\3\5bad!!\0\53" .. "name", "127.0.0.1", relay))
    u:settimeout(0.5)
    assert.is_nil(u:receive())
    u:settimeout(2)
    assert(u:sendto(hdr(echo[1]) .. "still", "127.0.0.1", relay))
    assert.are.equal(hdr(echo[1]) .. "still", u:receive())
    assert.are.equal(1, H.count(t.clog, "udp: dropped a datagram from another address"))
    assert.are.equal(1, H.count(t.clog, "udp: dropped: SOCKS5 UDP datagram is a fragment"))
    assert.are.equal(1, metric(cm, 'tunnels_udp_dropped_total{reason="stranger"}'))
    assert.are.equal(1, metric(cm, 'tunnels_udp_dropped_total{reason="fragment"}'))
    assert.are.equal(2, metric(cm, 'tunnels_udp_dropped_total{reason="malformed"}'))
    c:close()
    H.stop_tunnel(t)
  end)

  it("routes each destination: the client's hook (req.net) and the server's ACL", function()
    local cscript, sscript = dir .. "/udp-route.lua", dir .. "/udp-acl.lua"
    H.write(cscript, ([[
return { route = function(req, cfg)
  if req.net == "udp" and req.port == %d then return "block", "no games here" end
  if req.net == "udp" and req.port == %d then return "direct" end
  return "tunnel"
end }
]]):format(echo[2], echo[3]))
    H.write(sscript, ([[
return { route = function(req, cfg)
  if req.net == "udp" and req.port == %d and req.addr then return "deny", "not this one" end
  return tunnels.default.route(req, cfg)
end }
]]):format(echo[1] + 0))
    local t = H.tunnel(dir, pki, { client = { ["lua.script"] = cscript } })
    local out = tool("send", t.socks_port, "127.0.0.1:" .. echo[1], "127.0.0.1:" .. echo[2],
      "localhost:" .. echo[3], "-n", 2)
    assert.truthy(out:find("127.0.0.1:" .. echo[1] .. " got 2 of 2", 1, true), out)
    assert.truthy(out:find("127.0.0.1:" .. echo[2] .. " got 0 of 2", 1, true), out)
    assert.truthy(out:find("localhost:" .. echo[3] .. " got 2 of 2", 1, true), out)
    assert.are.equal(1, H.count(t.clog, "udp:127%.0%.0%.1:" .. echo[2] .. " blocked: no games here"))
    assert.are.equal(1, H.count(t.clog, "%[sock%] %+ udp:localhost:" .. echo[3] .. " = %d+ direct"))
    -- the direct one never reached the server; the tunnelled one did
    assert.are.equal(0, H.count(t.slog, "udp:localhost:" .. echo[3]))
    assert.are.equal(1, H.count(t.slog, "%[sock%] %+ udp:127%.0%.0%.1:" .. echo[1]))
    H.stop_tunnel(t)
    -- the server's ACL, asked per destination: denied once, logged once, the rest carried
    t = H.tunnel(dir, pki, { server = { ["lua.script"] = sscript } })
    out = tool("send", t.socks_port, "127.0.0.1:" .. echo[1], "localhost:" .. echo[1],
      "127.0.0.1:" .. echo[2], "-n", 2)
    assert.truthy(out:find("127.0.0.1:" .. echo[1] .. " got 0 of 2", 1, true), out)
    assert.truthy(out:find("localhost:" .. echo[1] .. " got 0 of 2", 1, true), out)
    assert.truthy(out:find("127.0.0.1:" .. echo[2] .. " got 2 of 2", 1, true), out)
    assert.are.equal(1, H.count(t.slog, "%[sock%] %- udp:127%.0%.0%.1:" .. echo[1] .. " = %d+ denied: not this one"))
    assert.are.equal(1, H.count(t.slog, "%[sock%] %- udp:localhost:" .. echo[1] .. " = %d+ denied: not this one"))
    H.stop_tunnel(t)
  end)

  it("fails closed: a server without -server.allow.local relays nothing to loopback", function()
    local t = H.tunnel(dir, pki, { server = { ["server.allow.local"] = false } })
    local out = tool("send", t.socks_port, "127.0.0.1:" .. echo[1], "localhost:" .. echo[1])
    assert.truthy(out:find("127.0.0.1:" .. echo[1] .. " got 0 of 1", 1, true), out)
    assert.truthy(out:find("localhost:" .. echo[1] .. " got 0 of 1", 1, true), out)
    assert.are.equal(2, H.count(t.slog, "%[sock%] %- udp:%S+ = %d+ denied: "))
    H.stop_tunnel(t)
  end)

  it("relays no stranger's datagrams from the server's socket, and holds a flood in its window", function()
    local sm, cm = H.free_port(), H.free_port()
    local t = H.tunnel(dir, pki, { server = { ["metrics.addr"] = "127.0.0.1:" .. sm },
      client = { ["metrics.addr"] = "127.0.0.1:" .. cm } })
    local c, u, relay = associate(t.socks_port)
    assert(u:sendto(hdr(echo[1]) .. "hello", "127.0.0.1", relay))
    assert.are.equal(hdr(echo[1]) .. "hello", u:receive())
    -- the server's relay socket, found by its owner's PID: a stranger writes to it
    local ss = H.sh("ss -Hunap")
    local sport
    for line in ss:gmatch("[^\n]+") do
      -- (the socket is the server's own: others list their inherited ones first)
      if line:find('users:(("tunnels",pid=' .. t.server_pid .. ",", 1, true) then
        sport = line:match("^%S+%s+%d+%s+%d+%s+%S-:(%d+)%s")
      end
    end
    assert.truthy(sport, ss)
    local stranger = assert(socket.udp())
    assert(stranger:setsockname("127.0.0.1", 0))
    for _ = 1, 10 do assert(stranger:sendto("not yours", "127.0.0.1", tonumber(sport))) end
    u:settimeout(0.5)
    assert.is_nil(u:receive())
    H.wait_for(function() return metric(sm, 'tunnels_udp_dropped_total{reason="stranger"}') == 10 end, 5,
      "the server to drop the stranger's datagrams (port " .. sport .. " of " .. ss .. ")")
    -- a flood from the app: 20,000 datagrams of 1,200 bytes as fast as it can send them
    local function hwm(pid) return tonumber(H.read("/proc/" .. pid .. "/status"):match("VmHWM:%s+(%d+)")) end
    local s0, c0 = hwm(t.server_pid), hwm(t.client_pid)
    local d = hdr(echo[1]) .. string.rep("f", 1200)
    for _ = 1, 20000 do u:sendto(d, "127.0.0.1", relay) end
    H.sleep(1)
    -- bounded: no more than the window and the connection's output bound held anywhere
    assert.is_true(hwm(t.server_pid) - s0 < 24 * 1024, "server grew " .. (hwm(t.server_pid) - s0) .. " KiB")
    assert.is_true(hwm(t.client_pid) - c0 < 24 * 1024, "client grew " .. (hwm(t.client_pid) - c0) .. " KiB")
    local carried = metric(cm, 'tunnels_udp_datagrams_total{direction="to_peer"}')
    assert.is_true(carried > 1, "carried " .. carried)
    -- and everything goes on: a fresh exchange, a TCP session
    u:settimeout(0.2)
    while u:receive() do end
    u:settimeout(2)
    assert(u:sendto(hdr(echo[2]) .. "after", "127.0.0.1", relay))
    local got
    for _ = 1, 50 do
      got = u:receive()
      if got == hdr(echo[2]) .. "after" then break end
    end
    assert.are.equal(hdr(echo[2]) .. "after", got)
    H.assert_hello(t.socks_port, http, "TCP after the flood")
    c:close()
    H.stop_tunnel(t)
  end)

  -- A new server on t's port (returned): the association's next datagrams go through it. The
  -- server may be marked down for a second or two after failed dials: a datagram a half-second,
  -- as an app's retries would come, for at most 10 s.
  local function through_new_server(t, u, relay)
    local t2 = H.tunnel(dir, pki, { no_client = true, server_port = t.server_port })
    local got
    u:settimeout(0.5)
    for i = 1, 20 do
      u:sendto(hdr(echo[1]) .. "after" .. i, "127.0.0.1", relay)
      got = u:receive()
      if got then break end
    end
    assert.truthy(got and got:find("after", 1, true), "no answer through the new server")
    return t2
  end

  it("goes on after its server is killed: the next datagram opens a new UDP session", function()
    local t = H.tunnel(dir, pki)
    local c, u, relay = associate(t.socks_port)
    assert(u:sendto(hdr(echo[1]) .. "before", "127.0.0.1", relay))
    assert.are.equal(hdr(echo[1]) .. "before", u:receive())
    H.stop(t.server_pid, "KILL")
    H.wait_for(function() return H.count(t.clog, "%[sock%] %- udp = %d+ connection lost: ") == 1 end, 5,
      "the client to see its connection lost")
    local t2 = through_new_server(t, u, relay)
    assert.is_true(H.count(t2.slog, "%[sock%] %+ udp = 1 on ") >= 1)
    c:close()
    H.stop_tunnel(t2)
    H.stop(t.client_pid)
  end)

  it("lets a draining server go at once: its UDP sessions end, and come back on the next", function()
    local t = H.tunnel(dir, pki, { server = { ["drain.sec"] = 30 } })
    local c, u, relay = associate(t.socks_port)
    assert(u:sendto(hdr(echo[1]) .. "before", "127.0.0.1", relay))
    assert.are.equal(hdr(echo[1]) .. "before", u:receive())
    -- SIGTERM: GOAWAY; a stream would hold the server up to -drain.sec, a UDP session does not
    local t0 = H.now()
    assert.is_true(H.stop(t.server_pid, "TERM", 5), "the server did not exit")
    assert.is_true(H.now() - t0 < 3, "the server took " .. (H.now() - t0) .. " s")
    assert.are.equal(1, H.count(t.slog, "%[sock%] %- udp = 0 going away "))
    H.wait_for(function() return H.count(t.clog, "%[sock%] %- udp = %d+ ") == 1 end, 5, "the client's end")
    local t2 = through_new_server(t, u, relay)
    c:close()
    H.stop_tunnel(t2)
    H.stop(t.client_pid)
  end)

  it("counts a UDP session against the connection's sessions and refuses past it", function()
    local t = H.tunnel(dir, pki, { server = { ["remux.sessions.max"] = 2 } })
    local assocs = {}
    for i = 1, 3 do
      local c, u, relay = associate(t.socks_port)
      assocs[i] = { c = c, u = u }
      u:sendto(hdr(echo[1]) .. "n" .. i, "127.0.0.1", relay)
      u:settimeout(1)
      assocs[i].got = u:receive()
    end
    assert.truthy(assocs[1].got)
    assert.truthy(assocs[2].got)
    assert.is_nil(assocs[3].got)
    assert.are.equal(1, H.count(t.slog, "%[sock%] %- udp = %d+ refused: %x+ has %-remux%.sessions%.max=2 open"))
    assert.are.equal(1, H.count(t.clog, "%[sock%] %- udp = %d+ reset by peer: refused by policy"))
    for _, a in ipairs(assocs) do a.c:close() end
    H.stop_tunnel(t)
  end)

  it("asks about at most 256 new destinations a second for a peer naming one in every datagram", function()
    local sm = H.free_port()
    local t = H.tunnel(dir, pki, { tcp = true, server = { ["metrics.addr"] = "127.0.0.1:" .. sm } })
    local raw = H.connect(t.server_port)
    local function rec(port, data)
      return string.char(0, #data) .. "\1\127\0\0\1" .. string.char(math.floor(port / 256), port % 256) .. data
    end
    local function frame(sid, payload)
      return string.char(0, sid, math.floor(#payload / 256), #payload % 256) .. payload
    end
    -- one UDP session, 400 datagrams each to a port of its own (20000-20399), in one burst
    local out = { frame(1, "\5\3\0\1\0\0\0\0\0\0" .. rec(20000, "d")) }
    for i = 1, 399 do out[#out + 1] = frame(1, rec(20000 + i, "d")) end
    raw:send(table.concat(out))
    H.wait_for(function() return metric(sm, 'tunnels_udp_dropped_total{reason="busy"}') > 0 end, 5,
      "the new destinations past the rate to be dropped")
    local asked = H.count(t.slog, "%[sock%] %+ udp:127%.0%.0%.1:%d+ = ")
    assert.is_true(asked >= 256 and asked < 400, asked .. " destinations asked")
    assert.are.equal(400 - asked, metric(sm, 'tunnels_udp_dropped_total{reason="busy"}'))
    -- the connection lives: a second later, a new destination is asked again
    H.sleep(1.1)
    raw:send(frame(1, rec(echo[1], "late")))
    H.wait_for(function() return H.count(t.slog, "%[sock%] %+ udp:127%.0%.0%.1:" .. echo[1] .. " ") == 1 end,
      5, "the next second's destination")
    raw:close()
    H.stop_tunnel(t)
  end)

  it("dies on no bad record: a record cut short closes only its connection", function()
    local t = H.tunnel(dir, pki, { tcp = true })
    local good = H.connect(t.socks_port)
    good:send(H.socks_connect("localhost", http) .. "GET / HTTP/1.0\r\n\r\n")
    local raw = H.connect(t.server_port)
    -- session 1: UDP, its first record says 16 bytes of data and carries 3
    local rec = "\0\16\1\127\0\0\1" .. string.char(math.floor(echo[1] / 256), echo[1] % 256) .. "abc"
    local open = "\5\3\0\1\0\0\0\0\0\0" .. rec
    raw:send("\0\1\0" .. string.char(#open) .. open)
    local _, err = H.recv_all(raw, 5)
    assert.are.equal("closed", err)
    assert.are.equal(1, H.count(t.slog, "%[conn%] %- %x+ = %d+ protocol error: UDP record cut off by its frame"))
    local body = H.recv_all(good, 5)
    assert.truthy(body:find(H.HELLO, 1, true))
    H.stop_tunnel(t)
  end)

  describe("versions", function()
    local old
    setup(function()
      old = dir .. "/v1"
      local out, code = H.sh("mkdir -p " .. old .. " && git -C " .. H.quote(H.root) .. " archive " ..
        V1_COMMIT .. " | tar -x -C " .. old .. " && make -s -C " .. old .. " SAN= BUILD=build build/tunnels 2>&1")
      assert(code == 0, "building " .. V1_COMMIT .. ": " .. out)
    end)

    local function openssl_frames(port, alpn, bytes)
      -- A TLS client of the server's with or without ALPN: sends bytes, prints what came back.
      local esc = bytes:gsub(".", function(ch) return ("\\%03o"):format(ch:byte()) end)
      return H.sh("(printf '" .. esc .. "'; sleep 1) | timeout 5 openssl s_client -quiet -connect 127.0.0.1:" ..
        port .. " -CAfile " .. pki.ca .. " -cert " .. pki.client_cert .. " -key " .. pki.client_key ..
        (alpn and (" -alpn " .. alpn) or "") .. " 2>/dev/null | od -An -tx1 | tr -d ' \\n'")
    end

    it("a v1 server: the new client drops UDP with a warning, its TCP sessions go on", function()
      local sport = H.free_port()
      local spid = H.spawn("v1-server", { old .. "/build/tunnels", "-role=server", "-server.addr=127.0.0.1:" .. sport,
        "-tls.server.cert=" .. pki.server_cert, "-tls.server.key=" .. pki.server_key,
        "-tls.server.ca=" .. pki.ca, "-server.allow.local", "-sla.log.path=" .. dir .. "/v1s.log",
        "-sla.log.level=debug" }, dir .. "/v1s.out")
      H.wait_for(function() return H.count(dir .. "/v1s.log", "listening") > 0 end, 10, "the v1 server")
      local t = H.tunnel(dir, pki, { no_server = true, server_port = sport })
      H.assert_hello(t.socks_port, http, "TCP before")
      local out = tool("send", t.socks_port, "127.0.0.1:" .. echo[1], "-n", 2)
      assert.truthy(out:find("got 0 of 2", 1, true), out)
      H.assert_hello(t.socks_port, http, "TCP after")
      assert.truthy(H.count(t.clog, "the server speaks ReMux v1 only %(no UDP%)") >= 1)
      -- no UDP session ever reached it, and its one connection never closed
      local slog = H.read(dir .. "/v1s.log")
      assert.falsy(slog:find("session kind", 1, true), slog)
      assert.falsy(slog:find("protocol error", 1, true), slog)
      assert.are.equal(0, H.count(dir .. "/v1s.log", "%[conn%] %- "))
      H.stop(spid)
      H.stop_tunnel(t)
    end)

    it("a v1 client: TCP through the new server; its UDP ASSOCIATE answered 07 as before", function()
      local t = H.tunnel(dir, pki, { no_client = true })
      local cport = H.free_port()
      local cpid = H.spawn("v1-client", { old .. "/build/tunnels", "-role=client",
        "-server.addr=127.0.0.1:" .. t.server_port, "-client.addr=127.0.0.1:" .. cport,
        "-tls.client.ca=" .. pki.ca, "-tls.client.cert=" .. pki.client_cert,
        "-tls.client.key=" .. pki.client_key, "-sla.log.path=" .. dir .. "/v1c.log" }, dir .. "/v1c.out")
      H.wait_for(function() return H.connectable(cport) end, 10, "the v1 client")
      H.assert_hello(cport, http, "a v1 client's session")
      local c = H.connect(cport)
      c:send("\5\1\0" .. "\5\3\0\1\0\0\0\0\0\0")
      assert.are.equal("\5\0\5\7", H.recv(c, 4))
      H.stop(cpid)
      H.stop_tunnel(t)
    end)

    it("the server speaks UDP only on a connection that agreed remux/2", function()
      local t = H.tunnel(dir, pki, { no_client = true })
      local open = "\5\3\0\1\0\0\0\0\0\0"
      local frame = "\0\1\0" .. string.char(#open) .. open
      -- no ALPN (a v1 client, or one that lies): RESET(6) for that session, the connection lives
      local hex = openssl_frames(t.server_port, nil, frame)
      assert.truthy(hex:find("0000000402000106", 1, true), hex)
      assert.are.equal(1, H.count(t.slog, "refused: session kind 3 %(UDP%) is not spoken here"))
      -- remux/2: the session opens
      hex = openssl_frames(t.server_port, "remux/2", frame)
      assert.falsy(hex:find("0000000402000106", 1, true), hex)
      H.wait_for(function() return H.count(t.slog, "%[sock%] %+ udp = 1 on ") == 1 end, 5, "the UDP session")
      H.stop_tunnel(t)
    end)
  end)
end)
