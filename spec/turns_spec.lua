-- Turns for room on a full connection (engine/turns.c), through the FFI: the line's order, a
-- turn given back keeping its place, the overflow, and how many turns room holds.
local ffi = require("ffi")
local lib = require("spec.ffi")

describe("turns", function()
  local t, tickets

  before_each(function()
    t = ffi.new("struct turns")
    tickets = {}
  end)
  after_each(function() lib.turns_free(t) end)

  local function ticket(sid)
    tickets[sid] = tickets[sid] or ffi.new("struct turn_ticket")
    return tickets[sid]
  end
  local function wait(sid) lib.turns_wait(t, ticket(sid), sid) end
  local function drain()
    local out = {}
    for _ = 1, 10000 do
      local sid = lib.turns_next(t)
      if sid == 0 then return out end
      out[#out + 1] = sid
    end
    error("the line never emptied")
  end

  it("hands out turns in the order sessions got in line, once each", function()
    assert.are.equal(0, lib.turns_waiting(t))
    for _, sid in ipairs({ 5, 3, 9, 1 }) do wait(sid) end
    wait(3) -- waiting already: no second place
    assert.are.equal(1, lib.turns_waiting(t))
    assert.are.same({ 5, 3, 9, 1 }, drain())
    assert.are.equal(0, lib.turns_waiting(t))
    assert.are.equal(0, lib.turns_next(t))
  end)

  it("puts a session given a turn it could not use back at the front; one that used it at the back", function()
    for _, sid in ipairs({ 1, 2, 3 }) do wait(sid) end
    local first = lib.turns_next(t)
    lib.turns_grant(ticket(first))
    assert.are.equal(1, lib.turns_held(ticket(first)))
    wait(first) -- it could not use its turn: still first
    assert.are.same({ 1, 2, 3 }, drain())

    tickets = {} -- new sessions
    for _, sid in ipairs({ 1, 2, 3 }) do wait(sid) end
    first = lib.turns_next(t)
    lib.turns_grant(ticket(first))
    assert.are.equal(1, lib.turns_use(ticket(first))) -- it read its turn's worth
    assert.are.equal(0, lib.turns_use(ticket(first))) -- spent
    wait(first) -- more to send: to the back
    assert.are.same({ 2, 3, 1 }, drain())
  end)

  it("wakes everyone once when the line is full", function()
    for sid = 1, 4096 do wait(sid) end
    assert.are.equal(0, lib.turns_take_wake_all(t))
    wait(4097)
    assert.are.equal(1, lib.turns_waiting(t))
    assert.are.equal(1, lib.turns_take_wake_all(t))
    assert.are.equal(0, lib.turns_take_wake_all(t))
    local got = drain()
    assert.are.equal(4096, #got)
    assert.are.equal(1, got[1])
    assert.are.equal(4096, got[4096])
  end)

  it("holds a random walk of waits, turns and give-backs in the order a plain list would", function()
    -- the model: a Lua list; 20,000 steps, seeded so a failure repeats
    math.randomseed(42)
    local model, waiting, holding = {}, {}, {}
    for _ = 1, 20000 do
      local r = math.random()
      if r < 0.5 then
        local sid = math.random(1, 300)
        if not waiting[sid] then
          if holding[sid] then table.insert(model, 1, sid) else model[#model + 1] = sid end
          waiting[sid], holding[sid] = true, nil
        end
        wait(sid)
      elseif r < 0.8 then
        local sid = lib.turns_next(t)
        assert.are.equal(model[1] or 0, sid)
        if sid ~= 0 then
          table.remove(model, 1)
          waiting[sid], holding[sid] = nil, true
          lib.turns_grant(ticket(sid))
        end
      else
        local sid = math.random(1, 300)
        assert.are.equal(holding[sid] and 1 or 0, lib.turns_use(ticket(sid)))
        holding[sid] = nil
      end
    end
    assert.are.same(model, drain())
  end)

  it("gives one turn per 64 KiB of room, and one more", function()
    assert.are.equal(1, tonumber(lib.turns_for_room(0)))
    assert.are.equal(1, tonumber(lib.turns_for_room(65535)))
    assert.are.equal(2, tonumber(lib.turns_for_room(65536)))
    assert.are.equal(17, tonumber(lib.turns_for_room(1048576)))
  end)
end)
