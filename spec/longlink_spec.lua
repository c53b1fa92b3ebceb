-- One session over a long link: two network namespaces joined by build/tn-delay (25 ms each
-- way, a rate cap), the client in one, the server and the destination in the other. A window
-- that kept its start size (256 KiB) would cap the session at 256 KiB per round trip; the
-- receiver must grow it while its reader keeps up (docs/PROTOCOL.md, auto-tuning). The rate cap
-- is low enough for a slow machine to fill, and nothing here is timed: the assertions read the
-- client's log of the window it grants and the bytes that arrived.
local H = require("spec.helper")
if not H.is_root then
  pending("one session over a 50 ms link (network namespaces): needs root")
  return
end

describe("one session over a 50 ms link", function()
  local dir, pki, nsa, nsb, http

  setup(function()
    dir = H.tmpdir()
    pki = H.certs(dir)
    local tag = dir:match("([^.]+)$")
    nsa, nsb = "tn-lla-" .. tag, "tn-llb-" .. tag
    local ta, tb = "tnla" .. tag:sub(1, 6), "tnlb" .. tag:sub(1, 6)
    local out, code = H.sh("ip netns add " .. nsa .. " && ip netns add " .. nsb)
    assert(code == 0, "cannot make network namespaces (needs root): " .. out)
    H.spawn("tn-delay", { H.build .. "/tn-delay", "-a", ta, "-b", tb, "-delay-ms", "25",
      "-rate-mbit", "200" }, dir .. "/delay.log")
    H.wait_for(function() return H.read(dir .. "/delay.log"):find("ready") end, 10, "tn-delay")
    out, code = H.sh(table.concat({
      "ip link set " .. ta .. " netns " .. nsa, "ip link set " .. tb .. " netns " .. nsb,
      "ip -n " .. nsa .. " addr add 10.79.0.1/24 dev " .. ta, "ip -n " .. nsb .. " addr add 10.79.0.2/24 dev " .. tb,
      "ip -n " .. nsa .. " link set lo up", "ip -n " .. nsb .. " link set lo up",
      "ip -n " .. nsa .. " link set " .. ta .. " up", "ip -n " .. nsb .. " link set " .. tb .. " up",
    }, " && "))
    assert(code == 0, "cannot set up the link: " .. out)
    out, code = H.sh("ip netns exec " .. nsa .. " ping -c 3 -i 0.2 -q 10.79.0.2")
    assert(code == 0, "no ping over the link: " .. out)
    local rtt = tonumber(out:match("= [%d.]+/([%d.]+)/"))
    assert(rtt and rtt >= 45, "ping RTT over the link: " .. tostring(rtt) .. " ms (want 50)")
    http = H.dest(dir, "http", nsb)
  end)

  teardown(function()
    H.stop_all() -- tn-delay too: its tun devices go with it
    H.sh("ip netns del " .. nsa .. "; ip netns del " .. nsb)
    H.sh("rm -rf " .. dir)
  end)

  it("grows its flow-control window from 256 KiB while the reader keeps up, and arrives intact", function()
    local t = H.tunnel(dir, pki, { client_netns = nsa, server_netns = nsb, server_host = "10.79.0.2" })
    local bytes = 48 * 1048576
    local out, code = H.sh("ip netns exec " .. nsa .. " " .. H.build .. "/tn-bench -mode bulk -c 1 -socks 127.0.0.1:" ..
      t.socks_port .. " -dest 127.0.0.1:" .. http .. " -bytes " .. bytes)
    assert.are.equal(0, code, out)
    assert.matches("bytes=" .. bytes .. " ", out)
    assert.matches("failed=0", out)
    -- the client grants the server's window for the download: "[flow] conn:sid window N KiB"
    local largest = 0
    for kib in H.read(t.clog):gmatch("%[debg%] %[flow%] %x+:%d+ window (%d+) KiB") do
      largest = math.max(largest, tonumber(kib))
    end
    -- 200 Mbit/s for 50 ms is 1.2 MiB in flight before any queue: the window must pass it.
    assert.is_true(largest >= 2048, "the largest window granted: " .. largest .. " KiB")
    H.stop_tunnel(t)
  end)

  it("grows no window past -remux.buffer.max.mib, the window bytes one connection may hold", function()
    local t = H.tunnel(dir, pki, { client_netns = nsa, server_netns = nsb, server_host = "10.79.0.2",
      client = { ["remux.buffer.max.mib"] = 1 } })
    local bytes = 16 * 1048576
    local out, code = H.sh("ip netns exec " .. nsa .. " " .. H.build .. "/tn-bench -mode bulk -c 1 -socks 127.0.0.1:" ..
      t.socks_port .. " -dest 127.0.0.1:" .. http .. " -bytes " .. bytes)
    assert.are.equal(0, code, out)
    assert.matches("bytes=" .. bytes .. " ", out)
    assert.matches("failed=0", out)
    local largest = 0
    for kib in H.read(t.clog):gmatch("%[debg%] %[flow%] %x+:%d+ window (%d+) KiB") do
      largest = math.max(largest, tonumber(kib))
    end
    -- it grew (the first test's case) but stopped at the budget: 256 -> 512 -> 1024 KiB
    assert.are.equal(1024, largest)
    H.stop_tunnel(t)
  end)
end)
