//! Landlock: an unprivileged, stackable filesystem and network allowlist.
//!
//! A [`Ruleset`] lists what a process may still do (read these trees, write that one,
//! connect to that TCP port); everything else the kernel's Landlock ABI knows about is
//! denied. It is used in two steps, because the second runs in a forked child between
//! fork and exec:
//!
//! 1. [`Ruleset::prepare`], before the fork: opens every path (`O_PATH`), creates the
//!    ruleset fd and adds the rules. It allocates and can fail with errors naming the path.
//! 2. [`PreparedRuleset::restrict_self`], in the child: optionally sets no_new_privs, then
//!    `landlock_restrict_self`. Two system calls, no allocation, no locks: it is
//!    async-signal-safe.
//!
//! Rules hold inodes, not path names: a rule on a directory covers everything beneath it,
//! also through bind mounts and after pivot_root, and a mount made later on top of its
//! subtree gets the directory's rights. A mount made in the child has new inodes the
//! parent cannot open: to give one other rights, add its rule in the child, after the
//! mount and before restrict_self, with [`PreparedRuleset::allow_path_in_child`] (also
//! async-signal-safe).
//!
//! ABI versions (what `landlock_create_ruleset(NULL, 0, VERSION)` returns) and what each
//! adds:
//!
//! | ABI | Linux | adds |
//! |-----|-------|------|
//! | 1 | 5.13 | the 13 base filesystem rights (execute, read/write files, read dirs, remove, make) |
//! | 2 | 5.19 | `REFER`: linking or renaming a file into another directory |
//! | 3 | 6.2 | `TRUNCATE`: truncate(2), ftruncate(2), `O_TRUNC` |
//! | 4 | 6.7 | TCP `bind` and `connect` by port |
//! | 5 | 6.10 | `IOCTL_DEV`: ioctl(2) on character and block devices |
//! | 6 | 6.12 | scopes: abstract UNIX sockets and signals outside the sandbox's domain |
//! | 7 | 6.15 | audit logging flags for restrict_self (not used here) |
//!
//! A kernel newer than this module is told only about the rights listed here; the rights
//! it knows beyond them stay allowed.

use crate::sys;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The newest Landlock ABI whose rights this module knows.
pub const KNOWN_ABI: u32 = 7;

/// Filesystem access rights (`LANDLOCK_ACCESS_FS_*`), bits of a `u64`.
pub mod fs_access {
    /// Execute a file.
    pub const EXECUTE: u64 = 1 << 0;
    /// Open a file with write access.
    pub const WRITE_FILE: u64 = 1 << 1;
    /// Open a file with read access.
    pub const READ_FILE: u64 = 1 << 2;
    /// Open a directory or list its content.
    pub const READ_DIR: u64 = 1 << 3;
    /// Remove an empty directory or rename one away.
    pub const REMOVE_DIR: u64 = 1 << 4;
    /// Unlink (or rename away) a file.
    pub const REMOVE_FILE: u64 = 1 << 5;
    /// Create (or rename or link) a character device.
    pub const MAKE_CHAR: u64 = 1 << 6;
    /// Create (or rename) a directory.
    pub const MAKE_DIR: u64 = 1 << 7;
    /// Create (or rename or link) a regular file.
    pub const MAKE_REG: u64 = 1 << 8;
    /// Create (or rename or link) a UNIX domain socket.
    pub const MAKE_SOCK: u64 = 1 << 9;
    /// Create (or rename or link) a named pipe.
    pub const MAKE_FIFO: u64 = 1 << 10;
    /// Create (or rename or link) a block device.
    pub const MAKE_BLOCK: u64 = 1 << 11;
    /// Create (or rename or link) a symbolic link.
    pub const MAKE_SYM: u64 = 1 << 12;
    /// Link or rename a file into a different directory (ABI 2).
    pub const REFER: u64 = 1 << 13;
    /// Truncate a file (ABI 3).
    pub const TRUNCATE: u64 = 1 << 14;
    /// ioctl(2) on an opened character or block device (ABI 5).
    pub const IOCTL_DEV: u64 = 1 << 15;

