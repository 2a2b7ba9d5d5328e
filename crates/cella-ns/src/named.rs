//! `cella ns create` / `cella ns rm`: named, persistent namespaces kept alive by bind
//! mounts of their nsfs files. Network namespaces live at /run/netns/NAME, where
//! `ip netns` finds them; the others under `<base>/<type>/NAME` (base /run/cella/ns).
//!
//! A short-lived child unshares and waits; the parent, still in the original namespaces,
//! bind-mounts the child's `/proc/<child>/ns/*` files, then lets the child exit.
//! /run/netns is made a shared mount, as ip netns makes it, so the names show up in mount
//! namespaces created later; the base is made a private mount, because a mount
//! namespace file may not be bind-mounted where propagation would carry it into itself.

use crate::exec::{self, ChildStep};
use crate::kind::{NsSet, NsType};
use crate::sys;
use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Creating or removing a named namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum NamedError {
    /// The name cannot be a file name.
    #[error("invalid namespace name {name:?}: use a plain file name (no `/`, not `.` or `..`)")]
    BadName {
        /// The name.
        name: String,
    },
    /// No type asked.
    #[error(
        "say which namespaces to create: --net, --uts, --ipc, --mount, --cgroup, --user, --time"
    )]
    NoTypes,
    /// Pid namespaces cannot be kept by name.
    #[error(
        "a pid namespace cannot be created by name: it exists only while its first process lives; use `cella ns unshare --pid --fork --persist DIR -- CMD` to keep one with its process"
    )]
    Pid,
    /// The name is taken.
    #[error("named {kind} namespace `{name}` exists at `{}`: remove it with `cella ns rm {name}`", path.display())]
    Exists {
        /// The type.
        kind: NsType,
        /// The name.
        name: String,
        /// Its file.
        path: PathBuf,
    },
    /// No namespace has this name.
    #[error("no named namespace `{name}` under `{}` or `{}`: see `cella ns ls`", netns.display(), base.display())]
    NotFound {
        /// The name.
        name: String,
        /// The netns dir.
        netns: PathBuf,
        /// The base dir.
        base: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("{what} `{}`", path.display())]
    Fs {
        /// The operation.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The child could not unshare.
    #[error("unshare {types} in the helper process (needs CAP_SYS_ADMIN: run as root)")]
    Unshare {
        /// The types.
        types: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// fork, pipe or wait failed.
    #[error("{what}")]
    Process {
        /// The operation.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Where named namespaces live.
#[derive(Clone, Debug)]
pub struct NamedDirs {
    /// Network namespaces (ip netns's directory): /run/netns.
    pub netns: PathBuf,
    /// Other types, one subdirectory per type: /run/cella/ns.
    pub base: PathBuf,
}

impl Default for NamedDirs {
    fn default() -> Self {
        NamedDirs {
            netns: "/run/netns".into(),
            base: "/run/cella/ns".into(),
        }
    }
}

impl NamedDirs {
    /// The file of the named namespace of type `kind`.
    pub fn path(&self, kind: NsType, name: &str) -> PathBuf {
        match kind {
            NsType::Net => self.netns.join(name),
            other => self.base.join(other.name()).join(name),
        }
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

fn fs_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> NamedError {
    let path = path.to_path_buf();
    move |source| NamedError::Fs { what, path, source }
}

/// Makes `dir` a mount point with the given propagation, binding it onto itself first
/// when it is not one (what ip netns does for /run/netns).
fn make_mount_point(dir: &Path, propagation: libc::c_ulong) -> Result<(), NamedError> {
    std::fs::create_dir_all(dir).map_err(fs_err("create directory", dir))?;
    let c = cpath(dir);
    match sys::mount(c"none", &c, None, propagation | libc::MS_REC) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => return Err(fs_err("change propagation of", dir)(e)),
    }
    sys::mount(&c, &c, None, libc::MS_BIND | libc::MS_REC)
        .map_err(fs_err("bind-mount onto itself", dir))?;
    sys::mount(c"none", &c, None, propagation | libc::MS_REC)
        .map_err(fs_err("change propagation of", dir))
}

fn check_name(name: &str) -> Result<(), NamedError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(NamedError::BadName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Creates the named namespaces `name` of the given types; returns their files.
pub fn create(name: &str, types: NsSet, dirs: &NamedDirs) -> Result<Vec<PathBuf>, NamedError> {
    check_name(name)?;
    if types.is_empty() {
        return Err(NamedError::NoTypes);
    }
    if types.contains(NsType::Pid) {
        return Err(NamedError::Pid);
    }
    let targets: Vec<(NsType, PathBuf)> = types.iter().map(|t| (t, dirs.path(t, name))).collect();
    for (kind, path) in &targets {
        if path.exists() {
            return Err(NamedError::Exists {
                kind: *kind,
                name: name.to_string(),
                path: path.clone(),
            });
        }
    }
    if types.contains(NsType::Net) {
        make_mount_point(&dirs.netns, libc::MS_SHARED)?;
    }
    if types.iter().any(|t| t != NsType::Net) {
        make_mount_point(&dirs.base, libc::MS_PRIVATE)?;
    }
    let mut created: Vec<PathBuf> = Vec::new();
    let mut mounted: Vec<PathBuf> = Vec::new();
    let result = (|| -> Result<(), NamedError> {
        for (_, path) in &targets {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(fs_err("create directory", parent))?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(fs_err("create", path))?;
            created.push(path.clone());
        }
        let (reader, reporter) = exec::report_pipe().map_err(|source| NamedError::Process {
            what: "make a pipe",
            source,
        })?;
        let (done_r, done_w) = sys::pipe().map_err(|source| NamedError::Process {
            what: "make a pipe",
            source,
        })?;
        let flags = types.clone_flags();
        let child = match sys::fork().map_err(|source| NamedError::Process {
            what: "fork",
            source,
        })? {
            sys::Forked::Child => {
                drop(done_w);
                if let Err(e) = sys::unshare(flags) {
                    reporter.fail(ChildStep::Unshare, &e);
                }
                reporter.report(ChildStep::Unshare, 0);
                let mut b = [0u8; 1];
                let _ = sys::read_full(done_r.as_fd(), &mut b);
                sys::exit_now(0)
            }
            sys::Forked::Parent(pid) => pid,
        };
        drop(reporter);
        drop(done_r);
        let report = reader.wait_code();
        let mut outcome = Ok(());
        match report {
            Ok(Some((ChildStep::Unshare, 0))) => {
                for (kind, path) in &targets {
                    let src =
                        PathBuf::from(format!("/proc/{child}/ns/{}", kind.for_children_name()));
                    if let Err(e) = sys::mount(&cpath(&src), &cpath(path), None, libc::MS_BIND) {
                        outcome = Err(fs_err("bind-mount the new namespace onto", path)(e));
                        break;
                    }
                    mounted.push(path.clone());
                }
            }
            Ok(Some((_, code))) => {
                let names: Vec<&str> = types.iter().map(NsType::name).collect();
                outcome = Err(NamedError::Unshare {
                    types: names.join(","),
                    source: io::Error::from_raw_os_error(code),
                });
            }
            Ok(None) => {
                outcome = Err(NamedError::Process {
                    what: "the helper process died",
                    source: io::Error::from_raw_os_error(libc::ECHILD),
                })
            }
            Err(source) => {
                outcome = Err(NamedError::Process {
                    what: "read the helper's report",
                    source,
                })
            }
        }
        drop(done_w);
        let _ = sys::wait_exit_code(child);
        outcome
    })();
    if let Err(e) = result {
        for p in &mounted {
            let _ = sys::umount_detach(&cpath(p));
        }
        for p in &created {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }
    Ok(targets.into_iter().map(|(_, p)| p).collect())
}

/// Removes every named namespace called `name` (any type); returns the files removed.
/// The namespace itself goes away once no process or other mount holds it.
pub fn remove(name: &str, dirs: &NamedDirs) -> Result<Vec<PathBuf>, NamedError> {
    check_name(name)?;
    let mut removed = Vec::new();
    for kind in NsType::ALL {
        let path = dirs.path(kind, name);
        if std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        match sys::umount_detach(&cpath(&path)) {
            Ok(()) => {}
            // Not mounted (a leftover file): just remove it.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(fs_err("unmount", &path)(e)),
        }
        std::fs::remove_file(&path).map_err(fs_err("remove", &path))?;
        removed.push(path);
    }
    if removed.is_empty() {
        return Err(NamedError::NotFound {
            name: name.to_string(),
            netns: dirs.netns.clone(),
            base: dirs.base.clone(),
        });
    }
    Ok(removed)
}
