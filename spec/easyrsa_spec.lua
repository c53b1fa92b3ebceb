-- The certificate life cycle as ops run it, with Debian's easy-rsa (not a tool of ours): a CA,
-- the server's certificate with its names, a certificate per user, revocation and the CRL. The
-- server takes easy-rsa's files as they are; after `easyrsa revoke` and `gen-crl`, a SIGHUP
-- closes the revoked user's connection and refuses its next one, while the other user goes on.
-- Then the same with plain openssl, as docs/SECURITY.md writes it.
local H = require("spec.helper")


describe("easy-rsa", function()
  local dir, http, pkidir

  -- easyrsa in batch mode, on the spec's PKI: EC keys (P-256) as TunneLS's own test PKI has.
  local function easyrsa(args)
    local out, code = H.sh("cd " .. dir .. " && EASYRSA_BATCH=1 EASYRSA_PKI=" .. pkidir .. " easyrsa" ..
      " --use-algo=ec --curve=prime256v1 " .. args)
    assert.are.equal(0, code, "easyrsa " .. args .. ": " .. out)
    return out
  end

  setup(function()
    dir = H.tmpdir()
    pkidir = dir .. "/pki"
    http = H.dest(dir, "http")
  end)
  teardown(function()
    H.stop_all()
    H.sh("rm -rf " .. dir)
  end)

  it("a CA, a server, two users; revoke one, gen-crl, SIGHUP: it is out, the other goes on", function()
    easyrsa("init-pki")
    easyrsa("--req-cn='TunneLS spec CA' build-ca nopass")
    easyrsa("--subject-alt-name='DNS:localhost,IP:127.0.0.1' build-server-full server nopass")
    easyrsa("build-client-full alice nopass")
    easyrsa("build-client-full bob nopass")
    easyrsa("gen-crl")
    local function user(name)
      return { ca = pkidir .. "/ca.crt", server_cert = pkidir .. "/issued/server.crt",
        server_key = pkidir .. "/private/server.key", client_cert = pkidir .. "/issued/" .. name .. ".crt",
        client_key = pkidir .. "/private/" .. name .. ".key" }
    end
    local alice = H.tunnel(dir, user("alice"), { server = { ["tls.server.crl"] = pkidir .. "/crl.pem" } })
    local bob = H.tunnel(dir, user("bob"), { no_server = true, server_port = alice.server_port })
    H.assert_hello(alice.socks_port, http)
    H.assert_hello(bob.socks_port, http)
    assert.are.equal(1, H.count(alice.slog, '%[tls%] ~ %x+ .*: "CN=bob"'))

    easyrsa("revoke bob")
    easyrsa("gen-crl")
    H.sh("kill -HUP " .. alice.server_pid)
    H.wait_for(function() return H.count(alice.slog, "%[conn%] %- %x+ = %d+ its client certificate is revoked") == 1 end,
      5, "bob's connection closed")
    local _, code = H.curl(bob.socks_port, "http://localhost:" .. http .. "/")
    assert.are_not.equal(0, code)
    H.wait_for(function() return H.count(alice.slog, "tls handshake: .*certificate revoked") >= 1 end, 5, "bob refused")
    H.assert_hello(alice.socks_port, http)
    H.stop(bob.client_pid)
    H.stop_tunnel(alice)
  end)

  it("the plain openssl life cycle of docs/SECURITY.md works as written", function()
    -- The block as the page has it, run in a directory of its own; its last step (revoke,
    -- gen-crl, reload) is run apart, after alice has been let in.
    local doc = H.read(H.root .. "/docs/SECURITY.md")
    local block = doc:match("### Certificates with plain `openssl`.-```sh\n(.-)```")
    assert.is_truthy(block, "the openssl block in docs/SECURITY.md")
    local before, revoke = block:match("^(.*\n)(openssl ca %-config ca%-db/ca%.cnf %-revoke .*)$")
    assert.is_truthy(revoke, "the revoke step")
    local o = dir .. "/openssl"
    H.write(dir .. "/life.sh", "set -e\nmkdir -p " .. o .. " && cd " .. o .. "\n" .. before)
    local out, code = H.sh("bash " .. dir .. "/life.sh")
    assert.are.equal(0, code, out)
    local pki = { ca = o .. "/ca.pem", server_cert = o .. "/server.pem", server_key = o .. "/server.key",
      client_cert = o .. "/alice.pem", client_key = o .. "/alice.key" }
    local t = H.tunnel(dir, pki, { server = { ["tls.server.crl"] = o .. "/crl.pem" },
      client = { ["tls.client.name"] = "tunnel.example.org" } })
    H.assert_hello(t.socks_port, http)
    -- the revoke step, its reload a SIGHUP here (no systemd)
    H.write(dir .. "/revoke.sh", "set -e\ncd " .. o .. "\nsystemctl() { kill -HUP " .. t.server_pid ..
      "; }\n" .. revoke)
    out, code = H.sh("bash " .. dir .. "/revoke.sh")
    assert.are.equal(0, code, out)
    H.wait_for(function() return H.count(t.slog, "%[conn%] %- %x+ = %d+ its client certificate is revoked") == 1 end,
      5, "alice's connection closed")
    local _, rc = H.curl(t.socks_port, "http://localhost:" .. http .. "/")
    assert.are_not.equal(0, rc)
    H.stop_tunnel(t)
  end)
end)
