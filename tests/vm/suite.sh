#!/bin/sh
# The cgroup suite run inside the pure cgroup-v2 VM (tests/vm/init starts it; the host
# test tests/tests/pure_v2_vm.rs reads its output). Every check prints one line
#   RESULT <name> PASS|FAIL <detail>
# and the host asserts each expected name PASSed. It drives the real runtime commands
# (`cella create/start/run/state/ps/kill/delete`) on busybox bundles and reads back,
# from the host side of the VM and from inside the container, what landed where.

CELLA="/vm/cella --root /run/cella"
ROOTFS=/vm/rootfs
CG=/sys/fs/cgroup
B=/run/bundles
mkdir -p "$B"

. /vm/lib.sh

# --- the machine itself -------------------------------------------------------------
if grep -q ' cgroup ' /proc/mounts; then
    fail v2_pure "a cgroup v1 hierarchy is mounted: $(grep ' cgroup ' /proc/mounts | head -n 1)"
elif ! grep -q " $CG cgroup2 " /proc/mounts; then
    fail v2_pure "$CG is not a cgroup2 mount: $(grep " $CG " /proc/mounts)"
else
    pass v2_pure "$(cat $CG/cgroup.controllers)"
fi
check_true features "cella features prints JSON" sh -c "$CELLA features | grep -q ociVersion"

# --- every limit lands in the right v2 file (host side) and is seen inside --------
HP=""
[ -e $CG/hugetlb.2MB.max ] || [ -n "$(grep hugetlb $CG/cgroup.controllers)" ] &&
    HP='"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],'
mkbundle lim 'cat /sys/fs/cgroup/memory.max; cat /proc/self/cgroup; cat /sys/fs/cgroup/pids.max; cat /sys/fs/cgroup/cpu.max; echo ready; sleep 1000 & exec sleep 1000' "{
    \"memory\": {\"limit\": 67108864, \"reservation\": 33554432, \"swap\": 100663296},
    \"cpu\": {\"shares\": 512, \"quota\": 50000, \"period\": 100000, \"burst\": 10000, \"cpus\": \"0\", \"mems\": \"0\"},
    \"pids\": {\"limit\": 64},
    \"blockIO\": {\"weight\": 500},
    $HP
    \"unified\": {\"memory.high\": \"62914560\"}
  }" /vmtest/lim
if $CELLA create --bundle $B/lim lim > /tmp/lim.out 2> /tmp/lim.err; then
    pass create_lim ""
else
    fail create_lim "$(cat /tmp/lim.err)"
fi
D=$CG/vmtest/lim
pid=$(state_field lim pid)
check state_created created "$(state_field lim status)"
# With clone3(CLONE_INTO_CGROUP) init is born in its cgroup: right after `create`,
# before `start`, it must already be there.
check init_in_cgroup_at_create "0::/vmtest/lim" "$(rd /proc/$pid/cgroup)"
check memory.max 67108864 "$(rd $D/memory.max)"
check memory.swap.max 33554432 "$(rd $D/memory.swap.max)"
check memory.low 33554432 "$(rd $D/memory.low)"
check memory.high_unified 62914560 "$(rd $D/memory.high)"
check cpu.weight 59 "$(rd $D/cpu.weight)"
check cpu.max "50000 100000" "$(rd $D/cpu.max)"
check cpu.max.burst 10000 "$(rd $D/cpu.max.burst)"
check cpuset.cpus 0 "$(rd $D/cpuset.cpus)"
check cpuset.mems 0 "$(rd $D/cpuset.mems)"
check pids.max 64 "$(rd $D/pids.max)"
if [ -e $D/io.bfq.weight ]; then
    check io.weight "default 500" "$(rd $D/io.bfq.weight)"
elif [ -e $D/io.weight ]; then
    # 1 + (500 - 10) * 9999 / 990
    check io.weight "default 4950" "$(rd $D/io.weight)"
else
    fail io.weight "neither io.bfq.weight nor io.weight in $D ($(cat $D/cgroup.controllers))"
fi
if [ -n "$HP" ]; then
    check hugetlb.2MB.max 4194304 "$(rd $D/hugetlb.2MB.max)"
else
    fail hugetlb.2MB.max "no hugetlb controller: $(cat $CG/cgroup.controllers)"
