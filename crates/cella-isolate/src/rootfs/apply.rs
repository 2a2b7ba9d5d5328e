//! Executing a [`RootfsPlan`] in the container's init. Written against [`MountSys`] so the
//! order of kernel calls is unit-tested with a recording double; [`Kernel`] is the real one.
//!
//! Runs between clone() and exec: no printing, no locks, and no allocation on the success
//! path except inside error values.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use libc::{c_int, c_ulong};

use super::plan::{Hierarchy, MountKind, MountStep, RootfsPlan};
use super::safepath::{self, Create, ResolveError};
use super::{RootfsError, sys};

/// Flags the kernel locks on mounts inherited into a user namespace, and that a bind
/// remount must therefore repeat (also kept on read-only remounts of our own mounts).
const LOCKED_FLAGS: c_ulong = libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME;

/// Where a mount call points: a plain path, or a node resolved inside the rootfs.
#[derive(Debug)]
pub(crate) enum Target<'a, N> {
    Path(&'a CStr),
    Node(&'a N),
}

impl<N> Clone for Target<'_, N> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<N> Copy for Target<'_, N> {}

/// The kernel calls the rootfs setup makes.
pub(crate) trait MountSys {
    /// A place resolved inside a root (an O_PATH fd for the real kernel).
    type Node;
    /// Resolves absolute `path` inside the tree at `root` (see [`safepath`]).
    fn resolve(
        &mut self,
        root: &CStr,
        path: &CStr,
        create: Create,
    ) -> Result<Self::Node, ResolveError>;
    /// mount(2).
    fn mount(
        &mut self,
        source: Option<Target<'_, Self::Node>>,
        target: Target<'_, Self::Node>,
        fstype: Option<&CStr>,
        flags: c_ulong,
        data: Option<&CStr>,
    ) -> io::Result<()>;
    /// Copies the tree under `lower` (the destination before the mount) into `upper`.
    fn copy_up(&mut self, lower: &Self::Node, upper: &Self::Node) -> io::Result<()>;
    /// mount_setattr(AT_RECURSIVE) on the mount tree at `target`.
    fn mount_setattr(&mut self, target: &Self::Node, set: u64, clear: u64) -> io::Result<()>;
    /// The mount flags of the mount at `target` (statvfs).
    fn mount_flags(&mut self, target: Target<'_, Self::Node>) -> io::Result<c_ulong>;
    /// mknodat + fchmodat (the mode's permission bits are exact, whatever the umask).
    fn mknod(&mut self, dir: &Self::Node, name: &CStr, mode: u32, dev: u64) -> io::Result<()>;
    /// fchownat without following symlinks.
    fn chown(&mut self, dir: &Self::Node, name: &CStr, uid: u32, gid: u32) -> io::Result<()>;
    /// symlinkat.
    fn symlink(&mut self, dir: &Self::Node, name: &CStr, target: &CStr) -> io::Result<()>;
    /// unlinkat of a non-directory.
    fn unlink(&mut self, dir: &Self::Node, name: &CStr) -> io::Result<()>;
    /// pivot_root(2).
    fn pivot_root(&mut self, new_root: &CStr, put_old: &CStr) -> io::Result<()>;
    /// umount2(2).
    fn umount(&mut self, target: &CStr, flags: c_int) -> io::Result<()>;
    /// chdir(2).
    fn chdir(&mut self, path: &CStr) -> io::Result<()>;
    /// Opens a directory (O_PATH) to come back to it with [`MountSys::fchdir`].
    fn open_dir(&mut self, path: &CStr) -> io::Result<Self::Node>;
    /// fchdir(2).
    fn fchdir(&mut self, dir: &Self::Node) -> io::Result<()>;
    /// chroot(2).
    fn chroot(&mut self, path: &CStr) -> io::Result<()>;
    /// Reads a small file into `buf`.
    fn read_file(&mut self, path: &CStr, buf: &mut [u8]) -> io::Result<usize>;
}

/// The real kernel.
pub(crate) struct Kernel {
    /// Try openat2 before the component walk (tests turn it off to cover the walk).
    pub(crate) openat2: bool,
}

impl Kernel {
    pub(crate) fn new() -> Kernel {
        Kernel { openat2: true }
    }
}

fn target_path(t: Target<'_, OwnedFd>) -> TargetPath<'_> {
    match t {
        Target::Path(p) => TargetPath::Path(p),
        Target::Node(fd) => TargetPath::Fd(sys::FdPath::new(fd.as_raw_fd())),
    }
}

enum TargetPath<'a> {
    Path(&'a CStr),
    Fd(sys::FdPath),
}

impl TargetPath<'_> {
    fn as_cstr(&self) -> &CStr {
        match self {
            TargetPath::Path(p) => p,
            TargetPath::Fd(f) => f.as_cstr(),
        }
    }
}

impl MountSys for Kernel {
    type Node = OwnedFd;

    fn resolve(
        &mut self,
        root: &CStr,
        path: &CStr,
        create: Create,
    ) -> Result<OwnedFd, ResolveError> {
        let root_fd = sys::open(root, libc::O_PATH | libc::O_DIRECTORY).map_err(|source| {
            ResolveError::Io {
                op: "open",
                path: root.to_string_lossy().into_owned(),
                source,
            }
        })?;
        safepath::resolve(root_fd.as_fd(), path, create, self.openat2)
    }

    fn mount(
        &mut self,
        source: Option<Target<'_, OwnedFd>>,
        target: Target<'_, OwnedFd>,
        fstype: Option<&CStr>,
        flags: c_ulong,
        data: Option<&CStr>,
    ) -> io::Result<()> {
        let source = source.map(target_path);
        let target = target_path(target);
        sys::mount(
            source.as_ref().map(TargetPath::as_cstr),
            target.as_cstr(),
            fstype,
            flags,
            data,
        )
    }

    fn copy_up(&mut self, lower: &OwnedFd, upper: &OwnedFd) -> io::Result<()> {
        super::copyup::copy_up(lower.as_fd(), upper.as_fd())
    }

    fn mount_setattr(&mut self, target: &OwnedFd, set: u64, clear: u64) -> io::Result<()> {
        sys::mount_setattr_recursive(target.as_fd(), set, clear)
    }

    fn mount_flags(&mut self, target: Target<'_, OwnedFd>) -> io::Result<c_ulong> {
        match target {
            Target::Node(fd) => sys::mount_flags(fd.as_fd()),
            Target::Path(p) => {
                let fd = sys::open(p, libc::O_PATH)?;
                sys::mount_flags(fd.as_fd())
            }
        }
    }

    fn mknod(&mut self, dir: &OwnedFd, name: &CStr, mode: u32, dev: u64) -> io::Result<()> {
        sys::mknodat(dir.as_fd(), name, mode, dev)?;
        sys::fchmodat(dir.as_fd(), name, mode & 0o7777)
    }

    fn chown(&mut self, dir: &OwnedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
        sys::lchownat(dir.as_fd(), name, uid, gid)
    }

    fn symlink(&mut self, dir: &OwnedFd, name: &CStr, target: &CStr) -> io::Result<()> {
        sys::symlinkat(target, dir.as_fd(), name)
    }

    fn unlink(&mut self, dir: &OwnedFd, name: &CStr) -> io::Result<()> {
        sys::unlinkat(dir.as_fd(), name)
    }

    fn pivot_root(&mut self, new_root: &CStr, put_old: &CStr) -> io::Result<()> {
        sys::pivot_root(new_root, put_old)
    }

    fn umount(&mut self, target: &CStr, flags: c_int) -> io::Result<()> {
        sys::umount2(target, flags)
    }

    fn chdir(&mut self, path: &CStr) -> io::Result<()> {
        sys::chdir(path)
    }

    fn chroot(&mut self, path: &CStr) -> io::Result<()> {
        sys::chroot(path)
    }

    fn open_dir(&mut self, path: &CStr) -> io::Result<OwnedFd> {
        sys::open(path, libc::O_PATH | libc::O_DIRECTORY)
    }

    fn fchdir(&mut self, dir: &OwnedFd) -> io::Result<()> {
        sys::fchdir(dir.as_fd())
    }

    fn read_file(&mut self, path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
        sys::read_small_file(path, buf)
    }
}

fn resolve_err(field: &str, path: &CStr, e: ResolveError) -> RootfsError {
    match e {
        ResolveError::Escape { link } => RootfsError::Escape {
            field: field.to_string(),
            path: path.to_string_lossy().into_owned(),
            link,
        },
        ResolveError::Io {
            op,
            path: inner,
            source,
        } => RootfsError::Sys {
            field: field.to_string(),
            op,
            path: inner,
            source,
        },
    }
}

fn ignore(e: io::Error, code: c_int) -> io::Result<()> {
    if e.raw_os_error() == Some(code) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Step 1: see [`RootfsPlan::mount_all`].
pub(crate) fn mount_all<S: MountSys>(plan: &RootfsPlan, sys: &mut S) -> Result<(), RootfsError> {
    if !plan.new_mount_ns {
        return Ok(());
    }
    let root = plan.rootfs.as_c_str();
    // First cut propagation back to the host, so nothing below leaks out.
    sys.mount(None, Target::Path(c"/"), None, plan.root_propagation, None)
        .map_err(|e| RootfsError::sys("linux.rootfsPropagation", "mount", c"/", e))?;
    if let Some(parent) = &plan.parent_private {
        sys.mount(None, Target::Path(parent), None, libc::MS_PRIVATE, None)
            .map_err(|e| RootfsError::sys("root.path", "make private", parent, e))?;
    }
    // pivot_root needs the rootfs to be a mount point.
    sys.mount(
        Some(Target::Path(root)),
        Target::Path(root),
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| RootfsError::sys("root.path", "bind", root, e))?;

    for m in &plan.mounts {
        mount_one(plan, m, sys)?;
    }
    if plan.setup_dev {
        make_dev(plan, sys)?;
    }
    Ok(())
}

fn mount_one<S: MountSys>(
    plan: &RootfsPlan,
    m: &MountStep,
    sys: &mut S,
) -> Result<(), RootfsError> {
    let root = plan.rootfs.as_c_str();
    let dest = m.destination.as_c_str();
    let dest_field = || format!("{}.destination", m.field);
    let node = sys
        .resolve(root, dest, m.create)
        .map_err(|e| resolve_err(&dest_field(), dest, e))?;
    let fail = |op: &'static str| move |e: io::Error| RootfsError::sys(&m.field, op, dest, e);
    match &m.kind {
        MountKind::Bind { source, recursive } => {
            let rec = if *recursive { libc::MS_REC } else { 0 };
            sys.mount(
                Some(Target::Path(source)),
                Target::Node(&node),
                None,
                libc::MS_BIND | rec,
                None,
            )
            .map_err(fail("bind"))?;
            let extra = m.flags & !(libc::MS_BIND | libc::MS_REC | libc::MS_REMOUNT);
            if extra != 0 {
                // The fd still points below the new mount: look the destination up again.
                let top = sys
                    .resolve(root, dest, Create::Nothing)
                    .map_err(|e| resolve_err(&dest_field(), dest, e))?;
                let mut flags = libc::MS_REMOUNT | libc::MS_BIND | extra;
                if plan.in_userns {
                    flags |= sys
                        .mount_flags(Target::Node(&top))
                        .map_err(fail("statvfs"))?
                        & LOCKED_FLAGS;
                }
                sys.mount(None, Target::Node(&top), None, flags, None)
                    .map_err(fail("remount"))?;
            }
        }
        MountKind::Fs { fstype, source } => {
            sys.mount(
                Some(Target::Path(source)),
                Target::Node(&node),
                Some(fstype),
                m.flags,
                m.data.as_deref(),
            )
            .map_err(fail("mount"))?;
            if m.copy_up {
                // `node` still names the covered directory; the new tmpfs is on top.
                let top = sys
                    .resolve(root, dest, Create::Nothing)
                    .map_err(|e| resolve_err(&dest_field(), dest, e))?;
                sys.copy_up(&node, &top).map_err(fail("copy up into"))?;
            }
        }
        MountKind::Cgroup2 { source } => {
            match sys.mount(
                Some(Target::Path(source)),
                Target::Node(&node),
                Some(c"cgroup2"),
                m.flags,
                m.data.as_deref(),
            ) {
                Ok(()) => {}
                Err(e)
                    if plan.in_userns
                        && matches!(e.raw_os_error(), Some(libc::EPERM | libc::EBUSY)) =>
                {
                    bind_own_cgroup2(plan, m, &node, sys)?;
                }
                Err(e) => return Err(fail("mount")(e)),
            }
        }
        MountKind::CgroupV1 { hierarchies } => {
            mount_cgroup_v1(plan, m, hierarchies, &node, sys)?;
        }
    }
    drop(node);
    if m.recursive_attr.is_some() || !m.propagation.is_empty() {
        let top = sys
            .resolve(root, dest, Create::Nothing)
            .map_err(|e| resolve_err(&dest_field(), dest, e))?;
        if let Some((set, clear)) = m.recursive_attr {
            sys.mount_setattr(&top, set, clear)
                .map_err(fail("set recursive attributes of"))?;
        }
        for p in &m.propagation {
            sys.mount(None, Target::Node(&top), None, *p, None)
                .map_err(fail("set propagation of"))?;
        }
    }
    Ok(())
}

/// cgroup v1 or hybrid: a tmpfs, then per host hierarchy either a fresh mount (in a new
/// cgroup namespace, where the kernel shows the namespace's root) or a read-only bind of
/// the container's own directory of the host hierarchy (from /proc/self/cgroup: the init
/// is already in its cgroup when this runs), plus symlinks for co-mounted controllers.
fn mount_cgroup_v1<S: MountSys>(
    plan: &RootfsPlan,
    m: &MountStep,
    hierarchies: &[Hierarchy],
    node: &S::Node,
    sys: &mut S,
) -> Result<(), RootfsError> {
    let root = plan.rootfs.as_c_str();
    let dest = m.destination.as_c_str();
    let fs_flags = m.flags & !libc::MS_RDONLY;
    sys.mount(
        Some(Target::Path(c"tmpfs")),
        Target::Node(node),
        Some(c"tmpfs"),
        fs_flags,
        Some(c"mode=755"),
    )
    .map_err(|e| RootfsError::sys(&m.field, "mount", dest, e))?;
    let mut cg = [0u8; 8192];
    let mut cg_len = 0;
    if hierarchies.iter().any(|h| !h.fresh) {
        cg_len = sys
            .read_file(c"/proc/self/cgroup", &mut cg)
            .map_err(|e| RootfsError::sys(&m.field, "read", c"/proc/self/cgroup", e))?;
    }
    let top = sys
        .resolve(root, dest, Create::Nothing)
        .map_err(|e| resolve_err(&format!("{}.destination", m.field), dest, e))?;
    for h in hierarchies {
        let sub_flags = fs_flags | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if h.fresh {
            let sub = sys
                .resolve(root, &h.target, Create::Dir)
                .map_err(|e| resolve_err(&m.field, &h.target, e))?;
            sys.mount(
                Some(Target::Path(c"cgroup")),
                Target::Node(&sub),
                Some(&h.fstype),
                sub_flags | (m.flags & libc::MS_RDONLY),
                h.data.as_deref(),
            )
            .map_err(|e| RootfsError::sys(&m.field, "mount", &h.target, e))?;
        } else {
            let Some(own) = own_cgroup(&cg[..cg_len], &h.key) else {
                // The init is not in this hierarchy: nothing to show.
                continue;
            };
            let mut src = [0u8; 4096];
            let Some(src) = join_into(&mut src, &h.host_mount, own) else {
                return Err(RootfsError::sys(
                    &m.field,
                    "bind",
                    &h.target,
                    io::Error::from_raw_os_error(libc::ENAMETOOLONG),
                ));
            };
            let sub = sys
                .resolve(root, &h.target, Create::Dir)
                .map_err(|e| resolve_err(&m.field, &h.target, e))?;
            sys.mount(
                Some(Target::Path(src)),
                Target::Node(&sub),
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )
            .map_err(|e| RootfsError::sys(&m.field, "bind", &h.target, e))?;
            let sub = sys
                .resolve(root, &h.target, Create::Nothing)
                .map_err(|e| resolve_err(&m.field, &h.target, e))?;
            sys.mount(
                None,
                Target::Node(&sub),
                None,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | sub_flags,
                None,
            )
            .map_err(|e| RootfsError::sys(&m.field, "remount", &h.target, e))?;
        }
        for link in &h.links {
            sys.symlink(&top, link, &h.name)
                .or_else(|e| ignore(e, libc::EEXIST))
                .map_err(|e| RootfsError::sys(&m.field, "symlink", link, e))?;
        }
    }
    if m.flags & libc::MS_RDONLY != 0 {
        sys.mount(
            None,
            Target::Node(&top),
            None,
            libc::MS_REMOUNT | m.flags,
            Some(c"mode=755"),
        )
        .map_err(|e| RootfsError::sys(&m.field, "remount", dest, e))?;
    }
    Ok(())
}

/// The fallback for cgroup2 in a user namespace without its own cgroup namespace: bind
/// the init's own cgroup directory (the `0::<path>` line of /proc/self/cgroup) of the
/// host's /sys/fs/cgroup, then remount it with the mount's flags.
fn bind_own_cgroup2<S: MountSys>(
    plan: &RootfsPlan,
    m: &MountStep,
    node: &S::Node,
    sys: &mut S,
) -> Result<(), RootfsError> {
    let dest = m.destination.as_c_str();
    let mut cg = [0u8; 8192];
    let n = sys
        .read_file(c"/proc/self/cgroup", &mut cg)
        .map_err(|e| RootfsError::sys(&m.field, "read", c"/proc/self/cgroup", e))?;
    let own = own_cgroup(&cg[..n], b"").ok_or_else(|| {
        RootfsError::sys(
            &m.field,
            "find own cgroup in",
            c"/proc/self/cgroup",
            io::Error::from_raw_os_error(libc::ENOENT),
        )
    })?;
    let mut src = [0u8; 4096];
    let src = join_into(&mut src, b"/sys/fs/cgroup", own).ok_or_else(|| {
        RootfsError::sys(
            &m.field,
            "bind",
            dest,
            io::Error::from_raw_os_error(libc::ENAMETOOLONG),
        )
    })?;
    sys.mount(
        Some(Target::Path(src)),
        Target::Node(node),
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| RootfsError::sys(&m.field, "bind", dest, e))?;
    let top = sys
        .resolve(&plan.rootfs, dest, Create::Nothing)
        .map_err(|e| resolve_err(&format!("{}.destination", m.field), dest, e))?;
    let locked = sys
        .mount_flags(Target::Node(&top))
        .map_err(|e| RootfsError::sys(&m.field, "statvfs", dest, e))?
        & LOCKED_FLAGS;
    sys.mount(
        None,
        Target::Node(&top),
        None,
        libc::MS_REMOUNT | libc::MS_BIND | m.flags | locked,
        None,
    )
    .map_err(|e| RootfsError::sys(&m.field, "remount", dest, e))
}

/// The path of the line of /proc/self/cgroup (`id:controllers:path`) whose controller
/// set equals `key`.
fn own_cgroup<'a>(content: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    content.split(|&c| c == b'\n').find_map(|line| {
        let mut parts = line.splitn(3, |&c| c == b':');
        let _id = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        same_set(ctrls, key).then_some(path)
    })
}

