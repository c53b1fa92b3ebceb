-- Alerts: the DingTalk message (signature, JSON) through the FFI, and end to end: a local HTTPS
-- receiver standing in for the robot, signed alerts, retries, the rate limit under a storm, and
-- an ops-style alert hook.
local H = require("spec.helper")
local ffi = require("ffi")
local lib = require("spec.ffi")
H.dump_on_failure()

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- The signature computed independently, by openssl(1).
local function openssl_sign(secret, ts)
  local out, code = H.sh("printf '%s\\n%s' '" .. ts .. "' '" .. secret .. "' | openssl dgst -sha256 -hmac '" ..
    secret .. "' -binary | base64")
  assert(code == 0, out)
  return urlencode((out:gsub("%s+$", "")))
end

local function json(text, size)
  local buf = ffi.new("char[?]", size or 4096)
  local n = lib.dingtalk_msg_json(text, buf, size or 4096)
  return ffi.string(buf, n)
end

describe("DingTalk message", function()
  it("signs as DingTalk specifies, the same as openssl dgst -hmac", function()
    local buf = ffi.new("char[256]")
    for _, c in ipairs({ { "SEC123abc", 1700000000000 }, { "SECxyz-_/+=", 1764028800123 }, { "s", 0 } }) do
      local n = lib.dingtalk_msg_sign(c[1], c[2], buf, 256)
      assert.is_true(n > 0)
      assert.are.equal(openssl_sign(c[1], tostring(c[2])), ffi.string(buf, n))
    end
    -- too small an output: refused, not cut
    assert.are.equal(0, lib.dingtalk_msg_sign("SEC", 1, buf, 10))
  end)

  it("writes the text message as JSON, escaped", function()
    assert.are.equal('{"msgtype":"text","text":{"content":"plain"}}', json("plain"))
    assert.are.equal('{"msgtype":"text","text":{"content":"a \\"q\\" \\\\ b\\nc\\td\\u0001\\u007f"}}',
      json('a "q" \\ b\nc\td\1\127'))
    -- UTF-8 kept, bytes that are not UTF-8 replaced
    assert.are.equal('{"msgtype":"text","text":{"content":"中文 \\ufffd \\ufffd\\ufffd"}}',
      json("中文 \255 \192\128"))
    -- cut at a character boundary with a mark, never past the buffer
    for size = 45, 60 do
      local s = json(string.rep("中", 20), size)
      assert.is_true(#s < size)
      assert.truthy(s:find('%.%.%."}}$'), s)
      assert.truthy(s:find('^{"msgtype":"text","text":{"content":"'))
      local content = s:match('"content":"(.*)%.%.%."}}$')
      assert.are.equal(0, #content % 3)
    end
    assert.are.equal(0, tonumber(lib.dingtalk_msg_json("x", ffi.new("char[10]"), 10)))
  end)

  it("writes a generic webhook's body: the hook's JSON object as it is, else {\"text\": ...}", function()
    local function hook(text, size)
      local buf = ffi.new("char[?]", size or 4096)
      local n = lib.dingtalk_msg_webhook_json(text, buf, size or 4096)
      return ffi.string(buf, n)
    end
    assert.are.equal('{"text":"a \\"q\\"\\n"}', hook('a "q"\n'))
    local feishu = '{"msg_type":"text","content":{"text":"x"}}'
    assert.are.equal(feishu, hook(feishu))
    assert.are.equal(' \n' .. feishu, hook(' \n' .. feishu))
    -- an object that does not fit goes as text, cut
    local s = hook('{"k":"' .. ("v"):rep(100) .. '"}', 40)
    assert.truthy(s:find('^{"text":"{\\"k\\":\\"v+%.%.%."}$'), s)
    assert.is_true(#s < 40)
    -- tunnels.json, for hooks that write a service's body: a whole JSON string, never cut
    local function str(text)
      local buf = ffi.new("char[?]", 6 * #text + 6)
      return ffi.string(buf, lib.dingtalk_msg_json_string(text, buf, 6 * #text + 6))
    end
    assert.are.equal('""', str(""))
    assert.are.equal([["a\\b \"c\" \n\t\u0001 \ufffd \u007f é"]], str("a\\b \"c\" \n\t\1 \255 \127 é"))
    assert.are.equal(6 * 200 + 2, #str(("\1"):rep(200)))
  end)
end)

describe("alerts end to end", function()
  local dir, pki, http
  local token, secret = "tok3n", "SECr3t"

  H.fixture({ "http" }, function(...)
    dir, pki, http = ...
  end)

  local function receiver(fail, big)
    local port = H.free_port()
    local out = dir .. "/hook" .. port .. ".txt"
    H.write(out, "")
    local pid = H.spawn("tn-hook", { H.build .. "/tn-hook", "-addr", "127.0.0.1:" .. port, "-cert", pki.server_cert,
      "-key", pki.server_key, "-out", out, "-fail", tostring(fail or 0), "-big", tostring(big or 0) },
      dir .. "/hook" .. port .. ".log")
    H.wait_for(function() return H.connectable(port) end, 10, "tn-hook to listen")
    return port, out, pid
  end

  local function requests(out)
    local list = {}
    for line in H.read(out):gmatch("[^\n]+") do list[#list + 1] = line end
    return list
  end

  local function alert_flags(port, extra)
    local f = {
      ["sla.dingtalk.token"] = token, ["sla.dingtalk.secret"] = secret,
      ["sla.dingtalk.url"] = "https://localhost:" .. port .. "/robot/send",
      ["sla.dingtalk.ca"] = pki.ca,
    }
    for k, v in pairs(extra or {}) do f[k] = v end
    return f
  end

  local function script(name, text)
    H.write(dir .. "/" .. name, text)
    return dir .. "/" .. name
  end

  it("sends a signed alert when a destination is unreachable", function()
    local port, out = receiver()
    local sflags = alert_flags(port, { ["lua.script"] = script("sub.lua", 'return { alert_levels = { ["*"] = "erro", sock = "warn" } }') })
    local t = H.tunnel(dir, pki, { server = sflags })
    local dead = H.free_port()
    local before = os.time() * 1000
    H.curl(t.socks_port, "http://127.0.0.1:" .. dead .. "/")
    H.wait_for(function() return #requests(out) >= 1 end, 10, "the alert")
    local after = os.time() * 1000 + 1000
    local req = requests(out)[1]
    local method, target, body = req:match("^(%S+) (%S+) (.*)$")
    assert.are.equal("POST", method)
    local path, query = target:match("^([^?]+)%?(.*)$")
    assert.are.equal("/robot/send", path)
    assert.are.equal(token, query:match("access_token=([^&]+)"))
    local ts = query:match("timestamp=(%d+)")
    assert.is_true(tonumber(ts) >= before and tonumber(ts) <= after, ts)
    assert.are.equal(openssl_sign(secret, ts), query:match("sign=([^&]+)"))
    assert.truthy(body:find('^{"msgtype":"text","text":{"content":"TunneLS server on '))
    assert.truthy(body:find("%[warn%] %[sock%] %- 127%.0%.0%.1:" .. dead .. " = 0 connection refused %(Connection refused%)"), body)
    H.stop_tunnel(t)
  end)

  it("posts to a generic webhook (-sla.webhook.url): the hook's JSON as it is, else {\"text\": ...}", function()
    local port, out = receiver()
    local sflags = { ["sla.webhook.url"] = "https://localhost:" .. port .. "/hooks/slack?key=K1",
      ["sla.dingtalk.ca"] = pki.ca,
      ["lua.script"] = script("wh.lua", 'return { alert_levels = { ["*"] = "erro", sock = "warn" } }') }
    local t = H.tunnel(dir, pki, { server = sflags })
    local dead = H.free_port()
    H.curl(t.socks_port, "http://127.0.0.1:" .. dead .. "/")
    H.wait_for(function() return #requests(out) >= 1 end, 10, "the alert")
    local method, target, body = requests(out)[1]:match("^(%S+) (%S+) (.*)$")
    assert.are.equal("POST", method)
    assert.are.equal("/hooks/slack?key=K1", target) -- its own secret, no DingTalk token or sign
    assert.truthy(body:find('^{"text":"TunneLS server on '), body)
    assert.truthy(body:find("= 0 connection refused %(Connection refused%)\"}$"), body)
    assert.are.equal(1, H.count(t.slog, "%[sla%] alerts to a webhook %(https://localhost:%d+/hooks/slack%?key=K1%)"))
    H.stop_tunnel(t)
    -- the examples write their service's whole body, valid JSON (python3 -m json.tool)
    for name, shape in pairs({ feishu = '^{"msg_type":"text","content":{"text":"TunneLS server on ',
      slack = '^{"text":":warning: TunneLS server on .-"blocks":%[{"type":"section"',
      wecom = '^{"msgtype":"markdown","markdown":{"content":"%*%*TunneLS server on ' }) do
      port, out = receiver()
      sflags["sla.webhook.url"] = "https://localhost:" .. port .. "/hook/" .. name
      sflags["lua.script"] = H.root .. "/examples/alerts-" .. name .. ".lua"
      t = H.tunnel(dir, pki, { server = sflags })
      H.curl(t.socks_port, "http://127.0.0.1:" .. dead .. "/")
      H.wait_for(function() return #requests(out) >= 1 end, 10, "the " .. name .. " alert")
      body = requests(out)[1]:match("^%S+ %S+ (.*)$")
      assert.truthy(body:find(shape), body)
      H.write(dir .. "/body.json", body)
      local parsed, rc = H.sh("python3 -m json.tool " .. dir .. "/body.json")
      assert.are.equal(0, rc, name .. ": " .. parsed)
      assert.truthy(parsed:find("connection refused", 1, true), parsed)
      H.stop_tunnel(t)
    end
    -- one sink at a time, and HTTPS only: exit 2
    local msg, code = H.sh(H.bin .. " -role=server -server.addr=127.0.0.1:1 -server.open -sla.webhook.url=https://x/y " ..
      "-sla.dingtalk.token=T </dev/null")
    assert.are.equal(2, code)
    assert.matches("%-sla%.webhook%.url: one alert sink at a time", msg)
    msg, code = H.sh(H.bin .. " -role=server -server.addr=127.0.0.1:1 -server.open -sla.webhook.url=http://x/y </dev/null")
    assert.are.equal(2, code)
    assert.matches('%-sla%.webhook%.url: "http://x/y" does not start with https://', msg)
  end)

  it("takes the secrets from a file or the environment, never needing them on the command line", function()
    local port, out = receiver()
    H.write(dir .. "/token", token .. "\n")
    local sflags = alert_flags(port, { ["lua.script"] = script("sub2.lua", 'return { alert_levels = { ["*"] = "erro", sock = "warn" } }') })
    sflags["sla.dingtalk.token"] = "@" .. dir .. "/token"
    sflags["sla.dingtalk.secret"] = nil
    local t = H.tunnel(dir, pki, { server = sflags, env = "TUNNELS_DINGTALK_SECRET=" .. secret })
    H.curl(t.socks_port, "http://127.0.0.1:" .. H.free_port() .. "/")
    H.wait_for(function() return #requests(out) >= 1 end, 10, "the alert")
    local target = requests(out)[1]:match("^%S+ (%S+)")
    assert.are.equal(token, target:match("access_token=([^&]+)"))
    assert.are.equal(openssl_sign(secret, target:match("timestamp=(%d+)")), target:match("sign=([^&]+)"))
    local cmdline = H.read("/proc/" .. t.server_pid .. "/cmdline")
    assert.is_nil(cmdline:find(token, 1, true))
    assert.is_nil(cmdline:find(secret, 1, true))
    H.stop_tunnel(t)
    -- a file that is not there: one clear line, exit 2
    local msg, code = H.sh(H.bin .. " -role=server -server.addr=127.0.0.1:1 -server.open -sla.dingtalk.token=@" ..
      dir .. "/nowhere 2>&1")
    assert.are.equal(2, code)
    assert.is_truthy(msg:find("tunnels: -sla.dingtalk.token: " .. dir .. "/nowhere: No such file", 1, true), msg)
  end)

  it("believes no webhook answer longer than 64 KiB, and keeps none of it", function()
    local port = receiver(0, 256)
    local t = H.tunnel(dir, pki, { server = alert_flags(port, { ["lua.script"] = script("sub3.lua",
      'return { alert_levels = { ["*"] = "erro", sock = "warn" } }') }) })
    local function peak()
      return tonumber(H.read("/proc/" .. t.server_pid .. "/status"):match("VmHWM:%s+(%d+)"))
    end
    local before = peak()
    H.curl(t.socks_port, "http://127.0.0.1:" .. H.free_port() .. "/")
    H.wait_for(function() return H.count(t.slog, "%[sla%] alert to localhost failed %(try 1 of 3%)") >= 1 end, 10, "the failed try")
    -- the peak: the answer was not buffered whole, not even for a moment (it was: +265 MiB)
    local grew = peak() - before
    assert.is_true(grew < 64 * 1024, "server peak RSS grew " .. grew .. " KiB with a 256 MiB answer")
    H.stop_tunnel(t)
  end)

  it("retries a failing webhook with backoff, then delivers", function()
    local port, out = receiver(2)
    local t = H.tunnel(dir, pki, { no_client = true, server = alert_flags(port, {
      ["lua.script"] = script("boot.lua", 'tunnels.log("erro", "boot alert") return {}') }) })
    -- the script's error at load time comes before alerts start; send one after
    H.sh("kill -HUP " .. t.server_pid)
    H.wait_for(function() return #requests(out) >= 3 end, 15, "three tries")
    assert.are.equal(3, #requests(out))
    for _, r in ipairs(requests(out)) do assert.truthy(r:find("boot alert", 1, true)) end
    assert.are.equal(1, H.count(t.slog, "%[sla%] alert to localhost failed %(try 1 of 3%): HTTP 500 failed; again in 1 s"))
    assert.are.equal(1, H.count(t.slog, "%[sla%] alert to localhost failed %(try 2 of 3%): HTTP 500 failed; again in 2 s"))
    -- each try is signed afresh
    local t1 = requests(out)[1]:match("timestamp=(%d+)")
    local t3 = requests(out)[3]:match("timestamp=(%d+)")
    assert.is_true(tonumber(t3) - tonumber(t1) >= 2500)
    H.stop(t.server_pid)
  end)

  it("gives up after three tries against a receiver that is down, and the tunnel goes on", function()
    local port = H.free_port()
    local t = H.tunnel(dir, pki, { client = alert_flags(port, {
      ["lua.script"] = script("err.lua", 'return { route = function(req) if req.port == 1 then error("bad port") end return "tunnel" end }') }) })
    H.curl(t.socks_port, "http://localhost:1/")
    H.wait_for(function() return H.count(t.clog, "%[sla%] alert to localhost dropped after 3 tries") == 1 end, 15, "the drop")
    H.assert_hello(t.socks_port, http, "the tunnel still works")
    H.stop_tunnel(t)
  end)

  it("holds an error storm to a few alerts and a summary", function()
    local port, out = receiver()
    local t = H.tunnel(dir, pki, { client = alert_flags(port, {
      ["sla.alert.burst"] = "3", ["sla.alert.every.sec"] = "2",
      ["lua.script"] = script("storm.lua", [[
        return { route = function(req)
          for i = 1, 500 do tunnels.log("erro", "storm " .. i) end
          return "tunnel"
        end }
      ]]) }) })
    H.assert_hello(t.socks_port, http, "storm request")
    H.wait_for(function() return #requests(out) >= 4 end, 10, "the burst and a summary")
    H.sleep(3)
    local list = requests(out)
    -- 3 at once, then one per 2 s: by now at most 3 + 3 (with a second of slack)
    assert.is_true(#list <= 6, #list .. " alerts")
    assert.truthy(list[1]:find("storm 1\"", 1, true), list[1])
    assert.truthy(list[3]:find("storm 3\"", 1, true), list[3])
    assert.truthy(list[4]:find("alerts held by the rate limit over the last", 1, true), list[4])
    local held = tonumber(list[4]:match("(%d+) alerts held"))
    assert.are.equal(497, held)
    assert.truthy(list[4]:find("first: TunneLS client on .-storm 4", 1), list[4])
    H.stop_tunnel(t)
  end)

  it("runs the ops example: host name, aggregation, a quieted event", function()
    local port, out = receiver()
    -- the example, plus a route hook that denies port 1 (a policy event the example quiets)
    local path = script("ops.lua", [[
      local ops = dofile("]] .. H.root .. [[/examples/alerts-ops.lua")
      ops.route = function(req, cfg)
        if req.port == 1 then return "deny", "port 1 is closed here" end
        return tunnels.default.route(req, cfg)
      end
      return ops
    ]])
    local t = H.tunnel(dir, pki, { server = alert_flags(port, { ["lua.script"] = path, ["sla.alert.burst"] = "20" }) })
    local dead = H.free_port()
    for _ = 1, 5 do H.curl(t.socks_port, "http://127.0.0.1:" .. dead .. "/") end
    -- a quieted event: a denied destination (policy) never alerts
    H.curl(t.socks_port, "http://127.0.0.1:1/")
    H.wait_for(function() return #requests(out) >= 2 end, 15, "the first alert and the summary")
    local list = requests(out)
    local host = H.sh("hostname"):gsub("%s+$", "")
    assert.truthy(list[1]:find("[" .. host .. "]", 1, true), list[1])
    assert.truthy(list[1]:find("connection refused (Connection refused)", 1, true), list[1])
    assert.truthy(list[2]:find("4 more like it", 1, true), list[2])
    for _, l in ipairs(list) do assert.falsy(l:find("127.0.0.1:1 ", 1, true), l) end
    H.stop_tunnel(t)
  end)

  it("a failing or looping alert hook costs nothing else: the raw line goes out", function()
    local port, out = receiver()
    local t = H.tunnel(dir, pki, { client = alert_flags(port, {
      ["lua.script"] = script("badalert.lua", [[
        local n = 0
        return {
          alert = function(ev)
            n = n + 1
            if n == 1 then error("alert boom") end
            while true do end
          end,
          route = function(req) if req.port == 1 then error("route boom") end return "tunnel" end,
        }
      ]]) }) })
    H.curl(t.socks_port, "http://localhost:1/")
    H.curl(t.socks_port, "http://localhost:1/")
    H.wait_for(function() return #requests(out) >= 4 end, 10, "the alerts")
    local all = H.read(out)
    -- the default formatter took over for each event; the hooks' own errors went out raw
    assert.are.equal(2, select(2, all:gsub("TunneLS client on [^:]+: %[erro%] %[lua%] route: [^\n]*route boom", "")))
    assert.truthy(all:find("[lua] alert: ", 1, true))
    assert.truthy(all:find("alert boom", 1, true))
    assert.truthy(all:find("stopped: ran past its budget", 1, true))
    H.assert_hello(t.socks_port, http, "the tunnel still works")
    H.stop_tunnel(t)
  end)
end)
