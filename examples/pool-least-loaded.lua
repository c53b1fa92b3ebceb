-- pool-least-loaded.lua: put a new session on the usable connection with the fewest open
-- sessions (instead of the newest), and keep up to 4 connections before sharing. Useful when
-- a few long downloads would otherwise share one connection's TCP window.
--
--   tunnels -role=client ... -lua.script=examples/pool-least-loaded.lua
local M = {}

function M.pick(conns, cfg)
  local reusable = tunnels.policy.reusable
  local best
  for _, c in ipairs(conns) do
    if reusable(c, cfg) and (best == nil or c.live < best.live) then best = c end
  end
  -- Dial another connection while there are fewer than 4 and all usable ones are busy.
  if best == nil or (best.live > 0 and #conns < 4) then return nil end
  return best.id
end

-- Keep one spare connection warm: close an idle one only if another is open too.
function M.idle(c, cfg)
  if c.live > 0 then return false end
  if not tunnels.policy.reusable(c, cfg) then return true end
  return c.idle >= cfg.idle_max_sec
end

return M
