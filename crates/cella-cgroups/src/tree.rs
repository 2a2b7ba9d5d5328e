//! Directory work: creating levels, enabling controllers, joining, removing.

use std::io;
use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use crate::{CgroupError, fs};

/// mkdir one level; an existing directory is fine. Returns whether it was created.
pub(crate) fn mkdir_one(dir: &Path) -> Result<bool, CgroupError> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(source) => Err(CgroupError::Mkdir {
            path: dir.to_owned(),
            source,
        }),
    }
}

/// Create `dir` and its missing ancestors below `top`, calling `init(parent, child)` for
/// each level this call created.
pub(crate) fn mkdir_levels(
    top: &Path,
    dir: &Path,
    mut init: impl FnMut(&Path, &Path) -> Result<(), CgroupError>,
) -> Result<(), CgroupError> {
    let rel = dir.strip_prefix(top).unwrap_or(Path::new(""));
    let mut cur = top.to_owned();
    for comp in rel.components() {
        let parent = cur.clone();
        cur.push(comp);
        if mkdir_one(&cur)? {
            init(&parent, &cur)?;
        }
    }
    Ok(())
}

/// v1 cpuset: a new cgroup starts with empty cpus/mems and refuses tasks until set.
pub(crate) fn copy_cpuset(parent: &Path, child: &Path) -> Result<(), CgroupError> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let cur = fs::read(&child.join(f))?;
        if cur.trim().is_empty() {
            let from = fs::read(&parent.join(f))?;
            fs::write(&child.join(f), from.trim())?;
        }
    }
    Ok(())
}

/// Enable in `dir`'s subtree_control every controller available to it, so children get
/// them. All at once first; if the kernel refuses (e.g. `dir` holds processes), one by
/// one, leaving out those it refuses: a limit that then needs a missing controller fails
/// at apply with the controller named.
pub(crate) fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let avail = fs::read(&dir.join("cgroup.controllers"))?;
    let on = fs::read(&dir.join("cgroup.subtree_control"))?;
    let missing: Vec<&str> = avail
        .split_whitespace()
        .filter(|c| !on.split_whitespace().any(|o| o == *c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let path = dir.join("cgroup.subtree_control");
    let all = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    if fs::write(&path, &all).is_ok() {
        return Ok(());
    }
    for c in missing {
        let _ = fs::write(&path, &format!("+{c}"));
    }
    Ok(())
}

/// Write a pid to cgroup.procs, retrying EINVAL briefly: a task still in TASK_NEW (just
/// forked) cannot be moved yet.
pub(crate) fn write_pid(procs: &Path, pid: i32) -> Result<(), CgroupError> {
    let mut tries = 0;
    loop {
        match fs::write(procs, &pid.to_string()) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && tries < 5 => {
                tries += 1;
                sleep(Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// Sub-directories (child cgroups) of `dir`, deepest first, then `dir` itself.
pub(crate) fn walk_post_order(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk_post_order(&e.path(), out);
            }
        }
    }
    out.push(dir.to_owned());
}

/// Remove `dir` and any child cgroups; missing is fine; EBUSY (tasks still exiting) is
/// retried for about a second.
pub(crate) fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    let mut all = Vec::new();
    walk_post_order(dir, &mut all);
    for d in all {
        let mut delay = Duration::from_millis(1);
        loop {
            match std::fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e)
                    if e.raw_os_error() == Some(libc::EBUSY)
                        && delay < Duration::from_millis(512) =>
                {
                    sleep(delay);
                    delay *= 2;
                }
                Err(source) => return Err(CgroupError::Rmdir { path: d, source }),
            }
        }
    }
    Ok(())
}
