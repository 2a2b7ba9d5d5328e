//! The only unsafe code of this crate: thin, safe wrappers over libc calls (statfs, kill,
//! sysconf, bpf).

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
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

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Let sub-cgroups attach their own device programs too (nested runtimes, systemd).
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The prefix of `union bpf_attr` used by BPF_PROG_LOAD, padded with zeros (the kernel
/// requires unknown trailing bytes to be zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    pad: [u64; 8],
}

/// BPF_PROG_ATTACH / BPF_PROG_DETACH.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    pad: [u32; 3],
}

/// BPF_PROG_QUERY.
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: [u32; 9],
}

/// BPF_PROG_GET_FD_BY_ID.
#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
    pad: [u32; 5],
}

/// bpf(2) on an attribute struct of ours.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<i64> {
    // SAFETY: `attr` is a live, exclusively borrowed #[repr(C)] value whose layout is a
    // prefix of `union bpf_attr` for `cmd`, zero-padded; the kernel reads (and for
    // queries writes) at most size_of::<T>() bytes of it during the call. Pointers
    // inside it are set by the callers to buffers that outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

/// Take ownership of an fd the kernel just returned to us.
fn owned(fd: i64) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful bpf(2) call that creates a new fd,
    // so it is open and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// Load a cgroup device program; on a verifier error, the verifier's log is returned.
pub(crate) fn load_device_prog(insns: &[u64]) -> Result<OwnedFd, (io::Error, String)> {
    let license = b"Apache-2.0\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..11].copy_from_slice(b"cella_devs\0");
    match bpf(BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            Err((e, String::from_utf8_lossy(&log[..end]).trim().to_owned()))
        }
    }
}

/// Attach `prog` to the cgroup directory `cgroup` and detach the device programs that
/// were attached there before (so re-applying replaces rather than stacks).
pub(crate) fn replace_device_prog(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let mut ids = [0u32; 64];
    let mut q = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut q)?;
    let old = &ids[..(q.prog_cnt as usize).min(ids.len())];
    let mut a = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut a)?;
    for &id in old {
        let mut g = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        let old_fd = match bpf(BPF_PROG_GET_FD_BY_ID, &mut g) {
            Ok(fd) => owned(fd),
            // Already gone.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let mut d = AttachAttr {
            target_fd: cgroup.as_raw_fd() as u32,
            attach_bpf_fd: old_fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        bpf(BPF_PROG_DETACH, &mut d)?;
    }
    Ok(())
}

/// How many device programs are attached directly to `cgroup`.
pub(crate) fn device_progs_attached(cgroup: BorrowedFd<'_>) -> io::Result<u32> {
    let mut ids = [0u32; 64];
    let mut q = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut q)?;
    Ok(q.prog_cnt)
}

/// The effective uid of this process.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}
