//! The one system call std has no stable wrapper for at this crate's minimum Rust version.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Takes an exclusive flock(2) on `fd`, waiting for it.
pub fn flock_exclusive(fd: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        // SAFETY: `fd` is a borrowed, open descriptor that outlives this call; flock only
        // changes the lock on the open file description.
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
