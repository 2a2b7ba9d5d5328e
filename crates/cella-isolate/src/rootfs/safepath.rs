//! Resolving a path inside the rootfs without ever leaving it (runc CVE-2021-30465).
//!
//! The result is an O_PATH fd; callers mount onto `/proc/self/fd/<n>` of it, so a symlink
//! swapped in after the resolution cannot redirect the mount.
//!
//! Why not only `openat2(RESOLVE_IN_ROOT)`: it silently clamps `..` at the root, and a
//! destination that climbs out of the rootfs through a relative symlink must be reported
//! as an error instead. So the fast path is one `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` for the common case (the path exists and has no symlink at all),
//! and everything else (missing components to create, symlinks, ENOSYS) goes through a
//! component walk: each step is a single-component `openat(O_PATH | O_NOFOLLOW)` relative
//! to the parent's fd, `..` pops our own fd stack (the kernel never sees a `..`), absolute
//! symlinks restart from the rootfs fd, and popping past the root is an escape. The walk
//! uses fixed buffers only: it runs in the container's init.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::sys;

/// What to create when the final component is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    /// Nothing: a missing path is an error (NotFound).
    Nothing,
    /// A directory (mode 0755), as a mount point for a directory or filesystem.
    Dir,
    /// An empty regular file, as a mount point for a file bind mount.
    File,
}

/// Why a path could not be resolved.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// The path goes through the symlink `link` (a path inside the rootfs) whose target
    /// climbs above the rootfs root.
    Escape {
        /// The symlink, as a path inside the rootfs.
        link: String,
    },
    /// A syscall failed on `path` (a path inside the rootfs).
    Io {
        /// The operation.
        op: &'static str,
        /// The path inside the rootfs.
        path: String,
        /// The error.
        source: io::Error,
    },
}

const MAX_PATH: usize = 4096;
const MAX_DEPTH: usize = 64;
const MAX_SYMLINKS: usize = 40;

/// Set once openat2 returned ENOSYS, so later calls go straight to the walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// A path in a fixed buffer (no heap).
struct PathBuf4k {
    buf: [u8; MAX_PATH],
    len: usize,
}

impl PathBuf4k {
    fn new() -> Self {
        PathBuf4k {
            buf: [0; MAX_PATH],
            len: 0,
        }
    }
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    fn set(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total >= MAX_PATH {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        let mut at = 0;
        for p in parts {
            self.buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        self.len = at;
        Ok(())
    }
    /// Appends "/<name>" (for the logical path of the current directory).
    fn push(&mut self, name: &[u8]) -> io::Result<()> {
        if self.len + 1 + name.len() >= MAX_PATH {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        self.buf[self.len] = b'/';
        self.buf[self.len + 1..self.len + 1 + name.len()].copy_from_slice(name);
        self.len += 1 + name.len();
        Ok(())
    }
    /// Drops the last "/<name>".
    fn pop(&mut self) {
        while self.len > 0 && self.buf[self.len - 1] != b'/' {
            self.len -= 1;
        }
        self.len = self.len.saturating_sub(1);
    }
    fn display(&self) -> String {
        if self.len == 0 {
            "/".to_string()
        } else {
            String::from_utf8_lossy(self.bytes()).into_owned()
        }
    }
}

/// A component name, NUL-terminated in a fixed buffer.
struct Name {
    buf: [u8; 256],
}

impl Name {
    fn new(bytes: &[u8]) -> io::Result<Name> {
        if bytes.len() > 255 || bytes.contains(&0) {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        let mut buf = [0u8; 256];
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(Name { buf })
    }
    fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.buf).unwrap_or(c".")
    }
}

/// Resolves absolute `path` (already lexically clean: no `.` or `..`) inside the tree of
/// `root`, creating what is missing as `create` says, and returns an O_PATH fd of it.
pub(crate) fn resolve(
    root: BorrowedFd<'_>,
    path: &CStr,
    create: Create,
    try_openat2: bool,
) -> Result<OwnedFd, ResolveError> {
    let bytes = path.to_bytes();
    if try_openat2 && !NO_OPENAT2.load(Ordering::Relaxed) {
        let rel = trim_slashes(bytes);
        let rel_c = if rel.is_empty() {
            c"."
        } else {
            // `path` is clean and absolute, so skipping its leading slashes leaves a
            // NUL-terminated suffix of the same buffer.
            CStr::from_bytes_with_nul(&path.to_bytes_with_nul()[bytes.len() - rel.len()..])
                .unwrap_or(c".")
        };
        match sys::openat2(
            root,
            rel_c,
            libc::O_PATH,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
        ) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            // Symlinks (ELOOP), missing components (ENOENT), EXDEV, EAGAIN: walk.
            Err(_) => {}
        }
    }
    walk(root, bytes, create)
}

fn trim_slashes(mut b: &[u8]) -> &[u8] {
    while let [b'/', rest @ ..] = b {
        b = rest;
    }
    b
}

/// The fds of the directories from the root down to the current one; index 0 is the
/// borrowed root and is never closed.
struct FdStack<'a> {
    root: BorrowedFd<'a>,
    owned: [Option<OwnedFd>; MAX_DEPTH],
    len: usize,
}

