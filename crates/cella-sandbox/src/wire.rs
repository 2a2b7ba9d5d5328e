//! The typed channel between the supervisor and the sandbox's processes.
//!
//! One `SOCK_SEQPACKET` socketpair, one fixed-size datagram per message (no allocation
//! in the sandbox), descriptors attached with SCM_RIGHTS. The init and the program share
//! the sandbox's end; each datagram arrives whole, so their messages never interleave.
//!
//! ```text
//!  supervisor                       init (pid 1)              program
//!     |  Go -->                       |  id maps written
//!     |  <-- StateDir + fd            |  mounts made; fd of the private writable state
//!     |  InCgroup -->                 |  moved into its cgroup (while it mounted)
//!     |                               |  forks the program ------>|
//!     |  <-- Listener + fd            |                           |  seccomp loaded
//!     |                               |                           |  execve
//!     |  <-- Exited(wait status)      |  the program ended; init exits, the pid
//!     |                               |  namespace and everything in it dies
//!     |  <-- Failed(errno, text)      |  any step, from either; the sender exits
//! ```

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use crate::sys;

/// Size of the text of [`Message::Failed`].
pub const TEXT_LEN: usize = 240;

const FRAME: usize = 8 + TEXT_LEN;

/// One message of the protocol above.
// Fixed-size on purpose: boxing the failure text would allocate in the sandbox.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// Supervisor: id maps written; carry on with the mounts.
    Go,
    /// Supervisor: the init is in the sandbox's cgroup; it may fork the program.
    InCgroup,
    /// Init: the attached fd is the directory holding the writable state.
    StateDir,
    /// Program: the attached fd is its seccomp notification listener.
    Listener,
    /// Init: the program ended with this wait status.
    Exited(i32),
    /// Init or program: a step failed with this errno; the text names the step.
    Failed(i32, Text),
}

/// A fixed-size text, so the sandbox side never allocates to describe a failure.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text {
    len: usize,
    buf: [u8; TEXT_LEN],
}

impl Text {
    /// Builds a text from pieces, truncated at [`TEXT_LEN`] bytes.
    pub fn from_parts(parts: &[&[u8]]) -> Text {
        let mut t = Text {
            len: 0,
            buf: [0; TEXT_LEN],
        };
        for p in parts {
            let n = p.len().min(TEXT_LEN - t.len);
            t.buf[t.len..t.len + n].copy_from_slice(&p[..n]);
            t.len += n;
        }
        t
    }

    /// The text, lossily decoded.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf[..self.len]).into_owned()
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.text())
    }
}

/// One end of the channel.
#[derive(Debug)]
pub struct Wire {
    fd: OwnedFd,
}

impl Wire {
    /// A connected pair: (supervisor end, sandbox end), both close-on-exec.
    pub fn pair() -> io::Result<(Wire, Wire)> {
        let (a, b) = sys::seqpacket_pair()?;
        Ok((Wire { fd: a }, Wire { fd: b }))
    }

    fn encode(m: &Message) -> [u8; FRAME] {
        let mut f = [0u8; FRAME];
        let (tag, a, text): (u8, i32, Option<&Text>) = match m {
            Message::Go => (1, 0, None),
            Message::InCgroup => (6, 0, None),
            Message::StateDir => (2, 0, None),
            Message::Listener => (3, 0, None),
            Message::Exited(s) => (4, *s, None),
            Message::Failed(e, t) => (5, *e, Some(t)),
        };
        f[0] = tag;
        f[4..8].copy_from_slice(&a.to_ne_bytes());
        if let Some(t) = text {
            f[1] = t.len as u8;
            f[8..8 + t.len].copy_from_slice(&t.buf[..t.len]);
        }
        f
    }

    /// Sends one message.
    pub fn send(&self, m: Message) -> io::Result<()> {
        sys::send(self.fd.as_fd(), &Self::encode(&m))
    }

    /// Sends one message with a descriptor.
    pub fn send_fd(&self, m: Message, fd: BorrowedFd<'_>) -> io::Result<()> {
        cella_isolate::sys::send_fd(self.fd.as_fd(), &Self::encode(&m), fd)
    }

    /// Receives one message and its descriptor; `None` at EOF.
    pub fn recv(&self) -> io::Result<Option<(Message, Option<OwnedFd>)>> {
        let mut f = [0u8; FRAME];
        let (n, fd) = sys::recv_with_fd(self.fd.as_fd(), &mut f)?;
        if n == 0 {
            return Ok(None);
        }
        if n != FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sandbox channel: frame of {n} bytes"),
            ));
        }
        let a = i32::from_ne_bytes([f[4], f[5], f[6], f[7]]);
        let m = match f[0] {
            1 => Message::Go,
            6 => Message::InCgroup,
            2 => Message::StateDir,
            3 => Message::Listener,
            4 => Message::Exited(a),
            5 => {
                let len = (f[1] as usize).min(TEXT_LEN);
                Message::Failed(a, Text::from_parts(&[&f[8..8 + len]]))
            }
            t => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("sandbox channel: unknown message {t}"),
                ));
            }
        };
        Ok(Some((m, fd)))
    }

    /// The raw descriptor, for poll.
    pub fn raw(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}
