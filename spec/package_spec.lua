-- The Debian package (debian/): built from the tree with Debian's own tools, clean by lintian,
-- holding the binary, tunnels(1), the units where bookworm keeps them and the system user they
-- run as. (Installing it is a change to the machine: scripts check that on a fresh one with
-- ../shared/tools/fresh.sh; see docs/ARCHITECTURE.md.)
local H = require("spec.helper")

describe("the Debian package", function()
  local dir

  setup(function() dir = H.tmpdir() end)
  teardown(function() H.sh("rm -rf " .. dir) end)

  it("builds with dpkg-buildpackage, passes lintian, and holds what a service needs", function()
    local out, code = H.sh("mkdir -p " .. dir .. "/tunnels && tar -C " .. H.root ..
      " --exclude=./build --exclude=./build-san --exclude=./demo --exclude=./.git -cf - . | tar -C " ..
      dir .. "/tunnels -xf -")
    assert.are.equal(0, code, out)
    out, code = H.sh("cd " .. dir .. "/tunnels && dpkg-buildpackage -us -uc -b >" .. dir .. "/build.log 2>&1")
    assert.are.equal(0, code, H.sh("tail -30 " .. dir .. "/build.log"))
    local deb = H.sh("ls " .. dir .. "/tunnels_*_*.deb"):gsub("%s+$", "")
    assert.is_truthy(deb:match("%.deb$"), deb)
    out, code = H.sh("lintian " .. dir .. "/tunnels_*.changes")
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
end)
