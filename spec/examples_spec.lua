-- Every script in examples/ loads in the real binary and serves a request.
local H = require("spec.helper")
H.dump_on_failure()

describe("examples/", function()
  local dir, pki, http

  H.fixture({ "http" }, function(...)
    dir, pki, http = ...
  end)

  for name in H.sh("ls " .. H.root .. "/examples/*.lua"):gmatch("[^\n]+") do
    it(name:match("[^/]+$") .. " loads and serves requests", function()
      local t = H.tunnel(dir, pki, { client = { ["lua.script"] = name } })
      for i = 1, 6 do
        H.assert_hello(t.socks_port, http, "request " .. i)
      end
      assert.are.equal(0, H.count(t.clog, "%[lua%]"))
      H.stop_tunnel(t)
    end)
  end

  it("pool-small-connections.lua rotates after 4 sessions", function()
    local t = H.tunnel(dir, pki, { client = { ["lua.script"] = H.root .. "/examples/pool-small-connections.lua" } })
    for _ = 1, 9 do H.curl(t.socks_port, "http://localhost:" .. http .. "/") end
    -- at most 4 sessions a connection (the next one is dialled ahead, at 3): 3 or more of them
    local n = 0
    for id in H.read(t.clog):gmatch(H.LOG.conn_open) do
      n = n + 1
      assert.is_true(H.count(t.clog, H.LOG.sess_open .. id .. ":") <= 4, id)
    end
    assert.is_true(n >= 3, n .. " connections")
    H.stop_tunnel(t)
  end)
end)
