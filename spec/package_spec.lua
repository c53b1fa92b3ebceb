-- The Debian package (debian/): built from the tree with Debian's own tools, clean by lintian,
-- holding the binary, tunnels(1), the units where bookworm keeps them and the system user they
-- run as; then installed on a machine whose PID 1 is systemd, where `systemctl start`,
-- `reload` and `stop` drive both units for real. This VM's PID 1 is not systemd:
-- scripts/systemd-box.sh boots one, as PID 1 of its own namespaces, on a copy-on-write overlay
-- of this machine, so that installing the package changes nothing here.
local H = require("spec.helper")

local BOX = H.root .. "/scripts/systemd-box.sh"

describe("the Debian package", function()
  local dir, deb, build_out, build_code

  setup(function()
    dir = H.tmpdir()
    build_out, build_code = H.sh("mkdir -p " .. dir .. "/tunnels && tar -C " .. H.root ..
      " --exclude=./build --exclude=./build-san --exclude=./demo --exclude=./.git -cf - . | tar -C " ..
      dir .. "/tunnels -xf - && cd " .. dir .. "/tunnels && dpkg-buildpackage -us -uc -b >" .. dir ..
      "/build.log 2>&1")
    deb = H.sh("ls " .. dir .. "/tunnels_*_*.deb 2>/dev/null"):gsub("%s+$", "")
  end)
  teardown(function() H.sh("rm -rf " .. dir) end)

  it("builds with dpkg-buildpackage, passes lintian, and holds what a service needs", function()
    assert.are.equal(0, build_code, build_out .. H.sh("tail -30 " .. dir .. "/build.log"))
    assert.is_truthy(deb:match("%.deb$"), deb)
    local out, code = H.sh("lintian " .. dir .. "/tunnels_*.changes")
    assert.are.equal(0, code, out)
    assert.is_nil(out:find("\nE: ") or out:find("^E: "), out)
    local files = H.sh("dpkg -c " .. deb)
    for _, f in ipairs({ "./usr/bin/tunnels", "./usr/share/man/man1/tunnels.1.gz",
      "./lib/systemd/system/tunnels-server@.service", "./lib/systemd/system/tunnels-client@.service",
      "./usr/lib/sysusers.d/tunnels.conf", "./usr/share/doc/tunnels/copyright",
      "./usr/share/doc/tunnels/examples/server.conf", "./etc/logrotate.d/tunnels" }) do
      assert.is_truthy(files:find(f, 1, true), f .. " not in the package")
    end
    local info = H.sh("dpkg -I " .. deb)
    assert.matches("systemd%-sysusers", info) -- the user is made at install
    assert.matches("libevent%-2%.1%-7", info)
  end)

  describe("installed where systemd is PID 1", function()
    local box, pki, upfail

    -- A shell command inside the box, bounded in time.
    local function run(cmd, secs)
      return H.sh(BOX .. " run " .. box .. " timeout " .. (secs or 30) .. " sh -c " .. H.quote(cmd))
    end
    -- Copies a file of this machine into the box (its /tmp is its own).
    local function put(src, dst, mode)
      local out, code = H.sh("cat " .. H.quote(src) .. " | " .. BOX .. " run " .. box ..
        " sh -c " .. H.quote("cat >" .. dst .. " && chown root:tunnels " .. dst .. " && chmod " ..
        (mode or "0640") .. " " .. dst))
      assert(code == 0, "put " .. dst .. ": " .. out)
    end
    local function conf(name, lines)
      local path = dir .. "/" .. name
      H.write(path, table.concat(lines, "\n") .. "\n")
      put(path, "/etc/tunnels/" .. name)
    end
    local function get(socks, url)
      return run("curl -sS --max-time 5 --socks5-hostname 127.0.0.1:" .. socks .. " " .. url)
    end

    setup(function()
      if not H.is_root or build_code ~= 0 then return end
      local out, code = H.sh(BOX .. " up " .. dir .. "/box")
      if code ~= 0 then upfail = out return end
      box = out:match("(%d+)%s*$")
      pki = H.certs(dir .. "/pki")
      out, code = H.sh("cat " .. deb .. " | " .. BOX .. " run " .. box ..
        " sh -c 'cat >/root/tunnels.deb && dpkg -i /root/tunnels.deb'")
      assert(code == 0, "dpkg -i: " .. out)
      run("mkdir -p /etc/tunnels")
      for _, f in ipairs({ "ca.pem", "server.pem", "server.key", "client.pem", "client.key",
        "revoked.pem", "revoked.key" }) do
        put(dir .. "/pki/" .. f, "/etc/tunnels/" .. f)
      end
      put(pki.crl_none, "/etc/tunnels/crl.pem")
      local server = { "# the unit's instance file: tunnels-server@server", "role = server",
        "server.addr = 127.0.0.1:8443", "tls.server.cert = /etc/tunnels/server.pem",
        "tls.server.key = /etc/tunnels/server.key", "tls.server.ca = /etc/tunnels/ca.pem",
        "tls.server.crl = /etc/tunnels/crl.pem", "sla.log.path = /var/log/tunnels/server.log",
        "metrics.addr = 127.0.0.1:9464" }
      conf("server.conf", server)
      local function client(name, socks, who)
        conf(name .. ".conf", { "role = client", "server.addr = 127.0.0.1:8443",
          "client.addr = 127.0.0.1:" .. socks, "tls.client.ca = /etc/tunnels/ca.pem",
          "tls.client.cert = /etc/tunnels/" .. who .. ".pem",
          "tls.client.key = /etc/tunnels/" .. who .. ".key",
          "sla.log.path = /var/log/tunnels/" .. name .. ".log" })
      end
      client("alice", 1080, "client")
      client("mallory", 1081, "revoked")
      -- A destination on a public address behind a veth (the box's own network namespace has
      -- only its loopback), and one on the box's own address, which the ACL must refuse.
      put(H.build .. "/tn-dest", "/usr/local/bin/tn-dest", "0755")
      out, code = run([[
        ip netns add dest && ip link add t0 type veth peer name t1 && ip link set t1 netns dest &&
        ip addr add 100.0.0.1/24 dev t0 && ip link set t0 up &&
        ip -n dest addr add 100.0.0.2/24 dev t1 && ip -n dest link set t1 up &&
        ip -n dest link set lo up &&
        (setsid ip netns exec dest tn-dest -addr 100.0.0.2:8080 -mode http >/dev/null 2>&1 &) &&
        (setsid tn-dest -addr 100.0.0.1:8080 -mode http >/dev/null 2>&1 &) &&
        for i in $(seq 50); do
          curl -s -o /dev/null http://100.0.0.2:8080/ && curl -s -o /dev/null http://100.0.0.1:8080/ &&
            exit 0; sleep 0.1; done; exit 1]])
      assert(code == 0, "destinations in the box: " .. out)
    end)

    teardown(function()
      if box then H.sh(BOX .. " down " .. box) end
    end)

    local function ready()
      assert(H.is_root and build_code == 0, "not built")
      assert(box, "the box did not boot: " .. tostring(upfail))
    end

    H.it_root("makes its user, and `systemctl start` brings up a tunnel ready when active",
      function()
        ready()
        local out, code = run("id tunnels")
        assert.are.equal(0, code, out)
        out, code = run("systemctl start tunnels-server@server tunnels-client@alice " ..
          "tunnels-client@mallory")
        assert.are.equal(0, code, out .. run("journalctl -n 30 --no-pager"))
        -- Type=notify: start returns once each process said READY=1, so it already listens.
        out = run("systemctl show -p ActiveState -p StatusText -p User tunnels-server@server")
        assert.matches("ActiveState=active", out)
        assert.matches("StatusText=listening", out)
        assert.matches("User=tunnels", out)
        out, code = get(1080, "http://100.0.0.2:8080/bytes/65536 | wc -c")
        assert.are.equal(0, code, out)
        assert.matches("^%s*65536%s*$", out)
        out = run("ps -o user= -p $(systemctl show -p MainPID --value tunnels-server@server)")
        assert.matches("^tunnels", out)
        out = run("curl -sS http://127.0.0.1:9464/metrics")
        assert.matches("tunnels_", out)
      end)

    H.it_root("keeps the server's ACL inside the unit's sandbox: its own address is refused",
      function()
        ready()
        local out = get(1080, "http://100.0.0.1:8080/")
        assert.is_nil(out:find("200 OK", 1, true), out)
        out = run("cat /var/log/tunnels/server.log")
        assert.matches("denied: this host's address 100%.0%.0%.1", out)
        assert.is_nil(out:find("addresses are unknown", 1, true), out)
      end)

    H.it_root("refuses to start when the sandbox hides this host's addresses", function()
      ready()
      -- The units before AF_NETLINK joined them: getifaddrs failed, the ACL knew no address of
      -- this host and let a client reach its services. Now the server will not run that way.
      conf("strict.conf", { "role = server", "server.addr = 127.0.0.1:8444",
        "tls.server.cert = /etc/tunnels/server.pem", "tls.server.key = /etc/tunnels/server.key",
        "tls.server.ca = /etc/tunnels/ca.pem", "sla.log.path = /var/log/tunnels/strict.log" })
      run([[mkdir -p /etc/systemd/system/tunnels-server@strict.service.d &&
        printf '[Service]\nRestrictAddressFamilies=\nRestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\nRestart=no\n' \
          >/etc/systemd/system/tunnels-server@strict.service.d/netlink.conf && systemctl daemon-reload]])
      local out, code = run("systemctl start tunnels-server@strict")
      assert.are_not.equal(0, code, out)
      out = run("journalctl -u tunnels-server@strict --no-pager")
      assert.matches("cannot list this host's addresses", out)
      assert.matches("AF_NETLINK", out)
    end)

    H.it_root("reloads on `systemctl reload`: the same process, a revoked client shut out",
      function()
        ready()
        local out, code = get(1081, "http://100.0.0.2:8080/")
        assert.are.equal(0, code, out)
        local pid = run("systemctl show -p MainPID --value tunnels-server@server")
        put(pki.crl, "/etc/tunnels/crl.pem")
        out, code = run("systemctl reload tunnels-server@server")
        assert.are.equal(0, code, out)
        assert.are.equal(pid, run("systemctl show -p MainPID --value tunnels-server@server"))
        out = get(1081, "http://100.0.0.2:8080/")
        assert.is_nil(out:find("hello", 1, true), out)
        out, code = get(1080, "http://100.0.0.2:8080/bytes/1000 | wc -c")
        assert.are.equal(0, code, out)
        assert.matches("^%s*1000%s*$", out)
        assert.matches("client certificate is revoked", run("cat /var/log/tunnels/server.log"))
      end)

    H.it_root("stops on `systemctl stop`: drained, exited cleanly", function()
      ready()
      local out, code = run("systemctl stop tunnels-client@alice tunnels-client@mallory " ..
        "tunnels-server@server")
      assert.are.equal(0, code, out)
      out = run("systemctl show -p ActiveState -p Result -p ExecMainStatus tunnels-server@server " ..
        "tunnels-client@alice")
      assert.is_nil(out:find("ActiveState=active", 1, true), out)
      assert.is_nil(out:find("Result=[^s]"), out)
      assert.is_nil(out:find("ExecMainStatus=[1-9]"), out)
    end)
  end)
end)
