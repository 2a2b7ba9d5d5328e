//! Behaviour tests: each filter is installed in a forked child, which then makes syscalls
//! with allowed and changed arguments; the parent checks how the child ended.
//!
//! The child runs only allocation-free code between fork and exit (the test harness is
//! multi-threaded), which is also what `SeccompProgram::install` promises.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};

use cella_seccomp::{SeccompProgram, compile, process_state_json, send_to_listener};
use oci_spec::runtime::LinuxSeccomp;

#[derive(Debug, PartialEq, Eq)]
enum End {
    Exit(i32),
    Signal(i32),
}

/// Forks; the child installs `prog` (after setting no_new_privs) and exits with `body()`.
fn in_child(prog: &SeccompProgram, body: impl FnOnce() -> i32) -> End {
    // SAFETY: the child only makes raw syscalls, runs `install` (allocation-free) and the
    // test body (raw syscalls too), then `_exit`s; it never returns into the harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: plain prctl on the calling (only) thread.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            // SAFETY: terminate the child without running the parent's destructors.
            unsafe { libc::_exit(200) };
        }
        if prog.install().is_err() {
            // SAFETY: as above.
            unsafe { libc::_exit(201) };
        }
        let code = body();
        // SAFETY: as above.
        unsafe { libc::_exit(code) };
    }
    wait(pid)
}

fn wait(pid: libc::pid_t) -> End {
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a live local.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFEXITED(status) {
        End::Exit(libc::WEXITSTATUS(status))
    } else {
        End::Signal(libc::WTERMSIG(status))
    }
}

fn profile(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).expect("profile parses")
}

/// Returns -errno or the result, as the raw syscall does.
fn sys(nr: libc::c_long, a0: libc::c_long) -> i64 {
    // SAFETY: the syscalls used here (getppid, getpgid, getpid, uname-free ones) take at
    // most one integer argument and touch no memory.
    let r = unsafe { libc::syscall(nr, a0) };
    if r < 0 {
        // SAFETY: errno is thread-local; this thread just set it.
        -i64::from(unsafe { *libc::__errno_location() })
    } else {
        r
    }
}

/// A 64-bit `syscall` instruction with an arbitrary number (used for x32 numbers).
fn raw_syscall(nr: u64) -> i64 {
    let ret: i64;
    // SAFETY: `syscall` clobbers rcx and r11 (declared); the numbers used take no pointer
    // arguments.
    unsafe {
        std::arch::asm!("syscall", inlateout("rax") nr as i64 => ret, out("rcx") _, out("r11") _, options(nostack));
    }
    ret
}

/// An i386 syscall through `int 0x80` from this 64-bit process.
fn int80(nr: u32) -> i32 {
    let ret: i32;
    // SAFETY: the compat entry may clobber r8-r11 (declared); the numbers used take no
    // pointer arguments.
    unsafe {
        std::arch::asm!("int 0x80", inlateout("eax") nr as i32 => ret,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _, options(nostack));
    }
    ret
}

#[test]
fn errno_rules_return_the_configured_errno_only_for_matching_args() {
    let prog = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":42},
            {"names":["getpgid"],"action":"SCMP_ACT_ERRNO","errnoRet":77,
             "args":[{"index":0,"value":12345,"op":"SCMP_CMP_EQ"}]},
            {"names":["getsid"],"action":"SCMP_ACT_ERRNO",
             "args":[{"index":0,"value":4294967296,"op":"SCMP_CMP_GE"}]}]}"#,
    ))
    .unwrap();
    let end = in_child(&prog, || {
        if sys(libc::SYS_getppid, 0) != -42 {
            return 1;
        }
        if sys(libc::SYS_getpgid, 12345) != -77 {
            return 2;
        }
        if sys(libc::SYS_getpgid, 0) < 0 {
            return 3;
        }
        // Only the high word differs: a 64-bit compare must see it.
        if sys(libc::SYS_getsid, 1 << 32) != -libc::EPERM as i64 {
            return 4;
        }
        if sys(libc::SYS_getsid, 0) < 0 {
            return 5;
        }
        0
    });
    assert_eq!(end, End::Exit(0));
}

#[test]
fn default_errno_ret_applies_to_unlisted_syscalls() {
    let prog = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,"syscalls":[
            {"names":["exit","exit_group","getpid"],"action":"SCMP_ACT_ALLOW"}]}"#,
    ))
    .unwrap();
    let end = in_child(&prog, || {
        if sys(libc::SYS_getpid, 0) <= 0 {
            return 1;
        }
        if sys(libc::SYS_getppid, 0) != -libc::ENOSYS as i64 {
            return 2;
        }
        0
    });
    assert_eq!(end, End::Exit(0));
}

