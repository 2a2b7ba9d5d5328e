#!/usr/bin/env bash
# Container lifecycle latency, cella vs crun vs runc, side by side in one run:
#   (a) create + start + delete of a container running /bin/true
#   (b) run of the same container
#   (c) run of it with a Docker-like seccomp profile (the same JSON for every runtime)
# Prints medians, ratios against crun, and each runtime's peak RSS.
#
# Usage: sudo bench/lifecycle.sh [ITERATIONS]   (default 200)
#
# Debian's crun refuses this host's hybrid cgroup layout, so every runtime runs the
# same way: in a private mount namespace where an empty file hides
# /sys/fs/cgroup/unified/cgroup.controllers (nothing global changes).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200}
for p in crun runc busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }
done
cargo build --release --quiet -p cella
cella=$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release/cella
work=$(mktemp -d /tmp/cella-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
gcc -O2 -o "$work/rss-run" bench/rss-run.c
python3 bench/lifecycle.py --make-bundle "$work/bundle" --cella "$cella" \
  --seccomp crates/cella-seccomp/tests/data/docker-like.json
: > "$work/empty"
# State roots on a tmpfs, as /run is on real hosts: on a disk filesystem every
# rename-over of a state file waits for a data flush (ext4 auto_da_alloc).
mkdir -p "$work/state"
run_private() {
  unshare -m --propagation private sh -c '
    if [ -e /sys/fs/cgroup/unified/cgroup.controllers ]; then
      mount --bind "$1" /sys/fs/cgroup/unified/cgroup.controllers
    fi
    mount -t tmpfs -o mode=0700 tmpfs "$2"
    shift 2; exec "$@"' sh "$work/empty" "$work/state" "$@"
}
run_private python3 bench/lifecycle.py --bundle "$work/bundle" --work "$work/state" -n "$n" --rss-run "$work/rss-run" \
  cella="$cella" crun="$(command -v crun)" runc="$(command -v runc)"
