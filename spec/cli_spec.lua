-- The command line (engine/flags.c, main.c): -h, bad flags and values (exit 2, one line naming
-- flag and value), missing files (exit 1, naming the file), the open-proxy guard.
local H = require("spec.helper")

local function run(args)
  local out, code = H.sh(H.bin .. " " .. args .. " </dev/null")
  return out, code
end

describe("command line", function()
  it("-h lists every flag of the design with its default", function()
    local out, code = run("-h")
    assert.are.equal(0, code)
    for _, f in ipairs({ "-role", "-server.net", "-server.addr", "-client.net", "-client.addr",
      "-remux.reuse.max.sec", "-remux.reuse.max.cnt", "-remux.idle.max.sec", "-remux.conn.max.cnt",
      "-remux.net", "-eagersocks.net", "-tls.server.key", "-tls.server.cert", "-tls.client.ca",
      "-tls.client.key", "-tls.client.cert", "-tls.server.ca", "-sla.log.level", "-sla.log.path",
      "-sla.dingtalk.token", "-sla.dingtalk.secret", "-lua.script", "-server.open" }) do
      local listed = out:find("\n  " .. f .. " ", 1, true) or out:find("\n  " .. f .. "\n", 1, true)
      assert.is_truthy(listed, f .. " missing from -h")
    end
    assert.matches("default 16%)", out)
  end)

  it("names the flag and the value that is not a number, exit 2", function()
    local out, code = run("-role=client -server.addr=127.0.0.1:1 -remux.reuse.max.cnt=abc")
    assert.are.equal(2, code)
    assert.are.equal('tunnels: -remux.reuse.max.cnt: "abc" is not a number\n', out)
  end)

  it("refuses unknown flags, bad enums, missing values and a missing role, exit 2", function()
    local cases = {
      { "-role=client -nope=1", "-nope: no such flag" },
      { "-role=peer -server.addr=x:1", '-role: "peer" is not client or server' },
      { "-server.addr=x:1", "-role: missing" },
      { "-role=client -server.addr=x:1 -remux.net=udp", '-remux.net: "udp"' },
      { "-role=client -server.addr=x:1 -eagersocks.net=quic", '-eagersocks.net: "quic"' },
      { "-role=client -server.addr=x:1 -sla.log.level=loud", '-sla.log.level: "loud"' },
      { "-role=client -server.addr=x:1 -sla.log.level=1000", '-sla.log.level: "1000"' },
      { "-role=client -server.addr=x:1 -remux.reuse.max.cnt=0", "out of range" },
      { "-role=client -server.addr", "-server.addr: needs a value" },
      { "-role=client", "-server.addr: missing" },
      { "-role=server -server.addr=x:1 -server.open=maybe", '"maybe" is not true or false' },
      { "-role=client stray", '"stray": unexpected argument' },
    }
    for _, c in ipairs(cases) do
      local out, code = run(c[1])
      assert.are.equal(2, code, c[1])
      assert.is_truthy(out:find(c[2], 1, true), c[1] .. " said: " .. out)
      assert.are.equal(1, select(2, out:gsub("\n", "")), "one line for " .. c[1])
    end
  end)

  it("takes -name value as well as -name=value, and --name", function()
    local dir = H.tmpdir()
    local out, code = run("-role client -server.addr 127.0.0.1:1 --client.addr=127.0.0.1:0 -sla.log.path " ..
      dir .. "/x.log -lua.script " .. dir .. "/missing.lua")
    assert.are.equal(1, code)
    assert.matches("missing.lua", out)
  end)

  it("names a missing certificate or script file, exit 1, before listening", function()
    local dir = H.tmpdir()
    local port = H.free_port()
    local out, code = run("-role=server -server.addr=127.0.0.1:" .. port .. " -sla.log.path= -tls.server.ca=" ..
      dir .. "/ca.pem -tls.server.cert=" .. dir .. "/nope.pem -tls.server.key=" .. dir .. "/nope.key")
    assert.are.equal(1, code)
    assert.matches("tls.server.cert: " .. dir:gsub("%-", "%%-") .. "/nope.pem: No such file", out)
    out, code = run("-role=client -server.addr=127.0.0.1:1 -client.addr=127.0.0.1:" .. port ..
      " -sla.log.path= -lua.script=" .. dir .. "/gone.lua")
    assert.are.equal(1, code)
    assert.matches("lua.script: .*gone.lua", out)
    assert.is_false(H.connectable(port))
  end)

  it("refuses to start an open proxy unless told so", function()
    local pki = H.certs(H.tmpdir())
    local out, code = run("-role=server -server.addr=127.0.0.1:" .. H.free_port() .. " -sla.log.path= -tls.server.cert=" ..
      pki.server_cert .. " -tls.server.key=" .. pki.server_key)
    assert.are.equal(1, code)
    assert.matches("open proxy", out)
    out, code = run("-role=server -remux.net=tcp -server.addr=127.0.0.1:" .. H.free_port() .. " -sla.log.path=")
    assert.are.equal(1, code)
    assert.matches("open proxy", out)
  end)

  it("reports a script that does not load, with its error", function()
    local dir = H.tmpdir()
    H.write(dir .. "/bad.lua", "return {pick = function( end}")
    local out, code = run("-role=client -server.addr=127.0.0.1:1 -client.addr=127.0.0.1:0 -sla.log.path= -lua.script=" .. dir .. "/bad.lua")
    assert.are.equal(1, code)
    assert.matches("bad.lua:1:", out)
    H.write(dir .. "/notable.lua", "return 42")
    out, code = run("-role=client -server.addr=127.0.0.1:1 -client.addr=127.0.0.1:0 -sla.log.path= -lua.script=" .. dir .. "/notable.lua")
    assert.are.equal(1, code)
    assert.matches("must return a table of hooks", out)
  end)
end)

