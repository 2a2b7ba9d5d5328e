//! `exec`: run another process in a created or running container, as runc does.
//!
//! ```text
//!  runtime                     first child                    process
//!     | clone3 (INTO_CGROUP on v2)  |                             |
//!     |                             | cgroup.procs (v1/hybrid)    |
//!     |                             | setns: user first, then all |
//!     |                             | fork (CLONE_PARENT) ------> | in the pid/time namespace
//!     |  <-- InitPid(pid) ----------| exits                       |
//!     |                             |      fchdir(root) + chroot, cwd, pty, rlimits,
//!     |                             |      seccomp, user + caps, no_new_privs, execve
//!     |  <-- Failed(errno, text) ---------------------------------| on any failed step
//!     |  EOF: the process exec'd (the channel is close-on-exec)   |
//! ```
//!
//! The container's root is opened through `/proc/<init>/root` before the mount namespace
//! is joined, and the process changes into it with fchdir + chroot, so its root and cwd
//! are never a directory of the host (runc CVE-2024-21626).

// Step errors carry a fixed-size text so the child never allocates to fail.
#![allow(clippy::result_large_err)]

use crate::config::{self, ProcessPlan};
use crate::container::{SignalForwarder, write_pid_file};
use crate::error::{Error, Result};
use crate::state::Status;
use crate::{Runtime, Warnings};
use cella_cgroups::{Cgroup, Layout};
use cella_isolate::channel::{Channel, Detail, Message};
use cella_isolate::namespaces::{self, NsJoin, NsKind};
use cella_isolate::sys::{self, Forked};
use serde_json::{Value, json};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

/// What `exec` runs and how, as runc's flags name it.
#[derive(Clone, Debug, Default)]
pub struct ExecOptions {
    /// An OCI `process` JSON file; when given, `args` and the process flags are ignored.
    pub process: Option<PathBuf>,
    /// The program and its arguments.
    pub args: Vec<String>,
    /// Give the process a pty (needs `console_socket`).
    pub tty: bool,
    /// UNIX socket that receives the pty master.
    pub console_socket: Option<PathBuf>,
    /// Working directory inside the container.
    pub cwd: Option<String>,
    /// `KEY=VALUE` pairs added to (or replacing those of) the config's environment.
    pub env: Vec<String>,
    /// uid to run as.
    pub uid: Option<u32>,
    /// gid to run as.
    pub gid: Option<u32>,
    /// Supplementary groups (replace the config's when not empty).
    pub additional_gids: Vec<u32>,
    /// Capabilities added to every set.
    pub caps: Vec<String>,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// Return once the process runs instead of waiting for it.
    pub detach: bool,
    /// Write the process's pid here.
    pub pid_file: Option<PathBuf>,
    /// Pass this many fds after stdio to the process.
    pub preserve_fds: u32,
    /// AppArmor profile.
    pub apparmor: Option<String>,
    /// SELinux process label.
    pub process_label: Option<String>,
}

/// Errors of `exec`.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Before the process existed: state, config, namespaces, cgroup.
    #[error(transparent)]
    Runtime(#[from] Error),
    /// A step of the new process failed; `detail` names the step and its object.
    #[error("exec: {detail}")]
    Process {
        /// Which step failed, and on what.
        detail: String,
        /// The errno it failed with.
        #[source]
        source: io::Error,
    },
}

/// How an exec ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecOutcome {
    /// Detached: the process runs with this pid.
    Detached(i32),
    /// Waited for: its status as a shell shows it (128 + signal when killed).
    Exited(u8),
}

