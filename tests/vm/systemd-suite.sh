#!/bin/sh
# The systemd cgroup driver suite, run by systemd (PID 1) inside the systemd test VM
# (tests/vm/systemd-init sets it up; tests/tests/systemd_vm.rs reads the output). Every
# check prints one line
#   RESULT <name> PASS|FAIL <detail>
# It drives `cella --systemd-cgroup create/start/exec/pause/resume/ps/kill/delete` on
# busybox bundles and reads back, with systemctl and from the cgroup files, what systemd
# made and what landed where.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
echo "VMINFO suite_start_s $(cut -d' ' -f1 /proc/uptime)"

CELLA="/vm/cella --root /run/cella --systemd-cgroup"
ROOTFS=/vm/rootfs
CG=/sys/fs/cgroup
B=/run/bundles
mkdir -p "$B"

. /vm/lib.sh

# prop UNIT PROPERTY: one property as systemctl shows it.
prop() { systemctl show -p "$2" --value "$1" 2>&1; }
# snap UNIT: all properties at once into /tmp/unit.props (each systemctl costs about a
# second under TCG); pv PROPERTY reads one from it.
snap() { systemctl show "$1" > /tmp/unit.props 2>&1; }
pv() { sed -n "s/^$1=//p" /tmp/unit.props; }
# unit_gone UNIT: true once systemd has no such unit loaded (waits up to 10 s of uptime:
# a scope whose last process died is collected asynchronously, and each systemctl call
# itself takes a good part of a second under TCG).
unit_gone() {
    end=$(($(cut -d. -f1 /proc/uptime) + 10))
    while :; do
        [ "$(prop "$1" LoadState)" = not-found ] && return 0
        [ "$(cut -d. -f1 /proc/uptime)" -ge $end ] && return 1
        sleep 0.2
    done
}

# bad NAME CGROUPS_PATH WANT: create fails with WANT in its message; no state, no unit.
bad() {
    mkbundle "$1" 'true' '{"pids": {"limit": 10}}' "$2"
    if $CELLA create --bundle "$B/$1" "$1" > "/tmp/$1.out" 2>&1; then
        fail "$1" "create succeeded"
        $CELLA delete --force "$1"
    elif grep -q "$3" "/tmp/$1.out"; then
        pass "$1" "$(tr '\n' ' ' < "/tmp/$1.out")"
    else
        fail "$1" "error does not say $3: $(cat "/tmp/$1.out")"
    fi
    left=$(systemctl list-units --all --plain --no-legend "*$1*" 2>&1)
    check_true "$1_nothing_left" "no state, no unit: $left" \
        test ! -e "/run/cella/$1" -a -z "$left"
}

# --- the machine ----------------------------------------------------------------------
check systemd_pid1 systemd "$(cat /proc/1/comm)"
check_true systemd_private_socket /run/systemd/private test -S /run/systemd/private
echo "VMINFO $(systemctl --version | head -n 1)"

# systemd.unified_cgroup_hierarchy=0: the hybrid checks instead (tests/vm/systemd-hybrid.sh).
if [ "$(stat -f -c %T $CG)" != cgroup2fs ]; then
    . /vm/systemd-hybrid.sh
    echo "VMINFO suite_end_s $(cut -d' ' -f1 /proc/uptime)"
    echo "SUITE DONE"
    exit 0
fi

# --- a scope in a nested slice, with limits -------------------------------------------
U=cella-sd1.scope
P=/machine.slice/machine-cella.slice/$U
D=$CG$P
mkbundle sd1 'cat /sys/fs/cgroup/memory.max; cat /proc/self/cgroup; echo ready; exec sleep 1000' "{
    \"memory\": {\"limit\": 67108864, \"reservation\": 33554432, \"swap\": 100663296},
    \"cpu\": {\"shares\": 512, \"quota\": 50000, \"period\": 100000, \"cpus\": \"0\", \"mems\": \"0\"},
    \"pids\": {\"limit\": 64},
    \"blockIO\": {\"weight\": 500},
    \"unified\": {\"memory.high\": \"62914560\"}
  }" machine-cella.slice:cella:sd1