fi
$CELLA start lim 2> /tmp/lim.err || fail start_lim "$(cat /tmp/lim.err)"
if wait_grep /tmp/lim.out ready; then
    check inside_memory.max 67108864 "$(sed -n 1p /tmp/lim.out)"
    check inside_cgroup_ns "0::/" "$(sed -n 2p /tmp/lim.out)"
    check inside_pids.max 64 "$(sed -n 3p /tmp/lim.out)"
    check inside_cpu.max "50000 100000" "$(sed -n 4p /tmp/lim.out)"
else
    fail inside_memory.max "no output: $(cat /tmp/lim.out /tmp/lim.err)"
    fail inside_cgroup_ns "no output"
fi
check state_running running "$(state_field lim status)"
# `ps --format json` lists what cgroup.procs holds.
want=$(sort -n $D/cgroup.procs | tr '\n' ' ')
got=$($CELLA ps --format json lim 2>&1 | tr -d '[] ' | tr ',' '\n' | sort -n | tr '\n' ' ')
check ps_json "$want" "$got"
# exec: born in the container's cgroup (clone3 CLONE_INTO_CGROUP) and inside its cgroup
# namespace.
check exec_cgroup_ns "0::/" "$($CELLA exec lim cat /proc/self/cgroup 2>&1)"
if $CELLA exec --detach --pid-file /tmp/exec.pid lim sleep 1000 2> /tmp/exec.err; then
    check exec_in_cgroup "0::/vmtest/lim" "$(rd /proc/$(cat /tmp/exec.pid)/cgroup)"
else
    fail exec_in_cgroup "$(cat /tmp/exec.err)"
fi
# pause/resume through cgroup.freeze, update and events --stats on v2.
$CELLA pause lim 2> /tmp/lim.err || fail pause_v2 "$(cat /tmp/lim.err)"
check pause_v2 "frozen 1 paused" "$(grep frozen $D/cgroup.events) $(state_field lim status)"
$CELLA resume lim 2> /tmp/lim.err || fail resume_v2 "$(cat /tmp/lim.err)"
check resume_v2 "frozen 0 running" "$(grep frozen $D/cgroup.events) $(state_field lim status)"
$CELLA update --memory 100663296 --pids-limit 99 lim 2> /tmp/lim.err || fail update_v2 "$(cat /tmp/lim.err)"
check update_v2 "100663296 99" "$(rd $D/memory.max) $(rd $D/pids.max)"
check_true events_stats_v2 "memory usage in events --stats" sh -c \
    "$CELLA events --stats lim | grep -q '\"usage\"'"
$CELLA kill --all lim KILL 2> /tmp/lim.err || fail kill_all "$(cat /tmp/lim.err)"
if wait_status lim stopped; then
    check kill_all "" "$(cat $D/cgroup.procs)"
else
    fail kill_all "still $(state_field lim status): procs $(cat $D/cgroup.procs | tr '\n' ' ')"
fi
$CELLA delete lim 2> /tmp/lim.err || fail delete_lim "$(cat /tmp/lim.err)"
check_true delete_removes_cgroup "$D" test ! -e $D
check_true delete_removes_state /run/cella/lim test ! -e /run/cella/lim

