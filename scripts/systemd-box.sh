#!/usr/bin/env bash
# systemd-box.sh: boots a real systemd, as PID 1 of its own namespaces, on a copy-on-write
# overlay of this machine's root, so that the service units can be started, reloaded and
# stopped by systemctl on a machine (like this one) whose PID 1 is not systemd. Nothing the box
# installs or writes reaches the machine: writes land in DIR/upper; the box has its own PID,
# mount, network, UTS and IPC namespaces (loopback only).
#
#   systemd-box.sh up DIR         boot; prints the host PID of the box's systemd once
#                                 `systemctl is-system-running` answers (at most 60 s)
#   systemd-box.sh run PID CMD... run CMD inside the box (its root, namespaces, cwd /)
#   systemd-box.sh down PID       power the box off (at most 20 s, then SIGKILL); its mounts
#                                 go with its mount namespace
#
# Boots basic.target, not multi-user.target: the machine's own enabled services stay down.
# Needs root, unshare, nsenter, overlayfs and systemd (Debian's systemd package).
set -eu

# Inside the box, the box's own commands: the caller's PATH may name directories of this
# machine that the box does not have (the specs run with a PATH of their own under /tmp).
BOX_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

die() { echo "systemd-box: $*" >&2; exit 1; }

boot() { # inside: unshare --pid --mount --net --uts --ipc --fork (we are PID 1 here)
  local dir=$1 r=$1/root
  mount --make-rprivate /
  mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$r"
  mount -t proc proc "$r/proc"
  mount -t sysfs -o ro sysfs "$r/sys"
  mount -t tmpfs -o mode=755 tmpfs "$r/dev"
  local d
  for d in null zero full random urandom tty; do
    touch "$r/dev/$d"; mount --bind "/dev/$d" "$r/dev/$d"
  done
  touch "$r/dev/console"; mount --bind "$dir/console.log" "$r/dev/console"
  mkdir -p "$r/dev/pts" "$r/dev/shm"
  mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
  ln -sf pts/ptmx "$r/dev/ptmx"
  for d in run tmp; do mount -t tmpfs -o mode=1777 tmpfs "$r/$d"; done
  chmod 755 "$r/run"
  hostname tunnels-box
  cd "$r"
  exec chroot "$r" /usr/bin/env -i PATH=$BOX_PATH container=systemd-box /lib/systemd/systemd \
    --unit=basic.target --log-target=console
}

in_box() {
  local pid=$1
  shift
  nsenter -t "$pid" -m -p -n -u -i -r -w /usr/bin/env PATH=$BOX_PATH "$@"
}

case ${1:-} in
  up)
    [ $# = 2 ] || die "usage: up DIR"
    [ "$(id -u)" = 0 ] || die "needs root"
    dir=$(realpath "$2")
    mkdir -p "$dir/upper" "$dir/work" "$dir/root"
    : >"$dir/console.log"
    unshare --pid --mount --net --uts --ipc --fork "$0" boot "$dir" </dev/null \
      >"$dir/boot.log" 2>&1 &
    outer=$!
    pid=
    for _ in $(seq 600); do # 60 s
      pid=$(pgrep -P "$outer" -x systemd || true)
      if [ -n "$pid" ]; then
        state=$(in_box "$pid" systemctl is-system-running 2>/dev/null || true)
        case $state in running | degraded) echo "$pid"; exit 0 ;; esac
      fi
      kill -0 "$outer" 2>/dev/null || break
      sleep 0.1
    done
    cat "$dir/boot.log" "$dir/console.log" >&2
    [ -z "$pid" ] || kill -9 "$pid" 2>/dev/null || true
    die "systemd did not come up (state: ${state:-no systemd})"
    ;;
  boot) boot "$2" ;;
  run)
    [ $# -ge 3 ] || die "usage: run PID CMD..."
    pid=$2; shift 2
    in_box "$pid" "$@"
    ;;
  down)
    [ $# = 2 ] || die "usage: down PID"
    pid=$2
    in_box "$pid" systemctl poweroff 2>/dev/null || true
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    ;;
  *) die "usage: up DIR | run PID CMD... | down PID" ;;
esac