t0=$(cut -d' ' -f1 /proc/uptime)
if $CELLA create --bundle $B/sd1 sd1 > /tmp/sd1.out 2> /tmp/sd1.err; then
    pass create_sd1 "in $(echo "$(cut -d' ' -f1 /proc/uptime) - $t0" | bc 2>/dev/null) s"
else
    fail create_sd1 "$(cat /tmp/sd1.err)"
fi
pid=$(state_field sd1 pid)
check_true state_records_unit "$U in state.json" grep -q "\"unit\": *\"$U\"" /run/cella/sd1/state.json
snap $U
check unit_active active "$(pv ActiveState)"
check unit_control_group "$P" "$(pv ControlGroup)"
check unit_slice machine-cella.slice "$(pv Slice)"
check unit_delegate yes "$(pv Delegate)"
check unit_description "cella container sd1" "$(pv Description)"
check unit_memory_max 67108864 "$(pv MemoryMax)"
check unit_memory_low 33554432 "$(pv MemoryLow)"
check unit_memory_swap_max 33554432 "$(pv MemorySwapMax)"
check unit_tasks_max 64 "$(pv TasksMax)"
check unit_cpu_weight 59 "$(pv CPUWeight)"
check unit_cpu_quota 500ms "$(pv CPUQuotaPerSecUSec)"
check unit_allowed_cpus 0 "$(pv AllowedCPUs)"
check unit_io_weight 4950 "$(pv IOWeight)"
check init_in_unit_cgroup "0::$P" "$(rd /proc/$pid/cgroup)"
check memory.max 67108864 "$(rd $D/memory.max)"
check memory.low 33554432 "$(rd $D/memory.low)"
check memory.swap.max 33554432 "$(rd $D/memory.swap.max)"
check memory.high_unified 62914560 "$(rd $D/memory.high)"
check pids.max 64 "$(rd $D/pids.max)"
check cpu.max "50000 100000" "$(rd $D/cpu.max)"
check cpu.weight 59 "$(rd $D/cpu.weight)"
check cpuset.cpus 0 "$(rd $D/cpuset.cpus)"
if [ -e $D/io.bfq.weight ]; then
    check io.weight "default 500" "$(rd $D/io.bfq.weight)"
else
    check io.weight "default 4950" "$(rd $D/io.weight)"
fi
$CELLA start sd1 2> /tmp/sd1.err || fail start_sd1 "$(cat /tmp/sd1.err)"
if wait_grep /tmp/sd1.out ready; then
    check inside_memory.max 67108864 "$(sed -n 1p /tmp/sd1.out)"
    check inside_cgroup_ns "0::/" "$(sed -n 2p /tmp/sd1.out)"
else
    fail inside_memory.max "no output: $(cat /tmp/sd1.out /tmp/sd1.err)"
    fail inside_cgroup_ns "no output"
fi
check state_running running "$(state_field sd1 status)"
if $CELLA exec --detach --pid-file /tmp/exec.pid sd1 sleep 1000 2> /tmp/exec.err; then
    check exec_in_unit_cgroup "0::$P" "$(rd /proc/$(cat /tmp/exec.pid)/cgroup)"
else
    fail exec_in_unit_cgroup "$(cat /tmp/exec.err)"
fi
want=$(sort -n $D/cgroup.procs | tr '\n' ' ')
got=$($CELLA ps --format json sd1 2>&1 | tr -d '[] ' | tr ',' '\n' | sort -n | tr '\n' ' ')
check ps_json "$want" "$got"
$CELLA pause sd1 2> /tmp/sd1.err || fail pause "$(cat /tmp/sd1.err)"
check pause "frozen 1 paused" "$(grep frozen $D/cgroup.events) $(state_field sd1 status)"
$CELLA resume sd1 2> /tmp/sd1.err || fail resume "$(cat /tmp/sd1.err)"
check resume "frozen 0 running" "$(grep frozen $D/cgroup.events) $(state_field sd1 status)"

