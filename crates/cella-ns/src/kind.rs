//! The eight namespace types and sets of them.

use std::fmt;

/// One of the kernel's eight namespace types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NsType {
    /// Mount namespace.
    Mnt,
    /// Network namespace.
    Net,
    /// System V IPC and POSIX message queue namespace.
    Ipc,
    /// Hostname and domain name namespace.
    Uts,
    /// User and group id namespace.
    User,
    /// Process id namespace.
    Pid,
    /// Cgroup root namespace.
    Cgroup,
    /// Monotonic and boot-time clock namespace.
    Time,
}

impl NsType {
    /// Every type, in the order lsns lists them in its help.
    pub const ALL: [NsType; 8] = [
        NsType::Mnt,
        NsType::Net,
        NsType::Ipc,
        NsType::User,
        NsType::Pid,
        NsType::Uts,
        NsType::Cgroup,
        NsType::Time,
    ];

    /// The name used by lsns and in `/proc/<pid>/ns/<name>`.
    pub fn name(self) -> &'static str {
        match self {
            NsType::Mnt => "mnt",
            NsType::Net => "net",
            NsType::Ipc => "ipc",
            NsType::Uts => "uts",
            NsType::User => "user",
            NsType::Pid => "pid",
            NsType::Cgroup => "cgroup",
            NsType::Time => "time",
        }
    }

    /// Parses a type name as lsns and nsenter spell it (`mnt` or `mount` both work).
    pub fn from_name(s: &str) -> Option<NsType> {
        Some(match s {
            "mnt" | "mount" => NsType::Mnt,
            "net" | "network" => NsType::Net,
            "ipc" => NsType::Ipc,
            "uts" => NsType::Uts,
            "user" => NsType::User,
            "pid" => NsType::Pid,
            "cgroup" => NsType::Cgroup,
            "time" => NsType::Time,
            _ => return None,
        })
    }

    /// The `CLONE_NEW*` flag for unshare(2) and setns(2).
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            NsType::Mnt => libc::CLONE_NEWNS,
            NsType::Net => libc::CLONE_NEWNET,
            NsType::Ipc => libc::CLONE_NEWIPC,
            NsType::Uts => libc::CLONE_NEWUTS,
            NsType::User => libc::CLONE_NEWUSER,
            NsType::Pid => libc::CLONE_NEWPID,
            NsType::Cgroup => libc::CLONE_NEWCGROUP,
            NsType::Time => libc::CLONE_NEWTIME,
        }
    }

    /// The `/proc/<pid>/ns/` entry naming the namespace new children join: pid and time
    /// namespaces apply to children only, so after unshare(2) the new one shows there.
    pub fn for_children_name(self) -> &'static str {
        match self {
            NsType::Pid => "pid_for_children",
            NsType::Time => "time_for_children",
            other => other.name(),
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for NsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of namespace types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NsSet(u8);

impl NsSet {
    /// No types.
    pub const EMPTY: NsSet = NsSet(0);

    /// All eight types.
    pub fn all() -> NsSet {
        NsType::ALL.iter().copied().collect()
    }

    /// Adds `t`.
    pub fn insert(&mut self, t: NsType) {
        self.0 |= t.bit();
    }

    /// True when `t` is in the set.
    pub fn contains(self, t: NsType) -> bool {
        self.0 & t.bit() != 0
    }

    /// True when the set holds no type.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The types in the set, in [`NsType::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = NsType> {
        NsType::ALL.into_iter().filter(move |t| self.contains(*t))
    }

    /// The `CLONE_NEW*` flags of every type in the set, or'ed.
    pub fn clone_flags(self) -> libc::c_int {
        self.iter().fold(0, |acc, t| acc | t.clone_flag())
    }
}

impl FromIterator<NsType> for NsSet {
    fn from_iter<I: IntoIterator<Item = NsType>>(iter: I) -> Self {
        let mut s = NsSet::EMPTY;
        for t in iter {
            s.insert(t);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in NsType::ALL {
            assert_eq!(NsType::from_name(t.name()), Some(t));
        }
        assert_eq!(NsType::from_name("mount"), Some(NsType::Mnt));
        assert_eq!(NsType::from_name("netw"), None);
    }

    #[test]
    fn set_holds_what_was_inserted() {
        let s: NsSet = [NsType::Net, NsType::Time].into_iter().collect();
        assert!(s.contains(NsType::Net) && s.contains(NsType::Time));
        assert!(!s.contains(NsType::Pid));
        assert_eq!(s.clone_flags(), libc::CLONE_NEWNET | libc::CLONE_NEWTIME);
        assert_eq!(NsSet::all().iter().count(), 8);
    }
}
