#!/usr/bin/env bash
# bench.sh (`make bench`): TunneLS against the peers a user would pick instead, side by side in
# one run, with the project's load tool (build/tn-bench). Never part of `make test`.
#
# Part 1, loopback: bulk throughput over 1 and 8 sessions (and CPU per GB), new sessions per
# second at concurrency 50, time to first byte, memory at idle / 1,000 / 10,000 open sessions,
# head-of-line blocking (other sessions' latency while one reader is stalled with 64 MiB).
# Part 2, a 50 ms round trip: two network namespaces joined by build/tn-delay (25 ms each way,
# 1 Gbit/s; this kernel has no netem), app and tunnel client in one, tunnel server and
# destination in the other; time to first byte in RTT units (cold, 100 sequential, 100
# concurrent) and one session's bulk throughput.
#
# Peers (Debian packages, installed by scripts/deps.sh bench): shadowsocks-libev (aes-256-gcm),
# trojan, v2ray (VMess over TLS, mux on), stunnel in front of microsocks, and direct (no proxy).
# At 50 ms, HTTP CONNECT too, where the peer's client has an HTTP inbound (v2ray's; TunneLS's
# local port speaks it beside SOCKS5): time to first byte, as curl -p waits for the 200.
# UDP (both parts), against shadowsocks' UDP relay (ss-local -u, ss-server -u): build/tn-udp.
# Output: bench/results.md (the tables), bench/results.png (the chart), bench/raw.txt.
#
#   scripts/bench.sh [system ...]        (default: all)   BENCH_QUICK=1 for a short smoke run
set -u
cd "$(dirname "$0")/.."
root=$PWD
scripts/deps.sh bench
make -s all || exit 1
# Only what the bench group's packages install, as on a fresh machine (spec/deps_spec.lua).
PATH=$(scripts/deps.sh --path bench)
[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root (network namespaces)" >&2; exit 1; }

systems=${*:-"tunnels shadowsocks trojan v2ray stunnel direct"}
quick=${BENCH_QUICK:-0}
passes=${BENCH_PASSES:-3} # throughput rounds per system, in turn (best kept)
work=$(mktemp -d /tmp/tunnels-bench.XXXXXX)
raw=$root/bench/raw.txt
mkdir -p bench
: >"$raw"
scripts/certs.sh "$work" >/dev/null || exit 1
ulimit -n "$(ulimit -Hn)"   # 10,000 sessions through a peer take 2 descriptors each, per side
NSA=tnbench-a NSB=tnbench-b
pids=()

cleanup() {
  # Never "kill 0": that would signal this script's whole process group, this script included.
  for p in "${pids[@]}"; do [ "$p" != 0 ] && kill "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${pids[@]}"; do [ "$p" != 0 ] && kill -9 "$p" 2>/dev/null; done
  ip netns del $NSA 2>/dev/null
  ip netns del $NSB 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }
rec() { echo "$*" >>"$raw"; }

# Ports: a random base, then counting up (alloc sets $port; no subshell, so it sticks).
port=$((20000 + RANDOM % 10000))   # below the ephemeral range (32768-), which 10,000 sessions crowd
alloc() { port=$((port + 1)); }

# Where things run: CX prefixes the client side, SX the server side ("" on loopback).
CX="" SX="" SIP=127.0.0.1 DIP=127.0.0.1

wait_port() { # ns-prefix host port
  local i
  for i in $(seq 1 100); do
    $1 bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null && return 0
    sleep 0.1
  done
  log "nothing listens on $2:$3"
  return 1
}

cpu_ticks() { # pids... -> utime+stime in clock ticks
  local t=0 p
  for p in "$@"; do
    [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat)))
  done
  echo $t
}

rss_kib() { # pid -> VmRSS in KiB
  awk '/^VmRSS/ {print $2}' /proc/$1/status 2>/dev/null || echo 0
}

# start_<system>: starts it, sets SOCKS (client side host:port), CPID and SPID (for CPU and
# memory; 0 when there is none).
start_tunnels() {
  local sp cp
  alloc; sp=$port; alloc; cp=$port
  # One certificate holds the 10,000 sessions of the memory test: their first windows (256 KiB
  # each) are 2.5 GiB of budget, past the default -tls.client.buffer.max.mib (1 GiB), and they
  # pass the default -tls.client.sessions.max where the descriptor limit is 20,000 (half of the
  # server's 17,500: 8,750 held).
  $SX build/tunnels -role=server -server.addr=$SIP:$sp -server.allow.local -server.allow.private \
    -tls.client.buffer.max.mib=4096 -tls.client.sessions.max=10000 -tls.server.cert=$work/server.pem -tls.server.key=$work/server.key -tls.server.ca=$work/ca.pem \
    -sla.log.path= -sla.log.level=warn ${TUNNELS_SERVER_FLAGS:-} 2>>$work/tunnels-server.log &
  SPID=$! TSP=$sp
  wait_port "$SX" $SIP $sp || return 1
  start_tunnels_client $cp
  wait_port "$CX" 127.0.0.1 $cp
}

