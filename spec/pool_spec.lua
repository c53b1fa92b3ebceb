-- The ReMux pool as the logs show it, and the Lua policy gate: the default rule (16 sessions,
-- then a new connection; idle ones closed), a script's own rule, and hooks that fail.
local H = require("spec.helper")
H.dump_on_failure()

local function ids(log, pattern)
  local out = {}
  for id in H.read(log):gmatch(pattern) do out[#out + 1] = id end
  return out
end

describe("ReMux pool", function()
  local dir, pki, http

  H.fixture({ "http" }, function(...)
    dir, pki, http = ...
  end)

  it("carries 16 sessions on a connection, then dials a new one and retires the old", function()
    local t = H.tunnel(dir, pki)
    for i = 1, 20 do
      local body = H.curl(t.socks_port, "http://localhost:" .. http .. "/")
      assert.are.equal("hello from tn-dest\n", body, "request " .. i)
    end
    local conns = ids(t.clog, "%[conn%] %+ (%x+) =")
    assert.are.equal(2, #conns)
    local first, second = conns[1], conns[2]
    for sid = 1, 16 do assert.are.equal(1, H.count(t.clog, "%[sess%] %+ " .. first .. ":" .. sid .. " = ")) end
    assert.are.equal(0, H.count(t.clog, "%[sess%] %+ " .. first .. ":17 "))
    for sid = 1, 4 do assert.are.equal(1, H.count(t.clog, "%[sess%] %+ " .. second .. ":" .. sid .. " = ")) end
    -- the retired connection closes once its sessions are done (the policy's idle hook)
    H.wait_for(function() return H.count(t.clog, "%[conn%] %- " .. first .. " = 1 retired") == 1 end, 5, "the retired connection to close")
    -- and the server saw exactly two connections too
    assert.are.equal(2, H.count(t.slog, "%[conn%] %+ "))
    H.stop_tunnel(t)
  end)

  it("closes a connection idle for -remux.idle.max.sec", function()
    local t = H.tunnel(dir, pki, { client = { ["remux.idle.max.sec"] = 1 } })
    H.assert_hello(t.socks_port, http)
    local id = ids(t.clog, "%[conn%] %+ (%x+) =")[1]
    local t0 = H.now()
    H.wait_for(function() return H.count(t.clog, "%[conn%] %- " .. id .. " = 0 idle") == 1 end, 5, "the idle close")
    assert.is_true(H.now() - t0 < 4)
    -- the next request dials anew
    H.assert_hello(t.socks_port, http)
    assert.are.equal(2, #ids(t.clog, "%[conn%] %+ (%x+) ="))
    H.stop_tunnel(t)
  end)

  it("follows a script's own reusable() through the default pick (2 sessions a connection)", function()
    local script = dir .. "/two.lua"
    H.write(script, "return { reusable = function(c, cfg) return c.sessions < 2 end }\n")
    local t = H.tunnel(dir, pki, { client = { ["lua.script"] = script } })
    for _ = 1, 6 do H.assert_hello(t.socks_port, http) end
    assert.are.equal(3, #ids(t.clog, "%[conn%] %+ (%x+) ="))
    H.stop_tunnel(t)
  end)
end)

describe("Lua hooks that fail", function()
  local dir, pki, http

  H.fixture({ "http" }, function(...)
    dir, pki, http = ...
  end)

  local cases = {
    { "errors", "return { pick = function() error('boom in pick') end }",
      "%[erro%] %[lua%] pick: .*boom in pick" },
    { "loops forever", "return { pick = function() while true do end end }",
      "%[erro%] %[lua%] pick: stopped: ran past its budget of 50 ms" },
    { "loops forever under its own pcall",
      "return { pick = function() while true do pcall(function() while true do end end) end end }",
      "%[erro%] %[lua%] pick: .*stopped: ran past its budget" },
    { "answers an id that is no connection", "return { pick = function() return 12345 end }",
      "%[erro%] %[lua%] pick: answered 12345, which is no live connection" },
  }
  for _, c in ipairs(cases) do
    it("are logged and the built-in rule used when a hook " .. c[1], function()
      local script = dir .. "/hook" .. _ .. ".lua"
      H.write(script, c[2] .. "\n")
      local t = H.tunnel(dir, pki, { client = { ["lua.script"] = script, ["lua.budget.ms"] = 50 } })
      for i = 1, 3 do
        local body = H.curl(t.socks_port, "http://localhost:" .. http .. "/")
        assert.are.equal("hello from tn-dest\n", body, "request " .. i)
      end
      assert.are.equal(3, H.count(t.clog, c[3]))
      -- the built-in rule still reuses one connection
      assert.are.equal(1, #ids(t.clog, "%[conn%] %+ (%x+) ="))
      H.stop_tunnel(t)
    end)
  end

  it("logs a traceback with the error", function()
    local script = dir .. "/tb.lua"
    H.write(script, "local function inner() error('deep') end\nreturn { pick = function() inner() end }\n")
    local t = H.tunnel(dir, pki, { client = { ["lua.script"] = script } })
    H.curl(t.socks_port, "http://localhost:" .. http .. "/")
    assert.is_true(H.read(t.clog .. ".out"):find("stack traceback:", 1, true) ~= nil)
    assert.is_true(H.read(t.clog .. ".out"):find("tb.lua:1: in function 'inner'", 1, true) ~= nil)
    H.stop_tunnel(t)
  end)
end)
