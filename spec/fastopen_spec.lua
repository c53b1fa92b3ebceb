-- TCP Fast Open on the tunnel's own connections: every dial after the first carries the
-- ClientHello in its SYN, one round trip less. The host decides whether a server takes a SYN's
-- data (net.ipv4.tcp_fastopen, bit 2, off by default), so the spec makes a network namespace
-- with it on, leaves the host's setting alone, and reads that namespace's TCP counters.
local H = require("spec.helper")
if not H.is_root then
  pending("TCP Fast Open (a network namespace): needs root")
  return
end
H.dump_on_failure()

-- The namespace's TcpExt counters (/proc/net/netstat: a line of names, then one of values).
local function tcpext(ns)
  local text, code = H.sh("ip netns exec " .. ns .. " cat /proc/net/netstat")
  assert(code == 0, text)
  local rows = {}
  for line in text:gmatch("[^\n]+") do
    if line:match("^TcpExt:") then rows[#rows + 1] = line end
  end
  local names, values, out = {}, {}, {}
  for w in rows[1]:gmatch("%S+") do names[#names + 1] = w end
  for w in rows[2]:gmatch("%S+") do values[#values + 1] = w end
  for i = 2, #names do out[names[i]] = tonumber(values[i]) end
  return out
end

local function delta(before, after, name)
  return (after[name] or 0) - (before[name] or 0)
end

describe("TCP Fast Open", function()
  local dir, pki, ns, http

  setup(function()
    dir = H.tmpdir()
    pki = H.certs(dir)
    ns = "tn-tfo-" .. dir:match("([^.]+)$")
    local out, code = H.sh("ip netns add " .. ns .. " && ip -n " .. ns .. " link set lo up && " ..
      "ip netns exec " .. ns .. " sysctl -qw net.ipv4.tcp_fastopen=3")
    assert(code == 0, "cannot make network namespace " .. ns .. " (needs root): " .. out)
    http = H.dest(dir, "http", ns)
  end)

  teardown(function()
    H.stop_all()
    H.sh("ip netns del " .. ns)
    H.sh("rm -rf " .. dir)
  end)

  local function get(t)
    return H.sh("ip netns exec " .. ns .. " curl -sS --max-time 10 --socks5-hostname 127.0.0.1:" ..
      t.socks_port .. " http://localhost:" .. http .. "/")
  end

  it("sends the ClientHello in the SYN of every dial after the first", function()
    local before = tcpext(ns)
    -- One session per connection: each session has the pool dial a successor.
    local t = H.tunnel(dir, pki, { netns = ns, client = { ["remux.reuse.max.cnt"] = 1 } })
    assert.are.equal(1, H.count(t.slog, "%[main%] server: listening on .*, TCP Fast Open%)"))
    for i = 1, 3 do
      local body, code = get(t)
      assert.are.equal(H.HELLO, body, "request " .. i .. " (curl exit " .. code .. ")")
    end
    -- The start-up dial and three successors, all up.
    H.wait_for(function() return H.count(t.clog, "%[tls%] ~ %x+ TLS") >= 4 end, 10, "four connections up")
    local after = tcpext(ns)
    assert.is_true(delta(before, after, "TCPFastOpenCookieReqd") >= 1, "the first dial asks for a cookie")
    assert.is_true(delta(before, after, "TCPFastOpenActive") >= 3, "dials with data in the SYN")
    assert.is_true(delta(before, after, "TCPFastOpenPassive") >= 3, "SYNs whose data the server took")
    assert.are.equal(0, delta(before, after, "TCPFastOpenActiveFail"))
    H.stop_tunnel(t)
  end)

  it("reports a dial to a server that is down as refused, and dials again once it is back", function()
    local t = H.tunnel(dir, pki, { netns = ns, client = { ["remux.reuse.max.cnt"] = 1 } })
    assert.are.equal(H.HELLO, (get(t)))
    -- The kernel holds a cookie for the server's address now: the next dial's SYN carries its
    -- ClientHello, and the refusal comes back for a connect the client saw succeed at once.
    assert.is_true(H.stop(t.server_pid))
    local body = get(t)
    assert.are_not.equal(H.HELLO, body)
    H.wait_for(function() return H.count(t.clog, "%[conn%] %- %x+ = %d+ Connection refused") >= 1 end,
      10, "the refused dial in the client's log")
    H.tunnel(dir, pki, { netns = ns, server_port = t.server_port, no_client = true })
    H.wait_for(function() return get(t) == H.HELLO end, 20, "a request through the server started again")
    H.stop_tunnel(t)
  end)

  it("leaves plain TCP connections without it: a SYN's data could be replayed", function()
    local before = tcpext(ns)
    local t = H.tunnel(dir, pki, { netns = ns, tcp = true, client = { ["remux.reuse.max.cnt"] = 1 } })
    assert.are.equal(1, H.count(t.slog, "%[main%] server: listening on .* %(tcp, open%)"))
    for i = 1, 3 do
      local body, code = get(t)
      assert.are.equal(H.HELLO, body, "request " .. i .. " (curl exit " .. code .. ")")
    end
    local after = tcpext(ns)
    assert.are.equal(0, delta(before, after, "TCPFastOpenActive"))
    assert.are.equal(0, delta(before, after, "TCPFastOpenPassive"))
    assert.are.equal(0, delta(before, after, "TCPFastOpenCookieReqd"))
    H.stop_tunnel(t)
  end)
end)