/// The `process` of config.json with the exec flags applied, as JSON.
fn process_json(spec_process: Option<&oci_spec::runtime::Process>, o: &ExecOptions) -> Value {
    let mut p = spec_process
        .and_then(|p| serde_json::to_value(p).ok())
        .unwrap_or_else(|| json!({"cwd": "/", "user": {"uid": 0, "gid": 0}}));
    p["args"] = json!(o.args);
    p["terminal"] = json!(o.tty);
    if !o.tty
        && let Some(m) = p.as_object_mut()
    {
        m.remove("consoleSize");
    }
    let mut env: Vec<String> = p["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for kv in &o.env {
        let key = kv.split('=').next().unwrap_or(kv);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    p["env"] = json!(env);
    if let Some(cwd) = &o.cwd {
        p["cwd"] = json!(cwd);
    }
    if let Some(uid) = o.uid {
        p["user"]["uid"] = json!(uid);
        // runc: a uid without a gid runs with gid 0.
        p["user"]["gid"] = json!(o.gid.unwrap_or(0));
    }
    if !o.additional_gids.is_empty() {
        p["user"]["additionalGids"] = json!(o.additional_gids);
    }
    if !o.caps.is_empty() {
        if !p["capabilities"].is_object() {
            p["capabilities"] = json!({});
        }
        for set in [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ] {
            let mut names: Vec<Value> = p["capabilities"][set]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in &o.caps {
                let up = c.to_ascii_uppercase();
                let full = if up.starts_with("CAP_") {
                    up
                } else {
                    format!("CAP_{up}")
                };
                if !names.contains(&json!(full)) {
                    names.push(json!(full));
                }
            }
            p["capabilities"][set] = json!(names);
        }
    }
    if o.no_new_privs {
        p["noNewPrivileges"] = json!(true);
    }
    if let Some(a) = &o.apparmor {
        p["apparmorProfile"] = json!(a);
    }
    if let Some(l) = &o.process_label {
        p["selinuxLabel"] = json!(l);
    }
    p
}

/// Parses a `process` JSON document, naming the offending field in errors.
fn parse_process(file: &str, bytes: &[u8]) -> Result<oci_spec::runtime::Process> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." || field == "?" {
            "(document)".to_owned()
        } else {
            field
        };
        Error::Config {
            file: file.to_owned(),
            field,
            msg: e.into_inner().to_string(),
        }
    })
}

/// Everything the children need, prepared in the runtime.
struct ExecPlan {
    process: ProcessPlan,
    joins: Vec<NsJoin>,
    in_user_ns: bool,
    root: OwnedFd,
    seccomp: Option<cella_seccomp::SeccompProgram>,
    /// The cgroup the first child writes itself into (not on pure v2, where clone3
    /// puts it there).
    cgroup_by_pid: Option<Cgroup>,
    console: Option<OwnedFd>,
    preserve_fds: u32,
    /// With SCMP_ACT_NOTIFY: where the process sends its listener fd back to the
    /// runtime, which hands it to the agent with the process's host pid.
    notify_back: Option<OwnedFd>,
}

/// The seccomp agent of an exec'd process: connected before the fork (a host path), and
/// sent the listener fd once the process has it.
struct NotifyAgent {
    path: PathBuf,
    metadata: Option<String>,
    sock: std::os::unix::net::UnixStream,
    ours: OwnedFd,
}