    /// What [`Ruleset::read_only`](super::Ruleset::read_only) grants: read and execute
    /// files, list directories.
    pub const READ_ONLY: u64 = EXECUTE | READ_FILE | READ_DIR;
    /// The rights that apply to a file itself; the others only make sense on a directory
    /// (the kernel rejects them in a rule on a file).
    pub const FILE: u64 = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV;

    /// Lower-case names of the rights, bit n at index n (`--debug` output, docs).
    pub const NAMES: [&str; 16] = [
        "execute",
        "write_file",
        "read_file",
        "read_dir",
        "remove_dir",
        "remove_file",
        "make_char",
        "make_dir",
        "make_reg",
        "make_sock",
        "make_fifo",
        "make_block",
        "make_sym",
        "refer",
        "truncate",
        "ioctl_dev",
    ];

    /// The names of the rights set in `access`, lowest bit first.
    pub fn names(access: u64) -> impl Iterator<Item = &'static str> {
        NAMES
            .iter()
            .enumerate()
            .filter(move |(bit, _)| access & (1 << bit) != 0)
            .map(|(_, name)| *name)
    }
}

/// Network access rights (`LANDLOCK_ACCESS_NET_*`, ABI 4).
pub mod net_access {
    /// bind(2) a TCP socket to a port.
    pub const BIND_TCP: u64 = 1 << 0;
    /// connect(2) a TCP socket to a port.
    pub const CONNECT_TCP: u64 = 1 << 1;
}

/// Scopes (`LANDLOCK_SCOPE_*`, ABI 6): IPC that may not leave the sandbox's domain.
pub mod scope {
    /// No connecting to abstract UNIX sockets created outside the domain.
    pub const ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
    /// No signals to processes outside the domain.
    pub const SIGNAL: u64 = 1 << 1;
}

/// All filesystem rights that Landlock ABI `abi` knows (0 for ABI 0).
pub fn fs_rights(abi: u32) -> u64 {
    match abi {
        0 => 0,
        1 => (1 << 13) - 1,
        2 => (1 << 14) - 1,
        3 | 4 => (1 << 15) - 1,
        _ => (1 << 16) - 1,
    }
}

/// All network rights that Landlock ABI `abi` knows.
pub fn net_rights(abi: u32) -> u64 {
    if abi >= 4 {
        net_access::BIND_TCP | net_access::CONNECT_TCP
    } else {
        0
    }
}

/// All scopes that Landlock ABI `abi` knows.
pub fn scopes(abi: u32) -> u64 {
    if abi >= 6 {
        scope::ABSTRACT_UNIX_SOCKET | scope::SIGNAL
    } else {
        0
    }
}

