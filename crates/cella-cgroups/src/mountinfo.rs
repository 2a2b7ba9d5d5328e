//! Finding the cgroup hierarchies: /proc/self/mountinfo, checked with statfs, and the
//! process's own cgroups from /proc/self/cgroup.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{CgroupError, fs, sys};

/// How cgroups are laid out on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Only v1 hierarchies (controllers in separate mounts).
    V1,
    /// v1 controllers plus a cgroup2 mount (usually /sys/fs/cgroup/unified).
    Hybrid,
    /// Pure cgroup v2: one unified hierarchy.
    Unified,
}

/// The v1 controllers (and named hierarchy) cella manages; others are left alone.
const KNOWN_V1: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
    "name=systemd",
];

/// One mounted cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Which cgroup of the hierarchy appears at the mount point (mountinfo field 4).
    pub root: String,
    /// v1: the controllers (and `name=...`) in its super options; empty for cgroup2.
    pub controllers: Vec<String>,
    /// cgroup2?
    pub v2: bool,
}

/// Undo mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse mountinfo text into its cgroup mounts, in mount order.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() < sep + 4 || sep < 6 {
            continue;
        }
        let fstype = fields[sep + 1];
        let super_opts = fields[sep + 3];
        let (v2, controllers) = match fstype {
            "cgroup2" => (true, Vec::new()),
            "cgroup" => {
                let c: Vec<String> = super_opts
                    .split(',')
                    .filter(|o| KNOWN_V1.contains(o))
                    .map(str::to_owned)
                    .collect();
                if c.is_empty() {
                    continue;
                }
                (false, c)
            }
            _ => continue,
        };
        out.push(Mount {
            mount_point: PathBuf::from(unescape(fields[4])),
            root: unescape(fields[3]),
            controllers,
            v2,
        });
    }
    out
}

/// The cgroup mounts of this process, one per hierarchy, skipping mounts that are
/// shadowed (statfs no longer sees a cgroup filesystem there).
pub(crate) fn mounts() -> Result<Vec<Mount>, CgroupError> {
    let text = fs::read(Path::new("/proc/self/mountinfo"))?;
    let mut out: Vec<Mount> = Vec::new();
    for m in parse_mountinfo(&text) {
        let want = if m.v2 {
            sys::CGROUP2_SUPER_MAGIC
        } else {
            sys::CGROUP_SUPER_MAGIC
        };
        match sys::fs_magic(&m.mount_point) {
            Ok(magic) if magic == want => {}
            _ => continue,
        }
        // The same hierarchy may be mounted twice; keep the first, preferring root "/".
        if let Some(prev) = out
            .iter_mut()
            .find(|p| p.v2 == m.v2 && p.controllers == m.controllers)
        {
            if prev.root != "/" && m.root == "/" {
                *prev = m;
            }
            continue;
        }
        out.push(m);
    }
    Ok(out)
}

/// Classify a set of mounts.
pub(crate) fn layout_of(mounts: &[Mount]) -> Result<Layout, CgroupError> {
    let v2 = mounts.iter().any(|m| m.v2);
    // A lone named hierarchy (name=systemd) next to cgroup2 is still a v2 host for limits.
    let v1 = mounts
        .iter()
        .any(|m| !m.v2 && m.controllers.iter().any(|c| !c.starts_with("name=")));
    match (v1, v2) {
        (true, true) => Ok(Layout::Hybrid),
        (true, false) => Ok(Layout::V1),
        (false, true) => Ok(Layout::Unified),
        (false, false) => Err(CgroupError::NotMounted),
    }
}

/// Detect the host's cgroup layout.
pub fn detect() -> Result<Layout, CgroupError> {
    layout_of(&mounts()?)
}

/// One line of /proc/self/cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OwnCgroup {
    /// Controllers of the hierarchy (empty for the unified one).
    pub controllers: Vec<String>,
    /// The cgroup path inside that hierarchy.
    pub path: String,
}

/// Parse /proc/<pid>/cgroup text.
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<OwnCgroup> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            let controllers = if ctrls.is_empty() {
                Vec::new()
            } else {
                ctrls.split(',').map(str::to_owned).collect()
            };
            Some(OwnCgroup {
                controllers,
                path: path.to_owned(),
            })
        })
        .collect()
}

/// This process's cgroup in the hierarchy of `m`.
pub(crate) fn own_path(own: &[OwnCgroup], m: &Mount) -> Option<String> {
    own.iter()
        .find(|o| {
            if m.v2 {
                o.controllers.is_empty()
            } else {
                let mut a = o.controllers.clone();
                let mut b = m.controllers.clone();
                a.sort();
                b.sort();
                a == b
            }
        })
        .map(|o| o.path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:40 /x /mnt/my\\040dir rw shared:5 - cgroup cgroup rw,cpu,cpuacct
";

    #[test]
    fn parses_hybrid_mountinfo() {
        let m = parse_mountinfo(HYBRID);
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].controllers, vec!["cpu"]);
        assert_eq!(m[2].controllers, vec!["name=systemd"]);
        assert!(m[3].v2);
        assert_eq!(m[3].mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m[4].mount_point, PathBuf::from("/mnt/my dir"));
        assert_eq!(m[4].root, "/x");
        assert_eq!(m[4].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(layout_of(&m).unwrap(), Layout::Hybrid);
        assert_eq!(layout_of(&m[..1]).unwrap(), Layout::V1);
        assert_eq!(layout_of(&m[2..4]).unwrap(), Layout::Unified);
        assert!(matches!(layout_of(&[]), Err(CgroupError::NotMounted)));
    }

    #[test]
    fn finds_own_cgroup() {
        let own = parse_proc_cgroup("4:memory:/a/b\n2:cpu,cpuacct:/\n0::/u\n");
        let mem = &parse_mountinfo(HYBRID)[1];
        assert_eq!(own_path(&own, mem).as_deref(), Some("/a/b"));
        let cc = &parse_mountinfo(HYBRID)[4];
        assert_eq!(own_path(&own, cc).as_deref(), Some("/"));
        let u = &parse_mountinfo(HYBRID)[3];
        assert_eq!(own_path(&own, u).as_deref(), Some("/u"));
    }
}
