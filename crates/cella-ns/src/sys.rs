//! Safe wrappers over the raw system calls the namespace tools need. All `unsafe` of the
//! crate lives here; each wrapper documents the invariant it relies on.
//!
//! Several wrappers run in a forked child before exec: they only make the system call and
//! touch no allocator, so they are async-signal-safe.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `NS_GET_USERNS`: an fd for the user namespace owning a namespace (linux/nsfs.h).
pub const NS_GET_USERNS: libc::c_ulong = 0xb701;
/// `NS_GET_NSTYPE`: the `CLONE_NEW*` type of a namespace fd (linux/nsfs.h).
pub const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
/// `NS_GET_PARENT`: an fd for the parent of a pid or user namespace (linux/nsfs.h).
pub const NS_GET_PARENT: libc::c_ulong = 0xb702;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Joins the namespace `fd` refers to (setns(2)); `nstype` 0 accepts any type.
pub fn setns(fd: BorrowedFd<'_>, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: `fd` is borrowed, so it stays open for the duration of the call; setns
    // reads nothing from our memory.
    check(unsafe { libc::setns(fd.as_raw_fd(), nstype) }).map(drop)
}

/// Moves the calling process into new namespaces (unshare(2)).
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes only flags and touches no memory of ours.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// Which side of a fork we are on.
pub enum Forked {
    /// In the child.
    Child,
    /// In the parent; the child's pid.
    Parent(libc::pid_t),
}

/// Forks the process.
///
/// The callers are single-threaded command-line paths (the `cella` binary starts no
/// threads), so the child inherits no lock held by another thread; the child still
/// confines itself to the async-signal-safe wrappers of this module until exec or exit.
pub fn fork() -> io::Result<Forked> {
    // SAFETY: see above: no other thread exists whose locks the child could inherit, and
    // the child only calls async-signal-safe wrappers before exec/_exit.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        p => Ok(Forked::Parent(p)),
    }
}

/// Waits for child `pid` and returns its exit status as a shell reports it: the exit code,
/// or 128 plus the signal that killed it.
pub fn wait_exit_code(pid: libc::pid_t) -> io::Result<u8> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a live local the kernel writes one int into.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status) as u8)
    } else if libc::WIFSIGNALED(status) {
        Ok(128u8.wrapping_add(libc::WTERMSIG(status) as u8))
    } else {
        Ok(1)
    }
}

/// mount(2) with no data argument.
pub fn mount(
    source: &CStr,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
) -> io::Result<()> {
    let fstype = fstype.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: all strings are NUL-terminated and borrowed for the call; data is null.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype,
            flags,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// Detaches the mount at `target` (umount2 with MNT_DETACH).
pub fn umount_detach(target: &CStr) -> io::Result<()> {
    // SAFETY: `target` is NUL-terminated and borrowed for the call.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// chroot(2).
pub fn chroot(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and borrowed for the call.
    check(unsafe { libc::chroot(path.as_ptr()) }).map(drop)
}

/// chdir(2).
pub fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and borrowed for the call.
    check(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// fchdir(2).
pub fn fchdir(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is borrowed and so open for the call.
    check(unsafe { libc::fchdir(fd.as_raw_fd()) }).map(drop)
}

/// NS_GET_NSTYPE: the `CLONE_NEW*` flag of the namespace `fd` refers to.
pub fn ns_type(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: NS_GET_NSTYPE takes no argument and returns an int; `fd` is borrowed.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) })
}

