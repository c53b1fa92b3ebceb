-- Prometheus metrics (-metrics.addr, engine/metrics.c): the exposition passes promtool, counts
-- what happened, is scraped by a real Prometheus, stays on loopback unless told otherwise, and
-- shrugs off requests no scraper sends.
local H = require("spec.helper")

describe("metrics", function()
  local dir, pki, http
  H.fixture({ "http" }, function(...) dir, pki, http = ... end)

  local function get(port, path)
    return H.sh("curl -sS --max-time 5 http://127.0.0.1:" .. port .. path)
  end
  local function sample(text, name)
    return tonumber(text:match("\n" .. name:gsub("[%[%]%(%)%.%-%+]", "%%%0") .. " ([%d%.e%+]+)"))
  end

  it("count connections, sessions, bytes and handshakes on both ends, and pass promtool", function()
    local sm, cm = H.free_port(), H.free_port()
    local t = H.tunnel(dir, pki, { server = { ["metrics.addr"] = "127.0.0.1:" .. sm },
      client = { ["metrics.addr"] = "127.0.0.1:" .. cm } })
    for _ = 1, 5 do H.assert_hello(t.socks_port, http) end
    H.curl(t.socks_port, "http://127.0.0.1:" .. H.free_port() .. "/") -- refused: a RESET each way
    local s, code = get(sm, "/metrics")
    assert.are.equal(0, code, s)
    local c = get(cm, "/metrics")
    for _, text in ipairs({ s, c }) do
      local out, rc = H.sh("promtool check metrics <<'EOF'\n" .. text .. "EOF")
      assert.are.equal(0, rc, out)
      assert.are.equal(6, sample(text, "tunnels_sessions_opened_total"))
      assert.is_true(sample(text, 'tunnels_session_bytes_total{direction="to_peer"}') > 0)
      assert.is_true(sample(text, 'tunnels_session_bytes_total{direction="from_peer"}') > 0)
      assert.are.equal(1, sample(text, 'tunnels_connections{state="ready"}'))
      assert.are.equal(0, sample(text, 'tunnels_connections{state="handshake"}'))
      assert.are.equal(1, sample(text, 'tunnels_tls_handshakes_total{result="full"}'))
    end
    assert.matches('tunnels_build_info{role="server"} 1', s, 1, true)
    -- what the client sent is what the server received, and the other way
    assert.are.equal(sample(c, 'tunnels_session_bytes_total{direction="to_peer"}'),
      sample(s, 'tunnels_session_bytes_total{direction="from_peer"}'))
    assert.are.equal(sample(s, 'tunnels_session_bytes_total{direction="to_peer"}'),
      sample(c, 'tunnels_session_bytes_total{direction="from_peer"}'))
    assert.are.equal(1, sample(c, "tunnels_dial_seconds_count"))
    -- every request timed to its first byte back (client), every destination's connect (server)
    assert.are.equal(5, sample(c, "tunnels_ttfb_seconds_count"))
    assert.are.equal(5, sample(c, 'tunnels_ttfb_seconds_bucket{le="+Inf"}'))
    assert.is_true(sample(c, 'tunnels_ttfb_seconds_bucket{le="5"}') == 5)
    assert.is_true(sample(c, "tunnels_ttfb_seconds_sum") > 0)
    assert.are.equal(5, sample(s, "tunnels_destination_connect_seconds_count"))
    -- per server on the client, per client certificate on the server
    assert.are.equal(6, sample(c, 'tunnels_routes_total{route="tunnel"}'))
    assert.are.equal(1, sample(s, 'tunnels_session_resets_total{direction="sent",reason="refused"}'))
    assert.are.equal(1, sample(c, 'tunnels_session_resets_total{direction="received",reason="refused"}'))
    assert.are.equal(0, sample(c, 'tunnels_session_resets_total{direction="sent",reason="refused"}'))
    assert.are.equal(1, sample(c, 'tunnels_server_up{server="127.0.0.1:' .. t.server_port .. '"}'))
    assert.are.equal(1, sample(c, 'tunnels_server_connections{server="127.0.0.1:' .. t.server_port .. '"}'))
    assert.is_true(sample(c, 'tunnels_server_rtt_seconds{server="127.0.0.1:' .. t.server_port .. '"}') > 0)
    local fp = s:match('tunnels_client_sessions{cert="(%x+)"}')
    assert.are.equal(16, #fp)
    assert.are.equal(1, sample(s, "tunnels_client_certs"))
    assert.are.equal(1, sample(s, 'tunnels_client_connections{cert="' .. fp .. '"}'))
    assert.are.equal(sample(c, 'tunnels_session_bytes_total{direction="to_peer"}'),
      sample(s, 'tunnels_client_bytes_total{cert="' .. fp .. '",direction="from_client"}'))
    assert.are.equal(sample(s, 'tunnels_session_bytes_total{direction="to_peer"}'),
      sample(s, 'tunnels_client_bytes_total{cert="' .. fp .. '",direction="to_client"}'))
    assert.are.equal(6, sample(c, 'tunnels_lua_calls_total{hook="route"}'))
    local body = get(sm, "/healthz")
    assert.are.equal("ok\n", body)
    -- docs/METRICS.md names every family either end exposes
    local doc = H.read(H.root .. "/docs/METRICS.md")
    for _, text in ipairs({ s, c }) do
      for name in text:gmatch("# TYPE (%S+)") do
        assert.is_truthy(doc:find("`" .. name .. "`", 1, true), name .. " not in docs/METRICS.md")
      end
    end
    H.stop_tunnel(t)
  end)

  it("are scraped by a real Prometheus", function()
    local sm, cm, pp = H.free_port(), H.free_port(), H.free_port()
    local t = H.tunnel(dir, pki, { server = { ["metrics.addr"] = "127.0.0.1:" .. sm },
      client = { ["metrics.addr"] = "127.0.0.1:" .. cm } })
    for _ = 1, 3 do H.assert_hello(t.socks_port, http) end
    H.write(dir .. "/prometheus.yml", table.concat({
      "global:", "  scrape_interval: 1s", "scrape_configs:", "  - job_name: tunnels",
      "    static_configs:", "      - targets: ['127.0.0.1:" .. sm .. "', '127.0.0.1:" .. cm .. "']", "" }, "\n"))
    local prom = H.spawn("prometheus", { "prometheus", "--config.file=" .. dir .. "/prometheus.yml",
      "--storage.tsdb.path=" .. dir .. "/tsdb", "--web.listen-address=127.0.0.1:" .. pp },
      dir .. "/prometheus.log")
    -- the sum over both ends of the sessions each opened: 3 + 3, once both were scraped
    local q = "http://127.0.0.1:" .. pp .. "/api/v1/query?query=sum(tunnels_sessions_opened_total)"
    H.wait_for(function()
      local out = H.sh("curl -sS --max-time 2 '" .. q .. "'")
      return out:find('"value":%[[%d%.]+,"6"%]') ~= nil
    end, 30, "Prometheus to scrape both ends")
    local up = H.sh("curl -sS --max-time 2 'http://127.0.0.1:" .. pp .. "/api/v1/query?query=sum(up)'")
    assert.matches('"value":%[[%d%.]+,"2"%]', up)
    -- every query of the example dashboard evaluates, and finds series, once rates have samples
    local board = H.read(H.root .. "/examples/grafana-tunnels.json")
    local exprs = {}
    for e in board:gmatch('"expr": "(.-[^\\])"') do
      exprs[#exprs + 1] = e:gsub('\\"', '"'):gsub("%$job", ".*"):gsub("%$__rate_interval", "1m")
    end
    assert.is_true(#exprs >= 20, #exprs .. " queries")
    for _, e in ipairs(exprs) do
      local out
      H.wait_for(function()
        out = H.sh("curl -sS --max-time 2 -G --data-urlencode " .. H.quote("query=" .. e) ..
          " http://127.0.0.1:" .. pp .. "/api/v1/query")
        return out:find('"status":"success"', 1, true) and not out:find('"result":[]', 1, true)
      end, 20, "the dashboard's query " .. e .. " to find series: " .. tostring(out))
    end
    H.stop(prom)
    H.stop_tunnel(t)
  end)

  it("count failed handshakes by reason", function()
    local sm = H.free_port()
    local t = H.tunnel(dir, pki, { server = { ["metrics.addr"] = "127.0.0.1:" .. sm,
      ["tls.hello.sec"] = 1 }, no_client = true })
    local target = "127.0.0.1:" .. t.server_port
    -- a certificate of another CA, and none at all
    H.sh("openssl s_client -connect " .. target .. " -cert " .. pki.other_cert .. " -key " ..
      pki.other_key .. " </dev/null >/dev/null 2>&1")
    H.sh("openssl s_client -connect " .. target .. " </dev/null >/dev/null 2>&1")
    -- plain HTTP to the TLS port
    H.sh("curl -s --max-time 3 http://" .. target .. "/ >/dev/null")
    -- a connection closed before its ClientHello, and one that never sends it
    H.connect(t.server_port):close()
    local quiet = H.connect(t.server_port)
    local want = { certificate = 2, protocol = 1, peer_closed = 1, timeout = 1 }
    local text
    H.wait_for(function()
      text = get(sm, "/metrics")
      for reason, n in pairs(want) do
        if sample(text, 'tunnels_tls_handshakes_failed_total{reason="' .. reason .. '"}') ~= n then
          return false
        end
      end
      return true
    end, 10, "each failure counted under its reason")
    quiet:close()
    assert.are.equal(0, sample(text, 'tunnels_tls_handshakes_failed_total{reason="network"}'))
    assert.are.equal(0, sample(text, 'tunnels_tls_handshakes_total{result="full"}'))
    local out, rc = H.sh("promtool check metrics <<'EOF'\n" .. text .. "EOF")
    assert.are.equal(0, rc, out)
    H.stop(t.server_pid)
  end)

  it("stay on loopback unless -metrics.public, and shrug off what no scraper sends", function()
    local out, code = H.sh(H.bin .. " -role=server -server.addr=127.0.0.1:1 -server.open -remux.net=tcp " ..
      "-sla.log.path= -metrics.addr=0.0.0.0:" .. H.free_port() .. " </dev/null")
    assert.are.equal(1, code, out)
    assert.matches("tunnels: %-metrics%.addr: 0%.0%.0%.0:%d+ is not a loopback address %(%-metrics%.public allows it%)", out)
    local sm = H.free_port()
    local t = H.tunnel(dir, pki, { server = { ["metrics.addr"] = "127.0.0.1:" .. sm }, no_client = true })
    -- 64 KiB of headers, a POST, an unknown path, a request that never ends
    local big = H.sh("curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'X-Big: " .. ("a"):rep(65536) ..
      "' http://127.0.0.1:" .. sm .. "/metrics")
    assert.is_truthy(big == "400" or big == "413" or big == "431" or big == "000", big)
    assert.are.equal("501", (H.sh("curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:" .. sm .. "/metrics")))
    assert.are.equal("404", (H.sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:" .. sm .. "/nope")))
    local c = H.connect(sm)
    c:send("GET /metrics HTTP/1.1\r\n") -- and nothing more
    local body = get(sm, "/metrics")
    assert.matches('tunnels_connections{state="ready"} 0', body, 1, true)
    c:close()
    assert.is_true(H.alive(t.server_pid))
    H.stop(t.server_pid)
  end)
end)