start_tunnels_client() { # SOCKS port: a client of the server on $TSP (sets CPID, SOCKS, HTTPP)
  $CX build/tunnels -role=client -server.addr=$SIP:$TSP -client.addr=127.0.0.1:$1 \
    -tls.client.ca=$work/ca.pem -tls.client.cert=$work/client.pem -tls.client.key=$work/client.key \
    -tls.client.name=localhost -sla.log.path= -sla.log.level=warn ${TUNNELS_CLIENT_FLAGS:-} \
    2>>$work/tunnels-client.log &
  CPID=$!
  SOCKS=127.0.0.1:$1 HTTPP=127.0.0.1:$1
}

start_shadowsocks() {
  local sp cp
  alloc; sp=$port; alloc; cp=$port
  $SX ss-server -s $SIP -p $sp -k bench-secret -m aes-256-gcm --no-delay --fast-open -u \
    >>$work/ss.log 2>&1 &
  SPID=$!
  wait_port "$SX" $SIP $sp || return 1
  $CX ss-local -s $SIP -p $sp -b 127.0.0.1 -l $cp -k bench-secret -m aes-256-gcm --no-delay \
    --fast-open -u >>$work/ss.log 2>&1 &
  CPID=$!
  SOCKS=127.0.0.1:$cp
  wait_port "$CX" 127.0.0.1 $cp
}

start_trojan() {
  local sp cp
  alloc; sp=$port; alloc; cp=$port
  cat >$work/trojan-server.json <<EOF
{"run_type":"server","local_addr":"$SIP","local_port":$sp,"remote_addr":"127.0.0.1",
 "remote_port":9,"password":["bench-secret"],"log_level":3,
 "ssl":{"cert":"$work/server.pem","key":"$work/server.key","key_password":"",
  "prefer_server_cipher":true,"alpn":["http/1.1"],"reuse_session":true,"session_ticket":true,
  "session_timeout":600,"plain_http_response":"","curves":"","dhparam":""},
 "tcp":{"prefer_ipv4":false,"no_delay":true,"keep_alive":true,"reuse_port":false,
  "fast_open":true,"fast_open_qlen":20}}
EOF
  cat >$work/trojan-client.json <<EOF
{"run_type":"client","local_addr":"127.0.0.1","local_port":$cp,"remote_addr":"$SIP",
 "remote_port":$sp,"password":["bench-secret"],"log_level":3,
 "ssl":{"verify":true,"verify_hostname":true,"cert":"$work/ca.pem","sni":"localhost",
  "alpn":["h2","http/1.1"],"reuse_session":true,"session_ticket":true,"curves":""},
 "tcp":{"no_delay":true,"keep_alive":true,"reuse_port":false,"fast_open":true,
  "fast_open_qlen":20}}
EOF
  $SX trojan -c $work/trojan-server.json >>$work/trojan.log 2>&1 &
  SPID=$!
  wait_port "$SX" $SIP $sp || return 1
  $CX trojan -c $work/trojan-client.json >>$work/trojan.log 2>&1 &
  CPID=$!
  SOCKS=127.0.0.1:$cp
  wait_port "$CX" 127.0.0.1 $cp
}

start_v2ray() {
  local sp cp hp id=6f1d7c2a-5a41-4c1e-9a57-3f0b8e6c2d11
  alloc; sp=$port; alloc; cp=$port; alloc; hp=$port
  cat >$work/v2ray-server.json <<EOF
{"log":{"loglevel":"error"},
 "inbounds":[{"listen":"$SIP","port":$sp,"protocol":"vmess",
  "settings":{"clients":[{"id":"$id","alterId":0}]},
  "streamSettings":{"network":"tcp","security":"tls","tlsSettings":{"certificates":[
   {"certificateFile":"$work/server.pem","keyFile":"$work/server.key"}]}}}],
 "outbounds":[{"protocol":"freedom"}]}
EOF
  cat >$work/v2ray-client.json <<EOF
{"log":{"loglevel":"error"},
 "inbounds":[{"listen":"127.0.0.1","port":$cp,"protocol":"socks",
  "settings":{"auth":"noauth","udp":false}},
  {"listen":"127.0.0.1","port":$hp,"protocol":"http","settings":{}}],
 "outbounds":[{"protocol":"vmess","settings":{"vnext":[{"address":"$SIP","port":$sp,
   "users":[{"id":"$id","alterId":0,"security":"aes-128-gcm"}]}]},
  "streamSettings":{"network":"tcp","security":"tls","tlsSettings":{"serverName":"localhost",
   "certificates":[{"usage":"verify","certificateFile":"$work/ca.pem"}]}},
  "mux":{"enabled":true,"concurrency":8}}]}
EOF
  $SX v2ray -config $work/v2ray-server.json >>$work/v2ray.log 2>&1 &
  SPID=$!
  wait_port "$SX" $SIP $sp || return 1
  $CX v2ray -config $work/v2ray-client.json >>$work/v2ray.log 2>&1 &
  CPID=$!
  SOCKS=127.0.0.1:$cp HTTPP=127.0.0.1:$hp
  wait_port "$CX" 127.0.0.1 $cp && wait_port "$CX" 127.0.0.1 $hp
}

