-- rules.lua: the rule library for routing scripts (client) and ACL scripts (server), built into
-- the binary as `require "tunnels.rules"`. Rules are compiled once into hashed matchers, so a
-- decision costs a few table lookups whatever the number of rules.
--
-- A rule is one line "TYPE,VALUE,TARGET" (the format Clash users know):
--   DOMAIN,example.com,direct          the name exactly (case-insensitive)
--   DOMAIN-SUFFIX,example.com,direct   example.com and every name under it (not badexample.com)
--   DOMAIN-KEYWORD,ads,block           the name contains "ads"
--   DOMAIN-PATTERN,^ad%d+%.,block      the name matches a Lua pattern
--   IP-CIDR,10.0.0.0/8,direct          an IPv4 or IPv6 destination inside the range (IP-CIDR6
--   IP-CIDR6,fd00::/8,direct           is the same rule); names are not resolved on the client
--   DST-PORT,25,block                  the port, or a range 6000-6100
--   NETWORK,udp,direct                 a datagram's destination (udp) or a stream's (tcp)
--   MATCH,tunnel                       everything (the final default)
-- TARGET is any word the script gives meaning to (tunnel, direct, block, allow, deny, a server
-- name). The first matching rule in the list wins; "#" starts a comment.
--
-- How: exact names and suffixes are hash keys (a name is looked up once per label); CIDR rules
-- are hash keys per prefix length (the address masked to each length in use); ports are hash
-- keys; keywords are found in one pass over the name (indexed by their first two bytes).
-- Patterns are tried in order, only those listed before the best match so far: keep them few.
-- Precedence across kinds is the rule's position.
local rules = {}

local byte, char, sub, find, lower, match = string.byte, string.char, string.sub, string.find,
  string.lower, string.match
local floor = math.floor

