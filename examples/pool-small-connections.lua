-- pool-small-connections.lua: a connection carries at most 4 sessions and lives 20 s, so
-- sessions spread over more, younger connections. Only reusable() is given: pick() and idle()
-- come from the default script and call this reusable() through tunnels.policy.
--
--   tunnels -role=client ... -lua.script=examples/pool-small-connections.lua
return {
  reusable = function(c, cfg)
    return not c.goaway and c.sessions < 4 and c.age < 20
  end,
}
