//! Who writes the id maps of a new user namespace, and how.
//!
//! A privileged runtime writes `/proc/<pid>/uid_map` and `gid_map` itself. An
//! unprivileged one may write only a single line mapping its own id (and, for the gid
//! map, only after writing "deny" to `/proc/<pid>/setgroups`); anything more goes
//! through the setuid helpers `newuidmap`/`newgidmap` (Debian's package uidmap), which
//! allow the ranges delegated to the user in `/etc/subuid` and `/etc/subgid`.
//!
//! [`IdMapPlan::new`] decides this and checks every mapping before anything is created,
//! so a mapping the user may not use is an error naming `linux.uidMappings[i]`; the
//! runtime calls [`IdMapPlan::write`] once the child has made its user namespace.

use crate::namespaces::{IdMap, id_map_text};
use std::ffi::CStr;
use std::io;
use std::path::{Path, PathBuf};

/// Errors of planning and writing id maps.
#[derive(Debug, thiserror::Error)]
pub enum IdMapError {
    /// A mapping the caller may not use, or one that needs a missing helper; `field` is
    /// the config field (`linux.uidMappings[1]`).
    #[error("{field}: {message}")]
    Invalid {
        /// The config field.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// /etc/subuid or /etc/subgid exists but cannot be read.
    #[error("read `{}`", path.display())]
    ReadSubIds {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing a /proc file (setgroups, uid_map, gid_map) failed.
    #[error("write `{path}`")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The helper could not be started.
    #[error("run `{}`", program.display())]
    Spawn {
        /// newuidmap or newgidmap.
        program: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The helper refused the mapping.
    #[error("`{command}` failed ({status}): {stderr}")]
    HelperFailed {
        /// The command line run.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// How one map (uid or gid) is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapWriter {
    /// Straight to `/proc/<pid>/{uid,gid}_map` by the runtime.
    Direct,
    /// Through the setuid helper at this path (newuidmap or newgidmap).
    Helper(PathBuf),
}

/// The caller's identity, as the kernel and newuidmap judge it.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// The user's name, as /etc/subuid may list it (None when the uid has no name).
    pub name: Option<String>,
}

impl Caller {
    /// The running process.
    pub fn current() -> Caller {
        // SAFETY: geteuid and getegid cannot fail and touch no memory of ours.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Caller {
            uid,
            gid,
            name: user_name(uid),
        }
    }

    /// True for root, who writes any map directly (the kernel checks it).
    pub fn privileged(&self) -> bool {
        self.uid == 0
    }
}

/// True when this process is in the initial user namespace (its uid map is the
/// identity over every id). Root in another user namespace is not root of the host: it
/// cannot create cgroups or write /run, as runc also assumes. Read once per process:
/// the runtime never changes its own user namespace.
pub fn in_initial_user_namespace() -> bool {
    static INITIAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *INITIAL.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
    })
}

/// The name of `uid` from the password database.
fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: `pwd` is plain data the call fills in; its string pointers point into
        // `buf`, which outlives every read of them below; `result` is set by the call.
        let (r, name) = unsafe {
            let mut pwd: libc::passwd = std::mem::zeroed();
            let mut result: *mut libc::passwd = std::ptr::null_mut();
            let r = libc::getpwuid_r(
                uid,
                &mut pwd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut result,
            );
            let name = (r == 0 && !result.is_null() && !pwd.pw_name.is_null())
                .then(|| CStr::from_ptr(pwd.pw_name).to_string_lossy().into_owned());
            (r, name)
        };
        if r == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        return name;
    }
}

/// The subordinate ranges (first, count) of a user in the text of /etc/subuid or
/// /etc/subgid: lines `name:first:count` or `uid:first:count`.
pub fn subordinate_ranges(text: &str, name: Option<&str>, id: u32) -> Vec<(u32, u32)> {
    let id = id.to_string();
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, first, count) = (f.next()?, f.next()?, f.next()?);
            if who != id && Some(who) != name {
                return None;
            }
            Some((first.parse().ok()?, count.parse().ok()?))
        })
        .collect()
}

/// What to check one map against.
struct Allowed<'a> {
    /// `linux.uidMappings` or `linux.gidMappings`.
    field: &'static str,
    /// "uid" or "gid".
    kind: &'static str,
    /// The caller's own id of that kind.
    own: u32,
    /// The file listing subordinate ranges, and the caller's ranges in it.
    file: &'a Path,
    ranges: &'a [(u32, u32)],
}

