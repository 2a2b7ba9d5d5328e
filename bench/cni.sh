#!/usr/bin/env bash
# Time one container's ADD and DEL (veth, address from host-local, default route,
# masquerade, one TCP port mapping) with cella-cni vs Debian's containernetworking-plugins
# (bridge + host-local + portmap, chained as a conflist would be), both called exactly as
# the CNI spec says, with the same configuration but for "type".
#
# Everything happens inside a throwaway network namespace used as the "host"; a warm
# container stays attached during the runs, so the numbers are per container on an
# existing bridge. Needs root, iproute2, nftables, util-linux (nsenter),
# containernetworking-plugins and a built cella-cni (CELLA_CNI=path, default
# target/<host triple>/release/cella-cni).
#
#   sudo bench/cni.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-30}
CELLA_CNI=${CELLA_CNI:-target/$(rustc -vV | sed -n 's/^host: //p')/release/cella-cni}
CNI_PATH=${CNI_PATH:-/usr/lib/cni}
[ -x "$CELLA_CNI" ] || { echo "bench/cni.sh: build cella-cni first (cargo build --release -p cella-cni)" >&2; exit 1; }
for p in bridge host-local portmap; do
  [ -x "$CNI_PATH/$p" ] || { echo "bench/cni.sh: $CNI_PATH/$p missing (apt-get install containernetworking-plugins)" >&2; exit 1; }
done

HOST=cnibench-host-$$
TMP=$(mktemp -d)
cleanup() {
  for n in $(ip netns list | awk '{print $1}' | grep "^cnibench-.*-$$\$" || true); do ip netns del "$n" 2>/dev/null || true; done
  ip netns del "$HOST" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
ip netns add "$HOST"
inhost() { nsenter --net="/run/netns/$HOST" "$@"; }
inhost ip link set lo up
now() { date +%s%N; }

conf() { # conf TYPE BRIDGE SUBNET HOSTPORT [PREVRESULT]
  printf '{"cniVersion":"1.0.0","name":"%s","type":"%s","bridge":"%s","isGateway":true,"ipMasq":true,
  "capabilities":{"portMappings":true},"runtimeConfig":{"portMappings":[{"hostPort":%s,"containerPort":80,"protocol":"tcp"}]},
  "ipam":{"type":"host-local","ranges":[[{"subnet":"%s"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"%s/ipam"}%s}' \
    "bench-$1" "$1" "$2" "$4" "$3" "$TMP" "${5:+,\"prevResult\":$5}"
}
cni() { # cni COMMAND PLUGIN NETNS CONFIG
  CNI_COMMAND=$1 CNI_CONTAINERID=$3 CNI_NETNS=/run/netns/$3 CNI_IFNAME=eth0 CNI_PATH=$CNI_PATH \
    inhost "$2" <<<"$4"
}

cella_add() { cni ADD "$CELLA_CNI" "$1" "$(conf cella-cni cbr0 10.88.0.0/16 "$2")" >/dev/null; }
cella_del() { cni DEL "$CELLA_CNI" "$1" "$(conf cella-cni cbr0 10.88.0.0/16 "$2")"; }
ref_add() {
  local res
  res=$(cni ADD "$CNI_PATH/bridge" "$1" "$(conf bridge cni0 10.89.0.0/16 "$2")")
  cni ADD "$CNI_PATH/portmap" "$1" "$(conf portmap cni0 10.89.0.0/16 "$2" "$res")" >/dev/null
  echo "$res" >"$TMP/res-$1"
}
ref_del() {
  cni DEL "$CNI_PATH/portmap" "$1" "$(conf portmap cni0 10.89.0.0/16 "$2" "$(cat "$TMP/res-$1")")" >/dev/null
  cni DEL "$CNI_PATH/bridge" "$1" "$(conf bridge cni0 10.89.0.0/16 "$2")" >/dev/null
}

run() { # run TOOL: prints "add_us del_us" per run
  local tool=$1 warm=cnibench-warm-$1-$$
  ip netns add "$warm"
  "${tool}_add" "$warm" 9999
  for i in $(seq 1 "$RUNS"); do
    local ns=cnibench-c$i-$tool-$$ t0 t1 t2
    ip netns add "$ns"
    t0=$(now); "${tool}_add" "$ns" $((10000 + i)); t1=$(now)
    "${tool}_del" "$ns" $((10000 + i)); t2=$(now)
    ip netns del "$ns"
    echo "$(( (t1 - t0) / 1000 )) $(( (t2 - t1) / 1000 ))"
  done
  "${tool}_del" "$warm" 9999
  ip netns del "$warm"
}

stats() { # median of column $1 (microseconds) -> ms
  awk -v c="$1" '{print $c}' | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f\n", m/1000}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

run cella >"$TMP/cella.txt"
run ref >"$TMP/ref.txt"
ca=$(stats 1 <"$TMP/cella.txt"); cd_=$(stats 2 <"$TMP/cella.txt")
ra=$(stats 1 <"$TMP/ref.txt"); rd=$(stats 2 <"$TMP/ref.txt")
ct=$(awk -v a="$ca" -v b="$cd_" 'BEGIN{print a+b}'); rt=$(awk -v a="$ra" -v b="$rd" 'BEGIN{print a+b}')
echo "One container's ADD and DEL (veth, host-local, route, masquerade, 1 port mapping), $RUNS runs, median ms"
echo
echo "| command | cella-cni | bridge+host-local+portmap | cella-cni/reference |"
echo "|---------|----------:|--------------------------:|--------------------:|"
echo "| ADD     | $ca | $ra | $(ratio "$ca" "$ra") |"
echo "| DEL     | $cd_ | $rd | $(ratio "$cd_" "$rd") |"
echo "| total   | $ct | $rt | $(ratio "$ct" "$rt") |"
