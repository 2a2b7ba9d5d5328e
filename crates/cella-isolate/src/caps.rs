//! Capabilities: names, the five OCI sets as bit masks, and applying them.

use crate::sys;
use std::io;

/// Capability names in kernel order (bit n is `NAMES[n]`), as of Linux 6.x.
pub const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capability number of `name` (`CAP_NET_RAW` or `net_raw`, any case).
pub fn from_name(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    NAMES.iter().position(|n| *n == full).map(|i| i as u32)
}

/// The highest capability this kernel knows (/proc/sys/kernel/cap_last_cap).
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
}

/// The five capability sets of a process, as bit masks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapSets {
    /// Bounding set.
    pub bounding: u64,
    /// Effective set.
    pub effective: u64,
    /// Permitted set.
    pub permitted: u64,
    /// Inheritable set.
    pub inheritable: u64,
    /// Ambient set.
    pub ambient: u64,
}

impl CapSets {
    /// Drops from the bounding set every capability not in `self.bounding`, up to
    /// `last`. Needs CAP_SETPCAP, so it runs before the user switch.
    pub fn drop_bounding(&self, last: u32) -> io::Result<()> {
        for cap in 0..=last {
            if self.bounding & (1 << cap) == 0 {
                sys::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0)?;
            }
        }
        Ok(())
    }

    /// Sets the effective, permitted and inheritable sets, then raises the ambient ones.
    /// Runs after the user switch (with PR_SET_KEEPCAPS set before it).
    pub fn apply(&self, last: u32) -> io::Result<()> {
        sys::capset(self.effective, self.permitted, self.inheritable)?;
        sys::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
        )?;
        for cap in 0..=last {
            if self.ambient & (1 << cap) != 0 {
                sys::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(from_name("CAP_CHOWN"), Some(0));
        assert_eq!(from_name("net_raw"), Some(13));
        assert_eq!(from_name("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(from_name("CAP_NOPE"), None);
        assert!(last_cap() >= 40);
    }
}
