//! The container's init, from clone to exec. Single-threaded, no printing: each step
//! that fails is reported to the runtime over the channel as
//! `Failed(errno, "<step> <object>")`, then init exits.
//!
//! Two ways in:
//! - fast path (no namespace to join, no time offsets): the runtime clones init with
//!   every CLONE_NEW* flag at once;
//! - joining path: a first child joins the given namespaces (user first), unshares the
//!   new ones, writes time offsets, then forks init with CLONE_PARENT so init is still
//!   the runtime's child, and exits.

// Step errors carry a fixed-size text so the child never allocates to fail: large on
// purpose.
#![allow(clippy::result_large_err)]

use crate::config::{InitPlan, ProcessPlan};
use cella_isolate::channel::{Channel, Detail, Message};
use cella_isolate::sys::{self, Forked};
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// What init needs besides the plan.
pub struct InitContext<'a> {
    /// The child's end of the channel.
    pub channel: &'a Channel,
    /// exec.fifo, opened read-write: init blocks reading it until `start` writes.
    pub fifo: &'a OwnedFd,
    /// Descriptors of the runtime that must not outlive the fork (the state lock).
    pub close_now: &'a [RawFd],
    /// Container id and bundle, for the state JSON that init's hooks read.
    pub id: &'a str,
    /// The bundle path.
    pub bundle: &'a str,
    /// Number of fds after stdio that the container inherits (`--preserve-fds`).
    pub preserve_fds: u32,
    /// True when the runtime cloned init with the namespace flags itself.
    pub fast: bool,
    /// Join a new session keyring named after the container (runc's default).
    pub new_keyring: bool,
    /// With `process.terminal`: the connected console socket and the rootfs path.
    pub console: Option<(&'a OwnedFd, &'a CStr)>,
    /// Unshare the cgroup namespace in init, once it is in its cgroup (it was not
    /// created at clone time).
    pub late_cgroupns: bool,
}

/// A failed step: errno plus a fixed-size description.
pub(crate) struct StepError(pub(crate) i32, pub(crate) Detail);

pub(crate) type Step<T> = Result<T, StepError>;

pub(crate) fn fail(what: &str, obj: &[u8]) -> impl FnOnce(io::Error) -> StepError {
    let d = Detail::from_parts(&[what.as_bytes(), b" ", obj]);
    move |e| StepError(e.raw_os_error().unwrap_or(libc::EIO), d)
}

fn fail_msg(e: &dyn std::error::Error, errno: Option<i32>) -> StepError {
    let (found, text) = crate::errno_and_text(e);
    StepError(
        errno.or(found).unwrap_or(libc::EINVAL),
        Detail::from_parts(&[text.as_bytes()]),
    )
}

/// Entry point of the first child. Never returns.
pub fn child_main(plan: &InitPlan, cx: &InitContext<'_>) -> ! {
    for fd in cx.close_now {
        // SAFETY: these descriptors belong to the runtime's state lock; the child must
        // not keep the lock held, and nothing in the child uses them.
        unsafe { libc::close(*fd) };
    }
    let result = if cx.fast {
        init_main(plan, cx)
    } else {
        join_then_fork(plan, cx)
    };
    match result {
        Ok(never) => match never {},
        Err(StepError(errno, detail)) => {
            let _ = cx.channel.send(Message::Failed(errno, detail));
            sys::exit_now(1)
        }
    }
}

