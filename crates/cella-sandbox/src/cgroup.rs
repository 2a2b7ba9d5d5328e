//! The sandbox's cgroup: on a v1 or hybrid host only the hierarchies this run reads or
//! limits (memory always, for the peak; pids with a process limit; cpuacct with a CPU
//! limit; freezer when evidence is to be kept), since every hierarchy costs a cgroup
//! migration, which takes a global lock; on v2 the one directory, entered by clone3. Limits go through `cella_cgroups::Cgroup::apply`; the
//! counters that show a breach (OOM kills, pids.max hits, CPU time, memory peak) are read
//! here directly.

use std::path::{Path, PathBuf};

use cella_cgroups::{Cgroup, CgroupError, Layout};
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};

/// Which optional v1 hierarchies a run needs.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Needs {
    pub(crate) cpu: bool,
    pub(crate) pids: bool,
    pub(crate) freezer: bool,
}

/// A created sandbox cgroup. Destroyed explicitly with [`SandboxCgroup::destroy`].
#[derive(Debug)]
pub(crate) struct SandboxCgroup {
    pub(crate) cg: Cgroup,
    /// The helper started by [`prime`], reaped by [`SandboxCgroup::add`].
    primer: Option<libc::pid_t>,
}

/// Starts, in a short-lived child, a no-op v1 migration (the child writes itself into
/// the memory cgroup it is already in), so that the RCU grace period the first write to a
/// v1 `cgroup.procs` waits for (the global `cgroup_threadgroup_rwsem` switching to its
/// slow path, 5-15 ms on this 2-cpu host) runs while the supervisor prepares and clones;
/// the init's own migration then lands in the window where the switch is already made.
/// A child rather than a thread: the supervisor forks the sandbox right after, and must
/// be single-threaded then. Returns the helper's pid, or `None` when not worth it.
fn prime(cg: &Cgroup) -> Option<libc::pid_t> {
    let mount = &cg
        .v1
        .iter()
        .find(|d| d.controllers.iter().any(|c| c == "memory"))?
        .mount_point;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctl, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctl.split(',').any(|c| c == "memory").then_some(path)
        })?
        .trim_start_matches('/');
    let procs = std::ffi::CString::new(
        mount
            .join(path)
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .ok()?;
    match cella_isolate::sys::clone_fork(0, None) {
        Ok(cella_isolate::sys::Forked::Child) => {
            // "0" is the writer itself; nothing allocates here.
            if let Ok(fd) = cella_isolate::sys::open(&procs, libc::O_WRONLY, 0) {
                let _ = cella_isolate::sys::write_all(std::os::fd::AsFd::as_fd(&fd), b"0");
            }
            cella_isolate::sys::exit_now(0)
        }
        Ok(cella_isolate::sys::Forked::Parent(pid)) => Some(pid),
        Err(_) => None,
    }
}

