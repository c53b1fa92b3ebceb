-- alerts-ops.lua: an ops-style alert script (use with -lua.script and -sla.dingtalk.token).
--
-- * Subscribes to session failures ([sock] at warn) as well as every error.
-- * Prefixes each alert with the host name, so one robot can serve a fleet.
-- * Aggregates: the first event of a kind goes out at once; the same kind again within
--   WINDOW seconds is counted, and alert_tick sends one "N more like it" line when the window
--   closes. A kind is the text with numbers and addresses blanked out.
-- * Quiets noisy events: policy denials are decisions, not incidents.
local WINDOW = 5
local QUIET = { "denied: ", "refused by policy" }

local policy = {}

policy.alert_levels = { ["*"] = "erro", sock = "warn" }

local kinds = {} -- kind -> { first = time, count = n, text = first text }

local function kind_of(ev)
  return ev.tag .. " " .. ev.text:gsub("%[[%x:]+%]", "#"):gsub("[%d%.:]+", "#"):gsub("%x%x%x%x%x%x%x%x", "#")
end

function policy.alert(ev, cfg)
  for _, q in ipairs(QUIET) do
    if ev.text:find(q, 1, true) then return nil end
  end
  local k = kind_of(ev)
  local seen = kinds[k]
  if seen then
    seen.count = seen.count + 1
    return nil
  end
  local text = string.format("[%s] %s %s [%s] %s", tunnels.hostname, cfg.role, ev.level, ev.tag, ev.text)
  kinds[k] = { first = ev.time, count = 0, text = text }
  return text
end

-- Once a second: close the windows that are over, and report what they counted.
function policy.alert_tick(now, cfg)
  local out = {}
  local wall = os.time()
  for k, seen in pairs(kinds) do
    if wall - seen.first >= WINDOW then
      if seen.count > 0 then
        out[#out + 1] = string.format("%d more like it in %d s: %s", seen.count, WINDOW, seen.text)
      end
      kinds[k] = nil
    end
  end
  if #out == 0 then return nil end
  return table.concat(out, "\n")
end

return policy
