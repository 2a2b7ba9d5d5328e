//! Booting Debian's kernel under qemu for the suites that need a machine of their own
//! (tests/tests/pure_v2_vm.rs, tests/tests/systemd_vm.rs): packages, a static cella, the
//! initramfs, and qemu's serial console read until it exits or times out.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::which;

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The newest Debian kernel image under /boot.
pub fn debian_kernel() -> Option<PathBuf> {
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

/// Installs a VM's `packages` when `present` says something is missing (as scripts/test
/// installs the others); true when everything is there afterwards.
pub fn ensure_packages(who: &str, packages: &[&str], present: impl Fn() -> bool) -> bool {
    if present() {
        return true;
    }
    if which("apt-get").is_none() {
        return false;
    }
    eprintln!("{who}: installing {}", packages.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
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
    present()
}

/// Builds a statically linked cella (glibc, crt-static: the toolchain here has no musl
/// target) in its own target dir, so it neither fights the main build's lock nor
/// rebuilds it. Cargo makes this a no-op when nothing changed.
pub fn build_static_cella() -> PathBuf {
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

/// Builds an initramfs with `script` (under tests/vm/) next to the static binary, one per
/// test process (two concurrent runs must not share a file); it takes the modules it
/// needs from /lib/modules/<version> of `kernel`.
pub fn build_initramfs(script: &str, name: &str, cella: &Path, kernel: &Path) -> PathBuf {
    let version = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .expect("kernel image named vmlinuz-<version>");
    let dir = cella.parent().expect("bin dir").join("vm-image");
    std::fs::create_dir_all(&dir).expect("mkdir vm-image");
    let img = dir.join(format!("{name}-{}.cpio.gz", std::process::id()));
    let out = Command::new("sh")
        .arg(workspace_root().join("tests/vm").join(script))
        .arg(&img)
        .arg(cella)
        .arg(version)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    img
}

/// Removes an initramfs however the test ends.
pub struct Image(pub PathBuf);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Kills and reaps qemu however the test ends.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `qemu` (its serial console on stdout) and returns the console's lines (without
/// `\r`, qemu's own stderr prefixed `qemu: `) and whether it exited before `timeout`.
pub fn run_qemu(mut qemu: Command, timeout: Duration) -> (Vec<String>, bool) {
    let child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64");
    let mut vm = Vm(child);
    let (tx, rx) = mpsc::channel();
    let stdout = vm.0.stdout.take().expect("qemu stdout");
    let stderr = vm.0.stderr.take().expect("qemu stderr");
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
    let deadline = Instant::now() + timeout;
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

/// Reads a suite's serial log (`RESULT <name> PASS|FAIL <detail>` lines, then
/// `SUITE DONE`), prints each result, and returns what went wrong: a VM that did not
/// power off within `timeout`, a missing `SUITE DONE`, a failed check, or an `expected`
/// check without a result. Empty when everything passed.
pub fn verdict(
    lines: &[String],
    finished: bool,
    timeout: Duration,
    expected: &[&str],
) -> Vec<String> {
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
            timeout.as_secs()
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
    for want in expected {
        if !results.iter().any(|(n, _, _)| n == want) {
            problems.push(format!("{want}: no result"));
        }
    }
    problems
}