fn same_set(a: &[u8], b: &[u8]) -> bool {
    let items = |s: &[u8]| s.split(|&c| c == b',').filter(|x| !x.is_empty()).count();
    items(a) == items(b)
        && a.split(|&c| c == b',')
            .filter(|x| !x.is_empty())
            .all(|x| b.split(|&c| c == b',').any(|y| y == x))
}

/// `<a><b>` NUL-terminated in `buf`.
fn join_into<'b>(buf: &'b mut [u8], a: &[u8], b: &[u8]) -> Option<&'b CStr> {
    let n = a.len() + b.len();
    if n + 1 > buf.len() || a.contains(&0) || b.contains(&0) {
        return None;
    }
    buf[..a.len()].copy_from_slice(a);
    buf[a.len()..n].copy_from_slice(b);
    buf[n] = 0;
    CStr::from_bytes_with_nul(&buf[..=n]).ok()
}

/// Devices, /dev symlinks and /dev/ptmx, after all mounts (so /dev is the final tmpfs).
fn make_dev<S: MountSys>(plan: &RootfsPlan, sys: &mut S) -> Result<(), RootfsError> {
    let root = plan.rootfs.as_c_str();
    for d in &plan.devices {
        if plan.in_userns {
            // No mknod in a user namespace: bind the host's node onto an empty file.
            let node = sys
                .resolve(root, &d.path, Create::File)
                .map_err(|e| resolve_err(&d.field, &d.path, e))?;
            sys.mount(
                Some(Target::Path(&d.path)),
                Target::Node(&node),
                None,
                libc::MS_BIND,
                None,
            )
            .map_err(|e| RootfsError::sys(&d.field, "bind", &d.path, e))?;
        } else {
            let dir = sys
                .resolve(root, &d.dir, Create::Dir)
                .map_err(|e| resolve_err(&d.field, &d.path, e))?;
            sys.mknod(&dir, &d.name, d.mode, d.dev)
                .or_else(|e| ignore(e, libc::EEXIST))
                .map_err(|e| RootfsError::sys(&d.field, "mknod", &d.path, e))?;
            sys.chown(&dir, &d.name, d.uid, d.gid)
                .map_err(|e| RootfsError::sys(&d.field, "chown", &d.path, e))?;
        }
    }
    let dev = sys
        .resolve(root, c"/dev", Create::Dir)
        .map_err(|e| resolve_err("dev", c"/dev", e))?;
    for (name, target) in &plan.dev_symlinks {
        sys.symlink(&dev, name, target)
            .or_else(|e| ignore(e, libc::EEXIST))
            .map_err(|e| RootfsError::sys("dev", "symlink", name, e))?;
    }
    sys.unlink(&dev, c"ptmx")
        .or_else(|e| ignore(e, libc::ENOENT))
        .map_err(|e| RootfsError::sys("dev", "unlink", c"/dev/ptmx", e))?;
    sys.symlink(&dev, c"ptmx", c"pts/ptmx")
        .map_err(|e| RootfsError::sys("dev", "symlink", c"/dev/ptmx", e))?;
    Ok(())
}

