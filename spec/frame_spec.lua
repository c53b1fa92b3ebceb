-- The ReMux frame codec (engine/frame.c), byte for byte against docs/PROTOCOL.md.
local ffi = require("ffi")
local lib = require("spec.ffi")

local function bytes(s) return ffi.cast("const uint8_t *", s), #s end

local function decode_ctl(s)
  local c = ffi.new("struct frame_ctl")
  local err = ffi.new("const char *[1]")
  local p, n = bytes(s)
  local rc = lib.frame_decode_ctl(p, n, c, err)
  if rc ~= 0 then return nil, ffi.string(err[0]) end
  return c
end

local function encode_ctl(fields)
  local c = ffi.new("struct frame_ctl", fields)
  local out = ffi.new("uint8_t[16]")
  local n = lib.frame_encode_ctl(out, c)
  return ffi.string(out, n)
end

describe("frame header", function()
  it("needs four bytes", function()
    local h = ffi.new("struct frame_hdr")
    for n = 0, 3 do
      assert.are.equal(0, lib.frame_decode_hdr(ffi.cast("const uint8_t *", "\0\1\0\2"), n, h))
    end
    assert.are.equal(1, lib.frame_decode_hdr(ffi.cast("const uint8_t *", "\1\2\3\4"), 4, h))
    assert.are.equal(0x0102, h.sid)
    assert.are.equal(0x0304, h.len)
  end)

  it("encodes big-endian, extremes included", function()
    local out = ffi.new("uint8_t[4]")
    lib.frame_encode_hdr(out, 65535, 65535)
    assert.are.equal("\255\255\255\255", ffi.string(out, 4))
    lib.frame_encode_hdr(out, 1, 0)
    assert.are.equal("\0\1\0\0", ffi.string(out, 4))
  end)
end)

describe("control frames", function()
  it("encode WINDOW as sid 0 | len 7 | 01 sid inc", function()
    assert.are.equal("\0\0\0\7\1\0\5\0\4\0\0", encode_ctl({ type = 1, sid = 5, increment = 0x40000 }))
  end)

  it("encode RESET, PING, PONG, GOAWAY with the documented lengths", function()
    assert.are.equal("\0\0\0\4\2\0\9\1", encode_ctl({ type = 2, sid = 9, reason = 1 }))
    assert.are.equal("\0\0\0\9\3\1\2\3\4\5\6\7\8", encode_ctl({ type = 3, opaque = 0x0102030405060708ULL }))
    assert.are.equal("\0\0\0\9\4\0\0\0\0\0\0\0\0", encode_ctl({ type = 4, opaque = 0 }))
    assert.are.equal("\0\0\0\3\5\0\7", encode_ctl({ type = 5, sid = 7 }))
  end)

  it("round-trip every type, extreme values included", function()
    local cases = {
      { type = 1, sid = 65535, increment = 0xffffffff },
      { type = 2, sid = 1, reason = 255 },
      { type = 3, opaque = 0xffffffffffffffffULL },
      { type = 4, opaque = 1 },
      { type = 5, sid = 0 },
    }
    for _, f in ipairs(cases) do
      local wire = encode_ctl(f)
      local c = assert(decode_ctl(wire:sub(5)))
      assert.are.equal(f.type, c.type)
      if f.sid then assert.are.equal(f.sid, c.sid) end
      if f.increment then assert.are.equal(f.increment, c.increment) end
      if f.reason then assert.are.equal(f.reason, c.reason) end
      if f.opaque then assert.is_true(c.opaque == f.opaque) end
    end
  end)

  it("refuse an empty payload", function()
    local c, err = decode_ctl("")
    assert.is_nil(c)
    assert.matches("empty", err)
  end)

  it("refuse unknown types", function()
    for _, t in ipairs({ 0, 6, 7, 128, 255 }) do
      local c, err = decode_ctl(string.char(t) .. "\0\1\0\0\0\1")
      assert.is_nil(c)
      assert.matches("unknown control frame type", err)
    end
  end)

  it("refuse every wrong length, short or long", function()
    local good = { [1] = 6, [2] = 3, [3] = 8, [4] = 8, [5] = 2 }
    for t, n in pairs(good) do
      for _, len in ipairs({ 0, n - 1, n + 1, n + 8 }) do
        local c, err = decode_ctl(string.char(t) .. string.rep("\1", len))
        assert.is_nil(c, "type " .. t .. " length " .. len)
        assert.matches("wrong length", err)
      end
    end
  end)

  it("refuse a WINDOW or RESET for session 0 and a zero increment", function()
    local _, e1 = decode_ctl("\1\0\0\0\0\0\1")
    assert.matches("WINDOW for session 0", e1)
    local _, e2 = decode_ctl("\1\0\1\0\0\0\0")
    assert.matches("zero increment", e2)
    local _, e3 = decode_ctl("\2\0\0\1")
    assert.matches("RESET for session 0", e3)
  end)

  it("name every RESET reason", function()
    local want = { "connection refused", "unreachable", "dns failure", "refused by policy",
      "timeout", "protocol error", "aborted" }
    for i, w in ipairs(want) do assert.are.equal(w, ffi.string(lib.frame_reason_str(i))) end
    assert.are.equal("unknown reason", ffi.string(lib.frame_reason_str(0)))
    assert.are.equal("unknown reason", ffi.string(lib.frame_reason_str(200)))
  end)

  it("decode arbitrary bytes without crashing (bounded random walk)", function()
    math.randomseed(7)
    local c = ffi.new("struct frame_ctl")
    local err = ffi.new("const char *[1]")
    for _ = 1, 5000 do
      local n = math.random(0, 12)
      local t = {}
      for i = 1, n do t[i] = string.char(math.random(0, 255)) end
      local s = table.concat(t)
      local rc = lib.frame_decode_ctl(ffi.cast("const uint8_t *", s), n, c, err)
      assert.is_true(rc == 0 or rc == -1)
      if rc == -1 then assert.is_true(#ffi.string(err[0]) > 0) end
    end
  end)
end)
