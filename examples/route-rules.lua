-- route-rules.lua: per-destination routing with the rule library (client; -lua.script).
-- Internal names and private networks go direct, ad and tracker names are blocked (the app gets
-- SOCKS reply 02 at once), mail ports are blocked, and everything else is tunnelled. With
-- several servers (-server.addr=hk=host1:443,us=host2:443), a rule's target may name one.
local rules = require("tunnels.rules")

local set = rules.compile({
  "DOMAIN-SUFFIX,corp.example,direct",
  "DOMAIN,localhost,direct",
  "IP-CIDR,10.0.0.0/8,direct",
  "IP-CIDR,192.168.0.0/16,direct",
  "IP-CIDR6,fd00::/8,direct",
  "DOMAIN-SUFFIX,ads.example,block",
  "DOMAIN-KEYWORD,tracker,block",
  "DOMAIN-PATTERN,^ad%d*%.,block",
  "DST-PORT,25,block",
  "MATCH,tunnel",
}, "route-rules")
-- A large list lives better in a file: rules.load("/etc/tunnels/rules.txt")

return {
  route = function(req, cfg)
    -- The matched rule's text comes second: it is logged with a block.
    return set:match(req)
  end,
}
