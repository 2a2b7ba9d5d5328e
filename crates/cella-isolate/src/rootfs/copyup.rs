//! `tmpcopyup` (a runc/crun/Podman mount option): after a tmpfs is mounted over a
//! directory of the image, copy what the directory held into it, so e.g. a tmpfs /run
//! keeps the image's /run/lock. Runs in the container's init: fixed stack buffers only
//! (about 1.3 KiB per directory level, at most [`MAX_DEPTH`] levels), no heap.
//!
//! The lower directory is read through an O_PATH fd opened before the mount: lookups
//! from it see the covered directory, not the new tmpfs.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::sys;

/// Deepest directory level copied; deeper trees are an error (ELOOP) rather than a
/// stack overflow in the init.
pub(crate) const MAX_DEPTH: usize = 32;

/// Copies the contents of directory `lower` into directory `upper` (both O_PATH fds),
/// keeping owners and modes, and gives `upper` the owner and mode of `lower`.
pub(crate) fn copy_up(lower: BorrowedFd<'_>, upper: BorrowedFd<'_>) -> io::Result<()> {
    let from = sys::openat(lower, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let to = sys::openat(upper, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut data = [0u8; 16 * 1024];
    copy_dir(from.as_fd(), to.as_fd(), &mut data, 0)?;
    let st = sys::lstatat(from.as_fd(), c".")?;
    sys::fchown(to.as_fd(), st.st_uid, st.st_gid)?;
    sys::fchmod(to.as_fd(), st.st_mode & 0o7777)
}

fn copy_dir(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    data: &mut [u8],
    depth: usize,
) -> io::Result<()> {
    if depth >= MAX_DEPTH {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let mut ents = [0u8; 1024];
    loop {
        let n = sys::getdents(from, &mut ents)?;
        if n == 0 {
            return Ok(());
        }
        let mut off = 0;
        while off + 19 <= n {
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
            let reclen = u16::from_ne_bytes([ents[off + 16], ents[off + 17]]) as usize;
            if reclen < 19 || off + reclen > n {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let name = CStr::from_bytes_until_nul(&ents[off + 19..off + reclen])
                .map_err(|_| io::Error::from_raw_os_error(libc::EIO))?;
            off += reclen;
            if name == c"." || name == c".." {
                continue;
            }
            copy_entry(from, to, name, data, depth)?;
        }
    }
}

fn copy_entry(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    name: &CStr,
    data: &mut [u8],
    depth: usize,
) -> io::Result<()> {
    let st = sys::lstatat(from, name)?;
    let perm = st.st_mode & 0o7777;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            match sys::mkdirat(to, name, 0o700) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            let f = sys::openat(
                from,
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            let t = sys::openat(
                to,
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            copy_dir(f.as_fd(), t.as_fd(), data, depth + 1)?;
            // chown first: it clears set-id bits that the chmod then restores.
            sys::fchown(t.as_fd(), st.st_uid, st.st_gid)?;
            sys::fchmod(t.as_fd(), perm)
        }
        libc::S_IFREG => {
            let f = sys::openat(from, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
            let t = sys::openat(
                to,
                name,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                0o600,
            )?;
            copy_data(f.as_fd(), t.as_fd(), data)?;
            sys::fchown(t.as_fd(), st.st_uid, st.st_gid)?;
            sys::fchmod(t.as_fd(), perm)
        }
        libc::S_IFLNK => copy_symlink(from, to, name, st.st_uid, st.st_gid),
        libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK => {
            match sys::mknodat(to, name, st.st_mode, st.st_rdev) {
                Ok(()) => sys::lchownat(to, name, st.st_uid, st.st_gid),
                // Device nodes cannot be made in a user namespace: leave them out.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
                Err(e) => Err(e),
            }
        }
        // Sockets are meaningless without their listener.
        _ => Ok(()),
    }
}

/// Kept out of line so its path buffer is on the stack only while a symlink is copied.
#[inline(never)]
fn copy_symlink(
    from: BorrowedFd<'_>,
    to: BorrowedFd<'_>,
    name: &CStr,
    uid: u32,
    gid: u32,
) -> io::Result<()> {
    let mut target = [0u8; 4096];
    let n = sys::readlinkat(from, name, &mut target[..4095])?;
    if n >= 4095 {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    target[n] = 0;
    let target = CStr::from_bytes_with_nul(&target[..=n])
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    sys::symlinkat(target, to, name)?;
    sys::lchownat(to, name, uid, gid)
}

/// Copies a whole file: copy_file_range where the kernel can, read/write otherwise.
fn copy_data(from: BorrowedFd<'_>, to: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<()> {
    loop {
        match sys::copy_file_range(from, to, 1 << 30) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP)
                ) =>
            {
                break;
            }
            Err(e) => return Err(e),
        }
    }
    loop {
        let n = match sys::read(from, buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut done = 0;
        while done < n {
            match sys::write(to, &buf[done..n]) {
                Ok(w) => done += w,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
    use std::path::{Path, PathBuf};

    fn tmp(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cella-copyup-{tag}-{}-{n}", std::process::id()));
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn opath(p: &Path) -> std::os::fd::OwnedFd {
        let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        sys::open(&c, libc::O_PATH | libc::O_DIRECTORY).unwrap()
    }

    #[test]
    fn copies_files_dirs_symlinks_and_modes() {
        let from = tmp("from");
        let to = tmp("to");
        fs::create_dir_all(from.join("a/b")).unwrap();
        fs::write(from.join("a/b/f"), vec![7u8; 100_000]).unwrap();
        fs::write(from.join("x"), "x").unwrap();
        fs::set_permissions(from.join("x"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(from.join("a"), fs::Permissions::from_mode(0o711)).unwrap();
        symlink("../x", from.join("a/link")).unwrap();
        fs::set_permissions(&from, fs::Permissions::from_mode(0o1777)).unwrap();
        copy_up(opath(&from).as_fd(), opath(&to).as_fd()).unwrap();
        assert_eq!(fs::read(to.join("a/b/f")).unwrap(), vec![7u8; 100_000]);
        assert_eq!(fs::read_to_string(to.join("x")).unwrap(), "x");
        assert_eq!(fs::metadata(to.join("x")).unwrap().mode() & 0o7777, 0o640);
        assert_eq!(fs::metadata(to.join("a")).unwrap().mode() & 0o7777, 0o711);
        assert_eq!(fs::read_link(to.join("a/link")).unwrap(), Path::new("../x"));
        assert_eq!(fs::metadata(&to).unwrap().mode() & 0o7777, 0o1777);
        let _ = fs::remove_dir_all(&from);
        let _ = fs::remove_dir_all(&to);
    }

    #[test]
    fn too_deep_is_an_error_not_an_overflow() {
        let from = tmp("deep");
        let to = tmp("deep-to");
        let mut p = from.clone();
        for _ in 0..MAX_DEPTH + 1 {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        let e = copy_up(opath(&from).as_fd(), opath(&to).as_fd()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let _ = fs::remove_dir_all(&from);
        let _ = fs::remove_dir_all(&to);
    }
}
