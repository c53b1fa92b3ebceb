#!/usr/bin/env bash
# demo.sh: a working local tunnel on loopback with generated certificates.
#   server   127.0.0.1:8443  (TLS, mutual TLS with the demo CA)
#   client   127.0.0.1:1080  (SOCKS5)
#   a local HTTP destination on 127.0.0.1:8080 to try it with
# Ctrl-C stops all three. Ports can be changed: DEMO_SERVER, DEMO_SOCKS, DEMO_HTTP.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh demo
make -s all
# Only what the demo group's packages install, as on a fresh machine (spec/deps_spec.lua).
PATH=$(scripts/deps.sh --path demo)
server=${DEMO_SERVER:-127.0.0.1:8443}
socks=${DEMO_SOCKS:-127.0.0.1:1080}
http=${DEMO_HTTP:-127.0.0.1:8080}
dir=$PWD/demo
scripts/certs.sh "$dir"
pids=()
cleanup() { trap - EXIT INT TERM; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
build/tn-dest -addr "$http" -mode http >/dev/null & pids+=($!)
build/tunnels -role=server -server.allow.local -server.addr="$server" -tls.server.cert="$dir/server.pem" \
  -tls.server.key="$dir/server.key" -tls.server.ca="$dir/ca.pem" -sla.log.path="$dir/server.log" & pids+=($!)
build/tunnels -role=client -server.addr="$server" -client.addr="$socks" -tls.client.ca="$dir/ca.pem" \
  -tls.client.cert="$dir/client.pem" -tls.client.key="$dir/client.key" -sla.log.path="$dir/client.log" & pids+=($!)
sleep 0.5
cat <<MSG

TunneLS demo running (logs: demo/server.log, demo/client.log). Try:

  curl --socks5-hostname $socks http://localhost:${http##*:}/
  curl --socks5-hostname $socks -o /dev/null http://localhost:${http##*:}/bytes/1073741824

Ctrl-C to stop.
MSG
wait