# --- the same cgroupsPath again: systemd's unit is not ours to take (or to stop) -----
mkbundle sd1dup 'exec sleep 1000' '{}' machine-cella.slice:cella:sd1
if $CELLA create --bundle $B/sd1dup sd1dup > /tmp/dup.out 2>&1; then
    fail dup_unit_refused "create succeeded"
    $CELLA delete --force sd1dup
elif grep -q "exists already" /tmp/dup.out; then
    pass dup_unit_refused "$(head -n 1 /tmp/dup.out)"
else
    fail dup_unit_refused "$(cat /tmp/dup.out)"
fi
check dup_unit_untouched "active running" "$(prop $U ActiveState) $(state_field sd1 status)"

t0=$(cut -d' ' -f1 /proc/uptime)
$CELLA delete --force sd1 2> /tmp/sd1.err || fail delete_sd1 "$(cat /tmp/sd1.err)"
echo "VMINFO delete_s $(echo "$(cut -d' ' -f1 /proc/uptime) - $t0" | bc 2>/dev/null)"
check_true delete_removes_unit "$U not-found" unit_gone $U
check_true delete_removes_cgroup "$D" test ! -e $D
check_true delete_removes_state /run/cella/sd1 test ! -e /run/cella/sd1

# --- the default path: system.slice, cella-<id>.scope; run in the foreground ---------
mkbundle sd2 'cat /sys/fs/cgroup/pids.max' '{"pids": {"limit": 32}}'
out=$($CELLA run --bundle $B/sd2 sd2 2>&1)
check run_foreground "32" "$out"
check_true run_foreground_unit_gone "cella-sd2.scope" unit_gone cella-sd2.scope
check_true run_foreground_nothing_left "no cgroup, no state" \
    test ! -e $CG/system.slice/cella-sd2.scope -a ! -e /run/cella/sd2
mkbundle sd3 'exec sleep 1000' '{}'
$CELLA run --detach --bundle $B/sd3 sd3 > /tmp/sd3.out 2>&1 || fail default_slice "$(cat /tmp/sd3.out)"
check default_slice "/system.slice/cella-sd3.scope" "$(prop cella-sd3.scope ControlGroup)"

# --- a name ending in .slice: a slice unit, where its name puts it; init joins it ------
SL=cellatest-sl1.slice
SD=$CG/cellatest.slice/$SL
mkbundle sl1 'exec sleep 1000' '{"pids": {"limit": 20}}' system.slice:cella:$SL
if $CELLA run --detach --bundle $B/sl1 sl1 > /tmp/sl1.out 2>&1; then
    check slice_unit "active /cellatest.slice/$SL" "$(prop $SL ActiveState) $(prop $SL ControlGroup)"
    check slice_unit_init "0::/cellatest.slice/$SL" "$(rd /proc/$(state_field sl1 pid)/cgroup)"
    check slice_unit_pids.max 20 "$(rd $SD/pids.max)"
else
    fail slice_unit "$(cat /tmp/sl1.out)"
fi
$CELLA delete --force sl1 > /tmp/sl1.out 2>&1 || fail slice_unit_delete "$(cat /tmp/sl1.out)"
# systemd synthesizes a slice unit for any valid slice name it is asked about, so a
# removed one shows as loaded but inactive and not transient (not "not-found").
check slice_unit_delete "inactive no absent absent" \
    "$(prop $SL ActiveState) $(prop $SL Transient) $(test -e $SD && echo present || echo absent) $(test -e /run/cella/sl1 && echo present || echo absent)"

