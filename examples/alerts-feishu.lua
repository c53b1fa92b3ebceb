-- alerts-feishu.lua: alerts to a Feishu (Lark) custom robot, whose body is not DingTalk's.
--   tunnels ... -lua.script=alerts-feishu.lua \
--     -sla.webhook.url=https://open.feishu.cn/open-apis/bot/v2/hook/<token>
-- The alert hook returns the whole JSON body; the engine posts a text that starts with "{" as
-- it is (and anything else as {"text": ...}, which Slack's incoming webhooks take).
-- WeCom (企业微信) robots want {"msgtype":"text","text":{"content":...}} instead: change BODY.
local BODY = '{"msg_type":"text","content":{"text":%s}}'

-- A Lua string as a JSON string: quotes, backslashes and control bytes escaped.
local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    if c == "\n" then return "\\n" end
    return ("\\u%04x"):format(c:byte())
  end) .. '"'
end

local policy = {}

policy.alert_levels = { ["*"] = "erro", sock = "warn" }

function policy.alert(ev, cfg)
  local text = ("TunneLS %s on %s: [%s] [%s] %s"):format(tunnels.role, tunnels.hostname,
    ev.level, ev.tag, ev.text)
  return BODY:format(json_string(text))
end

return policy
