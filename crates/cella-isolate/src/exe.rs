//! Keeps the runtime binary out of the container's reach (runc CVE-2019-5736).
//!
//! A container's init is a clone of the runtime until it execs the user's program, so
//! `/proc/<init>/exe` points at the runtime binary. A process in the container that
//! opens that link (or execs `/proc/self/exe` as init's program) could get a writable
//! handle to the host binary. Before cloning anything into a container, the commands
//! that do so (`create`, `run`) re-execute themselves from a sealed in-memory copy: its
//! `exe` link points at the copy, which cannot be written (F_SEAL_WRITE), grown or
//! shrunk, and nothing on the host is reachable through it.
//!
//! Other commands never re-execute: they do not put a process in a container.

use crate::sys;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

/// The name the sealed copy carries; `/proc/self/exe` reads `/memfd:<NAME> (deleted)`.
const MEMFD_NAME: &std::ffi::CStr = c"cella-sealed";

/// Errors of making the protected copy.
#[derive(Debug, thiserror::Error)]
pub enum ExeError {
    /// A step failed.
    #[error("protect the runtime binary: {step}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

fn step(step: &'static str) -> impl FnOnce(io::Error) -> ExeError {
    move |source| ExeError::Step { step, source }
}

/// True when this process runs from the sealed copy.
pub fn is_protected() -> bool {
    std::fs::read_link("/proc/self/exe")
        .map(|p| {
            p.as_os_str()
                .as_encoded_bytes()
                .starts_with(b"/memfd:cella-sealed")
        })
        .unwrap_or(false)
}

/// Re-executes this process, with the same arguments and environment, from a sealed
/// in-memory copy of its binary, unless it already runs from one. Returns only when
/// the process is already protected, or with an error.
pub fn ensure_protected() -> Result<(), ExeError> {
    if is_protected() {
        return Ok(());
    }
    let copy = sealed_copy()?;
    let args: Vec<CString> = std::env::args_os().map(cstring).collect();
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstring(kv)
        })
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: `copy` is an open memfd holding an ELF image; argv and envp are
    // NULL-terminated arrays of pointers into `args` and `env`, alive across the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            copy.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(ExeError::Step {
        step: "execveat of the sealed copy",
        source: io::Error::last_os_error(),
    })
}

fn cstring(s: OsString) -> CString {
    let mut v = s.into_vec();
    v.retain(|b| *b != 0);
    CString::new(v).expect("NULs removed")
}

/// A memfd holding a copy of /proc/self/exe, sealed against every change.
fn sealed_copy() -> Result<OwnedFd, ExeError> {
    let src =
        sys::open(c"/proc/self/exe", libc::O_RDONLY, 0).map_err(step("open /proc/self/exe"))?;
    // SAFETY: MEMFD_NAME is a NUL-terminated static string; flags are integers.
    let fd = unsafe {
        libc::memfd_create(
            MEMFD_NAME.as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    let fd = sys::check(fd).map_err(step("memfd_create"))?;
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    loop {
        // SAFETY: both descriptors are open; a null offset uses and advances the file
        // positions.
        let n = unsafe {
            libc::sendfile(
                memfd.as_raw_fd(),
                src.as_raw_fd(),
                std::ptr::null_mut(),
                1 << 30,
            )
        };
        match n {
            0 => break,
            n if n > 0 => continue,
            _ => return Err(step("copy the binary")(io::Error::last_os_error())),
        }
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS takes an integer argument on an open memfd.
    sys::check(unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) })
        .map_err(step("seal the copy"))?;
    Ok(memfd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_copy_refuses_writes() {
        let fd = sealed_copy().unwrap();
        // SAFETY: writing from a live one-byte buffer to an open descriptor.
        let n = unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        assert_eq!(n, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
        // Reopened for writing through /proc (what an attacker in the container would
        // do with /proc/<init>/exe), every write still fails.
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        let err = std::io::Write::write_all(&mut f, b"#!/bin/sh\n").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
        assert!(!is_protected());
    }
}
