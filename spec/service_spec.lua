-- Running as a service: `make install` (binary, tunnels(1) from the flag table, docs,
-- examples, units), the units (dist/systemd/) pass systemd-analyze verify and keep their
-- sandboxing score, and the process tells a service manager when it is ready, reloading and
-- stopping (the sd_notify protocol: datagrams to $NOTIFY_SOCKET). systemd is not PID 1 here, so
-- the spec plays the manager's part of the protocol with a socket of its own.
local H = require("spec.helper")
local unix = require("socket.unix")

describe("make install", function()
  local dir

  setup(function() dir = H.tmpdir() end)
  teardown(function() H.sh("rm -rf " .. dir) end)

  it("puts the binary, tunnels(1), the docs, examples and units under DESTDIR and PREFIX", function()
    local out, code = H.sh("make -s -C " .. H.root .. " install DESTDIR=" .. dir .. " PREFIX=/usr")
    assert.are.equal(0, code, out)
    for _, f in ipairs({ "/usr/bin/tunnels", "/usr/share/man/man1/tunnels.1", "/usr/share/doc/tunnels/README.md",
      "/usr/share/doc/tunnels/LICENSE", "/usr/share/doc/tunnels/SECURITY.md", "/usr/share/doc/tunnels/examples/server.conf",
      "/usr/lib/systemd/system/tunnels-server@.service", "/usr/lib/systemd/system/tunnels-client@.service" }) do
      assert.are.equal(0, select(2, H.sh("test -s " .. dir .. f)), f)
    end
    out = H.sh(dir .. "/usr/bin/tunnels -h")
    assert.matches("usage: tunnels", out)
    -- another prefix: the units start the binary where it went
    out, code = H.sh("make -s -C " .. H.root .. " install DESTDIR=" .. dir .. "/local PREFIX=/usr/local")
    assert.are.equal(0, code, out)
    assert.is_truthy(H.read(dir .. "/local/usr/local/lib/systemd/system/tunnels-server@.service"):find(
      "ExecStart=/usr/local/bin/tunnels -config /etc/tunnels/%i.conf", 1, true))
  end)

  it("installs a man page that renders without a warning and lists every flag of -h with its default", function()
    local page = H.build .. "/tunnels.1"
    local warnings, code = H.sh("groff -man -Tutf8 -ww -z " .. page)
    assert.are.equal(0, code, warnings)
    assert.are.equal("", warnings)
    local text = H.read(page)
    local n = 0
    for name in H.sh(H.bin .. " -h"):gmatch("\n  %-([%w%.]+)") do
      n = n + 1
      assert.is_truthy(text:find("\\fB\\-" .. name:gsub("%-", "\\-") .. "\\fR", 1, true), name .. " missing from tunnels(1)")
    end
    assert.is_true(n > 50, n .. " flags")
    assert.is_truthy(text:find("(default 16)", 1, true))
  end)
end)

