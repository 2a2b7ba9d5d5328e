//! `cella ns enter`: run a command in the namespaces of a process or container, as
//! nsenter does.
//!
//! Order, and why: every namespace fd (and the target's root and cwd) is opened first,
//! while /proc/<pid> is reachable from our own namespaces; then the user namespace is
//! joined first (joining others needs CAP_SYS_ADMIN in their owner, which entering it
//! gives); then the rest in one pass, skipping those we are already in (each setns can
//! wait for an RCU grace period); then root and cwd; then credentials. Pid and time
//! namespaces apply to children only, so a child is forked to exec the command when one
//! of them was joined.

use crate::container::{self, ContainerError};
use crate::exec::{self, ChildStep, ExecError, ExecPlan};
use crate::kind::{NsSet, NsType};
use crate::list::parse_ns_link;
use crate::sys;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Entering failed.
#[derive(Debug, thiserror::Error)]
pub enum EnterError {
    /// The target process is gone.
    #[error(
        "pid {pid} has exited (or never existed): pick a live process, e.g. from `cella ns ls`"
    )]
    PidExited {
        /// The pid.
        pid: i32,
    },
    /// The container could not be resolved.
    #[error(transparent)]
    Container(#[from] ContainerError),
    /// A namespace file of the target could not be opened.
    #[error("open `/proc/{pid}/ns/{kind}`: run as root or as the owner of pid {pid}")]
    OpenNamespace {
        /// Target pid.
        pid: i32,
        /// Namespace type.
        kind: NsType,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A directory (root or cwd) could not be opened.
    #[error("open `{}`", path.display())]
    OpenDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Joining the user namespace was refused.
    #[error(
        "join the user namespace of pid {pid}: joining a user namespace needs CAP_SYS_ADMIN in its owner: run as root or enter as its owner"
    )]
    UserDenied {
        /// Target pid.
        pid: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Joining a namespace was refused for lack of privilege.
    #[error(
        "join the {kind} namespace of pid {pid}: this needs CAP_SYS_ADMIN in the user namespace that owns it: run as root, or add --user to enter that user namespace first"
    )]
    Denied {
        /// Namespace type.
        kind: NsType,
        /// Target pid.
        pid: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// setns failed for another reason.
    #[error("join the {kind} namespace of pid {pid}")]
    Setns {
        /// Namespace type.
        kind: NsType,
        /// Target pid.
        pid: i32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// chroot or chdir failed.
    #[error("change {what} to `{}`", path.display())]
    Dir {
        /// "root" or "working directory".
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Setting uid/gid failed.
    #[error("set uid {uid:?} gid {gid:?}: check that they are mapped in the user namespace")]
    Credentials {
        /// Uid asked.
        uid: Option<u32>,
        /// Gid asked.
        gid: Option<u32>,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The command is malformed.
    #[error(transparent)]
    Command(#[from] ExecError),
    /// fork or wait failed.
    #[error("{what}")]
    Process {
        /// The operation.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The command could not be executed.
    #[error("execute `{program}` in the target (is it installed in the target's root and PATH?)")]
    Exec {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Where to put the root or working directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirChoice {
    /// Leave it as setns left it.
    Keep,
    /// The target process's root (or cwd).
    Target,
    /// This path: for the root, a path in our own mount namespace (as nsenter -r DIR);
    /// for the working directory, a path inside the new root.
    Path(PathBuf),
}

/// What to enter and run.
#[derive(Clone, Debug)]
pub struct EnterOptions {
    /// Target process.
    pub pid: i32,
    /// Namespaces to join.
    pub types: NsSet,
    /// Root directory; `None` means the target's when the mount namespace is joined.
    pub root: Option<DirChoice>,
    /// Working directory; `None` means the target's when the mount namespace is joined.
    pub wd: Option<DirChoice>,
    /// Keep our uid/gid/groups when joining a user namespace (default: become 0/0).
    pub preserve_credentials: bool,
    /// Uid to switch to.
    pub uid: Option<u32>,
    /// Gid to switch to.
    pub gid: Option<u32>,
    /// The command; empty means `$SHELL` or /bin/sh.
    pub command: Vec<OsString>,
}

/// Resolves `-t PID|CONTAINER`: a number naming a live process, else a container id.
pub fn resolve_target(target: &str, state_root: &Path) -> Result<i32, EnterError> {
    if let Ok(pid) = target.parse::<i32>() {
        if pid > 0 && Path::new(&format!("/proc/{pid}")).exists() {
            return Ok(pid);
        }
        if container::running(state_root, target).is_err() {
            return Err(EnterError::PidExited { pid });
        }
    }
    Ok(container::running(state_root, target)?.pid)
}

fn open_dir(path: &Path) -> Result<OwnedFd, EnterError> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
    sys::openat(None, &c, libc::O_PATH | libc::O_DIRECTORY).map_err(|source| EnterError::OpenDir {
        path: path.to_path_buf(),
        source,
    })
}

fn own_inode(kind: NsType) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/ns/{}", kind.for_children_name())).ok()?;
    parse_ns_link(link.as_os_str().as_encoded_bytes()).map(|(_, i)| i)
}

/// Joins the namespaces and runs the command; returns its exit status (128+signal when
/// killed). Without a pid or time namespace the command replaces this process, so this
/// returns only on failure.
pub fn enter(opts: &EnterOptions) -> Result<u8, EnterError> {
    let pid = opts.pid;
    let gone = || !Path::new(&format!("/proc/{pid}")).exists();
    if gone() {
        return Err(EnterError::PidExited { pid });
    }
    let plan = ExecPlan::new(&opts.command)?;

    // 1. Open everything while the target is reachable through our /proc.
    let mut fds: Vec<(NsType, OwnedFd)> = Vec::new();
    for kind in opts.types.iter() {
        let path = CString::new(format!("/proc/{pid}/ns/{}", kind.name())).unwrap_or_default();
        let fd = sys::openat(None, &path, libc::O_RDONLY).map_err(|source| {
            if gone() || source.raw_os_error() == Some(libc::ENOENT) {
                EnterError::PidExited { pid }
            } else {
                EnterError::OpenNamespace { pid, kind, source }
            }
        })?;
        let same = sys::fstat_ino(fd.as_fd()).ok().map(|(i, _)| i) == own_inode(kind);
        if !same {
            fds.push((kind, fd));
        }
    }
    let mnt = opts.types.contains(NsType::Mnt);
    let default = if mnt {
        DirChoice::Target
    } else {
        DirChoice::Keep
    };
    let root = opts.root.clone().unwrap_or(default.clone());
    let wd = opts.wd.clone().unwrap_or(default);
    let root_fd = match &root {
        DirChoice::Keep => None,
        DirChoice::Target => Some(open_dir(Path::new(&format!("/proc/{pid}/root")))?),
        DirChoice::Path(p) => Some(open_dir(p)?),
    };
    let wd_fd = match &wd {
        DirChoice::Target => open_dir(Path::new(&format!("/proc/{pid}/cwd"))).ok(),
        _ => None,
    };

    // 2. User namespace first, then the others in one pass.
    fds.sort_by_key(|(k, _)| match k {
        NsType::User => 0,
        NsType::Cgroup => 1,
        NsType::Ipc => 2,
        NsType::Uts => 3,
        NsType::Net => 4,
        NsType::Pid => 5,
        NsType::Mnt => 6,
        NsType::Time => 7,
    });
    let mut need_fork = false;
    let mut joined_user = false;
    for (kind, fd) in &fds {
        sys::setns(fd.as_fd(), kind.clone_flag())
            .map_err(|source| setns_error(*kind, pid, source))?;
        need_fork |= matches!(kind, NsType::Pid | NsType::Time);
        joined_user |= *kind == NsType::User;
    }
    drop(fds);

    // 3. Root, then working directory (inside the new root).
    if let Some(fd) = &root_fd {
        let path = match &root {
            DirChoice::Path(p) => p.clone(),
            _ => format!("/proc/{pid}/root").into(),
        };
        sys::fchdir(fd.as_fd())
            .and_then(|()| sys::chroot(c"."))
            .map_err(|source| EnterError::Dir {
                what: "root",
                path,
                source,
            })?;
    }
    match (&wd, &wd_fd) {
        (DirChoice::Target, Some(fd)) => {
            sys::fchdir(fd.as_fd()).map_err(|source| EnterError::Dir {
                what: "working directory",
                path: format!("/proc/{pid}/cwd").into(),
                source,
            })?
        }
        (DirChoice::Path(p), _) => {
            let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default();
            sys::chdir(&c).map_err(|source| EnterError::Dir {
                what: "working directory",
                path: p.clone(),
                source,
            })?
        }
        // A new root with no working directory asked: never stay outside the root.
        _ if root_fd.is_some() => sys::chdir(c"/").map_err(|source| EnterError::Dir {
            what: "working directory",
            path: "/".into(),
            source,
        })?,
        _ => {}
    }
    drop(root_fd);
    drop(wd_fd);

    // 4. Credentials: become root of a joined user namespace unless asked otherwise.
    let (uid, gid) = if joined_user && !opts.preserve_credentials {
        (Some(opts.uid.unwrap_or(0)), Some(opts.gid.unwrap_or(0)))
    } else {
        (opts.uid, opts.gid)
    };
    if gid.is_some() && !(joined_user && opts.preserve_credentials) {
        // A user namespace with setgroups denied refuses this; that is fine.
        if let Err(e) = sys::set_ids(None, None, true) {
            if e.raw_os_error() != Some(libc::EPERM) {
                return Err(EnterError::Credentials {
                    uid,
                    gid,
                    source: e,
                });
            }
        }
    }
    sys::set_ids(uid, gid, false).map_err(|source| EnterError::Credentials { uid, gid, source })?;

    // 5. Run.
    if !need_fork {
        let source = plan.exec();
        return Err(EnterError::Exec {
            program: plan.program(),
            source,
        });
    }
    run_child(&plan)
}

/// Names a refused setns: EPERM means missing CAP_SYS_ADMIN in the owner, and what to do
/// differs for the user namespace itself.
fn setns_error(kind: NsType, pid: i32, source: io::Error) -> EnterError {
    match (kind, source.raw_os_error()) {
        (NsType::User, Some(libc::EPERM)) => EnterError::UserDenied { pid, source },
        (_, Some(libc::EPERM)) => EnterError::Denied { kind, pid, source },
        _ => EnterError::Setns { kind, pid, source },
    }
}

/// Forks a child that execs `plan`, waits for it, and returns its status.
pub(crate) fn run_child(plan: &ExecPlan) -> Result<u8, EnterError> {
    let (reader, reporter) = exec::report_pipe().map_err(|source| EnterError::Process {
        what: "make a pipe",
        source,
    })?;
    match sys::fork().map_err(|source| EnterError::Process {
        what: "fork",
        source,
    })? {
        sys::Forked::Child => {
            let e = plan.exec();
            reporter.fail(ChildStep::Exec, &e)
        }
        sys::Forked::Parent(child) => {
            drop(reporter);
            sys::ignore_signal(libc::SIGINT, true);
            sys::ignore_signal(libc::SIGQUIT, true);
            let report = reader.wait();
            let code = sys::wait_exit_code(child).map_err(|source| EnterError::Process {
                what: "wait for the command",
                source,
            })?;
            match report {
                Ok(Some((_, source))) => Err(EnterError::Exec {
                    program: plan.program(),
                    source,
                }),
                _ => Ok(code),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_joins_say_what_to_do() {
        let eperm = || io::Error::from_raw_os_error(libc::EPERM);
        let user = setns_error(NsType::User, 7, eperm()).to_string();
        assert!(
            user.contains("joining a user namespace needs CAP_SYS_ADMIN in its owner: run as root or enter as its owner"),
            "{user}"
        );
        let net = setns_error(NsType::Net, 7, eperm()).to_string();
        assert!(
            net.contains("net namespace of pid 7") && net.contains("add --user"),
            "{net}"
        );
        let other = setns_error(NsType::Net, 7, io::Error::from_raw_os_error(libc::EINVAL));
        assert!(matches!(other, EnterError::Setns { .. }));
    }
}
