#!/usr/bin/env bash
# test.sh: every spec under LuaJIT, ending with the line "N passed, N failed".
#   scripts/test.sh              the normal build (build/)
#   SAN=1 scripts/test.sh        the engine and tools built with ASan + UBSan (build-san/); any
#                                sanitizer report, leaks at exit included, fails the run
# Extra arguments go to busted (e.g. spec/e2e_spec.lua, --filter=...).
set -u
cd "$(dirname "$0")/.."
scripts/deps.sh test
export TUNNELS_ROOT=$PWD
if [ "${SAN:-0}" = 1 ]; then
  make -s BUILD=build-san OPT="-O1 -g -fno-omit-frame-pointer" \
    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all || exit 1
  make -s SAN= all || exit 1   # the FFI specs load build/libtunnels_pure.so into LuaJIT
  export TUNNELS_BUILD=$PWD/build-san
  sandir=$(mktemp -d /tmp/tunnels-san.XXXXXX)
  export ASAN_OPTIONS="log_path=$sandir/asan:detect_leaks=1:abort_on_error=0"
  export UBSAN_OPTIONS="log_path=$sandir/ubsan:print_stacktrace=1"
else
  make -s all || exit 1
fi
out=$(mktemp /tmp/tunnels-test.XXXXXX)
if [ $# -eq 0 ]; then set -- spec/; fi
# The specs see only the commands the test group's packages install, as on a fresh machine
# (spec/deps_spec.lua); the machine's own PATH stays known to that spec.
export TUNNELS_FULL_PATH=$PATH
path=$(scripts/deps.sh --path test) || exit 1
PATH=$path busted --lua=luajit -o TAP "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
rm -rf "$path"
passed=$(grep -a '^ok ' "$out" | grep -vc '# SKIP')
skipped=$(grep -a '^ok ' "$out" | grep -c '# SKIP')
failed=$(grep -ac '^not ok ' "$out")
if [ "${SAN:-0}" = 1 ] && [ -n "$(ls -A "$sandir" 2>/dev/null)" ]; then
  echo "sanitizer reports:"
  for f in "$sandir"/*; do echo "== $f"; head -60 "$f"; done
  failed=$((failed + $(ls "$sandir" | wc -l)))
fi
rm -f "$out"
[ "$skipped" -gt 0 ] && echo "$skipped skipped: they need root"
echo "$passed passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