impl<'a> FdStack<'a> {
    fn top(&self) -> BorrowedFd<'_> {
        match self.len {
            0 => self.root,
            n => self.owned[n - 1]
                .as_ref()
                .map_or(self.root, |fd| fd.as_fd()),
        }
    }
}

fn walk(root: BorrowedFd<'_>, path: &[u8], create: Create) -> Result<OwnedFd, ResolveError> {
    let mut stack = FdStack {
        root,
        owned: [const { None }; MAX_DEPTH],
        len: 0,
    };
    // Logical path of the current directory, for error messages.
    let mut here = PathBuf4k::new();
    // The path still to walk, and the one being built when a symlink is spliced in.
    let mut todo = PathBuf4k::new();
    let mut spare = PathBuf4k::new();
    // The last symlink followed, for the escape message.
    let mut last_link = PathBuf4k::new();
    let mut links = 0usize;
    let err_at = |here: &PathBuf4k, name: &[u8], op: &'static str, source: io::Error| {
        let mut p = here.display();
        if !p.ends_with('/') {
            p.push('/');
        }
        p.push_str(&String::from_utf8_lossy(name));
        ResolveError::Io {
            op,
            path: p,
            source,
        }
    };
    todo.set(&[path]).map_err(|e| ResolveError::Io {
        op: "resolve",
        path: String::from_utf8_lossy(path).into_owned(),
        source: e,
    })?;
    let mut pos = 0;
    loop {
        let t = todo.bytes();
        while pos < t.len() && t[pos] == b'/' {
            pos += 1;
        }
        if pos == t.len() {
            break;
        }
        let end = t[pos..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(t.len(), |i| pos + i);
        let mut comp_buf = [0u8; 256];
        let comp_len = end - pos;
        if comp_len > 255 {
            return Err(err_at(
                &here,
                &t[pos..end],
                "resolve",
                io::Error::from_raw_os_error(libc::ENAMETOOLONG),
            ));
        }
        comp_buf[..comp_len].copy_from_slice(&t[pos..end]);
        let comp = &comp_buf[..comp_len];
        let is_last = t[end..].iter().all(|&c| c == b'/');
        pos = end;

        if comp == b"." {
            continue;
        }
        if comp == b".." {
            if stack.len == 0 {
                return Err(ResolveError::Escape {
                    link: last_link.display(),
                });
            }
            stack.len -= 1;
            stack.owned[stack.len] = None;
            here.pop();
            continue;
        }
        let name = Name::new(comp).map_err(|e| err_at(&here, comp, "resolve", e))?;
        let fd = match sys::openat(
            stack.top(),
            name.as_cstr(),
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        ) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound && create != Create::Nothing => {
                if is_last && create == Create::File {
                    match sys::openat(
                        stack.top(),
                        name.as_cstr(),
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
                        0o644,
                    ) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(err_at(&here, comp, "create", e)),
                    }
                } else {
                    match sys::mkdirat(stack.top(), name.as_cstr(), 0o755) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(err_at(&here, comp, "mkdir", e)),
                    }
                }
                // Re-open what is there now without following: if a symlink was swapped
                // in meanwhile, the next turn handles it like any other symlink.
                sys::openat(
                    stack.top(),
                    name.as_cstr(),
                    libc::O_PATH | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|e| err_at(&here, comp, "open", e))?
            }
            Err(e) => return Err(err_at(&here, comp, "open", e)),
        };
        let ftype = sys::file_type(fd.as_fd()).map_err(|e| err_at(&here, comp, "stat", e))?;
        if ftype == libc::S_IFLNK {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(err_at(
                    &here,
                    comp,
                    "resolve",
                    io::Error::from_raw_os_error(libc::ELOOP),
                ));
            }
            let mut target = [0u8; MAX_PATH];
            let n = sys::readlink_fd(fd.as_fd(), &mut target)
                .map_err(|e| err_at(&here, comp, "readlink", e))?;
            if n >= MAX_PATH {
                return Err(err_at(
                    &here,
                    comp,
                    "readlink",
                    io::Error::from_raw_os_error(libc::ENAMETOOLONG),
                ));
            }
            let target = &target[..n];
            last_link
                .set(&[here.bytes(), b"/", comp])
                .map_err(|e| err_at(&here, comp, "resolve", e))?;
            spare
                .set(&[target, b"/", &todo.bytes()[pos..]])
                .map_err(|e| err_at(&here, comp, "resolve", e))?;
            std::mem::swap(&mut todo, &mut spare);
            pos = 0;
            if target.first() == Some(&b'/') {
                // Absolute symlinks are followed inside the rootfs, as runc does.
                while stack.len > 0 {
                    stack.len -= 1;
                    stack.owned[stack.len] = None;
                }
                here.len = 0;
            }
            continue;
        }
        if !is_last && ftype != libc::S_IFDIR {
            return Err(err_at(
                &here,
                comp,
                "resolve",
                io::Error::from_raw_os_error(libc::ENOTDIR),
            ));
        }
        if stack.len == MAX_DEPTH {
            return Err(err_at(
                &here,
                comp,
                "resolve",
                io::Error::from_raw_os_error(libc::ENAMETOOLONG),
            ));
        }
        stack.owned[stack.len] = Some(fd);
        stack.len += 1;
        here.push(comp)
            .map_err(|e| err_at(&here, comp, "resolve", e))?;
    }
    match stack.len {
        0 => sys::dup(root).map_err(|e| ResolveError::Io {
            op: "dup",
            path: "/".into(),
            source: e,
        }),
        n => Ok(stack.owned[n - 1]
            .take()
            .expect("stack entries below len are set")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir()
                .join(format!("cella-safepath-{tag}-{}-{n}", std::process::id()));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn root_fd(dir: &std::path::Path) -> OwnedFd {
        let c = CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        sys::open(&c, libc::O_PATH | libc::O_DIRECTORY).unwrap()
    }

    /// Where an O_PATH fd points, through /proc/self/fd.
    fn where_is(fd: &OwnedFd) -> PathBuf {
        use std::os::fd::AsRawFd;
        fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    fn both(f: impl Fn(bool)) {
        f(true);
        f(false);
    }

    #[test]
    fn creates_missing_dirs_and_files_inside() {
        both(|openat2| {
            let t = TempDir::new("create");
            let root = root_fd(&t.0);
            let fd = resolve(root.as_fd(), c"/a/b/c", Create::Dir, openat2).unwrap();
            assert_eq!(where_is(&fd), t.0.join("a/b/c"));
            assert!(t.0.join("a/b/c").is_dir());
            let fd = resolve(root.as_fd(), c"/a/f", Create::File, openat2).unwrap();
            assert_eq!(where_is(&fd), t.0.join("a/f"));
            assert!(t.0.join("a/f").is_file());
            let e = resolve(root.as_fd(), c"/nope/x", Create::Nothing, openat2).unwrap_err();
            assert!(
                matches!(e, ResolveError::Io { ref source, .. } if source.kind() == io::ErrorKind::NotFound)
            );
            let fd = resolve(root.as_fd(), c"/", Create::Nothing, openat2).unwrap();
            assert_eq!(where_is(&fd), t.0);
        });
    }

    #[test]
    fn relative_symlink_escaping_the_root_is_an_error() {
        both(|openat2| {
            let t = TempDir::new("escape");
            let root = root_fd(&t.0);
            symlink("../../../../tmp", t.0.join("escape")).unwrap();
            match resolve(root.as_fd(), c"/escape/x", Create::Dir, openat2) {
                Err(ResolveError::Escape { link }) => assert_eq!(link, "/escape"),
                other => panic!("expected an escape error, got {other:?}"),
            }
            // Nested: a link in a subdirectory that climbs just one level too far.
            fs::create_dir_all(t.0.join("d/e")).unwrap();
            symlink("../../../etc", t.0.join("d/e/up")).unwrap();
            match resolve(root.as_fd(), c"/d/e/up/x", Create::Nothing, openat2) {
                Err(ResolveError::Escape { link }) => assert_eq!(link, "/d/e/up"),
                other => panic!("expected an escape error, got {other:?}"),
            }
        });
    }

    #[test]
    fn relative_symlinks_inside_are_followed() {
        both(|openat2| {
            let t = TempDir::new("rel");
            let root = root_fd(&t.0);
            fs::create_dir_all(t.0.join("real/dir")).unwrap();
            fs::create_dir_all(t.0.join("d")).unwrap();
            symlink("../real", t.0.join("d/link")).unwrap();
            let fd = resolve(root.as_fd(), c"/d/link/dir", Create::Nothing, openat2).unwrap();
            assert_eq!(where_is(&fd), t.0.join("real/dir"));
        });
    }

    #[test]
    fn absolute_symlinks_stay_inside_the_root() {
        both(|openat2| {
            let t = TempDir::new("abs");
            let host = TempDir::new("abs-host");
            let root = root_fd(&t.0);
            // A symlink to a host directory (absolute) is resolved as a path inside the
            // rootfs: the host directory is never touched.
            symlink(&host.0, t.0.join("swap")).unwrap();
            let fd = resolve(root.as_fd(), c"/swap/sub", Create::Dir, openat2).unwrap();
            let inside = t.0.join(host.0.strip_prefix("/").unwrap()).join("sub");
            assert_eq!(where_is(&fd), inside);
            assert!(!host.0.join("sub").exists(), "created on the host");
            // Final component a symlink: followed inside too.
            let fd = resolve(root.as_fd(), c"/swap", Create::Nothing, openat2).unwrap();
            assert_eq!(where_is(&fd), t.0.join(host.0.strip_prefix("/").unwrap()));
        });
    }

    #[test]
    fn symlink_loops_are_reported() {
        let t = TempDir::new("loop");
        let root = root_fd(&t.0);
        symlink("b", t.0.join("a")).unwrap();
        symlink("a", t.0.join("b")).unwrap();
        match resolve(root.as_fd(), c"/a/x", Create::Dir, false) {
            Err(ResolveError::Io { source, .. }) => {
                assert_eq!(source.raw_os_error(), Some(libc::ELOOP))
            }
            other => panic!("expected ELOOP, got {other:?}"),
        }
    }

    #[test]
    fn file_in_the_middle_is_not_a_directory() {
        let t = TempDir::new("notdir");
        let root = root_fd(&t.0);
        fs::write(t.0.join("f"), "").unwrap();
        match resolve(root.as_fd(), c"/f/x", Create::Dir, false) {
            Err(ResolveError::Io { path, source, .. }) => {
                assert_eq!(path, "/f");
                assert_eq!(source.raw_os_error(), Some(libc::ENOTDIR));
            }
            other => panic!("expected ENOTDIR, got {other:?}"),
        }
    }
}