impl Allowed<'_> {
    /// How to write `maps` for an unprivileged caller, or why it cannot be done.
    fn writer(
        &self,
        maps: &[IdMap],
        user: &str,
        helper: Option<PathBuf>,
        helper_name: &str,
    ) -> Result<MapWriter, IdMapError> {
        if let [m] = maps
            && m.outside == self.own
            && m.count == 1
        {
            return Ok(MapWriter::Direct);
        }
        for (i, m) in maps.iter().enumerate() {
            let field = format!("{}[{i}]", self.field);
            let last = u64::from(m.outside) + u64::from(m.count);
            if m.count == 0 {
                return Err(IdMapError::Invalid {
                    field: format!("{field}.size"),
                    message: "must be at least 1".into(),
                });
            }
            let own = m.outside == self.own && m.count == 1;
            let delegated = self.ranges.iter().any(|&(first, count)| {
                u64::from(m.outside) >= u64::from(first)
                    && last <= u64::from(first) + u64::from(count)
            });
            if !own && !delegated {
                let ranges = if self.ranges.is_empty() {
                    "none".to_owned()
                } else {
                    self.ranges
                        .iter()
                        .map(|(f, c)| format!("{f}-{}", u64::from(*f) + u64::from(*c) - 1))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(IdMapError::Invalid {
                    field,
                    message: format!(
                        "host {kind}s {}-{} are not yours to map: an unprivileged user may map its own {kind} {} and the ranges `{}` delegates to `{user}` ({ranges})",
                        m.outside,
                        last - 1,
                        self.own,
                        self.file.display(),
                        kind = self.kind,
                    ),
                });
            }
        }
        match helper {
            Some(p) => Ok(MapWriter::Helper(p)),
            None => Err(IdMapError::Invalid {
                field: self.field.to_owned(),
                message: format!(
                    "mapping more than your own {} needs `{helper_name}` (Debian package uidmap) on PATH",
                    self.kind
                ),
            }),
        }
    }
}

/// How the maps of one new user namespace are written, decided before the clone.
#[derive(Clone, Debug)]
pub struct IdMapPlan {
    /// The uid map.
    pub uid_maps: Vec<IdMap>,
    /// The gid map.
    pub gid_maps: Vec<IdMap>,
    /// Who writes the uid map.
    pub uid_writer: MapWriter,
    /// Who writes the gid map.
    pub gid_writer: MapWriter,
    /// Write "deny" to setgroups before the gid map: the kernel requires it of an
    /// unprivileged writer, so that dropping a group can never grant access.
    pub deny_setgroups: bool,
}

impl IdMapPlan {
    /// Plans the maps for `caller`, checking an unprivileged caller's mappings against
    /// /etc/subuid and /etc/subgid. Errors name `linux.uidMappings[i]` or
    /// `linux.gidMappings[i]`.
    pub fn new(
        uid_maps: Vec<IdMap>,
        gid_maps: Vec<IdMap>,
        caller: &Caller,
    ) -> Result<IdMapPlan, IdMapError> {
        Self::with_files(
            uid_maps,
            gid_maps,
            caller,
            Path::new("/etc/subuid"),
            Path::new("/etc/subgid"),
        )
    }

