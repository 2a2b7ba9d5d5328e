//! Safe wrappers over the system calls the sandbox needs beyond `cella_isolate::sys`:
//! mounts, pidfds, poll, pipes, fd passing, the seccomp notification ioctls, and the
//! `*at` calls used to copy evidence without following symlinks. Every `unsafe` block of
//! the crate lives here.
//!
//! The mount, pipe and socket wrappers run in the sandbox's init between clone and exec:
//! they allocate nothing.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use cella_isolate::sys::{check, check_long};

/// mount(2).
pub fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: every pointer is null or a NUL-terminated string borrowed for the call.
    check(unsafe { libc::mount(p(source), target.as_ptr(), p(fstype), flags, p(data).cast()) })
        .map(drop)
}

/// umount2(2).
pub fn umount2(target: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `target` is NUL-terminated and outlives the call.
    check(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// pivot_root(2).
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: both paths are NUL-terminated and outlive the call.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })
        .map(drop)
}

/// `MOUNT_ATTR_RDONLY` of mount_setattr(2).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NOSUID`.
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// `MOUNT_ATTR_NODEV`.
pub const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// mount_setattr(2) with AT_RECURSIVE on the mount tree at `path`: sets (never clears)
/// the attributes in `set`, which works on mounts locked by a user namespace.
pub fn mount_setattr_recursive(path: &CStr, set: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    // SAFETY: `path` is NUL-terminated; `attr` is a live, #[repr(C)] struct whose exact
    // size is passed.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// mkdir(2); an existing entry is fine.
pub fn mkdir(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    match check(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r.map(drop),
    }
}

/// chmod(2) (exact bits, whatever the umask).
pub fn chmod(path: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    check(unsafe { libc::chmod(path.as_ptr(), mode) }).map(drop)
}

/// Creates an empty regular file (a bind-mount target); an existing one is fine.
pub fn touch(path: &CStr) -> io::Result<()> {
    cella_isolate::sys::open(path, libc::O_WRONLY | libc::O_CREAT, 0o644).map(drop)
}

/// symlink(2).
pub fn symlink(target: &CStr, linkpath: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated and outlive the call.
    check(unsafe { libc::symlink(target.as_ptr(), linkpath.as_ptr()) }).map(drop)
}

/// stat(2)'s file type bits (S_IFMT) of `path`, following symlinks.
pub fn file_type(path: &CStr) -> io::Result<libc::mode_t> {
    // SAFETY: an all-zero `stat` is a valid value for the kernel to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated; `st` is a live struct the kernel writes into.
    check(unsafe { libc::stat(path.as_ptr(), &mut st) })?;
    Ok(st.st_mode & libc::S_IFMT)
}

/// setsid(2).
pub fn setsid() -> io::Result<()> {
    // SAFETY: no arguments.
    check(unsafe { libc::setsid() }).map(drop)
}

/// Unblocks every signal and resets the handlers the supervisor may have changed.
pub fn reset_signals() {
    // SAFETY: an all-zero sigset is valid input for sigemptyset, which initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset; sigprocmask with SIG_SETMASK reads it only.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    for sig in [
        libc::SIGPIPE,
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGCHLD,
    ] {
        // SAFETY: resetting a handler to SIG_DFL touches no memory of ours.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// pidfd_open(2).
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: integer arguments only.
    let fd = check_long(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: the descriptor was just created and belongs to nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// pidfd_send_signal(2): signals exactly the process behind `pidfd`, never a recycled pid.
pub fn pidfd_kill(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: integer arguments and a null siginfo.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })
    .map(drop)
}

/// poll(2) on `fds` (fd, events) for at most `timeout_ms` (-1: forever); returns the
/// revents of each, in order. EINTR counts as "nothing happened".
pub fn poll(fds: &[(RawFd, i16)], timeout_ms: i32) -> io::Result<Vec<i16>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    // SAFETY: `pfds` is a live array whose length is passed.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        return Ok(vec![0; fds.len()]);
    }
    Ok(pfds.iter().map(|p| p.revents).collect())
}

