-- alerts-slack.lua: alerts to a Slack incoming webhook, as Block Kit: a headline with the
-- level, the log line in a code block, and a plain "text" for notifications.
--   tunnels ... -lua.script=alerts-slack.lua \
--     -sla.webhook.url=https://hooks.slack.com/services/<T>/<B>/<secret>
-- (Returning a plain string would do too: the engine posts it as {"text": ...}.)
local policy = {}

policy.alert_levels = { ["*"] = "erro", sock = "warn", tls = "warn" }

local ICON = { warn = ":warning:", erro = ":rotating_light:", fatl = ":fire:" }

function policy.alert(ev, cfg)
  local head = ("%s TunneLS %s on %s: %s"):format(ICON[ev.level] or ":information_source:",
    tunnels.role, tunnels.hostname, ev.tag)
  return ('{"text":%s,"blocks":[{"type":"section","text":{"type":"mrkdwn","text":%s}},' ..
    '{"type":"section","text":{"type":"mrkdwn","text":%s}}]}'):format(
    tunnels.json(head .. ": " .. ev.text), tunnels.json("*" .. head .. "*"),
    tunnels.json("```" .. ev.line .. "```"))
end

return policy
