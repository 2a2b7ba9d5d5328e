#!/usr/bin/env bash
# Time to set up and tear down one container's bridge network (veth, address from IPAM,
# default route, masquerade, one TCP port forward): cella vs Debian's
# containernetworking-plugins (bridge + host-local + portmap, called as the CNI spec says).
#
# Everything happens inside a throwaway network namespace used as the "host"; nothing
# outside it changes. A warm container stays attached during the runs, so the numbers are
# per container on an existing bridge. Needs root, iproute2, nftables, util-linux (nsenter),
# containernetworking-plugins and a built cella (CELLA=path, default target/<host triple>/release/cella).
#
#   sudo bench/net.sh [RUNS]
#
# The same with a dual-stack network (an IPv4 and an IPv6 subnet: both addresses, both
# default routes, masquerade and the forward in both families); skip with SKIP_V6=1.
#
# Then `cella run -d` + `cella delete` of a busybox bundle (busybox-static), without a
# network namespace's network and with `org.cella.net.network` (the same network, via
# the runtime), to show what the network adds to a container's lifecycle; skip with
# SKIP_RUN=1.
#
# Then, for SCALE (default "1 50 250") containers on one bridge, the total time to set them
# all up one after the other, and to tear them all down, to show how the cost grows.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-30}
CELLA=${CELLA:-target/$(rustc -vV | sed -n 's/^host: //p')/release/cella}
CNI_PATH=${CNI_PATH:-/usr/lib/cni}
[ -x "$CELLA" ] || { echo "bench/net.sh: build cella first (cargo build --release)" >&2; exit 1; }
for p in bridge host-local portmap; do
  [ -x "$CNI_PATH/$p" ] || { echo "bench/net.sh: $CNI_PATH/$p missing (apt-get install containernetworking-plugins)" >&2; exit 1; }
done

HOST=cbench-host-$$
TMP=$(mktemp -d)                        # leases (cella IPAM, host-local): on disk
RUNDIR=$(mktemp -d -p /run cella-bench.XXXXXX)  # cella's attachment records: tmpfs, as /run/cella/net
cleanup() {
  for n in $(ip netns list | awk '{print $1}' | grep "^cbench-.*-$$\$" || true); do ip netns del "$n" 2>/dev/null || true; done
  ip netns del "$HOST" 2>/dev/null || true
  rm -rf "$TMP" "$RUNDIR"
}
trap cleanup EXIT
ip netns add "$HOST"
inhost() { nsenter --net="/run/netns/$HOST" "$@"; }
inhost ip link set lo up

now() { date +%s%N; }

# ---- cella ----
cella_attach() {
  inhost "$CELLA" net attach --netns "$1" --bridge cbr0 --subnet 10.88.0.0/16 \
    --publish "$2:80/tcp" --masquerade --state-dir "$RUNDIR/state" --ipam-dir "$TMP/cella-ipam" >/dev/null
}
cella_detach() {
  inhost "$CELLA" net detach --netns "$1" --state-dir "$RUNDIR/state" --ipam-dir "$TMP/cella-ipam"
}
cella6_attach() {
  inhost "$CELLA" net attach --netns "$1" --bridge cbr6 --subnet 10.87.0.0/16 --subnet fd00:87::/64 \
    --publish "$2:80/tcp" --masquerade --state-dir "$RUNDIR/state" --ipam-dir "$TMP/cella-ipam" >/dev/null
}
cella6_detach() { cella_detach "$@"; }

# ---- CNI reference plugins ----
BRIDGE_CONF='{"cniVersion":"1.0.0","name":"bench","type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.89.0.0/16"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"'"$TMP"'/cni-ipam"}}'
cni() { # cni COMMAND PLUGIN NETNS CONFIG
  CNI_COMMAND=$1 CNI_CONTAINERID=$3 CNI_NETNS=/run/netns/$3 CNI_IFNAME=eth0 CNI_PATH=$CNI_PATH \
    inhost "$CNI_PATH/$2" <<<"$4"
}
portmap_conf() { # portmap_conf HOSTPORT PREVRESULT
  printf '{"cniVersion":"1.0.0","name":"bench","type":"portmap","capabilities":{"portMappings":true},
  "runtimeConfig":{"portMappings":[{"hostPort":%s,"containerPort":80,"protocol":"tcp"}]},"prevResult":%s}' "$1" "$2"
}
cni_attach() {
  local res
  res=$(cni ADD bridge "$1" "$BRIDGE_CONF")
  cni ADD portmap "$1" "$(portmap_conf "$2" "$res")" >/dev/null
  echo "$res" >"$TMP/res-$1"
}
cni_detach() {
  cni DEL portmap "$1" "$(portmap_conf "$2" "$(cat "$TMP/res-$1")")" >/dev/null
  cni DEL bridge "$1" "$BRIDGE_CONF" >/dev/null
}
BRIDGE_CONF6='{"cniVersion":"1.0.0","name":"bench6","type":"bridge","bridge":"cni6","isGateway":true,"ipMasq":true,"hairpinMode":true,
 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.86.0.0/16"}],[{"subnet":"fd00:86::/64"}]],
 "routes":[{"dst":"0.0.0.0/0"},{"dst":"::/0"}],"dataDir":"'"$TMP"'/cni-ipam"}}'