start_stunnel() {
  local sp cp mp
  alloc; sp=$port; alloc; cp=$port; alloc; mp=$port
  $SX microsocks -i 127.0.0.1 -p $mp >>$work/stunnel.log 2>&1 &
  MPID=$!
  pids+=($MPID)
  cat >$work/stunnel-server.conf <<EOF
foreground = yes
pid =
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[srv]
accept = $SIP:$sp
connect = 127.0.0.1:$mp
cert = $work/server.pem
key = $work/server.key
EOF
  cat >$work/stunnel-client.conf <<EOF
foreground = yes
pid =
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[cli]
client = yes
accept = 127.0.0.1:$cp
connect = $SIP:$sp
CAfile = $work/ca.pem
verifyChain = yes
checkHost = localhost
EOF
  $SX stunnel4 $work/stunnel-server.conf >>$work/stunnel.log 2>&1 &
  SPID=$!
  wait_port "$SX" $SIP $sp || return 1
  $CX stunnel4 $work/stunnel-client.conf >>$work/stunnel.log 2>&1 &
  CPID=$!
  SOCKS=127.0.0.1:$cp
  wait_port "$CX" 127.0.0.1 $cp
}

start_direct() { SOCKS=direct CPID=0 SPID=0; }

start() {
  CPID=0 SPID=0 MPID=0 HTTPP=""
  "start_$1" || { log "$1 did not start"; return 1; }
  [ "$CPID" != 0 ] && pids+=($CPID $SPID)
  sleep 0.3
}

stop() {
  local p
  for p in $CPID $SPID $MPID; do [ "$p" != 0 ] && kill $p 2>/dev/null; done
  sleep 0.3
  for p in $CPID $SPID $MPID; do [ "$p" != 0 ] && kill -9 $p 2>/dev/null && wait $p 2>/dev/null; done
  return 0
}

# kv LINE KEY -> value
kv() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}' | tail -1; }
# rtts LINE KEY -> the value (ms) in units of the link's RTT
rtts() { awk -v v="$(kv "$1" "$2")" -v r="$RTT" 'BEGIN {printf "%.2f", v / r}'; }

bench() { # prefix args... -> the tool's last line
  $CX build/tn-bench "$@" 2>>$work/tn-bench.err | tail -1
}

declare -A R

better() { awk -v a="$1" -v b="$2" -v d="$3" 'BEGIN {exit !(d == "higher" ? a > b : a < b)}'; }

# keep KEY VALUE higher|lower: R[KEY] becomes VALUE if it is better (or unset)
keep() {
  local cur=${R[$1]:-}
  [ -z "$2" ] || [ "$2" = - ] && return
  if [ -z "$cur" ] || [ "$cur" = - ] || better "$2" "$cur" "$3"; then R[$1]=$2; fi
}

more_rounds() { # part, function: rounds 2..passes of the function for each system, in turn
  local round s
  for round in $(seq 2 $passes); do
    for s in $systems; do
      log "$1: $s, round $round of $passes"
      start "$s" && "$2" "$s" $round
      stop
    done
  done
}

