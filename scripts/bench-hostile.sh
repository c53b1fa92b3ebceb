#!/usr/bin/env bash
# bench-hostile.sh (`make bench-hostile`): what an attack on a shared server costs an honest
# client. One server on loopback with its default limits (and budgets small enough to reach:
# -tls.client.buffer.max.mib=64, -server.buffer.max.mib=256); an honest client (certificate
# "client") runs 100 sequential requests (latency percentiles) and a 64 MiB download, first
# alone, then while
#   - a hostile client (certificate "mallory", build/tn-hostile) hogs windows with forged PONGs
#     toward a destination that never reads (512 sessions asked), floods sessions (opened and
#     reset, 64 at a time, over and over), and opens 64 downloads it never reads;
#   - 1,000 strangers from 16 addresses hold TCP connections that send nothing.
# Targets (issue "Hardening"): attacked p99 within 2x of unattacked, download at least half
# the rate, server peak RSS within the budgets plus 20 MiB, no crash, no honest failure.
# Output: bench/hostile.md (the table, dated) and the raw lines on stdout. Never part of
# `make test`; figures from a shared machine, compare within one run.
#
#   scripts/bench-hostile.sh     ATTACK_SEC=40 (the attack's length), ATTACKS="hog flood slowread
#                                strangers" (which ones; all by default)
set -u
cd "$(dirname "$0")/.."
root=$PWD
scripts/deps.sh bench
make -s all || exit 1
PATH=$(scripts/deps.sh --path bench)
work=$(mktemp -d /tmp/tunnels-hostile.XXXXXX)
scripts/certs.sh "$work" >/dev/null || exit 1
ulimit -n "$(ulimit -Hn)"
attack_sec=${ATTACK_SEC:-40}
attacks=" ${ATTACKS:-hog flood slowread strangers} "
on() { case $attacks in *" $1 "*) return 0 ;; esac; return 1; }
cert_mib=64 server_mib=256
pids=()

cleanup() {
  local p i
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for i in $(seq 1 30); do # the server's drain: up to 3 s
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && break; done
    kill -0 "$p" 2>/dev/null || break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "bench-hostile: $*" >&2; }

port=$((20000 + RANDOM % 10000))
alloc() { port=$((port + 1)); }
wait_port() { # port
  local i
  for i in $(seq 1 100); do
    ss -Hltn "sport = :$1" | grep -q . && return 0
    sleep 0.1
  done
  log "nothing listens on $1"
  return 1
}
kv() { # key line
  echo "$2" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'
}

alloc; HTTP=$port; build/tn-dest -addr 127.0.0.1:$HTTP -mode http >/dev/null & pids+=($!)
alloc; SHA=$port; build/tn-dest -addr 127.0.0.1:$SHA -mode sha >/dev/null & pids+=($!)
alloc; STALL=$port; build/tn-dest -addr 127.0.0.1:$STALL -mode stall >/dev/null & pids+=($!)
alloc; SP=$port
build/tunnels -role=server -server.addr=127.0.0.1:$SP -server.allow.local \
  -tls.server.cert=$work/server.pem -tls.server.key=$work/server.key -tls.server.ca=$work/ca.pem \
  -tls.client.buffer.max.mib=$cert_mib -server.buffer.max.mib=$server_mib \
  -sla.log.path=$work/server.log -sla.log.level=info 2>>$work/server.err &
SPID=$!
pids+=($SPID)
alloc; CP=$port
build/tunnels -role=client -server.addr=127.0.0.1:$SP -client.addr=127.0.0.1:$CP \
  -tls.client.ca=$work/ca.pem -tls.client.cert=$work/client.pem -tls.client.key=$work/client.key \
  -tls.client.name=localhost -sla.log.path= -sla.log.level=warn 2>>$work/client.err &
pids+=($!)
for p in $HTTP $SHA $STALL $SP $CP; do wait_port $p || exit 1; done

