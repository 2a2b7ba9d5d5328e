//! The cgroup suite on a pure cgroup-v2 kernel. This host is a v1/v2 hybrid, so the test
//! boots Debian's kernel (`linux-image-amd64`) under qemu (TCG: KVM hangs here) with
//! `cgroup_no_v1=all` and a busybox initramfs that carries a static cella build and
//! tests/vm/suite.sh. The suite prints `RESULT <name> PASS|FAIL <detail>` lines and
//! `SUITE DONE` on the serial console; this test asserts that every expected check
//! passed. See docs/testing-v2.md.

use cella_tests::{require_root, require_tool, skip_unless, which};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
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

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The newest Debian kernel image under /boot.
fn debian_kernel() -> Option<PathBuf> {
    let mut images: Vec<PathBuf> = std::fs::read_dir("/boot")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-") && n.ends_with("-amd64"))
        })
        .collect();
    images.sort();
    images.pop()
}

fn tools_present() -> bool {
    ["qemu-system-x86_64", "cpio", "gzip", "busybox"]
        .iter()
        .all(|t| which(t).is_some())
        && debian_kernel().is_some()
}

/// Installs the VM's packages when something is missing (as scripts/test installs the
/// others); true when everything is there afterwards.
fn ensure_packages() -> bool {
    if tools_present() {
        return true;
    }
    if which("apt-get").is_none() {
        return false;
    }
    eprintln!("pure_v2_vm: installing {}", PACKAGES.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get")
            .args(["update", "-qq"])
            .stdin(Stdio::null())
            .status();
        install();
    }
    tools_present()
}

/// Builds a statically linked cella (glibc, crt-static: the toolchain here has no musl
/// target) in its own target dir, so it neither fights the main build's lock nor
/// rebuilds it. Cargo makes this a no-op when nothing changed.
fn build_static_cella() -> PathBuf {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("vm");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--quiet", "-p", "cella"])
        .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(&target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        // The dev profile without debug info builds in under a minute here (release
        // takes minutes); the suite checks behaviour, not speed.
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C debuginfo=0 -C strip=debuginfo",
        )
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "static cella build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = target_dir.join("x86_64-unknown-linux-gnu/debug/cella");
    // An initramfs has no libc: the binary must need none.
    if let Ok(f) = Command::new("ldd").arg(&bin).output() {
        let text =
            String::from_utf8_lossy(&f.stdout).into_owned() + &String::from_utf8_lossy(&f.stderr);
        assert!(
            text.contains("statically linked") || text.contains("not a dynamic executable"),
            "{} is not static: {text}",
            bin.display()
        );
    }
    bin
}

/// Builds the initramfs with tests/vm/mkinitramfs.sh next to the static binary; it takes
/// the kernel's RAM disk module from /lib/modules/<version>.
fn build_initramfs(cella: &Path, kernel: &Path) -> PathBuf {
    let version = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .expect("kernel image named vmlinuz-<version>");
    let dir = cella.parent().expect("bin dir").join("vm-image");
    std::fs::create_dir_all(&dir).expect("mkdir vm-image");
    // One image per test process: two concurrent runs must not share a file.
    let img = dir.join(format!("initramfs-{}.cpio.gz", std::process::id()));
    let out = Command::new("sh")
        .arg(workspace_root().join("tests/vm/mkinitramfs.sh"))
        .arg(&img)
        .arg(cella)
        .arg(version)
        .stdin(Stdio::null())
        .output()
        .expect("run mkinitramfs.sh");
    assert!(
        out.status.success(),
        "mkinitramfs.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// Kills and reaps qemu however the test ends, and removes the image.
struct Vm {
    child: Child,
    image: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Boots the VM and returns its serial output (lines without `\r`) and whether it
/// finished before the timeout.
fn boot(kernel: &Path, image: PathBuf) -> (Vec<String>, bool) {
    let child = Command::new("qemu-system-x86_64")
        .args(["-nodefaults", "-display", "none", "-serial", "stdio"])
        .args(["-no-reboot", "-m", "1024", "-smp", "2", "-accel", "tcg"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(&image)
        .args([
            "-append",
            "console=ttyS0 quiet systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all panic=-1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64");
    let mut vm = Vm { child, image };
    let (tx, rx) = mpsc::channel();
    let stdout = vm.child.stdout.take().expect("qemu stdout");
    let stderr = vm.child.stderr.take().expect("qemu stderr");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let text = String::from_utf8_lossy(&line).replace('\r', "");
            if tx.send(text).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx2.send(format!("qemu: {line}")).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + VM_TIMEOUT;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            // Both pipes closed: qemu has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => return (lines, true),
            Err(mpsc::RecvTimeoutError::Timeout) => return (lines, false),
        }
    }
}

#[test]
fn cgroup_suite_on_pure_v2_kernel() {
    if !require_root() {
        return;
    }
    if !skip_unless(
        ensure_packages(),
        &format!(
            "the pure cgroup-v2 VM needs qemu-system-x86_64, cpio, gzip, busybox and a Debian \
             kernel in /boot/vmlinuz-*-amd64 (apt-get install {})",
            PACKAGES.join(" ")
        ),
    ) || !require_tool("qemu-system-x86_64")
    {
        return;
    }
    let kernel = debian_kernel().expect("checked by ensure_packages");

    let t0 = Instant::now();
    let cella = build_static_cella();
    let t_build = t0.elapsed();
    let image = build_initramfs(&cella, &kernel);
    let t_image = t0.elapsed() - t_build;
    let t1 = Instant::now();
    let (lines, finished) = boot(&kernel, image);
    let t_vm = t1.elapsed();
    eprintln!(
        "pure_v2_vm: static build {:.1} s, initramfs {:.1} s, VM (boot + suite) {:.1} s, kernel {}",
        t_build.as_secs_f64(),
        t_image.as_secs_f64(),
        t_vm.as_secs_f64(),
        kernel.display()
    );

    let log = lines.join("\n");
    let results: Vec<(&str, bool, &str)> = lines
        .iter()
        .filter_map(|l| {
            let rest = l.split_once("RESULT ")?.1;
            let mut parts = rest.splitn(3, ' ');
            let name = parts.next()?;
            let verdict = parts.next()?;
            Some((name, verdict == "PASS", parts.next().unwrap_or("")))
        })
        .collect();
    for (name, ok, detail) in &results {
        eprintln!("  {} {name} {detail}", if *ok { "PASS" } else { "FAIL" });
    }
    let mut problems = Vec::new();
    if !finished {
        problems.push(format!(
            "the VM did not power off within {} s",
            VM_TIMEOUT.as_secs()
        ));
    }
    if !lines.iter().any(|l| l.trim_end() == "SUITE DONE") {
        problems.push("no `SUITE DONE` line".to_owned());
    }
    for (name, ok, detail) in &results {
        if !ok {
            problems.push(format!("{name} failed: {detail}"));
        }
    }
    for want in EXPECTED {
        if !results.iter().any(|(n, _, _)| n == want) {
            problems.push(format!("{want}: no result"));
        }
    }
    assert!(
        problems.is_empty(),
        "pure cgroup-v2 suite: {}\n--- serial log ---\n{log}",
        problems.join("; ")
    );
}
