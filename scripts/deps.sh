#!/usr/bin/env bash
# Installs the Debian packages TunneLS needs to build, run and test, when any is missing.
# Used by `make`, `make test` and scripts/demo.sh, so a fresh machine needs nothing by hand.
set -eu
pkgs="build-essential pkg-config libluajit-5.1-dev luajit libevent-dev libssl-dev openssl
      lua-busted lua-socket curl iproute2 procps strace"
# `deps.sh fuzz`: also clang with libFuzzer (only `make fuzz` needs it).
[ "${1:-}" = fuzz ] && pkgs="$pkgs clang libclang-rt-14-dev"
# `deps.sh bench`: the peers `make bench` measures against, ping, and gnuplot for the chart.
[ "${1:-}" = bench ] && pkgs="$pkgs shadowsocks-libev trojan v2ray stunnel4 microsocks
      iputils-ping gnuplot-nox"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "scripts/deps.sh: installing:$missing" >&2
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# shellcheck disable=SC2086
$sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