/// Errors of building and preparing a ruleset.
#[derive(Debug, Error)]
pub enum LandlockError {
    /// The kernel cannot do Landlock at all.
    #[error("landlock is not supported by this kernel: {reason}")]
    Unsupported {
        /// Why, in words a user can act on.
        reason: &'static str,
        /// The system call's error, when there was one.
        #[source]
        source: Option<io::Error>,
    },
    /// Querying the ABI version failed for another reason.
    #[error("landlock_create_ruleset(LANDLOCK_CREATE_RULESET_VERSION)")]
    Version(#[source] io::Error),
    /// Creating the ruleset fd failed.
    #[error("landlock_create_ruleset (ABI {abi})")]
    CreateRuleset {
        /// The ABI the ruleset was built for.
        abi: u32,
        /// The system call's error.
        #[source]
        source: io::Error,
    },
    /// Opening a path named in a rule failed.
    #[error("open `{path}` for a landlock rule")]
    Open {
        /// The path of the rule.
        path: PathBuf,
        /// open(2)'s error.
        #[source]
        source: io::Error,
    },
    /// Finding whether a rule's path is a directory failed.
    #[error("stat `{path}` for a landlock rule")]
    Stat {
        /// The path of the rule.
        path: PathBuf,
        /// fstat(2)'s error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a rule on a path.
    #[error("landlock_add_rule `{path}` (access {access:#x})")]
    AddPathRule {
        /// The path of the rule.
        path: PathBuf,
        /// The rights asked for, after masking for the ABI and the file type.
        access: u64,
        /// landlock_add_rule's error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused a rule on a TCP port.
    #[error("landlock_add_rule TCP port {port} (access {access:#x})")]
    AddPortRule {
        /// The port.
        port: u16,
        /// The network rights asked for.
        access: u64,
        /// landlock_add_rule's error.
        #[source]
        source: io::Error,
    },
}

/// Errors of applying a prepared ruleset. They carry only the errno, so that making one
/// allocates nothing (it happens between fork and exec).
#[derive(Debug, Error)]
pub enum RestrictError {
    /// prctl(PR_SET_NO_NEW_PRIVS) failed.
    #[error("prctl(PR_SET_NO_NEW_PRIVS)")]
    NoNewPrivs(#[source] io::Error),
    /// landlock_restrict_self failed (EPERM: neither no_new_privs nor CAP_SYS_ADMIN).
    #[error("landlock_restrict_self")]
    RestrictSelf(#[source] io::Error),
}

/// A rule added in the child failed. Holds the caller's path by reference, so making one
/// allocates nothing.
#[derive(Debug, Error)]
#[error("{step_name} `{path}` for a landlock rule", step_name = step_name(self.step), path = self.path.to_string_lossy())]
pub struct ChildRuleError<'a> {
    /// The path of the rule.
    pub path: &'a CStr,
    /// What failed.
    pub step: RuleStep,
    /// The system call's error.
    #[source]
    pub source: io::Error,
}

fn step_name(step: RuleStep) -> &'static str {
    match step {
        RuleStep::Open => "open",
        RuleStep::Stat => "stat",
        RuleStep::Add(_) => "landlock_add_rule",
    }
}

/// The Landlock ABI version of the running kernel (1 and up).
pub fn abi_version() -> Result<u32, LandlockError> {
    match raw::abi_version() {
        Ok(v) if v > 0 => Ok(v as u32),
        Ok(_) => Err(LandlockError::Unsupported {
            reason: "the kernel reports Landlock ABI version 0",
            source: None,
        }),
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOSYS) => Err(LandlockError::Unsupported {
                reason: "built without CONFIG_SECURITY_LANDLOCK",
                source: Some(e),
            }),
            Some(libc::EOPNOTSUPP) => Err(LandlockError::Unsupported {
                reason: "built in but not enabled at boot (add `landlock` to the lsm= kernel parameter)",
                source: Some(e),
            }),
            _ => Err(LandlockError::Version(e)),
        },
    }
}

/// A rule on a path, before its path is opened.
#[derive(Clone, Debug)]
struct PathRule {
    path: PathBuf,
    access: u64,
}

/// A set of Landlock rules, not yet given to the kernel.
#[derive(Clone, Debug)]
pub struct Ruleset {
    abi: u32,
    handled_fs: u64,
    handled_net: u64,
    scoped: u64,
    paths: Vec<PathRule>,
    ports: Vec<(u16, u64)>,
    no_new_privs: bool,
}

impl Ruleset {
    /// An empty ruleset for ABI `abi` (from [`abi_version`]) that handles every right the
    /// ABI knows: with no rules added it denies all filesystem access, TCP bind and
    /// connect (ABI 4) and IPC out of the sandbox (ABI 6).
    pub fn new(abi: u32) -> Ruleset {
        let known = abi.min(KNOWN_ABI);
        Ruleset {
            abi: known,
            handled_fs: fs_rights(known),
            handled_net: net_rights(known),
            scoped: scopes(known),
            paths: Vec::new(),
            ports: Vec::new(),
            no_new_privs: false,
        }
    }

    /// [`Ruleset::new`] for the running kernel's ABI.
    pub fn for_kernel() -> Result<Ruleset, LandlockError> {
        abi_version().map(Ruleset::new)
    }

    /// The ABI this ruleset is built for (the kernel's, capped at [`KNOWN_ABI`]).
    pub fn abi(&self) -> u32 {
        self.abi
    }

    /// The filesystem rights the ruleset restricts.
    pub fn handled_fs(&self) -> u64 {
        self.handled_fs
    }

    /// The path rules as given (before masking for the ABI and the file type).
    pub fn path_rules(&self) -> impl Iterator<Item = (&Path, u64)> {
        self.paths.iter().map(|r| (r.path.as_path(), r.access))
    }

