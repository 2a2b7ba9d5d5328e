#!/bin/bash
# Seccomp benchmark: cella's pure-Rust compiler vs libseccomp on a Docker-like profile.
#   (a) time to build the filter program (cella compile() vs libseccomp rule adds + export)
#   (b) per-syscall cost with the filter installed: no filter, cella's, libseccomp's
# Needs: gcc, libseccomp-dev, python3-seccomp (Debian). Usage: bench/seccomp.sh [iterations]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000000}
PROFILE=crates/cella-seccomp/tests/data/docker-like.json
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cargo build -q --release -p cella-seccomp --example seccomp_bench
BIN=target/$(rustc -vV | sed -n 's/^host: //p')/release/examples/seccomp_bench

# libseccomp's program for the same profile (runc's way of adding rules).
/usr/bin/python3 crates/cella-seccomp/tests/data/libseccomp_export.py "$PROFILE" "$WORK/libseccomp.bpf" >/dev/null

# A C program that builds the same filter with libseccomp, as runc/crun do, N times.
/usr/bin/python3 - "$PROFILE" > "$WORK/build.c" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
act = {"SCMP_ACT_ALLOW": "SCMP_ACT_ALLOW", "SCMP_ACT_KILL": "SCMP_ACT_KILL",
       "SCMP_ACT_KILL_THREAD": "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS": "SCMP_ACT_KILL_PROCESS",
       "SCMP_ACT_TRAP": "SCMP_ACT_TRAP", "SCMP_ACT_LOG": "SCMP_ACT_LOG"}
def a(name, e):
    if name == "SCMP_ACT_ERRNO": return f"SCMP_ACT_ERRNO({e})"
    if name == "SCMP_ACT_TRACE": return f"SCMP_ACT_TRACE({e})"
    return act[name]
d = p.get("defaultErrnoRet", 1)
print('#include <seccomp.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <time.h>\n#include <fcntl.h>\n#include <unistd.h>')
print('static int all_abis;\nstatic void build(int out) {')
print(f'  scmp_filter_ctx c = seccomp_init({a(p["defaultAction"], d)});')
print('  if (all_abis) { seccomp_arch_add(c, SCMP_ARCH_X86); seccomp_arch_add(c, SCMP_ARCH_X32); }')
for sc in p["syscalls"]:
    e = sc.get("errnoRet", 1)
    if (sc["action"], e) == (p["defaultAction"], d): continue
    conds = ", ".join(f'SCMP_CMP({x["index"]}, {x["op"]}, {x["value"]}ULL, {x.get("valueTwo", 0)}ULL)' for x in sc.get("args", []))
    for n in sc["names"]:
        print(f'  {{ int nr = seccomp_syscall_resolve_name("{n}"); if (nr != __NR_SCMP_ERROR) '
              f'seccomp_rule_add(c, {a(sc["action"], e)}, nr, {len(sc.get("args", []))}{", " + conds if conds else ""}); }}')
print('  seccomp_export_bpf(c, out); seccomp_release(c);\n}')
print('''int main(int argc, char **argv) {
  long n = atol(argv[1]); int out = open("/dev/null", O_WRONLY); all_abis = atoi(argv[2]);
  struct timespec a, b; build(out);
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < n; i++) build(out);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("libseccomp build+export (%s): %.1f us\\n", all_abis ? "x86_64+x86+x32" : "x86_64 only", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n / 1e3);
  return 0;
}''')
PY
gcc -O2 -o "$WORK/build" "$WORK/build.c" -lseccomp

/usr/bin/python3 -c 'import json, sys; p = json.load(open(sys.argv[1])); p.pop("architectures"); json.dump(p, open(sys.argv[2], "w"))' "$PROFILE" "$WORK/native.json"

echo "## (a) building the filter program (Docker-like profile)"
echo "x86_64 + x86 + x32:"
"$BIN" compile "$PROFILE" 2000
"$WORK/build" 200 1
echo "x86_64 only:"
"$BIN" compile "$WORK/native.json" 2000
"$WORK/build" 500 0
echo "instructions: libseccomp $(( $(stat -c %s "$WORK/libseccomp.bpf") / 8 ))"
echo
echo "## (b) ns per syscall with the filter installed ($N calls each, best of 3 runs)"
printf '| filter | getpid (plain allow) | personality (arg-checked allow) | setns (denied by rule) | lookup_dcookie (default deny) |\n|---|---|---|---|---|\n'
for mode in none cella cella-nocache "$WORK/libseccomp.bpf"; do
  best=""
  for _ in 1 2 3; do
    line=$("$BIN" syscalls "$PROFILE" "$mode" "$N")
    best=$(printf '%s\n%s\n' "$best" "$line" | awk 'NF==5 { for (i=2;i<=5;i++) if (!(i in m) || $i < m[i]) m[i]=$i } END { printf "x %s %s %s %s", m[2], m[3], m[4], m[5] }')
  done
  name=$mode; [ "$mode" = "$WORK/libseccomp.bpf" ] && name=libseccomp
  echo "$best" | awk -v n="$name" '{ printf "| %s | %.1f | %.1f | %.1f | %.1f |\n", n, $2, $3, $4, $5 }'
done