impl Runtime {
    /// Runs a new process in container `id` (created or running): joins its
    /// namespaces and cgroup, and waits for the process unless `opts.detach`.
    pub fn exec(
        &self,
        id: &str,
        opts: &ExecOptions,
    ) -> std::result::Result<(ExecOutcome, Warnings), ExecError> {
        // The v1 migration's grace period runs while the plan is made (see the primer).
        let primer = cella_cgroups::AttachPrimer::start();
        let locked = self.store_open(id)?;
        let st = locked.load()?.ok_or_else(|| Error::BadStatus {
            id: id.to_owned(),
            status: "creating",
            what: "creation did not finish; delete it with --force",
        })?;
        let status = st.status(&locked);
        if !matches!(status, Status::Created | Status::Running) {
            return Err(Error::BadStatus {
                id: id.to_owned(),
                status: status.as_str(),
                what: "only a created or running container can run a new process",
            }
            .into());
        }
        let spec = config::load(&st.bundle)?;
        let process = match &opts.process {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(Error::io("read", path))?;
                parse_process(&path.display().to_string(), &bytes)?
            }
            None => {
                if opts.args.is_empty() {
                    return Err(Error::Config {
                        file: "exec".into(),
                        field: "args".into(),
                        msg: "name the program to run (or pass --process)".into(),
                    }
                    .into());
                }
                let v = process_json(spec.process().as_ref(), opts);
                parse_process("exec", &serde_json::to_vec(&v).expect("json serializes"))?
            }
        };
        let mut warnings = Vec::new();
        // process_plan names config.json; the process came from elsewhere.
        let source = match &opts.process {
            Some(p) => p.display().to_string(),
            None => "exec".to_owned(),
        };
        let mut plan = config::process_plan(&process, &mut warnings).map_err(|e| match e {
            Error::Config { field, msg, .. } => Error::Config {
                file: source.clone(),
                field,
                msg,
            },
            e => e,
        })?;
        // In the foreground, a terminal needs no engine: cella relays it itself.
        let mut own_console = None;
        let console = match (&opts.console_socket, plan.terminal) {
            (Some(path), true) => Some(
                std::os::unix::net::UnixStream::connect(path)
                    .map_err(Error::io("connect to console socket", path))?
                    .into(),
            ),
            (None, true) if !opts.detach => {
                let pair =
                    crate::tty::ConsolePair::new().map_err(|e| Error::Sys("socketpair", e))?;
                let theirs = pair.theirs.try_clone().map_err(|e| Error::Sys("dup", e))?;
                own_console = Some(pair);
                // The process may ask its size at once: the pty is made with ours.
                plan.console_size = plan.console_size.or_else(crate::tty::window_size);
                Some(theirs)
            }
            (None, true) => {
                return Err(Error::Config {
                    file: "exec".into(),
                    field: "process.terminal".into(),
                    msg: "a detached process's terminal needs --console-socket".into(),
                }
                .into());
            }
            _ => None,
        };
        let mut agent = None;
        let mut notify_back = None;
        let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
            Some(s) => {
                let prog = cella_seccomp::compile(s).map_err(Error::from)?;
                if prog.needs_notify() {
                    // As for init, the agent gets the new process's listener (runc does
                    // the same for exec).
                    let path = s.listener_path().clone().unwrap_or_default();
                    let sock = cella_seccomp::connect_listener(&path).map_err(Error::from)?;
                    let (theirs, ours) = std::os::unix::net::UnixStream::pair()
                        .map_err(|e| Error::Sys("socketpair", e))?;
                    notify_back = Some(OwnedFd::from(theirs));
                    agent = Some(NotifyAgent {
                        path,
                        metadata: s.listener_metadata().clone(),
                        sock,
                        ours: ours.into(),
                    });
                }
                Some(prog)
            }
            None => None,
        };

        // The container's namespaces: every one that differs from ours, user first.
        let init = st.pid;
        let me = sys::getpid();
        let mut joins = Vec::new();
        for kind in NsKind::ALL {
            let theirs = match namespaces::ns_inode(init, kind) {
                Ok(i) => i,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::Sys("read the container's namespaces", e).into()),
            };
            if namespaces::ns_inode(me, kind).is_ok_and(|i| i == theirs) {
                continue;
            }
            let path = PathBuf::from(format!("/proc/{init}/ns/{}", kind.proc_name()));
            joins.push(NsJoin::open(kind, &path).map_err(Error::from)?);
        }
        let in_user_ns = joins.iter().any(|j| j.kind == NsKind::User);
        let root_path = format!("/proc/{init}/root");
        let root = sys::open(
            &CString::new(root_path.clone()).expect("no NUL"),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .map_err(Error::io("open the container's root", &root_path))?;

        // On pure v2 the first child is cloned straight into the cgroup.
        let cg = st.cgroup.clone();
        let cg_fd = match &cg {
            Some(c) if c.layout == Layout::Unified => c.open_unified_dir().map_err(Error::from)?,
            _ => None,
        };
        let xplan = ExecPlan {
            process: plan,
            joins,
            in_user_ns,
            root,
            seccomp,
            cgroup_by_pid: if cg_fd.is_some() { None } else { cg },
            console,
            preserve_fds: opts.preserve_fds,
            notify_back,
        };

        let fwd = (!opts.detach).then(SignalForwarder::block);
        let (parent, child) = Channel::pair().map_err(|e| Error::Sys("socketpair", e))?;
        primer.finish();
        let first = match sys::clone_fork(0, cg_fd.as_ref().map(|f| f.as_fd()))
            .map_err(|e| Error::Sys("clone", e))?
        {
            Forked::Child => {
                drop(parent);
                first_child(&xplan, &child)
            }
            Forked::Parent(pid) => pid,
        };
        drop(child);
        drop(xplan);
        let mut pid = None;
        let mut failed = None;
        loop {
            match parent.recv() {
                Ok(Some(Message::InitPid(p))) => {
                    let _ = sys::waitpid(first, 0);
                    pid = Some(p);
                }
                Ok(Some(Message::Failed(errno, detail))) => failed = Some((errno, detail)),
                Ok(Some(_)) | Ok(None) | Err(_) => break,
            }
        }
        // The first child exits right after its fork (or its failure): reap it. ECHILD
        // when InitPid already did.
        let _ = sys::waitpid(first, 0);
        if let Some((errno, detail)) = failed {
            if let Some(p) = pid {
                let _ = sys::kill(p, libc::SIGKILL);
                let _ = sys::waitpid(p, 0);
            }
            return Err(ExecError::Process {
                detail: detail.text(),
                source: io::Error::from_raw_os_error(errno),
            });
        }
        let Some(pid) = pid else {
            return Err(ExecError::Process {
                detail: "the first child exited without a word".into(),
                source: io::Error::other("no process"),
            });
        };
        if let Some(a) = agent {
            let sent = hand_to_agent(&a, &st, pid);
            if let Err(e) = sent {
                let _ = sys::kill(pid, libc::SIGKILL);
                let _ = sys::waitpid(pid, 0);
                return Err(e.into());
            }
        }
        // The process runs: the container's lock is no longer needed.
        drop(locked);
        if let Some(pf) = &opts.pid_file {
            write_pid_file(pf, pid)?;
        }
        let relay = match own_console {
            Some(pair) => Some(
                pair.receive()
                    .and_then(crate::tty::Relay::start)
                    .map_err(|e| Error::Sys("relay the process's terminal", e))?,
            ),
            None => None,
        };
        match fwd {
            None => Ok((ExecOutcome::Detached(pid), warnings)),
            Some(f) => {
                let code = f.wait_forwarding_with(pid, relay.as_ref());
                if let Some(r) = relay {
                    r.finish();
                }
                Ok((ExecOutcome::Exited(code), warnings))
            }
        }
    }

    fn store_open(&self, id: &str) -> Result<crate::state::Locked> {
        crate::state::Store::new(self.root()).open(id, false)
    }
}