# ---- part 1: loopback --------------------------------------------------------------------
# Throughput, CPU per GB and sessions/s of system $1 (started), round $2. The machine's speed
# drifts by a quarter within minutes, and each system is measured at a different time: every
# system runs PASSES rounds, in turn, and the table keeps each one's best.
throughput() {
  local s=$1 round=$2 line t0 t1 bytes dest=$DIP:$HTTP big=1073741824
  [ "$quick" = 1 ] && big=268435456
  t0=$(cpu_ticks $CPID $SPID)
  line=$(bench -mode bulk -socks $SOCKS -dest $dest -c 1 -bytes $big)
  t1=$(cpu_ticks $CPID $SPID)
  rec "$s loopback bulk1 round=$round $line cpu_ticks=$((t1 - t0))"
  keep "$s,bulk1" "$(kv "$line" MBps)" higher
  bytes=$(kv "$line" bytes)
  [ "$CPID" != 0 ] && keep "$s,cpu" "$(awk -v t=$((t1 - t0)) -v b="${bytes:-0}" \
    -v hz="$(getconf CLK_TCK)" 'BEGIN { if (b > 0) printf "%.2f", t / hz / (b / 1e9); else print "-" }')" lower
  [ "$CPID" = 0 ] && R[$s,cpu]=0.00
  line=$(bench -mode bulk -socks $SOCKS -dest $dest -c 8 -bytes $((big / 8)))
  rec "$s loopback bulk8 round=$round $line"
  keep "$s,bulk8" "$(kv "$line" MBps)" higher
  line=$(bench -mode rate -socks $SOCKS -dest $dest -c 50 -sec $([ "$quick" = 1 ] && echo 2 || echo 5))
  rec "$s loopback rate round=$round $line"
  keep "$s,rate" "$(kv "$line" per_sec)" higher
  [ "$s" = tunnels ] && norot_rate "$round"
  return 0
}

# What the default pool policy's rotation costs (each rotation is a TCP connect and a TLS
# resumption on both ends): a second client of the same server with -remux.reuse.max.cnt=1000,
# in 2 s runs alternating with the default client. Consecutive runs here differ by up to a
# fifth, so the figure is the ratio of the sessions both made over all their paired runs.
norot_rate() {
  local cp pid line k d main=$CPID socks=$SOCKS
  alloc; cp=$port
  TUNNELS_CLIENT_FLAGS=-remux.reuse.max.cnt=1000 start_tunnels_client $cp
  pid=$CPID CPID=$main SOCKS=$socks
  pids+=($pid)
  if wait_port "$CX" 127.0.0.1 $cp; then
    for k in 1 2 3; do
      line=$(bench -mode rate -socks $SOCKS -dest $DIP:$HTTP -c 50 -sec 2)
      rec "tunnels loopback rate-paired round=$1.$k $line"
      d=$(kv "$line" done)
      R[tunnels,rot_done]=$((${R[tunnels,rot_done]:-0} + ${d:-0}))
      line=$(bench -mode rate -socks 127.0.0.1:$cp -dest $DIP:$HTTP -c 50 -sec 2)
      rec "tunnels loopback rate-norotation round=$1.$k $line"
      d=$(kv "$line" done)
      R[tunnels,norot_done]=$((${R[tunnels,norot_done]:-0} + ${d:-0}))
    done
  fi
  kill $pid 2>/dev/null
  wait $pid 2>/dev/null
}

loopback() {
  local s=$1 line dest=$DIP:$HTTP n1k=1000 n10k=10000
  [ "$quick" = 1 ] && n10k=2000
  start "$s" || return
  if [ "$CPID" != 0 ]; then
    sleep 1
    R[$s,idle_c]=$(rss_kib $CPID) R[$s,idle_s]=$(rss_kib $SPID)
  fi
  throughput "$s" 1
  line=$(bench -mode ttfb -socks $SOCKS -dest $dest -n 200 -c 1)
  rec "$s loopback ttfb $line"
  R[$s,lttfb]=$(kv "$line" p50_ms)
  # A burst: 100 new sessions at once. With no delay on the path, what it shows is the CPU the
  # burst takes (load tool, proxy, destination on the same cores); the 50 ms link adds it to
  # the RTT in its own concurrent figure.
  line=$(bench -mode ttfb -socks $SOCKS -dest $dest -n 100 -c 100)
  rec "$s loopback ttfb-burst $line"
  R[$s,lburst]=$(kv "$line" p50_ms)
  if [ "$CPID" != 0 ]; then
    for n in $n1k $n10k; do
      $CX build/tn-bench -mode hold -socks $SOCKS -dest $DIP:$ECHO -n $n -sec 3 -timeout 60 \
        >$work/hold.out 2>>$work/tn-bench.err &
      local hp=$! i
      # longer than the load tool's own 60 s (+5): it prints "held N" when it gives up, too
      for i in $(seq 1 700); do
        grep -q '^held' $work/hold.out 2>/dev/null && break
        sleep 0.1
      done
      local held=$(awk '/^held/ {print $2}' $work/hold.out)
      R[$s,mem${n}_c]=$(rss_kib $CPID) R[$s,mem${n}_s]=$(rss_kib $SPID) R[$s,held$n]=${held:-0}
      wait $hp
      rec "$s loopback hold n=$n held=${held:-0} client_rss_kib=${R[$s,mem${n}_c]} server_rss_kib=${R[$s,mem${n}_s]}"
      sleep 1
    done
  fi
  stop
  # Head-of-line: sequential requests, without and with one stalled 64 MiB download. TunneLS
  # keeps every session on one connection here (the default policy would rotate after 16),
  # so the stalled session and the others share it; v2ray's mux shares one too.
  TUNNELS_CLIENT_FLAGS="-remux.reuse.max.cnt=1000" start "$s" || return
  line=$(bench -mode hol -socks $SOCKS -dest $dest -n 200)
  rec "$s loopback hol-base $line"
  R[$s,hol_base]=$(kv "$line" p99_ms)
  local before=$(rss_kib ${CPID:-0})
  line=$(bench -mode hol -socks $SOCKS -dest $dest -n 200 -stall 67108864)
  [ "$CPID" != 0 ] && R[$s,hol_rss]=$(($(rss_kib $CPID) - before))
  rec "$s loopback hol-stalled $line client_rss_growth_kib=${R[$s,hol_rss]:-}"
  R[$s,hol]=$(kv "$line" p99_ms)
  local hf=$(kv "$line" failed)
  [ "${hf:-0}" != 0 ] && R[$s,hol]="${R[$s,hol]} ($hf of 200 failed)"
  stop
}