# --- io throttles on the RAM disk (block 1:0) -------------------------------------------
if [ -b /dev/ram0 ]; then
    dev=$(cat /sys/block/ram0/dev)
    maj=${dev%:*} min=${dev#*:}
    mkbundle iothr 'exec sleep 1000' "{\"blockIO\": {
        \"throttleReadBpsDevice\": [{\"major\": $maj, \"minor\": $min, \"rate\": 1048576}],
        \"throttleWriteIOPSDevice\": [{\"major\": $maj, \"minor\": $min, \"rate\": 100}]}}"
    if $CELLA run --detach --bundle $B/iothr iothr > /tmp/iothr.out 2>&1; then
        check io.max "$dev rbps=1048576 wbps=max riops=max wiops=100" "$(rd $CG/cella/iothr/io.max)"
    else
        fail io.max "run: $(cat /tmp/iothr.out)"
    fi
    $CELLA delete --force iothr
else
    fail io.max "no /dev/ram0 (brd.ko missing from the initramfs?)"
fi

# --- clone3(CLONE_INTO_CGROUP), seen from the kernel's side ----------------------------
# A process born into a cgroup is charged to its pids.max at clone time, while moving one
# in through cgroup.procs ignores pids.max. So with pids.max 0 a runtime that clones into
# the cgroup cannot create the container (EAGAIN from clone3), and one that migrates can.
mkbundle cic 'true' '{"unified": {"pids.max": "0"}}'
if $CELLA create --bundle $B/cic cic > /tmp/cic.out 2>&1; then
    fail clone_into_cgroup "create succeeded: init was migrated, not cloned into the cgroup"
    $CELLA delete --force cic
elif grep -q 'clone' /tmp/cic.out; then
    pass clone_into_cgroup "$(head -n 1 /tmp/cic.out)"
else
    fail clone_into_cgroup "unexpected error: $(cat /tmp/cic.out)"
fi
check_true clone_into_cgroup_nothing_left "no cgroup, no state" \
    test ! -e $CG/cella/cic -a ! -e /run/cella/cic

# --- a fork bomb stops at pids.max --------------------------------------------------
# The same container checks the "unlimited" conversions: swap -1 and quota -1 are "max".
mkbundle fb 'sh -c \"while :; do sleep 1000 & done\" 2>/dev/null; exec sleep 1000' '{
    "pids": {"limit": 16},
    "memory": {"limit": 67108864, "swap": -1},
    "cpu": {"quota": -1, "period": 200000, "idle": 1}
  }'
$CELLA run --detach --bundle $B/fb fb > /tmp/fb.out 2>&1 || fail pids_forkbomb "run: $(cat /tmp/fb.out)"
D=$CG/cella/fb
check memory.swap.max_unlimited max "$(rd $D/memory.swap.max)"
check cpu.max_unlimited "max 200000" "$(rd $D/cpu.max)"
check cpu.idle 1 "$(rd $D/cpu.idle)"
if wait_grep $D/pids.events 'max [1-9]'; then
    cur=$(rd $D/pids.current)
    if [ "$cur" -le 16 ]; then
        pass pids_forkbomb "pids.current $cur, $(rd $D/pids.events)"
    else
        fail pids_forkbomb "pids.current $cur above 16"
    fi
else
    fail pids_forkbomb "pids.events: $(cat $D/pids.events) current $(rd $D/pids.current)"
fi
$CELLA delete --force fb 2> /tmp/fb.err || fail pids_forkbomb_delete "$(cat /tmp/fb.err)"
check_true pids_forkbomb_delete "$D removed" test ! -e $D

# --- a memory hog is OOM-killed at memory.max ---------------------------------------
# dd allocates its block size up front and fills it: 64 MiB against a 32 MiB limit. It is
# the container's init, so the container stops when the OOM killer takes it.
mkbundle oom 'exec dd if=/dev/zero of=/dev/null bs=64M count=1' \
    '{"memory": {"limit": 33554432, "swap": 33554432}}'
$CELLA create --bundle $B/oom oom > /tmp/oom.out 2>&1 && $CELLA start oom 2>> /tmp/oom.out
D=$CG/cella/oom
if wait_status oom stopped; then
    kills=$(sed -n 's/^oom_kill //p' $D/memory.events)
    if [ "${kills:-0}" -ge 1 ] && ! grep -q 'records out' /tmp/oom.out; then
        pass memory_oom_kill "memory.events oom_kill $kills"
    else
        fail memory_oom_kill "oom_kill ${kills:-none}; output: $(cat /tmp/oom.out)"
    fi
else
    fail memory_oom_kill "did not stop: $(state_field oom status); $(cat /tmp/oom.out)"
fi
$CELLA delete --force oom 2>/dev/null
# The same limit lets a smaller allocation through (the limit is not simply broken).
mkbundle small 'dd if=/dev/zero of=/dev/null bs=8M count=1 2>/dev/null && echo survived' \
    '{"memory": {"limit": 33554432, "swap": 33554432}}'
out=$($CELLA run --bundle $B/small small 2>&1)
check memory_below_limit_runs survived "$out"