#[test]
fn kill_actions_end_the_child_with_sigsys() {
    for action in [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL_PROCESS",
    ] {
        let prog = compile(&profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["getppid"],"action":"{action}"}}]}}"#
        )))
        .unwrap();
        let end = in_child(&prog, || {
            sys(libc::SYS_getppid, 0);
            0
        });
        assert_eq!(end, End::Signal(libc::SIGSYS), "{action}");
    }
}

static TRAPPED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    // SYS_SECCOMP = 1: the signal came from a seccomp TRAP.
    if code == 1 {
        TRAPPED.store(true, Ordering::SeqCst);
    }
}

#[test]
fn trap_delivers_sigsys_to_a_handler() {
    let prog = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getppid"],"action":"SCMP_ACT_TRAP"}]}"#,
    ))
    .unwrap();
    let end = in_child(&prog, || {
        // SAFETY: sigaction is zeroable plain data; the handler is a valid extern fn and
        // only touches an atomic.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_sigsys as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
            libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
        }
        sys(libc::SYS_getppid, 0);
        if TRAPPED.load(Ordering::SeqCst) { 0 } else { 1 }
    });
    assert_eq!(end, End::Exit(0));
}

#[test]
fn log_lets_the_syscall_run() {
    let prog = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_LOG"}]}"#,
    ))
    .unwrap();
    // SAFETY: getppid has no preconditions.
    let parent = i64::from(unsafe { libc::getpid() });
    let end = in_child(&prog, || {
        if sys(libc::SYS_getppid, 0) == parent {
            0
        } else {
            1
        }
    });
    assert_eq!(end, End::Exit(0));
}

#[test]
fn x32_and_int80_do_not_bypass_an_x86_64_rule() {
    // Only the native ABI is listed: x32 and i386 entries get the bad-arch action.
    let prog = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":55}]}"#,
    ))
    .unwrap();
    let end = in_child(&prog, || {
        if sys(libc::SYS_getppid, 0) != -55 {
            return 1;
        }
        raw_syscall(0x4000_0000 | libc::SYS_getppid as u64);
        2
    });
    assert_eq!(end, End::Signal(libc::SIGSYS), "x32 getppid");
    let end = in_child(&prog, || {
        int80(64); // i386 getppid
        2
    });
    assert_eq!(end, End::Signal(libc::SIGSYS), "int 0x80 getppid");

    // With all three ABIs listed, each one's getppid hits the rule.
    let prog = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
            "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":55}]}"#,
    ))
    .unwrap();
    let end = in_child(&prog, || {
        if raw_syscall(0x4000_0000 | libc::SYS_getppid as u64) != -55 {
            return 1;
        }
        if int80(64) != -55 {
            return 2;
        }
        // i386 getpid (20) is allowed: the filter must not confuse it with x86_64 numbers.
        if int80(20) <= 0 {
            return 3;
        }
        0
    });
    assert_eq!(end, End::Exit(0));
}

#[test]
fn install_without_no_new_privs_or_cap_sys_admin_fails() {
    let prog = compile(&profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getppid"],"action":"SCMP_ACT_KILL"}]}"#)).unwrap();
    // SAFETY: the child only makes raw syscalls and `install`, then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // Drop every capability (we may be root) without setting no_new_privs.
        // _LINUX_CAPABILITY_VERSION_3 header {version, pid} and two zeroed data structs.
        let hdr: [u32; 2] = [0x2008_0522, 0];
        let data = [0u32; 6];
        // SAFETY: capset reads a header and two data structs from live locals.
        let r = unsafe { libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()) };
        let code = match (r, prog.install()) {
            (0, Err(cella_seccomp::SeccompError::Install(e)))
                if e.raw_os_error() == Some(libc::EACCES) =>
            {
                0
            }
            (0, _) => 1,
            _ => 2,
        };
        // SAFETY: terminate the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    assert_eq!(wait(pid), End::Exit(0));
}

/// Removes the socket file even when the test fails.
struct RemoveOnDrop(std::path::PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits up to 10 s for `fd` to become readable, so a broken child fails the test
/// instead of hanging it.
fn wait_readable(fd: libc::c_int, what: &str) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one live pollfd.
    let r = unsafe { libc::poll(&mut p, 1, 10_000) };
    assert_eq!(r, 1, "{what} did not become readable");
}

