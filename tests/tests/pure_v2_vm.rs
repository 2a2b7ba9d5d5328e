//! The cgroup suite on a pure cgroup-v2 kernel. This host is a v1/v2 hybrid, so the test
//! boots Debian's kernel (`linux-image-amd64`) under qemu (TCG: KVM hangs here) with
//! `cgroup_no_v1=all` and a busybox initramfs that carries a static cella build and
//! tests/vm/suite.sh. The suite prints `RESULT <name> PASS|FAIL <detail>` lines and
//! `SUITE DONE` on the serial console; this test asserts that every expected check
//! passed. See docs/testing-v2.md.

use cella_tests::{require_root, require_tool, skip_unless, vm, which};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Checks the suite must report as passed (names as tests/vm/suite.sh prints them).
const EXPECTED: &[&str] = &[
    "v2_pure",
    "features",
    "create_lim",
    "state_created",
    "init_in_cgroup_at_create",
    "memory.max",
    "memory.swap.max",
    "memory.low",
    "memory.high_unified",
    "cpu.weight",
    "cpu.max",
    "cpu.max.burst",
    "cpuset.cpus",
    "cpuset.mems",
    "pids.max",
    "io.weight",
    "hugetlb.2MB.max",
    "inside_memory.max",
    "inside_cgroup_ns",
    "inside_pids.max",
    "inside_cpu.max",
    "state_running",
    "ps_json",
    "exec_cgroup_ns",
    "exec_in_cgroup",
    "pause_v2",
    "resume_v2",
    "update_v2",
    "events_stats_v2",
    "kill_all",
    "delete_removes_cgroup",
    "delete_removes_state",
    "io.max",
    "clone_into_cgroup",
    "clone_into_cgroup_nothing_left",
    "memory.swap.max_unlimited",
    "cpu.max_unlimited",
    "cpu.idle",
    "pids_forkbomb",
    "pids_forkbomb_delete",
    "memory_oom_kill",
    "memory_below_limit_runs",
    "devices_deny",
    "devices_deny_eperm",
    "devices_allow",
    "delete_after_crash",
    "bad_memory_limit",
    "bad_memory_limit_nothing_left",
    "bad_v2_swappiness",
    "bad_v2_swappiness_nothing_left",
    "bad_v2_kernel_tcp",
    "bad_v2_kernel_tcp_nothing_left",
    "bad_v2_realtime",
    "bad_v2_realtime_nothing_left",
    "bad_unified_key",
    "bad_unified_key_nothing_left",
    "bad_unified_missing_file",
    "bad_unified_missing_file_nothing_left",
    "no_leftover_cgroups",
    "no_leftover_state",
];

/// Debian packages the VM needs on the host.
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "linux-image-amd64",
    "cpio",
    "busybox-static",
];

/// How long the VM may run before it is killed (it needs about 25 s here).
const VM_TIMEOUT: Duration = Duration::from_secs(240);

fn tools_present() -> bool {
    ["qemu-system-x86_64", "cpio", "gzip", "busybox"]
        .iter()
        .all(|t| which(t).is_some())
        && vm::debian_kernel().is_some()
}

/// Boots the VM and returns its serial output (lines without `\r`) and whether it
/// finished before the timeout.
fn boot(kernel: &Path, image: &Path) -> (Vec<String>, bool) {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-nodefaults", "-display", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-m", "1024", "-smp", "2", "-accel", "tcg"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(image)
        .args([
            "-append",
            "console=ttyS0 quiet systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all panic=-1",
        ]);
    vm::run_qemu(qemu, VM_TIMEOUT)
}

#[test]
fn cgroup_suite_on_pure_v2_kernel() {
    if !require_root() {
        return;
    }
    if !skip_unless(
        vm::ensure_packages("pure_v2_vm", PACKAGES, tools_present),
        &format!(
            "the pure cgroup-v2 VM needs qemu-system-x86_64, cpio, gzip, busybox and a Debian \
             kernel in /boot/vmlinuz-*-amd64 (apt-get install {})",
            PACKAGES.join(" ")
        ),
    ) || !require_tool("qemu-system-x86_64")
    {
        return;
    }
    let kernel = vm::debian_kernel().expect("checked by ensure_packages");

    let t0 = Instant::now();
    let cella = vm::build_static_cella();
    let t_build = t0.elapsed();
    let image = vm::Image(vm::build_initramfs(
        "mkinitramfs.sh",
        "initramfs",
        &cella,
        &kernel,
    ));
    let t_image = t0.elapsed() - t_build;
    let t1 = Instant::now();
    let (lines, finished) = boot(&kernel, &image.0);
    let t_vm = t1.elapsed();
    eprintln!(
        "pure_v2_vm: static build {:.1} s, initramfs {:.1} s, VM (boot + suite) {:.1} s, kernel {}",
        t_build.as_secs_f64(),
        t_image.as_secs_f64(),
        t_vm.as_secs_f64(),
        kernel.display()
    );

    let log = lines.join("\n");
    let problems = vm::verdict(&lines, finished, VM_TIMEOUT, EXPECTED);
    assert!(
        problems.is_empty(),
        "pure cgroup-v2 suite: {}\n--- serial log ---\n{log}",
        problems.join("; ")
    );
}