cni6_attach() {
  local res
  res=$(cni ADD bridge "$1" "$BRIDGE_CONF6")
  cni ADD portmap "$1" "$(portmap_conf "$2" "$res")" >/dev/null
  echo "$res" >"$TMP/res-$1"
}
cni6_detach() {
  cni DEL portmap "$1" "$(portmap_conf "$2" "$(cat "$TMP/res-$1")")" >/dev/null
  cni DEL bridge "$1" "$BRIDGE_CONF6" >/dev/null
}

# run TOOL: prints "setup_ms teardown_ms" per run
run() {
  local tool=$1 warm=cbench-warm-$1-$$
  ip netns add "$warm"
  "${tool}_attach" "$warm" 9999
  for i in $(seq 1 "$RUNS"); do
    local ns=cbench-c$i-$tool-$$
    ip netns add "$ns"
    local t0 t1 t2
    t0=$(now); "${tool}_attach" "$ns" $((10000 + i)); t1=$(now)
    "${tool}_detach" "$ns" $((10000 + i)); t2=$(now)
    ip netns del "$ns"
    echo "$(( (t1 - t0) / 1000 )) $(( (t2 - t1) / 1000 ))"
  done
  "${tool}_detach" "$warm" 9999
  ip netns del "$warm"
}

stats() { # median and mean of column $1 (microseconds) -> ms
  awk -v c="$1" '{print $c}' | sort -n | awk '{a[NR]=$1; s+=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f %.2f\n", m/1000, s/NR/1000}'
}

if [ -z "${SKIP_SINGLE:-}" ]; then
run cella >"$TMP/cella.txt"
run cni >"$TMP/cni.txt"

read -r cs_med cs_mean < <(stats 1 <"$TMP/cella.txt")
read -r ct_med ct_mean < <(stats 2 <"$TMP/cella.txt")
read -r ns_med ns_mean < <(stats 1 <"$TMP/cni.txt")
read -r nt_med nt_mean < <(stats 2 <"$TMP/cni.txt")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
echo "One container's bridge network (veth, IPAM, route, masquerade, 1 port forward), $RUNS runs, ms"
echo
echo "| step     | cella median | cella mean | CNI bridge+portmap median | CNI mean | cella/CNI (median) |"
echo "|----------|-------------:|-----------:|--------------------------:|---------:|-------------------:|"
echo "| setup    | $cs_med | $cs_mean | $ns_med | $ns_mean | $(ratio "$cs_med" "$ns_med") |"
echo "| teardown | $ct_med | $ct_mean | $nt_med | $nt_mean | $(ratio "$ct_med" "$nt_med") |"
tot_c=$(awk -v a="$cs_med" -v b="$ct_med" 'BEGIN{print a+b}')
tot_n=$(awk -v a="$ns_med" -v b="$nt_med" 'BEGIN{print a+b}')
echo "| total    | $tot_c | | $tot_n | | $(ratio "$tot_c" "$tot_n") |"
fi

if [ -z "${SKIP_SINGLE:-}" ] && [ -z "${SKIP_V6:-}" ]; then
run cella6 >"$TMP/cella6.txt"
run cni6 >"$TMP/cni6.txt"
read -r cs_med cs_mean < <(stats 1 <"$TMP/cella6.txt")
read -r ct_med ct_mean < <(stats 2 <"$TMP/cella6.txt")
read -r ns_med ns_mean < <(stats 1 <"$TMP/cni6.txt")
read -r nt_med nt_mean < <(stats 2 <"$TMP/cni6.txt")
echo
echo "Dual stack (IPv4 + IPv6 subnet, masquerade and the forward in both families), $RUNS runs, ms"
echo
echo "| step     | cella median | cella mean | CNI bridge+portmap median | CNI mean | cella/CNI (median) |"
echo "|----------|-------------:|-----------:|--------------------------:|---------:|-------------------:|"
echo "| setup    | $cs_med | $cs_mean | $ns_med | $ns_mean | $(ratio "$cs_med" "$ns_med") |"
echo "| teardown | $ct_med | $ct_mean | $nt_med | $nt_mean | $(ratio "$ct_med" "$nt_med") |"
tot_c=$(awk -v a="$cs_med" -v b="$ct_med" 'BEGIN{print a+b}')
tot_n=$(awk -v a="$ns_med" -v b="$nt_med" 'BEGIN{print a+b}')
echo "| total    | $tot_c | | $tot_n | | $(ratio "$tot_c" "$tot_n") |"
fi

