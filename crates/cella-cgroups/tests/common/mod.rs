//! Helpers for the root tests: unique cgroups removed on drop, child processes reaped on drop.

#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;
use std::process::{Child, Command, Stdio};

use cella_cgroups::Cgroup;

pub use cella_tests::{require_root, unique};

/// Destroys the cgroup (in every hierarchy) when dropped, even if the test panicked.
pub struct CgroupGuard(pub Cgroup);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let _ = self.0.destroy();
        // The test-only parent directory, if the cgroup was nested in one.
        for d in self.0.dirs() {
            if let Some(p) = d.parent() {
                if p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("cella-test-"))
                {
                    let _ = std::fs::remove_dir(p);
                }
            }
        }
    }
}

/// A child process killed and reaped when dropped.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child that sleeps.
pub fn sleeper() -> ChildGuard {
    ChildGuard(
        Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep"),
    )
}

/// A child that burns CPU.
pub fn spinner() -> ChildGuard {
    ChildGuard(
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sh"),
    )
}

/// Total CPU time (user+system ticks) of a process from /proc/<pid>/stat.
pub fn cpu_ticks(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat, counted from after the command name (field 3 is index 0).
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Reads a file, trimmed.
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// Is `pid` listed in `dir`/cgroup.procs?
pub fn in_procs(dir: &Path, pid: i32) -> bool {
    read(&dir.join("cgroup.procs"))
        .lines()
        .any(|l| l.trim() == pid.to_string())
}

/// A shell that waits for a line on stdin before exec'ing `cmd`, so it can be moved into
/// a cgroup first and then allocate and run there.
pub struct Gated(pub ChildGuard);

impl Gated {
    pub fn new(cmd: &str) -> Gated {
        Gated(ChildGuard(
            Command::new("sh")
                .args(["-c", &format!("read x; exec {cmd}")])
                .stdin(Stdio::piped())
                .spawn()
                .expect("spawn sh"),
        ))
    }

    pub fn pid(&self) -> i32 {
        self.0.pid()
    }

    pub fn release(&mut self) {
        use std::io::Write;
        let stdin = self.0.0.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").expect("write stdin");
        stdin.flush().unwrap();
    }
}

/// Poll `f` for up to two seconds.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed().as_secs() < 2,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
