-- helper.lua: what the end-to-end specs share (hitch's hitch_test.sh, in Lua): a temp dir per
-- spec file, generated certificates, processes started in the background and ended by their
-- own PID, bounded waits, logs printed when a spec fails.
local socket = require("socket")

local H = {}

H.root = os.getenv("TUNNELS_ROOT") or "."
H.build = os.getenv("TUNNELS_BUILD") or (H.root .. "/build")  -- build-san for SAN=1
H.bin = H.build .. "/tunnels"

local started = {}   -- pid -> {name=, log=}

-- Network namespaces need root. A spec that makes them is reported as pending (a TAP "SKIP",
-- counted apart by scripts/test.sh) when not run as root, not failed; CI runs as root.
do
  local p = io.popen("id -u")
  H.is_root = p:read("*l") == "0"
  p:close()
end

-- it(), for a spec that needs root. busted's it and pending live in the spec file's
-- environment, not this module's: taken from the caller's.
function H.it_root(name, fn)
  local env = getfenv(2)
  if H.is_root then return env.it(name, fn) end
  env.pending(name .. " (needs root)")
end

-- Runs a shell command; returns its output (stdout and stderr) and exit status. LuaJIT's
-- popen():close() does not return the status, so the command reports it itself.
function H.sh(cmd)
  local p = assert(io.popen("{ " .. cmd .. "\n} 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local body, code = out:match("^(.-)__rc=(%d+)%s*$")
  return body or out, tonumber(code) or -1
end

function H.tmpdir()
  local d = H.sh("mktemp -d /tmp/tunnels-spec.XXXXXX"):gsub("%s+$", "")
  return d
end

function H.read(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
end

function H.sleep(s) socket.sleep(s) end
function H.now() return socket.gettime() end

-- Polls fn every 50 ms until it returns a true value or timeout seconds pass.
function H.wait_for(fn, timeout, what)
  local deadline = H.now() + (timeout or 10)
  repeat
    local v = fn()
    if v then return v end
    socket.sleep(0.05)
  until H.now() > deadline
  error("timed out after " .. (timeout or 10) .. " s waiting for " .. (what or "a condition"), 2)
end

-- A port nobody listens on right now (the kernel's pick), never one handed out before in this
-- run: the kernel may pick the same free port twice in a row (seen: a tunnel's server and SOCKS
-- ports were one, and its client could not listen).
local given = {}
function H.free_port()
  for _ = 1, 100 do
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    port = tonumber(port)
    if not given[port] then
      given[port] = true
      return port
    end
  end
  error("no fresh free port in 100 tries")
end

-- Whether something listens on host:port; inside network namespace netns when given.
function H.connectable(port, host, netns)
  if netns then
    local _, code = H.sh("ip netns exec " .. netns .. " bash -c '</dev/tcp/" .. (host or "127.0.0.1") ..
      "/" .. port .. "'")
    return code == 0
  end
  local c = socket.tcp()
  c:settimeout(0.5)
  local ok = c:connect(host or "127.0.0.1", port)
  c:close()
  return ok ~= nil
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
H.quote = quote

-- Starts argv (a list) in the background, stdout+stderr to log. Returns its PID.
function H.spawn(name, argv, log, env)
  local parts = {}
  for i, a in ipairs(argv) do parts[i] = quote(a) end
  local cmd = (env or "") .. " exec " .. table.concat(parts, " ")
  local out = H.sh("sh -c " .. quote(cmd .. " >" .. quote(log) .. " 2>&1") .. " & echo $!")
  local pid = tonumber(out:match("(%d+)"))
  assert(pid, "could not start " .. name .. ": " .. out)
  started[pid] = { name = name, log = log }
  return pid
end

-- Whether pid still runs. A zombie does not: it has closed its sockets, which is what a restart
-- on the same port waits for (kill -0 would count it until it is reaped).
function H.alive(pid)
  local state = H.read("/proc/" .. pid .. "/stat"):match("^%d+ %b() (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

-- Sends sig to pid (one we started) and waits for it to exit. Returns true if it did.
function H.stop(pid, sig, timeout)
  if not started[pid] then return true end
  H.sh("kill -" .. (sig or "TERM") .. " " .. pid)
  local deadline = H.now() + (timeout or 5)
  while H.now() < deadline do
    if not H.alive(pid) then started[pid] = nil return true end
    socket.sleep(0.05)
  end
  H.sh("kill -KILL " .. pid)
  started[pid] = nil
  return false
end

function H.stop_all()
  for pid in pairs(started) do H.stop(pid, "TERM", 3) end
end

-- The logs of every process still tracked (for a failing spec).
function H.dump_logs()
  for pid, p in pairs(started) do
    io.stderr:write("---- " .. p.name .. " (pid " .. pid .. ") " .. p.log .. "\n")
    io.stderr:write(H.read(p.log):sub(-4000) .. "\n")
  end
end

-- Generates the test PKI into dir (scripts/certs.sh).
function H.certs(dir)
  local out, code = H.sh(H.root .. "/scripts/certs.sh " .. quote(dir))
  assert(code == 0, "certs.sh failed: " .. out)
  return {
    ca = dir .. "/ca.pem",
    server_cert = dir .. "/server.pem", server_key = dir .. "/server.key",
    client_cert = dir .. "/client.pem", client_key = dir .. "/client.key",
    mallory_cert = dir .. "/mallory.pem", mallory_key = dir .. "/mallory.key",
    other_cert = dir .. "/other.pem", other_key = dir .. "/other.key",
    expired_cert = dir .. "/expired.pem", expired_key = dir .. "/expired.key",
    revoked_cert = dir .. "/revoked.pem", revoked_key = dir .. "/revoked.key",
    crl = dir .. "/crl.pem", crl_none = dir .. "/crl-none.pem",
  }
end

-- Appends -name=value flags from a table to argv.
local function flags(argv, t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    if t[k] ~= false then argv[#argv + 1] = "-" .. k .. "=" .. tostring(t[k]) end
  end
  return argv
end

-- argv run inside network namespace ns (ip netns exec keeps the PID: it execs the program).
local function in_netns(ns, argv)
  if not ns then return argv end
  local out = { "ip", "netns", "exec", ns }
  for _, a in ipairs(argv) do out[#out + 1] = a end
  return out
end

-- A tunnel pair on loopback. opts.server / opts.client: extra flags; opts.tcp: plain TCP;
-- opts.netns: both run in that network namespace (its loopback); opts.server_netns and
-- opts.client_netns: each end in its own, the server on opts.server_host (the client checks
-- the certificate's name, localhost).
-- Returns {server_pid, client_pid, socks_port, server_port, slog, clog}.
function H.tunnel(dir, pki, opts)
  opts = opts or {}
  local t = { server_port = opts.server_port or H.free_port(), socks_port = H.free_port() }
  local shost = opts.server_host or "127.0.0.1"
  local sns, cns = opts.server_netns or opts.netns, opts.client_netns or opts.netns
  t.slog, t.clog = dir .. "/server" .. t.server_port .. ".log", dir .. "/client" .. t.socks_port .. ".log"
  local sflags = {
    ["server.addr"] = shost .. ":" .. t.server_port, ["sla.log.path"] = t.slog,
    ["sla.log.level"] = "debug",
    -- The specs' destinations are on loopback, which the server's default ACL denies.
    ["server.allow.local"] = "true",
  }
  local cflags = {
    ["server.addr"] = shost .. ":" .. t.server_port, ["client.addr"] = "127.0.0.1:" .. t.socks_port,
    ["sla.log.path"] = t.clog, ["sla.log.level"] = "debug",
  }
  if opts.tcp then
    sflags["remux.net"], sflags["server.open"] = "tcp", "true"
    cflags["remux.net"] = "tcp"
  else
    sflags["tls.server.cert"], sflags["tls.server.key"] = pki.server_cert, pki.server_key
    sflags["tls.server.ca"] = pki.ca
    cflags["tls.client.ca"] = pki.ca
    cflags["tls.client.cert"], cflags["tls.client.key"] = pki.client_cert, pki.client_key
    if shost ~= "127.0.0.1" then cflags["tls.client.name"] = "localhost" end
  end
  for k, v in pairs(opts.server or {}) do sflags[k] = v end
  for k, v in pairs(opts.client or {}) do cflags[k] = v end
  if not opts.no_server then
    t.server_pid = H.spawn("server", in_netns(sns, flags({ H.bin, "-role=server" }, sflags)),
      t.slog .. ".out", opts.env)
    -- Readiness from the log, not a probe connection the server would count.
    H.wait_for(function() return H.count(t.slog, "%[main%] server: listening") > 0 end, 10, "the server to listen")
  end
  if opts.no_client then return t end
  t.client_pid = H.spawn("client", in_netns(cns, flags({ H.bin, "-role=client" }, cflags)),
    t.clog .. ".out", opts.env)
  -- A probe on the SOCKS port costs nothing (no log line above debug, no session).
  H.wait_for(function() return H.connectable(t.socks_port, nil, cns) end, 10, "the client to listen")
  return t
end

-- The seed's log line: `2020.09.01 17:15:07 [info] [conn] + 8f7ed46a = 2[ reason]`. Lines
-- tagged [conn], [sess] and [sock] have exactly that shape; every other line has the date, the
-- level and a tag, then free text. Returns nil, or why the line is not in shape.
local LEVELS = { debg = true, info = true, warn = true, erro = true, fata = true }
local IDS = {
  conn = "^%x%x%x%x%x%x%x%x$",
  sess = "^%x%x%x%x%x%x%x%x:%d+$",
  sock = "^%S+$",
}
-- The log lines specs count most, as Lua patterns (docs: README, "Logs"): a connection opened
-- (its id captured), closed; a session opened; a destination's session opened, closed (the
-- destination follows these).
H.LOG = {
  conn_open = "%[conn%] %+ (%x+) =",
  conn_open_id = "%[conn%] %+ ", -- then the id
  conn_close = "%[conn%] %- ",
  sess_open = "%[sess%] %+ ",
  sock_open = "%[sock%] %+ ",
  sock_close = "%[sock%] %- ",
}

function H.log_shape(line)
  local level, tag, rest = line:match("^%d%d%d%d%.%d%d%.%d%d %d%d:%d%d:%d%d %[(%a+)%] %[(%a+)%] (.*)$")
  if not level then return "not DATE TIME [level] [tag] text" end
  if not LEVELS[level] then return "level " .. level end
  if rest:find("[%c]") then return "a control character" end
  local id_pattern = IDS[tag]
  if not id_pattern then return nil end
  local id, count, reason = rest:match("^[+-] (%S+) = (%d+)(.*)$")
  if not id then return "[" .. tag .. "] not `+|- id = count[ reason]`" end
  if not id:find(id_pattern) then return "[" .. tag .. "] id " .. id end
  if reason ~= "" and not reason:find("^ %S") then return "[" .. tag .. "] reason not after one space" end
  return nil
end

-- Every line of a log (a tunnel's, at debug in the specs) in shape; asserts, naming the lines.
function H.assert_log_shape(path)
  local bad = {}
  for line in H.read(path):gmatch("[^\n]+") do
    local why = H.log_shape(line)
    if why and #bad < 10 then bad[#bad + 1] = why .. ": " .. line end
  end
  assert(#bad == 0, path .. ": lines out of the log format:\n" .. table.concat(bad, "\n"))
end

-- Stops both ends, then checks that every line they logged is in the log format.
function H.stop_tunnel(t)
  if t.client_pid then H.stop(t.client_pid) end
  if t.server_pid then H.stop(t.server_pid) end
  if t.client_pid then H.assert_log_shape(t.clog) end
  if t.server_pid then H.assert_log_shape(t.slog) end
end

-- A tn-dest destination in mode (http, sha, echo), in network namespace netns if given.
-- Returns port, pid.
function H.dest(dir, mode, netns)
  local port = H.free_port()
  local pid = H.spawn("tn-dest-" .. mode,
    in_netns(netns, { H.build .. "/tn-dest", "-addr", "127.0.0.1:" .. port, "-mode", mode }),
    dir .. "/dest" .. port .. ".log")
  H.wait_for(function() return H.connectable(port, nil, netns) end, 10, "tn-dest to listen")
  return port, pid
end

-- Counts lines of log matching a Lua pattern.
function H.count(path, pattern)
  local n = 0
  for line in H.read(path):gmatch("[^\n]+") do
    if line:find(pattern) then n = n + 1 end
  end
  return n
end

-- A raw TCP client: connect, send, read with a timeout.
function H.connect(port, host)
  local c = assert(socket.tcp())
  c:settimeout(5)
  assert(c:connect(host or "127.0.0.1", port))
  c:setoption("tcp-nodelay", true)
  return c
end

-- Reads exactly n bytes or until close/timeout; returns data and the error if short.
function H.recv(c, n, timeout)
  c:settimeout(timeout or 5)
  local data, err, partial = c:receive(n)
  return data or partial, err
end

-- Reads until the peer closes (or timeout): returns data, "closed" or the error.
function H.recv_all(c, timeout)
  c:settimeout(timeout or 5)
  local data, err, partial = c:receive("*a")
  if data then return data, "closed" end
  return partial, err
end

-- The SOCKS5 greeting and CONNECT for host:port (a domain), as one string.
function H.socks_connect(host, port)
  return "\5\1\0" .. "\5\1\0\3" .. string.char(#host) .. host .. string.char(math.floor(port / 256), port % 256)
end


-- Prints the tracked processes' logs when a spec in this file fails.
function H.dump_on_failure()
  local busted = require("busted")
  busted.subscribe({ "test", "end" }, function(_, _, status)
    if status ~= "success" and status ~= "pending" then H.dump_logs() end
    return nil, true
  end)
end

-- curl through the SOCKS5 proxy at socks_port; returns body, curl's exit code.
function H.curl(socks_port, url, extra)
  return H.sh("curl -sS --max-time 10 " .. (extra or "") .. " --socks5-hostname 127.0.0.1:" .. socks_port .. " " .. url)
end

-- Like H.spawn, but the exit status lands in status_path. Returns the program's own PID.
function H.spawn_with_status(name, argv, log, status_path)
  local parts = {}
  for i, a in ipairs(argv) do parts[i] = quote(a) end
  local inner = table.concat(parts, " ") .. " >" .. quote(log) .. " 2>&1 & p=$!; echo $p; wait $p; echo $? >" .. quote(status_path)
  local p = assert(io.popen("sh -c " .. quote(inner) .. " &"))
  local pid = tonumber(p:read("*l"))
  p:close()
  assert(pid, "could not start " .. name)
  started[pid] = { name = name, log = log }
  return pid
end

-- Registers setup and teardown for the enclosing describe: a temp dir, the test PKI, and a
-- tn-dest per mode listed. At setup, ready(dir, pki, port of modes[1], port of modes[2], ...)
-- hands them to the spec's locals. Teardown ends every process the file started and removes
-- the dir.
function H.fixture(modes, ready)
  local f = { dest = {} }
  -- busted gives setup/teardown to the spec file's environment, not to this module's.
  local env = getfenv(2)
  env.setup(function()
    f.dir = H.tmpdir()
    f.pki = H.certs(f.dir)
    local ports = {}
    for i, m in ipairs(modes or {}) do
      f.dest[m] = H.dest(f.dir, m)
      ports[i] = f.dest[m]
    end
    if ready then ready(f.dir, f.pki, unpack(ports)) end
  end)
  env.teardown(function()
    H.stop_all()
    H.sh("rm -rf " .. f.dir)
  end)
  return f
end

H.HELLO = "hello from tn-dest\n"

-- One GET through the tunnel's SOCKS port to tn-dest's http mode; asserts the greeting.
function H.assert_hello(socks_port, http_port, what)
  local body, code = H.curl(socks_port, "http://localhost:" .. http_port .. "/")
  require("luassert").are.equal(H.HELLO, body, (what or "request") .. " (curl exit " .. code .. ")")
end

return H