# UDP through SOCKS5 UDP ASSOCIATE (build/tn-udp), for the systems that relay it: request and
# response RTT on one association, the first datagram of a new association, and datagrams per
# second one way with the loss (the best of 3 floods of 200,000 datagrams of 512 bytes, sent as
# fast as the socket takes them).
UDP_SYSTEMS="tunnels shadowsocks direct"
udp_loop() {
  local s=$1 line i n=2000 nf=200 nflood=200000 via dest=$UDIP:$UECHO
  [ "$quick" = 1 ] && n=300 nf=50 nflood=50000
  start "$s" || return
  via=$SOCKS
  sleep 0.5
  line=$($CX build/tn-udp -mode rtt -socks $via -dest $dest -n $n 2>>$work/tn-udp.err)
  rec "$s loopback udp-rtt $line"
  R[$s,urtt50]=$(kv "$line" p50_ms) R[$s,urtt99]=$(kv "$line" p99_ms)
  line=$($CX build/tn-udp -mode rtt -socks $via -dest $dest -n $nf -fresh 2>>$work/tn-udp.err)
  rec "$s loopback udp-fresh $line"
  R[$s,ufresh50]=$(kv "$line" p50_ms) R[$s,ufresh99]=$(kv "$line" p99_ms)
  for i in 1 2 3; do
    line=$($CX build/tn-udp -mode flood -socks $via -dest $dest -n $nflood -size 512 2>>$work/tn-udp.err)
    rec "$s loopback udp-flood round=$i $line"
    if [ -z "${R[$s,udps]:-}" ] || better "$(kv "$line" dps)" "${R[$s,udps]}" higher; then
      R[$s,udps]=$(kv "$line" dps) R[$s,uloss]=$(kv "$line" loss)
    fi
  done
  stop
}

udp_wan() {
  local s=$1 line n=100 nf=20 dest=10.77.0.2:$WUECHO
  [ "$quick" = 1 ] && n=20 nf=5
  start "$s" || return
  sleep 1 # the client's start-up dial done
  line=$($CX build/tn-udp -mode rtt -socks $SOCKS -dest $dest -n $n 2>>$work/tn-udp.err)
  rec "$s wan udp-rtt $line"
  R[$s,wurtt50]=$(rtts "$line" p50_ms) R[$s,wurtt99]=$(rtts "$line" p99_ms)
  line=$($CX build/tn-udp -mode rtt -socks $SOCKS -dest $dest -n $nf -fresh 2>>$work/tn-udp.err)
  rec "$s wan udp-fresh $line"
  R[$s,wufresh50]=$(rtts "$line" p50_ms) R[$s,wufresh99]=$(rtts "$line" p99_ms)
  stop
}

# ---- part 2: 50 ms round trip ------------------------------------------------------------
make_link() {
  ip netns del $NSA 2>/dev/null
  ip netns del $NSB 2>/dev/null
  ip netns add $NSA && ip netns add $NSB || return 1
  build/tn-delay -a tnbA0 -b tnbB0 -delay-ms 25 -rate-mbit 1000 >$work/delay.out 2>&1 &
  pids+=($!)
  for i in $(seq 1 50); do grep -q ready $work/delay.out && break; sleep 0.1; done
  ip link set tnbA0 netns $NSA && ip link set tnbB0 netns $NSB || return 1
  ip -n $NSA addr add 10.77.0.1/24 dev tnbA0
  ip -n $NSB addr add 10.77.0.2/24 dev tnbB0
  for n in $NSA $NSB; do
    ip -n $n link set lo up
    ip netns exec $n sysctl -qw net.ipv4.tcp_rmem="4096 131072 33554432" \
      net.ipv4.tcp_wmem="4096 16384 33554432" net.ipv4.tcp_fastopen=3
  done
  ip -n $NSA link set tnbA0 up
  ip -n $NSB link set tnbB0 up
  RTT=$(ip netns exec $NSA ping -c 5 -i 0.2 -q 10.77.0.2 | awk -F/ '/^rtt/ {print $5}')
  log "link: ping RTT $RTT ms (want 50)"
  rec "link ping_rtt_ms=$RTT"
}

