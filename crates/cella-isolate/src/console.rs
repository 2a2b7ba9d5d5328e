//! The container's terminal: a pty made in the container's own devpts instance, its
//! master handed to the engine over `--console-socket` (SCM_RIGHTS, as runc does), its
//! slave bound over /dev/console and made init's controlling terminal and stdio.

use crate::sys;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};

/// The pty, before the pivot: the slave's path is valid from the runtime's root.
#[derive(Debug)]
pub struct Pty {
    /// Master side.
    pub master: OwnedFd,
    /// Slave side.
    pub slave: OwnedFd,
    /// Path of the slave, e.g. `<rootfs>/dev/pts/0`.
    pub slave_path: CString,
}

/// Opens a new pty through `<rootfs>/dev/pts/ptmx` and sets its size when given.
pub fn open_pty(rootfs: &CStr, size: Option<(u16, u16)>) -> io::Result<Pty> {
    let mut base = rootfs.to_bytes().to_vec();
    let mut ptmx = base.clone();
    ptmx.extend_from_slice(b"/dev/pts/ptmx");
    let ptmx = CString::new(ptmx).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let master = sys::open(&ptmx, libc::O_RDWR | libc::O_NOCTTY, 0)?;
    let mut unlock: libc::c_int = 0;
    sys::ioctl_int_ptr(master.as_fd(), libc::TIOCSPTLCK, &mut unlock)?;
    let mut n: libc::c_int = 0;
    sys::ioctl_int_ptr(master.as_fd(), libc::TIOCGPTN, &mut n)?;
    base.extend_from_slice(format!("/dev/pts/{n}").as_bytes());
    let slave_path =
        CString::new(base).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let slave = sys::open(&slave_path, libc::O_RDWR | libc::O_NOCTTY, 0)?;
    if let Some((rows, cols)) = size {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one live winsize.
        sys::check(unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&master),
                libc::TIOCSWINSZ,
                &ws,
            )
        })?;
    }
    Ok(Pty {
        master,
        slave,
        slave_path,
    })
}

/// Sends the master to the engine listening on `socket` (already connected).
pub fn send_master(socket: &OwnedFd, master: &OwnedFd) -> io::Result<()> {
    sys::send_fd(socket.as_fd(), b"/dev/ptmx", master.as_fd())
}

/// Receives a pty master sent with [`send_master`] (one SCM_RIGHTS descriptor): what
/// an engine does with its console socket, and what `cella run` does for itself when it
/// relays the terminal. The fd comes back close-on-exec.
pub fn recv_master(socket: std::os::fd::BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut payload = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut cmsg = [0u64; 8];
    // SAFETY: msg points at live locals (iov, payload, cmsg) for the duration of
    // recvmsg; the kernel writes at most msg_controllen bytes of control data, and the
    // CMSG_* walk stays within the length it reports.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let c = libc::CMSG_FIRSTHDR(&msg);
        if n == 0
            || c.is_null()
            || (*c).cmsg_level != libc::SOL_SOCKET
            || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no descriptor received",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Makes `slave` the controlling terminal of a new session and stdin/stdout/stderr.
pub fn become_console(slave: &OwnedFd) -> io::Result<()> {
    // SAFETY: setsid takes no arguments; init is not a process group leader after clone.
    let _ = unsafe { libc::setsid() };
    sys::ioctl_int(slave.as_fd(), libc::TIOCSCTTY, 0)?;
    for fd in 0..3 {
        sys::dup2(slave.as_fd(), fd)?;
    }
    Ok(())
}
