//! Keeps the runtime binary out of the container's reach (runc CVE-2019-5736).
//!
//! A container's init is a clone of the runtime until it execs the user's program, so
//! `/proc/<init>/exe` points at the runtime binary. A process in the container that
//! opens that link (or execs `/proc/self/exe` as init's program) could get a writable
//! handle to the host binary. Before cloning anything into a container, the commands
//! that do so (`create`, `run`) make sure they run from a binary on a read-only mount:
//!
//! - if the installed binary already sits on a read-only mount, nothing is done;
//! - otherwise they re-execute themselves from a cached copy under `/run/cella/exe`,
//!   bind-mounted read-only onto itself. Any write through `/proc/<pid>/exe` then fails
//!   with EROFS. The copy is made once per build of the binary (keyed by its device,
//!   inode, size and mtime), not on every command: copying a few megabytes into a
//!   memfd each time cost about as much as the rest of `create`.
//!
//! Other commands never re-execute: they do not put a process in a container.
//!
//! Several builds may run at once (an upgrade, a user's build beside the engine's), and
//! making a copy evicts those of other builds. So the copy is opened while it is known
//! good and executed through that descriptor (`execveat` with `AT_EMPTY_PATH`): an
//! eviction between the check and the exec can no longer make the exec fail, and the
//! open file keeps its read-only mount alive.

use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the read-only copies live.
pub const CACHE_DIR: &str = "/run/cella/exe";

/// Errors of protecting the binary.
#[derive(Debug, thiserror::Error)]
pub enum ExeError {
    /// A step failed.
    #[error("protect the runtime binary: {step} `{}`", path.display())]
    Step {
        /// What was being done.
        step: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

fn step(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ExeError {
    let path = path.to_owned();
    move |source| ExeError::Step { step, path, source }
}

/// True when `path` lies on a read-only mount.
fn on_readonly_mount(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `st` is a live statvfs the kernel fills in; `c` is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    r == 0 && st.f_flag & libc::ST_RDONLY != 0
}

/// True when this process's binary cannot be written through `/proc/self/exe`.
pub fn is_protected() -> bool {
    on_readonly_mount(Path::new("/proc/self/exe"))
}

/// Makes sure this process runs from a binary on a read-only mount, re-executing it
/// (same arguments and environment) from the cached read-only copy when needed.
/// Returns only when the process is protected, or with an error.
pub fn ensure_protected() -> Result<(), ExeError> {
    if is_protected() {
        return Ok(());
    }
    let (copy, fd) = open_cached_copy(Path::new(CACHE_DIR))?;
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
    // SAFETY: `fd` is open for the call, the path is an empty NUL-terminated string, and
    // `argv`/`envp` are NULL-terminated arrays of pointers to strings kept alive by
    // `args` and `env`. On success execveat does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    let err = io::Error::last_os_error();
    Err(ExeError::Step {
        step: "execve the read-only copy",
        path: copy,
        source: err,
    })
}

fn cstring(s: OsString) -> CString {
    let mut v = s.into_vec();
    v.retain(|b| *b != 0);
    CString::new(v).expect("NULs removed")
}

/// The read-only copy of this binary under `dir` (made once if missing), opened while
/// it is known to be there and read-only.
pub fn open_cached_copy(dir: &Path) -> Result<(PathBuf, OwnedFd), ExeError> {
    // The copy of another build's maker may evict ours between the check and the open:
    // then make it again, under the lock.
    for _ in 0..3 {
        let copy = cached_copy(dir)?;
        if let Ok(f) = std::fs::File::open(&copy)
            && fd_on_readonly_mount(&f)
        {
            return Ok((copy, f.into()));
        }
    }
    Err(step("keep", dir)(io::Error::other(
        "other builds of cella keep replacing the cached copy",
    )))
}

fn fd_on_readonly_mount(f: &std::fs::File) -> bool {
    // SAFETY: `st` is a live statvfs the kernel fills in; the fd is open for the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::fstatvfs(f.as_raw_fd(), &mut st) };
    r == 0 && st.f_flag & libc::ST_RDONLY != 0
}

/// The read-only copy of this binary under `dir`, made (once) if missing.
pub fn cached_copy(dir: &Path) -> Result<PathBuf, ExeError> {
    let me =
        std::fs::metadata("/proc/self/exe").map_err(step("stat", Path::new("/proc/self/exe")))?;
    let name = format!(
        "cella-{:x}-{:x}-{:x}-{:x}",
        me.dev(),
        me.ino(),
        me.size(),
        me.mtime()
    );
    let copy = dir.join(&name);
    if on_readonly_mount(&copy) {
        return Ok(copy);
    }
    std::fs::create_dir_all(dir).map_err(step("create", dir))?;
    // One maker at a time; the others find the copy ready once they get the lock.
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path).map_err(step("create", &lock_path))?;
    // SAFETY: flock on a descriptor owned by `lock` for the duration of the call.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(step("lock", &lock_path)(io::Error::last_os_error()));
    }
    if on_readonly_mount(&copy) {
        return Ok(copy);
    }
    // Copies left by earlier builds: detach their mounts (running processes keep what
    // they mapped) and remove them.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p != copy && e.file_name().as_encoded_bytes().starts_with(b"cella-") {
                if let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) {
                    // SAFETY: `c` is NUL-terminated and alive for the call.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy("/proc/self/exe", &tmp).map_err(step("copy the binary to", &tmp))?;
    std::fs::rename(&tmp, &copy).map_err(step("rename", &copy))?;
    let c = CString::new(copy.as_os_str().as_encoded_bytes())
        .map_err(|_| step("name", &copy)(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let flags = libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV;
    // SAFETY: source and target are the same NUL-terminated path, alive for the calls;
    // a bind mount then its read-only remount touch no memory of ours.
    let r = unsafe {
        let r = libc::mount(
            c.as_ptr(),
            c.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        );
        if r == 0 {
            libc::mount(
                std::ptr::null(),
                c.as_ptr(),
                std::ptr::null(),
                flags | libc::MS_REMOUNT,
                std::ptr::null(),
            )
        } else {
            r
        }
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        let _ = std::fs::remove_file(&copy);
        return Err(step("bind-mount read-only", &copy)(e));
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_copy_is_read_only_and_reused() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            assert!(std::env::var("CI").is_err(), "needs root under CI");
            eprintln!("SKIPPED: needs root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("cella-exe-test-{}", std::process::id()));
        let copy = cached_copy(&dir).unwrap();
        assert!(on_readonly_mount(&copy));
        // What an attacker in the container would do with /proc/<init>/exe.
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        // The same build reuses the copy: same inode.
        let again = cached_copy(&dir).unwrap();
        assert_eq!(again, copy);
        // Opened for the exec, it stays usable and read-only after an eviction.
        let (_, fd) = open_cached_copy(&dir).unwrap();
        let c = CString::new(copy.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is NUL-terminated and alive for the call.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        std::fs::remove_file(&copy).unwrap();
        let f = std::fs::File::from(fd);
        assert!(fd_on_readonly_mount(&f));
        assert!(f.metadata().unwrap().len() > 0);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!is_protected(), "the test binary sits on a writable mount");
    }
}
