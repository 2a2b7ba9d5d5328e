//! Core scheduling against the real kernel. On a kernel with `CONFIG_SCHED_CORE` and SMT,
//! a forked child creates a cookie and the parent reads it; on a kernel without, the
//! child's create must fail with the clear "not supported" error (checked, not skipped).
//! Either way the call in the child must not allocate: it runs between fork and exec.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use cella_isolate::coresched::{self, CoreSchedError};

/// Counts allocations, so a forked (single-threaded) child can check that a call made none.
struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged; the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds alloc's contract (non-zero size), passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System.alloc/realloc above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator (so from System) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Whether the kernel config (when /proc/config.gz is readable) has CONFIG_SCHED_CORE=y.
fn config_says_sched_core() -> Option<bool> {
    let out = std::process::Command::new("zcat")
        .arg("/proc/config.gz")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().any(|l| l == "CONFIG_SCHED_CORE=y"))
}

/// What the child reports: the outcome of create_for_self_group and its own cookie.
#[derive(Debug)]
struct ChildReport {
    /// 0 on success, else the errno of the error.
    create_errno: i32,
    /// Whether the error was `NotSupported` (1), `NoSmt` (2), or something else (0).
    create_kind: u8,
    /// Allocations made by create_for_self_group.
    allocations: usize,
}

/// Forks a child that calls create_for_self_group and then waits for the parent to read
/// its cookie; returns the child's report and the cookie the parent read meanwhile.
fn child_creates_cookie() -> (ChildReport, Result<u64, CoreSchedError>) {
    let mut report_pipe = [0; 2];
    let mut go_pipe = [0; 2];
    // SAFETY: both arrays are writable arrays of two ints on this frame.
    unsafe {
        assert_eq!(libc::pipe2(report_pipe.as_mut_ptr(), libc::O_CLOEXEC), 0);
        assert_eq!(libc::pipe2(go_pipe.as_mut_ptr(), libc::O_CLOEXEC), 0);
    }
    // SAFETY: pipe2 returned four fresh descriptors that nothing else owns.
    let (report_r, report_w, go_r, go_w) = unsafe {
        (
            OwnedFd::from_raw_fd(report_pipe[0]),
            OwnedFd::from_raw_fd(report_pipe[1]),
            OwnedFd::from_raw_fd(go_pipe[0]),
            OwnedFd::from_raw_fd(go_pipe[1]),
        )
    };
    // SAFETY: the child calls only create_for_self_group, writes a fixed-size report with
    // write(2) and blocks on read(2) before _exit: no allocation, no locks.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(report_r);
        drop(go_w);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let r = coresched::create_for_self_group();
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
        let (errno, kind) = match &r {
            Ok(()) => (0, 0),
            Err(CoreSchedError::NotSupported(e)) => (e.raw_os_error().unwrap_or(-1), 1),
            Err(CoreSchedError::NoSmt(e)) => (e.raw_os_error().unwrap_or(-1), 2),
            Err(CoreSchedError::Create { source, .. }) => (source.raw_os_error().unwrap_or(-1), 0),
            Err(_) => (-1, 0),
        };
        let mut buf = [0u8; 4 + 1 + 8];
        buf[..4].copy_from_slice(&errno.to_ne_bytes());
        buf[4] = kind;
        buf[5..].copy_from_slice(&(allocations as u64).to_ne_bytes());
        let _ = fs::File::from(report_w).write_all(&buf);
        // Stay alive until the parent has read our cookie.
        let _ = fs::File::from(go_r).read(&mut [0u8; 1]);
        // SAFETY: ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(report_w);
    drop(go_r);
    let mut buf = [0u8; 13];
    fs::File::from(report_r).read_exact(&mut buf).unwrap();
    let report = ChildReport {
        create_errno: i32::from_ne_bytes(buf[..4].try_into().unwrap()),
        create_kind: buf[4],
        allocations: u64::from_ne_bytes(buf[5..].try_into().unwrap()) as usize,
    };
    let cookie = coresched::cookie(pid);
    drop(go_w);
    let mut status = 0;
    // SAFETY: `status` is a live int; `pid` is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    (report, cookie)
}

#[test]
fn child_gets_a_cookie_of_its_own_or_a_clear_error() {
    let check = coresched::check();
    assert_eq!(check.is_ok(), coresched::supported());
    if let Some(config) = config_says_sched_core() {
        // The kernel config and the system call must agree on the kernel's support.
        assert_eq!(
            config,
            !matches!(check, Err(CoreSchedError::NotSupported(_))),
            "/proc/config.gz and PR_SCHED_CORE_GET disagree: {check:?}"
        );
    }
    let (child, cookie) = child_creates_cookie();
    assert_eq!(child.allocations, 0, "create_for_self_group allocated");
    match check {
        Ok(()) => {
            assert_eq!(
                child.create_errno, 0,
                "create failed in the child: {child:?}"
            );
            let parent = coresched::cookie(0).unwrap();
            let child_cookie = cookie.unwrap();
            assert_ne!(child_cookie, 0);
            assert_ne!(child_cookie, parent);
        }
        Err(CoreSchedError::NotSupported(ref e)) => {
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
            assert!(
                check
                    .as_ref()
                    .unwrap_err()
                    .to_string()
                    .contains("not supported by this kernel"),
                "{check:?}"
            );
            assert_eq!((child.create_errno, child.create_kind), (libc::EINVAL, 1));
            let err = cookie.unwrap_err();
            assert!(matches!(err, CoreSchedError::NotSupported(_)), "{err:?}");
            let err = coresched::create_for_self_group().unwrap_err();
            assert_eq!(
                err.to_string(),
                "core scheduling is not supported by this kernel (built without CONFIG_SCHED_CORE)"
            );
            eprintln!("this kernel has no core scheduling: checked the error path");
        }
        Err(CoreSchedError::NoSmt(ref e)) => {
            assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
            assert_eq!((child.create_errno, child.create_kind), (libc::ENODEV, 2));
            assert!(matches!(cookie, Err(CoreSchedError::NoSmt(_))));
            eprintln!("this machine has no SMT siblings: checked the error path");
        }
        Err(e) => panic!("unexpected error from PR_SCHED_CORE_GET on self: {e:?}"),
    }
}

#[test]
fn a_negative_pid_is_not_read_as_unsupported() {
    let err = coresched::cookie(-5).unwrap_err();
    assert!(
        matches!(err, CoreSchedError::Get { pid: -5, .. }),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "prctl(PR_SCHED_CORE_GET) for pid -5");
}