/// Receives one message and the fd attached to it.
fn recv_with_fd(sock: libc::c_int) -> (Vec<u8>, OwnedFd) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zero is an empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: `msg` points at live local buffers of the sizes it states.
    let n = unsafe { libc::recvmsg(sock, &mut msg, 0) };
    assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    // SAFETY: the kernel filled `cbuf`; CMSG_FIRSTHDR checks controllen.
    let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    assert!(!cmsg.is_null(), "no control message");
    // SAFETY: `cmsg` points inside `cbuf`.
    let (level, ty) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
    assert_eq!((level, ty), (libc::SOL_SOCKET, libc::SCM_RIGHTS));
    // SAFETY: an SCM_RIGHTS payload holds at least one fd, which now belongs to us.
    let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
    // SAFETY: the fd was just received and nothing else owns it.
    (buf, unsafe { OwnedFd::from_raw_fd(fd) })
}

#[repr(C)]
#[derive(Default)]
struct SeccompNotif {
    id: u64,
    pid: u32,
    flags: u32,
    nr: i32,
    arch: u32,
    ip: u64,
    args: [u64; 6],
}

#[repr(C)]
struct SeccompNotifResp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const SECCOMP_IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;

#[test]
fn notify_reaches_a_listener_that_answers() {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let path = std::env::temp_dir().join(format!("cella-seccomp-notify-{me}.sock"));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind listener");
    let _guard = RemoveOnDrop(path.clone());
    let prog = compile(&profile(&format!(
        r#"{{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"{}","listenerMetadata":"meta-1",
            "flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
            "syscalls":[{{"names":["getppid"],"action":"SCMP_ACT_NOTIFY"}}]}}"#,
        path.display()
    )))
    .unwrap();
    assert!(prog.needs_notify());
    let state: oci_spec::runtime::State = serde_json::from_str(
        r#"{"ociVersion":"1.2.0","id":"c1","status":"running","pid":1,"bundle":"/b"}"#,
    )
    .unwrap();
    let json = process_state_json(&state, 1, Some("meta-1")).unwrap();

    // SAFETY: the child runs prctl, install, send_to_listener (no allocation on success:
    // the address lives on the stack, the message was built before fork) and raw syscalls.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: plain prctl on the only thread.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        let code = match prog.install() {
            Ok(Some(fd)) => match send_to_listener(&path, std::os::fd::AsFd::as_fd(&fd), &json) {
                Ok(()) => {
                    drop(fd);
                    if sys(libc::SYS_getppid, 0) == 4242 {
                        0
                    } else {
                        1
                    }
                }
                Err(_) => 2,
            },
            _ => 3,
        };
        // SAFETY: terminate the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }

    wait_readable(listener.as_raw_fd(), "listener");
    let (mut conn, _) = listener.accept().unwrap();
    let (msg, notify_fd) = recv_with_fd(conn.as_raw_fd());
    let v: serde_json::Value = serde_json::from_slice(&msg).unwrap();
    assert_eq!(v["fds"], serde_json::json!(["seccompFd"]));
    assert_eq!(v["metadata"], "meta-1");
    assert_eq!(v["state"]["id"], "c1");
    assert_eq!(v["ociVersion"], "1.2.0");
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "runc sends exactly one message");

    wait_readable(notify_fd.as_raw_fd(), "notify fd");
    let mut req = SeccompNotif::default();
    // SAFETY: NOTIF_RECV fills a zeroed seccomp_notif of the size encoded in the ioctl.
    let r = unsafe { libc::ioctl(notify_fd.as_raw_fd(), SECCOMP_IOCTL_NOTIF_RECV, &mut req) };
    assert_eq!(r, 0, "NOTIF_RECV: {}", std::io::Error::last_os_error());
    assert_eq!(req.nr as libc::c_long, libc::SYS_getppid);
    assert_eq!(req.pid as i32, pid);
    let resp = SeccompNotifResp {
        id: req.id,
        val: 4242,
        error: 0,
        flags: 0,
    };
    // SAFETY: NOTIF_SEND reads a seccomp_notif_resp from a live local.
    let r = unsafe { libc::ioctl(notify_fd.as_raw_fd(), SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    assert_eq!(r, 0, "NOTIF_SEND: {}", std::io::Error::last_os_error());
    assert_eq!(wait(pid), End::Exit(0));
}
