//! cgroups: v1, hybrid and v2 hierarchies; limits, stats, freezing and removal.
//!
//! A [`Cgroup`] is computed first ([`Cgroup::new`], which touches nothing and can be
//! recorded in the runtime's state before anything exists), then created, configured
//! ([`Cgroup::apply`] validates everything, then writes), joined, and destroyed.
//!
//! Two drivers: cgroupfs (cella makes the directories) and systemd (`--systemd-cgroup`:
//! systemd makes the cgroup as a transient unit holding init, see [`Cgroup::start_unit`];
//! the rest is the same cgroupfs code on the directory systemd delegates).

mod control;
mod devices_bpf;
mod error;
mod fs;
mod mountinfo;
mod paths;
mod plan;
mod primer;
mod stats;
mod sys;
mod systemd;
mod tree;
mod validate;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use control::FreezerState;
pub use error::CgroupError;
pub use mountinfo::{Layout, detect};
pub use plan::{Write, blkio_weight_to_io_weight, cpu_shares_to_weight, swap_to_v2};
pub use primer::AttachPrimer;
pub use stats::{
    BlkioEntry, BlkioStats, CpuStats, CpuUsage, HugetlbStats, MemoryEntry, MemoryStats, PidsStats,
    Stats, Throttling,
};
pub use systemd::SystemdUnit;
pub use systemd::dbus::DbusError;
pub use validate::validate;

/// This cgroup's directory in one v1 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct V1Dir {
    /// The hierarchy's controllers, e.g. `["cpu"]` or `["name=systemd"]`.
    pub controllers: Vec<String>,
    /// Where the hierarchy is mounted.
    pub mount_point: PathBuf,
    /// The cgroup directory.
    pub dir: PathBuf,
}

/// This cgroup's directory in the unified (cgroup2) hierarchy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnifiedDir {
    /// Where cgroup2 is mounted.
    pub mount_point: PathBuf,
    /// The directory under which cella may enable controllers (the hierarchy root for
    /// an absolute cgroupsPath, the runtime's own cgroup for a relative one).
    pub base: PathBuf,
    /// The cgroup directory.
    pub dir: PathBuf,
    /// Controllers available at `base` (its cgroup.controllers) when computed.
    pub controllers: Vec<String>,
}

/// A container's cgroup across all hierarchies. Serializable so the runtime can record
/// it before creating anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// The host layout this was computed for.
    pub layout: Layout,
    /// Directories in the v1 hierarchies (empty on pure v2).
    pub v1: Vec<V1Dir>,
    /// Directory in the unified hierarchy, if cgroup2 is mounted.
    pub unified: Option<UnifiedDir>,
    /// The systemd unit that owns the cgroup (the systemd driver); `None` for cgroupfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd: Option<SystemdUnit>,
}

