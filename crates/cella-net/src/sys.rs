//! The few raw system calls cella-net needs, as safe wrappers. Every `unsafe` block of the
//! crate lives here.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Moves the calling thread into the network namespace behind `fd`.
pub fn setns_net(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is a borrowed, open file descriptor that outlives the call; setns only
    // reads it and changes the calling thread's namespace.
    check(unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) })
}

/// Detaches the calling thread (or process) from namespaces named by `flags`.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes no pointers; it only changes the calling task's namespaces.
    check(unsafe { libc::unshare(flags) })
}

/// `mount(2)` with optional source and fstype.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> io::Result<()> {
    let src = source.map(cstr).transpose()?;
    let tgt = cstr(target)?;
    let fs = fstype
        .map(|f| CString::new(f).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput)))
        .transpose()?;
    mount_c(src.as_deref(), &tgt, fs.as_deref(), flags)
}

/// `mount(2)` on prepared C strings: allocates nothing, so it may run between fork and
/// exec.
pub fn mount_c(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
) -> io::Result<()> {
    // SAFETY: every pointer is either null or a NUL-terminated string borrowed for the
    // whole call; data is null.
    check(unsafe {
        libc::mount(
            source.map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            std::ptr::null(),
        )
    })
}

/// `umount2(2)` on a prepared C string: allocates nothing.
pub fn umount2_c(target: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `target` is a NUL-terminated string borrowed for the whole call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) })
}

/// `umount2(2)`.
pub fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let tgt = cstr(target)?;
    // SAFETY: `tgt` is a NUL-terminated CString owned by this frame, alive for the call.
    check(unsafe { libc::umount2(tgt.as_ptr(), flags) })
}

/// Takes an exclusive `flock` on `fd`, blocking until it is granted. The lock goes with
/// the open file description: closing the file releases it.
pub fn flock_exclusive(fd: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        // SAFETY: `fd` is a borrowed, open descriptor that outlives the call.
        let r = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The device and inode numbers of a namespace file, which identify the namespace.
pub fn ns_id(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is open for the call; `st` points to writable memory of the right size
    // owned by this frame, and is read only after fstat reported success.
    let st = unsafe {
        check(libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()))?;
        st.assume_init()
    };
    Ok((st.st_dev, st.st_ino))
}

/// Has `cmd`'s process killed when the thread that spawns it dies: an nft started by a
/// runtime that is killed mid-create must not apply its batch after `delete --force` has
/// cleaned up. Fails the spawn if the parent died before the request took effect.
pub fn kill_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and calls only prctl and
    // getppid, which are async-signal-safe and touch no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::other("the parent died before nft started"));
            }
            Ok(())
        });
    }
}