/// pipe2(2) with O_CLOEXEC: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints the kernel fills in.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors were just created and belong to nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec SOCK_SEQPACKET socketpair.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints the kernel fills in.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both descriptors were just created and belong to nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// send(2) of one datagram without descriptors.
pub fn send(sock: BorrowedFd<'_>, payload: &[u8]) -> io::Result<()> {
    // SAFETY: the pointer and length describe the live slice `payload`.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            payload.as_ptr().cast(),
            payload.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one datagram into `buf`, with the descriptor it carries if any (SCM_RIGHTS,
/// close-on-exec). Returns 0 bytes at EOF.
pub fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut cmsg = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid "empty" header that is filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
    let n = loop {
        // SAFETY: `msg` points at live locals (iov over `buf`, the control buffer) for the
        // duration of the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fd = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel just filled, within
    // msg_controllen; the data of an SCM_RIGHTS message is an array of ints.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let raw = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                // The kernel installed this descriptor for us: we own it now.
                fd = Some(OwnedFd::from_raw_fd(raw));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n, fd))
}

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SeccompData {
    /// Syscall number.
    pub nr: i32,
    /// AUDIT_ARCH_* of the calling ABI.
    pub arch: u32,
    /// Instruction pointer.
    pub instruction_pointer: u64,
    /// Arguments: never read by the sandbox (they may hold the submission's data).
    pub args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct SeccompNotif {
    /// Cookie of this notification.
    pub id: u64,
    /// The calling thread, in the pid namespace of the receiver.
    pub pid: u32,
    /// Unused flags.
    pub flags: u32,
    /// The syscall.
    pub data: SeccompData,
}

const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;

/// Receives one pending notification from a seccomp listener.
pub fn notif_recv(listener: BorrowedFd<'_>) -> io::Result<SeccompNotif> {
    // The kernel insists on a zeroed struct.
    let mut n = SeccompNotif::default();
    // SAFETY: `n` is a live #[repr(C)] seccomp_notif the kernel writes into.
    check(unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            SECCOMP_IOCTL_NOTIF_RECV,
            &mut n as *mut SeccompNotif,
        )
    })?;
    Ok(n)
}

/// Brings the loopback interface up in the calling thread's network namespace.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: integer arguments only.
    let s =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: the descriptor was just created and belongs to nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: an all-zero ifreq is a valid value; the name is set below.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: `ifr` is a live ifreq the kernel reads and writes (flags).
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) })?;
    // SAFETY: reading and writing the flags member of the union the kernel just filled.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: `ifr` is a live ifreq the kernel reads.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut ifr) }).map(drop)
}

/// openat(2) relative to `dir` (always O_CLOEXEC).
pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and outlives the call; `dir` is open.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: the descriptor was just created and belongs to nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// fstatat(2) without following a final symlink: (st_mode, st_size).
pub fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<(libc::mode_t, u64)> {
    // SAFETY: an all-zero `stat` is a valid value for the kernel to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `name` is NUL-terminated; `st` is a live struct the kernel writes into.
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok((st.st_mode, st.st_size as u64))
}

/// readlinkat(2).
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: the pointer and length describe the live, writable `buf`.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Marks `fd` non-blocking.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: integer arguments only.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// wait4(2) for `pid`, retrying on EINTR: (wait status, CPU ms of it and its reaped
/// descendants, their largest RSS in KiB).
pub fn wait4(pid: libc::pid_t) -> io::Result<(i32, u64, u64)> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for the kernel to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `ru` are live locals the kernel writes into.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    Ok((
        status,
        ms(ru.ru_utime) + ms(ru.ru_stime),
        ru.ru_maxrss as u64,
    ))
}

/// A signal mask saved by [`block_signals`], restored by [`restore_signals`].
pub struct SavedMask(libc::sigset_t);

/// Blocks `signals` and returns a signalfd reporting them, with the mask before.
pub fn block_signals(signals: &[libc::c_int]) -> io::Result<(OwnedFd, SavedMask)> {
    // SAFETY: an all-zero sigset is valid input for sigemptyset, which initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above, for the kernel to fill with the old mask.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset for every call.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
    }
    // SAFETY: `set` is initialised; `old` is a live sigset the kernel writes into.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) })?;
    // SAFETY: `set` is initialised and read only.
    let fd = check(unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })?;
    // SAFETY: the descriptor was just created and belongs to nobody else.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, SavedMask(old)))
}

/// Puts back the mask saved by [`block_signals`].
pub fn restore_signals(saved: &SavedMask) {
    // SAFETY: the saved set was filled by the kernel; the old mask is not wanted.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &saved.0, std::ptr::null_mut()) };
}

/// Reads one pending signal number from a signalfd, if any.
pub fn read_signal(fd: BorrowedFd<'_>) -> Option<u32> {
    // SAFETY: an all-zero siginfo is valid for the kernel to overwrite.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is a live struct of exactly `size` bytes.
    let n = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    (n as usize == size).then_some(info.ssi_signo)
}
