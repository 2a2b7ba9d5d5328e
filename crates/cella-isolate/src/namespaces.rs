//! The eight Linux namespace types, joining existing ones by path, user-namespace id
//! maps and time-namespace offsets.

use crate::sys;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A namespace type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NsKind {
    /// User namespace (always joined or created first).
    User,
    /// Mount namespace.
    Mount,
    /// UTS namespace (hostname, domainname).
    Uts,
    /// IPC namespace.
    Ipc,
    /// Network namespace.
    Net,
    /// Cgroup namespace.
    Cgroup,
    /// PID namespace (applies to children of the caller).
    Pid,
    /// Time namespace (applies to children of the caller).
    Time,
}

/// CLONE_NEWTIME, which older libc crates lack.
pub const CLONE_NEWTIME: libc::c_int = 0x80;

impl NsKind {
    /// All types, in the order they are joined: user first.
    pub const ALL: [NsKind; 8] = [
        NsKind::User,
        NsKind::Mount,
        NsKind::Uts,
        NsKind::Ipc,
        NsKind::Net,
        NsKind::Cgroup,
        NsKind::Pid,
        NsKind::Time,
    ];

    /// The `CLONE_NEW*` flag.
    pub fn flag(self) -> libc::c_int {
        match self {
            NsKind::User => libc::CLONE_NEWUSER,
            NsKind::Mount => libc::CLONE_NEWNS,
            NsKind::Uts => libc::CLONE_NEWUTS,
            NsKind::Ipc => libc::CLONE_NEWIPC,
            NsKind::Net => libc::CLONE_NEWNET,
            NsKind::Cgroup => libc::CLONE_NEWCGROUP,
            NsKind::Pid => libc::CLONE_NEWPID,
            NsKind::Time => CLONE_NEWTIME,
        }
    }

    /// The name under /proc/<pid>/ns/.
    pub fn proc_name(self) -> &'static str {
        match self {
            NsKind::User => "user",
            NsKind::Mount => "mnt",
            NsKind::Uts => "uts",
            NsKind::Ipc => "ipc",
            NsKind::Net => "net",
            NsKind::Cgroup => "cgroup",
            NsKind::Pid => "pid",
            NsKind::Time => "time",
        }
    }

    /// The name in an OCI config (`linux.namespaces[].type`).
    pub fn oci_name(self) -> &'static str {
        match self {
            NsKind::User => "user",
            NsKind::Mount => "mount",
            NsKind::Uts => "uts",
            NsKind::Ipc => "ipc",
            NsKind::Net => "network",
            NsKind::Cgroup => "cgroup",
            NsKind::Pid => "pid",
            NsKind::Time => "time",
        }
    }

    /// Parses an OCI namespace type name.
    pub fn from_oci_name(s: &str) -> Option<NsKind> {
        NsKind::ALL.into_iter().find(|k| k.oci_name() == s)
    }

    /// The type from a `CLONE_NEW*` value, as NS_GET_NSTYPE returns it.
    pub fn from_flag(flag: libc::c_int) -> Option<NsKind> {
        NsKind::ALL.into_iter().find(|k| k.flag() == flag)
    }
}

/// Errors of namespace handling.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// Opening a namespace file failed.
    #[error("open namespace `{path}`")]
    Open {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is a namespace of another type, or no namespace at all.
    #[error("`{path}` is not a {want} namespace{}", found.map(|k| format!(" (it is a {} namespace)", k.proc_name())).unwrap_or_default())]
    WrongType {
        /// The path.
        path: PathBuf,
        /// The type asked for.
        want: &'static str,
        /// The type found, if it is a namespace at all.
        found: Option<NsKind>,
    },
    /// Writing a /proc file (id maps, offsets) failed.
    #[error("write `{path}`")]
    Write {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// An existing namespace to join: its type and an open descriptor of it.
#[derive(Debug)]
pub struct NsJoin {
    /// The type.
    pub kind: NsKind,
    /// The namespace file, open.
    pub fd: OwnedFd,
    /// Where it was opened from (for messages).
    pub path: PathBuf,
}

const NSIO: libc::c_ulong = 0xb7;
const NS_GET_NSTYPE: libc::c_ulong = (NSIO << 8) | 3;

impl NsJoin {
    /// Opens `path` and checks that it is a namespace of type `kind`.
    pub fn open(kind: NsKind, path: &Path) -> Result<NsJoin, NsError> {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| NsError::Open {
            path: path.to_owned(),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        let fd = sys::open(&c, libc::O_RDONLY, 0).map_err(|source| NsError::Open {
            path: path.to_owned(),
            source,
        })?;
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor, which is
        // open for the duration of the call.
        let t = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
        let found = if t < 0 { None } else { NsKind::from_flag(t) };
        if found != Some(kind) {
            return Err(NsError::WrongType {
                path: path.to_owned(),
                want: kind.proc_name(),
                found,
            });
        }
        Ok(NsJoin {
            kind,
            fd,
            path: path.to_owned(),
        })
    }

    /// Joins the namespace (in the calling thread).
    pub fn join(&self) -> io::Result<()> {
        sys::setns(self.fd.as_fd(), self.kind.flag())
    }
}

/// One line of a uid or gid map: `count` ids from `inside` map to `outside`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMap {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside (in the parent user namespace).
    pub outside: u32,
    /// How many ids.
    pub count: u32,
}

/// The text of a uid_map/gid_map file for `maps`.
pub fn id_map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count))
        .collect()
}