    /// The TCP port rules: port and [`net_access`] rights.
    pub fn tcp_rules(&self) -> &[(u16, u64)] {
        &self.ports
    }

    /// True when TCP bind and connect are restricted (ABI 4 and not [`Ruleset::allow_all_tcp`]).
    pub fn restricts_tcp(&self) -> bool {
        self.handled_net != 0
    }

    /// Allows reading and executing files and listing directories under `path` (or the
    /// file `path` itself).
    pub fn read_only(self, path: impl Into<PathBuf>) -> Ruleset {
        self.allow_path(path, fs_access::READ_ONLY)
    }

    /// Allows everything the ABI knows under `path` (or, on a file, everything that
    /// applies to a file: read, write, execute, truncate, device ioctls).
    pub fn read_write(self, path: impl Into<PathBuf>) -> Ruleset {
        self.allow_path(path, u64::MAX)
    }

    /// Allows the [`fs_access`] rights `access` under `path`. Rights the ABI does not
    /// know are dropped, and on a file the directory-only rights are dropped, so the
    /// same call works on any kernel and on both kinds of path.
    pub fn allow_path(mut self, path: impl Into<PathBuf>, access: u64) -> Ruleset {
        self.paths.push(PathRule {
            path: path.into(),
            access,
        });
        self
    }

    /// Allows connect(2) of TCP sockets to `port`. Without ABI 4 TCP is not restricted
    /// at all, so there is nothing to allow and the call does nothing.
    pub fn allow_tcp_connect(self, port: u16) -> Ruleset {
        self.allow_port(port, net_access::CONNECT_TCP)
    }

    /// Allows bind(2) of TCP sockets to `port` (as [`Ruleset::allow_tcp_connect`]).
    pub fn allow_tcp_bind(self, port: u16) -> Ruleset {
        self.allow_port(port, net_access::BIND_TCP)
    }

    fn allow_port(mut self, port: u16, access: u64) -> Ruleset {
        match self.ports.iter_mut().find(|(p, _)| *p == port) {
            Some((_, a)) => *a |= access,
            None => self.ports.push((port, access)),
        }
        self
    }

    /// Leaves TCP bind and connect unrestricted (for a sandbox that has its own network
    /// namespace and firewall, or none).
    pub fn allow_all_tcp(mut self) -> Ruleset {
        self.handled_net = 0;
        self
    }

    /// Leaves abstract UNIX sockets and signals outside the domain allowed (ABI 6 scopes
    /// off).
    pub fn unscoped(mut self) -> Ruleset {
        self.scoped = 0;
        self
    }

    /// Makes [`PreparedRuleset::restrict_self`] set no_new_privs first, which Landlock
    /// requires of a process without CAP_SYS_ADMIN.
    pub fn no_new_privs(mut self, set: bool) -> Ruleset {
        self.no_new_privs = set;
        self
    }

    /// The rights a rule for `access` gets on a directory (`is_dir`) or a file.
    pub fn effective_access(&self, access: u64, is_dir: bool) -> u64 {
        mask_access(self.handled_fs, access, is_dir)
    }

