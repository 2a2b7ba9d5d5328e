//! The sandbox's filesystem as a plan: computed and checked in the supervisor before the
//! fork ([`FsPlan::new`]), executed by the sandbox's init in its new mount namespace
//! ([`FsPlan::apply`], then [`FsPlan::pivot`]), as bubblewrap does:
//!
//! 1. "/" becomes private (nothing propagates back to the host);
//! 2. a tmpfs over /tmp of the new namespace is the workspace: `root/` (the mount point
//!    of the new root) and `state/` (`upper`, `work`, `tmp`: the submission's writable
//!    state, later copied as evidence);
//! 3. the root (host "/" or `--rootfs`) is bound recursively and made read-only, nosuid
//!    and nodev with mount_setattr (which only sets flags, so it works on the mounts a
//!    user namespace locks);
//! 4. a fresh /proc (/proc/sys read-only), /sys/fs/cgroup hidden, a minimal /dev on a
//!    tmpfs (null, zero, full, random, urandom, tty bound from the host, a private
//!    devpts, /dev/shm), /tmp bound from `state/tmp`, `--bind`/`--ro-bind`, and
//!    `--workdir` as an overlay whose upper layer is `state/upper`;
//! 5. pivot_root into `root/`, the old root detached.
//!
//! Paths are the grader's, not the submission's, and are resolved before the submission
//! runs; there is no race to defend against, so plain paths are used.

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::sys;
use crate::wire::Text;

/// Where the workspace tmpfs goes in the new mount namespace.
const BASE: &str = "/tmp";

/// A bind mount into the sandbox.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bind {
    /// Host path.
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub destination: PathBuf,
    /// Mount it read-only.
    pub readonly: bool,
}

