#!/bin/sh
# Per-run overhead of `cella sandbox -- /bin/true` against bubblewrap (comparable
# namespaces: --unshare-all --ro-bind / / --dev /dev --proc /proc) and firejail --quiet,
# side by side (medians and ratios), then the throughput of a 200-submission batch.
#
#   bench/sandbox.sh [RUNS]        (root; builds cella in release mode first)
#
# Timed by python3 (posix_spawn + waitpid), the commands interleaved round by round. Run it
# on a quiet machine: every figure is a median, but a loaded 2-core box moves them.
set -eu
RUNS=${1:-100}
cd "$(dirname "$0")/.."
cargo build --release -p cella >/dev/null 2>&1 || cargo build --release -p cella
CELLA=$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/release/cella
[ "$(id -u)" = 0 ] || { echo "bench/sandbox.sh: run as root" >&2; exit 1; }

# Not under /tmp: the sandbox has a private /tmp, and the batch's programs must be visible.
WORK=$(mktemp -d "$PWD/target/sandbox-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

# name|command
cat > "$WORK/cases" <<EOF
cella sandbox|$CELLA sandbox -- /bin/true
cella sandbox (memory+pids+cpu limits)|$CELLA sandbox --memory 256M --pids 64 --cpu-time 5 -- /bin/true
cella sandbox --seccomp unconfined|$CELLA sandbox --seccomp unconfined -- /bin/true
bwrap|bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc /bin/true
EOF
# firejail is measured in rounds of its own, after the others: at ~100 ms and a dozen
# processes per run it loads the machine enough to distort whatever runs next to it.
if command -v firejail >/dev/null 2>&1; then
    echo "firejail --quiet|firejail --quiet /bin/true" > "$WORK/cases-firejail"
else
    echo "(firejail is not installed: apt-get install firejail)" >&2
fi
command -v bwrap >/dev/null 2>&1 || { echo "bwrap is not installed (apt-get install bubblewrap)" >&2; exit 1; }

# Rounds interleave the commands in a shuffled order, so a load change on a shared
# machine hits all of them alike (hyperfine would run each command's batch in turn).
cat > "$WORK/runner.py" <<'EOF'
import json, os, random, shlex, sys, time
cases = [l.rstrip("\n").split("|", 1) for l in open(sys.argv[1]) if "|" in l]
runs = int(sys.argv[2])
devnull = os.open(os.devnull, os.O_RDWR)
def once(argv):
    t = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ,
                          file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1),
                                        (os.POSIX_SPAWN_DUP2, devnull, 2)])
    os.waitpid(pid, 0)
    return time.perf_counter() - t
argvs = [(name, shlex.split(cmd)) for name, cmd in cases]
times = {name: [] for name, _ in argvs}
for _ in range(5):
    for name, argv in argvs:
        once(argv)
for _ in range(runs):
    order = argvs[:]
    random.shuffle(order)
    for name, argv in order:
        times[name].append(once(argv))
json.dump({"results": [{"command": n, "times": times[n]} for n, _ in argvs]},
          open(sys.argv[3], "w"))
EOF
python3 "$WORK/runner.py" "$WORK/cases" "$RUNS" "$WORK/runs.json"
if [ -f "$WORK/cases-firejail" ]; then
    python3 "$WORK/runner.py" "$WORK/cases-firejail" "$RUNS" "$WORK/runs-firejail.json"
fi

python3 - "$WORK/runs.json" "$WORK/runs-firejail.json" <<'EOF'
import json, os, statistics, sys
res = json.load(open(sys.argv[1]))["results"]
if os.path.exists(sys.argv[2]):
    res += json.load(open(sys.argv[2]))["results"]
med = {r["command"]: statistics.median(r["times"]) * 1000 for r in res}
base = med.get("bwrap")
print(f"| {'per run: /bin/true':40} | {'median ms':>9} | {'min ms':>7} | {'vs bwrap':>8} |")
print(f"|{'-'*42}|{'-'*11}|{'-'*9}|{'-'*10}|")
for r in res:
    m = med[r["command"]]
    ratio = f"{m / base:.2f}x" if base else "-"
    print(f"| {r['command']:40} | {m:9.2f} | {min(r['times'])*1000:7.2f} | {ratio:>8} |")
EOF

# A 200-submission batch: a small C program, half of them OK, a quarter TLE (busy loop,
# 0.2 s CPU), a quarter SV (a denied syscall), with memory, pids and wall limits.
cat > "$WORK/ok.c" <<'EOF'
#include <stdio.h>
int main(void) { long s = 0; for (long i = 0; i < 1000000; i++) s += i; printf("%ld\n", s); return 0; }
EOF
cat > "$WORK/spin.c" <<'EOF'
int main(void) { for (;;) {} }
EOF
cat > "$WORK/sv.c" <<'EOF'
#include <sys/mount.h>
int main(void) { return mount("none", "/tmp", "tmpfs", 0, 0); }
EOF
for p in ok spin sv; do gcc -O1 -o "$WORK/$p" "$WORK/$p.c"; done
chmod 755 "$WORK" "$WORK/ok" "$WORK/spin" "$WORK/sv"
python3 - "$WORK" <<'EOF'
import json, sys
w = sys.argv[1]
with open(f"{w}/manifest.jsonl", "w") as f:
    for i in range(200):
        prog = "spin" if i % 4 == 1 else "sv" if i % 4 == 3 else "ok"
        f.write(json.dumps({"id": f"s{i}", "command": [f"{w}/{prog}"],
                            "limits": {"cpu_time": 0.2}}) + "\n")
EOF
start=$(python3 -c 'import time; print(time.time())')
"$CELLA" sandbox --batch "$WORK/manifest.jsonl" --memory 128M --pids 64 --wall-time 5 \
    --result "$WORK/results.jsonl" || echo "(some submissions got IE: see below)" >&2
end=$(python3 -c 'import time; print(time.time())')
python3 - "$WORK/results.jsonl" "$start" "$end" <<'EOF'
import collections, json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
secs = float(sys.argv[3]) - float(sys.argv[2])
tally = collections.Counter(l["status"] for l in lines)
print()
print(f"batch: {len(lines)} submissions in {secs:.2f} s = {len(lines) / secs:.1f} per second "
      f"(--jobs = CPUs); verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
EOF
