//! A terminal without an engine: `cella run` and `cella exec` in the foreground with
//! `terminal: true` and no `--console-socket`, as people type them. cella then plays the
//! engine's part itself: init sends the pty master over one end of a socketpair, and
//! cella relays between the master and its own stdin/stdout, with its terminal in raw
//! mode (the container's pty does the line editing) and the pty's size kept in step
//! with the user's window.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

/// The two ends of the socket init sends the pty master over.
#[derive(Debug)]
pub(crate) struct ConsolePair {
    /// Given to init in place of a connected `--console-socket`.
    pub(crate) theirs: OwnedFd,
    ours: OwnedFd,
}

impl ConsolePair {
    pub(crate) fn new() -> io::Result<ConsolePair> {
        let (a, b) = UnixStream::pair()?;
        Ok(ConsolePair {
            theirs: a.into(),
            ours: b.into(),
        })
    }

    /// The master init sent (it is queued once init reported Ready).
    pub(crate) fn receive(self) -> io::Result<OwnedFd> {
        drop(self.theirs);
        cella_isolate::console::recv_master(self.ours.as_fd())
    }
}

/// Relays a pty master to this process's stdio until the pty's last user is gone.
pub(crate) struct Relay {
    master: OwnedFd,
    /// The user's terminal settings, restored on drop.
    saved: Option<libc::termios>,
    done: mpsc::Receiver<()>,
}

impl Relay {
    /// Sizes the pty like our terminal, puts our terminal in raw mode, starts relaying.
    pub(crate) fn start(master: OwnedFd) -> io::Result<Relay> {
        copy_window_size(master.as_fd());
        let saved = make_raw(io::stdin().as_fd());
        let pump_master = master.try_clone()?;
        let (tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("tty-relay".into())
            .spawn(move || {
                pump(pump_master.as_fd());
                let _ = tx.send(());
            })?;
        Ok(Relay {
            master,
            saved,
            done,
        })
    }

    /// The user's window changed size (SIGWINCH): the pty follows, and the kernel tells
    /// the container's foreground process group.
    pub(crate) fn resize(&self) {
        copy_window_size(self.master.as_fd());
    }

    /// After the container's process exited: lets the relay copy what is still buffered
    /// in the pty (it ends when the last holder of the slave closes it), without waiting
    /// forever for a background process that kept the terminal.
    pub(crate) fn finish(self) {
        let _ = self.done.recv_timeout(Duration::from_millis(500));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            // SAFETY: `t` is the termios tcgetattr filled for fd 0 in make_raw.
            unsafe { libc::tcsetattr(0, libc::TCSADRAIN, t) };
        }
    }
}

/// Copies stdin to the master and the master to stdout. Returns when the master reports
/// the slave side closed (EIO or hang-up); stdin's end of file only stops that direction.
fn pump(master: BorrowedFd<'_>) {
    let mut buf = [0u8; 16384];
    let mut stdin_open = true;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: if stdin_open { 0 } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a live array of two pollfds for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match read(master.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    if write_all(1, &buf[..n]).is_err() {
                        return;
                    }
                }
                // EIO or 0: every holder of the slave has closed it.
                _ => return,
            }
        }
        if stdin_open && fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            match read(0, &mut buf) {
                Ok(n) if n > 0 => {
                    if write_all(master.as_raw_fd(), &buf[..n]).is_err() {
                        return;
                    }
                }
                _ => stdin_open = false,
            }
        }
    }
}

fn read(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn write_all(fd: i32, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a live buffer of `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// The size (rows, columns) of the terminal on our stdin (or stdout), if there is one.
pub(crate) fn window_size() -> Option<(u16, u16)> {
    [0, 1].into_iter().find_map(|fd| {
        // SAFETY: an all-zero winsize is valid; TIOCGWINSZ writes one into `ws`.
        unsafe {
            let mut ws: libc::winsize = std::mem::zeroed();
            (libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) == 0).then_some((ws.ws_row, ws.ws_col))
        }
    })
}

/// Gives the pty the size of the user's terminal, if there is one.
fn copy_window_size(master: BorrowedFd<'_>) {
    if let Some((rows, cols)) = window_size() {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one live winsize.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    }
}

/// Raw mode on `fd` when it is a terminal; returns the settings to restore.
fn make_raw(fd: BorrowedFd<'_>) -> Option<libc::termios> {
    // SAFETY: an all-zero termios is a valid buffer for tcgetattr to fill; cfmakeraw and
    // tcsetattr work on that initialised local.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd.as_raw_fd(), &mut t) != 0 {
            return None;
        }
        let saved = t;
        libc::cfmakeraw(&mut t);
        if libc::tcsetattr(fd.as_raw_fd(), libc::TCSADRAIN, &t) != 0 {
            return None;
        }
        Some(saved)
    }
}