/// See [`RootfsPlan::mount_console`].
pub(crate) fn mount_console<S: MountSys>(
    plan: &RootfsPlan,
    slave: &CStr,
    sys: &mut S,
) -> Result<(), RootfsError> {
    let console = c"/dev/console";
    let node = sys
        .resolve(&plan.rootfs, console, Create::File)
        .map_err(|e| resolve_err("process.terminal", console, e))?;
    sys.mount(
        Some(Target::Path(slave)),
        Target::Node(&node),
        None,
        libc::MS_BIND,
        None,
    )
    .map_err(|e| RootfsError::sys("process.terminal", "bind", console, e))
}

/// Step 2: see [`RootfsPlan::pivot`].
pub(crate) fn pivot<S: MountSys>(plan: &RootfsPlan, sys: &mut S) -> Result<(), RootfsError> {
    let root = plan.rootfs.as_c_str();
    let f = "root.path";
    if !plan.new_mount_ns {
        sys.chroot(root)
            .map_err(|e| RootfsError::sys(f, "chroot", root, e))?;
    } else if plan.no_pivot {
        sys.chdir(root)
            .map_err(|e| RootfsError::sys(f, "chdir", root, e))?;
        sys.mount(
            Some(Target::Path(root)),
            Target::Path(c"/"),
            None,
            libc::MS_MOVE,
            None,
        )
        .map_err(|e| RootfsError::sys(f, "move mount", root, e))?;
        sys.chroot(c".")
            .map_err(|e| RootfsError::sys(f, "chroot", root, e))?;
    } else {
        // pivot_root(".", ".") stacks the old root on top of the new one. A path walk
        // ending in "." does not cross into mounts stacked on the cwd, so go back to the
        // old root through an fd opened before, make it a slave there (so the lazy
        // unmount does not propagate to the host), then detach it.
        let old_root = sys
            .open_dir(c"/")
            .map_err(|e| RootfsError::sys(f, "open", c"/", e))?;
        sys.chdir(root)
            .map_err(|e| RootfsError::sys(f, "chdir", root, e))?;
        sys.pivot_root(c".", c".")
            .map_err(|e| RootfsError::sys(f, "pivot_root", root, e))?;
        sys.fchdir(&old_root)
            .map_err(|e| RootfsError::sys(f, "fchdir", c"old root", e))?;
        drop(old_root);
        sys.mount(
            None,
            Target::Path(c"."),
            None,
            libc::MS_SLAVE | libc::MS_REC,
            None,
        )
        .map_err(|e| RootfsError::sys(f, "make slave", c"old root", e))?;
        sys.umount(c".", libc::MNT_DETACH)
            .map_err(|e| RootfsError::sys(f, "umount", c"old root", e))?;
    }
    sys.chdir(c"/")
        .map_err(|e| RootfsError::sys(f, "chdir", c"/", e))?;
    if let Some(p) = plan.final_propagation {
        sys.mount(None, Target::Path(c"/"), None, p, None)
            .map_err(|e| RootfsError::sys("linux.rootfsPropagation", "mount", c"/", e))?;
    }
    Ok(())
}

