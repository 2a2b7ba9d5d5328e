//! The sandbox's two processes, between clone and exec: the init (pid 1 of the new pid
//! namespace: mounts, then forks the program and reaps until it ends) and the program
//! (limits, no capabilities, no_new_privs, seccomp, execve).
//!
//! Both run single-threaded copies of the supervisor (which is single-threaded when it
//! forks), so the few allocations here cannot meet a lock held by another thread. Every
//! failure is reported over the wire as `Failed(errno, step)` and the process exits.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use cella_isolate::caps::{self, CapSets};
use cella_isolate::creds::{self, Rlimit, User};
use cella_isolate::landlock::PreparedRuleset;
use cella_isolate::sys as isys;
use cella_seccomp::SeccompProgram;

use crate::fs::FsPlan;
use crate::sys;
use crate::wire::{Message, Text, Wire};

/// The uid and gid the program has inside the sandbox.
pub const SANDBOX_ID: u32 = 1000;

/// Exit code of a sandbox process that failed before exec (after reporting why).
const FAILED: i32 = 126;

/// Everything the two processes need, prepared by the supervisor before the fork.
pub(crate) struct ChildPlan {
    pub fs: FsPlan,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// PATH directories to search when argv[0] has no slash.
    pub path_dirs: Vec<CString>,
    pub rlimits: Vec<Rlimit>,
    pub seccomp: Option<SeccompProgram>,
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// setgroups(2) is allowed in the user namespace (the supervisor is root).
    pub setgroups: bool,
    /// `--landlock`: the ruleset (made before the fork) and the rules to add once the
    /// sandbox's own mounts exist.
    pub landlock: Option<LandlockPlan>,
    /// `--core-sched`: a core-scheduling cookie for the program and its children.
    pub core_sched: bool,
}

/// A Landlock ruleset whose path rules name places inside the sandbox.
pub(crate) struct LandlockPlan {
    pub ruleset: PreparedRuleset,
    /// (path inside the sandbox, access rights).
    pub rules: Vec<(CString, u64)>,
}

fn fail(wire: &Wire, e: io::Error, step: Text) -> ! {
    let _ = wire.send(Message::Failed(e.raw_os_error().unwrap_or(0), step));
    isys::exit_now(FAILED)
}

fn text(s: &str) -> Text {
    Text::from_parts(&[s.as_bytes()])
}

