-- policy.lua: the default TunneLS policy script, built into the binary.
--
-- A script given with -lua.script returns a table of hooks like this one; any hook it leaves
-- out is taken from here. The engine calls each hook through one gate with a time budget, and
-- falls back to its built-in rule if a hook errors or runs too long. See docs/LUA.md.
--
-- `cfg` is the -remux.* flags: reuse_max_sec, reuse_max_cnt, idle_max_sec, conn_max_cnt.
-- A connection `c` is a table: id (number), age and idle (seconds), sessions (carried so far),
-- live (open now), goaway (the server asked us to stop using it), ready (handshake done).

local policy = {}

-- May connection c take one more session?
function policy.reusable(c, cfg)
  return not c.goaway and c.age < cfg.reuse_max_sec and c.sessions < cfg.reuse_max_cnt
end

-- Which connection takes a new session: the id of one of conns (oldest first), or nil to dial
-- a new one. The seed's rule: the newest usable connection; a new one only when none is.
function policy.pick(conns, cfg)
  local reusable = tunnels.policy.reusable
  for i = #conns, 1, -1 do
    if reusable(conns[i], cfg) then return conns[i].id end
  end
  return nil
end

-- Should connection c, which carries no session now, be closed? Idle for too long, or retired
-- (no longer reusable, so nothing will ever use it again).
function policy.idle(c, cfg)
  if c.live > 0 then return false end
  return c.idle >= cfg.idle_max_sec or not tunnels.policy.reusable(c, cfg)
end

return policy