    /// Creates the ruleset in the kernel and adds every rule. Runs before the fork: it
    /// opens the paths and allocates. A rule that grants nothing on its path (say
    /// `MAKE_REG` on a file) is left out, which denies the same as the rule would.
    pub fn prepare(&self) -> Result<PreparedRuleset, LandlockError> {
        if self.abi == 0 {
            return Err(LandlockError::Unsupported {
                reason: "ruleset built for Landlock ABI 0",
                source: None,
            });
        }
        let attr = raw::RulesetAttr {
            handled_access_fs: self.handled_fs,
            handled_access_net: self.handled_net,
            scoped: self.scoped,
        };
        let fd = raw::create_ruleset(&attr, raw::attr_size(self.abi)).map_err(|source| {
            LandlockError::CreateRuleset {
                abi: self.abi,
                source,
            }
        })?;
        for rule in &self.paths {
            let open = |source| LandlockError::Open {
                path: rule.path.clone(),
                source,
            };
            let c_path = CString::new(rule.path.as_os_str().as_bytes())
                .map_err(|e| open(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
            add_path_rule(fd.as_fd(), self.handled_fs, &c_path, rule.access).map_err(
                |(step, source)| match step {
                    RuleStep::Open => open(source),
                    RuleStep::Stat => LandlockError::Stat {
                        path: rule.path.clone(),
                        source,
                    },
                    RuleStep::Add(access) => LandlockError::AddPathRule {
                        path: rule.path.clone(),
                        access,
                        source,
                    },
                },
            )?;
        }
        if self.handled_net != 0 {
            for &(port, access) in &self.ports {
                raw::add_port_rule(fd.as_fd(), access, port).map_err(|source| {
                    LandlockError::AddPortRule {
                        port,
                        access,
                        source,
                    }
                })?;
            }
        }
        Ok(PreparedRuleset {
            fd,
            abi: self.abi,
            handled_fs: self.handled_fs,
            no_new_privs: self.no_new_privs,
        })
    }
}

/// The step of adding a path rule that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleStep {
    /// Opening the path (O_PATH).
    Open,
    /// Finding whether it is a directory.
    Stat,
    /// landlock_add_rule, with the rights it was given.
    Add(u64),
}

/// The rights a rule for `access` gets under `handled` on a directory or a file.
fn mask_access(handled: u64, access: u64, is_dir: bool) -> u64 {
    let access = access & handled;
    if is_dir {
        access
    } else {
        access & fs_access::FILE
    }
}

/// Opens `path` (O_PATH: no read or write access, any file type), masks `access` for
/// its type and adds the rule, unless it grants nothing. Allocates nothing.
fn add_path_rule(
    ruleset: BorrowedFd<'_>,
    handled: u64,
    path: &CStr,
    access: u64,
) -> Result<(), (RuleStep, io::Error)> {
    let file = sys::open(path, libc::O_PATH, 0).map_err(|e| (RuleStep::Open, e))?;
    add_fd_rule(ruleset, handled, file.as_fd(), access)
}

/// [`add_path_rule`] of an open descriptor.
fn add_fd_rule(
    ruleset: BorrowedFd<'_>,
    handled: u64,
    file: BorrowedFd<'_>,
    access: u64,
) -> Result<(), (RuleStep, io::Error)> {
    let is_dir = raw::is_dir(file).map_err(|e| (RuleStep::Stat, e))?;
    let access = mask_access(handled, access, is_dir);
    if access == 0 {
        return Ok(());
    }
    raw::add_path_rule(ruleset, access, file).map_err(|e| (RuleStep::Add(access), e))
}

/// A ruleset the kernel holds, ready to be applied in a child. Its descriptor is
/// close-on-exec, so it does not reach the sandboxed program.
#[derive(Debug)]
pub struct PreparedRuleset {
    fd: OwnedFd,
    abi: u32,
    handled_fs: u64,
    no_new_privs: bool,
}

impl AsFd for PreparedRuleset {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl PreparedRuleset {
    /// The ABI the ruleset was built for.
    pub fn abi(&self) -> u32 {
        self.abi
    }

    /// Adds a rule in the child, for what only exists there: a rule holds an inode, and
    /// a mount made in the child (a tmpfs, a new /proc) has inodes the parent could not
    /// open. Rights are masked as in [`Ruleset::allow_path`]. Async-signal-safe (open,
    /// fstat, landlock_add_rule, close). The ruleset object is shared with the parent's
    /// descriptor, so the rule also applies to later children of the same prepared
    /// ruleset: prepare one per child.
    pub fn allow_path_in_child<'a>(
        &self,
        path: &'a CStr,
        access: u64,
    ) -> Result<(), ChildRuleError<'a>> {
        add_path_rule(self.fd.as_fd(), self.handled_fs, path, access)
            .map_err(|(step, source)| ChildRuleError { path, step, source })
    }