# cold_and_seq SYSTEM -socks|-http PROXY KEY-PREFIX N: the cold first session (after the
# client's start-up dial), then N sequential, in RTT units: R[s,<prefix>cold], <prefix>seq50/99.
cold_and_seq() {
  local s=$1 how=$2 proxy=$3 k=$4 n=$5 line dest=10.77.0.2:$WHTTP
  line=$(bench -mode ttfb $how $proxy -dest $dest -n 1 -c 1)
  rec "$s wan ${k}cold $line"
  R[$s,${k}cold]=$(rtts "$line" p50_ms)
  line=$(bench -mode ttfb $how $proxy -dest $dest -n $n -c 1)
  rec "$s wan ${k}seq $line"
  R[$s,${k}seq50]=$(rtts "$line" p50_ms)
  R[$s,${k}seq99]=$(rtts "$line" p99_ms)
}

wan() {
  local s=$1 line dest=10.77.0.2:$WHTTP n=100
  [ "$quick" = 1 ] && n=20
  start "$s" || return
  # the client's start-up work (its first dial) done before the cold session
  sleep 1
  cold_and_seq "$s" -socks $SOCKS "" $n
  line=$(bench -mode ttfb -socks $SOCKS -dest $dest -n $n -c $n)
  rec "$s wan conc $line"
  R[$s,con50]=$(rtts "$line" p50_ms)
  R[$s,con99]=$(rtts "$line" p99_ms)
  # HTTP CONNECT, where the client has an HTTP inbound: the same two figures
  [ -n "$HTTPP" ] && cold_and_seq "$s" -http $HTTPP h $n
  wan_bulk "$s" 1
  [ "$s" = tunnels ] && client_start
  stop
}

# A session that comes as the client starts waits for the start-up dial. The load tool polls
# the SOCKS port and connects the moment the new client listens; its time to first byte holds
# the dial. The server keeps running and the client's kernel keeps its TCP Fast Open cookie from
# the dials above, as after a real restart. 5 restarts, the median kept.
client_start() {
  local i line cp bp v=()
  for i in 1 2 3 4 5; do
    kill $CPID 2>/dev/null
    wait $CPID 2>/dev/null
    alloc; cp=$port
    $CX build/tn-bench -mode ttfb -socks 127.0.0.1:$cp -dest $SIP:$WHTTP -n 1 -c 1 -wait 10 \
      >$work/start.out 2>>$work/tn-bench.err &
    bp=$!
    sleep 0.2 # the load tool is up and polling before the client starts
    start_tunnels_client $cp
    pids+=($CPID)
    wait $bp
    line=$(tail -1 $work/start.out)
    rec "tunnels wan client-start round=$i $line"
    [ "$(kv "$line" failed)" = 0 ] && v+=("$(kv "$line" p50_ms)")
  done
  R[tunnels,start]=$(printf '%s\n' "${v[@]}" | sort -n | sed -n "$(((${#v[@]} + 1) / 2))p" |
    awk -v r=$RTT '$1 != "" {printf "%.2f", $1 / r}')
}

wan_bulk() { # system (started), round: one session's download over the link, best kept
  local line
  line=$(bench -mode bulk -socks $SOCKS -dest $SIP:$WHTTP -c 1 -bytes $([ "$quick" = 1 ] && echo 50000000 || echo 400000000))
  rec "$1 wan bulk1 round=$2 $line"
  keep "$1,wbulk" "$(kv "$line" MBps)" higher
}

alloc; HTTP=$port; alloc; ECHO=$port
build/tn-dest -addr 127.0.0.1:$HTTP -mode http >$work/dest.log 2>&1 &
pids+=($!)
build/tn-dest -addr 127.0.0.1:$ECHO -mode echo >$work/echo.log 2>&1 &
pids+=($!)
wait_port "" 127.0.0.1 $HTTP && wait_port "" 127.0.0.1 $ECHO || exit 1

for s in $systems; do
  log "loopback: $s"
  loopback $s
done
more_rounds loopback throughput
alloc; UECHO=$port UDIP=127.0.0.1
build/tn-udp -mode echo -addr 127.0.0.1:$UECHO >$work/uecho.log 2>&1 &
pids+=($!)
sleep 0.3
for s in $systems; do
  case " $UDP_SYSTEMS " in *" $s "*) log "loopback UDP: $s"; udp_loop $s ;; esac
