# The systemd driver on systemd's hybrid layout (kernel argument
# systemd.unified_cgroup_hierarchy=0: v1 controllers, cgroup2 at /sys/fs/cgroup/unified
# for systemd's own tracking). Sourced by systemd-suite.sh, whose helpers it uses; its
# checks are named hy_*. systemd makes the scope in the hierarchies it manages (with
# Delegate=yes: cpu, memory, pids, blkio, devices, name=systemd, unified); cella makes it
# in the others (cpuset, freezer, ...), joins init there and writes the v1 files.

check hy_layout "tmpfs cgroup2fs" "$(stat -f -c %T $CG) $(stat -f -c %T $CG/unified)"

U=cella-hy1.scope
P=/machine.slice/machine-cella.slice/$U
mkbundle hy1 'cat /proc/self/cgroup | wc -l; echo ready; exec sleep 1000' "{
    \"memory\": {\"limit\": 67108864},
    \"cpu\": {\"shares\": 512, \"quota\": 50000, \"period\": 100000, \"cpus\": \"0\", \"mems\": \"0\"},
    \"pids\": {\"limit\": 64}
  }" machine-cella.slice:cella:hy1
if $CELLA create --bundle $B/hy1 hy1 > /tmp/hy1.out 2> /tmp/hy1.err; then
    pass hy_create ""
else
    fail hy_create "$(cat /tmp/hy1.err)"
fi
pid=$(state_field hy1 pid)
check hy_unit "active $P yes" "$(prop $U ActiveState) $(prop $U ControlGroup) $(prop $U Delegate)"
# Every hierarchy (v1 controllers, name=systemd, the unified one) lists the scope.
total=$(wc -l < /proc/$pid/cgroup)
in=$(grep -c ":$P\$" /proc/$pid/cgroup)
check hy_init_in_every_hierarchy "$total" "$in"
check_true hy_systemd_made_memory "$CG/memory$P" test -d $CG/memory$P
check_true hy_cella_made_freezer "$CG/freezer$P" test -d $CG/freezer$P
check hy_memory.limit_in_bytes 67108864 "$(rd $CG/memory$P/memory.limit_in_bytes)"
check hy_cpu.shares 512 "$(rd $CG/cpu$P/cpu.shares)"
check hy_cpu.cfs_quota_us 50000 "$(rd $CG/cpu$P/cpu.cfs_quota_us)"
check hy_pids.max 64 "$(rd $CG/pids$P/pids.max)"
check hy_cpuset.cpus 0 "$(rd $CG/cpuset$P/cpuset.cpus)"
$CELLA start hy1 2> /tmp/hy1.err || fail hy_start "$(cat /tmp/hy1.err)"
if $CELLA exec --detach --pid-file /tmp/hyexec.pid hy1 sleep 1000 2> /tmp/hyexec.err; then
    epid=$(cat /tmp/hyexec.pid)
    check hy_exec_in_every_hierarchy "$total" "$(grep -c ":$P\$" /proc/$epid/cgroup)"
else
    fail hy_exec_in_every_hierarchy "$(cat /tmp/hyexec.err)"
fi
$CELLA pause hy1 2> /tmp/hy1.err || fail hy_pause "$(cat /tmp/hy1.err)"
check hy_pause "FROZEN paused" "$(rd $CG/freezer$P/freezer.state) $(state_field hy1 status)"
$CELLA resume hy1 2> /tmp/hy1.err || fail hy_resume "$(cat /tmp/hy1.err)"
check hy_resume "THAWED running" "$(rd $CG/freezer$P/freezer.state) $(state_field hy1 status)"
$CELLA delete --force hy1 2> /tmp/hy1.err || fail hy_delete "$(cat /tmp/hy1.err)"
check_true hy_delete_removes_unit "$U not-found" unit_gone $U
left=$(find $CG -name $U 2>/dev/null | tr '\n' ' ')
check hy_delete_removes_cgroups "" "$left"
check_true hy_delete_removes_state /run/cella/hy1 test ! -e /run/cella/hy1

bad hy_bad_unit_refused system.slice:cella:hy_bad%x "systemd: start transient unit .*InvalidArgs"

left=$(systemctl list-units --all --plain --no-legend 'cella-*.scope' 2>&1 | tr '\n' ' ')
check hy_no_leftover_units "" "$left"
left=$(find $CG -name 'cella-*.scope' -type d 2>/dev/null | tr '\n' ' ')
check hy_no_leftover_cgroups "" "$left"
left=$(ls /run/cella 2>/dev/null | grep -vx exe | tr '\n' ' ')
check hy_no_leftover_state "" "$left"