    /// Restricts the calling thread, and every process it later forks or execs, to the
    /// ruleset; sets no_new_privs first if the ruleset asked for it. Async-signal-safe:
    /// two system calls, no allocation, no locks, so it can run between fork and exec.
    /// Only the calling thread is restricted: call it in a single-threaded child.
    pub fn restrict_self(&self) -> Result<(), RestrictError> {
        if self.no_new_privs {
            sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(RestrictError::NoNewPrivs)?;
        }
        raw::restrict_self(self.fd.as_fd()).map_err(RestrictError::RestrictSelf)
    }
}

/// The three Landlock system calls. Nothing here allocates.
mod raw {
    use crate::sys::{check, check_long};
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

    const CREATE_RULESET_VERSION: u32 = 1 << 0;
    const RULE_PATH_BENEATH: libc::c_int = 1;
    const RULE_NET_PORT: libc::c_int = 2;

    /// `struct landlock_ruleset_attr` as of ABI 6.
    #[repr(C)]
    pub struct RulesetAttr {
        pub handled_access_fs: u64,
        pub handled_access_net: u64,
        pub scoped: u64,
    }

    /// How much of [`RulesetAttr`] a kernel of ABI `abi` knows. An older kernel takes a
    /// larger struct only if the fields it does not know are zero (else E2BIG); passing
    /// just its own size makes the call exactly the one that kernel was written for.
    pub fn attr_size(abi: u32) -> usize {
        match abi {
            0..=3 => 8,
            4 | 5 => 16,
            _ => 24,
        }
    }

    /// `struct landlock_path_beneath_attr` (packed in the kernel's header).
    #[repr(C, packed)]
    struct PathBeneathAttr {
        allowed_access: u64,
        parent_fd: i32,
    }

    /// `struct landlock_net_port_attr`.
    #[repr(C)]
    struct NetPortAttr {
        allowed_access: u64,
        port: u64,
    }