# ---- cella run with and without a network ----
if [ -z "${SKIP_RUN:-}" ]; then
BB=$(command -v busybox || true)
[ -n "$BB" ] || { echo "bench/net.sh: busybox missing (apt-get install busybox-static)" >&2; exit 1; }
make_bundle() { # make_bundle DIR [NETWORK]
  mkdir -p "$1/rootfs/bin" "$1/rootfs/proc" "$1/rootfs/sys" "$1/rootfs/dev" "$1/rootfs/etc" "$1/rootfs/tmp"
  cp "$BB" "$1/rootfs/bin/busybox"
  ln -sf busybox "$1/rootfs/bin/sh"; ln -sf busybox "$1/rootfs/bin/sleep"
  "$CELLA" spec --bundle "$1"
  python3 - "$1/config.json" "${2:-}" <<'PY'
import json, sys
p, net = sys.argv[1], sys.argv[2]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["sleep", "1000"]
if net:
    c["annotations"] = {"org.cella.net.network": net}
json.dump(c, open(p, "w"))
PY
}
export CELLA_NET_STATE_DIR="$RUNDIR/state" CELLA_NET_IPAM_DIR="$TMP/cella-ipam" CELLA_NET_NETWORK_DIR="$TMP/networks"
inhost "$CELLA" net network create benchnet --subnet 10.85.0.0/16 --bridge cbrr --masquerade \
  --network-dir "$TMP/networks" --ipam-dir "$TMP/cella-ipam" --state-dir "$RUNDIR/state"
make_bundle "$TMP/b-plain"
make_bundle "$TMP/b-net" benchnet
lifecycle() { # lifecycle BUNDLE -> "run_ms delete_ms" per run
  local i t0 t1 t2
  for i in $(seq 1 "$RUNS"); do
    t0=$(now); inhost "$CELLA" --root "$RUNDIR/root" run -d --bundle "$1" "b$i" </dev/null >/dev/null 2>&1; t1=$(now)
    inhost "$CELLA" --root "$RUNDIR/root" delete --force "b$i"; t2=$(now)
    echo "$(( (t1 - t0) / 1000 )) $(( (t2 - t1) / 1000 ))"
  done
}
# A warm container keeps the bridge, as above.
inhost "$CELLA" --root "$RUNDIR/root" run -d --bundle "$TMP/b-net" warm </dev/null >/dev/null 2>&1
lifecycle "$TMP/b-plain" >"$TMP/run-plain.txt"
lifecycle "$TMP/b-net" >"$TMP/run-net.txt"
inhost "$CELLA" --root "$RUNDIR/root" delete --force warm
read -r pr_med _ < <(stats 1 <"$TMP/run-plain.txt")
read -r pd_med _ < <(stats 2 <"$TMP/run-plain.txt")
read -r nr_med _ < <(stats 1 <"$TMP/run-net.txt")
read -r nd_med _ < <(stats 2 <"$TMP/run-net.txt")
echo
echo "cella run -d / delete --force of a busybox bundle (new network namespace), $RUNS runs, median ms"
echo
echo "| step            | no network | org.cella.net.network | added by the network |"
echo "|-----------------|-----------:|----------------------:|---------------------:|"
echo "| run -d          | $pr_med | $nr_med | $(awk -v a="$nr_med" -v b="$pr_med" 'BEGIN{printf "%.2f", a-b}') |"
echo "| delete --force  | $pd_med | $nd_med | $(awk -v a="$nd_med" -v b="$pd_med" 'BEGIN{printf "%.2f", a-b}') |"
fi

# ---- scaling: N containers on one bridge ----
SCALE=${SCALE:-"1 50 250"}
TOOLS=${TOOLS:-"cella cni"}
scale() { # scale TOOL N -> "setup_ms teardown_ms"
  local tool=$1 n=$2 i t0 t1 t2
  for i in $(seq 1 "$n"); do ip netns add "cbench-s$i-$tool-$$"; done
  t0=$(now)
  for i in $(seq 1 "$n"); do "${tool}_attach" "cbench-s$i-$tool-$$" $((20000 + i)); done
  t1=$(now)
  for i in $(seq 1 "$n"); do "${tool}_detach" "cbench-s$i-$tool-$$" $((20000 + i)); done
  t2=$(now)
  for i in $(seq 1 "$n"); do ip netns del "cbench-s$i-$tool-$$"; done
  awk -v a=$(( (t1 - t0) / 1000 )) -v b=$(( (t2 - t1) / 1000 )) 'BEGIN {printf "%.0f %.0f\n", a/1000, b/1000}'
}
echo
echo "N containers on one bridge, one after the other: total ms (per container)"
echo
echo "| N | cella setup | cella teardown | CNI setup | CNI teardown | setup cella/CNI |"
echo "|--:|------------:|---------------:|----------:|-------------:|----------------:|"
for n in $SCALE; do
  c_up=0 c_down=0 n_up=0 n_down=0
  [[ " $TOOLS " == *" cella "* ]] && read -r c_up c_down < <(scale cella "$n")
  [[ " $TOOLS " == *" cni "* ]] && read -r n_up n_down < <(scale cni "$n")
  per() { awk -v t="$1" -v n="$n" 'BEGIN {printf "%.0f (%.1f)", t, t/n}'; }
  echo "| $n | $(per "$c_up") | $(per "$c_down") | $(per "$n_up") | $(per "$n_down") | $( [ "$n_up" != 0 ] && ratio "$c_up" "$n_up") |"
done
