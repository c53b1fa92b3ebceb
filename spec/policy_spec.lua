-- The default pool policy (lua/policy.lua) as plain Lua, with the `tunnels` global the engine
-- provides.
describe("default pool policy", function()
  local policy, cfg

  before_each(function()
    local chunk = assert(loadfile((os.getenv("TUNNELS_ROOT") or ".") .. "/lua/policy.lua"))
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

  it("dials when none is usable", function()
    assert.is_nil(policy.pick({ conn(1, { sessions = 16 }), conn(2, { age = 61 }) }, cfg))
  end)

  it("closes an idle connection after -remux.idle.max.sec, and a retired one at once", function()
    assert.is_false(policy.idle(conn(1, { idle = 9.5 }), cfg))
    assert.is_true(policy.idle(conn(1, { idle = 10 }), cfg))
    assert.is_true(policy.idle(conn(1, { idle = 0.1, sessions = 16 }), cfg))
    assert.is_false(policy.idle(conn(1, { idle = 100, live = 1 }), cfg))
  end)

  it("uses an overriding reusable() through tunnels.policy", function()
    tunnels.policy = setmetatable({ reusable = function(c) return c.id == 1 end }, { __index = policy })
    assert.are.equal(1, policy.pick({ conn(1), conn(2) }, cfg))
  end)
end)
