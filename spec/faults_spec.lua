-- Faults survived: the server killed mid-transfer, handshakes that never finish.
local H = require("spec.helper")
H.dump_on_failure()

describe("faults", function()
  local dir, pki, sha, http

  H.fixture({ "sha", "http" }, function(...)
    dir, pki, sha, http = ...
  end)

  it("a server killed (SIGKILL) under 50 transfers: those close, nothing is corrupted, service resumes", function()
    local t = H.tunnel(dir, pki)
    local status = dir .. "/load.status"
    local load = H.spawn_with_status("tn-load", { H.build .. "/tn-load", "-socks", "127.0.0.1:" .. t.socks_port,
      "-dest", "127.0.0.1:" .. sha, "-n", "50", "-c", "50", "-max", "268435456", "-seed", "9" },
      dir .. "/load.log", status)
    H.wait_for(function() return H.count(t.slog, "%[sock%] %+ ") >= 50 end, 20, "50 sessions on the server")
    H.sleep(0.3)
    H.sh("kill -KILL " .. t.server_pid)
    local t0 = H.now()
    -- every session ends, reported to the app as a failure, within a bound
    H.wait_for(function() return H.read(status) ~= "" end, 15, "tn-load to finish")
    local out = H.read(dir .. "/load.log")
    assert.are.equal("1", H.read(status):match("%d+"), out)
    local ok, failed = out:match("ok=(%d+) failed=(%d+)")
    assert.are.equal(50, tonumber(ok) + tonumber(failed))
    assert.is_true(tonumber(failed) >= 1)
    assert.is_nil(out:find("differ", 1, true), "corrupted data: " .. out)
    assert.is_true(H.now() - t0 < 10)
    H.wait_for(function() return H.count(t.clog, "%[erro%] %[conn%] %- %x+ = %d+ ") >= 1 end, 5, "the client's erro line")
    assert.is_true(H.alive(t.client_pid))
    -- a new server on the same port: new sessions work again
    local slog2 = dir .. "/server-again.log"
    H.spawn("server-again", { H.bin, "-role=server", "-server.addr=127.0.0.1:" .. t.server_port,
      "-tls.server.cert=" .. pki.server_cert, "-tls.server.key=" .. pki.server_key,
      "-tls.server.ca=" .. pki.ca, "-sla.log.path=" .. slog2 }, slog2 .. ".out")
    H.wait_for(function() return H.count(slog2, "server: listening") == 1 end, 10, "the new server")
    H.assert_hello(t.socks_port, http, "after the restart")
    H.stop_tunnel(t)
  end)

  it("a TLS client that never finishes its handshake is dropped after -tls.handshake.sec", function()
    local t = H.tunnel(dir, pki, { server = { ["tls.handshake.sec"] = 1 } })
    local stalled = {}
    for i = 1, 20 do stalled[i] = H.connect(t.server_port) end
    stalled[1]:send("\22\3\1") -- the start of a ClientHello, and nothing more
    H.assert_hello(t.socks_port, http, "while 20 handshakes stall")
    for i = 1, 20 do
      local _, how = H.recv_all(stalled[i], 5)
      assert.is_truthy(how == "closed" or how == "connection reset by peer", how)
      stalled[i]:close()
    end
    assert.are.equal(20, H.count(t.slog, "%[erro%] %[conn%] %- %x+ = %d+ tls handshake timeout"))
    H.stop_tunnel(t)
  end)

  it("a SOCKS client that sends one byte a second is dropped after -socks.handshake.sec", function()
    local t = H.tunnel(dir, pki, { client = { ["socks.handshake.sec"] = 1 } })
    local c = H.connect(t.socks_port)
    local t0 = H.now()
    c:send("\5")
    H.sleep(0.5)
    c:send("\1")
    local _, how = H.recv_all(c, 5)
    c:close()
    assert.are.equal("closed", how)
    assert.is_true(H.now() - t0 < 3)
    H.wait_for(function() return H.count(t.clog, "%[warn%] %[sock%] ! 127%.0%.0%.1:%d+ handshake timeout") == 1 end, 5, "warn line")
    H.assert_hello(t.socks_port, http, "after the slow client")
    H.stop_tunnel(t)
  end)
end)
