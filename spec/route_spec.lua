-- The route hook end to end: client rules (direct, block, tunnel, a named server, failover),
-- the server's ACL on names and resolved addresses, SIGHUP reload, failing hooks.
local H = require("spec.helper")
H.dump_on_failure()

describe("routing", function()
  local dir, pki, http, echo

  H.fixture({ "http", "echo" }, function(...)
    dir, pki, http, echo = ...
  end)

  local function script(name, text)
    local path = dir .. "/" .. name
    H.write(path, text)
    return path
  end

  it("sends one host direct, blocks another and tunnels the rest (rule library)", function()
    local rules = script("rules.txt", table.concat({
      "# internal names go direct, ads are blocked, the rest is tunnelled",
      "DOMAIN,localhost,direct",
      "DOMAIN-SUFFIX,ads.example,block",
      "MATCH,tunnel",
    }, "\n"))
    local t = H.tunnel(dir, pki, { client = { ["lua.script"] = script("route.lua", [[
      local set = require("tunnels.rules").load("]] .. rules .. [[")
      return { route = function(req) return set:match(req) end }
    ]]) } })
    -- direct: the client connects itself; the server never hears of it
    H.assert_hello(t.socks_port, http, "direct")
    assert.are.equal(1, H.count(t.clog, H.LOG.sock_open .. "localhost:" .. http .. " = %d+ direct"))
    assert.are.equal(0, H.count(t.slog, "localhost:" .. http))
    -- tunnelled, by address
    local body, code = H.curl(t.socks_port, "http://127.0.0.1:" .. http .. "/")
    assert.are.equal(H.HELLO, body, "tunnel (curl exit " .. code .. ")")
    assert.are.equal(1, H.count(t.slog, "%[sock%] %+ 127%.0%.0%.1:" .. http))
    -- blocked: a SOCKS refusal at once, logged with the rule
    local out, bcode = H.curl(t.socks_port, "http://x.ads.example:" .. http .. "/")
    assert.are_not.equal(0, bcode, out)
    assert.are.equal(1, H.count(t.clog, "x%.ads%.example:" .. http .. " blocked: DOMAIN%-SUFFIX,ads%.example,block"))
    assert.are.equal(0, H.count(t.slog, "ads%.example"))
    -- 8 MiB down the direct path, byte count exact
    local n = 8 * 1024 * 1024
    local size = H.sh("curl -sS --max-time 20 --socks5-hostname 127.0.0.1:" .. t.socks_port ..
      " http://localhost:" .. http .. "/bytes/" .. n .. " | wc -c")
    assert.are.equal(n, tonumber(size:match("%d+")))
    -- half-close on the direct path: the echo comes back whole, then the close
    local c = H.connect(t.socks_port)
    c:send(H.socks_connect("localhost", echo))
    assert.are.equal("\5\0", H.recv(c, 2))
    assert.are.equal("\5\0\0\1\0\0\0\0\0\0", H.recv(c, 10))
    local payload = string.rep("0123456789", 30000)
    c:send(payload)
    c:shutdown("send")
    local back, how = H.recv_all(c, 10)
    c:close()
    assert.are.equal("closed", how)
    assert.are.equal(#payload, #back)
    assert.is_true(back == payload)
    -- the app's first bytes sent along with its greeting and request (no wait for the replies)
    c = H.connect(t.socks_port)
    c:send(H.socks_connect("localhost", http) .. "GET / HTTP/1.0\r\n\r\n")
    assert.are.equal("\5\0\5\0\0\1\0\0\0\0\0\0", (H.recv(c, 12)))
    local resp, rhow = H.recv_all(c, 10)
    c:close()
    assert.are.equal("closed", rhow)
    assert.truthy(resp:find(H.HELLO, 1, true), resp)
    assert.are.equal("", H.sh("grep -F '[lua]' " .. t.clog .. " || true"))
    H.stop_tunnel(t)
  end)

  it("fails a direct session whose destination refuses, and logs why", function()
    local t = H.tunnel(dir, pki, { client = { ["lua.script"] = script("direct.lua",
      'return { route = function() return "direct" end }') } })
    local dead = H.free_port()
    local _, code = H.curl(t.socks_port, "http://127.0.0.1:" .. dead .. "/")
    assert.are_not.equal(0, code)
    H.wait_for(function() return H.count(t.clog, H.LOG.sock_close .. "127%.0%.0%.1:" .. dead .. " = %d+ direct connect: Connection refused$") == 1 end,
      5, "the refusal in the client's log")
    H.assert_hello(t.socks_port, http, "next direct session")
    H.stop_tunnel(t)
  end)

  it("sends sessions to the server the hook names, and past a server that is down", function()
    local live = H.tunnel(dir, pki, { no_client = true })
    local dead = H.free_port()
    local servers = "dead=127.0.0.1:" .. dead .. ",live=127.0.0.1:" .. live.server_port
    -- named: the hook picks "live" although "dead" is first
    local t = H.tunnel(dir, pki, { no_server = true, server_port = live.server_port, client = {
      ["server.addr"] = servers,
      ["lua.script"] = script("named.lua", 'return { route = function(req, cfg) return "tunnel", "live" end }'),
    } })
    for i = 1, 3 do H.assert_hello(t.socks_port, http, "named " .. i) end
    H.stop(t.client_pid)
    -- default route (the first server): the start-up dial finds it dead and marks it down,
    -- so every session goes to live
    local f = H.tunnel(dir, pki, { no_server = true, server_port = live.server_port, client = {
      ["server.addr"] = servers } })
    H.wait_for(function() return H.count(f.clog, "server dead %(127%.0%.0%.1:" .. dead .. "%) marked down") >= 1 end,
      5, "the dead server marked down")
    for i = 1, 4 do H.assert_hello(f.socks_port, http, "failover " .. i) end
    assert.are.equal(7, H.count(live.slog, H.LOG.sock_open .. "localhost:" .. http))
    -- the dead server is probed again after its backoff, and stays down
    H.wait_for(function() return H.count(f.clog, "probing server dead") >= 1 end, 5, "a probe")
    H.stop(f.client_pid)
    H.stop(live.server_pid)
  end)

  it("a server denies loopback destinations by name and by address, by default", function()
    local t = H.tunnel(dir, pki, { server = { ["server.allow.local"] = "false" } })
    local _, code = H.curl(t.socks_port, "http://localhost:" .. http .. "/")
    assert.are_not.equal(0, code)
    local _, code2 = H.curl(t.socks_port, "http://127.0.0.1:" .. http .. "/")
    assert.are_not.equal(0, code2)
    local _, code3 = H.curl(t.socks_port, "http://[::1]:" .. http .. "/")
    assert.are_not.equal(0, code3)
    H.wait_for(function() return H.count(t.slog, "denied: local address") >= 3 end, 5, "three denials")
    -- by name: denied on the address it resolved to
    assert.are.equal(1, H.count(t.slog, H.LOG.sock_close .. "localhost:" .. http .. " = %d+ .*denied: local address 127%.0%.0%.1"))
    assert.are.equal(1, H.count(t.slog, H.LOG.sock_close .. "127%.0%.0%.1:" .. http .. " = %d+ denied: local address 127%.0%.0%.1"))
    assert.are.equal(1, H.count(t.slog, "denied: local address ::1"))
    -- the client sees a RESET for the policy, per session; the connection goes on
    H.wait_for(function() return H.count(t.clog, "reset by peer: refused by policy") >= 3 end, 5, "the client's resets")
    assert.are.equal(0, H.count(t.clog, H.LOG.conn_close))
    H.stop_tunnel(t)
  end)

  H.it_root("a server denies this host's own addresses: a listener on 0.0.0.0 is reached through them", function()
    -- a host of the spec's own: a network namespace whose address 10.200.0.1 is on its loopback
    local ns = "tn-acl-" .. dir:match("([^.]+)$")
    local out, code = H.sh("ip netns add " .. ns .. " && ip -n " .. ns .. " link set lo up && " ..
      "ip -n " .. ns .. " addr add 10.200.0.1/32 dev lo")
    assert(code == 0, "cannot make network namespace " .. ns .. " (needs root): " .. out)
    -- the namespace goes whatever happens here
    local ok, err = pcall(function()
      local port = H.free_port()
      local dpid = H.spawn("tn-dest-any", { "ip", "netns", "exec", ns, H.build .. "/tn-dest", "-addr", "0.0.0.0:" .. port,
        "-mode", "http" }, dir .. "/dest-any.log")
      H.wait_for(function() return H.connectable(port, nil, ns) end, 10, "tn-dest on 0.0.0.0")
      -- local destinations allowed, private ones too: only the host rule can deny 10.200.0.1
      local t = H.tunnel(dir, pki, { netns = ns, server = { ["server.allow.local"] = "false",
        ["server.allow.private"] = "true" } })
      local curl = "ip netns exec " .. ns .. " curl -sS --max-time 5 --socks5-hostname 127.0.0.1:" .. t.socks_port
      local _, bad = H.sh(curl .. " http://10.200.0.1:" .. port .. "/")
      assert.are_not.equal(0, bad)
      H.wait_for(function() return H.count(t.slog, "%[sock%] %- 10%.200%.0%.1:" .. port ..
        " = %d+ denied: this host's address 10%.200%.0%.1") == 1 end, 5, "the denial")
      H.stop_tunnel(t)
      -- with -server.allow.local (and .private: 10/8) the same request goes through
      local t2 = H.tunnel(dir, pki, { netns = ns, server = { ["server.allow.local"] = "true",
        ["server.allow.private"] = "true" } })
      local body, ok = H.sh("ip netns exec " .. ns .. " curl -sS --max-time 5 --socks5-hostname 127.0.0.1:" ..
        t2.socks_port .. " http://10.200.0.1:" .. port .. "/")
      assert.are.equal(0, ok, body)
      assert.are.equal(H.HELLO, body)
      H.stop_tunnel(t2)
      H.stop(dpid)
    end)
    H.sh("ip netns del " .. ns)
    if not ok then error(err, 0) end
  end)

  it("a server script allows one loopback address with a rule line", function()
    local t = H.tunnel(dir, pki, { server = { ["server.allow.local"] = "false",
      ["lua.script"] = script("acl.lua", [[
        local set = require("tunnels.rules").compile({ "IP-CIDR,127.0.0.1/32,allow", "DOMAIN,localhost,deny" })
        return { route = function(req, cfg)
          local d = set:match(req)
          if d then return d, "rule" end
          return tunnels.default.route(req, cfg)
        end }
      ]]) } })
    local body = H.curl(t.socks_port, "http://127.0.0.1:" .. http .. "/")
    assert.are.equal(H.HELLO, body, "the allowed address")
    local _, code = H.curl(t.socks_port, "http://localhost:" .. http .. "/")
    assert.are_not.equal(0, code)
    H.wait_for(function() return H.count(t.slog, "localhost:" .. http .. " = %d+ denied: rule") == 1 end, 5, "the denial")
    H.stop_tunnel(t)
  end)

  it("a client's route hook that errors or never returns is logged and the default decision used", function()
    local t = H.tunnel(dir, pki, {
      client = { ["lua.budget.ms"] = "20", ["lua.script"] = script("bad-client.lua", [[
        local n = 0
        return { route = function(req)
          n = n + 1
          if n % 2 == 1 then error("boom in route") end
          while true do end
        end }
      ]]) },
    })
    for i = 1, 4 do H.assert_hello(t.socks_port, http, "request " .. i) end
    assert.are.equal(2, H.count(t.clog, "%[lua%] route: .*boom in route"))
    assert.is_true(H.count(t.clog, "stack traceback") >= 2)
    assert.are.equal(2, H.count(t.clog, "%[lua%] route: stopped: ran past its budget"))
    H.stop_tunnel(t)
  end)

  it("a hook cannot take more memory than -lua.mem.max.mib: the allocation fails, the default decides", function()
    local t = H.tunnel(dir, pki, {
      client = { ["lua.mem.max.mib"] = "24", ["lua.script"] = script("hoard.lua", [[
        local hoard, tried = {}, false
        return { route = function(req)
          if not tried then
            tried = true
            hoard[1] = string.rep("x", 256 * 1048576) -- one allocation far past the bound
          end
          hoard[#hoard + 1] = string.rep(tostring(#hoard), 2 * 1048576) -- 2 MiB more a call
          return "tunnel"
        end }
      ]]) },
    })
    for i = 1, 20 do H.assert_hello(t.socks_port, http, "request " .. i) end
    -- the first call's 256 MiB, and the calls that would pass 24 MiB once ~10 are hoarded
    -- (the count says the bound held: ~10 calls of 2 MiB fit under 24 MiB with the state's own)
    local failed = H.count(t.clog, "%[lua%] route: not enough memory")
    assert.is_true(failed >= 5 and failed <= 16, failed .. " calls failed")
    H.stop_tunnel(t)
  end)

  it("a server's ACL fails closed: a hook that errs, loops, answers nil or lies denies", function()
    local t = H.tunnel(dir, pki, {
      server = { ["lua.budget.ms"] = "20", ["lua.script"] = script("bad-server.lua", [[
        local n = 0
        local liar = setmetatable({}, { __tostring = function() error("no string for you") end })
        return { route = function(req)
          n = n + 1
          if n == 1 then error("boom in acl") end
          if n == 2 then while true do end end
          if n == 3 then return nil end
          if n == 4 then return "maybe" end
          if n == 5 then return liar end
          return "allow"
        end }
      ]]) },
    })
    for i = 1, 5 do
      local _, code = H.curl(t.socks_port, "http://localhost:" .. http .. "/")
      assert.are_not.equal(0, code, "request " .. i)
    end
    H.wait_for(function() return H.count(t.slog, H.LOG.sock_close .. "localhost:" .. http .. " = %d+ denied: the route hook failed") == 5 end,
      5, "five denials")
    assert.are.equal(1, H.count(t.slog, "%[lua%] route: .*boom in acl"))
    assert.are.equal(1, H.count(t.slog, "%[lua%] route: stopped: ran past its budget"))
    assert.are.equal(1, H.count(t.slog, "%[lua%] route: answered nil for localhost:" .. http))
    assert.are.equal(1, H.count(t.slog, '%[lua%] route: answered "maybe" for localhost:' .. http))
    assert.are.equal(1, H.count(t.slog, "%[lua%] route: answered table for localhost:" .. http))
    -- the server lived through the liar's __tostring, and serves what the hook allows
    H.assert_hello(t.socks_port, http, "the allowed request")
    H.stop_tunnel(t)
  end)

  it("SIGHUP reloads a good script and keeps the old one when the new one is broken", function()
    local path = script("reload.lua", 'return { route = function() return "block", "first script" end }')
    local t = H.tunnel(dir, pki, { client = { ["lua.script"] = path } })
    local _, code = H.curl(t.socks_port, "http://localhost:" .. http .. "/")
    assert.are_not.equal(0, code)
    assert.are.equal(1, H.count(t.clog, "blocked: first script"))
    H.write(path, 'return { route = function() return "tunnel" end }')
    H.sh("kill -HUP " .. t.client_pid)
    H.wait_for(function() return H.count(t.clog, "SIGHUP: log reopened, script reloaded") == 1 end, 5, "the reload")
    H.assert_hello(t.socks_port, http, "after a good reload")
    H.write(path, 'return { route = function( }')
    H.sh("kill -HUP " .. t.client_pid)
    H.wait_for(function() return H.count(t.clog, "script not reloaded, the old one stays") == 1 end, 5, "the refusal")
    assert.are.equal(1, H.count(t.clog, "reload%.lua:1:"))
    H.assert_hello(t.socks_port, http, "after a broken reload")
    H.write(path, 'while true do end')
    H.sh("kill -HUP " .. t.client_pid)
    H.wait_for(function() return H.count(t.clog, "script not reloaded, the old one stays") == 2 end, 10, "the second refusal")
    H.assert_hello(t.socks_port, http, "after a looping reload")
    assert.is_true(H.alive(t.client_pid))
    H.stop_tunnel(t)
  end)
end)
