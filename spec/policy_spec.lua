-- The default pool policy (lua/policy.lua) as plain Lua, with the `tunnels` global the engine
-- provides.
describe("default pool policy", function()
  local policy, cfg

  before_each(function()
    local root = os.getenv("TUNNELS_ROOT") or "."
    package.preload["tunnels.rules"] = function() return dofile(root .. "/lua/rules.lua") end
    local chunk = assert(loadfile(root .. "/lua/policy.lua"))
    _G.tunnels = {}
    policy = chunk()
    _G.tunnels.policy = policy
    cfg = { reuse_max_sec = 60, reuse_max_cnt = 16, idle_max_sec = 10, conn_max_cnt = 1024 }
  end)

  local function conn(id, t)
    t = t or {}
    return { id = id, age = t.age or 1, idle = t.idle or 0, sessions = t.sessions or 0,
      live = t.live or 0, goaway = t.goaway or false, ready = true }
  end

  it("says what the engine's C fallback says about reuse (engine/reuse.c), at and around every limit", function()
    -- The engine decides with reuse_allowed when the script cannot: the two must never differ.
    local lib = require("spec.ffi")
    local checked = 0
    for _, max_sec in ipairs({ 1, 60, 3600 }) do
      for _, max_cnt in ipairs({ 1, 16, 65535 }) do
        for _, goaway in ipairs({ false, true }) do
          for _, age in ipairs({ 0, 0.5, max_sec - 0.001, max_sec, max_sec + 0.001, max_sec * 2 }) do
            for _, sessions in ipairs({ 0, max_cnt - 1, max_cnt, max_cnt + 1 }) do
              local c = conn(1, { age = age, sessions = sessions, goaway = goaway })
              local limits = { reuse_max_sec = max_sec, reuse_max_cnt = max_cnt }
              local lua = policy.reusable(c, limits) and true or false
              local C = lib.reuse_allowed(max_sec, max_cnt, goaway and 1 or 0, age, sessions) == 1
              assert.are.equal(C, lua, ("sec %s cnt %s goaway %s age %s sessions %s"):format(
                max_sec, max_cnt, tostring(goaway), age, sessions))
              checked = checked + 1
            end
          end
        end
      end
    end
    assert.are.equal(3 * 3 * 2 * 6 * 4, checked)
  end)

  it("dials when there is no connection", function()
    assert.is_nil(policy.pick({}, cfg))
  end)

  local function pending(id, t)
    local c = conn(id, t)
    c.ready = false
    return c
  end

  it("picks the oldest usable connection, so each is used up to its limits first", function()
    local conns = { conn(1, { sessions = 15 }), conn(2), conn(3) }
    assert.are.equal(1, policy.pick(conns, cfg))
    conns[1].sessions = 16
    assert.are.equal(2, policy.pick(conns, cfg))
    conns[2].age = 60
    assert.are.equal(3, policy.pick(conns, cfg))
  end)

  it("retires a connection at -remux.reuse.max.cnt sessions and -remux.reuse.max.sec", function()
    assert.is_true(policy.reusable(conn(1, { sessions = 15 }), cfg))
    assert.is_false(policy.reusable(conn(1, { sessions = 16 }), cfg))
    assert.is_true(policy.reusable(conn(1, { age = 59.9 }), cfg))
    assert.is_false(policy.reusable(conn(1, { age = 60 }), cfg))
    assert.is_false(policy.reusable(conn(1, { goaway = true }), cfg))
  end)

  it("never puts a session past a connection's limits: it waits for a handshake instead", function()
    -- none usable, two up but retired: this session dials
    assert.is_nil(policy.pick({ conn(1, { sessions = 16 }), conn(2, { age = 61 }) }, cfg))
    -- the successor in its handshake takes it (the session waits for it), no second dial
    local id, dial = policy.pick({ conn(2, { sessions = 16 }), pending(3) }, cfg)
    assert.are.equal(3, id)
    assert.is_false(dial)
    -- an up connection is preferred to an older one still in its handshake
    assert.are.equal(4, (policy.pick({ pending(3), conn(4, { sessions = 3 }) }, cfg)))
    -- a pending one that is full takes no more
    assert.is_nil(policy.pick({ pending(3, { sessions = 16 }) }, cfg))
    -- gone away: never used
    assert.is_nil(policy.pick({ conn(1, { goaway = true }) }, cfg))
  end)

  it("dials a burst's connections as it needs them: one per reuse_max_cnt sessions", function()
    local conns, dials = { conn(1) }, 1
    for _ = 1, 100 do
      local id, spare = policy.pick(conns, cfg)
      local c
      if id == nil or spare then
        dials = dials + 1
        conns[#conns + 1] = pending(dials)
      end
      if id == nil then c = conns[#conns] else
        for _, o in ipairs(conns) do if o.id == id then c = o end end
      end
      c.sessions = c.sessions + 1
      assert.is_true(c.sessions <= 16)
    end
    -- 100 sessions on connections of 16: 7, the last with headroom for what comes next
    assert.are.equal(16, conns[1].sessions)
    assert.is_true(#conns == 7 or #conns == 8, #conns .. " connections")
  end)

  it("dials a spare ahead of need, once, when the headroom falls to a quarter", function()
    local id, dial = policy.pick({ conn(1, { sessions = 10 }) }, cfg)
    assert.are.equal(1, id)
    assert.is_false(dial)
    id, dial = policy.pick({ conn(1, { sessions = 11 }) }, cfg) -- this session is its 12th of 16
    assert.is_true(dial)
    id, dial = policy.pick({ conn(1, { age = 45 }) }, cfg)
    assert.is_true(dial)
    id, dial = policy.pick({ conn(1, { sessions = 13 }), pending(2) }, cfg)
    assert.are.equal(1, id)
    assert.is_false(dial)
  end)

  it("keeps more headroom when the session rate calls for it", function()
    -- 1,000 sessions/s and 20 ms handshakes: 20 sessions arrive during one; with 4 more, 24
    local load = { rate = 1000, handshake = 0.02 }
    assert.are.equal(24, policy.wanted(cfg, load))
    local _, dial = policy.pick({ conn(1, { sessions = 2 }) }, cfg, load)
    assert.is_true(dial)
    _, dial = policy.pick({ conn(1, { sessions = 2 }), pending(2) }, cfg, load)
    assert.is_false(dial) -- 13 + 16 left
    assert.is_true(policy.spare({ conn(1), conn(2, { sessions = 8 }) }, cfg, load))
    assert.is_false(policy.spare({ conn(1), conn(2, { sessions = 7 }) }, cfg, load))
    -- idle: a quarter connection
    assert.are.equal(4, policy.wanted(cfg, { rate = 0, handshake = 0.02 }))
  end)

  it("keeps one warm connection: a spare at start and before the last one ages out", function()
    assert.is_true(policy.spare({}, cfg))
    assert.is_false(policy.spare({ conn(1) }, cfg))
    assert.is_true(policy.spare({ conn(1, { age = 50 }) }, cfg))
    assert.is_false(policy.spare({ conn(1, { age = 50 }), pending(2) }, cfg))
    assert.is_true(policy.spare({ conn(1, { goaway = true }) }, cfg))
  end)

  it("closes an idle connection after -remux.idle.max.sec, and a retired one at once", function()
    assert.is_false(policy.idle(conn(1, { idle = 9.5 }), cfg))
    assert.is_true(policy.idle(conn(1, { idle = 10 }), cfg))
    assert.is_true(policy.idle(conn(1, { idle = 0.1, sessions = 16 }), cfg))
    assert.is_false(policy.idle(conn(1, { idle = 100, live = 1 }), cfg))
    -- the warm connection (the newest usable one that is up) stays, the older one goes
    local a, b = conn(1, { idle = 30 }), conn(2, { idle = 30 })
    assert.is_true(policy.idle(a, cfg, { a, b }))
    assert.is_false(policy.idle(b, cfg, { a, b }))
    -- but not once retired
    local old = conn(3, { idle = 30, age = 61 })
    assert.is_true(policy.idle(old, cfg, { old }))
  end)

  it("uses an overriding reusable() through tunnels.policy", function()
    tunnels.policy = setmetatable({ reusable = function(c) return c.id == 2 end }, { __index = policy })
    assert.are.equal(2, policy.pick({ conn(1), conn(2), conn(3) }, cfg))
  end)

  it("tunnels everything on the client, through the first server", function()
    cfg.role = "client"
    assert.are.equal("tunnel", policy.route({ host = "example.com", port = 443, atyp = "domain" }, cfg))
    assert.are.equal("tunnel", policy.route({ host = "127.0.0.1", port = 80, atyp = "ipv4" }, cfg))
  end)

  local function route(a)
    return policy.route({ host = "x", port = 80, atyp = "domain", addr = a }, cfg)
  end

  it("lets a server's clients reach the public internet only, by default", function()
    cfg.role = "server"
    cfg.host_addrs = { "198.51.200.7", "2a01:4f8::7" }
    local denied = {
      -- this host and its links, metadata services
      "127.0.0.1", "127.255.0.9", "169.254.169.254", "0.0.0.0", "::1", "::", "fe80::1",
      "100.100.100.200", "192.0.0.192", "fd00:ec2::254", "198.51.200.7", "2a01:4f8::7",
      -- the networks behind it
      "10.9.8.7", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1", "100.127.255.254",
      "fc00::1", "fd12:3456::1", "fec0::1",
      -- no unicast destination
      "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "192.0.2.1", "198.18.0.1",
      "ff02::1", "2001:db8::1", "100::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
      -- IPv4 in IPv6, every form that reaches one of those
      "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "::127.0.0.1", "::2",
      "64:ff9b::7f00:1", "64:ff9b::a00:1", "2002:7f00:1::1", "2002:a9fe:a9fe::", "64:ff9b:1::1",
    }
    for _, a in ipairs(denied) do
      local d, why = route(a)
      assert.are.equal("deny", d, a)
      assert.truthy(why:find(a, 1, true), why)
    end
    for _, a in ipairs({ "8.8.8.8", "1.1.1.1", "128.0.0.1", "172.32.0.1", "100.128.0.1",
        "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1" }) do
      assert.are.equal("allow", route(a), a)
    end
    -- the name alone is allowed: the resolved address is asked about next
    assert.are.equal("allow", policy.route({ host = "localhost", port = 80, atyp = "domain" }, cfg))
  end)

  it("allows local and private destinations only when the flags say so", function()
    cfg.role = "server"
    cfg.host_addrs = { "198.51.200.7" }
    cfg.allow_local = true
    for _, a in ipairs({ "127.0.0.1", "::1", "169.254.169.254", "198.51.200.7", "::ffff:127.0.0.1" }) do
      assert.are.equal("allow", route(a), a)
    end
    assert.are.equal("deny", (route("10.0.0.1")))
    cfg.allow_local, cfg.allow_private = false, true
    for _, a in ipairs({ "10.0.0.1", "192.168.1.1", "100.64.0.1", "fd12::1", "::ffff:10.0.0.1" }) do
      assert.are.equal("allow", route(a), a)
    end
    -- metadata is this host's, not the network's: still denied
    for _, a in ipairs({ "127.0.0.1", "100.100.100.200", "fd00:ec2::254", "169.254.169.254" }) do
      assert.are.equal("deny", (route(a)), a)
    end
    -- no flag allows what is no unicast destination
    cfg.allow_local = true
    for _, a in ipairs({ "224.0.0.1", "255.255.255.255", "ff02::1", "2001:db8::1" }) do
      assert.are.equal("deny", (route(a)), a)
    end
  end)

  it("formats an alert with the role, the host name, the level and the tag", function()
    tunnels.hostname = "edge-1"
    cfg.role = "server"
    local text = policy.alert({ level = "erro", severity = 400, tag = "sock",
      text = "- 10.0.0.9:80 = 0 connect: Connection refused", line = "...", time = 0 }, cfg)
    assert.are.equal("TunneLS server on edge-1: [erro] [sock] - 10.0.0.9:80 = 0 connect: Connection refused", text)
    assert.are.same({ ["*"] = "erro" }, policy.alert_levels)
    assert.is_nil(policy.alert_tick(0, cfg))
  end)
end)
