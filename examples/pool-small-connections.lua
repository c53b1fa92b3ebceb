-- pool-small-connections.lua: a connection carries at most 4 sessions and lives 20 s, so
-- sessions spread over more, younger connections. Only reusable() and ending() are given:
-- pick(), spare() and idle() come from the default script and call these through
-- tunnels.policy (ending() says when to dial the successor, so that no session waits for it).
--
--   tunnels -role=client ... -lua.script=examples/pool-small-connections.lua
return {
  reusable = function(c, cfg)
    return not c.goaway and c.sessions < 4 and c.age < 20
  end,
  ending = function(c, cfg)
    return c.sessions + 1 >= 3 or c.age >= 15
  end,
}
