-- alerts-feishu.lua: alerts to a Feishu (Lark) custom robot, whose body is not DingTalk's.
--   tunnels ... -lua.script=alerts-feishu.lua \
--     -sla.webhook.url=https://open.feishu.cn/open-apis/bot/v2/hook/<token>
-- The alert hook returns the whole JSON body; the engine posts a text that starts with "{" as
-- it is (and anything else as {"text": ...}). tunnels.json escapes a string for it.
-- Slack: alerts-slack.lua; WeCom: alerts-wecom.lua.
local policy = {}

policy.alert_levels = { ["*"] = "erro", sock = "warn" }

function policy.alert(ev, cfg)
  local text = ("TunneLS %s on %s: [%s] [%s] %s"):format(tunnels.role, tunnels.hostname,
    ev.level, ev.tag, ev.text)
  return ('{"msg_type":"text","content":{"text":%s}}'):format(tunnels.json(text))
end

return policy
