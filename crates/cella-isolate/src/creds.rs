//! The container process's identity and limits: user and groups, rlimits, I/O priority,
//! scheduler, no_new_privs.

use crate::caps::CapSets;
use crate::sys;
use std::io;

/// Who the container process runs as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// uid inside the container.
    pub uid: u32,
    /// gid inside the container.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// umask, when set.
    pub umask: Option<u32>,
}

impl User {
    /// Switches to this user keeping the capabilities in `caps`: bounding set first
    /// (needs CAP_SETPCAP), then groups, gid, uid with PR_SET_KEEPCAPS, then the other
    /// sets. `setgroups_allowed` is false in a user namespace whose setgroups is denied.
    pub fn switch(&self, caps: &CapSets, setgroups_allowed: bool) -> io::Result<()> {
        let last = crate::caps::last_cap();
        caps.drop_bounding(last)?;
        if setgroups_allowed {
            sys::setgroups(&self.additional_gids)?;
        }
        sys::setresgid(self.gid)?;
        sys::prctl(libc::PR_SET_KEEPCAPS, 1, 0)?;
        sys::setresuid(self.uid)?;
        sys::prctl(libc::PR_SET_KEEPCAPS, 0, 0)?;
        caps.apply(last)?;
        if let Some(m) = self.umask {
            sys::umask(m);
        }
        Ok(())
    }
}

/// An rlimit to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rlimit {
    /// RLIMIT_* number.
    pub resource: u32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// OCI names of the RLIMIT_* resources and their numbers.
const RLIMIT_NAMES: [(&str, u32); 16] = [
    ("RLIMIT_CPU", libc::RLIMIT_CPU),
    ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE),
    ("RLIMIT_DATA", libc::RLIMIT_DATA),
    ("RLIMIT_STACK", libc::RLIMIT_STACK),
    ("RLIMIT_CORE", libc::RLIMIT_CORE),
    ("RLIMIT_RSS", libc::RLIMIT_RSS),
    ("RLIMIT_NPROC", libc::RLIMIT_NPROC),
    ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE),
    ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK),
    ("RLIMIT_AS", libc::RLIMIT_AS),
    ("RLIMIT_LOCKS", libc::RLIMIT_LOCKS),
    ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING),
    ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE),
    ("RLIMIT_NICE", libc::RLIMIT_NICE),
    ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO),
    ("RLIMIT_RTTIME", libc::RLIMIT_RTTIME),
];

/// The RLIMIT_* number for an OCI name such as `RLIMIT_NOFILE`.
pub fn rlimit_from_name(name: &str) -> Option<u32> {
    RLIMIT_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| *r)
}

impl Rlimit {
    /// The OCI name of the resource (`RLIMIT_NPROC`), for error messages.
    pub fn name(&self) -> &'static str {
        RLIMIT_NAMES
            .iter()
            .find(|(_, r)| *r == self.resource)
            .map_or("RLIMIT_?", |(n, _)| n)
    }

    /// Sets the limit on the calling process.
    pub fn apply(&self) -> io::Result<()> {
        sys::setrlimit(self.resource, self.soft, self.hard)
    }
}

/// Sets no_new_privs: execve can no longer grant privileges (setuid bits, file caps).
pub fn set_no_new_privs() -> io::Result<()> {
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map(drop)
}

/// ioprio_set(IOPRIO_WHO_PROCESS, 0, class << 13 | level).
pub fn set_io_priority(class: u32, level: u32) -> io::Result<()> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    let prio = (class << 13) | (level & 0x1fff);
    // SAFETY: integer arguments only.
    sys::check_long(unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) })
        .map(drop)
}

/// `struct sched_attr` of sched_setattr(2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedAttr {
    /// Size of this struct.
    pub size: u32,
    /// SCHED_* policy.
    pub policy: u32,
    /// SCHED_FLAG_*.
    pub flags: u64,
    /// Nice value (SCHED_OTHER, SCHED_BATCH).
    pub nice: i32,
    /// Static priority (SCHED_FIFO, SCHED_RR).
    pub priority: u32,
    /// SCHED_DEADLINE runtime, ns.
    pub runtime: u64,
    /// SCHED_DEADLINE deadline, ns.
    pub deadline: u64,
    /// SCHED_DEADLINE period, ns.
    pub period: u64,
}

/// sched_setattr(2) on the calling thread.
pub fn set_scheduler(attr: &SchedAttr) -> io::Result<()> {
    let mut a = *attr;
    a.size = std::mem::size_of::<SchedAttr>() as u32;
    // SAFETY: `a` is a live, fully initialised #[repr(C)] sched_attr whose size field
    // matches its layout.
    sys::check_long(unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &a as *const SchedAttr, 0) })
        .map(drop)
}

/// Writes /proc/self/oom_score_adj.
pub fn set_oom_score_adj(value: i32) -> io::Result<()> {
    let text = value.to_string();
    sys::write_file(c"/proc/self/oom_score_adj", text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimit_names() {
        assert_eq!(rlimit_from_name("RLIMIT_NOFILE"), Some(libc::RLIMIT_NOFILE));
        assert_eq!(rlimit_from_name("RLIMIT_NOPE"), None);
    }
}