/// Step 3: see [`RootfsPlan::finish`]. Runs with the container's root as "/".
pub(crate) fn finish<S: MountSys>(plan: &RootfsPlan, sys: &mut S) -> Result<(), RootfsError> {
    let root = c"/";
    for r in &plan.readonly_paths {
        let node = match sys.resolve(root, &r.path, Create::Nothing) {
            Ok(n) => n,
            Err(ResolveError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(resolve_err(&r.field, &r.path, e)),
        };
        sys.mount(
            Some(Target::Node(&node)),
            Target::Node(&node),
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(|e| RootfsError::sys(&r.field, "bind", &r.path, e))?;
        drop(node);
        let top = sys
            .resolve(root, &r.path, Create::Nothing)
            .map_err(|e| resolve_err(&r.field, &r.path, e))?;
        remount_ro(sys, Target::Node(&top))
            .map_err(|e| RootfsError::sys(&r.field, "remount", &r.path, e))?;
    }
    for mp in &plan.masked_paths {
        let node = match sys.resolve(root, &mp.path, Create::Nothing) {
            Ok(n) => n,
            Err(ResolveError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                continue;
            }
            Err(e) => return Err(resolve_err(&mp.field, &mp.path, e)),
        };
        match sys.mount(
            Some(Target::Path(c"/dev/null")),
            Target::Node(&node),
            None,
            libc::MS_BIND,
            None,
        ) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                // A directory: hide it under an empty read-only tmpfs.
                sys.mount(
                    Some(Target::Path(c"tmpfs")),
                    Target::Node(&node),
                    Some(c"tmpfs"),
                    libc::MS_RDONLY,
                    plan.mask_dir_data.as_deref(),
                )
                .map_err(|e| RootfsError::sys(&mp.field, "mask", &mp.path, e))?;
            }
            Err(e) => return Err(RootfsError::sys(&mp.field, "mask", &mp.path, e)),
        }
    }
    if plan.readonly_root {
        remount_ro(sys, Target::Path(c"/"))
            .map_err(|e| RootfsError::sys("root.readonly", "remount", c"/", e))?;
    }
    Ok(())
}

/// Remounts a bind mount read-only, repeating the flags it has (the kernel refuses to
/// drop locked ones in a user namespace, and we only mean to add `ro`).
fn remount_ro<S: MountSys>(sys: &mut S, target: Target<'_, S::Node>) -> io::Result<()> {
    let current = sys.mount_flags(target)?;
    sys.mount(
        None,
        target,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | (current & LOCKED_FLAGS),
        None,
    )
}

#[cfg(test)]
mod tests;
