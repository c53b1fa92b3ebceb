-- What the specs and scripts run is installed by scripts/deps.sh: a command that only this
-- machine has (installed by hand) would pass here and fail on a fresh one. scripts/test.sh runs
-- the specs with PATH holding only the test group's commands (scripts/deps.sh --path), so a
-- spec or a tool that runs anything else fails at once, as on a fresh machine. The scripts
-- make test does not run (the benchmark, the demo, valgrind) are read here instead: every
-- command they run must be one their group installs.
local H = require("spec.helper")

local GROUPS = {
  test = { "scripts/test.sh", "scripts/certs.sh", ".ci/run" },
  bench = { "scripts/bench.sh", "scripts/bench-bulk.sh", "scripts/certs.sh" },
  demo = { "scripts/demo.sh", "scripts/certs.sh" },
  valgrind = { "scripts/valgrind.sh", "scripts/certs.sh" },
}

-- Words that stand where a command does but are the shell's own.
local SHELL = {}
for w in ([[if then else elif fi do done for while until case esac in function select time
  exec command builtin local export readonly declare set unset shift return exit break continue
  trap wait kill cd echo printf read eval source test true false ! [ [[ { } ( )]]):gmatch("%S+") do
  SHELL[w] = true
end

-- The commands a shell script runs: the first word of each simple command (after |, ;, &&,
-- ||, $( and the like, past VAR=value assignments and the shell's keywords), and what
-- `ip netns exec NS`, `timeout N`, `nohup` and `env` run.
local function shell_commands(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    -- quoted text is data, but for the commands a "$(...)" in it runs
    line = line:gsub("^%s*#.*", ""):gsub("%s+#%s.*", ""):gsub("'[^']*'", "''")
      :gsub('"([^"]*)"', function(q)
        local keep = {}
        for c in q:gmatch("%$%b()") do keep[#keep + 1] = c end
        return table.concat(keep, ";")
      end)
    line = line:gsub("%$%(", ";"):gsub("`", ";"):gsub("&&", ";"):gsub("||", ";"):gsub("|", ";")
      :gsub("%f[%w]then%f[%W]", ";"):gsub("%f[%w]do%f[%W]", ";"):gsub("%f[%w]else%f[%W]", ";")
    for part in line:gmatch("[^;&(){}]+") do
      local words = {}
      for w in part:gmatch("%S+") do words[#words + 1] = w end
      local i = 1
      while words[i] and (words[i]:find("^[%a_][%w_]*=") or SHELL[words[i]] or words[i] == "nohup" or words[i] == "env") do
        i = i + 1
      end
      if words[i] == "ip" and words[i + 1] == "netns" and words[i + 2] == "exec" then
        out[#out + 1] = "ip"
        i = i + 4
      elseif words[i] == "timeout" then
        out[#out + 1] = "timeout"
        i = i + 2
      end
      local w = words[i]
      if w and w:find("^[%a_][%w_.+-]*$") then out[#out + 1] = w end
    end
  end
  return out
end

-- Every command on this machine, by name: the PATH the suite was started with (test.sh keeps
-- it in TUNNELS_FULL_PATH) and the usual directories.
local function machine_commands()
  local dirs = (os.getenv("TUNNELS_FULL_PATH") or os.getenv("PATH")) .. ":/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin"
  local out = {}
  for d in dirs:gmatch("[^:]+") do
    for name in H.sh("ls -1 " .. d .. " 2>/dev/null"):gmatch("[^\n]+") do out[name] = true end
  end
  return out
end

local function group_commands(group)
  -- make test installs the test group; the others are installed here, as make bench would
  if group ~= "test" then
    local out, code = H.sh(H.root .. "/scripts/deps.sh " .. group .. " 2>&1")
    assert(code == 0, out)
  end
  local dir, code = H.sh(H.root .. "/scripts/deps.sh --path " .. group .. " 2>&1")
  assert(code == 0, dir)
  dir = dir:match("[^\n]+")
  local out = {}
  for name in H.sh("ls -1 " .. dir):gmatch("[^\n]+") do out[name] = true end
  H.sh("rm -rf " .. dir)
  return out
end

describe("dependencies", function()
  local machine = machine_commands()

  for group, globs in pairs(GROUPS) do
    it("every command the " .. group .. " files name is installed by scripts/deps.sh " .. group, function()
      local have, missing = group_commands(group), {}
      for _, glob in ipairs(globs) do
        for file in H.sh("cd " .. H.root .. " && ls -1 " .. glob .. " 2>/dev/null"):gmatch("[^\n]+") do
          for _, word in ipairs(shell_commands(H.read(H.root .. "/" .. file))) do
            if machine[word] and not have[word] then missing[#missing + 1] = file .. " runs `" .. word .. "`" end
          end
        end
      end
      assert(#missing == 0, "commands on this machine that no package of scripts/deps.sh's " .. group ..
        " group installs (add the package, or do without):\n" .. table.concat(missing, "\n"))
    end)
  end

  it("reads the commands a script runs, not its words", function()
    assert.are.same({ "curl", "sort", "ip", "tn", "timeout", "ping", "awk", "seq" },
      shell_commands("# ping in a comment\nx=1 curl -s a | sort -u  # route\nip netns exec ns1 tn -x\n" ..
        "if timeout 5 ping -c1 h; then n=$(awk '{print}' f); fi\n" ..
        "echo \"a | idle $(seq 1 3) b\""))
  end)

  it("is narrow enough to catch one: curl is not the build group's, ping is the test group's", function()
    assert.is_nil(group_commands("build").curl)
    assert.is_true(group_commands("test").ping)
    local out, code = H.sh(H.root .. "/scripts/deps.sh --path nosuch 2>&1")
    assert.are_not.equal(0, code)
    assert.is_truthy(out:find('no group "nosuch"', 1, true), out)
  end)

  it("runs the specs with only the test group's commands on PATH", function()
    local path = os.getenv("PATH")
    assert.is_truthy(path:find("^[^:]*/build/deps%-path/test%.%d+$"), path)
  end)
end)