# The honest client's two measures; sets LAT (tn-bench line) and BULK (tn-bench line).
honest() {
  LAT=$(build/tn-bench -mode hol -socks 127.0.0.1:$CP -dest 127.0.0.1:$HTTP -n 100 -timeout 30 | tail -1)
  BULK=$(build/tn-bench -mode bulk -c 1 -socks 127.0.0.1:$CP -dest 127.0.0.1:$HTTP \
    -bytes 67108864 -timeout 60 | tail -1)
}
cpu() { awk '{print $14 + $15}' /proc/$SPID/stat 2>/dev/null || echo 0; } # ticks
fds() { ls /proc/$SPID/fd 2>/dev/null | wc -l; }
hwm() { awk '/^VmHWM/ {print $2}' /proc/$SPID/status 2>/dev/null || echo 0; }

log "unattacked"
honest; honest # the second round: a warm pool, as in the attacked round
LAT0=$LAT BULK0=$BULK RSS0=$(hwm) FDS0=$(fds)
echo "unattacked $LAT0 | $BULK0 | server_hwm_kib=$RSS0 fds=$FDS0"

log "attacked: ${attack_sec} s of hostile client and strangers"
# The attackers run at the lowest priority: on a real network they are on other machines, and
# here they share the honest client's two cores; their CPU is not the server's doing.
# The hostile client connects from 127.0.1.200, another host than the honest one (127.0.0.1):
# the server refuses an address that carried a connection closed for abuse for 10 s.
H="nice -n 19 build/tn-hostile -server 127.0.0.1:$SP -from 200 -ca $work/ca.pem -cert $work/mallory.pem -key $work/mallory.key -sec $attack_sec"
touch $work/hog.out $work/flood.out $work/strangers.out
attackers=()
CPU0=$(cpu) T0=$(date +%s.%N)
on hog && { $H -mode hog -n 512 -dest 127.0.0.1:$STALL >$work/hog.out 2>&1 & attackers+=($!); }
on slowread && { $H -mode slowread -n 64 -dest 127.0.0.1:$HTTP >$work/slowread.out 2>&1 & attackers+=($!); }
# flood: a connection's 65,535 ids go in seconds; a new connection each time, for the attack
on flood && { (end=$((SECONDS + attack_sec)); while [ $SECONDS -lt $end ]; do
  $H -mode flood -n 64 -dest 127.0.0.1:$SHA -sec $((end - SECONDS)) >>$work/flood.out 2>&1 || sleep 0.2
done) & attackers+=($!); }
on strangers && { nice -n 19 build/tn-hostile -server 127.0.0.1:$SP -mode strangers -n 1000 \
  -sources 16 -sec $attack_sec >$work/strangers.out 2>&1 & attackers+=($!); }
pids+=("${attackers[@]}")
maxfds=0
(for i in $(seq 1 $((attack_sec * 2))); do fds; sleep 0.5; done) >$work/fds.txt & pids+=($!)
sleep 5 # the hog's windows filled, the strangers in place
honest
LAT1=$LAT BULK1=$BULK
honest # and a second round, later in the attack

# the attack's end (each tool stops itself after -sec), for the tools' own counts
for p in "${attackers[@]}"; do wait "$p"; done
CPU1=$(cpu) T1=$(date +%s.%N)
cpu_pct=$(awk -v c="$((CPU1 - CPU0))" -v t0="$T0" -v t1="$T1" 'BEGIN { printf "%.0f", c / (t1 - t0) }')
RSS1=$(hwm)
maxfds=$(sort -n $work/fds.txt | tail -1)
alive=no
kill -0 $SPID 2>/dev/null && alive=yes
echo "attacked $LAT1 | $BULK1 | server_hwm_kib=$RSS1 max_fds=$maxfds alive=$alive"
echo "attacked(2) $LAT | $BULK"
refused=$(grep -c "refused: its windows would pass" $work/server.log)
rapid=$(grep -c "\[conn\] - .* sessions reset before any reply or refused" $work/server.log)
penalized=$(grep -c "\[conn\] - .* abandoned its sessions less than" $work/server.log)
refused_addr=$(grep -c "refused: a connection from its address abandoned" $work/server.log)
evicted=$(grep -c "handshake evicted" $work/server.log)
echo "server: $refused sessions refused for the budgets; $(grep -c '\[sock\] +' $work/server.log) sessions opened; $rapid connections closed for rapid reset, $penalized refused after; $evicted handshakes evicted"

