-- The log format and its filter, SIGHUP (log reopen) and SIGTERM (GOAWAY, drain, exit 0).
local H = require("spec.helper")
H.dump_on_failure()

describe("logs", function()
  local dir, pki, http

  H.fixture({ "http" }, function(...)
    dir, pki, http = ...
  end)

  it("keep the seed's format exactly", function()
    local t = H.tunnel(dir, pki)
    H.curl(t.socks_port, "http://localhost:" .. http .. "/")
    H.curl(t.socks_port, "http://127.0.0.1:" .. H.free_port() .. "/")
    H.stop_tunnel(t) -- checks every line with H.log_shape
    -- the logs name every destination visited: readable by the owner and its group only
    for _, log in ipairs({ t.clog, t.slog }) do
      assert.are.equal("640", (H.sh("stat -c %a " .. log):match("%d+")))
    end
    local n = 0
    for _, log in ipairs({ t.clog, t.slog }) do
      n = n + H.count(log, "%] %[conn%] [%+%-] ") + H.count(log, "%] %[sess%] [%+%-] ") +
        H.count(log, "%] %[sock%] [%+%-] ")
    end
    assert.is_true(n >= 12, n .. " lines")
  end)

  it("filter by -sla.log.level, by name or number", function()
    for _, level in ipairs({ "warn", "300" }) do
      local t = H.tunnel(dir, pki, { client = { ["sla.log.level"] = level } })
      H.curl(t.socks_port, "http://localhost:" .. http .. "/")
      local c = H.connect(t.socks_port)
      c:send("junk")
      H.recv_all(c, 2)
      c:close()
      H.wait_for(function() return H.count(t.clog, "%[warn%]") >= 1 end, 5, "the warn line")
      assert.are.equal(0, H.count(t.clog, "%[info%]") + H.count(t.clog, "%[debg%]"))
      H.stop_tunnel(t)
    end
  end)

  it("reopen on SIGHUP (logrotate)", function()
    local t = H.tunnel(dir, pki)
    assert(os.rename(t.clog, t.clog .. ".1"))
    H.sh("kill -HUP " .. t.client_pid)
    H.wait_for(function() return H.count(t.clog, "SIGHUP: log reopened") == 1 end, 5, "the new log file")
    H.curl(t.socks_port, "http://localhost:" .. http .. "/")
    H.wait_for(function() return H.count(t.clog, "%[sock%] %- localhost") == 1 end, 5, "lines in the new file")
    assert.is_true(H.alive(t.client_pid))
    H.stop_tunnel(t)
  end)
end)

describe("SIGTERM", function()
  local dir, pki, echo, http

  H.fixture({ "echo", "http" }, function(...)
    dir, pki, echo, http = ...
  end)

  it("drains the server: GOAWAY, sessions in flight finish, then exit 0", function()
    local port = H.free_port()
    local slog = dir .. "/drain-server.log"
    local status = dir .. "/drain-server.status"
    local spid = H.spawn_with_status("server", { H.bin, "-role=server", "-server.allow.local", "-server.addr=127.0.0.1:" .. port,
      "-tls.server.cert=" .. pki.server_cert, "-tls.server.key=" .. pki.server_key, "-tls.server.ca=" .. pki.ca,
      "-sla.log.path=" .. slog, "-drain.sec=20" }, slog .. ".out", status)
    H.wait_for(function() return H.count(slog, "server: listening") == 1 end, 10, "server")
    local t = H.tunnel(dir, pki, { no_server = true, server_port = port })
    -- a session in flight
    local c = H.connect(t.socks_port)
    c:send(H.socks_connect("localhost", echo) .. "before")
    assert.are.equal("\5\0\5\0\0\1\0\0\0\0\0\0before", (H.recv(c, 18)))
    H.sh("kill -TERM " .. spid)
    H.wait_for(function() return H.count(t.clog, "goaway %(last session 1%)") == 1 end, 5, "the client to see GOAWAY")
    -- new connections are no longer accepted, the session in flight still works
    assert.is_false(H.connectable(port))
    c:send("after")
    assert.are.equal("after", (H.recv(c, 5)))
    assert.is_true(H.alive(spid))
    c:shutdown("send")
    H.recv_all(c, 5)
    c:close()
    H.wait_for(function() return not H.alive(spid) end, 10, "the server to exit")
    H.wait_for(function() return H.read(status) ~= "" end, 5, "the exit status")
    assert.are.equal("0", H.read(status):match("%d+"))
    H.stop_tunnel(t)
  end)

  -- The server is stopped and every buffer is full: the client still ends at -drain.sec, and
  -- frees what could not leave (the sanitizer run checks for leaks at exit).
  it("ends the client at -drain.sec while the server is stopped and every buffer is full", function()
    local t = H.tunnel(dir, pki, { client = { ["drain.sec"] = 1 } })
    local c = H.connect(t.socks_port)
    c:send(H.socks_connect("localhost", echo) .. "x")
    assert.are.equal(13, #(H.recv(c, 13)))
    H.sh("kill -STOP " .. t.server_pid)
    c:settimeout(2)
    local chunk, sent = string.rep("z", 1024 * 1024), 0
    for _ = 1, 64 do -- until the client's buffers and the kernel's are full
      local n, err, part = c:send(chunk)
      sent = sent + (n or part or 0)
      if err then break end
    end
    assert.is_true(sent > 1024 * 1024, "only " .. sent .. " bytes went in")
    H.sh("kill -TERM " .. t.client_pid)
    H.wait_for(function() return not H.alive(t.client_pid) end, 10, "the client to exit")
    assert.are.equal(1, H.count(t.clog, "%[main%] exit"))
    c:close()
    H.sh("kill -CONT " .. t.server_pid)
    H.stop_tunnel(t)
  end)

  it("stops the client's listener and exits 0 once its sessions end", function()
    local t = H.tunnel(dir, pki)
    local c = H.connect(t.socks_port)
    c:send(H.socks_connect("localhost", echo) .. "x")
    assert.are.equal(13, #(H.recv(c, 13)))
    H.sh("kill -TERM " .. t.client_pid)
    H.wait_for(function() return H.count(t.clog, "SIGTERM: draining 1 sessions") == 1 end, 5, "drain start")
    assert.is_true(H.alive(t.client_pid))
    c:close()
    H.wait_for(function() return not H.alive(t.client_pid) end, 10, "the client to exit")
    assert.are.equal(1, H.count(t.clog, "%[main%] exit"))
    H.stop_tunnel(t)
  end)
end)
