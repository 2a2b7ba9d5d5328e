//! Named network namespaces, laid out as `ip netns` lays them out: `/run/netns/NAME` is a
//! bind mount of a namespace file, and `/run/netns` is a shared mount point so that a
//! namespace named in one mount namespace is seen in the others.
//!
//! Work inside a namespace runs on a short-lived thread ([`Netns::run`]) that joins the
//! namespace and then ends, so no thread is ever left in the wrong namespace, even when the
//! work panics.

use crate::sys;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where named network namespaces live (the same directory as iproute2's).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Errors of named-namespace operations.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The name cannot be a file name under /run/netns.
    #[error("network namespace name {0:?} is invalid: use 1-64 characters, no `/`")]
    InvalidName(String),
    /// A namespace of that name exists already.
    #[error("network namespace {0:?} already exists")]
    Exists(String),
    /// No namespace at that name or path.
    #[error("network namespace `{}` does not exist", .0.display())]
    NotFound(PathBuf),
    /// An operation on a path failed.
    #[error("{op} `{}`", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The helper thread that enters the namespace could not be started.
    #[error("start a thread to enter network namespace `{}`", path.display())]
    Thread {
        /// The namespace.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NetnsError + 'a {
    move |source| NetnsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A network namespace named by `ip netns`-style name or by a path (`/proc/PID/ns/net`,
/// a bind mount anywhere).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetnsRef {
    /// A name under /run/netns.
    Name(String),
    /// A namespace file.
    Path(PathBuf),
}

impl NetnsRef {
    /// Reads `s` as a path when it holds a `/`, else as a name.
    pub fn parse(s: &str) -> NetnsRef {
        if s.contains('/') {
            NetnsRef::Path(PathBuf::from(s))
        } else {
            NetnsRef::Name(s.into())
        }
    }

    /// The namespace file this refers to.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsRef::Name(n) => Path::new(NETNS_RUN_DIR).join(n),
            NetnsRef::Path(p) => p.clone(),
        }
    }

    /// A short label for the namespace: the name, or the path's text.
    pub fn label(&self) -> String {
        match self {
            NetnsRef::Name(n) => n.clone(),
            NetnsRef::Path(p) => p.display().to_string(),
        }
    }
}

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    path: PathBuf,
}

