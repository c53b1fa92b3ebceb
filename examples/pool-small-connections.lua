-- pool-small-connections.lua: a connection carries at most 4 sessions and lives 20 s, so
-- sessions spread over more, younger connections. Only reusable() and headroom() are given:
-- pick(), spare() and idle() come from the default script and call these through
-- tunnels.policy (headroom() is how many more sessions a connection will take, which says
-- when to dial its successor, so that no session waits for it).
--
--   tunnels -role=client ... -lua.script=examples/pool-small-connections.lua
local M = {}

function M.reusable(c, cfg)
  return not c.goaway and c.sessions < 4 and c.age < 20
end

function M.headroom(c, cfg)
  if not M.reusable(c, cfg) or c.age >= 15 then return 0 end
  return 4 - c.sessions
end

return M
