//! The only unsafe code of this crate: thin, safe wrappers over two libc calls.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `CGROUP_SUPER_MAGIC` (v1 hierarchies).
pub(crate) const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
/// `CGROUP2_SUPER_MAGIC` (the unified hierarchy).
pub(crate) const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The filesystem magic number (`f_type`) of the filesystem holding `path`.
pub(crate) fn fs_magic(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c` is a NUL-terminated string that outlives the call, and `buf` points to
    // writable memory of the size of `struct statfs`, which the kernel fills on success.
    let rc = unsafe { libc::statfs(c.as_ptr(), buf.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so the kernel initialised the whole struct.
    let st = unsafe { buf.assume_init() };
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between architectures
    Ok(st.f_type as i64)
}

/// kill(2); ESRCH (already gone) is reported like any other error.
pub(crate) fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes two integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The system page size, used to reject memory limits the kernel would round to zero.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 { n as u64 } else { 4096 }
}

/// Clock ticks per second (USER_HZ) for cpuacct.stat conversion.
pub(crate) fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 { n as u64 } else { 100 }
}