    /// [`IdMapPlan::new`] with other subordinate id files (for tests).
    pub fn with_files(
        uid_maps: Vec<IdMap>,
        gid_maps: Vec<IdMap>,
        caller: &Caller,
        subuid: &Path,
        subgid: &Path,
    ) -> Result<IdMapPlan, IdMapError> {
        if caller.privileged() {
            return Ok(IdMapPlan {
                uid_maps,
                gid_maps,
                uid_writer: MapWriter::Direct,
                gid_writer: MapWriter::Direct,
                deny_setgroups: false,
            });
        }
        let user = caller
            .name
            .clone()
            .unwrap_or_else(|| caller.uid.to_string());
        let read = |path: &Path, id: u32| -> Result<Vec<(u32, u32)>, IdMapError> {
            match std::fs::read_to_string(path) {
                Ok(text) => Ok(subordinate_ranges(&text, caller.name.as_deref(), id)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(source) => Err(IdMapError::ReadSubIds {
                    path: path.to_owned(),
                    source,
                }),
            }
        };
        let uid_ranges = read(subuid, caller.uid)?;
        let gid_ranges = read(subgid, caller.uid)?;
        let uid_writer = Allowed {
            field: "linux.uidMappings",
            kind: "uid",
            own: caller.uid,
            file: subuid,
            ranges: &uid_ranges,
        }
        .writer(&uid_maps, &user, find_helper("newuidmap"), "newuidmap")?;
        let gid_writer = Allowed {
            field: "linux.gidMappings",
            kind: "gid",
            own: caller.gid,
            file: subgid,
            ranges: &gid_ranges,
        }
        .writer(&gid_maps, &user, find_helper("newgidmap"), "newgidmap")?;
        Ok(IdMapPlan {
            deny_setgroups: gid_writer == MapWriter::Direct && !gid_maps.is_empty(),
            uid_maps,
            gid_maps,
            uid_writer,
            gid_writer,
        })
    }

    /// Writes both maps of the user namespace `pid` is in (newgidmap decides about
    /// setgroups itself).
    pub fn write(&self, pid: libc::pid_t) -> Result<(), IdMapError> {
        if self.deny_setgroups {
            write_proc(pid, "setgroups", b"deny")?;
        }
        for (name, maps, writer) in [
            ("uid_map", &self.uid_maps, &self.uid_writer),
            ("gid_map", &self.gid_maps, &self.gid_writer),
        ] {
            if maps.is_empty() {
                continue;
            }
            match writer {
                MapWriter::Direct => write_proc(pid, name, id_map_text(maps).as_bytes())?,
                MapWriter::Helper(program) => run_helper(program, pid, maps)?,
            }
        }
        Ok(())
    }
}

fn write_proc(pid: libc::pid_t, name: &str, text: &[u8]) -> Result<(), IdMapError> {
    let path = format!("/proc/{pid}/{name}");
    std::fs::write(&path, text).map_err(|source| IdMapError::Write { path, source })
}

/// Runs `program pid inside outside count...` and waits for it.
fn run_helper(program: &Path, pid: libc::pid_t, maps: &[IdMap]) -> Result<(), IdMapError> {
    let mut args = vec![pid.to_string()];
    for m in maps {
        args.extend([
            m.inside.to_string(),
            m.outside.to_string(),
            m.count.to_string(),
        ]);
    }
    let out = std::process::Command::new(program)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|source| IdMapError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(IdMapError::HelperFailed {
        command: format!("{} {}", program.display(), args.join(" ")),
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// `name` on PATH, else in the directories Debian installs it to.
fn find_helper(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(inside: u32, outside: u32, count: u32) -> IdMap {
        IdMap {
            inside,
            outside,
            count,
        }
    }

    fn user() -> Caller {
        Caller {
            uid: 1001,
            gid: 1002,
            name: Some("alice".into()),
        }
    }

    /// A private subuid and subgid file, removed on drop.
    struct Files(PathBuf);

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn files(tag: &str, subuid: &str, subgid: &str) -> (PathBuf, PathBuf, Files) {
        let dir = std::env::temp_dir().join(format!("cella-idmap-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (u, g) = (dir.join("subuid"), dir.join("subgid"));
        std::fs::write(&u, subuid).unwrap();
        std::fs::write(&g, subgid).unwrap();
        (u, g, Files(dir))
    }

    #[test]
    fn parses_subordinate_ranges_by_name_or_uid() {
        let text = "bob:100000:65536\nalice:165536:65536\n1001:300000:10\n# junk\nalice:x:1\n";
        assert_eq!(
            subordinate_ranges(text, Some("alice"), 1001),
            vec![(165536, 65536), (300000, 10)]
        );
        assert_eq!(subordinate_ranges(text, None, 42), vec![]);
    }

    #[test]
    fn own_id_alone_is_written_directly() {
        let (u, g, _dir) = files("own", "", "");
        let p = IdMapPlan::with_files(vec![m(0, 1001, 1)], vec![m(0, 1002, 1)], &user(), &u, &g)
            .unwrap();
        assert_eq!(p.uid_writer, MapWriter::Direct);
        assert_eq!(p.gid_writer, MapWriter::Direct);
    }

    #[test]
    fn delegated_ranges_go_through_the_helper() {
        let (u, g, _dir) = files("sub", "alice:100000:65536\n", "alice:100000:65536\n");
        let p = IdMapPlan::with_files(
            vec![m(0, 1001, 1), m(1, 100000, 65536)],
            vec![m(0, 1002, 1)],
            &user(),
            &u,
            &g,
        );
        // newuidmap is installed where the suite runs (package uidmap).
        if find_helper("newuidmap").is_some() {
            let p = p.unwrap();
            assert!(matches!(p.uid_writer, MapWriter::Helper(_)));
            assert_eq!(p.gid_writer, MapWriter::Direct);
        } else {
            assert!(p.unwrap_err().to_string().contains("newuidmap"));
        }
    }

    #[test]
    fn ranges_not_delegated_are_refused_naming_the_field() {
        let (u, g, _dir) = files("bad", "alice:100000:65536\n", "");
        let e = IdMapPlan::with_files(
            vec![m(0, 1001, 1), m(1, 100000, 65537)],
            vec![m(0, 1002, 1)],
            &user(),
            &u,
            &g,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("linux.uidMappings[1]: host uids 100000-165536 are not yours to map"),
            "{e}"
        );
        assert!(e.contains("`alice` (100000-165535)"), "{e}");
        let e = IdMapPlan::with_files(vec![m(0, 1001, 1)], vec![m(0, 0, 1)], &user(), &u, &g)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("linux.gidMappings[0]: host gids 0-0 are not yours to map"),
            "{e}"
        );
        assert!(e.contains("(none)"), "{e}");
    }

    #[test]
    fn root_writes_anything_directly() {
        let root = Caller {
            uid: 0,
            gid: 0,
            name: Some("root".into()),
        };
        let p = IdMapPlan::with_files(
            vec![m(0, 100000, 65536)],
            vec![m(0, 100000, 65536)],
            &root,
            Path::new("/nonexistent"),
            Path::new("/nonexistent"),
        )
        .unwrap();
        assert_eq!(p.uid_writer, MapWriter::Direct);
    }
}