/// An nsfs ioctl that returns a new namespace fd (NS_GET_USERNS, NS_GET_PARENT).
pub fn ns_ioctl(fd: BorrowedFd<'_>, request: libc::c_ulong) -> io::Result<OwnedFd> {
    // SAFETY: these requests take no argument and return a new fd that nobody else owns.
    let r = check(unsafe { libc::ioctl(fd.as_raw_fd(), request) })?;
    // SAFETY: `r` is a fresh fd returned by the kernel, owned by us alone from here.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a live two-int array the kernel fills.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds are fresh from pipe2 and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads until `buf` is full or end of file; returns the bytes read. Async-signal-safe.
pub fn read_full(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`, borrowed
        // mutably for the call; `fd` is borrowed and open.
        let r = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
            )
        };
        match r {
            0 => break,
            n if n > 0 => done += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(done)
}

/// Writes all of `buf`. Async-signal-safe.
pub fn write_all(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unwritten tail of `buf`, borrowed
        // for the call; `fd` is borrowed and open.
        let r = unsafe {
            libc::write(
                fd.as_raw_fd(),
                buf[done..].as_ptr().cast(),
                buf.len() - done,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            done += r as usize;
        }
    }
    Ok(())
}

/// Opens `path` relative to `dir` (or absolute) with `flags` | O_CLOEXEC.
pub fn openat(dir: Option<BorrowedFd<'_>>, path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: `path` is NUL-terminated and borrowed for the call; `dirfd` is borrowed
    // (or AT_FDCWD).
    let r = check(unsafe { libc::openat(dirfd, path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: `r` is a fresh fd from openat, owned by us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// readlinkat(2) into `buf`; returns the link text (not NUL-terminated).
pub fn readlinkat<'b>(dir: BorrowedFd<'_>, name: &CStr, buf: &'b mut [u8]) -> io::Result<&'b [u8]> {
    // SAFETY: `name` is NUL-terminated; `buf` is borrowed mutably and its length passed,
    // so the kernel writes only inside it.
    let r = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(&buf[..r as usize])
}

/// fstat(2): (inode, owner uid).
pub fn fstat_ino(fd: BorrowedFd<'_>) -> io::Result<(u64, u32)> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live local the kernel fills; `fd` is borrowed and open.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok((st.st_ino, st.st_uid))
}

/// Drops supplementary groups (when `clear_groups`) and sets real, effective and saved
/// gid then uid.
pub fn set_ids(uid: Option<u32>, gid: Option<u32>, clear_groups: bool) -> io::Result<()> {
    if clear_groups {
        // SAFETY: a zero-length list with a null pointer is valid for setgroups.
        check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    }
    if let Some(g) = gid {
        // SAFETY: setresgid takes plain integers.
        check(unsafe { libc::setresgid(g, g, g) })?;
    }
    if let Some(u) = uid {
        // SAFETY: setresuid takes plain integers.
        check(unsafe { libc::setresuid(u, u, u) })?;
    }
    Ok(())
}

/// Asks the kernel to send `sig` to us when our parent dies. Async-signal-safe.
pub fn set_parent_death_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes the signal number as a plain integer.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) }).map(drop)
}

/// Sets the disposition of `sig` to ignore (`true`) or default (`false`).
pub fn ignore_signal(sig: libc::c_int, ignore: bool) {
    let handler = if ignore { libc::SIG_IGN } else { libc::SIG_DFL };
    // SAFETY: SIG_IGN and SIG_DFL are not function pointers into our code; no handler
    // runs.
    unsafe { libc::signal(sig, handler) };
}

/// Leaves the process at once, without running destructors or atexit handlers: the only
/// way out of a forked child that did not exec. Async-signal-safe.
pub fn exit_now(code: libc::c_int) -> ! {
    // SAFETY: _exit never returns and needs nothing from us.
    unsafe { libc::_exit(code) }
}

/// execve(2); returns only on failure, with its error. Async-signal-safe.
///
/// `argv` and `envp` must be null-terminated arrays of pointers to NUL-terminated strings
/// that outlive the call; [`crate::exec::ExecPlan`] builds them.
pub fn execve(
    path: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> io::Error {
    debug_assert!(argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(envp.last().is_some_and(|p| p.is_null()));
    // SAFETY: `path` is NUL-terminated; `argv`/`envp` are null-terminated pointer arrays
    // whose strings the caller keeps alive (ExecPlan owns them) for the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// Our effective uid.
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Our effective gid.
pub fn getegid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// Sends `sig` to `pid`.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes plain integers and touches no memory of ours.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// An owned pipe end.
pub type Pipe = OwnedFd;
