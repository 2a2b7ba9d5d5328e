//! The systemd cgroup driver (`--systemd-cgroup`) against a real systemd. This host has
//! no systemd as PID 1, so the test boots Debian's kernel (`linux-image-amd64`) under
//! qemu (TCG: KVM hangs here) with a busybox initramfs that mounts the host's / read-only
//! over virtio-9p under a tmpfs overlay and switch_roots into the host's systemd
//! (Debian 12's systemd 252) as PID 1, whose only job is a unit running
//! tests/vm/systemd-suite.sh with a static cella. The suite prints
//! `RESULT <name> PASS|FAIL <detail>` lines and `SUITE DONE` on the serial console; this
//! test asserts that every expected check passed. See docs/testing-v2.md ("systemd").

use cella_tests::{require_root, require_tool, skip_unless, vm, which};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The init the VM switch_roots into (from the host's own systemd package).
const SYSTEMD: &str = "/lib/systemd/systemd";

/// Checks the suite must report as passed (names as tests/vm/systemd-suite.sh prints them).
const EXPECTED: &[&str] = &[
    "systemd_pid1",
    "systemd_private_socket",
    "create_sd1",
    "state_records_unit",
    "unit_active",
    "unit_control_group",
    "unit_slice",
    "unit_delegate",
    "unit_description",
    "unit_memory_max",
    "unit_memory_low",
    "unit_memory_swap_max",
    "unit_tasks_max",
    "unit_cpu_weight",
    "unit_cpu_quota",
    "unit_allowed_cpus",
    "unit_io_weight",
    "init_in_unit_cgroup",
    "memory.max",
    "memory.low",
    "memory.swap.max",
    "memory.high_unified",
    "pids.max",
    "cpu.max",
    "cpu.weight",
    "cpuset.cpus",
    "io.weight",
    "inside_memory.max",
    "inside_cgroup_ns",
    "state_running",
    "exec_in_unit_cgroup",
    "ps_json",
    "pause",
    "resume",
    "dup_unit_refused",
    "dup_unit_untouched",
    "delete_removes_unit",
    "delete_removes_cgroup",
    "delete_removes_state",
    "run_foreground",
    "run_foreground_unit_gone",
    "run_foreground_nothing_left",
    "default_slice",
    "slice_unit",
    "slice_unit_init",
    "slice_unit_pids.max",
    "slice_unit_delete",
    "delete_after_crash",
    "crash_during_create_unit_was_active",
    "crash_during_create_state_names_unit",
    "crash_during_create_delete",
    "bad_path_parts",
    "bad_path_parts_nothing_left",
    "bad_path_slice",
    "bad_path_slice_nothing_left",
    "bad_path_dashes",
    "bad_path_dashes_nothing_left",
    "bad_unit_refused",
    "bad_unit_refused_nothing_left",
    "bad_unit_refused_no_process",
    "no_leftover_units",
    "no_leftover_cgroups",
    "no_leftover_state",
];

/// Checks of the hybrid boot (names as tests/vm/systemd-hybrid.sh prints them).
const EXPECTED_HYBRID: &[&str] = &[
    "systemd_pid1",
    "systemd_private_socket",
    "hy_layout",
    "hy_create",
    "hy_unit",
    "hy_init_in_every_hierarchy",
    "hy_systemd_made_memory",
    "hy_cella_made_freezer",
    "hy_memory.limit_in_bytes",
    "hy_cpu.shares",
    "hy_cpu.cfs_quota_us",
    "hy_pids.max",
    "hy_cpuset.cpus",
    "hy_exec_in_every_hierarchy",
    "hy_pause",
    "hy_resume",
    "hy_delete_removes_unit",
    "hy_delete_removes_cgroups",
    "hy_delete_removes_state",
    "hy_bad_unit_refused",
    "hy_bad_unit_refused_nothing_left",
    "hy_no_leftover_units",
    "hy_no_leftover_cgroups",
    "hy_no_leftover_state",
];

/// Debian packages the VM needs on the host.
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "linux-image-amd64",
    "cpio",
    "busybox-static",
    "systemd",
];

/// How long one VM may run before it is killed (booting systemd under TCG over 9p and
/// the suite take 40-110 s here, depending on load; one run with the machine at load 9
/// went past 300 s).
const VM_TIMEOUT: Duration = Duration::from_secs(480);

fn tools_present() -> bool {
    [
        "qemu-system-x86_64",
        "cpio",
        "gzip",
        "busybox",
        "modinfo",
        "systemctl",
    ]
    .iter()
    .all(|t| which(t).is_some())
        && vm::debian_kernel().is_some()
        && Path::new(SYSTEMD).exists()
}

/// Boots the VM and returns its serial output (lines without `\r`) and whether it
/// finished before the timeout.
fn boot(kernel: &Path, image: &Path, extra_append: &str) -> (Vec<String>, bool) {
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args(["-nodefaults", "-display", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-m", "1024", "-smp", "2", "-accel", "tcg"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(image)
        // The host's / is the VM's root (read-only, under a tmpfs overlay): its systemd,
        // systemctl and libraries, without building a disk image.
        .args([
            "-virtfs",
            "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        ])
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 systemd.unit=cella-vmtest.service \
             systemd.show_status=0 {extra_append}"
        ));
    vm::run_qemu(qemu, VM_TIMEOUT)
}

/// Boots one layout, runs the suite and returns what went wrong (empty: all passed).
fn run_layout(
    kernel: &Path,
    image: &Path,
    layout: &str,
    extra_append: &str,
    expected: &[&str],
) -> Vec<String> {
    let t = Instant::now();
    let (lines, finished) = boot(kernel, image, extra_append);
    eprintln!(
        "systemd_vm [{layout}]: VM (boot + suite) {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Timings inside the VM: uptime when the suite started and ended, a create, a delete.
    for l in lines.iter().filter(|l| l.starts_with("VMINFO")) {
        eprintln!("  {l}");
    }
    let problems = vm::verdict(&lines, finished, VM_TIMEOUT, expected);
    if problems.is_empty() {
        return problems;
    }
    vec![format!(
        "[{layout}] {}\n--- serial log ---\n{}",
        problems.join("; "),
        lines.join("\n")
    )]
}

#[test]
fn systemd_cgroup_driver_under_systemd() {
    if !require_root() {
        return;
    }
    if !skip_unless(
        vm::ensure_packages("systemd_vm", PACKAGES, tools_present),
        &format!(
            "the systemd VM needs qemu-system-x86_64, cpio, gzip, busybox, modinfo, systemd and \
             a Debian kernel in /boot/vmlinuz-*-amd64 (apt-get install {})",
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
        "mksystemd-initramfs.sh",
        "systemd-initramfs",
        &cella,
        &kernel,
    ));
    eprintln!(
        "systemd_vm: static build {:.1} s, initramfs {:.1} s, kernel {}",
        t_build.as_secs_f64(),
        (t0.elapsed() - t_build).as_secs_f64(),
        kernel.display()
    );
    // systemd 252's default, pure cgroup v2; then its hybrid layout (v1 controllers,
    // cgroup2 for its own tracking), the one this dev machine has.
    let mut problems = run_layout(&kernel, &image.0, "pure v2", "", EXPECTED);
    problems.extend(run_layout(
        &kernel,
        &image.0,
        "hybrid",
        "systemd.unified_cgroup_hierarchy=0",
        EXPECTED_HYBRID,
    ));
    assert!(
        problems.is_empty(),
        "systemd driver suite: {}",
        problems.join("\n")
    );
}
