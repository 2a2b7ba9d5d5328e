//! The state store: one directory per container under the root dir, holding
//! `state.json` (written atomically: tmp + rename) and `exec.fifo` while the container
//! is created but not started. Every command on a container holds a flock on its
//! directory: exclusive to change it, shared to read it.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What cella records about a container. Written before any resource is created, and
/// updated as resources come into being, so `delete --force` can always find them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerState {
    /// OCI version of the bundle's config.
    pub oci_version: String,
    /// The container id.
    pub id: String,
    /// Pid of the container's init in the runtime's pid namespace (0 until known).
    pub pid: i32,
    /// Start time of that pid (field 22 of /proc/<pid>/stat), to detect pid reuse.
    pub pid_start_time: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// Creation time, RFC 3339.
    pub created: String,
    /// uid of the user that created it.
    pub owner: u32,
    /// Annotations from the config.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// True once `create` finished; false means creation was interrupted.
    pub created_complete: bool,
    /// The container's cgroup, recorded before it is created (None: rootless without
    /// a delegated hierarchy).
    #[serde(default)]
    pub cgroup: Option<cella_cgroups::Cgroup>,
    /// The poststop hooks to run on delete.
    #[serde(default)]
    pub poststop: Vec<oci_spec::runtime::Hook>,
    /// The poststart hooks to run on start.
    #[serde(default)]
    pub poststart: Vec<oci_spec::runtime::Hook>,
}

/// Lifecycle status, as the OCI runtime spec names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Being created.
    Creating,
    /// Created, waiting for `start`.
    Created,
    /// The user's process runs.
    Running,
    /// Frozen.
    Paused,
    /// Init has exited.
    Stopped,
}

impl Status {
    /// The OCI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// The root directory holding every container's state.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

/// A container's state directory, locked for as long as this value lives.
#[derive(Debug)]
pub struct Locked {
    /// The directory.
    pub dir: PathBuf,
    /// The container id.
    pub id: String,
    _lock: OwnedFd,
}

/// Checks a container id: runc's rule, so an id can never name a path outside the root.
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId(id.to_owned()))
    }
}

fn flock(dir: &Path, exclusive: bool) -> Result<OwnedFd> {
    let f = fs::File::open(dir).map_err(Error::io("open state dir", dir))?;
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    loop {
        // SAFETY: flock on a descriptor we own for the duration of the call.
        let r = unsafe { libc::flock(f.as_raw_fd(), op) };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(Error::Io {
                op: "lock state dir",
                path: dir.to_owned(),
                source: e,
            });
        }
    }
    Ok(f.into())
}