/// A failed step of a child: errno plus a fixed-size description (init's type).
use crate::init::StepError as Fail;
use crate::init::{check_cwd_inside, fail, find_program, reset_signals, setgroups_allowed};

fn fail_msg(e: &dyn std::error::Error) -> Fail {
    let (errno, text) = crate::errno_and_text(e);
    Fail(
        errno.unwrap_or(libc::EINVAL),
        Detail::from_parts(&[text.as_bytes()]),
    )
}

/// The first child: cgroup, namespaces, then the fork that enters the pid and time
/// namespaces. Never returns.
fn first_child(x: &ExecPlan, ch: &Channel) -> ! {
    let r = (|| -> std::result::Result<std::convert::Infallible, Fail> {
        if let Some(cg) = &x.cgroup_by_pid {
            cg.add_process(sys::getpid()).map_err(|e| fail_msg(&e))?;
        }
        for j in &x.joins {
            j.join().map_err(fail(
                "join namespace",
                j.path.as_os_str().as_encoded_bytes(),
            ))?;
        }
        match sys::clone_fork(libc::CLONE_PARENT as u64, None).map_err(fail("fork", b"process"))? {
            Forked::Child => process_main(x, ch),
            Forked::Parent(pid) => {
                let _ = ch.send(Message::InitPid(pid));
                sys::exit_now(0)
            }
        }
    })();
    let Err(Fail(errno, detail)) = r;
    let _ = ch.send(Message::Failed(errno, detail));
    sys::exit_now(1)
}

/// The process, from the container's namespaces to execve. Never returns.
fn process_main(x: &ExecPlan, ch: &Channel) -> ! {
    match prepare_and_exec(x) {
        Ok(never) => match never {},
        Err(Fail(errno, detail)) => {
            let _ = ch.send(Message::Failed(errno, detail));
            sys::exit_now(1)
        }
    }
}

