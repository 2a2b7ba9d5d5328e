//! Safe wrappers over the few raw syscalls this crate makes. Nothing here allocates, so
//! [`load_filter`] is usable between fork and exec.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::bpf::Insn;

const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
const SECCOMP_GET_ACTION_AVAIL: libc::c_uint = 2;

/// `SECCOMP_FILTER_FLAG_LOG`.
pub(crate) const FLAG_LOG: u32 = 1 << 1;
/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`.
pub(crate) const FLAG_SPEC_ALLOW: u32 = 1 << 2;
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`.
pub(crate) const FLAG_NEW_LISTENER: u32 = 1 << 3;
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`.
pub(crate) const FLAG_WAIT_KILLABLE_RECV: u32 = 1 << 5;

/// The kernel's `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const Insn,
}

/// Attaches `prog` to the calling thread; returns the listener fd when `flags` asks for one.
///
/// The caller guarantees `prog.len()` fits the kernel's limit (checked at compile time).
pub(crate) fn load_filter(prog: &[Insn], flags: u32) -> io::Result<Option<OwnedFd>> {
    let fprog = SockFprog {
        len: prog.len() as libc::c_ushort,
        filter: prog.as_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, a live slice of `repr(C)` instructions laid out as
    // `struct sock_filter`; the kernel copies it during the call and keeps no pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags as libc::c_uint,
            &fprog as *const SockFprog,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & FLAG_NEW_LISTENER != 0 {
        // SAFETY: with NEW_LISTENER the kernel returns a new fd that nothing else owns.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) }));
    }
    Ok(None)
}

/// Whether this kernel knows every filter flag in `flags`.
///
/// The filter pointer is NULL: a kernel that accepts the flags fails with EFAULT when it
/// reads the program, one that does not know them fails with EINVAL first (as runc and
/// libseccomp probe). Nothing is installed either way.
pub(crate) fn flags_supported(flags: u32) -> bool {
    // SAFETY: a NULL filter is never dereferenced by us; the kernel validates it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags as libc::c_uint,
            std::ptr::null::<SockFprog>(),
        )
    };
    r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT)
}

/// Whether this kernel implements the filter return action `action` (`SECCOMP_RET_*`).
pub(crate) fn action_available(action: u32) -> bool {
    // SAFETY: the kernel reads one u32 from a pointer to a live local.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_GET_ACTION_AVAIL,
            0 as libc::c_uint,
            &action as *const u32,
        )
    };
    r == 0
}

/// Sends `data` with `fd` attached (SCM_RIGHTS) in one message on the connected `sock`.
pub(crate) fn send_with_fd(
    sock: BorrowedFd<'_>,
    data: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // Control buffer for one fd, aligned for cmsghdr.
    let mut cbuf = [0u64; 4];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    debug_assert!(space <= std::mem::size_of_val(&cbuf));
    let mut sent = 0usize;
    loop {
        let mut iov = libc::iovec {
            iov_base: data[sent..].as_ptr() as *mut libc::c_void,
            iov_len: data.len() - sent,
        };
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if sent == 0 {
            // The fd rides with the first byte; a short write sends the rest as plain data.
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            // SAFETY: msg_control points at `cbuf`, at least CMSG_SPACE(sizeof(int)) bytes
            // and 8-byte aligned, so the first header and its data lie inside it.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as _;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), raw);
            }
        }
        // SAFETY: `msg` points at `iov`/`cbuf`, locals that outlive the call; `sock` is a
        // borrowed open socket.
        let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent += r as usize;
        if sent >= data.len() {
            break;
        }
    }
    Ok(())
}
