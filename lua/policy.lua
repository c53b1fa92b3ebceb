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

-- May connection c take one more session? The limits are hard: a connection that has carried
-- reuse_max_cnt sessions, has been in use for reuse_max_sec, or was told to go away takes no
-- new session, ever. The default never overruns them; a script may, by answering its own pick.
function policy.reusable(c, cfg)
  return not c.goaway and c.age < cfg.reuse_max_sec and c.sessions < cfg.reuse_max_cnt
end

-- How many more sessions c will take before its limits retire it. One in the last quarter of
-- reuse_max_sec counts none: it will age out before it is used up, so its successor is due.
function policy.headroom(c, cfg)
  if not tunnels.policy.reusable(c, cfg) or c.age >= cfg.reuse_max_sec * 0.75 then return 0 end
  return cfg.reuse_max_cnt - c.sessions
end

-- The headroom the pool keeps ready, so that no session waits for a handshake: a quarter of a
-- connection (the successor is dialled at its predecessor's 12th session of 16), plus the
-- sessions expected during one handshake at the recent rate. load: rate (new sessions a second,
-- the last second or the current one, whichever is more) and handshake (seconds a recent dial
-- took to be ready). A steady 2,000 sessions/s with 5 ms handshakes keeps 4 + 10 ready: one
-- spare; a burst that outruns it gets its own dials, in parallel (pick below).
function policy.wanted(cfg, load)
  local want = math.ceil(cfg.reuse_max_cnt / 4)
  if load then want = want + math.ceil(load.rate * load.handshake) end
  return want
end

-- The sessions usable connections can still take, and the oldest usable one that is up and
-- the oldest still in its handshake.
local function survey(conns, cfg)
  local reusable, headroom = tunnels.policy.reusable, tunnels.policy.headroom
  local up, pending, room = nil, nil, 0
  for i = 1, #conns do
    local c = conns[i]
    if reusable(c, cfg) then
      if c.ready then
        up = up or c
      else
        pending = pending or c
      end
      room = room + headroom(c, cfg)
    end
  end
  return up, pending, room
end

-- Which connection takes a new session: the id of one of conns (oldest first), or nil to dial
-- a new one for it; a second answer true also dials a spare in the background.
-- The oldest usable connection that is up, so each is used up to its limits before the next
-- takes over (40 sequential sessions: 16, 16, 8). With none up, the oldest usable one still in
-- its handshake (its sessions wait for it, within its limits); with none at all, nil: this
-- session dials. So a burst past the spare headroom dials one connection per reuse_max_cnt
-- sessions, all at once. A spare is dialled when the headroom left is wanted() or less.
function policy.pick(conns, cfg, load)
  local up, pending, room = survey(conns, cfg)
  local c = up or pending
  if not c then return nil end
  return c.id, room - 1 <= tunnels.policy.wanted(cfg, load)
end

-- Should a connection be dialled now, with no session waiting? At start (the start-up dial)
-- and whenever the headroom is wanted() or less: a connection ages out, or the rate rose.
function policy.spare(conns, cfg, load)
  local _, _, room = survey(conns, cfg)
  return room <= tunnels.policy.wanted(cfg, load)
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
-- resolved to, so a name pointing at the server's own loopback is caught too. The default lets
-- clients reach the public internet only: this host and its links (-server.allow.local allows
-- them), the networks behind it (-server.allow.private) and addresses that are no unicast
-- destination at all (always) are denied, and so is an IPv6 address that embeds a denied IPv4
-- one (v4-mapped, v4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16).

-- This host and its links, and the clouds' metadata services (this host's too).
policy.local_ranges = {
  "127.0.0.0/8", "0.0.0.0/8", "169.254.0.0/16", "::1/128", "::/128", "fe80::/10",
  "100.100.100.200/32", "192.0.0.192/32", "fd00:ec2::254/128",
}
-- The networks behind it: RFC 1918, shared address space (carrier NAT), unique local IPv6 and
-- the deprecated site-local.
policy.private_ranges = {
  "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7", "fec0::/10",
}
-- No unicast destination on the internet: protocol assignments, documentation, benchmarking,
-- multicast, reserved and broadcast; discard-only, Teredo (its IPv4 is obfuscated: all of it),
-- documentation and local-use NAT64 in IPv6.
policy.reserved_ranges = {
  "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
  "224.0.0.0/4", "240.0.0.0/4", "100::/64", "2001::/32", "2001:db8::/32", "64:ff9b:1::/48",
  "ff00::/8",
}

-- The IPv4 address an IPv6 one carries, as text, or nil.
local function embedded_v4(ip)
  if #ip ~= 16 then return nil end
  local b = { ip:byte(1, 16) }
  local function v4(i) return string.format("%d.%d.%d.%d", b[i], b[i + 1], b[i + 2], b[i + 3]) end
  local zero10 = true
  for i = 1, 10 do zero10 = zero10 and b[i] == 0 end
  if zero10 and b[11] == 0xff and b[12] == 0xff then return v4(13) end -- ::ffff:a.b.c.d
  if zero10 and b[11] == 0 and b[12] == 0 then -- ::a.b.c.d (but :: and ::1 are themselves)
    if b[13] + b[14] + b[15] > 0 or b[16] > 1 then return v4(13) end
  end
  if b[1] == 0 and b[2] == 0x64 and b[3] == 0xff and b[4] == 0x9b then
    local zero = true
    for i = 5, 12 do zero = zero and b[i] == 0 end
    if zero then return v4(13) end -- 64:ff9b::a.b.c.d
  end
  if b[1] == 0x20 and b[2] == 0x02 then return v4(3) end -- 2002:aabb:ccdd::/48
  return nil
end

-- Why the server may not connect to addr (text), or nil when it may.
function policy.denied(addr, cfg)
  local ip = rules.ip(addr)
  if not ip then return "not an address: " .. addr end
  local v4 = embedded_v4(ip)
  if v4 then
    local why = tunnels.policy.denied(v4, cfg)
    return why and why .. " (embedded in " .. addr .. ")"
  end
  if rules.in_ranges(addr, policy.reserved_ranges) then
    return "reserved address " .. addr
  end
  if not cfg.allow_local then
    if rules.in_ranges(addr, policy.local_ranges) then
      return "local address " .. addr .. " (-server.allow.local allows it)"
    end
    for _, own in ipairs(cfg.host_addrs or {}) do
      if rules.ip(own) == ip then return "this host's address " .. addr .. " (-server.allow.local allows it)" end
    end
  end
  if not cfg.allow_private and rules.in_ranges(addr, policy.private_ranges) then
    return "private address " .. addr .. " (-server.allow.private allows it)"
  end
  return nil
end

function policy.route(req, cfg)
  if cfg.role ~= "server" then return "tunnel" end
  if not req.addr then return "allow" end
  local why = tunnels.policy.denied(req.addr, cfg)
  if why then return "deny", why end
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