impl Netns {
    /// Opens the namespace `r` refers to; a missing file is [`NetnsError::NotFound`].
    pub fn open(r: &NetnsRef) -> Result<Netns, NetnsError> {
        let path = r.path();
        if let NetnsRef::Name(n) = r {
            check_name(n)?;
        }
        let f = File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                NetnsError::NotFound(path.clone())
            } else {
                NetnsError::Io {
                    op: "open network namespace",
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        let fd = OwnedFd::from(f);
        // A plain file (a leftover of a failed `add`, or a wrong path) is not a namespace:
        // setns would reject it later with EINVAL; say so now, naming the file. Namespace
        // files all live on the nsfs device, the one /proc/self/ns/net is on.
        let own = Path::new("/proc/self/ns/net");
        let nsfs = sys::ns_id(File::open(own).map_err(io_err("open", own))?.as_fd())
            .map_err(io_err("stat", own))?;
        let here = sys::ns_id(fd.as_fd()).map_err(io_err("stat", &path))?;
        if here.0 != nsfs.0 {
            return Err(NetnsError::NotFound(path));
        }
        Ok(Netns { fd, path })
    }

    /// The network namespace of the calling thread.
    pub fn current() -> Result<Netns, NetnsError> {
        let path = PathBuf::from("/proc/thread-self/ns/net");
        let f = File::open(&path).map_err(io_err("open", &path))?;
        Ok(Netns { fd: f.into(), path })
    }

    /// The file this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace file descriptor (for IFLA_NET_NS_FD and setns).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Runs `f` on a short-lived thread that has joined this namespace, and returns its
    /// result. The thread ends with `f`, so it never serves anything else; a panic in `f`
    /// is re-raised here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let fd = self.fd();
        std::thread::scope(|s| {
            let h = std::thread::Builder::new()
                .name("cella-netns".into())
                .spawn_scoped(s, move || -> io::Result<T> {
                    sys::setns_net(fd)?;
                    Ok(f())
                })
                .map_err(|source| NetnsError::Thread {
                    path: self.path.clone(),
                    source,
                })?;
            match h.join() {
                Ok(r) => r.map_err(io_err("enter network namespace", &self.path)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Prepares `cmd` so that the child joins this namespace before exec, in a mount
    /// namespace of its own with /sys remounted, as `ip netns exec` does (so that
    /// /sys/class/net shows this namespace's links).
    pub fn prepare_command(&self, cmd: &mut Command) -> Result<(), NetnsError> {
        let fd = self.fd.try_clone().map_err(io_err("dup", &self.path))?;
        // SAFETY: the closure runs in the forked child before exec and only makes raw
        // system calls (setns, unshare, mount, umount2) on the fd and C strings prepared
        // here, so it allocates nothing and takes no lock between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                sys::setns_net(fd.as_fd())?;
                sys::unshare(libc::CLONE_NEWNS)?;
                sys::mount_c(None, c"/", None, libc::MS_SLAVE | libc::MS_REC)?;
                // Best effort, as iproute2: a /sys that cannot be replaced keeps the old view.
                if sys::umount2_c(c"/sys", libc::MNT_DETACH).is_ok() {
                    sys::mount_c(Some(c"sysfs"), c"/sys", Some(c"sysfs"), 0)?;
                }
                Ok(())
            });
        }
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), NetnsError> {
    if name.is_empty() || name.len() > 64 || name.contains('/') || name == "." || name == ".." {
        return Err(NetnsError::InvalidName(name.into()));
    }
    Ok(())
}

/// Makes /run/netns exist and be a shared mount point, as `ip netns add` does, so bind
/// mounts made under it propagate to every mount namespace that shares it.
fn ensure_run_dir() -> Result<(), NetnsError> {
    let dir = Path::new(NETNS_RUN_DIR);
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    // Two concurrent adds must not both find /run/netns unmounted and both bind it: the
    // second mount would hide the namespaces bound under the first. The lock is on the
    // directory itself, so no lock file shows up as a namespace name.
    let guard = File::open(dir).map_err(io_err("open", dir))?;
    sys::flock_exclusive(guard.as_fd()).map_err(io_err("lock", dir))?;
    let shared = libc::MS_SHARED | libc::MS_REC;
    match sys::mount(None, dir, Some("none"), shared) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then share it.
            sys::mount(Some(dir), dir, Some("none"), libc::MS_BIND | libc::MS_REC)
                .map_err(io_err("bind-mount", dir))?;
            sys::mount(None, dir, Some("none"), shared).map_err(io_err("make shared", dir))
        }
        Err(e) => Err(NetnsError::Io {
            op: "make shared",
            path: dir.into(),
            source: e,
        }),
    }
}

/// Creates a new network namespace named `name` (`/run/netns/NAME`) and returns its path.
pub fn add(name: &str) -> Result<PathBuf, NetnsError> {
    check_name(name)?;
    ensure_run_dir()?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                NetnsError::Exists(name.into())
            } else {
                NetnsError::Io {
                    op: "create",
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
    // The new namespace is made by a thread that leaves it at once by ending.
    let made = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            sys::unshare(libc::CLONE_NEWNET)?;
            sys::mount(
                Some(Path::new("/proc/thread-self/ns/net")),
                &path,
                Some("none"),
                libc::MS_BIND,
            )
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    });
    if let Err(e) = made {
        let _ = fs::remove_file(&path);
        return Err(NetnsError::Io {
            op: "create network namespace at",
            path,
            source: e,
        });
    }
    Ok(path)
}

/// Removes the named namespace: unmounts and deletes `/run/netns/NAME`. The kernel frees
/// the namespace when its last user leaves.
pub fn delete(name: &str) -> Result<(), NetnsError> {
    check_name(name)?;
    let path = Path::new(NETNS_RUN_DIR).join(name);
    if !path.exists() {
        return Err(NetnsError::NotFound(path));
    }
    match sys::umount2(&path, libc::MNT_DETACH) {
        Ok(()) => {}
        // A file that is not a mount point is a leftover of a failed add: remove it too.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
        Err(e) => {
            return Err(NetnsError::Io {
                op: "unmount",
                path,
                source: e,
            });
        }
    }
    fs::remove_file(&path).map_err(io_err("remove", &path))
}

/// The names under /run/netns, sorted.
pub fn list() -> Result<Vec<String>, NetnsError> {
    let dir = Path::new(NETNS_RUN_DIR);
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(NetnsError::Io {
                op: "read directory",
                path: dir.into(),
                source: e,
            });
        }
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}