/// The init: runs in the new namespaces, as pid 1. Never returns.
pub(crate) fn init_main(plan: &ChildPlan, wire: &Wire) -> ! {
    // If the supervisor dies, so does the sandbox (and with its init, all of it).
    if let Err(e) = isys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0) {
        fail(wire, e, text("set the parent-death signal"));
    }
    match wire.recv() {
        Ok(Some((Message::Go, _))) => {}
        _ => isys::exit_now(FAILED),
    }
    // Become the sandbox user, keeping every capability of the new user namespace for
    // the mounts below; the program drops them all.
    let last = caps::last_cap();
    let all = if last >= 63 {
        u64::MAX
    } else {
        (1u64 << (last + 1)) - 1
    };
    let keep = CapSets {
        bounding: all,
        effective: all,
        permitted: all,
        inheritable: 0,
        ambient: 0,
    };
    let user = User {
        uid: SANDBOX_ID,
        gid: SANDBOX_ID,
        additional_gids: Vec::new(),
        umask: Some(0o022),
    };
    if let Err(e) = user.switch(&keep, plan.setgroups) {
        fail(wire, e, text("switch to the sandbox user"));
    }
    if let Err(e) = isys::sethostname(b"sandbox") {
        fail(wire, e, text("set the hostname"));
    }
    if let Err(e) = sys::loopback_up() {
        fail(wire, e, text("bring the loopback up"));
    }
    if let Err((e, step)) = plan.fs.apply() {
        fail(wire, e, step);
    }
    match isys::open(plan.fs.state_dir(), libc::O_RDONLY | libc::O_DIRECTORY, 0) {
        Ok(fd) => {
            if let Err(e) = wire.send_fd(Message::StateDir, fd.as_fd()) {
                fail(wire, e, text("send the state directory"));
            }
        }
        Err(e) => fail(wire, e, text("open the state directory")),
    }
    if let Err((e, step)) = plan.fs.pivot() {
        fail(wire, e, step);
    }
    // Nothing in the sandbox may attach to the init.
    if let Err(e) = isys::prctl(libc::PR_SET_DUMPABLE, 0, 0) {
        fail(wire, e, text("make the init non-dumpable"));
    }
    // The supervisor moved the init into the cgroup while it mounted (a v1 migration
    // waits for an RCU grace period); the program must be born inside it.
    match wire.recv() {
        Ok(Some((Message::InCgroup, _))) => {}
        _ => isys::exit_now(FAILED),
    }
    let program = match isys::clone_fork(0, None) {
        Ok(isys::Forked::Child) => program_main(plan, wire),
        Ok(isys::Forked::Parent(pid)) => pid,
        Err(e) => fail(wire, e, text("fork the program")),
    };
    // The init keeps no end of the program's stdio: the supervisor sees EOF when the
    // last program process closes them.
    for fd in [
        Some(plan.stdout.as_raw_fd()),
        Some(plan.stderr.as_raw_fd()),
        plan.stdin.as_ref().map(|f| f.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    {
        close_raw(fd);
    }
    loop {
        match isys::waitpid(-1, 0) {
            Ok((pid, status)) if pid == program => {
                let _ = wire.send(Message::Exited(status));
                isys::exit_now(0);
            }
            Ok(_) => {}
            Err(_) => isys::exit_now(0),
        }
    }
}

fn close_raw(fd: RawFd) {
    // SAFETY: closing a descriptor number this process inherited and no longer uses; no
    // Rust object refers to it afterwards (the process only reaps and exits).
    unsafe { libc::close(fd) };
}

/// The program: limits, stdio, no privileges, seccomp, execve. Never returns.
fn program_main(plan: &ChildPlan, wire: &Wire) -> ! {
    sys::reset_signals();
    // Its own session: no controlling terminal to push input into (TIOCSTI).
    if let Err(e) = sys::setsid() {
        fail(wire, e, text("setsid"));
    }
    // A cgroup namespace rooted at the sandbox's own cgroup (the init is already in it).
    if let Err(e) = isys::unshare(libc::CLONE_NEWCGROUP) {
        fail(wire, e, text("unshare the cgroup namespace"));
    }
    if let Some(fd) = &plan.stdin
        && let Err(e) = isys::dup2(fd.as_fd(), 0)
    {
        fail(wire, e, text("set up stdin"));
    }
    if let Err(e) = isys::dup2(plan.stdout.as_fd(), 1) {
        fail(wire, e, text("set up stdout"));
    }
    if let Err(e) = isys::dup2(plan.stderr.as_fd(), 2) {
        fail(wire, e, text("set up stderr"));
    }
    if let Err(e) = isys::chdir(&plan.fs.cwd) {
        fail(
            wire,
            e,
            Text::from_parts(&[b"chdir to `", plan.fs.cwd.to_bytes(), b"`"]),
        );
    }
    // The memory hog, not the init, is what the OOM killer should pick.
    if let Ok(fd) = isys::open(c"/proc/self/oom_score_adj", libc::O_WRONLY, 0) {
        let _ = isys::write_all(fd.as_fd(), b"1000");
    }
    for r in &plan.rlimits {
        if let Err(e) = r.apply() {
            fail(wire, e, text("set an rlimit"));
        }
    }
    if let Err(e) = isys::cloexec_from(3) {
        fail(wire, e, text("mark descriptors close-on-exec"));
    }
    let none = CapSets::default();
    let last = caps::last_cap();
    if let Err(e) = none.drop_bounding(last).and_then(|()| none.apply(last)) {
        fail(wire, e, text("drop every capability"));
    }
    if let Err(e) = creds::set_no_new_privs() {
        fail(wire, e, text("set no_new_privs"));
    }
    if plan.core_sched
        && let Err(e) = cella_isolate::coresched::create_for_self_group()
    {
        fail(
            wire,
            io::Error::other(e),
            text("create a core-scheduling cookie"),
        );
    }
    // Before seccomp, whose allowlist has no Landlock calls.
    if let Some(l) = &plan.landlock {
        for (path, access) in &l.rules {
            if let Err(e) = l.ruleset.allow_path_in_child(path, *access) {
                fail(
                    wire,
                    e.source,
                    Text::from_parts(&[b"add the landlock rule for `", path.to_bytes(), b"`"]),
                );
            }
        }
        if let Err(e) = l.ruleset.restrict_self() {
            fail(
                wire,
                io::Error::other(e),
                text("apply the landlock ruleset"),
            );
        }
    }
    if let Some(prog) = &plan.seccomp {
        match prog.install() {
            Ok(Some(listener)) => {
                if let Err(e) = wire.send_fd(Message::Listener, listener.as_fd()) {
                    fail(wire, e, text("send the seccomp listener"));
                }
            }
            Ok(None) => {}
            Err(e) => {
                let errno = match &e {
                    cella_seccomp::SeccompError::Install(io) => io.raw_os_error().unwrap_or(0),
                    _ => 0,
                };
                fail(
                    wire,
                    io::Error::from_raw_os_error(errno),
                    text("load the seccomp filter"),
                );
            }
        }
    }
    exec(plan, wire)
}

fn exec(plan: &ChildPlan, wire: &Wire) -> ! {
    let mut argv: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = plan.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let name = plan.argv[0].as_c_str();
    if name.to_bytes().contains(&b'/') {
        let e = isys::execve(name, &argv, &envp);
        fail(wire, e, exec_text(name));
    }
    let mut first_err: Option<io::Error> = None;
    let mut buf = [0u8; 4096];
    for dir in &plan.path_dirs {
        let Some(path) = join(&mut buf, dir, name) else {
            continue;
        };
        let e = isys::execve(path, &argv, &envp);
        if e.raw_os_error() != Some(libc::ENOENT) && first_err.is_none() {
            first_err = Some(e);
        }
    }
    fail(
        wire,
        first_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::ENOENT)),
        exec_text(name),
    )
}

fn exec_text(name: &CStr) -> Text {
    Text::from_parts(&[b"exec `", name.to_bytes(), b"`"])
}

/// `dir/name` as a C string in `buf`, if it fits.
fn join<'a>(buf: &'a mut [u8; 4096], dir: &CStr, name: &CStr) -> Option<&'a CStr> {
    let d = dir.to_bytes();
    let n = name.to_bytes();
    let len = d.len() + 1 + n.len();
    if len + 1 > buf.len() {
        return None;
    }
    buf[..d.len()].copy_from_slice(d);
    buf[d.len()] = b'/';
    buf[d.len() + 1..len].copy_from_slice(n);
    buf[len] = 0;
    CStr::from_bytes_with_nul(&buf[..=len]).ok()
}