# --- init killed from outside: systemd drops the empty scope; delete still cleans up --
pid=$(state_field sd3 pid)
kill -9 "$pid"
if wait_status sd3 stopped; then
    $CELLA delete sd3 > /tmp/sd3.out 2>&1 || fail delete_after_crash "$(cat /tmp/sd3.out)"
    if unit_gone cella-sd3.scope; then
        check_true delete_after_crash "no unit, no cgroup, no state" \
            test ! -e $CG/system.slice/cella-sd3.scope -a ! -e /run/cella/sd3
    else
        fail delete_after_crash "cella-sd3.scope is $(prop cella-sd3.scope ActiveState)"
    fi
else
    fail delete_after_crash "state $(state_field sd3 status) after kill -9 of init $pid"
    $CELLA delete --force sd3
fi

# --- cella itself killed during create, after the unit started: delete --force cleans up
# A createRuntime hook (run by cella once init is in its cgroup) notes the unit's state and
# SIGKILLs its parent, the `cella create`. Init then loses its channel and exits, so
# systemd drops the scope by itself; what must hold is that the state named the unit and
# `delete --force` finishes the job.
mkbundle crash2 'exec sleep 1000' '{"pids": {"limit": 10}}'
sed -i 's|^  "ociVersion": "1.2.0",|  "ociVersion": "1.2.0", "hooks": {"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "systemctl show -p ActiveState --value cella-crash2.scope > /tmp/crash2.unit; kill -9 $PPID"]}]},|' $B/crash2/config.json
$CELLA create --bundle $B/crash2 crash2 > /tmp/crash2.out 2>&1
check crash_during_create_unit_was_active active "$(cat /tmp/crash2.unit 2>&1)"
check_true crash_during_create_state_names_unit "cella-crash2.scope in state.json" \
    grep -q '"unit": *"cella-crash2.scope"' /run/cella/crash2/state.json
$CELLA delete --force crash2 > /tmp/crash2.out 2>&1 || fail crash_during_create_delete "$(cat /tmp/crash2.out)"
if unit_gone cella-crash2.scope; then
    check_true crash_during_create_delete "no unit, no cgroup, no state, no init" sh -c \
        "test ! -e $CG/system.slice/cella-crash2.scope -a ! -e /run/cella/crash2 && ! pgrep -f 'create --bundle $B/[c]rash2' > /dev/null"
else
    fail crash_during_create_delete "cella-crash2.scope is $(prop cella-crash2.scope ActiveState)"
fi

# --- bad input: a clear error, nothing created ------------------------------------------
bad bad_path_parts system.slice:cella "linux.cgroupsPath: .*slice:prefix:name"
bad bad_path_slice notaslice:cella:bad_path_slice "linux.cgroupsPath: .*is not a slice name"
bad bad_path_dashes a--b.slice:cella:bad_path_dashes "linux.cgroupsPath: slice"
# systemd itself refuses the unit (`%` is not allowed in unit names; cella leaves that
# check to systemd): its error reaches the user, and the cloned init (still a copy of
# cella, with its command line) is gone with the state. ([b] keeps pgrep from matching
# the sh running it.)
bad bad_unit_refused system.slice:cella:bad_unit_refused%x "systemd: start transient unit .*InvalidArgs"
check_true bad_unit_refused_no_process "no init left" \
    sh -c "! pgrep -f 'create --bundle $B/[b]ad_unit_refused' > /dev/null"

# --- nothing left behind ------------------------------------------------------------------
left=$(systemctl list-units --all --plain --no-legend 'cella-*.scope' 2>&1 | tr '\n' ' ')
check no_leftover_units "" "$left"
left=$(find $CG -name 'cella-*.scope' -type d 2>/dev/null | tr '\n' ' ')
check no_leftover_cgroups "" "$left"
left=$(ls /run/cella 2>/dev/null | grep -vx exe | tr '\n' ' ')
check no_leftover_state "" "$left"
echo "VMINFO suite_end_s $(cut -d' ' -f1 /proc/uptime)"
echo "SUITE DONE"
