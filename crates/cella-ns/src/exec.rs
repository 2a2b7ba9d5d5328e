//! Running the user's command after the namespaces are set up: everything exec needs is
//! built before any fork, so the child only makes system calls (no allocation between
//! fork and exec), and a child reports a failed step to its parent over a pipe.
//!
//! Protocol of the report pipe (close-on-exec, child writes, parent reads): nothing, then
//! end of file, when exec succeeded; or one 5-byte message `[step, errno as i32 LE]`
//! naming the step that failed, after which the child exits with status 127.

use crate::sys;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// A command could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// An argument or environment entry holds a NUL byte.
    #[error("command argument {index} contains a NUL byte")]
    NulInArgument {
        /// Position of the argument (0 is the program).
        index: usize,
    },
}

/// A command ready to exec: program, argv and envp as C strings, and PATH split into
/// directories, so the search needs no allocation.
pub struct ExecPlan {
    program: CString,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    _envp: Vec<CString>,
    path_dirs: Vec<CString>,
}

impl ExecPlan {
    /// Prepares `command`, or the user's `$SHELL` (else `/bin/sh`) when it is empty, with
    /// the current environment.
    pub fn new(command: &[OsString]) -> Result<ExecPlan, ExecError> {
        let command: Vec<OsString> = if command.is_empty() {
            vec![std::env::var_os("SHELL").unwrap_or_else(|| "/bin/sh".into())]
        } else {
            command.to_vec()
        };
        let mut argv = Vec::with_capacity(command.len());
        for (index, a) in command.iter().enumerate() {
            argv.push(CString::new(a.as_bytes()).map_err(|_| ExecError::NulInArgument { index })?);
        }
        let envp: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                CString::new(kv).ok()
            })
            .collect();
        let path = std::env::var_os("PATH").unwrap_or_else(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let path_dirs = path
            .as_bytes()
            .split(|b| *b == b':')
            .map(|d| if d.is_empty() { &b"."[..] } else { d })
            .filter_map(|d| CString::new(d).ok())
            .collect();
        let mut argv_ptrs: Vec<_> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<_> = envp.iter().map(|e| e.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        Ok(ExecPlan {
            program: argv[0].clone(),
            argv,
            argv_ptrs,
            envp_ptrs,
            _envp: envp,
            path_dirs,
        })
    }

    /// The program as given, for messages.
    pub fn program(&self) -> String {
        String::from_utf8_lossy(self.program.as_bytes()).into_owned()
    }

    /// Execs the command, searching PATH as execvp does; returns only on failure.
    /// Async-signal-safe: builds candidate paths in a stack buffer.
    pub fn exec(&self) -> io::Error {
        let prog = self.program.as_bytes();
        if prog.contains(&b'/') {
            return sys::execve(&self.program, &self.argv_ptrs, &self.envp_ptrs);
        }
        let mut buf = [0u8; 4096];
        let mut last = io::Error::from_raw_os_error(libc::ENOENT);
        let mut saw_eacces = false;
        for dir in &self.path_dirs {
            let d = dir.as_bytes();
            let len = d.len() + 1 + prog.len();
            if len + 1 > buf.len() {
                continue;
            }
            buf[..d.len()].copy_from_slice(d);
            buf[d.len()] = b'/';
            buf[d.len() + 1..len].copy_from_slice(prog);
            buf[len] = 0;
            let Ok(path) = std::ffi::CStr::from_bytes_with_nul(&buf[..=len]) else {
                continue;
            };
            let e = sys::execve(path, &self.argv_ptrs, &self.envp_ptrs);
            match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
                Some(libc::EACCES) => saw_eacces = true,
                _ => return e,
            }
            last = e;
        }
        if saw_eacces {
            io::Error::from_raw_os_error(libc::EACCES)
        } else {
            last
        }
    }

    /// Number of arguments, program included.
    pub fn len(&self) -> usize {
        self.argv.len()
    }

    /// Never true: a plan always has a program.
    pub fn is_empty(&self) -> bool {
        self.argv.is_empty()
    }
}

/// A step a forked child takes before exec, named in its failure report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ChildStep {
    /// Executing the command.
    Exec = 1,
    /// Mounting a fresh proc.
    MountProc = 2,
    /// Changing the root directory.
    Chroot = 3,
    /// Changing the working directory.
    Chdir = 4,
    /// Arranging the parent-death signal.
    ParentDeathSignal = 5,
    /// Making mounts private for the proc mount.
    Propagation = 6,
    /// Running newuidmap.
    NewUidMap = 7,
    /// Running newgidmap.
    NewGidMap = 8,
    /// Bind-mounting a namespace file to keep it alive.
    BindNamespace = 9,
    /// Unsharing namespaces (a report with code 0 means done).
    Unshare = 10,
}

impl ChildStep {
    fn from_u8(b: u8) -> ChildStep {
        match b {
            2 => ChildStep::MountProc,
            3 => ChildStep::Chroot,
            4 => ChildStep::Chdir,
            5 => ChildStep::ParentDeathSignal,
            6 => ChildStep::Propagation,
            7 => ChildStep::NewUidMap,
            8 => ChildStep::NewGidMap,
            9 => ChildStep::BindNamespace,
            10 => ChildStep::Unshare,
            _ => ChildStep::Exec,
        }
    }
}

/// The child's end of the report pipe.
pub struct ChildReporter(OwnedFd);

/// The parent's end of the report pipe.
pub struct ParentReader(OwnedFd);

/// Makes a report pipe; the write end is close-on-exec, so a successful exec closes it.
pub fn report_pipe() -> io::Result<(ParentReader, ChildReporter)> {
    let (r, w) = sys::pipe()?;
    Ok((ParentReader(r), ChildReporter(w)))
}

impl ChildReporter {
    /// Reports the failed step and leaves the child with status 127. Async-signal-safe.
    pub fn fail(&self, step: ChildStep, err: &io::Error) -> ! {
        self.report(step, err.raw_os_error().unwrap_or(libc::EIO));
        sys::exit_now(127)
    }

    /// Sends a report without exiting; `code` is an errno, or an exit status for steps
    /// that run a program. Async-signal-safe.
    pub fn report(&self, step: ChildStep, code: i32) {
        let e = code.to_le_bytes();
        let msg = [step as u8, e[0], e[1], e[2], e[3]];
        let _ = sys::write_all(self.0.as_fd(), &msg);
    }
}

impl ParentReader {
    /// Waits until the child execs (Ok(None)) or reports a failed step.
    pub fn wait(self) -> io::Result<Option<(ChildStep, io::Error)>> {
        Ok(self
            .wait_code()?
            .map(|(s, c)| (s, io::Error::from_raw_os_error(c))))
    }

    /// Like [`ParentReader::wait`], with the raw code sent.
    pub fn wait_code(self) -> io::Result<Option<(ChildStep, i32)>> {
        let mut buf = [0u8; 5];
        let n = sys::read_full(self.0.as_fd(), &mut buf)?;
        if n < 5 {
            return Ok(None);
        }
        let code = i32::from_le_bytes([buf[1], buf[2], buf[3], buf[4]]);
        Ok(Some((ChildStep::from_u8(buf[0]), code)))
    }
}
