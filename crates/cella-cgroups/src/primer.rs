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
//! container, and while the init, cloned before its cgroup is made, does its first
//! mounts. By the time init's pid is written the wait is over or partly done.
//! On pure cgroup v2, init is cloned straight into its cgroup (no migration), so nothing
//! is started there.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::sys;

/// A background write that starts the grace period the first v1 migration waits for.
///
/// Forking while it runs is safe once [`wait_armed`](AttachPrimer::wait_armed) has
/// returned: the thread has then done all its allocation, and until
/// [`finish`](AttachPrimer::finish) (or drop) releases it, it only writes (a syscall)
/// and parks (a futex). It holds no lock a forked child could inherit, and frees nothing
/// that could take the allocator's lock.
#[derive(Debug)]
pub struct AttachPrimer {
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Only the write (or nothing) is left.
    armed: AtomicBool,
    /// The thread may finish: free what it holds and exit.
    release: AtomicBool,
}

impl AttachPrimer {
    /// Starts the primer when the host has v1 hierarchies and we may migrate (root);
    /// otherwise does nothing. Never fails: this only saves time.
    pub fn start() -> AttachPrimer {
        let shared = Arc::new(Shared::default());
        let root = Path::new("/sys/fs/cgroup");
        // Pure v2 mounts cgroup2 at the root: no v1 migration will happen.
        if sys::geteuid() != 0 || sys::fs_magic(root).ok() == Some(sys::CGROUP2_SUPER_MAGIC) {
            return AttachPrimer {
                thread: None,
                shared,
            };
        }
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("cgroup-primer".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let file = own_v1_procs(root)
                    .and_then(|procs| std::fs::OpenOptions::new().write(true).open(procs).ok());
                // A no-op migration: the same process into the cgroup it is in.
                let pid = std::process::id().to_string();
                theirs.armed.store(true, Ordering::Release);
                if let Some(f) = &file {
                    let _ = (&*f).write_all(pid.as_bytes());
                }
                while !theirs.release.load(Ordering::Acquire) {
                    std::thread::park();
                }
            })
            .ok();
        AttachPrimer { thread, shared }
    }

    /// Waits until the primer has nothing left to do but its write (which may go on
    /// waiting for the grace period): from then on forking is safe.
    pub fn wait_armed(&self) {
        if let Some(h) = &self.thread {
            while !self.shared.armed.load(Ordering::Acquire) && !h.is_finished() {
                std::thread::yield_now();
            }
        }
    }

    /// Releases the thread and waits for it (its write included) to finish.
    pub fn finish(mut self) {
        self.join();
    }

    fn join(&mut self) {
        if let Some(h) = self.thread.take() {
            self.shared.release.store(true, Ordering::Release);
            h.thread().unpark();
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
        let p = AttachPrimer::start();
        p.wait_armed();
        p.finish();
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