-- Parses IPv4 text into 4 bytes, or nil.
local function parse4(s)
  local a, b, c, d = match(s, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  if a > 255 or b > 255 or c > 255 or d > 255 then return nil end
  return char(a, b, c, d)
end

-- Parses IPv6 text (with "::" and an IPv4 tail, without a zone) into 16 bytes, or nil.
local function parse6(s)
  if not find(s, ":", 1, true) or find(s, "[^%x:%.]") then return nil end
  local head, tail = s, nil
  local dc = find(s, "::", 1, true)
  if dc then
    head, tail = sub(s, 1, dc - 1), sub(s, dc + 2)
    if find(tail, "::", 1, true) then return nil end
  end
  local function groups(part, allow_v4)
    local out = {}
    if part == "" then return out end
    local pieces = {}
    for p in (part .. ":"):gmatch("([^:]*):") do pieces[#pieces + 1] = p end
    for i, p in ipairs(pieces) do
      if i == #pieces and allow_v4 and find(p, ".", 1, true) then
        local v4 = parse4(p)
        if not v4 then return nil end
        out[#out + 1] = byte(v4, 1) * 256 + byte(v4, 2)
        out[#out + 1] = byte(v4, 3) * 256 + byte(v4, 4)
      else
        if not match(p, "^%x%x?%x?%x?$") then return nil end
        out[#out + 1] = tonumber(p, 16)
      end
    end
    return out
  end
  local h = groups(head, tail == nil)
  local t = tail and groups(tail, true) or {}
  if not h or not t then return nil end
  local n = #h + #t
  if (tail and n > 7) or (not tail and n ~= 8) then return nil end
  local all = {}
  for _, g in ipairs(h) do all[#all + 1] = g end
  for _ = 1, 8 - n do all[#all + 1] = 0 end
  for _, g in ipairs(t) do all[#all + 1] = g end
  local bytes = {}
  for i = 1, 8 do
    bytes[2 * i - 1] = floor(all[i] / 256)
    bytes[2 * i] = all[i] % 256
  end
  return char(unpack(bytes))
end

-- An address in text (IPv4, IPv6, IPv6 in brackets) as raw bytes (4 or 16), or nil.
function rules.ip(s)
  if type(s) ~= "string" then return nil end
  return parse4(s) or parse6((s:gsub("^%[(.*)%]$", "%1")))
end

-- The first bits of ip, as a key. Up to 48 bits a number (no string to build per lookup: the
-- first six bytes fit a double exactly); past that, whole bytes and the partial byte masked.
local function head(ip)
  local b1, b2, b3, b4, b5, b6 = byte(ip, 1, 6)
  if #ip == 4 then return ((b1 * 256 + b2) * 256 + b3) * 256 + b4, 32 end
  return ((((b1 * 256 + b2) * 256 + b3) * 256 + b4) * 256 + b5) * 256 + b6, 48
end

local function prefix(ip, bits, v, vbits)
  if bits <= 48 then
    if not v then v, vbits = head(ip) end
    return floor(v / 2 ^ (vbits - bits))
  end
  local whole = floor(bits / 8)
  local rest = bits % 8
  if rest == 0 then return sub(ip, 1, whole) end
  local b = byte(ip, whole + 1)
  return sub(ip, 1, whole) .. char(b - b % 2 ^ (8 - rest))
end

local function parse_cidr(v)
  local addr, bits = match(v, "^([^/]+)/(%d+)$")
  if not addr then addr, bits = v, nil end
  local ip = rules.ip(addr)
  if not ip then return nil, "not an IP address or CIDR range" end
  local max = #ip * 8
  bits = bits and tonumber(bits) or max
  if bits > max then return nil, "prefix length " .. bits .. " is longer than " .. max end
  return ip, bits
end

-- How deep a Lua pattern can backtrack: its repetitions (*, + and - after a single class: each
-- may try every length), plus one when it is not anchored (find tries every start). Matching a
-- name of 253 bytes costs about 253^(cost + 1) steps at worst, inside one string.find that no
-- budget can interrupt: cost 3 ran ~17 ms here, cost 4 about a second.
rules.PATTERN_COST_MAX = 3

function rules.pattern_cost(p)
  local cost, i, n = 0, 1, #p
  if sub(p, 1, 1) == "^" then i = 2 else cost = 1 end
  while i <= n do
    local c = sub(p, i, i)
    local single = true
    if c == "%" then
      local d = sub(p, i + 1, i + 1)
      if d == "b" then
        i, single = i + 4, false
      elseif d == "f" then
        i = i + 2
        local close = find(p, "]", i + (sub(p, i + 1, i + 1) == "^" and 2 or 1), true)
        i, single = (close or n) + 1, false
      else
        i = i + 2
      end
    elseif c == "[" then
      local j = i + 1
      if sub(p, j, j) == "^" then j = j + 1 end
      if sub(p, j, j) == "]" then j = j + 1 end
      while j <= n and sub(p, j, j) ~= "]" do j = j + (sub(p, j, j) == "%" and 2 or 1) end
      i = j + 1
    elseif c == "(" or c == ")" or (c == "$" and i == n) then
      i, single = i + 1, false
    else
      i = i + 1
    end
    if single then
      local q = sub(p, i, i)
      if q == "*" or q == "+" or q == "-" then
        cost = cost + 1
        i = i + 1
      elseif q == "?" then
        i = i + 1
      end
    end
  end
  return cost
end

local kinds = {
  DOMAIN = "exact", ["DOMAIN-SUFFIX"] = "suffix", ["DOMAIN-KEYWORD"] = "keyword",
  ["DOMAIN-PATTERN"] = "pattern", ["IP-CIDR"] = "cidr", ["IP-CIDR6"] = "cidr",
  ["DST-PORT"] = "port", NETWORK = "network", MATCH = "match",
}

local Set = {}
Set.__index = Set

-- Appends v to the list t[key], creating it.
local function bucket(t, key, v)
  local l = t[key]
  if not l then
    l = {}
    t[key] = l
  end
  l[#l + 1] = v
end

-- Adds one rule line; index is its position. Returns true or nil, why.
local function add(set, line, index)
  local f = {}
  for part in (line .. ","):gmatch("%s*([^,]-)%s*,") do f[#f + 1] = part end
  local kind = kinds[(f[1] or ""):upper()]
  if not kind then return nil, "unknown rule type " .. string.format("%q", f[1] or "") end
  local value, target = f[2], f[3]
  if kind == "match" then value, target = nil, f[2] end
  if kind ~= "match" and (value == nil or value == "") then return nil, "missing value" end
  if target == nil or target == "" then return nil, "missing target" end
  local rule = { index = index, line = line, target = target }
  set.list[index] = rule
  if kind == "exact" or kind == "suffix" then
    local key = lower(value):gsub("^%.", ""):gsub("%.$", "")
    local t = set[kind]
    if not t[key] then t[key] = rule end
  elseif kind == "keyword" then
    -- Indexed by the keyword's first two bytes: a name is scanned once, position by position,
    -- and only keywords starting with the bytes found there are compared.
    local kw = lower(value)
    if #kw == 1 then
      set.keyword1[#set.keyword1 + 1] = { kw, rule }
    else
      bucket(set.keyword, byte(kw, 1) * 256 + byte(kw, 2), { kw, rule })
    end
  elseif kind == "pattern" then
    local ok, err = pcall(find, "", value)
    if not ok then return nil, "bad Lua pattern: " .. tostring(err) end
    local cost = rules.pattern_cost(value)
    if cost > rules.PATTERN_COST_MAX then
      return nil, "Lua pattern can backtrack too far: " .. cost .. " nested repetitions (*, + or -, " ..
        "and one more when not anchored with ^); at most " .. rules.PATTERN_COST_MAX
    end
    -- "^x..." with a plain first character only ever matches names starting with x.
    local first = match(value, "^%^([%w%-_])")
    if first and not match(value, "^%^.[%*%?%-]") then
      bucket(set.anchored, byte(lower(first)), { value, rule })
    else
      set.pattern[#set.pattern + 1] = { value, rule }
    end
  elseif kind == "cidr" then
    local ip, bits = parse_cidr(value)
    if not ip then return nil, bits end
    local fam = #ip == 4 and set.v4 or set.v6
    local t = fam[bits]
    if not t then
      t = {}
      fam[bits] = t
      local lens = #ip == 4 and set.v4len or set.v6len
      lens[#lens + 1] = bits
      table.sort(lens, function(a, b) return a > b end)
    end
    local key = prefix(ip, bits)
    if not t[key] then t[key] = rule end
  elseif kind == "port" then
    local lo, hi = match(value, "^(%d+)%-(%d+)$")
    lo = tonumber(lo or value)
    hi = tonumber(hi or value)
    if not lo or not hi or lo > hi or hi > 65535 then return nil, "bad port or range" end
    if hi - lo < 64 then
      for p = lo, hi do
        if not set.port[p] then set.port[p] = rule end
      end
    else
      set.ranges[#set.ranges + 1] = { lo, hi, rule }
    end
  elseif kind == "network" then
    local net = lower(value)
    if net ~= "tcp" and net ~= "udp" then return nil, "network is tcp or udp" end
    if not set.network[net] then set.network[net] = rule end
  elseif kind == "match" then
    if not set.default then set.default = rule end
  end
  return true
end

local function new_set()
  return setmetatable({ list = {}, exact = {}, suffix = {}, keyword = {}, keyword1 = {}, pattern = {}, anchored = {}, v4 = {},
    v6 = {}, v4len = {}, v6len = {}, port = {}, ranges = {}, network = {}, default = nil }, Set)
end

-- Compiles rules from a list of lines, or from text with one rule per line. name is used in
-- error messages. Returns the compiled set, or raises "name:line: why".
function rules.compile(src, name)
  name = name or "rules"
  local set, n = new_set(), 0
  local lines = src
  if type(src) == "string" then
    lines = {}
    for l in (src .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  end
  for i, l in ipairs(lines) do
    l = l:gsub("#.*$", ""):gsub("^%s+", ""):gsub("%s+$", "")
    if l ~= "" then
      n = n + 1
      local ok, why = add(set, l, n)
      if not ok then error(name .. ":" .. i .. ": " .. why .. ": " .. l, 2) end
    end
  end
  set.count = n
  return set
end

-- Reads and compiles a rule file.
function rules.load(path)
  local f, err = io.open(path, "r")
  if not f then error("rules: " .. err, 2) end
  local text = f:read("*a")
  f:close()
  return rules.compile(text, path)
end

local function better(best, rule)
  if rule and (best == nil or rule.index < best.index) then return rule end
  return best
end

-- The first rule matching the request, as target, rule line; nil when none matches (no MATCH).
-- req: host (a name or an address as text), port, and optionally addr (an address as text: the
-- server's resolved address) and net ("tcp", the default, or "udp"). A host that is an address literal is matched by CIDR rules.
function Set:match(req)
  local best
  local host = req.host
  local ip = req.addr and rules.ip(req.addr)
  if host and host ~= "" then
    local hip = rules.ip(host)
    if hip then
      ip = ip or hip
    else
      host = lower(host)
      best = better(best, self.exact[host])
      local from = 1
      while true do
        best = better(best, self.suffix[sub(host, from)])
        local dot = find(host, ".", from, true)
        if not dot then break end
        from = dot + 1
      end
      local kw = self.keyword
      local b = byte(host, 1)
      for i = 1, #host - 1 do
        local b2 = byte(host, i + 1)
        local l = kw[b * 256 + b2]
        if l then
          for j = 1, #l do
            local k = l[j]
            if (best == nil or k[2].index < best.index) and sub(host, i, i + #k[1] - 1) == k[1] then
              best = k[2]
            end
          end
        end
        b = b2
      end
      local kw1 = self.keyword1
      for i = 1, #kw1 do
        local k = kw1[i]
        if best and k[2].index > best.index then break end
        if find(host, k[1], 1, true) then
          best = k[2]
          break
        end
      end
      local pt = self.anchored[byte(host, 1)]
      for i = 1, pt and #pt or 0 do
        local p = pt[i]
        if best and p[2].index > best.index then break end
        if find(host, p[1]) then
          best = p[2]
          break
        end
      end
      pt = self.pattern
      for i = 1, #pt do
        local p = pt[i]
        if best and p[2].index > best.index then break end
        if find(host, p[1]) then
          best = p[2]
          break
        end
      end
    end
  end
  if ip then
    local fam, lens = self.v6, self.v6len
    if #ip == 4 then fam, lens = self.v4, self.v4len end
    local v, vbits = head(ip)
    for i = 1, #lens do
      local bits = lens[i]
      best = better(best, fam[bits][prefix(ip, bits, v, vbits)])
    end
  end
  local port = tonumber(req.port)
  if port then
    best = better(best, self.port[port])
    local rg = self.ranges
    for i = 1, #rg do
      local r = rg[i]
      if port >= r[1] and port <= r[2] then best = better(best, r[3]) end
    end
  end
  best = better(best, self.network[req.net or "tcp"])
  best = better(best, self.default)
  if best then return best.target, best.line end
  return nil
end

-- True when addr (text) is inside one of the CIDR strings of list.
function rules.in_ranges(addr, list)
  local set = list.__compiled
  if not set then
    local lines = {}
    for i, c in ipairs(list) do lines[i] = "IP-CIDR," .. c .. ",in" end
    set = rules.compile(lines, "ranges")
    list.__compiled = set
  end
  return set:match({ addr = addr }) == "in"
end

return rules
