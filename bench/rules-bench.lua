-- rules-bench.lua: how long lua/rules.lua takes to load 10,000 rules and to decide a request,
-- with the JIT off as in the engine (luahost.c turns it off for its budget hook).
-- usage: luajit bench/rules-bench.lua [ROOT]      (part of `make bench`)
local root = arg[1] or "."
jit.off()
local rules = dofile(root .. "/lua/rules.lua")
local clock = os.clock

-- A deterministic generator, so every run measures the same rules.
local seed = 12345
local function rnd(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n
end
local function word(n)
  local t = {}
  for i = 1, n do t[i] = string.char(97 + rnd(26)) end
  return table.concat(t)
end

local lines, mix = {}, {
  { "DOMAIN-SUFFIX", 5000 }, { "DOMAIN", 3000 }, { "IP-CIDR", 1000 }, { "IP-CIDR6", 500 },
  { "DOMAIN-KEYWORD", 300 }, { "DOMAIN-PATTERN", 100 }, { "DST-PORT", 99 },
}
local suffixes = {}
for _, m in ipairs(mix) do
  for _ = 1, m[2] do
    local v
    if m[1] == "DOMAIN-SUFFIX" then
      v = word(8) .. "." .. ({ "com", "net", "org", "cn" })[rnd(4) + 1]
      suffixes[#suffixes + 1] = v
    elseif m[1] == "DOMAIN" then
      v = word(5) .. "." .. word(9) .. ".com"
    elseif m[1] == "IP-CIDR" then
      v = string.format("%d.%d.%d.0/%d", 1 + rnd(222), rnd(256), rnd(256), 8 + rnd(17))
    elseif m[1] == "IP-CIDR6" then
      v = string.format("2%03x:%x::/%d", rnd(4096), rnd(65536), 16 + rnd(33))
    elseif m[1] == "DOMAIN-KEYWORD" then
      v = word(7)
    elseif m[1] == "DOMAIN-PATTERN" then
      v = "^" .. word(4) .. "%d+%."
    else
      v = tostring(1000 + rnd(60000))
    end
    lines[#lines + 1] = m[1] .. "," .. v .. "," .. ({ "direct", "block", "tunnel" })[rnd(3) + 1]
  end
end
lines[#lines + 1] = "MATCH,tunnel"
local path = os.tmpname()
local f = assert(io.open(path, "w"))
f:write(table.concat(lines, "\n"), "\n")
f:close()

local t0 = clock()
local set = rules.load(path)
local load_s = clock() - t0
os.remove(path)

local queries = {
  { name = "suffix hit (deep name)", req = { host = "a.b.c." .. suffixes[4000], port = 443 } },
  { name = "no rule but MATCH (name)", req = { host = "www.nothing-here.example", port = 443 } },
  { name = "IPv4 address", req = { host = "203.0.113.7", port = 80 } },
  { name = "IPv6 address", req = { host = "2001:db8::1", port = 80 } },
}
local n = 100000
print(string.format("rules: %d rules loaded in %.1f ms (JIT off)", set.count, load_s * 1e3))
print("| request | decision | µs per decision |")
print("|---|---|---|")
for _, q in ipairs(queries) do
  local target = set:match(q.req)
  local t = clock()
  for _ = 1, n do set:match(q.req) end
  local us = (clock() - t) / n * 1e6
  print(string.format("| %s | %s | %.2f |", q.name, tostring(target), us))
end