fn prepare_and_exec(x: &ExecPlan) -> std::result::Result<std::convert::Infallible, Fail> {
    let p = &x.process;
    enter_root(x.root.as_fd()).map_err(fail("enter", b"the container's root"))?;
    sys::chdir(&p.cwd).map_err(fail("chdir to", p.cwd.to_bytes()))?;
    check_cwd_inside(b"cwd")?;
    let slave = match &x.console {
        Some(sock) => {
            let pty = cella_isolate::console::open_pty(c"", p.console_size)
                .map_err(fail("open a pty in", b"/dev/pts/ptmx"))?;
            cella_isolate::console::send_master(sock, &pty.master)
                .map_err(fail("send the pty master to", b"--console-socket"))?;
            Some(pty.slave)
        }
        None => None,
    };
    let exe = find_program(p)?;
    for r in &p.rlimits {
        r.apply().map_err(fail("setrlimit", b"process.rlimits"))?;
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
    let setgroups_allowed = !x.in_user_ns || setgroups_allowed();
    // Without no_new_privs loading a filter needs CAP_SYS_ADMIN, which the user switch
    // may drop: load it before then.
    if !p.no_new_privs
        && let Some(s) = &x.seccomp
    {
        install_seccomp(x, s)?;
    }
    p.user
        .switch(&p.caps, setgroups_allowed)
        .map_err(fail("switch to", b"process.user"))?;
    if p.no_new_privs {
        cella_isolate::creds::set_no_new_privs().map_err(fail("set", b"no_new_privs"))?;
        if let Some(s) = &x.seccomp {
            install_seccomp(x, s)?;
        }
    }
    if let Some(slave) = &slave {
        cella_isolate::console::become_console(slave)
            .map_err(fail("make the pty", b"the controlling terminal"))?;
    }
    reset_signals();
    sys::cloexec_from(3 + x.preserve_fds).map_err(fail("close_range", b"inherited fds"))?;
    let argv: Vec<*const libc::c_char> = p
        .args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = p
        .env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let e = sys::execve(&exe, &argv, &envp);
    Err(fail("execve", exe.to_bytes())(e))
}

/// Loads the container's filter; a notify listener goes back to the runtime.
fn install_seccomp(
    x: &ExecPlan,
    s: &cella_seccomp::SeccompProgram,
) -> std::result::Result<(), Fail> {
    let notify = s.install().map_err(|e| fail_msg(&e))?;
    if let (Some(fd), Some(back)) = (notify, &x.notify_back) {
        sys::send_fd(back.as_fd(), b"seccomp", fd.as_fd())
            .map_err(fail("send", b"the seccomp listener to the runtime"))?;
    }
    Ok(())
}

/// Sends the exec'd process's listener fd to the agent, with the state runc sends.
fn hand_to_agent(a: &NotifyAgent, st: &crate::state::ContainerState, pid: i32) -> Result<()> {
    let fd = cella_isolate::console::recv_master(a.ours.as_fd())
        .map_err(|e| Error::Sys("receive the process's seccomp listener", e))?;
    let state: oci_spec::runtime::State = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.2.0", "id": st.id, "status": "running", "pid": pid,
        "bundle": st.bundle,
    }))
    .map_err(|e| Error::Sys("encode the container state", io::Error::other(e)))?;
    let json = cella_seccomp::process_state_json(&state, pid, a.metadata.as_deref())
        .map_err(Error::from)?;
    cella_seccomp::send_over(a.sock.as_fd(), &a.path, fd.as_fd(), &json).map_err(Error::from)
}

/// fchdir into the container's root (opened through /proc/<init>/root before the mount
/// namespace was joined) and chroot there.
fn enter_root(root: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `root` is an open directory descriptor for the duration of the call.
    sys::check(unsafe { libc::fchdir(root.as_raw_fd()) })?;
    // SAFETY: a static NUL-terminated path.
    sys::check(unsafe { libc::chroot(c".".as_ptr()) })?;
    sys::chdir(c"/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_apply_on_top_of_the_config_process() {
        let base: oci_spec::runtime::Process = serde_json::from_value(json!({
            "cwd": "/", "user": {"uid": 0, "gid": 0},
            "env": ["PATH=/bin", "A=1"],
            "capabilities": {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"]},
            "args": ["sleep", "100"]
        }))
        .unwrap();
        let o = ExecOptions {
            args: vec!["id".into()],
            env: vec!["A=2".into(), "B=3".into()],
            cwd: Some("/tmp".into()),
            uid: Some(1000),
            caps: vec!["net_raw".into()],
            no_new_privs: true,
            ..ExecOptions::default()
        };
        let v = process_json(Some(&base), &o);
        assert_eq!(v["args"], json!(["id"]));
        assert_eq!(v["env"], json!(["PATH=/bin", "A=2", "B=3"]));
        assert_eq!(v["cwd"], "/tmp");
        assert_eq!(v["user"]["uid"], 1000);
        assert_eq!(v["user"]["gid"], 0);
        assert_eq!(
            v["capabilities"]["bounding"],
            json!(["CAP_CHOWN", "CAP_NET_RAW"])
        );
        assert_eq!(v["capabilities"]["ambient"], json!(["CAP_NET_RAW"]));
        assert_eq!(v["noNewPrivileges"], true);
    }

    #[test]
    fn process_json_errors_name_the_field() {
        let e = parse_process("p.json", br#"{"cwd": "/", "user": {"uid": "x"}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.json: user.uid: invalid type"), "{e}");
    }
}
