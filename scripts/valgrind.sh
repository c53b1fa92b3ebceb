#!/usr/bin/env bash
# valgrind.sh: an end-to-end transfer with the tunnel's client and server under valgrind
# memcheck (leaks, invalid accesses); prints each side's summary, exits 1 on any error or leak.
set -eu
cd "$(dirname "$0")/.."
scripts/deps.sh valgrind
make -s all
# Only what the valgrind group's packages install, as on a fresh machine (spec/deps_spec.lua).
PATH=$(scripts/deps.sh --path valgrind)
dir=$(mktemp -d /tmp/tunnels-vg.XXXXXX)
pids=()
cleanup() { trap - EXIT INT TERM; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM
scripts/certs.sh "$dir" >/dev/null
port() { echo $((20000 + RANDOM % 20000)); }
sp=$(port); cp=$(port); hp=$(port); dp=$(port)
build/tn-dest -addr 127.0.0.1:$hp -mode http >/dev/null & pids+=($!)
build/tn-dest -addr 127.0.0.1:$dp -mode sha >/dev/null & pids+=($!)
vg="valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect"
$vg --log-file="$dir/server.vg" build/tunnels -role=server -server.allow.local -server.addr=127.0.0.1:$sp -sla.log.path= \
  -sla.log.level=warn -tls.server.cert="$dir/server.pem" -tls.server.key="$dir/server.key" \
  -tls.server.ca="$dir/ca.pem" & spid=$!
$vg --log-file="$dir/client.vg" build/tunnels -role=client -server.addr=127.0.0.1:$sp -client.addr=127.0.0.1:$cp \
  -sla.log.path= -sla.log.level=warn -tls.client.ca="$dir/ca.pem" -tls.client.cert="$dir/client.pem" \
  -tls.client.key="$dir/client.key" & cpid=$!
for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 --socks5-hostname 127.0.0.1:$cp http://localhost:$hp/ && break; sleep 0.2; done
curl -sS -o /dev/null --socks5-hostname 127.0.0.1:$cp http://localhost:$hp/bytes/16777216
build/tn-load -socks 127.0.0.1:$cp -dest 127.0.0.1:$dp -n 50 -c 25 -max 1048576
curl -s -o /dev/null --max-time 5 --socks5-hostname 127.0.0.1:$cp http://127.0.0.1:1/ || true  # a refused destination
kill -TERM $cpid; wait $cpid; crc=$?
kill -TERM $spid; wait $spid; src=$?
for side in server client; do
  echo "== $side"; grep -E "ERROR SUMMARY|definitely lost|indirectly lost|in use at exit" "$dir/$side.vg"
done
[ "$crc" -eq 0 ] && [ "$src" -eq 0 ]
