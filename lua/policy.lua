-- policy.lua: the default TunneLS policy script, built into the binary.
--
-- A script given with -lua.script returns a table of hooks like this one; any hook it leaves
-- out is taken from here. The engine calls each hook through one gate with a time budget, and
-- falls back to its built-in rule if a hook errors or runs too long. See docs/LUA.md.
--
-- `cfg` is the -remux.* flags: reuse_max_sec, reuse_max_cnt, idle_max_sec, conn_max_cnt.
-- A connection `c` is a table: id (number), age and idle (seconds), sessions (carried so far),
-- live (open now), goaway (the server asked us to stop using it), ready (handshake done).

local rules = require("tunnels.rules")

local policy = {}

-- May connection c take one more session?
function policy.reusable(c, cfg)
  return not c.goaway and c.age < cfg.reuse_max_sec and c.sessions < cfg.reuse_max_cnt
end

-- Is c near the end of its reuse? Then its successor is dialled now, while c still serves, so
-- that no session ever waits for a TCP and TLS handshake.
function policy.ending(c, cfg)
  return c.sessions + 1 >= cfg.reuse_max_cnt * 0.75 or c.age >= cfg.reuse_max_sec * 0.75
end

-- Which connection takes a new session: the id of one of conns (oldest first), or nil to dial
-- a new one for it; a second answer true also dials a spare in the background.
-- The newest usable connection that is up. With none up, a session never waits for a
-- handshake if a connection that is up can carry it: a retired one (past its limits but alive)
-- takes it while its successor is dialled or still in its handshake. nil (a cold dial) only
-- when nothing is up at all.
function policy.pick(conns, cfg)
  local reusable, ending = tunnels.policy.reusable, tunnels.policy.ending
  local spill = tunnels.policy.spill_max
  local ready, pending, old, waiting, others = nil, nil, nil, nil, 0
  for i = #conns, 1, -1 do
    local c = conns[i]
    if reusable(c, cfg) then
      if c.ready and not ready then
        ready = c
      else
        if not c.ready and not pending then pending = c end
        others = others + 1
      end
    elseif not c.goaway and c.live < spill then
      -- past its limits but able to carry a burst: up (old) or still in its handshake
      if c.ready then
        old = old or c
      else
        waiting = waiting or c
      end
    end
  end
  if ready then return ready.id, others == 0 and ending(ready, cfg) end
  if pending then return (old or pending).id, false end
  if old then return old.id, waiting == nil end
  if waiting then return waiting.id, false end
  return nil
end

-- A connection past its limits takes at most spill_max open sessions from a burst: beyond
-- that, new connections are dialled (the server refuses sessions past -remux.sessions.max,
-- 1024 by default, and handshakes past -tls.handshake.max, 256: a burst of 10,000 sessions
-- must not become hundreds of dials at once).
policy.spill_max = 256

-- Should a connection be dialled now, with no session waiting? At start (the start-up dial)
-- and whenever no usable connection will last: one warm connection is always ready.
function policy.spare(conns, cfg)
  local reusable, ending = tunnels.policy.reusable, tunnels.policy.ending
  for _, c in ipairs(conns) do
    if reusable(c, cfg) and not ending(c, cfg) then return false end
  end
  return true
end

-- Should connection c, which carries no session now, be closed? Retired (no longer reusable,
-- so nothing will use it again), or idle for -remux.idle.max.sec -- except the newest usable
-- connection that is up, the warm one new sessions go to.
function policy.idle(c, cfg, conns)
  local reusable = tunnels.policy.reusable
  if c.live > 0 then return false end
  if not reusable(c, cfg) then return true end
  if c.idle < cfg.idle_max_sec then return false end
  for i = #(conns or {}), 1, -1 do
    local o = conns[i]
    if o.ready and reusable(o, cfg) then return o.id ~= c.id end
  end
  return true
end

-- Routing. req: host (a name, or the address as text), port, atyp ("domain", "ipv4", "ipv6"),
-- src (who asks), and on the server addr (the address being connected to, once known).
--
-- Client: "tunnel" [, server name or index], "direct", or "block" [, why]. The default tunnels
-- everything through the first server of -server.addr.
-- Server: "allow" or "deny" [, why]. It is asked once for the name and again for the address it
-- resolved to, so a name pointing at the server's own loopback is caught too. The default denies
-- loopback, link-local (cloud metadata at 169.254.169.254), "this host" (0.0.0.0, which Linux
-- connects to loopback) and their IPv4-mapped IPv6 forms, unless -server.allow.local is set.
policy.local_ranges = {
  "127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/8", "::1/128", "::/128", "fe80::/10",
  "::ffff:127.0.0.0/104", "::ffff:169.254.0.0/112", "::ffff:0.0.0.0/104",
}

function policy.route(req, cfg)
  if cfg.role ~= "server" then return "tunnel" end
  if cfg.allow_local or not req.addr then return "allow" end
  if rules.in_ranges(req.addr, policy.local_ranges) then
    return "deny", "local address " .. req.addr .. " (-server.allow.local allows it)"
  end
  return "allow"
end

-- Alerts (when -sla.dingtalk.token is set). alert_levels says which log events reach `alert`:
-- the lowest level per tag ("conn", "sock", "lua", "main", ...), "*" for the rest.
policy.alert_levels = { ["*"] = "erro" }

-- ev: level ("erro", ...), severity (400, ...), tag, text, line (as logged), time (epoch s).
-- Returns the alert's text, or nil to drop the event.
function policy.alert(ev, cfg)
  return string.format("TunneLS %s on %s: [%s] [%s] %s", cfg.role, tunnels.hostname or "?",
    ev.level, ev.tag, ev.text)
end

-- Called every second while alerts are on: text to send (e.g. what alert aggregated), or nil.
function policy.alert_tick(now, cfg)
  return nil
end

return policy