done
TLSCOST=$(build/tn-tlscost -dir "$work" -n 2000 2>>$work/tn-bench.err)
rec "tunnels tls-cost $TLSCOST"

make_link || { log "cannot make the namespaces"; exit 1; }
alloc; WHTTP=$port
ip netns exec $NSB build/tn-dest -addr 0.0.0.0:$WHTTP -mode http >$work/wdest.log 2>&1 &
pids+=($!)
wait_port "ip netns exec $NSB" 127.0.0.1 $WHTTP || exit 1
CX="ip netns exec $NSA" SX="ip netns exec $NSB" SIP=10.77.0.2
for s in $systems; do
  log "50 ms RTT: $s"
  wan $s
done
more_rounds "50 ms RTT" wan_bulk
alloc; WUECHO=$port
ip netns exec $NSB build/tn-udp -mode echo -addr 0.0.0.0:$WUECHO >$work/wuecho.log 2>&1 &
pids+=($!)
sleep 0.3
for s in $systems; do
  case " $UDP_SYSTEMS " in *" $s "*) log "50 ms RTT UDP: $s"; udp_wan $s ;; esac
done

# ---- the tables --------------------------------------------------------------------------
get() { echo "${R[$1,$2]:--}"; }
best_peer() { # metric higher|lower [encrypting] -> the best peer's value
  local m=$1 dir=$2 enc=${3:-} best="" s v
  for s in shadowsocks trojan v2ray stunnel; do
    v=${R[$s,$m]:-}
    [ -z "$v" ] || [ "$v" = - ] && continue
    if [ -z "$best" ] || better "$v" "$best" "$dir"; then
      best=$v
    fi
  done
  echo "${best:--}"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
mib() { [ "$1" = - ] && echo - || awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

cpu=$(lscpu | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')
md=bench/results.md
{
  echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) vCPU ($cpu), $(uname -r); load tool, client,"
  echo "server and destination share the cores. Ratios are TunneLS / the best peer in this run."
  echo "Throughput (both parts), CPU per GB and sessions/s: the best of $passes rounds, the systems in turn."
  echo
  echo "**Loopback**"
  echo
  echo "| | bulk 1 session MB/s | bulk 8 sessions MB/s | CPU s/GB (client+server) | new sessions/s (c=50) | TTFB p50 ms | 100 at once: TTFB p50 ms | idle RSS MiB (client / server) | RSS at 1,000 sessions | RSS at 10,000 sessions | HOL p99 ms (no stall / stalled) |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for s in $systems; do
    echo "| $s | $(get $s bulk1) | $(get $s bulk8) | $(get $s cpu) | $(get $s rate) | $(get $s lttfb) | $(get $s lburst) | $(mib $(get $s idle_c)) / $(mib $(get $s idle_s)) | $(mib $(get $s mem1000_c)) / $(mib $(get $s mem1000_s)) | $(mib $(get $s mem10000_c)) / $(mib $(get $s mem10000_s)) ($(get $s held10000) held) | $(get $s hol_base) / $(get $s hol) |"
  done
  echo "| **TunneLS / best peer** | $(ratio "$(get tunnels bulk1)" "$(best_peer bulk1 higher)") | $(ratio "$(get tunnels bulk8)" "$(best_peer bulk8 higher)") | $(ratio "$(get tunnels cpu)" "$(best_peer cpu lower)") | $(ratio "$(get tunnels rate)" "$(best_peer rate higher)") | $(ratio "$(get tunnels lttfb)" "$(best_peer lttfb lower)") | $(ratio "$(get tunnels lburst)" "$(best_peer lburst lower)") | | | | |"
  echo
  echo "The default policy rotates connections after 16 sessions; without rotation"
  echo "(\`-remux.reuse.max.cnt=1000\`) the same server takes $(ratio "$(get tunnels norot_done)" "$(get tunnels rot_done)") x the default's sessions/s"
  echo "(2 s runs of both clients in turn, $(get tunnels norot_done) against $(get tunnels rot_done) sessions)."
  echo "Each rotation is a resumed TLS 1.3 handshake: $(kv "$TLSCOST" resumed_client_us) µs of CPU on the client and"
  echo "$(kv "$TLSCOST" resumed_server_us) on the server (a full one: $(kv "$TLSCOST" full_client_us) / $(kv "$TLSCOST" full_server_us) µs; OpenSSL $(kv "$TLSCOST" openssl),"
  echo "\`build/tn-tlscost\`: the engine's own TLS contexts, in memory, no socket)."
  echo
  echo "**50 ms RTT** (network namespaces, tn-delay 25 ms each way, 1 Gbit/s; ping RTT $RTT ms). Time to first byte in RTT units."
  echo
  echo "| | cold first session | 100 sequential p50 / p99 | 100 concurrent p50 / p99 | bulk 1 session MB/s |"
  echo "|---|---|---|---|---|"
  for s in $systems; do
    echo "| $s | $(get $s cold) | $(get $s seq50) / $(get $s seq99) | $(get $s con50) / $(get $s con99) | $(get $s wbulk) |"
  done
  echo "| **TunneLS / best peer** | $(ratio "$(get tunnels cold)" "$(best_peer cold lower)") | $(ratio "$(get tunnels seq50)" "$(best_peer seq50 lower)") | $(ratio "$(get tunnels con50)" "$(best_peer con50 lower)") | $(ratio "$(get tunnels wbulk)" "$(get shadowsocks wbulk)") (vs shadowsocks) |"
  echo
  echo "HTTP CONNECT at 50 ms (the app waits for the 200, then asks; RTT units), where the client has an HTTP inbound:"
  echo
  echo "| | cold first session | 100 sequential p50 / p99 |"
  echo "|---|---|---|"
  for s in $systems; do
    [ "$(get $s hseq50)" = - ] && continue
    echo "| $s | $(get $s hcold) | $(get $s hseq50) / $(get $s hseq99) |"
  done
  echo "| **TunneLS / v2ray** | $(ratio "$(get tunnels hcold)" "$(get v2ray hcold)") | $(ratio "$(get tunnels hseq50)" "$(get v2ray hseq50)") |"
  echo
  echo "UDP (SOCKS5 UDP ASSOCIATE, \`build/tn-udp\`): request and response on one association, the first"
  echo "datagram of a new association (its own TCP handshake with the local port before it), and one"
  echo "way as fast as the sender's socket takes them (512-byte datagrams, 200,000; best of 3)."
  echo
  echo "| | loopback RTT p50 / p99 ms | loopback new association p50 / p99 ms | loopback datagrams/s delivered (loss) | 50 ms: RTT p50 / p99 (RTT units) | 50 ms: new association p50 / p99 (RTT units) |"
  echo "|---|---|---|---|---|---|"
  for s in $systems; do
    case " $UDP_SYSTEMS " in *" $s "*) ;; *) continue ;; esac
    echo "| $s | $(get $s urtt50) / $(get $s urtt99) | $(get $s ufresh50) / $(get $s ufresh99) | $(get $s udps) ($(get $s uloss)) | $(get $s wurtt50) / $(get $s wurtt99) | $(get $s wufresh50) / $(get $s wufresh99) |"
  done
  echo "| **TunneLS / shadowsocks** | $(ratio "$(get tunnels urtt50)" "$(get shadowsocks urtt50)") | $(ratio "$(get tunnels ufresh50)" "$(get shadowsocks ufresh50)") | $(ratio "$(get tunnels udps)" "$(get shadowsocks udps)") | $(ratio "$(get tunnels wurtt50)" "$(get shadowsocks wurtt50)") | $(ratio "$(get tunnels wufresh50)" "$(get shadowsocks wufresh50)") |"
  echo
  echo "Cold first session: after the client's start-up dial. A session that comes as the client"
  echo "starts waits for that dial: $(get tunnels start) RTT to its first byte, from the moment the new"
  echo "client listens (median of 5 restarts): 1 RTT for the dial (TCP Fast Open: the ClientHello"
  echo "rides in the SYN) and 1 for the session."
} >$md
cat $md