p99_0=$(kv p99_ms "$LAT0") p99_1=$(kv p99_ms "$LAT1") p99_2=$(kv p99_ms "$LAT")
p50_0=$(kv p50_ms "$LAT0") p50_1=$(kv p50_ms "$LAT1") p50_2=$(kv p50_ms "$LAT")
mb_0=$(kv MBps "$BULK0") mb_1=$(kv MBps "$BULK1") mb_2=$(kv MBps "$BULK")
fail=$(( $(kv failed "$LAT0") + $(kv failed "$LAT1") + $(kv failed "$LAT") + $(kv failed "$BULK0") + \
  $(kv failed "$BULK1") + $(kv failed "$BULK") ))
r() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
ok() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN { m = op == "le" ? v <= t : v >= t; print m ? "met" : "NOT met" }'; }
worst_p99=$(awk -v a="$p99_1" -v b="$p99_2" 'BEGIN { print (a + 0 > b + 0) ? a : b }')
least_mb=$(awk -v a="$mb_1" -v b="$mb_2" 'BEGIN { print (a + 0 < b + 0) ? a : b }')
rss_mib=$((RSS1 / 1024)) budget_mib=$((server_mib + 20))
{
  echo "# Under attack: an honest client's service (scripts/bench-hostile.sh)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(git rev-parse --short HEAD 2>/dev/null)."
  echo "Attack: one client certificate (hog 512 sessions asked, forged PONGs, toward a destination"
  echo "that never reads; session floods; 64 unread downloads) and 1,000 idle strangers from 16"
  echo "addresses, ${attack_sec} s (run: $attacks). Budgets: -tls.client.buffer.max.mib=$cert_mib, -server.buffer.max.mib=$server_mib."
  echo
  echo "| honest client | alone | attacked (1st, 2nd round) | worst ratio | target | |"
  echo "|---|---|---|---|---|---|"
  echo "| 100 sequential requests p50 (ms) | $p50_0 | $p50_1, $p50_2 | $(r "$(awk -v a="$p50_1" -v b="$p50_2" 'BEGIN { print (a + 0 > b + 0) ? a : b }')" "$p50_0") | | |"
  echo "| 100 sequential requests p99 (ms) | $p99_0 | $p99_1, $p99_2 | $(r "$worst_p99" "$p99_0") | ≤ 2 | $(ok "$(r "$worst_p99" "$p99_0")" le 2) |"
  echo "| 64 MiB download (MB/s) | $mb_0 | $mb_1, $mb_2 | $(r "$least_mb" "$mb_0") | ≥ 0.5 | $(ok "$(r "$least_mb" "$mb_0")" ge 0.5) |"
  echo "| honest sessions failed | 0 | $fail in all | | 0 | $([ "$fail" = 0 ] && echo met || echo NOT met) |"
  echo "| server peak RSS (MiB) | $((RSS0 / 1024)) | $rss_mib | | ≤ $budget_mib (budget + 20) | $(ok "$rss_mib" le "$budget_mib") |"
  echo "| server descriptors (most) | $FDS0 | $maxfds | | | |"
  echo "| server CPU during the attack (% of a core) | | $cpu_pct | | | |"
  echo "| server alive after | | $alive | | yes | $([ "$alive" = yes ] && echo met || echo NOT met) |"
  echo
  echo "Server: $refused sessions refused for the budgets, $rapid connections closed for rapid reset"
  echo "and in the penalty after $refused_addr refused at accept (its address) and $penalized after"
  echo "their handshake (its certificate), $evicted stranger handshakes evicted. Hostile"
  echo "tools (each line its own counts): $(tr '\n' ' ' <$work/hog.out) / $(grep -c . $work/flood.out) flood"
  echo "connections, the first: $(head -1 $work/flood.out) / $(cat $work/strangers.out)"
} >bench/hostile.md
cat bench/hostile.md