describe("a config file (-config)", function()
  local dir, pki, http
  H.fixture({ "http" }, function(...) dir, pki, http = ... end)

  it("sets flags by their names, one a line, and the command line overrides it", function()
    local conf = dir .. "/server.conf"
    H.write(conf, table.concat({
      "# the server of a spec",
      "",
      "role = server",
      "server.addr = 127.0.0.1:1        ", -- overridden below
      '  tls.server.cert = "' .. pki.server_cert .. '"',
      "tls.server.key " .. pki.server_key,
      "-tls.server.ca=" .. pki.ca,
      "server.allow.local",              -- a bare boolean: true
      "sla.log.level = debug",           -- overridden below
      "",
    }, "\n"))
    local port = H.free_port()
    local log = dir .. "/server-conf.log"
    local pid = H.spawn("server-conf", { H.bin, "-config", conf, "-server.addr=127.0.0.1:" .. port,
      "-sla.log.path=" .. log, "-sla.log.level=info" }, log .. ".out")
    H.wait_for(function() return H.count(log, "%[main%] server: listening") > 0 end, 10, "the server to listen")
    local t = H.tunnel(dir, pki, { no_server = true, server_port = port })
    H.assert_hello(t.socks_port, http)
    assert.are.equal(0, H.count(log, "%[debg%]"), "-sla.log.level from the command line")
    H.stop(t.client_pid)
    H.stop(pid)
  end)

  it("reads the examples' config files (they get as far as their certificate files)", function()
    for _, name in ipairs({ "server.conf", "client.conf" }) do
      local out, code = run("-config " .. H.root .. "/examples/" .. name .. " -sla.log.path=")
      assert.are.equal(1, code, name .. ": " .. out)
      assert.matches("/etc/tunnels/", out)
      assert.is_nil(out:find(name .. ":%d"), name .. ": " .. out)
    end
  end)

  it("names the file and line of a bad one, exit 2; a missing file, exit 1", function()
    local conf = dir .. "/bad.conf"
    local cases = {
      { "role = client\nremux.reuse.max.cnt = abc\n", ':2: -remux.reuse.max.cnt: "abc" is not a number' },
      { "nosuch = 1\n", ":1: -nosuch: no such flag (see -h)" },
      { "# fine\nconfig = other.conf\n", ":2: -config: a config file cannot name another" },
      { "remux.net\n", ":1: -remux.net: needs a value" },
      { "role = client\nsla.log.path = a\0b\n", ":2: a NUL byte" },
      { ("#"):rep(5000) .. "\n", ":1: longer than 4096 bytes" },
    }
    for _, c in ipairs(cases) do
      H.write(conf, c[1])
      local out, code = run("-config " .. conf .. " -role=client -server.addr=127.0.0.1:1")
      assert.are.equal(2, code, c[2])
      assert.are.equal("tunnels: " .. conf .. c[2] .. "\n", out)
    end
    local out, code = run("-config=" .. dir .. "/none.conf -role=client -server.addr=127.0.0.1:1")
    assert.are.equal(1, code)
    assert.are.equal("tunnels: -config: " .. dir .. "/none.conf: No such file or directory\n", out)
  end)
end)

describe("the SOCKS5 listener", function()
  it("stays on loopback unless -client.public says otherwise, and warns then", function()
    local port = H.free_port()
    local out, code = run("-role=client -server.addr=127.0.0.1:1 -sla.log.path= -client.addr=0.0.0.0:" .. port)
    assert.are.equal(1, code)
    assert.matches("is not a loopback address", out)
    local dir = H.tmpdir()
    local log = dir .. "/public.log"
    local pid = H.spawn("public-client", { H.bin, "-role=client", "-server.addr=127.0.0.1:1",
      "-client.addr=0.0.0.0:" .. port, "-client.public", "-sla.log.path=" .. log }, log .. ".out")
    H.wait_for(function() return H.count(log, "%[warn%] %[main%] the SOCKS5 listener 0%.0%.0%.0:%d+ is not on loopback") == 1 end, 5, "the warning")
    H.stop(pid)
    -- loopback addresses pass the guard: start-up gets as far as listening, on a port taken here
    local socket = require("socket")
    for _, a in ipairs({ { "127.0.0.1", "127.0.0.1" }, { "127.1.2.3", "127.1.2.3" }, { "[::1]", "::1" } }) do
      local taken = socket.bind(a[2], 0)
      if taken then
        local _, p = taken:getsockname()
        out, code = run("-role=client -server.addr=127.0.0.1:1 -sla.log.path= -client.addr=" .. a[1] .. ":" .. p)
        taken:close()
        assert.are.equal(1, code, a[1])
        assert.matches("cannot listen on", out)
      end
    end
  end)
end)
