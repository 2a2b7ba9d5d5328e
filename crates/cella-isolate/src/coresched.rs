//! Core scheduling (`prctl(PR_SCHED_CORE)`, Linux 5.14): tasks that share a cookie are
//! the only ones the scheduler runs at the same time on SMT siblings of one core, so a
//! sandboxed program never shares a core's L1 cache and buffers with a task of another
//! trust domain (the MDS/L1TF class of side channels).
//!
//! A sandbox calls [`create_for_self_group`] in its child between fork and exec: the new
//! cookie covers the child's thread group, and every process it forks later inherits it.
//! Everything here is async-signal-safe: one prctl each, and errors carry only an errno.
//!
//! The kernel needs `CONFIG_SCHED_CORE` (without it every PR_SCHED_CORE call fails with
//! EINVAL) and SMT siblings online (without them ENODEV).

use std::fmt;
use std::io;
use thiserror::Error;

/// `PR_SCHED_CORE` and its commands (linux/prctl.h).
const PR_SCHED_CORE: libc::c_int = 62;
const PR_SCHED_CORE_GET: libc::c_ulong = 0;
const PR_SCHED_CORE_CREATE: libc::c_ulong = 1;

/// Which tasks a new cookie covers (`PR_SCHED_CORE_SCOPE_*`, the kernel's pid types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One thread.
    Thread,
    /// All threads of one process.
    ThreadGroup,
    /// All processes of one process group.
    ProcessGroup,
}

impl Scope {
    fn pid_type(self) -> libc::c_ulong {
        match self {
            Scope::Thread => 0,
            Scope::ThreadGroup => 1,
            Scope::ProcessGroup => 2,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Thread => "thread",
            Scope::ThreadGroup => "thread group",
            Scope::ProcessGroup => "process group",
        })
    }
}

/// Errors of core scheduling. None of them allocates when made.
#[derive(Debug, Error)]
pub enum CoreSchedError {
    /// The kernel was built without `CONFIG_SCHED_CORE`.
    #[error("core scheduling is not supported by this kernel (built without CONFIG_SCHED_CORE)")]
    NotSupported(#[source] io::Error),
    /// The kernel supports it, but no CPU has an SMT sibling online, so there is nothing
    /// to separate.
    #[error("core scheduling is not available on this machine: no SMT siblings online")]
    NoSmt(#[source] io::Error),
    /// Creating a cookie failed.
    #[error("prctl(PR_SCHED_CORE_CREATE) for the {scope} of pid {pid}")]
    Create {
        /// The task (0: the caller).
        pid: libc::pid_t,
        /// What the cookie was to cover.
        scope: Scope,
        /// prctl's error.
        #[source]
        source: io::Error,
    },
    /// Reading a cookie failed.
    #[error("prctl(PR_SCHED_CORE_GET) for pid {pid}")]
    Get {
        /// The task (0: the caller).
        pid: libc::pid_t,
        /// prctl's error.
        #[source]
        source: io::Error,
    },
}

/// Maps the errors that mean "no core scheduling here" to their own variants.
fn classify(e: io::Error, other: impl FnOnce(io::Error) -> CoreSchedError) -> CoreSchedError {
    match e.raw_os_error() {
        Some(libc::EINVAL) => CoreSchedError::NotSupported(e),
        Some(libc::ENODEV) => CoreSchedError::NoSmt(e),
        _ => other(e),
    }
}

/// Ok when this kernel and machine can do core scheduling; otherwise the reason
/// ([`CoreSchedError::NotSupported`] or [`CoreSchedError::NoSmt`]).
pub fn check() -> Result<(), CoreSchedError> {
    cookie(0).map(drop)
}

/// True when this kernel and machine can do core scheduling.
pub fn supported() -> bool {
    check().is_ok()
}

/// Gives the calling process (all its threads) a new cookie of its own, which the
/// processes it forks afterwards inherit. Async-signal-safe: for use after fork.
pub fn create_for_self_group() -> Result<(), CoreSchedError> {
    create(0, Scope::ThreadGroup)
}

/// Gives the tasks `scope` of `pid` (0: the caller) a new, shared cookie.
pub fn create(pid: libc::pid_t, scope: Scope) -> Result<(), CoreSchedError> {
    if pid < 0 {
        // The kernel answers EINVAL, which would read as "not supported".
        let source = io::Error::from_raw_os_error(libc::ESRCH);
        return Err(CoreSchedError::Create { pid, scope, source });
    }
    raw::prctl_sched_core(PR_SCHED_CORE_CREATE, pid, scope.pid_type(), None)
        .map_err(|e| classify(e, |source| CoreSchedError::Create { pid, scope, source }))
}

/// The cookie of thread `pid` (0: the caller): 0 when it has none. The kernel reports an
/// opaque id of the cookie, equal for tasks that share one.
pub fn cookie(pid: libc::pid_t) -> Result<u64, CoreSchedError> {
    if pid < 0 {
        // As in `create`: not the kernel's EINVAL.
        let source = io::Error::from_raw_os_error(libc::ESRCH);
        return Err(CoreSchedError::Get { pid, source });
    }
    let mut id = 0u64;
    raw::prctl_sched_core(
        PR_SCHED_CORE_GET,
        pid,
        Scope::Thread.pid_type(),
        Some(&mut id),
    )
    .map_err(|e| classify(e, |source| CoreSchedError::Get { pid, source }))?;
    Ok(id)
}

/// The one system call of this module.
mod raw {
    use crate::sys::check;
    use std::io;

    /// prctl(PR_SCHED_CORE, cmd, pid, pid_type, out): `out` is where GET writes the
    /// cookie id; the other commands take none.
    pub fn prctl_sched_core(
        cmd: libc::c_ulong,
        pid: libc::pid_t,
        pid_type: libc::c_ulong,
        out: Option<&mut u64>,
    ) -> io::Result<()> {
        let ptr = out.map_or(std::ptr::null_mut(), |p| p as *mut u64);
        // SAFETY: `ptr` is null or points at a live, 8-byte-aligned u64 that the kernel
        // writes for PR_SCHED_CORE_GET; every other argument is an integer.
        check(unsafe {
            libc::prctl(
                super::PR_SCHED_CORE,
                cmd,
                pid as libc::c_ulong,
                pid_type,
                ptr as libc::c_ulong,
            )
        })
        .map(drop)
    }
}
