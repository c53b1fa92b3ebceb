#!/usr/bin/env bash
# bench-bulk.sh [BYTES]: one bulk download (default 1 GiB) with curl, direct and through the
# tunnel (ReMux over TLS, and over plain TCP), in one run; prints MB/s and the ratio to direct.
# A measurement, not a test: numbers vary with the machine's load.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh bench
make -s all
# Only what the bench group's packages install, as on a fresh machine (spec/deps_spec.lua).
PATH=$(scripts/deps.sh --path bench)
bytes=${1:-1073741824}
dir=$(mktemp -d /tmp/tunnels-bench.XXXXXX)
pids=()
cleanup() { trap - EXIT INT TERM; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM
scripts/certs.sh "$dir" >/dev/null
# A port no socket on this host is bound to (ss lists them), from the upper half.
port() {
  local p i
  for i in $(seq 1 100); do
    p=$((20000 + RANDOM % 20000))
    ss -Htan "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
  echo "bench-bulk.sh: no free port found" >&2; exit 1
}
http=$(port)
build/tn-dest -addr 127.0.0.1:$http -mode http >/dev/null & pids+=($!)
start_pair() { # name extra-server-flags extra-client-flags -> sets socks
  local sp cp
  sp=$(port); cp=$(port)
  # shellcheck disable=SC2086
  build/tunnels -role=server -server.allow.local -server.addr=127.0.0.1:$sp -sla.log.path= -sla.log.level=warn $2 2>/dev/null & pids+=($!)
  sleep 0.2
  # shellcheck disable=SC2086
  build/tunnels -role=client -server.addr=127.0.0.1:$sp -client.addr=127.0.0.1:$cp -sla.log.path= -sla.log.level=warn $3 2>/dev/null & pids+=($!)
  sleep 0.2
  socks=$cp
}
tls_s="-tls.server.cert=$dir/server.pem -tls.server.key=$dir/server.key -tls.server.ca=$dir/ca.pem"
tls_c="-tls.client.ca=$dir/ca.pem -tls.client.cert=$dir/client.pem -tls.client.key=$dir/client.key"
speed() { curl -s -o /dev/null -w '%{speed_download}' "$@"; }
direct=$(speed "http://127.0.0.1:$http/bytes/$bytes")
start_pair tls "$tls_s" "$tls_c"; tls=$(speed --socks5-hostname 127.0.0.1:$socks "http://localhost:$http/bytes/$bytes")
start_pair tcp "-remux.net=tcp -server.open" "-remux.net=tcp"; tcp=$(speed --socks5-hostname 127.0.0.1:$socks "http://localhost:$http/bytes/$bytes")
printf '| path (%s bytes, one curl download) | MB/s | vs direct |\n|---|---|---|\n' "$bytes"
for row in "direct:$direct" "tunnels ReMux over TLS:$tls" "tunnels ReMux over TCP:$tcp"; do
  name=${row%%:*}; v=${row##*:}
  awk -v n="$name" -v v="$v" -v d="$direct" 'BEGIN { printf "| %s | %.0f | %.2f |\n", n, v / 1e6, v / d }'
done
