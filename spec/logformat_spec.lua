-- The log format (the seed's: `DATE TIME [level] [tag] + id = count[ reason]` for [conn],
-- [sess] and [sock]), as H.log_shape checks it after every tunnel a spec stops, and the escaping
-- that keeps text from the network on one line.
local ffi = require("ffi")
local lib = require("spec.ffi")
local H = require("spec.helper")
H.dump_on_failure()

describe("log lines", function()
  local dir, pki, http

  H.fixture({ "http" }, function(...)
    dir, pki, http = ...
  end)

  it("are told apart by the shape checker: the seed's lines pass, the old odd ones fail", function()
    for _, good in ipairs({
      "2020.09.01 17:15:07 [info] [conn] + 8f7ed46a = 2",
      "2020.09.01 17:15:07 [debg] [sess] + 8f7ed46a:1 = 1",
      "2020.09.01 17:15:07 [info] [sock] + google.com:443 = 1",
      "2020.09.01 17:15:12 [erro] [conn] - 8f7ed46a = 1 unexpected EOF",
      "2020.09.01 17:15:12 [info] [sock] - [::1]:80 = 0 refused",
      "2020.09.01 17:15:12 [debg] [pool] dialling a spare for main",
    }) do
      assert.is_nil(H.log_shape(good), good)
    end
    for _, bad in ipairs({
      "2020.09.01 17:15:07 [debg] [conn] dialling a spare for 127.0.0.1:57693",
      "2020.09.01 17:15:07 [debg] [conn] ~ fa8e7641 from 127.0.0.1:49096",
      "2020.09.01 17:15:07 [info] [sock] + localhost:80 direct",
      "2020.09.01 17:15:07 [debg] [sess] ~ fa8e7641:3 window 512 KiB",
      "2020.09.01 17:15:07 [info] [conn] + 8f7ed46 = 2",
      "2020.09.01 17:15:07 [info] [sock] + a b:80 = 2",
      "2020.09.01 17:15:07 [info] [sock] + a:80 = 2  two spaces",
      "2020.09.01 17:15:07 [nope] [main] x",
      "17:15:07 [info] [main] x",
      "2020.09.01 17:15:07 [info] [main] a\27[31m colour",
    }) do
      assert.is_not_nil(H.log_shape(bad), bad)
    end
  end)

  it("escape CR, LF, ESC, DEL and backslash, so no text can end a line or forge one", function()
    local path = dir .. "/escape.log"
    local err = ffi.new("const char *[1]")
    assert.are.equal(0, lib.log_open(path, 100, err))
    lib.log_msg(300, "[sock] - %s = %d x", "a\r\n2020.09.01 17:15:07 [erro] [conn] - deadbeef = 0 forged\27[2J\127\\", ffi.new("int", 0))
    local text = H.read(path)
    assert.are.equal(1, select(2, text:gsub("\n", "")))
    assert.is_truthy(text:find("[sock] - a\\x0d\\x0a2020.09.01 17:15:07 [erro] [conn] - deadbeef = 0 forged\\x1b[2J\\x7f\\\\ = 0 x\n", 1, true), text)
  end)

  it("never carry a name the client refused: CR/LF in a SOCKS name gets reply 04, not a log line", function()
    local t = H.tunnel(dir, pki)
    local name = "x\r\n2020.09.01 17:15:07 [erro] [conn] - deadbeef = 0 forged"
    local c = H.connect(t.socks_port)
    c:send("\5\1\0" .. "\5\1\0\3" .. string.char(#name) .. name .. "\0\80")
    local got = H.recv(c, 2 + 10, 5)
    c:close()
    assert.are.equal("\5\0\5\4", got:sub(1, 4))
    H.wait_for(function() return H.count(t.clog, "%[socks%] [^ ]+: bad request: invalid destination") >= 1 end, 5, "the refusal")
    H.assert_hello(t.socks_port, http)
    H.stop_tunnel(t) -- every line in shape
    for _, log in ipairs({ t.clog, t.slog }) do
      assert.are.equal(0, H.count(log, "forged"))
    end
    assert.are.equal(0, H.count(t.slog, "%[sock%] %+ x"))
  end)

  it("name a destination once however it was spelt: LOCALHOST. is localhost", function()
    local t = H.tunnel(dir, pki)
    local body = H.curl(t.socks_port, "http://LocalHost.:" .. http .. "/")
    assert.are.equal(H.HELLO, body)
    H.stop_tunnel(t)
    assert.are.equal(1, H.count(t.clog, H.LOG.sock_open .. "localhost:" .. http .. " = 1 on %x+$"))
    assert.are.equal(1, H.count(t.slog, H.LOG.sock_open .. "localhost:" .. http .. " = 1 on %x+$"))
  end)
end)
