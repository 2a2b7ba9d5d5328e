#!/usr/bin/env bash
# Podman driving cella vs crun vs runc, side by side in one run:
#   (a) `podman run --rm --network none IMG true`: the whole engine round trip
#       (runtime create, start, state, delete plus podman's own work);
#   (b) `podman exec CTR true` into a running container;
#   (c) the runtime's own `exec CTR true` into the same container, without podman.
# Iterations are interleaved across runtimes so each sees the same machine state;
# prints medians in ms and ratios against crun, as a table to paste.
#
# Usage: sudo bench/engines.sh [ITERATIONS]   (default 30)
#
# Debian's crun refuses this host's hybrid cgroup layout, so every runtime is called
# the same way: through a wrapper that runs it in a private mount namespace where an
# empty file hides /sys/fs/cgroup/unified/cgroup.controllers (nothing global changes).
# cella and runc also get a row called directly, without the wrapper.
# Podman uses a private store in a temporary directory (overlay, cgroupfs, file events,
# this host's RLIMIT_NOFILE hard limit of 20000 in default_ulimits).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-30}
for p in podman crun runc busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }
done
cargo build --release --quiet -p cella
cella=$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release/cella

# Short path: podman limits its run root to 50 characters.
work=$(mktemp -d /tmp/cella-eb.XXXXXX)
pm() {
  CONTAINERS_CONF="$work/containers.conf" CONTAINERS_STORAGE_CONF="$work/storage.conf" TMPDIR="$work/tmp" \
    podman --root "$work/graph" --runroot "$work/run" --tmpdir "$work/tmp" \
    --network-config-dir "$work/net" --cgroup-manager cgroupfs --events-backend file "$@"
}
cleanup() {
  pm rm -a -f -t 0 >/dev/null 2>&1 || true
  pm system reset -f >/dev/null 2>&1 || true
  grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  for d in /sys/fs/cgroup/*/cella-bench-$$ /sys/fs/cgroup/cella-bench-$$; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{graph,run,tmp,net,rootfs}
cat > "$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/graph"\nrunroot = "%s/run"\n' "$work" "$work" \
  > "$work/storage.conf"

# The image: a busybox rootfs, imported.
bb=$(command -v busybox)
r=$work/rootfs
mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root}
cp "$bb" "$r/bin/busybox"
for a in $("$bb" --list-full); do
  [ -e "$r/$a" ] || ln -s "$(printf '../%.0s' $(seq 1 "$(tr -cd / <<<"$a" | wc -c)"))bin/busybox" "$r/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$r/etc/passwd"
printf 'root:x:0:\n' > "$r/etc/group"
tar -C "$r" -cf "$work/rootfs.tar" .
pm import -q "$work/rootfs.tar" localhost/bench:latest >/dev/null

# The same wrapper for every runtime (see above).
: > "$work/empty"
wrap() { # wrap NAME BINARY
  cat > "$work/$1" <<EOF
#!/bin/sh
exec unshare -m --propagation private sh -c '
  if [ -e /sys/fs/cgroup/unified/cgroup.controllers ]; then
    mount --bind $work/empty /sys/fs/cgroup/unified/cgroup.controllers
  fi
  exec $2 "\$@"' $1 "\$@"
EOF
  chmod +x "$work/$1"
  echo "$work/$1"
}
declare -A rt=(
  [cella]=$(wrap cella "$cella")
  [crun]=$(wrap crun "$(command -v crun)")
  [runc]=$(wrap runc "$(command -v runc)")
  [cella-direct]=$cella
  [runc-direct]=$(command -v runc)
)
names=(cella crun runc cella-direct runc-direct)
# Each runtime's own binary and state root, for (c).
declare -A bin=([cella]=$cella [crun]=$(command -v crun) [runc]=$(command -v runc)
                [cella-direct]=$cella [runc-direct]=$(command -v runc))
declare -A root=([cella]=/run/cella [crun]=/run/crun [runc]=/run/runc
                 [cella-direct]=/run/cella [runc-direct]=/run/runc)

# Check each works, and start one container per runtime for the exec rows.
declare -A ctr
for k in "${names[@]}"; do
  out=$(pm --runtime "${rt[$k]}" run --rm --network none --cgroup-parent "/cella-bench-$$" \
        localhost/bench:latest echo ok 2>&1) || { echo "runtime $k fails through podman: $out" >&2; exit 1; }
  ctr[$k]=$(pm --runtime "${rt[$k]}" run -d --network none --cgroup-parent "/cella-bench-$$" \
            localhost/bench:latest sleep 100000)
done

now() { date +%s%N; }
declare -A run_t exec_t rexec_t
for ((i = 0; i < n; i++)); do
  for k in "${names[@]}"; do
    t0=$(now)
    pm --runtime "${rt[$k]}" run --rm --network none --cgroup-parent "/cella-bench-$$" \
      localhost/bench:latest true
    t1=$(now)
    pm --runtime "${rt[$k]}" exec "${ctr[$k]}" true
    t2=$(now)
    "${rt[$k]}" --root "${root[$k]}" exec "${ctr[$k]}" true
    t3=$(now)
    run_t[$k]+="$(( (t1 - t0) / 1000 )) "
    exec_t[$k]+="$(( (t2 - t1) / 1000 )) "
    rexec_t[$k]+="$(( (t3 - t2) / 1000 )) "
  done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {m = NR % 2 ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.1f", m / 1000}'; }
echo
echo "$n iterations each, interleaved; medians in ms; ratio = runtime / crun (same wrapper)"
echo "podman $(podman --version | awk '{print $3}'), crun $(crun --version | head -1 | awk '{print $3}'), runc $(runc --version | head -1 | awk '{print $3}')"
echo
printf '| %-12s | %-24s | %-24s | %-24s |\n' runtime "podman run --rm true" "podman exec true" "runtime exec true"
printf '|%s|%s|%s|%s|\n' "--------------" "--------------------------" "--------------------------" "--------------------------"
declare -A m1 m2 m3
for k in "${names[@]}"; do
  m1[$k]=$(median <<<"${run_t[$k]}")
  m2[$k]=$(median <<<"${exec_t[$k]}")
  m3[$k]=$(median <<<"${rexec_t[$k]}")
done
cell() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%8.1f ms (x%.2f)", a, a / b}'; }
for k in "${names[@]}"; do
  printf '| %-12s | %-24s | %-24s | %-24s |\n' "$k" \
    "$(cell "${m1[$k]}" "${m1[crun]}")" "$(cell "${m2[$k]}" "${m2[crun]}")" "$(cell "${m3[$k]}" "${m3[crun]}")"
done