/// Writes the uid and gid maps of the user namespace `pid` lives in. With
/// `deny_setgroups`, writes "deny" to /proc/<pid>/setgroups first, which the kernel
/// requires before an unprivileged process may write a gid map.
pub fn write_id_maps(
    pid: libc::pid_t,
    uid_maps: &[IdMap],
    gid_maps: &[IdMap],
    deny_setgroups: bool,
) -> Result<(), NsError> {
    let write = |name: &str, text: &[u8]| -> Result<(), NsError> {
        let path = format!("/proc/{pid}/{name}");
        std::fs::write(&path, text).map_err(|source| NsError::Write { path, source })
    };
    if deny_setgroups {
        write("setgroups", b"deny")?;
    }
    if !uid_maps.is_empty() {
        write("uid_map", id_map_text(uid_maps).as_bytes())?;
    }
    if !gid_maps.is_empty() {
        write("gid_map", id_map_text(gid_maps).as_bytes())?;
    }
    Ok(())
}

/// Offsets of a time namespace, for CLOCK_MONOTONIC and CLOCK_BOOTTIME.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeOffsets {
    /// (seconds, nanoseconds) added to CLOCK_MONOTONIC.
    pub monotonic: Option<(i64, u32)>,
    /// (seconds, nanoseconds) added to CLOCK_BOOTTIME.
    pub boottime: Option<(i64, u32)>,
}

impl TimeOffsets {
    /// The text of /proc/<pid>/timens_offsets for these offsets.
    pub fn text(&self) -> String {
        let mut s = String::new();
        if let Some((sec, ns)) = self.monotonic {
            s.push_str(&format!("monotonic {sec} {ns}\n"));
        }
        if let Some((sec, ns)) = self.boottime {
            s.push_str(&format!("boottime {sec} {ns}\n"));
        }
        s
    }

    /// True when no offset is set.
    pub fn is_empty(&self) -> bool {
        self.monotonic.is_none() && self.boottime.is_none()
    }
}

/// Writes the offsets of the time namespace that `pid`'s children will be created in.
/// Only possible after unshare(CLONE_NEWTIME) and before any process entered it.
pub fn write_time_offsets(pid: libc::pid_t, offsets: &TimeOffsets) -> Result<(), NsError> {
    let path = format!("/proc/{pid}/timens_offsets");
    std::fs::write(&path, offsets.text()).map_err(|source| NsError::Write { path, source })
}

/// The inode of `/proc/<pid>/ns/<kind>`, which identifies the namespace.
pub fn ns_inode(pid: libc::pid_t, kind: NsKind) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(std::fs::metadata(format!("/proc/{pid}/ns/{}", kind.proc_name()))?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in NsKind::ALL {
            assert_eq!(NsKind::from_oci_name(k.oci_name()), Some(k));
            assert_eq!(NsKind::from_flag(k.flag()), Some(k));
        }
        assert_eq!(NsKind::from_oci_name("netw"), None);
    }

    #[test]
    fn map_and_offset_text() {
        let m = [IdMap {
            inside: 0,
            outside: 100000,
            count: 65536,
        }];
        assert_eq!(id_map_text(&m), "0 100000 65536\n");
        let t = TimeOffsets {
            monotonic: Some((-5, 0)),
            boottime: Some((86400, 7)),
        };
        assert_eq!(t.text(), "monotonic -5 0\nboottime 86400 7\n");
    }

    #[test]
    fn open_checks_type() {
        let j = NsJoin::open(NsKind::Net, Path::new("/proc/self/ns/net")).unwrap();
        assert_eq!(j.kind, NsKind::Net);
        let e = NsJoin::open(NsKind::Net, Path::new("/proc/self/ns/uts")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/proc/self/ns/uts` is not a net namespace (it is a uts namespace)"
        );
        let e = NsJoin::open(NsKind::Net, Path::new("/etc/hostname")).unwrap_err();
        assert!(e.to_string().contains("is not a net namespace"), "{e}");
    }
}
