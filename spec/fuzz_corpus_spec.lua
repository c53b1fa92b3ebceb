-- Every input in fuzz/corpus/ (seeds and whatever `make fuzz` found worth keeping, crashes
-- included once fixed) replays through its fuzz target's checks on every `make test`.
local H = require("spec.helper")

describe("fuzz corpus replay", function()
  for _, target in ipairs({ "frame", "socks", "flags", "proxyreq", "dgram" }) do
    it("passes the " .. target .. " target's checks on every input", function()
      local files = H.sh("ls " .. H.root .. "/fuzz/corpus/" .. target .. "/")
      local n = select(2, files:gsub("[^\n]+", ""))
      assert.is_true(n >= 5, "corpus for " .. target .. " has " .. n .. " inputs")
      -- under SAN=1 the replayer is the ASan + UBSan build
      local out, code = H.sh(H.build .. "/replay-" .. target .. " " .. H.root .. "/fuzz/corpus/" .. target .. "/*")
      assert.are.equal(0, code, out)
      assert.are.equal("replayed " .. n .. " inputs\n", out)
    end)
  end
end)