    /// landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION): the ABI version.
    pub fn abi_version() -> io::Result<libc::c_long> {
        // SAFETY: with the VERSION flag the kernel reads no attribute: the null pointer
        // and size 0 are what it requires.
        check_long(unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<RulesetAttr>(),
                0usize,
                CREATE_RULESET_VERSION,
            )
        })
    }

    /// landlock_create_ruleset(2) of the first `size` bytes of `attr`: a new ruleset fd.
    pub fn create_ruleset(attr: &RulesetAttr, size: usize) -> io::Result<OwnedFd> {
        assert!(size <= std::mem::size_of::<RulesetAttr>());
        // SAFETY: `attr` is a live RulesetAttr of which the kernel reads `size` bytes,
        // at most its full size (checked above).
        let fd = check_long(unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                attr as *const RulesetAttr,
                size,
                0u32,
            )
        })?;
        // SAFETY: without the VERSION flag the call returns a new descriptor
        // (close-on-exec) that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    /// fstat(2) of `fd` (an O_PATH fd works): whether it is a directory.
    pub fn is_dir(fd: BorrowedFd<'_>) -> io::Result<bool> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: the descriptor is borrowed, so open for the call; `st` is a live buffer
        // of the right type that the kernel fills.
        check(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
        // SAFETY: fstat succeeded, so it initialised `st`.
        let st = unsafe { st.assume_init() };
        Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
    }

    /// landlock_add_rule(2) of a path rule.
    pub fn add_path_rule(
        ruleset: BorrowedFd<'_>,
        access: u64,
        parent: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let attr = PathBeneathAttr {
            allowed_access: access,
            parent_fd: parent.as_raw_fd(),
        };
        // SAFETY: both descriptors are borrowed, so open for the call; `attr` is a live
        // local laid out as the kernel's packed struct, which it only reads.
        check_long(unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset.as_raw_fd(),
                RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0,
            )
        })
        .map(drop)
    }

    /// landlock_add_rule(2) of a TCP port rule.
    pub fn add_port_rule(ruleset: BorrowedFd<'_>, access: u64, port: u16) -> io::Result<()> {
        let attr = NetPortAttr {
            allowed_access: access,
            port: u64::from(port),
        };
        // SAFETY: the descriptor is borrowed, so open for the call; `attr` is a live
        // local laid out as the kernel's struct, which it only reads.
        check_long(unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset.as_raw_fd(),
                RULE_NET_PORT,
                &attr as *const NetPortAttr,
                0,
            )
        })
        .map(drop)
    }

    /// landlock_restrict_self(2) of the calling thread.
    pub fn restrict_self(ruleset: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: integer arguments only; the descriptor is borrowed, so open for the call.
        check_long(unsafe {
            libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0)
        })
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_grow_with_the_abi() {
        assert_eq!(fs_rights(0), 0);
        assert_eq!(fs_rights(1) & fs_access::REFER, 0);
        assert_ne!(fs_rights(2) & fs_access::REFER, 0);
        assert_eq!(fs_rights(2) & fs_access::TRUNCATE, 0);
        assert_ne!(fs_rights(3) & fs_access::TRUNCATE, 0);
        assert_eq!(fs_rights(4) & fs_access::IOCTL_DEV, 0);
        assert_ne!(fs_rights(5) & fs_access::IOCTL_DEV, 0);
        assert_eq!(fs_rights(7), fs_rights(5));
        assert_eq!(net_rights(3), 0);
        assert_eq!(net_rights(4), 3);
        assert_eq!(scopes(5), 0);
        assert_eq!(scopes(6), 3);
        assert_eq!(fs_rights(1).count_ones(), 13);
    }

    #[test]
    fn a_file_gets_only_file_rights() {
        let r = Ruleset::new(5);
        let all = r.effective_access(u64::MAX, true);
        assert_eq!(all, fs_rights(5));
        let file = r.effective_access(u64::MAX, false);
        assert_eq!(file, fs_access::FILE);
        assert_eq!(
            r.effective_access(fs_access::READ_ONLY, false),
            fs_access::EXECUTE | fs_access::READ_FILE
        );
        assert_eq!(r.effective_access(fs_access::MAKE_REG, false), 0);
        // ABI 1 knows neither TRUNCATE nor IOCTL_DEV.
        let old = Ruleset::new(1);
        assert_eq!(
            old.effective_access(u64::MAX, false),
            fs_access::EXECUTE | fs_access::WRITE_FILE | fs_access::READ_FILE
        );
    }

    #[test]
    fn a_newer_kernel_gets_the_rights_this_module_knows() {
        let r = Ruleset::new(KNOWN_ABI + 3);
        assert_eq!(r.abi(), KNOWN_ABI);
        assert_eq!(r.handled_fs(), fs_rights(KNOWN_ABI));
        assert!(r.restricts_tcp());
        assert!(!Ruleset::new(3).restricts_tcp());
        assert!(!Ruleset::new(4).allow_all_tcp().restricts_tcp());
    }

    #[test]
    fn rights_have_names() {
        let names: Vec<_> = fs_access::names(fs_access::READ_ONLY).collect();
        assert_eq!(names, ["execute", "read_file", "read_dir"]);
        assert_eq!(fs_access::names(fs_rights(KNOWN_ABI)).count(), 16);
        assert_eq!(fs_access::NAMES[13], "refer");
        assert_eq!(fs_access::NAMES[15], "ioctl_dev");
    }

    #[test]
    fn rules_read_back_as_given() {
        let r = Ruleset::new(5).read_only("/usr").read_write("/tmp/x");
        let rules: Vec<_> = r.path_rules().collect();
        assert_eq!(
            rules,
            [
                (Path::new("/usr"), fs_access::READ_ONLY),
                (Path::new("/tmp/x"), u64::MAX)
            ]
        );
        assert!(r.tcp_rules().is_empty());
    }

    #[test]
    fn ports_merge() {
        let r = Ruleset::new(4)
            .allow_tcp_bind(80)
            .allow_tcp_connect(80)
            .allow_tcp_connect(443);
        assert_eq!(r.ports, vec![(80, 3), (443, 2)]);
    }

    #[test]
    fn attr_size_follows_the_abi() {
        assert_eq!(raw::attr_size(1), 8);
        assert_eq!(raw::attr_size(3), 8);
        assert_eq!(raw::attr_size(4), 16);
        assert_eq!(raw::attr_size(5), 16);
        assert_eq!(raw::attr_size(6), 24);
        assert_eq!(raw::attr_size(7), 24);
        assert_eq!(std::mem::size_of::<raw::RulesetAttr>(), 24);
    }
}