describe("the systemd units", function()
  local dir

  setup(function() dir = H.tmpdir() end)
  teardown(function() H.sh("rm -rf " .. dir) end)

  -- An instance of each template, its ExecStart pointed at this build.
  local function instances()
    local units = {}
    for _, role in ipairs({ "server", "client" }) do
      local text = H.read(H.root .. "/dist/systemd/tunnels-" .. role .. "@.service")
      assert.is_truthy(text:find("ExecStart=/usr/bin/tunnels -config /etc/tunnels/%i.conf", 1, true), role)
      local path = dir .. "/tunnels-" .. role .. "@spec.service"
      H.write(path, (text:gsub("/usr/bin/tunnels", H.bin)))
      units[#units + 1] = path
    end
    return units
  end

  it("pass systemd-analyze verify", function()
    local units = instances()
    local out, code = H.sh("cd " .. dir .. " && systemd-analyze verify " .. table.concat(units, " "))
    assert.are.equal(0, code, out)
    assert.are.equal("", out)
  end)

  it("keep their sandboxing: systemd-analyze security rates each 2.0 or better (OK)", function()
    for _, unit in ipairs(instances()) do
      local out = H.sh("cd " .. dir .. " && systemd-analyze security --offline=true " .. unit)
      local score = tonumber(out:match("Overall exposure level for [^:]+: (%d+%.%d+)"))
      assert.is_truthy(score, out)
      assert.is_true(score <= 2.0, unit .. " rated " .. score)
    end
  end)
end)

describe("the logrotate file", function()
  it("parses, rotates the units' logs and HUPs them after (logrotate -d, a dry run)", function()
    local dir = H.tmpdir()
    local text = H.read(H.root .. "/dist/logrotate/tunnels")
    assert.is_truthy(text:find("/var/log/tunnels/*.log {", 1, true))
    assert.is_truthy(text:find("create 0640 tunnels tunnels", 1, true))
    assert.is_truthy(text:find("--signal=HUP --kill-whom=main 'tunnels-server@*.service'", 1, true))
    -- the same file on the spec's own directory and user
    H.write(dir .. "/logrotate.conf", (text:gsub("/var/log/tunnels/", dir .. "/logs/"):gsub("tunnels tunnels", "root root")))
    H.sh("mkdir -p " .. dir .. "/logs && echo line > " .. dir .. "/logs/server.log")
    local out, code = H.sh("logrotate -d -f -s " .. dir .. "/state " .. dir .. "/logrotate.conf")
    assert.are.equal(0, code, out)
    assert.is_nil(out:lower():find("error"), out)
    assert.is_truthy(out:find("running postrotate script", 1, true), out)
    H.sh("rm -rf " .. dir)
  end)
end)

describe("readiness (sd_notify)", function()
  local dir, pki

  setup(function()
    dir = H.tmpdir()
    pki = H.certs(dir)
  end)
  teardown(function()
    H.stop_all()
    H.sh("rm -rf " .. dir)
  end)

  -- The manager's socket: a unix datagram socket the process sends its states to.
  local function manager(path)
    local s = assert(unix.dgram())
    assert(s:bind(path))
    s:settimeout(0.1)
    local got = {}
    return function(wanted, timeout)
      H.wait_for(function()
        local msg = s:receive()
        if msg then got[#got + 1] = msg end
        for _, m in ipairs(got) do
          if m:find(wanted, 1, true) then return true end
        end
        return false
      end, timeout or 10, wanted)
      return got
    end, s
  end

  it("says READY=1 once it listens, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM", function()
    local path = dir .. "/notify.sock"
    local wait, s = manager(path)
    local port = H.free_port()
    local log = dir .. "/server.log"
    local pid = H.spawn("server", { H.bin, "-role=server", "-server.addr=127.0.0.1:" .. port,
      "-tls.server.cert=" .. pki.server_cert, "-tls.server.key=" .. pki.server_key,
      "-tls.server.ca=" .. pki.ca, "-sla.log.path=" .. log }, log .. ".out", "NOTIFY_SOCKET=" .. path)
    local got = wait("READY=1")
    assert.are.equal("READY=1\nSTATUS=listening", got[1])
    -- ready means listening: a connection is taken at once
    assert.is_true(H.connectable(port))
    H.sh("kill -HUP " .. pid)
    got = wait("STATUS=reloaded (SIGHUP)")
    assert.are.equal("RELOADING=1", got[2])
    assert.are.equal("READY=1\nSTATUS=reloaded (SIGHUP)", got[3])
    H.sh("kill -TERM " .. pid)
    got = wait("STOPPING=1")
    assert.are.equal("STOPPING=1", got[4])
    H.wait_for(function() return not H.alive(pid) end, 15, "the server to exit")
    s:close()
  end)

  it("says nothing, and runs, without NOTIFY_SOCKET or with one nobody listens on", function()
    local port = H.free_port()
    local log = dir .. "/server2.log"
    local pid = H.spawn("server2", { H.bin, "-role=server", "-server.addr=127.0.0.1:" .. port,
      "-tls.server.cert=" .. pki.server_cert, "-tls.server.key=" .. pki.server_key,
      "-tls.server.ca=" .. pki.ca, "-sla.log.path=" .. log }, log .. ".out",
      "NOTIFY_SOCKET=" .. dir .. "/nobody.sock")
    H.wait_for(function() return H.connectable(port) end, 10, "the server to listen")
    assert.are.equal(1, H.count(log, '%[warn%] %[main%] cannot tell the service manager "READY=1'))
    assert.is_true(H.alive(pid))
    H.stop(pid)
  end)
end)