/// What the counters say at the end of a run.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) cpu_ns: Option<u64>,
    pub(crate) memory_peak: Option<u64>,
    pub(crate) oom_kills: u64,
    pub(crate) pids_max_hits: u64,
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn keyed(p: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(p).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

impl SandboxCgroup {
    /// Plans, creates and limits `/cella-sandbox/<id>`.
    pub(crate) fn create(
        id: &str,
        memory: Option<u64>,
        pids: Option<u64>,
        needs: Needs,
    ) -> Result<SandboxCgroup, CgroupError> {
        let mut cg = Cgroup::new(Some(&format!("/cella-sandbox/{id}")), id, false)?;
        if cg.layout != Layout::Unified {
            let wanted = |c: &str| match c {
                "memory" => true,
                "pids" => needs.pids,
                "cpuacct" => needs.cpu,
                "freezer" => needs.freezer,
                _ => false,
            };
            cg.v1
                .retain(|d| d.controllers.iter().any(|c| wanted(c.as_str())));
            cg.unified = None;
        }
        let primer = if cg.layout == Layout::Unified {
            None
        } else {
            prime(&cg)
        };
        let mut sc = SandboxCgroup { cg, primer };
        if let Err(e) = sc.cg.create() {
            sc.reap_primer();
            return Err(e);
        }
        let mut res = LinuxResourcesBuilder::default();
        if let Some(m) = memory {
            let m = m as i64;
            let mut mem = LinuxMemoryBuilder::default().limit(m);
            // No swap either, where the kernel accounts it.
            if sc.swap_accounted() {
                mem = mem.swap(m);
            }
            res = res.memory(mem.build().expect("memory fields are set"));
        }
        if let Some(p) = pids {
            res = res.pids(
                LinuxPidsBuilder::default()
                    .limit(p as i64)
                    .build()
                    .expect("pids fields are set"),
            );
        }
        let res = res.build().expect("resource fields are set");
        if let Err(e) = sc.cg.apply(&res) {
            sc.reap_primer();
            let _ = sc.cg.destroy();
            return Err(e);
        }
        Ok(sc)
    }

    fn swap_accounted(&self) -> bool {
        match self.cg.layout {
            Layout::Unified => self
                .cg
                .unified_dir()
                .is_some_and(|d| d.join("memory.swap.max").exists()),
            _ => self
                .cg
                .v1_dir("memory")
                .is_some_and(|d| d.join("memory.memsw.limit_in_bytes").exists()),
        }
    }

    fn dir(&self, v1_controller: &str) -> Option<PathBuf> {
        match self.cg.layout {
            Layout::Unified => self.cg.unified_dir().map(Path::to_owned),
            _ => self.cg.v1_dir(v1_controller).map(Path::to_owned),
        }
    }

    /// CPU time used by every process of the sandbox so far, in nanoseconds (when the
    /// cgroup counts it).
    pub(crate) fn cpu_ns(&self) -> Option<u64> {
        let d = self.dir("cpuacct")?;
        match self.cg.layout {
            Layout::Unified => keyed(&d.join("cpu.stat"), "usage_usec").map(|u| u * 1000),
            _ => read_u64(&d.join("cpuacct.usage")),
        }
    }

    /// How many times a fork failed on pids.max.
    pub(crate) fn pids_max_hits(&self) -> u64 {
        self.dir("pids")
            .and_then(|d| keyed(&d.join("pids.events"), "max"))
            .unwrap_or(0)
    }

    /// Every counter the verdict needs.
    pub(crate) fn counters(&self) -> Counters {
        let mut c = Counters {
            cpu_ns: self.cpu_ns(),
            pids_max_hits: self.pids_max_hits(),
            ..Counters::default()
        };
        if let Some(d) = self.dir("memory") {
            match self.cg.layout {
                Layout::Unified => {
                    c.memory_peak = read_u64(&d.join("memory.peak"));
                    c.oom_kills = keyed(&d.join("memory.events"), "oom_kill").unwrap_or(0);
                }
                _ => {
                    c.memory_peak = read_u64(&d.join("memory.max_usage_in_bytes"));
                    c.oom_kills = keyed(&d.join("memory.oom_control"), "oom_kill").unwrap_or(0);
                }
            }
        }
        c
    }

    /// An fd of the cgroup for clone3's CLONE_INTO_CGROUP (pure v2 only).
    pub(crate) fn clone_fd(&self) -> Result<Option<std::os::fd::OwnedFd>, CgroupError> {
        self.cg.open_unified_dir()
    }

    /// Moves `pid` in, where clone3 could not place it directly.
    pub(crate) fn add(&mut self, pid: i32) -> Result<(), CgroupError> {
        if self.cg.layout == Layout::Unified {
            return Ok(());
        }
        let r = self.cg.add_process(pid);
        self.reap_primer();
        r
    }

    /// Waits for the primer helper (it exits right after its one write).
    pub(crate) fn reap_primer(&mut self) {
        if let Some(pid) = self.primer.take() {
            let _ = cella_isolate::sys::waitpid(pid, 0);
        }
    }

    /// Removes the directories. Called once the sandbox's init is reaped: its pid
    /// namespace died with it, so the cgroup is empty and a plain rmdir suffices; if it
    /// is not, the full destroy (kill what is left, then remove) runs.
    pub(crate) fn destroy(&self) -> Result<(), CgroupError> {
        if self.cg.dirs().iter().all(|d| match std::fs::remove_dir(d) {
            Ok(()) => true,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        }) {
            return Ok(());
        }
        self.cg.destroy()
    }

    /// Whether this run can be frozen.
    pub(crate) fn can_freeze(&self) -> bool {
        self.cg.layout == Layout::Unified || self.cg.v1_dir("freezer").is_some()
    }
}
