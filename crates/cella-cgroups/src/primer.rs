//! Hiding the grace period of the first cgroup v1 migration.
//!
//! Writing a pid to a v1 `cgroup.procs` takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing. That per-cpu rwsem first switches its readers
//! to the slow path, which waits for a full RCU grace period (6-12 ms on this 2-cpu VM,
//! the largest single cost of `create` on v1 and hybrid hosts). The switch is shared:
//! once made, it stays for one more grace period after the last writer leaves, so a
//! second writer arriving in that window does not wait.
//!
//! [`AttachPrimer`] starts that switch early, from a thread that re-writes the
//! runtime's own pid into the v1 cgroup it is already in (a migration to the same cgroup,
//! which changes nothing), while the runtime parses the bundle and prepares the
//! container. By the time init's pid is written the wait is over or partly done.
//! On pure cgroup v2, init is cloned straight into its cgroup (no migration), so nothing
//! is started there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::sys;

/// A background write that starts the grace period the first v1 migration waits for.
/// [`finish`](AttachPrimer::finish) (or drop) joins the thread: do it before forking, so
/// the child never inherits a thread caught holding an allocator lock.
#[derive(Debug)]
pub struct AttachPrimer(Option<JoinHandle<()>>);

impl AttachPrimer {
    /// Starts the primer when the host has v1 hierarchies and we may migrate (root);
    /// otherwise does nothing. Never fails: this only saves time.
    pub fn start() -> AttachPrimer {
        let root = Path::new("/sys/fs/cgroup");
        // Pure v2 mounts cgroup2 at the root: no v1 migration will happen.
        if sys::geteuid() != 0 || sys::fs_magic(root).ok() == Some(sys::CGROUP2_SUPER_MAGIC) {
            return AttachPrimer(None);
        }
        let handle = std::thread::Builder::new()
            .name("cgroup-primer".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                if let Some(procs) = own_v1_procs(root) {
                    // A no-op migration: the same process into the cgroup it is in.
                    let pid = std::process::id().to_string();
                    let _ = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&procs)
                        .and_then(|mut f| f.write_all(pid.as_bytes()));
                }
            })
            .ok();
        AttachPrimer(handle)
    }

    /// Waits for the primer's write to finish.
    pub fn finish(mut self) {
        self.join();
    }

    fn join(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

impl Drop for AttachPrimer {
    fn drop(&mut self) {
        self.join();
    }
}

/// `cgroup.procs` of the cgroup this process is in, in the first mounted v1 hierarchy
/// listed in /proc/self/cgroup (`ID:controllers:/path`; ID 0 is the unified one).
fn own_v1_procs(root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if id == "0" || controllers.is_empty() {
            return None;
        }
        // Named hierarchies (name=systemd) are mounted under their name.
        let dir = controllers.strip_prefix("name=").unwrap_or(controllers);
        let procs = root
            .join(dir)
            .join(path.trim_start_matches('/'))
            .join("cgroup.procs");
        procs.exists().then_some(procs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primer_is_harmless_and_keeps_our_cgroups() {
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        AttachPrimer::start().finish();
        let after = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        assert_eq!(before, after, "the primer must not move the process");
    }

    #[test]
    fn finds_a_v1_hierarchy_on_v1_hosts() {
        let root = Path::new("/sys/fs/cgroup");
        if sys::fs_magic(root).ok() == Some(sys::CGROUP2_SUPER_MAGIC) {
            assert_eq!(own_v1_procs(root), None);
        } else if root.join("pids").exists() {
            let p = own_v1_procs(root).expect("a v1 cgroup.procs");
            assert!(p.ends_with("cgroup.procs") && p.exists(), "{p:?}");
        }
    }
}