# The chart: TunneLS and each peer relative to the best peer, per figure (higher is better).
{
  for s in $systems; do
    [ "$s" = direct ] && continue
    printf '%s %s %s %s %s\n' "$s" \
      "$(ratio "$(get $s bulk1)" "$(best_peer bulk1 higher)")" \
      "$(ratio "$(get $s bulk8)" "$(best_peer bulk8 higher)")" \
      "$(ratio "$(get $s rate)" "$(best_peer rate higher)")" \
      "$(ratio "$(best_peer seq50 lower)" "$(get $s seq50)")"
  done
} | sed 's/ - / 0 /g; s/ -$/ 0/' >$work/chart.dat
gnuplot <<EOF 2>>$work/gnuplot.err
set terminal pngcairo size 900,480 noenhanced
set output "bench/results.png"
set title "TunneLS and peers, relative to the best peer (higher is better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set ylabel "x best peer"
set yrange [0:*]
set key top right
set grid ytics
plot "$work/chart.dat" using 2:xtic(1) title "bulk, 1 session", \
     "" using 3 title "bulk, 8 sessions", \
     "" using 4 title "new sessions/s", \
     "" using 5 title "1 / TTFB at 50 ms RTT"
EOF
[ -s bench/results.png ] || log "no chart (gnuplot: $(cat $work/gnuplot.err))"
log "results: bench/results.md, bench/results.png, bench/raw.txt"
