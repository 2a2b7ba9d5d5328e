//! The typed channel between the runtime and the container's init.
//!
//! Protocol (one `SOCK_SEQPACKET` socketpair, one fixed-size datagram per message, no
//! allocation on either side):
//!
//! ```text
//!  runtime (parent)                         init (child)
//!        |  <-- UserNsCreated                |  only with a new user namespace
//!        |  MapsWritten -->                  |  uid_map/gid_map are in place
//!        |  <-- InitPid(pid)                 |  only when init is a grandchild
//!        |  <-- NeedCgroup                   |  init waits before its first mount
//!        |  Continue -->                     |  init is in its cgroup
//!        |  <-- MountsReady                  |  mounts done, before pivot_root
//!        |  InitPid(pid), Continue -->       |  prestart/createRuntime hooks ran;
//!        |                                   |  init learns its pid for its own hooks
//!        |  <-- Ready                        |  waiting for `start` on exec.fifo
//!        |  <-- Failed(errno, text)          |  at any step; init then exits
//! ```
//! The socket is close-on-exec, so a parent blocked in [`Channel::recv`] sees EOF if init
//! dies or execs without saying anything.

use crate::sys;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// One message of the protocol above.
// Fixed-size on purpose: boxing the failure text would allocate in the child.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// Child: a new user namespace exists; write its id maps.
    UserNsCreated,
    /// Parent: the id maps are written.
    MapsWritten,
    /// Child: the pid (in the parent's pid namespace) of init, when init is a grandchild.
    InitPid(i32),
    /// Child: init waits to be moved into its cgroup before it mounts anything.
    NeedCgroup,
    /// Child: all mounts are made; the runtime's hooks may run now.
    MountsReady,
    /// Parent: carry on.
    Continue,
    /// Child: everything is set up; init waits for `start`.
    Ready,
    /// Child: a step failed with `errno`; the text says which step and on what.
    Failed(i32, Detail),
}

/// Size of the text carried by [`Message::Failed`].
pub const DETAIL_LEN: usize = 480;

/// A fixed-size text, so the child never allocates to describe a failure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Detail {
    len: usize,
    buf: [u8; DETAIL_LEN],
}

impl Detail {
    /// Builds a detail from pieces, truncating at [`DETAIL_LEN`] bytes.
    pub fn from_parts(parts: &[&[u8]]) -> Detail {
        let mut d = Detail {
            len: 0,
            buf: [0; DETAIL_LEN],
        };
        for p in parts {
            let n = p.len().min(DETAIL_LEN - d.len);
            d.buf[d.len..d.len + n].copy_from_slice(&p[..n]);
            d.len += n;
        }
        d
    }

    /// The text, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf[..self.len]).into_owned()
    }
}

impl std::fmt::Debug for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

const FRAME: usize = 12 + DETAIL_LEN;

/// One end of the runtime/init channel.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl Channel {
    /// A connected pair: (parent end, child end). Both are close-on-exec.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let mut fds = [0; 2];
        // SAFETY: `fds` is a live array of two ints the kernel fills in.
        sys::check(unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        })?;
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Sends one message.
    pub fn send(&self, m: Message) -> io::Result<()> {
        let mut frame = [0u8; FRAME];
        let (tag, a, detail): (u32, i32, Option<&Detail>) = match &m {
            Message::UserNsCreated => (1, 0, None),
            Message::MapsWritten => (2, 0, None),
            Message::InitPid(p) => (3, *p, None),
            Message::MountsReady => (4, 0, None),
            Message::Continue => (5, 0, None),
            Message::Ready => (6, 0, None),
            Message::Failed(e, d) => (7, *e, Some(d)),
            Message::NeedCgroup => (8, 0, None),
        };
        frame[0..4].copy_from_slice(&tag.to_ne_bytes());
        frame[4..8].copy_from_slice(&a.to_ne_bytes());
        if let Some(d) = detail {
            frame[8..12].copy_from_slice(&(d.len as u32).to_ne_bytes());
            frame[12..12 + d.len].copy_from_slice(&d.buf[..d.len]);
        }
        // SAFETY: the pointer and length describe the live local `frame`; MSG_NOSIGNAL
        // turns a closed peer into EPIPE instead of SIGPIPE.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                FRAME,
                libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one message; `Ok(None)` when the other end has closed.
    pub fn recv(&self) -> io::Result<Option<Message>> {
        let mut frame = [0u8; FRAME];
        let n = sys::read(self.fd.as_raw_fd(), &mut frame)?;
        if n == 0 {
            return Ok(None);
        }
        if n != FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "short channel frame",
            ));
        }
        let tag = u32::from_ne_bytes(frame[0..4].try_into().expect("4 bytes"));
        let a = i32::from_ne_bytes(frame[4..8].try_into().expect("4 bytes"));
        let m = match tag {
            1 => Message::UserNsCreated,
            2 => Message::MapsWritten,
            3 => Message::InitPid(a),
            4 => Message::MountsReady,
            5 => Message::Continue,
            6 => Message::Ready,
            7 => {
                let len = (u32::from_ne_bytes(frame[8..12].try_into().expect("4 bytes")) as usize)
                    .min(DETAIL_LEN);
                Message::Failed(a, Detail::from_parts(&[&frame[12..12 + len]]))
            }
            8 => Message::NeedCgroup,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unknown channel message",
                ));
            }
        };
        Ok(Some(m))
    }

    /// Receives one message and fails unless it is `want`.
    pub fn expect(&self, want: Message) -> io::Result<()> {
        match self.recv()? {
            Some(m) if m == want => Ok(()),
            Some(m) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected {want:?}, got {m:?}"),
            )),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the other side exited",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_message() {
        let (a, b) = Channel::pair().unwrap();
        let msgs = [
            Message::UserNsCreated,
            Message::MapsWritten,
            Message::InitPid(4242),
            Message::NeedCgroup,
            Message::MountsReady,
            Message::Continue,
            Message::Ready,
            Message::Failed(2, Detail::from_parts(&[b"mount ", b"/proc"])),
        ];
        for m in msgs {
            a.send(m).unwrap();
            assert_eq!(b.recv().unwrap(), Some(m));
        }
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }

    #[test]
    fn detail_truncates() {
        let long = [b'x'; DETAIL_LEN + 10];
        let d = Detail::from_parts(&[&long, b"tail"]);
        assert_eq!(d.text().len(), DETAIL_LEN);
    }
}