/// An error planning the filesystem (before anything is created).
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A source path cannot be used.
    #[error("{option}: `{}`", path.display())]
    Source {
        /// The option (`--bind`, `--workdir`, `--rootfs`).
        option: &'static str,
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A path is not acceptable.
    #[error("{option}: `{}`: {reason}", path.display())]
    Invalid {
        /// The option.
        option: &'static str,
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

#[derive(Debug)]
struct BindStep {
    source: CString,
    /// Under `BASE/root`.
    target: CString,
    readonly: bool,
    is_dir: bool,
}

/// The planned filesystem of one sandbox: every string converted, every source checked.
#[derive(Debug)]
pub struct FsPlan {
    root_source: CString,
    base: CString,
    new_root: CString,
    state: CString,
    upper: CString,
    work: CString,
    state_tmp: CString,
    proc_: CString,
    proc_sys: CString,
    /// The host's cgroup tree as the root shows it, hidden (it names other runs).
    sys_cgroup: CString,
    dev: CString,
    dev_pts: CString,
    dev_shm: CString,
    /// (host device, target under /dev).
    devices: Vec<(CString, CString)>,
    /// (link target, link path under /dev).
    dev_links: Vec<(CString, CString)>,
    tmp: CString,
    binds: Vec<BindStep>,
    /// (overlay target, mount data, mount data without `userxattr`).
    overlay: Option<(CString, CString, CString)>,
    /// The program's working directory, inside the sandbox.
    pub(crate) cwd: CString,
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn cat(a: &str, b: &str) -> CString {
    CString::new(format!("{a}{b}")).unwrap_or_default()
}

/// A clean absolute path inside the sandbox: no `..`, no `.`, no NUL.
fn inside(option: &'static str, p: &Path) -> Result<PathBuf, FsError> {
    let bad = |reason| FsError::Invalid {
        option,
        path: p.to_owned(),
        reason,
    };
    if !p.is_absolute() {
        return Err(bad("the destination must be an absolute path"));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => return Err(bad("the destination must not contain `..`")),
        }
    }
    if out == Path::new("/") {
        return Err(bad("the destination must not be `/`"));
    }
    if p.as_os_str().as_bytes().contains(&0) {
        return Err(bad("contains a NUL byte"));
    }
    Ok(out)
}

fn canonical(option: &'static str, p: &Path) -> Result<PathBuf, FsError> {
    std::fs::canonicalize(p).map_err(|source| FsError::Source {
        option,
        path: p.to_owned(),
        source,
    })
}

impl FsPlan {
    /// Checks every path and plans the mounts.
    pub fn new(
        rootfs: Option<&Path>,
        binds: &[Bind],
        workdir: Option<&Bind>,
    ) -> Result<FsPlan, FsError> {
        let root_source = match rootfs {
            Some(r) => {
                let c = canonical("--rootfs", r)?;
                if !c.is_dir() {
                    return Err(FsError::Invalid {
                        option: "--rootfs",
                        path: r.to_owned(),
                        reason: "is not a directory",
                    });
                }
                c
            }
            None => PathBuf::from("/"),
        };
        let root = format!("{BASE}/root");
        let under_root = |p: &Path| cat(&root, &p.to_string_lossy());
        let mut steps = Vec::new();
        for b in binds {
            let option = if b.readonly { "--ro-bind" } else { "--bind" };
            let src = canonical(option, &b.source)?;
            let dst = inside(option, &b.destination)?;
            steps.push(BindStep {
                is_dir: src.is_dir(),
                source: cstr(&src),
                target: under_root(&dst),
                readonly: b.readonly,
            });
        }
        let state = format!("{BASE}/state");
        let (overlay, cwd) = match workdir {
            Some(w) => {
                let src = canonical("--workdir", &w.source)?;
                if !src.is_dir() {
                    return Err(FsError::Invalid {
                        option: "--workdir",
                        path: w.source.clone(),
                        reason: "is not a directory",
                    });
                }
                let s = src.to_string_lossy();
                if s.contains([',', ':', '\\']) {
                    return Err(FsError::Invalid {
                        option: "--workdir",
                        path: w.source.clone(),
                        reason: "overlayfs cannot take a path with `,`, `:` or `\\`",
                    });
                }
                let dst = inside("--workdir", &w.destination)?;
                let plain = format!("lowerdir={s},upperdir={state}/upper,workdir={state}/work");
                let data = format!("{plain},userxattr");
                (
                    Some((
                        under_root(&dst),
                        CString::new(data).unwrap_or_default(),
                        CString::new(plain).unwrap_or_default(),
                    )),
                    cstr(&dst),
                )
            }
            None => (None, c"/tmp".to_owned()),
        };
        let dev = format!("{root}/dev");
        let devices = ["null", "zero", "full", "random", "urandom", "tty"]
            .iter()
            .map(|d| (cat("/dev/", d), cat(&dev, &format!("/{d}"))))
            .collect();
        let dev_links = [
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
            ("pts/ptmx", "ptmx"),
        ]
        .iter()
        .map(|(t, l)| (cat(t, ""), cat(&dev, &format!("/{l}"))))
        .collect();
        Ok(FsPlan {
            root_source: cstr(&root_source),
            base: cat(BASE, ""),
            new_root: cat(&root, ""),
            upper: cat(&state, "/upper"),
            work: cat(&state, "/work"),
            state_tmp: cat(&state, "/tmp"),
            state: cat(&state, ""),
            proc_: cat(&root, "/proc"),
            proc_sys: cat(&root, "/proc/sys"),
            sys_cgroup: cat(&root, "/sys/fs/cgroup"),
            dev_pts: cat(&dev, "/pts"),
            dev_shm: cat(&dev, "/shm"),
            dev: cat(&dev, ""),
            devices,
            dev_links,
            tmp: cat(&root, "/tmp"),
            binds: steps,
            overlay,
            cwd,
        })
    }

    /// The directory of the writable state, to hand to the supervisor (valid in the
    /// init after [`apply`](Self::apply)).
    pub(crate) fn state_dir(&self) -> &CStr {
        &self.state
    }

    // The error is fixed-size on purpose: the init does not allocate to report it.
    #[allow(clippy::result_large_err)]
    /// Makes every mount (in the init, in its new mount namespace, before the pivot).
    pub(crate) fn apply(&self) -> Result<(), (io::Error, Text)> {
        use libc::{MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC};
        let step = |what: &str, path: &CStr| {
            Text::from_parts(&[what.as_bytes(), b" `", path.to_bytes(), b"`"])
        };
        #[allow(clippy::result_large_err)]
        let at = |r: io::Result<()>, what: &str, path: &CStr| r.map_err(|e| (e, step(what, path)));

        at(
            sys::mount(None, c"/", None, MS_REC | MS_PRIVATE, None),
            "make private",
            c"/",
        )?;
        at(
            sys::mount(
                Some(c"tmpfs"),
                &self.base,
                Some(c"tmpfs"),
                MS_NOSUID | MS_NODEV,
                Some(c"mode=0755"),
            ),
            "mount tmpfs on",
            &self.base,
        )?;
        for d in [
            &self.new_root,
            &self.state,
            &self.upper,
            &self.work,
            &self.state_tmp,
        ] {
            at(sys::mkdir(d, 0o755), "mkdir", d)?;
        }
        at(
            sys::chmod(&self.state_tmp, 0o1777),
            "chmod",
            &self.state_tmp,
        )?;
        at(
            sys::mount(
                Some(&self.root_source),
                &self.new_root,
                None,
                MS_BIND | MS_REC,
                None,
            ),
            "bind the root at",
            &self.new_root,
        )?;
        at(
            sys::mount_setattr_recursive(
                &self.new_root,
                sys::MOUNT_ATTR_RDONLY | sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV,
            ),
            "make read-only",
            &self.new_root,
        )?;
        // /proc: fresh, for the new pid namespace; /proc/sys read-only.
        at(
            sys::mount(
                Some(c"proc"),
                &self.proc_,
                Some(c"proc"),
                MS_NOSUID | MS_NODEV | MS_NOEXEC,
                None,
            ),
            "mount proc on",
            &self.proc_,
        )?;
        at(
            sys::mount(
                Some(&self.proc_sys),
                &self.proc_sys,
                None,
                MS_BIND | MS_REC,
                None,
            ),
            "bind",
            &self.proc_sys,
        )?;
        at(
            sys::mount_setattr_recursive(&self.proc_sys, sys::MOUNT_ATTR_RDONLY),
            "make read-only",
            &self.proc_sys,
        )?;
        // The host's cgroup tree names every other run (ids can be students'): an empty,
        // read-only tmpfs hides it, where the root has one.
        if sys::file_type(&self.sys_cgroup).is_ok() {
            at(
                sys::mount(
                    Some(c"tmpfs"),
                    &self.sys_cgroup,
                    Some(c"tmpfs"),
                    MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
                    Some(c"mode=0555,size=4k"),
                ),
                "mount tmpfs on",
                &self.sys_cgroup,
            )?;
        }
        // /dev: a small tmpfs with only the harmless devices, read-only once populated.
        at(
            sys::mount(
                Some(c"tmpfs"),
                &self.dev,
                Some(c"tmpfs"),
                MS_NOSUID | MS_NOEXEC,
                Some(c"mode=0755,size=64k"),
            ),
            "mount tmpfs on",
            &self.dev,
        )?;
        for (host, target) in &self.devices {
            at(sys::touch(target), "create", target)?;
            at(
                sys::mount(Some(host), target, None, MS_BIND, None),
                "bind",
                target,
            )?;
        }
        for (target, link) in &self.dev_links {
            at(sys::symlink(target, link), "symlink", link)?;
        }
        at(sys::mkdir(&self.dev_pts, 0o755), "mkdir", &self.dev_pts)?;
        at(sys::mkdir(&self.dev_shm, 0o1777), "mkdir", &self.dev_shm)?;
        at(
            sys::mount(
                Some(c"devpts"),
                &self.dev_pts,
                Some(c"devpts"),
                MS_NOSUID | MS_NOEXEC,
                Some(c"newinstance,ptmxmode=0666,mode=620"),
            ),
            "mount devpts on",
            &self.dev_pts,
        )?;
        at(
            sys::mount(
                Some(c"tmpfs"),
                &self.dev_shm,
                Some(c"tmpfs"),
                MS_NOSUID | MS_NODEV,
                Some(c"mode=1777"),
            ),
            "mount tmpfs on",
            &self.dev_shm,
        )?;
        at(
            sys::mount(
                None,
                &self.dev,
                None,
                libc::MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC,
                Some(c"mode=0755,size=64k"),
            ),
            "remount read-only",
            &self.dev,
        )?;
        // /tmp: the private, writable one from the state directory.
        at(
            sys::mount(Some(&self.state_tmp), &self.tmp, None, MS_BIND, None),
            "bind /tmp at",
            &self.tmp,
        )?;
        for b in &self.binds {
            // A missing destination can be made only on a writable place (under /tmp).
            let made = if b.is_dir {
                sys::mkdir(&b.target, 0o755)
            } else {
                sys::touch(&b.target)
            };
            if let Err(e) = made
                && sys::file_type(&b.target).is_err()
            {
                return Err((e, step("create the bind destination", &b.target)));
            }
            at(
                sys::mount(Some(&b.source), &b.target, None, MS_BIND | MS_REC, None),
                "bind",
                &b.target,
            )?;
            let mut set = sys::MOUNT_ATTR_NOSUID | sys::MOUNT_ATTR_NODEV;
            if b.readonly {
                set |= sys::MOUNT_ATTR_RDONLY;
            }
            at(
                sys::mount_setattr_recursive(&b.target, set),
                "set attributes of",
                &b.target,
            )?;
        }
        if let Some((target, data, plain)) = &self.overlay {
            if let Err(e) = sys::mkdir(target, 0o755)
                && sys::file_type(target).is_err()
            {
                return Err((e, step("create the work directory", target)));
            }
            let mount = |data: &CStr| {
                sys::mount(
                    Some(c"overlay"),
                    target,
                    Some(c"overlay"),
                    MS_NOSUID | MS_NODEV,
                    Some(data),
                )
            };
            // `userxattr` (Linux 5.11) lets overlayfs keep its metadata in user.* xattrs
            // inside a user namespace; older kernels refuse the option.
            let r = match mount(data) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => mount(plain),
                r => r,
            };
            at(r, "mount overlay on", target)?;
        }
        Ok(())
    }

    #[allow(clippy::result_large_err)]
    /// pivot_root into the new root and detach the old one.
    pub(crate) fn pivot(&self) -> Result<(), (io::Error, Text)> {
        let step = |what: &[u8]| Text::from_parts(&[what]);
        cella_isolate::sys::chdir(&self.new_root)
            .map_err(|e| (e, step(b"chdir to the new root")))?;
        sys::pivot_root(c".", c".").map_err(|e| (e, step(b"pivot_root")))?;
        sys::umount2(c".", libc::MNT_DETACH).map_err(|e| (e, step(b"detach the old root")))?;
        cella_isolate::sys::chdir(c"/").map_err(|e| (e, step(b"chdir /")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(src: &str, dst: &str, readonly: bool) -> Bind {
        Bind {
            source: src.into(),
            destination: dst.into(),
            readonly,
        }
    }

    #[test]
    fn destinations_are_clean_and_inside() {
        assert_eq!(
            inside("--bind", Path::new("/a/./b/")).unwrap(),
            Path::new("/a/b")
        );
        assert!(inside("--bind", Path::new("relative")).is_err());
        assert!(inside("--bind", Path::new("/a/../../etc")).is_err());
        assert!(inside("--bind", Path::new("/")).is_err());
    }

    #[test]
    fn plan_of_binds_and_workdir() {
        let p = FsPlan::new(
            None,
            &[bind("/etc", "/tmp/etc", true)],
            Some(&bind("/usr", "/tmp/w", false)),
        )
        .expect("plans");
        assert_eq!(p.root_source.as_c_str(), c"/");
        assert_eq!(p.binds.len(), 1);
        assert_eq!(p.binds[0].target.as_c_str(), c"/tmp/root/tmp/etc");
        assert!(p.binds[0].readonly && p.binds[0].is_dir);
        let (target, data, plain) = p.overlay.as_ref().expect("an overlay");
        assert_eq!(target.as_c_str(), c"/tmp/root/tmp/w");
        assert_eq!(
            plain.to_str().unwrap(),
            "lowerdir=/usr,upperdir=/tmp/state/upper,workdir=/tmp/state/work"
        );
        assert!(data.to_str().unwrap().ends_with(",userxattr"));
        assert_eq!(p.cwd.as_c_str(), c"/tmp/w");
        let p = FsPlan::new(None, &[], None).expect("plans");
        assert_eq!(p.cwd.as_c_str(), c"/tmp");
    }

    #[test]
    fn bad_sources_name_the_option() {
        let e = FsPlan::new(None, &[bind("/nonexistent-x", "/tmp/x", false)], None).unwrap_err();
        assert!(e.to_string().starts_with("--bind: `/nonexistent-x`"), "{e}");
        let e = FsPlan::new(Some(Path::new("/etc/passwd")), &[], None).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
        let e = FsPlan::new(None, &[], Some(&bind("/etc/passwd", "/tmp/w", false))).unwrap_err();
        assert!(e.to_string().starts_with("--workdir"), "{e}");
    }
}