/// The joining path's first child.
fn join_then_fork(plan: &InitPlan, cx: &InitContext<'_>) -> Step<std::convert::Infallible> {
    for j in &plan.joins {
        j.join().map_err(fail(
            "join namespace",
            j.path.as_os_str().as_encoded_bytes(),
        ))?;
    }
    if plan.new_ns & libc::CLONE_NEWUSER != 0 {
        sys::unshare(libc::CLONE_NEWUSER).map_err(fail("unshare", b"user namespace"))?;
        userns_handshake(cx)?;
    }
    let mut rest = plan.new_ns & !libc::CLONE_NEWUSER;
    if cx.late_cgroupns {
        rest &= !libc::CLONE_NEWCGROUP;
    }
    if rest != 0 {
        sys::unshare(rest).map_err(fail("unshare", b"namespaces"))?;
    }
    if !plan.time_offsets.is_empty() {
        let text = plan.time_offsets.text();
        sys::write_file(c"/proc/self/timens_offsets", text.as_bytes())
            .map_err(fail("write", b"/proc/self/timens_offsets"))?;
    }
    match sys::clone_fork(libc::CLONE_PARENT as u64, None).map_err(fail("fork", b"init"))? {
        Forked::Child => init_main(plan, cx),
        Forked::Parent(pid) => {
            let _ = cx.channel.send(Message::InitPid(pid));
            sys::exit_now(0)
        }
    }
}

fn userns_handshake(cx: &InitContext<'_>) -> Step<()> {
    cx.channel
        .send(Message::UserNsCreated)
        .map_err(fail("send", b"UserNsCreated"))?;
    cx.channel
        .expect(Message::MapsWritten)
        .map_err(fail("wait for", b"id maps"))?;
    // Become root of the new user namespace (the maps are in place now).
    sys::setresgid(0).map_err(fail("setresgid", b"0 in the user namespace"))?;
    sys::setresuid(0).map_err(fail("setresuid", b"0 in the user namespace"))?;
    // Changing credentials cleared the dumpable flag, which hands /proc/self to the
    // host's root, unmapped here: restore it so init can write its own /proc files.
    sys::prctl(libc::PR_SET_DUMPABLE, 1, 0)
        .map(drop)
        .map_err(fail("set", b"dumpable"))
}

/// State JSON for hooks run by init.
fn hook_state(cx: &InitContext<'_>, pid: i32, status: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": "1.2.0", "id": cx.id, "status": status, "pid": pid, "bundle": cx.bundle,
    }))
    .expect("state serializes")
}

fn run_hooks(kind: &str, hooks: &[oci_spec::runtime::Hook], state: &[u8]) -> Step<()> {
    for (i, h) in hooks.iter().enumerate() {
        if let Err(e) = crate::hooks::run(h, state) {
            let text = format!(
                "{kind} hook #{i} `{}`: {}",
                h.path().display(),
                crate::error_chain(&e)
            );
            return Err(StepError(libc::EIO, Detail::from_parts(&[text.as_bytes()])));
        }
    }
    Ok(())
}

