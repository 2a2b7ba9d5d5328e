#!/usr/bin/env bash
# cella ns ls vs lsns on a host with many namespaces.
#
# Makes N processes (default 100), each in fresh uts+ipc+net+mnt+cgroup namespaces
# (5 x N = 500 namespaces), times `cella ns ls` against `lsns` (table and JSON output)
# with hyperfine (or a plain loop when it is missing), prints a Markdown table with the
# medians and the ratio, and kills every process it made on exit.
#
# Run as root from the repository root:  sudo bench/ns-ls.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."

n=${1:-100}
runs=${RUNS:-30}
if [ "$(id -u)" != 0 ]; then
  echo "bench/ns-ls.sh: needs root (it creates namespaces): sudo bench/ns-ls.sh" >&2
  exit 1
fi
cargo build --release -q -p cella
cella=$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release/cella

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq "$n"); do
  unshare --uts --ipc --net --mount --cgroup sleep 3600 &
  pids+=($!)
done
# Wait until every process has exec'd sleep inside its namespaces.
for p in "${pids[@]}"; do
  until [ "$(cat /proc/"$p"/comm 2>/dev/null)" = sleep ]; do sleep 0.01; done
done
total=$("$cella" ns ls --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["namespaces"]))')
echo "namespaces on the host: $total (made by the bench: $((n * 5))), processes: $(ls -d /proc/[0-9]* | wc -l)"

median_ms() { # command... -> median wall time in ms over $runs runs (loop fallback)
  python3 - "$runs" "$@" <<'PY'
import subprocess, sys, time, statistics
runs, cmd = int(sys.argv[1]), sys.argv[2:]
t = []
for _ in range(runs):
    s = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
    t.append((time.perf_counter() - s) * 1000)
print(f"{statistics.median(t):.2f}")
PY
}

declare -A med
cases=("lsns" "$cella ns ls" "lsns --json" "$cella ns ls --json" "lsns --tree=owner" "$cella ns ls --tree")
if command -v hyperfine >/dev/null; then
  json=$(mktemp)
  hyperfine -N --warmup 3 --runs "$runs" --export-json "$json" "${cases[@]}" >/dev/null
  while IFS=$'\t' read -r cmd ms; do med[$cmd]=$ms; done < <(python3 -c '
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    print(r["command"] + "\t" + format(r["median"] * 1000, ".2f"))' "$json")
  rm -f "$json"
  how="hyperfine, $runs runs, median"
else
  for c in "${cases[@]}"; do med[$c]=$(median_ms $c); done
  how="loop, $runs runs, median"
fi

echo
echo "| listing ($total namespaces) | lsns (ms) | cella ns ls (ms) | lsns / cella |"
echo "|---|---:|---:|---:|"
row() {
  python3 -c 'import sys; a,b=float(sys.argv[2]),float(sys.argv[3]); print(f"| {sys.argv[1]} | {a:.2f} | {b:.2f} | {a/b:.2f}x |")' "$1" "$2" "$3"
}
row "table" "${med[lsns]}" "${med[$cella ns ls]}"
row "JSON" "${med[lsns --json]}" "${med[$cella ns ls --json]}"
row "tree (owner)" "${med[lsns --tree=owner]}" "${med[$cella ns ls --tree]}"
echo
echo "($how; util-linux $(lsns --version | awk '{print $NF}'))"
