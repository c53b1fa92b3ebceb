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

  it("dials when there is no connection", function()
    assert.is_nil(policy.pick({}, cfg))
  end)

  it("picks the newest usable connection", function()
    local conns = { conn(1), conn(2), conn(3) }
    assert.are.equal(3, policy.pick(conns, cfg))
    conns[3].sessions = 16
    assert.are.equal(2, policy.pick(conns, cfg))
  end)

  it("retires a connection at -remux.reuse.max.cnt sessions and -remux.reuse.max.sec", function()
    assert.is_true(policy.reusable(conn(1, { sessions = 15 }), cfg))
    assert.is_false(policy.reusable(conn(1, { sessions = 16 }), cfg))
    assert.is_true(policy.reusable(conn(1, { age = 59.9 }), cfg))
    assert.is_false(policy.reusable(conn(1, { age = 60 }), cfg))
    assert.is_false(policy.reusable(conn(1, { goaway = true }), cfg))
  end)

  it("never makes a session wait for a handshake when a connection is up", function()
    -- none usable but two up (retired): the newest takes it, and a successor is dialled
    local id, dial = policy.pick({ conn(1, { sessions = 16 }), conn(2, { age = 61 }) }, cfg)
    assert.are.equal(2, id)
    assert.is_true(dial)
    -- the successor in its handshake: the retired one still takes sessions, no second dial
    local pending = conn(3)
    pending.ready = false
    id, dial = policy.pick({ conn(2, { sessions = 16 }), pending }, cfg)
    assert.are.equal(2, id)
    assert.is_false(dial)
    -- nothing up but a dial in flight: wait for it rather than dial again
    assert.are.equal(3, (policy.pick({ pending }, cfg)))
    -- a retired connection with spill_max sessions open takes no more: wait for the dial
    local full = conn(2, { sessions = 300, live = 256 })
    assert.are.equal(3, (policy.pick({ full, pending }, cfg)))
    assert.is_nil(policy.pick({ full }, cfg))
    -- gone away: never used
    assert.is_nil(policy.pick({ conn(1, { goaway = true }) }, cfg))
  end)

  it("dials a spare ahead of need, once, as a connection nears its limits", function()
    local id, dial = policy.pick({ conn(1, { sessions = 10 }) }, cfg)
    assert.are.equal(1, id)
    assert.is_false(dial)
    id, dial = policy.pick({ conn(1, { sessions = 11 }) }, cfg) -- this session is its 12th of 16
    assert.is_true(dial)
    id, dial = policy.pick({ conn(1, { age = 45 }) }, cfg)
    assert.is_true(dial)
    local pending = conn(2)
    pending.ready = false
    id, dial = policy.pick({ conn(1, { sessions = 13 }), pending }, cfg)
    assert.are.equal(1, id)
    assert.is_false(dial)
  end)

  it("keeps one warm connection: a spare at start and before the last one ages out", function()
    assert.is_true(policy.spare({}, cfg))
    assert.is_false(policy.spare({ conn(1) }, cfg))
    assert.is_true(policy.spare({ conn(1, { age = 50 }) }, cfg))
    local pending = conn(2)
    pending.ready = false
    assert.is_false(policy.spare({ conn(1, { age = 50 }), pending }, cfg))
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
    tunnels.policy = setmetatable({ reusable = function(c) return c.id == 1 end }, { __index = policy })
    assert.are.equal(1, policy.pick({ conn(1), conn(2) }, cfg))
  end)

  it("tunnels everything on the client, through the first server", function()
    cfg.role = "client"
    assert.are.equal("tunnel", policy.route({ host = "example.com", port = 443, atyp = "domain" }, cfg))
    assert.are.equal("tunnel", policy.route({ host = "127.0.0.1", port = 80, atyp = "ipv4" }, cfg))
  end)

  it("denies the server's loopback and link-local destinations unless allow_local", function()
    cfg.role = "server"
    local denied = { "127.0.0.1", "127.255.0.9", "169.254.169.254", "0.0.0.0", "::1", "::",
      "fe80::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254" }
    for _, a in ipairs(denied) do
      local d, why = policy.route({ host = "x", port = 80, atyp = "domain", addr = a }, cfg)
      assert.are.equal("deny", d, a)
      assert.truthy(why:find(a, 1, true))
    end
    for _, a in ipairs({ "10.0.0.1", "8.8.8.8", "2001:db8::1", "::2", "128.0.0.1", "fec0::1" }) do
      assert.are.equal("allow", policy.route({ host = "x", port = 80, atyp = "domain", addr = a }, cfg), a)
    end
    -- the name alone is allowed: the resolved address is asked about next
    assert.are.equal("allow", policy.route({ host = "localhost", port = 80, atyp = "domain" }, cfg))
    cfg.allow_local = true
    assert.are.equal("allow", policy.route({ host = "x", port = 80, atyp = "ipv4", addr = "127.0.0.1" }, cfg))
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
