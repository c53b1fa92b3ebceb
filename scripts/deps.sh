#!/usr/bin/env bash
# deps.sh: the Debian packages TunneLS needs, by what needs them, and a check that nothing else
# is used. A fresh Debian 12 machine needs nothing by hand.
#
#   scripts/deps.sh [GROUP...]       installs the packages of each GROUP that are missing
#   scripts/deps.sh --path GROUP...  makes a new directory holding only the commands that
#                                    GROUP's packages, their dependencies and Debian's essential
#                                    and required packages install (what a fresh machine has
#                                    after this script) and prints its path: run a group's work
#                                    with it as PATH, and a command no listed package installs
#                                    fails here as it would on a fresh machine, instead of
#                                    passing on the developer's. It lasts while the caller runs.
#   scripts/deps.sh --list GROUP...  prints the packages of the groups
#
# Groups: build (the engine and its tools; the default), test (make test), fuzz (make fuzz),
# bench (make bench: the peers, ping, gnuplot; git names the commit measured), valgrind (make valgrind), demo (make demo).
set -eu
cd "$(dirname "$0")/.."

group_build="build-essential pkg-config libluajit-5.1-dev luajit libevent-dev libssl-dev openssl"
group_test="$group_build lua-busted lua-socket curl wget git iproute2 procps strace iputils-ping python3 systemd groff-base easy-rsa prometheus dpkg-dev debhelper lintian logrotate python3-socks dnsmasq-base"
group_fuzz="$group_build clang libclang-rt-14-dev"
group_bench="$group_test shadowsocks-libev trojan v2ray stunnel4 microsocks gnuplot-nox git"
group_valgrind="$group_build valgrind curl procps"
group_demo="$group_build curl"

# Commands a package keeps outside the bin directories, as package:path. Debian's easy-rsa
# ships its easyrsa under /usr/share/easy-rsa/ only; installing the package links it into
# /usr/local/bin, and --path links it into its directory, so `easyrsa` is a command like others.
offbin="easy-rsa:/usr/share/easy-rsa/easyrsa"

# Links into directory $1 (with $2: sudo or nothing) the off-bin commands of the installed
# packages among the rest of the arguments.
link_offbin() {
  local dir=$1 sudo=$2 e pkg file
  shift 2
  for e in $offbin; do
    pkg=${e%%:*} file=${e#*:}
    printf '%s\n' "$@" | grep -qxF "$pkg" || continue
    installed "$pkg" && [ -x "$file" ] && [ ! -e "$dir/${file##*/}" ] && $sudo ln -sf "$file" "$dir/"
  done
  return 0
}

check_groups() {
  local g v
  for g in "$@"; do
    v="group_$g"
    [ -n "${!v+x}" ] || { echo "scripts/deps.sh: no group \"$g\" (build test fuzz bench valgrind demo)" >&2; exit 2; }
  done
}

packages() {
  local g v out=""
  for g in "$@"; do
    v="group_$g"
    out="$out ${!v}"
  done
  echo "$out" | tr -s ' \n' '\n' | sed '/^$/d' | sort -u
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

install() {
  local p missing="" sudo=""
  for p in $(packages "$@"); do installed "$p" || missing="$missing $p"; done
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ -z "$missing" ]; then
    link_offbin /usr/local/bin "$sudo" $(packages "$@")
    return 0
  fi
  echo "scripts/deps.sh: installing:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # shellcheck disable=SC2086
  $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
  link_offbin /usr/local/bin "$sudo" $(packages "$@")
}

# The installed packages a fresh machine would have with the groups': Debian's essential and
# required ones, the groups' own, and everything those depend on (every installed alternative
# of an "a | b" dependency, and what provides a virtual one).
closure() {
  dpkg-query -W -f='${db:Status-Status}\t${Package}\t${Essential}\t${Priority}\t${Provides}\t${Pre-Depends}, ${Depends}\n' |
    awk -F'\t' -v want="$(packages "$@" | tr '\n' ' ')" '
      function names(s, out,   n, i, a, k) {
        gsub(/\([^)]*\)/, "", s); gsub(/:[a-z0-9]+/, "", s); gsub(/[ \t]/, "", s)
        n = split(s, a, /[,|]/); k = 0
        for (i = 1; i <= n; i++) if (a[i] != "") out[++k] = a[i]
        return k
      }
      $1 == "installed" {
        pkg = $2; inst[pkg] = 1; deps[pkg] = $6
        if ($3 == "yes" || $4 == "required") queue[++q] = pkg
        n = names($5, pv); for (i = 1; i <= n; i++) prov[pv[i]] = prov[pv[i]] " " pkg
      }
      END {
        n = split(want, w, " "); for (i = 1; i <= n; i++) queue[++q] = w[i]
        for (h = 1; h <= q; h++) {
          p = queue[h]
          if (p in seen) continue
          seen[p] = 1
          if (p in inst) print p
          m = split(prov[p], pp, " "); for (i = 1; i <= m; i++) queue[++q] = pp[i]
          if (!(p in inst)) continue
          m = names(deps[p], d); for (i = 1; i <= m; i++) queue[++q] = d[i]
        }
      }'
}

path_dir() {
  # One directory per caller, named by its PID: a suite running with one as PATH never sees
  # it rebuilt, and those of callers that have ended are removed here.
  local dir="build/deps-path/$(echo "$@" | tr ' ' '+').$PPID" p f old
  for old in build/deps-path/*.[0-9]*; do
    [ -d "$old" ] && ! kill -0 "${old##*.}" 2>/dev/null && rm -rf "$old"
  done
  # shellcheck disable=SC2046
  for p in $(packages "$@"); do
    installed "$p" || { echo "scripts/deps.sh: $p is not installed: run scripts/deps.sh $*" >&2; exit 1; }
  done
  rm -rf "$dir"
  mkdir -p "$dir"
  # The packages' own commands, and the names update-alternatives points at them (cc, awk).
  # shellcheck disable=SC2046
  dpkg-query -L $(closure "$@") 2>/dev/null | grep -E '^(/usr)?/s?bin/[^/]+$' | sort -u >"$dir.files"
  xargs -r ln -sf -t "$dir" <"$dir.files"
  find /usr/bin /usr/sbin -maxdepth 1 -lname '/etc/alternatives/*' | while read -r f; do
    grep -qxF "$(readlink -f "$f")" "$dir.files" && ln -sf "$f" "$dir/${f##*/}"
  done
  rm -f "$dir.files"
  # shellcheck disable=SC2046
  link_offbin "$dir" "" $(packages "$@")
  echo "$PWD/$dir"
}

case "${1:-}" in --path|--list) check_groups "${@:2}" ;; *) check_groups "$@" ;; esac
case "${1:-}" in
  --path) shift; path_dir "${@:-build}" ;;
  --list) shift; packages "${@:-build}" ;;
  *) install "${@:-build}" ;;
esac
