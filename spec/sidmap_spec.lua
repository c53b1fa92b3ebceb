-- The session-id table (engine/sidmap.c): linear probing with backward-shift deletion.
local ffi = require("ffi")
local lib = require("spec.ffi")

describe("sidmap", function()
  it("stores, finds, deletes and grows across many ids", function()
    local m = lib.sidmap_new()
    local vals = {}
    for sid = 1, 3000 do
      vals[sid] = ffi.cast("void *", sid * 8)
      assert.are.equal(0, lib.sidmap_put(m, sid, vals[sid]))
    end
    assert.are.equal(3000, tonumber(lib.sidmap_count(m)))
    for sid = 1, 3000, 3 do lib.sidmap_del(m, sid) end
    for sid = 1, 3000 do
      local v = lib.sidmap_get(m, sid)
      if (sid - 1) % 3 == 0 then assert.is_true(v == nil) else assert.is_true(v == vals[sid]) end
    end
    assert.is_true(lib.sidmap_get(m, 65535) == nil)
    lib.sidmap_free(m)
  end)
end)