# --- the eBPF device program -------------------------------------------------------
# /opt/kmsg is a char 1:11 node in the (host-prepared) rootfs; the config denies every
# device, so only cella's always-allowed list (null, zero, ...) and the rules get through.
mkdir -p $ROOTFS/opt
[ -e $ROOTFS/opt/kmsg ] || mknod $ROOTFS/opt/kmsg c 1 11
DEVSCRIPT='echo x > /dev/null && echo null-ok; head -c 1 /dev/zero > /dev/null && echo zero-ok; if echo cella-devtest > /opt/kmsg; then echo kmsg-ok; else echo kmsg-denied; fi'
mkbundle devdeny "$DEVSCRIPT" '{"devices": [{"allow": false, "access": "rwm"}]}'
out=$($CELLA run --bundle $B/devdeny devdeny 2>&1 | tr '\n' ' ')
check devices_deny "null-ok zero-ok kmsg-denied " "$(echo "$out" | grep -o '[a-z]*-[a-z]*' | grep -E 'null-ok|zero-ok|kmsg-' | tr '\n' ' ')"
case "$out" in
*"Operation not permitted"*) pass devices_deny_eperm "" ;;
*) fail devices_deny_eperm "$out" ;;
esac
mkbundle devallow "$DEVSCRIPT" '{"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 11, "access": "w"}]}'
out=$($CELLA run --bundle $B/devallow devallow 2>&1 | tr '\n' ' ')
check devices_allow "null-ok zero-ok kmsg-ok " "$(echo "$out" | grep -o '[a-z]*-[a-z]*' | grep -E 'null-ok|zero-ok|kmsg-' | tr '\n' ' ')"

# --- a crashed container is still removed completely --------------------------------
# Its init dies from outside (SIGKILL from the host) with a child left in the cgroup
# until the pid namespace goes; `delete` (without --force) must remove the cgroup.
mkbundle crash 'sleep 1000 & exec sleep 1000' '{"pids": {"limit": 8}}'
$CELLA run --detach --bundle $B/crash crash > /tmp/crash.out 2>&1
pid=$(state_field crash pid)
kill -9 "$pid"
if wait_status crash stopped; then
    $CELLA delete crash > /tmp/crash.out 2>&1 || fail delete_after_crash "$(cat /tmp/crash.out)"
    check_true delete_after_crash "no cgroup, no state" \
        test ! -e $CG/cella/crash -a ! -e /run/cella/crash
else
    fail delete_after_crash "state $(state_field crash status) after kill -9 of init $pid"
    $CELLA delete --force crash
fi

# --- bad input: a clear error naming the field, nothing created -----------------------
# bad NAME FIELD RESOURCES_JSON
bad() {
    mkbundle "$1" 'true' "$3"
    if $CELLA create --bundle "$B/$1" "$1" > "/tmp/$1.out" 2>&1; then
        fail "$1" "create succeeded"
        $CELLA delete --force "$1"
    elif grep -q "$2" "/tmp/$1.out"; then
        pass "$1" "$(head -n 1 "/tmp/$1.out")"
    else
        fail "$1" "error does not name $2: $(cat "/tmp/$1.out")"
    fi
    check_true "$1_nothing_left" "no cgroup, no state" \
        test ! -e "$CG/cella/$1" -a ! -e "/run/cella/$1"
}
bad bad_memory_limit linux.resources.memory.limit '{"memory": {"limit": 1000}}'
# No v2 equivalent: refused rather than silently dropped.
bad bad_v2_swappiness linux.resources.memory.swappiness '{"memory": {"swappiness": 10}}'
bad bad_v2_kernel_tcp linux.resources.memory.kernelTCP '{"memory": {"kernelTCP": 1048576}}'
bad bad_v2_realtime linux.resources.cpu.realtimeRuntime '{"cpu": {"realtimeRuntime": 1000}}'
bad bad_unified_key linux.resources.unified.nodot '{"unified": {"nodot": "1"}}'
bad bad_unified_missing_file linux.resources.unified.memory.nosuchfile '{"unified": {"memory.nosuchfile": "1"}}'

# --- nothing left behind ------------------------------------------------------------
left=$(find $CG/cella $CG/vmtest -mindepth 1 -type d 2>/dev/null | tr '\n' ' ')
check no_leftover_cgroups "" "$left"
# /run/cella/exe is the runtime's read-only copy of itself (one per build), not a
# container's state.
left=$(ls /run/cella 2>/dev/null | grep -vx exe | tr '\n' ' ')
check no_leftover_state "" "$left"
