-- alerts-wecom.lua: alerts to a WeCom (企业微信) group robot, as markdown with the level in
-- colour (WeCom's markdown takes <font color="warning|comment|info">).
--   tunnels ... -lua.script=alerts-wecom.lua \
--     -sla.webhook.url=https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=<key>
local policy = {}

policy.alert_levels = { ["*"] = "erro", sock = "warn" }

local COLOUR = { warn = "warning", erro = "warning", fatl = "warning" }

function policy.alert(ev, cfg)
  local md = ('**TunneLS %s on %s**\n> <font color="%s">%s</font> [%s] %s'):format(
    tunnels.role, tunnels.hostname, COLOUR[ev.level] or "comment", ev.level, ev.tag, ev.text)
  return ('{"msgtype":"markdown","markdown":{"content":%s}}'):format(tunnels.json(md))
end

return policy