/// init proper: from the new namespaces to exec.
fn init_main(plan: &InitPlan, cx: &InitContext<'_>) -> Step<std::convert::Infallible> {
    let ch = cx.channel;
    if cx.console.is_some() {
        // The pty becomes init's stdio at start; until then init must not hold the
        // caller's: containerd's shim reads `create`'s output to EOF (runc's init has
        // /dev/null there), and would wait for the container to exit.
        null_stdio().map_err(fail("open", b"/dev/null as stdio"))?;
    }
    // A session and process group of its own, as runc's and crun's init have: conmon
    // ends a `podman run --timeout` container with kill(-pgid), which would otherwise
    // hit conmon itself before it records the exit.
    sys::setsid().map_err(fail("setsid", b"for init"))?;
    if cx.fast && plan.new_ns & libc::CLONE_NEWUSER != 0 {
        userns_handshake(cx)?;
    }
    // The cgroup mounts read /proc/self/cgroup, and nothing init starts may escape
    // the limits: wait until the runtime has put init in its cgroup.
    ch.send(Message::NeedCgroup)
        .map_err(fail("send", b"NeedCgroup"))?;
    ch.expect(Message::Continue)
        .map_err(fail("wait for", b"the cgroup"))?;
    if cx.late_cgroupns {
        sys::unshare(libc::CLONE_NEWCGROUP).map_err(fail("unshare", b"cgroup namespace"))?;
    }
    if plan.new_ns & libc::CLONE_NEWNET != 0 {
        sys::loopback_up().map_err(fail("set up", b"lo in the new network namespace"))?;
    }
    if let Some(h) = &plan.hostname {
        sys::sethostname(h).map_err(fail("sethostname", h))?;
    }
    if let Some(d) = &plan.domainname {
        sys::setdomainname(d).map_err(fail("setdomainname", d))?;
    }
    plan.rootfs.mount_all().map_err(|e| fail_msg(&e, None))?;

    // The runtime runs prestart and createRuntime hooks now, then tells init its pid.
    ch.send(Message::MountsReady)
        .map_err(fail("send", b"MountsReady"))?;
    let host_pid = match ch.recv().map_err(fail("wait for", b"the runtime"))? {
        Some(Message::InitPid(p)) => p,
        _ => {
            return Err(StepError(
                libc::EPROTO,
                Detail::from_parts(&[b"the runtime gave up"]),
            ));
        }
    };
    ch.expect(Message::Continue)
        .map_err(fail("wait for", b"the runtime's hooks"))?;
    if !plan.create_container_hooks.is_empty() {
        run_hooks(
            "createContainer",
            &plan.create_container_hooks,
            &hook_state(cx, host_pid, "creating"),
        )?;
    }

    // The terminal: made in the container's devpts while its path is still reachable.
    let console_slave = match cx.console {
        Some((socket, rootfs)) => {
            let pty = cella_isolate::console::open_pty(rootfs, plan.process.console_size).map_err(
                fail(
                    "open a pty in",
                    b"/dev/pts of the container (terminal needs a devpts mount)",
                ),
            )?;
            cella_isolate::console::send_master(socket, &pty.master)
                .map_err(fail("send the pty master to", b"--console-socket"))?;
            plan.rootfs
                .mount_console(&pty.slave_path)
                .map_err(|e| fail_msg(&e, None))?;
            Some(pty.slave)
        }
        None => None,
    };

    // The seccomp agent's socket is a host path: connect before pivot_root.
    let listener = match &plan.seccomp {
        Some(s) if s.program.needs_notify() => {
            let path = s.listener.as_deref().unwrap_or(std::path::Path::new(""));
            let sock = cella_seccomp::connect_listener(path).map_err(|e| fail_msg(&e, None))?;
            let state = seccomp_state(cx, host_pid, s.metadata.as_deref())?;
            Some((sock, state))
        }
        _ => None,
    };

    plan.rootfs.pivot().map_err(|e| fail_msg(&e, None))?;
    for (path, value) in &plan.sysctls {
        sys::write_file(path, value).map_err(fail("write", path.to_bytes()))?;
    }
    plan.rootfs.finish().map_err(|e| fail_msg(&e, None))?;

    if cx.new_keyring {
        join_session_keyring(cx.id)?;
    }
    let p = &plan.process;
    let exe = find_program(p)?;
    let home = home_if_unset(p);
    set_process_attrs(p)?;
    sys::chdir(&p.cwd).map_err(fail("chdir to process.cwd", p.cwd.to_bytes()))?;
    check_cwd_inside(b"process.cwd")?;
    let setgroups_allowed = plan.new_ns & libc::CLONE_NEWUSER == 0 || setgroups_allowed();
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while init
    // still has it. With no_new_privs, load it as late as errors can still reach the
    // runtime, so the fewest of init's own syscalls run under it.
    if !p.no_new_privs {
        install_seccomp(plan, listener.as_ref())?;
    }
    p.user
        .switch(&p.caps, setgroups_allowed)
        .map_err(fail("switch to", b"process.user"))?;
    if p.no_new_privs {
        cella_isolate::creds::set_no_new_privs().map_err(fail("set", b"no_new_privs"))?;
        install_seccomp(plan, listener.as_ref())?;
    }
    drop(listener);

    ch.send(Message::Ready).map_err(fail("send", b"Ready"))?;
    // Block until `start` writes to exec.fifo.
    let mut byte = [0u8; 1];
    match sys::read(cx.fifo.as_raw_fd(), &mut byte) {
        Ok(1) => {}
        _ => sys::exit_now(1),
    }
    if !plan.start_container_hooks.is_empty() {
        let state = hook_state(cx, host_pid, "running");
        if run_hooks("startContainer", &plan.start_container_hooks, &state).is_err() {
            sys::exit_now(1);
        }
    }
    if let Some(slave) = &console_slave
        && cella_isolate::console::become_console(slave).is_err()
    {
        sys::exit_now(1);
    }
    reset_signals();
    let _ = sys::cloexec_from(3 + cx.preserve_fds);
    let argv: Vec<*const libc::c_char> = p
        .args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = p
        .env
        .iter()
        .chain(home.as_ref())
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let _ = sys::execve(&exe, &argv, &envp);
    // Nobody listens on the channel any more: say it on the container's stderr.
    let msg = b"cella: exec of the container process failed\n";
    // SAFETY: writing a static buffer to fd 2.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    sys::exit_now(127)
}

