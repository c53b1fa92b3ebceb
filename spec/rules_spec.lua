-- lua/rules.lua, the rule library, as plain Lua.
describe("rule library", function()
  local rules = dofile((os.getenv("TUNNELS_ROOT") or ".") .. "/lua/rules.lua")

  local function decide(set, host, port, addr)
    return (set:match({ host = host, port = port or 443, addr = addr }))
  end

  it("matches every rule kind", function()
    local set = rules.compile({
      "DOMAIN,exact.example.com,exact", "DOMAIN-SUFFIX,example.com,suffix",
      "DOMAIN-KEYWORD,ads,keyword", "DOMAIN-PATTERN,^cdn%d+%.,pattern",
      "DOMAIN-PATTERN,tracker$,tail", "IP-CIDR,10.0.0.0/8,v4", "IP-CIDR6,fd00::/8,v6",
      "DST-PORT,25,port", "DST-PORT,6000-6999,range", "DST-PORT,1100-2000,wide", "MATCH,default",
    })
    assert.are.equal("exact", decide(set, "exact.example.com"))
    assert.are.equal("exact", decide(set, "EXACT.Example.COM"))
    assert.are.equal("suffix", decide(set, "example.com"))
    assert.are.equal("suffix", decide(set, "a.b.example.com"))
    assert.are.equal("default", decide(set, "badexample.com"))
    assert.are.equal("keyword", decide(set, "myads.net"))
    assert.are.equal("keyword", decide(set, "ads"))
    assert.are.equal("pattern", decide(set, "cdn42.net"))
    assert.are.equal("default", decide(set, "xcdn42.net"))
    assert.are.equal("tail", decide(set, "a.tracker"))
    assert.are.equal("v4", decide(set, "10.255.0.1"))
    assert.are.equal("default", decide(set, "11.0.0.1"))
    assert.are.equal("v6", decide(set, "fd12::1"))
    assert.are.equal("v6", decide(set, "[fdff:ffff::]"))
    assert.are.equal("port", decide(set, "x.org", 25))
    assert.are.equal("range", decide(set, "x.org", 6000))
    assert.are.equal("range", decide(set, "x.org", 6999))
    assert.are.equal("default", decide(set, "x.org", 7000))
    assert.are.equal("wide", decide(set, "x.org", 1999))
    assert.are.equal("default", decide(set, "x.org", 2001))
  end)

  it("gives the first matching rule precedence, across kinds", function()
    local set = rules.compile({
      "DOMAIN-KEYWORD,shop,first", "DOMAIN-SUFFIX,shop.example.com,second",
      "DOMAIN,www.shop.example.com,third", "DST-PORT,8080,port", "DOMAIN-SUFFIX,late.org,late",
    })
    assert.are.equal("first", decide(set, "www.shop.example.com"))
    -- the port rule comes before late.org's suffix rule
    assert.are.equal("port", decide(set, "late.org", 8080))
    assert.are.equal("late", decide(set, "late.org", 80))
    -- no MATCH rule: no decision
    assert.is_nil(decide(set, "other.net"))
    -- the most specific CIDR does not win over an earlier, wider one
    local c = rules.compile({ "IP-CIDR,10.0.0.0/8,wide", "IP-CIDR,10.1.0.0/16,narrow" })
    assert.are.equal("wide", decide(c, "10.1.2.3"))
    -- a duplicate keeps its first target
    local d = rules.compile({ "DOMAIN,a.com,one", "DOMAIN,a.com,two", "MATCH,m", "MATCH,n" })
    assert.are.equal("one", decide(d, "a.com"))
    assert.are.equal("m", decide(d, "b.com"))
  end)

  it("tells a datagram's destination from a stream's (NETWORK)", function()
    local set = rules.compile({ "DST-PORT,443,web", "NETWORK,udp,datagram", "NETWORK,TCP,stream",
      "MATCH,default" })
    assert.are.equal("web", set:match({ host = "x.org", port = 443, net = "udp" }))
    assert.are.equal("datagram", set:match({ host = "x.org", port = 53, net = "udp" }))
    assert.are.equal("stream", set:match({ host = "x.org", port = 53, net = "tcp" }))
    -- a request without net is a stream's (every TCP hook call before UDP existed)
    assert.are.equal("stream", set:match({ host = "x.org", port = 53 }))
    local ok, err = pcall(rules.compile, { "NETWORK,icmp,x" })
    assert.is_false(ok)
    assert.truthy(err:find("network is tcp or udp", 1, true), err)
  end)

  it("handles IPv6 CIDR edges", function()
    local set = rules.compile({
      "IP-CIDR6,::1/128,loopback", "IP-CIDR6,2001:db8::/127,pair", "IP-CIDR6,fe80::/10,linklocal",
      "IP-CIDR6,::ffff:127.0.0.0/104,mapped", "IP-CIDR6,2001:db8:1:2:3::/65,deep",
      "IP-CIDR6,2001:db8:1::/48,site", "IP-CIDR,0.0.0.0/0,any4",
    })
    assert.are.equal("loopback", decide(set, "::1"))
    assert.are.equal("loopback", decide(set, "0:0:0:0:0:0:0:1"))
    assert.is_nil(decide(set, "::2"))
    assert.is_nil(decide(set, "::"))
    assert.are.equal("pair", decide(set, "2001:db8::"))
    assert.are.equal("pair", decide(set, "2001:db8::1"))
    assert.is_nil(decide(set, "2001:db8::2"))
    assert.are.equal("linklocal", decide(set, "fe80::1"))
    assert.are.equal("linklocal", decide(set, "febf:ffff::1"))
    assert.is_nil(decide(set, "fec0::1"))
    assert.are.equal("mapped", decide(set, "::ffff:127.0.0.1"))
    assert.are.equal("mapped", decide(set, "::ffff:7f00:1"))
    assert.is_nil(decide(set, "::ffff:128.0.0.1"))
    assert.are.equal("site", decide(set, "2001:db8:1:ffff::1"))
    assert.is_nil(decide(set, "2001:db8:2::1"))
    -- /65: the first bit of the fifth group counts
    assert.are.equal("deep", decide(set, "2001:db8:1:2:7fff::1"))
    assert.are.equal("site", decide(set, "2001:db8:1:2:8000::1"))
    -- IPv4 rules never match IPv6 addresses and the reverse
    assert.are.equal("any4", decide(set, "1.2.3.4"))
    assert.is_nil(decide(set, "2002::1"))
    -- the resolved address is matched when the host is a name
    assert.are.equal("loopback", decide(set, "localhost", 80, "::1"))
    -- malformed addresses are names, not addresses
    for _, bad in ipairs({ "1::2::3", "12345::1", "1:2:3:4:5:6:7:8:9", "256.1.1.1", "1.2.3" }) do
      assert.is_nil(rules.ip(bad), bad)
    end
    assert.are.equal(16, #rules.ip("1:2:3:4:5:6:7:8"))
    assert.are.equal(16, #rules.ip("::ffff:1.2.3.4"))
  end)

  it("reads rule text with comments and reports bad lines with their place", function()
    local set = rules.compile("# ads\nDOMAIN-SUFFIX, ads.example , block  # inline\n\nMATCH,tunnel\n", "my.rules")
    assert.are.equal(2, set.count)
    assert.are.equal("block", decide(set, "x.ads.example"))
    local cases = {
      { "FOO,a,b", 'unknown rule type "FOO"' }, { "DOMAIN,a.com", "missing target" },
      { "IP-CIDR,10.0.0.0/33,x", "longer than 32" }, { "IP-CIDR,nope/8,x", "not an IP" },
      { "DST-PORT,70000,x", "bad port" }, { "DOMAIN-PATTERN,[a,x", "bad Lua pattern" },
    }
    for _, c in ipairs(cases) do
      local ok, err = pcall(rules.compile, "MATCH,x\n" .. c[1], "f.rules")
      assert.is_false(ok)
      assert.truthy(err:find("f.rules:2: ", 1, true), err)
      assert.truthy(err:find(c[2], 1, true), err)
    end
    local ok, err = pcall(rules.load, "/nonexistent/rules.txt")
    assert.is_false(ok)
    assert.truthy(err:find("/nonexistent/rules.txt", 1, true))
  end)

  it("refuses DOMAIN-PATTERN rules that can backtrack for seconds on a long name", function()
    for p, cost in pairs({ ["^ad%d+%."] = 1, ["ads"] = 1, ["%.ads%.[a-z]+$"] = 2, [".-.-x"] = 3,
        ["^.-.-.-x"] = 3, ["^a?b?c?d"] = 0, ["[%]*]+x"] = 2, ["%b()x*"] = 2, ["%f[%w]ad.-$"] = 2,
        [".-.-.-x"] = 4, ["a+a+a+x"] = 4, ["^(.-)(.-)(.-)(.-)x"] = 4 }) do
      assert.are.equal(cost, rules.pattern_cost(p), p)
    end
    local ok, err = pcall(rules.compile, { "DOMAIN-PATTERN,.-.-.-x,block" })
    assert.is_false(ok)
    assert.truthy(err:find("can backtrack too far: 4 nested repetitions", 1, true), err)
    -- the most that is accepted, on the longest valid name: ~17 ms each here (the refused one,
    -- cost 4, took ~1 s; bench/rules-bench.lua measures decisions)
    local set = rules.compile({ "DOMAIN-PATTERN,.-.-x,block", "DOMAIN-PATTERN,^.-.-.-x,block", "MATCH,tunnel" })
    local name = string.rep("a", 63) .. "." .. string.rep("a", 63) .. "." .. string.rep("a", 63) .. "." .. string.rep("a", 61)
    assert.are.equal("tunnel", decide(set, name))
  end)

  it("decides the same as a plain scan over 2,000 random rules and requests", function()
    -- The hashed matcher against the obvious one: every rule tried in order.
    local seed = 7
    local function rnd(n)
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n
    end
    local labels = { "a", "b", "ab", "ads", "cdn1", "x" }
    local function name()
      local t = {}
      for i = 1, 1 + rnd(3) do t[i] = labels[rnd(#labels) + 1] end
      return table.concat(t, ".")
    end
    local list, plain = {}, {}
    for i = 1, 2000 do
      local k = rnd(6)
      local v, test
      if k == 0 then
        v = name(); list[i] = "DOMAIN," .. v .. ",r" .. i
        test = function(q) return q.host == v end
      elseif k == 1 then
        v = name(); list[i] = "DOMAIN-SUFFIX," .. v .. ",r" .. i
        test = function(q) return q.host == v or q.host:sub(-#v - 1) == "." .. v end
      elseif k == 2 then
        v = labels[rnd(#labels) + 1] .. labels[rnd(#labels) + 1]; list[i] = "DOMAIN-KEYWORD," .. v .. ",r" .. i
        test = function(q) return q.host:find(v, 1, true) ~= nil end
      elseif k == 3 then
        local bits = rnd(25) + 8
        local a = rnd(4)
        list[i] = "IP-CIDR,10." .. a .. ".0.0/" .. bits .. ",r" .. i
        test = function(q)
          local o2, o3 = q.host:match("^10%.(%d+)%.(%d+)%.%d+$")
          if not o2 then return false end
          local n = tonumber(o2) * 65536 + tonumber(o3) * 256
          local net = a * 65536
          local size = 2 ^ (24 - (bits - 8))
          return n >= net and n < net + size and (bits >= 16 or true)
        end
        if bits < 16 then test = function(q) return q.host:match("^10%.") ~= nil and
          math.floor(tonumber(q.host:match("^10%.(%d+)")) / 2 ^ (16 - bits)) == math.floor(a / 2 ^ (16 - bits)) end end
      elseif k == 4 then
        v = 1 + rnd(50); list[i] = "DST-PORT," .. v .. ",r" .. i
        test = function(q) return q.port == v end
      else
        list[i] = "DOMAIN-PATTERN,^" .. labels[rnd(#labels) + 1] .. "%.,r" .. i
        local p = list[i]:match("PATTERN,(.-),")
        test = function(q) return q.host:find(p) ~= nil end
      end
      plain[i] = test
    end
    local set = rules.compile(list)
    for _ = 1, 2000 do
      local q
      if rnd(3) == 0 then
        q = { host = "10." .. rnd(5) .. "." .. rnd(256) .. "." .. rnd(256), port = 1 + rnd(60) }
      else
        q = { host = name(), port = 1 + rnd(60) }
      end
      local want
      for i = 1, #plain do
        if plain[i](q) then want = "r" .. i; break end
      end
      assert.are.equal(want, decide(set, q.host, q.port), q.host .. ":" .. q.port)
    end
  end)
end)