fn controllers_at(dir: &Path) -> Result<Vec<String>, CgroupError> {
    Ok(fs::read_opt(&dir.join("cgroup.controllers"))?
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

impl Cgroup {
    /// Compute the per-hierarchy directories for a container. Creates nothing.
    ///
    /// `cgroups_path` is `linux.cgroupsPath`: absolute = from each hierarchy's root,
    /// relative = under the runtime's own cgroup, empty = `/cella/<container_id>`.
    /// With `systemd`, it is `slice:prefix:name` (empty = `:cella:<id>`), and the
    /// directories are where systemd will put the unit (`/<slice path>/prefix-name.scope`
    /// in every hierarchy); systemd must be running.
    pub fn new(
        cgroups_path: Option<&str>,
        container_id: &str,
        systemd: bool,
    ) -> Result<Cgroup, CgroupError> {
        let (path, unit) = if systemd {
            let p = paths::parse_systemd(cgroups_path, container_id)?;
            if !paths::systemd_running() {
                return Err(CgroupError::SystemdNotRunning);
            }
            // SAFETY: geteuid has no preconditions and cannot fail.
            let rootless = unsafe { libc::geteuid() } != 0;
            let unit = systemd::unit_for(&p, container_id, rootless)?;
            let rel = unit.cgroup.trim_start_matches('/').to_owned();
            (paths::CgroupsPath::Absolute(rel), Some(unit))
        } else {
            (paths::parse_cgroupfs(cgroups_path, container_id)?, None)
        };
        let mounts = mountinfo::mounts()?;
        let layout = mountinfo::layout_of(&mounts)?;
        let own = match &path {
            paths::CgroupsPath::Relative(_) => {
                mountinfo::parse_proc_cgroup(&fs::read(Path::new("/proc/self/cgroup"))?)
            }
            paths::CgroupsPath::Absolute(_) => Vec::new(),
        };
        let mut v1 = Vec::new();
        let mut unified = None;
        for m in &mounts {
            let base = match &path {
                paths::CgroupsPath::Absolute(_) => m.mount_point.clone(),
                paths::CgroupsPath::Relative(_) => {
                    let Some(mine) = mountinfo::own_path(&own, m) else {
                        // Not a member of this hierarchy (another cgroup namespace's mount).
                        continue;
                    };
                    // /proc/self/cgroup paths are from the hierarchy root; the mount shows `root`.
                    let rel = mine
                        .strip_prefix(m.root.as_str())
                        .unwrap_or(mine.as_str())
                        .trim_start_matches('/');
                    m.mount_point.join(rel)
                }
            };
            let p = match &path {
                paths::CgroupsPath::Absolute(p) | paths::CgroupsPath::Relative(p) => p,
            };
            let dir = base.join(p);
            if m.v2 {
                if unified.is_none() {
                    unified = Some(UnifiedDir {
                        mount_point: m.mount_point.clone(),
                        controllers: controllers_at(&base)?,
                        base,
                        dir,
                    });
                }
            } else {
                v1.push(V1Dir {
                    controllers: m.controllers.clone(),
                    mount_point: m.mount_point.clone(),
                    dir,
                });
            }
        }
        let cg = Cgroup {
            layout,
            v1,
            unified,
            systemd: unit,
        };
        if let Some(u) = &cg.systemd
            && let Some(d) = cg.dirs().into_iter().find(|d| d.exists())
        {
            // Another container's unit: failing later would make our cleanup stop it.
            return Err(CgroupError::invalid(
                "linux.cgroupsPath",
                format!(
                    "the systemd unit {} exists already (its cgroup `{}` does)",
                    u.unit,
                    d.display()
                ),
            ));
        }
        Ok(cg)
    }

    /// A pure-v2 cgroup at `root/<path>` for any cgroup2 mount `root` (for example
    /// /sys/fs/cgroup/unified on a hybrid host, to exercise the v2 code paths).
    pub fn new_unified_at(root: &Path, path: &str) -> Result<Cgroup, CgroupError> {
        let magic = sys::fs_magic(root).map_err(|source| CgroupError::Statfs {
            path: root.to_owned(),
            source,
        })?;
        if magic != sys::CGROUP2_SUPER_MAGIC {
            return Err(CgroupError::invalid(
                format!("cgroup2 root `{}`", root.display()),
                "is not a cgroup2 filesystem",
            ));
        }
        let p = match paths::parse_cgroupfs(Some(&format!("/{path}")), "unused")? {
            paths::CgroupsPath::Absolute(p) | paths::CgroupsPath::Relative(p) => p,
        };
        Ok(Cgroup {
            layout: Layout::Unified,
            v1: Vec::new(),
            unified: Some(UnifiedDir {
                mount_point: root.to_owned(),
                base: root.to_owned(),
                dir: root.join(p),
                controllers: controllers_at(root)?,
            }),
            systemd: None,
        })
    }

    /// The v1 directory of the hierarchy holding `controller`, if mounted.
    pub fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
            .map(|d| d.dir.as_path())
    }

    /// The unified directory, if cgroup2 is mounted.
    pub fn unified_dir(&self) -> Option<&Path> {
        self.unified.as_ref().map(|u| u.dir.as_path())
    }

    /// Every directory of this cgroup, v1 hierarchies first.
    pub fn dirs(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.v1.iter().map(|d| d.dir.as_path()).collect();
        v.extend(self.unified_dir());
        v
    }

    /// Validate `res` for this host without writing anything (also done by [`apply`](Self::apply)).
    pub fn validate(&self, res: &oci_spec::runtime::LinuxResources) -> Result<(), CgroupError> {
        self.plan(res).map(|_| ())
    }

    /// Create the directories in every hierarchy. On v2, enable every available
    /// controller in the parents' cgroup.subtree_control; on v1, give new cpuset levels
    /// their parent's cpus and mems (empty ones refuse tasks).
    ///
    /// With the systemd driver this does nothing: systemd makes the cgroup when the unit
    /// starts with init in it ([`start_unit`](Self::start_unit)).
    pub fn create(&self) -> Result<(), CgroupError> {
        if self.systemd.is_some() {
            return Ok(());
        }
        self.create_dirs()
    }

    /// The cgroupfs part of [`create`](Self::create): every missing level, controllers
    /// enabled on the way down. Existing levels (systemd's) are kept as they are.
    fn create_dirs(&self) -> Result<(), CgroupError> {
        for d in &self.v1 {
            let cpuset = d.controllers.iter().any(|c| c == "cpuset");
            tree::mkdir_levels(&d.mount_point, &d.dir, |parent, child| {
                if cpuset {
                    tree::copy_cpuset(parent, child)?;
                }
                Ok(())
            })?;
        }
        if let Some(u) = &self.unified {
            if !u.base.is_dir() {
                return Err(CgroupError::Open {
                    path: u.base.clone(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                });
            }
            // Enable controllers from base downwards, before each child is created.
            let rel = u.dir.strip_prefix(&u.base).unwrap_or(Path::new(""));
            let mut cur = u.base.clone();
            for comp in rel.components() {
                tree::enable_controllers(&cur)?;
                cur.push(comp);
                tree::mkdir_one(&cur)?;
            }
        }
        Ok(())
    }

    /// Whether the systemd driver owns this cgroup: it is made by
    /// [`start_unit`](Self::start_unit) once init's pid is known, not by `create`.
    pub fn is_systemd(&self) -> bool {
        self.systemd.is_some()
    }

    /// The systemd driver's create + join + apply, in one step because systemd makes a
    /// scope only with a process in it: start the transient unit holding `pid` with the
    /// limits systemd knows (cgroup v2), wait for its job, check that its ControlGroup is
    /// the recorded directory, enable controllers down to it and make the directories
    /// systemd does not (v1 hierarchies it does not manage) with `pid` in them, then
    /// write every limit as [`apply`](Self::apply) does. For a cgroupfs cgroup it is
    /// create, add_process and apply. On failure the caller destroys the cgroup (which
    /// stops the unit).
    pub fn start_unit(
        &self,
        pid: i32,
        res: &oci_spec::runtime::LinuxResources,
    ) -> Result<(), CgroupError> {
        if let Some(u) = &self.systemd {
            let props = systemd::properties(u, Some(pid), res, self.layout == Layout::Unified)?;
            let got = systemd::start(u, props)?;
            if got.trim_end_matches('/') != u.cgroup.trim_end_matches('/') {
                return Err(CgroupError::SystemdPlacement {
                    unit: u.unit.clone(),
                    want: u.cgroup.clone(),
                    got,
                });
            }
        }
        self.create_dirs()?;
        // On pure v2 a scope's PIDs= put init in its only directory; a write to
        // cgroup.procs would be a second migration (and an RCU grace period) for nothing.
        // Slices take no PIDs, and systemd manages only some v1 hierarchies.
        let placed = self.layout == Layout::Unified
            && self
                .systemd
                .as_ref()
                .is_some_and(|u| !u.unit.ends_with(".slice"));
        if !placed {
            self.add_process(pid)?;
        }
        self.apply(res)
    }

    /// Validate `res` against this host, then write it. Nothing is written if any value
    /// is invalid. On pure v2, device rules become an eBPF program that is loaded (and
    /// verified) before the first write and attached after the last, replacing the one
    /// attached before.
    pub fn apply(&self, res: &oci_spec::runtime::LinuxResources) -> Result<(), CgroupError> {
        let writes = self.plan(res)?;
        let program = match (self.layout, res.devices().as_deref(), self.unified_dir()) {
            (Layout::Unified, Some(rules), Some(dir)) if !rules.is_empty() => {
                let insns: Vec<u64> = devices_bpf::compile(rules)
                    .into_iter()
                    .map(|i| i.encode())
                    .collect();
                let prog = sys::load_device_prog(&insns).map_err(|(source, log)| {
                    CgroupError::DeviceProgram {
                        op: "load",
                        path: dir.to_owned(),
                        log,
                        source,
                    }
                })?;
                Some((prog, dir))
            }
            _ => None,
        };
        for w in &writes {
            fs::write(&w.path, &w.value)?;
        }
        if let Some((prog, dir)) = program {
            let attach_err = |source| CgroupError::DeviceProgram {
                op: "attach",
                path: dir.to_owned(),
                log: String::new(),
                source,
            };
            let cg = std::fs::File::open(dir).map_err(attach_err)?;
            sys::replace_device_prog(cg.as_fd(), prog.as_fd()).map_err(attach_err)?;
        }
        Ok(())
    }

    /// How many device programs are attached to the unified directory (pure v2 only;
    /// `None` elsewhere). For tests and `cella state`-style diagnostics.
    pub fn device_programs(&self) -> Result<Option<u32>, CgroupError> {
        let (Layout::Unified, Some(dir)) = (self.layout, self.unified_dir()) else {
            return Ok(None);
        };
        let err = |source| CgroupError::Open {
            path: dir.to_owned(),
            source,
        };
        let cg = std::fs::File::open(dir).map_err(err)?;
        sys::device_progs_attached(cg.as_fd())
            .map(Some)
            .map_err(err)
    }

    /// Move `pid` into this cgroup in every hierarchy (including name=systemd and unified).
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in self.dirs() {
            tree::write_pid(&dir.join("cgroup.procs"), pid)?;
        }
        Ok(())
    }

    /// An fd of the unified directory for clone3's CLONE_INTO_CGROUP; `Some` only on pure
    /// v2, where that one directory is the whole cgroup.
    pub fn open_unified_dir(&self) -> Result<Option<OwnedFd>, CgroupError> {
        if self.layout != Layout::Unified {
            return Ok(None);
        }
        let Some(dir) = self.unified_dir() else {
            return Ok(None);
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .map_err(|source| CgroupError::Open {
                path: dir.to_owned(),
                source,
            })?;
        Ok(Some(f.into()))
    }

    /// Kill what is left and remove the directories (and any sub-cgroups) in every
    /// hierarchy. Missing directories are fine, so this is idempotent; every failure is
    /// gathered.
    ///
    /// With the systemd driver, the unit is stopped (after its processes were killed, so
    /// the stop is immediate) and a failed state reset, so the name can be used again; a
    /// unit that is gone already is fine.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let mut errors = Vec::new();
        if self.dirs().iter().any(|d| d.exists()) {
            if let Err(e) = self.kill_all(libc::SIGKILL) {
                errors.push(e);
            }
        }
        if let Some(u) = &self.systemd {
            if let Err(e) = systemd::stop(u) {
                errors.push(e);
            }
        }
        for dir in self.dirs() {
            if let Err(e) = tree::rmdir_tree(dir) {
                errors.push(e);
            }
        }
        finish_destroy(errors)
    }
}

/// Turn gathered errors into one.
fn finish_destroy(errors: Vec<CgroupError>) -> Result<(), CgroupError> {
    if errors.is_empty() {
        return Ok(());
    }
    let count = errors.len();
    let mut it = errors.into_iter();
    let first = Box::new(it.next().expect("checked non-empty above"));
    Err(CgroupError::Destroy {
        count,
        first,
        rest: it.collect(),
    })
}