/// Points stdin, stdout and stderr at /dev/null.
fn null_stdio() -> io::Result<()> {
    use sys::AsFdRef;
    let null = sys::open(c"/dev/null", libc::O_RDWR | libc::O_CLOEXEC, 0)?;
    for fd in 0..3 {
        sys::dup2(null.as_fd_ref(), fd)?;
    }
    Ok(())
}

/// Loads the filter; with SCMP_ACT_NOTIFY, hands the listener fd to the agent.
fn install_seccomp(
    plan: &InitPlan,
    listener: Option<&(std::os::unix::net::UnixStream, Vec<u8>)>,
) -> Step<()> {
    let Some(s) = &plan.seccomp else {
        return Ok(());
    };
    let notify = s.program.install().map_err(|e| fail_msg(&e, None))?;
    if let (Some(fd), Some((sock, state))) = (notify, listener) {
        use std::os::fd::AsFd;
        let path = s.listener.as_deref().unwrap_or(std::path::Path::new(""));
        cella_seccomp::send_over(sock.as_fd(), path, fd.as_fd(), state)
            .map_err(|e| fail_msg(&e, None))?;
    }
    Ok(())
}

/// The container state the seccomp agent receives (runc's ContainerProcessState).
fn seccomp_state(cx: &InitContext<'_>, pid: i32, metadata: Option<&str>) -> Step<Vec<u8>> {
    let state: oci_spec::runtime::State = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.2.0", "id": cx.id, "status": "creating", "pid": pid, "bundle": cx.bundle,
    }))
    .map_err(|e| fail_msg(&e, None))?;
    cella_seccomp::process_state_json(&state, pid, metadata).map_err(|e| fail_msg(&e, None))
}

/// Gives the container a session keyring of its own, so it cannot read the keys of the
/// host's session (EDQUOT or ENOSYS from a kernel without keyrings are not fatal).
fn join_session_keyring(id: &str) -> Step<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_int = 1;
    let name = CString::new(format!("_ses.{id}")).expect("ids have no NUL");
    // SAFETY: `name` is a NUL-terminated string alive for the call.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EDQUOT)) {
            return Err(fail("join", b"a new session keyring")(e));
        }
    }
    Ok(())
}

/// Whether /proc/self/setgroups allows setgroups(2) (it is "deny" in some user
/// namespaces).
pub(crate) fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() == "allow")
        .unwrap_or(true)
}

/// `HOME=<dir>` for the process's user when the config does not set HOME, as runc and
/// crun do: the user's entry in the container's /etc/passwd, else `/`. Runs after
/// pivot_root, so the file read is the container's.
fn home_if_unset(p: &ProcessPlan) -> Option<CString> {
    if p.env.iter().any(|e| e.to_bytes().starts_with(b"HOME=")) {
        return None;
    }
    let uid = p.user.uid.to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let home = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 6 && f[2] == uid)
        .map(|f| f[5].to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    CString::new(format!("HOME={home}")).ok()
}