impl Store {
    /// The store at `root` (not created until a container is).
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Makes the directory of a new container and locks it. Fails with
    /// [`Error::Exists`] if the id is taken (mkdir is the atomic test).
    pub fn create(&self, id: &str) -> Result<Locked> {
        check_id(id)?;
        fs::create_dir_all(&self.root).map_err(Error::io("create state root", &self.root))?;
        let _ = fs::set_permissions(
            &self.root,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        );
        let dir = self.root.join(id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(id.to_owned()));
            }
            Err(e) => {
                return Err(Error::Io {
                    op: "create state dir",
                    path: dir,
                    source: e,
                });
            }
        }
        let lock = flock(&dir, true)?;
        Ok(Locked {
            dir,
            id: id.to_owned(),
            _lock: lock,
        })
    }

    /// Locks an existing container's directory.
    pub fn open(&self, id: &str, exclusive: bool) -> Result<Locked> {
        check_id(id)?;
        let dir = self.root.join(id);
        let lock = match flock(&dir, exclusive) {
            Ok(l) => l,
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_owned()));
            }
            Err(e) => return Err(e),
        };
        // Deleted while we waited for the lock?
        if !dir.exists() {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(Locked {
            dir,
            id: id.to_owned(),
            _lock: lock,
        })
    }

    /// Ids of every container in the store, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ids),
            Err(e) => {
                return Err(Error::Io {
                    op: "read state root",
                    path: self.root.clone(),
                    source: e,
                });
            }
        };
        for e in entries.flatten() {
            if let Some(name) = e.file_name().to_str()
                && check_id(name).is_ok()
                && e.path().is_dir()
            {
                ids.push(name.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }
}

impl Locked {
    /// The raw descriptor holding the lock, which a forked child must close.
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        self._lock.as_raw_fd()
    }

    /// Path of state.json.
    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Path of the fifo `start` writes to.
    pub fn fifo_path(&self) -> PathBuf {
        self.dir.join("exec.fifo")
    }

    /// Writes state.json atomically.
    pub fn save(&self, st: &ContainerState) -> Result<()> {
        let tmp = self.dir.join("state.json.tmp");
        let text = serde_json::to_vec(st).expect("state serializes");
        fs::write(&tmp, text).map_err(Error::io("write", &tmp))?;
        let dst = self.state_path();
        fs::rename(&tmp, &dst).map_err(Error::io("rename into place", &dst))
    }

    /// Reads state.json; `None` if creation stopped before it was first written.
    pub fn load(&self) -> Result<Option<ContainerState>> {
        let path = self.state_path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io {
                    op: "read",
                    path,
                    source: e,
                });
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|source| Error::CorruptState {
                id: self.id.clone(),
                path,
                source,
            })
    }

    /// Removes the directory and everything in it.
    pub fn remove(self) -> Result<()> {
        fs::remove_dir_all(&self.dir).map_err(Error::io("remove state dir", &self.dir))
    }
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks), and whether the process
/// is a zombie. `None` if there is no such process.
pub fn proc_start(pid: i32) -> Option<(u64, bool)> {
    if pid <= 0 {
        return None;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, *state == "Z" || *state == "X"))
}

impl ContainerState {
    /// The container's status, read from the kernel: init alive and the same process,
    /// exec.fifo still there, frozen or not.
    pub fn status(&self, locked: &Locked) -> Status {
        if !self.created_complete {
            return Status::Creating;
        }
        match proc_start(self.pid) {
            Some((start, zombie)) if start == self.pid_start_time && !zombie => {}
            _ => return Status::Stopped,
        }
        if locked.fifo_path().exists() {
            return Status::Created;
        }
        let frozen = match &self.cgroup {
            Some(cg) => cg
                .freezer_state()
                .is_ok_and(|f| f == cella_cgroups::FreezerState::Frozen),
            None => false,
        };
        if frozen {
            return Status::Paused;
        }
        Status::Running
    }

    /// The state as `cella state` prints it (runc's shape).
    pub fn to_json(&self, status: Status) -> serde_json::Value {
        let pid = if status == Status::Stopped {
            0
        } else {
            self.pid
        };
        serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "pid": pid,
            "status": status.as_str(),
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": owner_name(self.owner),
            "annotations": self.annotations,
        })
    }

    /// The state as hooks receive it on stdin (the OCI state schema).
    pub fn hook_json(&self, status: Status) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "status": status.as_str(),
            "pid": self.pid,
            "bundle": self.bundle,
            "annotations": self.annotations,
        }))
        .expect("state serializes")
    }
}

/// The user name of `uid` from /etc/passwd, or the number.
fn owner_name(uid: u32) -> String {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
        })
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for good in ["a", "my-ctr_1.2+x", &"x".repeat(1024)] {
            check_id(good).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", &"x".repeat(1025)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn start_time_of_self() {
        let (start, zombie) = proc_start(std::process::id() as i32).unwrap();
        assert!(start > 0 && !zombie);
        assert!(proc_start(0).is_none());
    }

    #[test]
    fn create_is_exclusive_and_open_finds_it() {
        let root = std::env::temp_dir().join(format!("cella-store-{}", std::process::id()));
        let store = Store::new(&root);
        let a = store.create("one").unwrap();
        assert!(matches!(store.create("one"), Err(Error::Exists(_))));
        drop(a);
        assert!(store.open("one", false).is_ok());
        assert!(matches!(store.open("two", false), Err(Error::NotFound(_))));
        assert_eq!(store.ids().unwrap(), vec!["one".to_string()]);
        store.open("one", true).unwrap().remove().unwrap();
        assert!(store.ids().unwrap().is_empty());
        fs::remove_dir_all(root).unwrap();
    }
}