/// Resolves args[0] inside the container the way execvp would, so a missing program is
/// reported at create time (as runc does) rather than after start.
pub(crate) fn find_program(p: &ProcessPlan) -> Step<CString> {
    let name = p.args[0].to_bytes();
    let is_exec = |c: &CStr| {
        // SAFETY: `c` is a NUL-terminated path alive for the call.
        let ok = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
        use std::os::unix::ffi::OsStrExt;
        ok && std::fs::metadata(std::ffi::OsStr::from_bytes(c.to_bytes()))
            .is_ok_and(|m| m.is_file())
    };
    if name.contains(&b'/') {
        let c = p.args[0].clone();
        if is_exec(&c) {
            return Ok(c);
        }
        // access() fails with errno; a directory or special file passes access() but
        // is no program: call that EACCES, as execve would.
        let e = io::Error::last_os_error();
        let e = if e.raw_os_error() == Some(0) {
            io::Error::from_raw_os_error(libc::EACCES)
        } else {
            e
        };
        return Err(fail("exec", name)(e));
    }
    for dir in p.path_var.split(|b| *b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let mut full = dir.to_vec();
        full.push(b'/');
        full.extend_from_slice(name);
        if let Ok(c) = CString::new(full)
            && is_exec(&c)
        {
            return Ok(c);
        }
    }
    Err(StepError(
        libc::ENOENT,
        Detail::from_parts(&[b"exec: \"", name, b"\": executable file not found in $PATH"]),
    ))
}

/// oom_score_adj, rlimits, I/O priority, scheduler, LSM labels: all before the user
/// switch, while init still holds the privileges they may need.
fn set_process_attrs(p: &ProcessPlan) -> Step<()> {
    if let Some(adj) = p.oom_score_adj {
        cella_isolate::creds::set_oom_score_adj(adj)
            .map_err(fail("write", b"/proc/self/oom_score_adj"))?;
    }
    for r in &p.rlimits {
        r.apply()
            .map_err(fail("setrlimit process.rlimits", r.name().as_bytes()))?;
    }
    if let Some((class, level)) = p.io_priority {
        cella_isolate::creds::set_io_priority(class, level)
            .map_err(fail("ioprio_set", b"process.ioPriority"))?;
    }
    if let Some(s) = &p.scheduler {
        cella_isolate::creds::set_scheduler(s)
            .map_err(fail("sched_setattr", b"process.scheduler"))?;
    }
    if let Some(a) = &p.apparmor {
        sys::write_file(c"/proc/self/attr/apparmor/exec", a.to_bytes())
            .map_err(fail("write", b"/proc/self/attr/apparmor/exec"))?;
    }
    if let Some(l) = &p.selinux_label {
        sys::write_file(c"/proc/self/attr/exec", l.to_bytes())
            .map_err(fail("write", b"/proc/self/attr/exec"))?;
    }
    Ok(())
}

/// Refuses a working directory outside the container's root (runc CVE-2024-21626: a
/// cwd such as /proc/self/fd/N could name a directory of the host through a descriptor
/// the runtime still holds). The kernel's getcwd says "(unreachable)" for such a cwd.
pub(crate) fn check_cwd_inside(field: &[u8]) -> Step<()> {
    let mut buf = [0u8; 4096];
    // SAFETY: the kernel writes at most `buf.len()` bytes into the live buffer.
    let n = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if n < 0 {
        return Err(fail("getcwd", b"")(io::Error::last_os_error()));
    }
    if buf.starts_with(b"(unreachable)") {
        return Err(StepError(
            libc::EPERM,
            Detail::from_parts(&[
                field,
                b": the working directory is outside the container's root",
            ]),
        ));
    }
    Ok(())
}

/// Default dispositions and an empty mask: the runtime ignores SIGPIPE (as every Rust
/// program does) and ignored signals would stay ignored across exec.
pub(crate) fn reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting the default disposition has no memory effects.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: `set` is a live sigset_t initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Whether `plan` can be started by a single clone with every namespace flag.
pub fn fast_path(plan: &InitPlan) -> bool {
    plan.joins.is_empty() && plan.time_offsets.is_empty()
}
