//! The supervisor: plans and checks everything, creates the cgroup, forks the sandbox's
//! init into new namespaces, and then watches until the program ends: its output (counted
//! against the output limit), its seccomp notifications (each denied syscall is audited
//! and never answered: the program is stopped in the call and the run ends as SV), the
//! wall and CPU clocks, and the pids counter. Every limit is judged from a counter (cgroup or supervisor), not guessed
//! from the exit signal alone. At the end it removes everything it made.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cella_isolate::creds::Rlimit;
use cella_isolate::namespaces::{IdMap, write_id_maps};
use cella_isolate::sys as isys;
use cella_seccomp::SeccompProgram;

use crate::audit::{AuditLog, Record};
use crate::cgroup::{Needs, SandboxCgroup};
use crate::child::{self, ChildPlan, SANDBOX_ID};
use crate::evidence;
use crate::fs::FsPlan;
use crate::profile;
use crate::sys;
use crate::wire::{Message, Wire};
use crate::{Denied, Options, SandboxError, SeccompMode, Status, Verdict};

/// The host uid and gid the sandbox user maps to when the supervisor is root.
const NOBODY: u32 = 65534;

/// Default PATH of the program.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How often the CPU and pids counters are read while a limit depends on them.
const TICK: Duration = Duration::from_millis(20);

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;

fn sys_err(op: &'static str) -> impl FnOnce(io::Error) -> SandboxError {
    move |source| SandboxError::Sys { op, source }
}

fn load_seccomp(mode: &SeccompMode) -> Result<Option<SeccompProgram>, SandboxError> {
    let cfg = match mode {
        SeccompMode::Unconfined => return Ok(None),
        SeccompMode::Default => profile::default_profile(),
        SeccompMode::Profile(path) => {
            let err = |source| SandboxError::SeccompFile {
                path: path.clone(),
                source,
            };
            let text = std::fs::read(path).map_err(err)?;
            let v: serde_json::Value =
                serde_json::from_slice(&text).map_err(|e| err(io::Error::other(e)))?;
            // Either the `linux.seccomp` object itself or a whole config.json.
            let obj = v
                .get("linux")
                .and_then(|l| l.get("seccomp"))
                .cloned()
                .unwrap_or(v);
            cella_seccomp::check_json(&obj).map_err(SandboxError::Seccomp)?;
            let mut cfg: oci_spec::runtime::LinuxSeccomp =
                serde_json::from_value(obj).map_err(|e| err(io::Error::other(e)))?;
            if cfg.listener_path().is_none() {
                cfg.set_listener_path(Some(profile::NOTIFY_PLACEHOLDER.into()));
            }
            cfg
        }
    };
    cella_seccomp::compile(&cfg)
        .map(Some)
        .map_err(SandboxError::Seccomp)
}

fn cstring(option: &'static str, s: &str) -> Result<CString, SandboxError> {
    CString::new(s).map_err(|_| SandboxError::Invalid {
        option,
        reason: format!("{s:?} contains a NUL byte"),
    })
}

fn rlimits(opts: &Options, cgroup: bool) -> Vec<Rlimit> {
    let l = &opts.limits;
    let mut v = vec![Rlimit {
        resource: libc::RLIMIT_CORE,
        soft: 0,
        hard: 0,
    }];
    if let Some(c) = l.cpu_time {
        // Per process, a backstop to the supervisor's cgroup-wide count: SIGXCPU at the
        // limit (rounded up to whole seconds), SIGKILL a second later.
        let secs = c.as_secs() + u64::from(c.subsec_nanos() > 0);
        v.push(Rlimit {
            resource: libc::RLIMIT_CPU,
            soft: secs,
            hard: secs + 1,
        });
    }
    let mut set = |resource, value: u64| {
        v.push(Rlimit {
            resource,
            soft: value,
            hard: value,
        })
    };
    if let Some(f) = l.file_size {
        set(libc::RLIMIT_FSIZE, f);
    }
    if let Some(n) = l.open_files {
        set(libc::RLIMIT_NOFILE, n);
    }
    if let Some(s) = l.stack {
        set(libc::RLIMIT_STACK, s);
    }
    if !cgroup {
        if let Some(m) = l.memory {
            set(libc::RLIMIT_AS, m);
        }
        if let Some(p) = l.pids {
            set(libc::RLIMIT_NPROC, p);
        }
    }
    v
}

fn output_sink(option: &'static str, path: Option<&Path>, fd: i32) -> Result<File, SandboxError> {
    match path {
        Some(p) => File::create(p).map_err(|source| SandboxError::Stdio {
            option,
            path: p.to_owned(),
            source,
        }),
        None => {
            // SAFETY: fd 1 or 2 of this process, borrowed just long enough to duplicate.
            let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            b.try_clone_to_owned()
                .map(File::from)
                .map_err(|source| SandboxError::Stdio {
                    option,
                    path: format!("/proc/self/fd/{fd}").into(),
                    source,
                })
        }
    }
}

fn default_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{}-{:x}", isys::getpid(), nanos)
}

/// Runs one sandbox to its end and judges it.
///
/// Errors are returned only for problems found before the program starts (bad options,
/// no cgroup, unreadable profile); everything after is an IE verdict.
pub fn run(opts: &Options) -> Result<Verdict, SandboxError> {
    let started = Instant::now();
    if opts.command.is_empty() {
        return Err(SandboxError::Invalid {
            option: "COMMAND",
            reason: "no command given".into(),
        });
    }
    let id = opts.id.clone().unwrap_or_else(default_id);
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || id.starts_with('.')
    {
        return Err(SandboxError::Invalid {
            option: "id",
            reason: format!("{id:?}: use letters, digits, `-`, `_` and `.` (at most 128)"),
        });
    }
    // The network's lease and its hosts/resolv.conf come first: the files are bound
    // over the root's /etc/hosts and /etc/resolv.conf like any read-only bind.
    let net = match &opts.network {
        Some(n) => Some(NetGuard::plan(n, &id)?),
        None => None,
    };
    let mut binds = opts.binds.clone();
    if let Some(n) = &net {
        binds.extend(n.mounts.iter().cloned());
    }
    let fs = FsPlan::new(opts.rootfs.as_deref(), &binds, opts.workdir.as_ref())?;
    let seccomp = load_seccomp(&opts.seccomp)?;
    if opts.core_sched {
        cella_isolate::coresched::check().map_err(SandboxError::CoreSched)?;
    }

    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), fs.cwd.to_string_lossy().into_owned()),
    ];
    for (k, v) in &opts.env {
        if k.is_empty() || k.contains('=') {
            return Err(SandboxError::Invalid {
                option: "--env",
                reason: format!("{k:?} is not a variable name"),
            });
        }
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let path_dirs = path_var
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| cstring("--env", d))
        .collect::<Result<Vec<_>, _>>()?;
    let argv = opts
        .command
        .iter()
        .map(|a| cstring("COMMAND", a))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| cstring("--env", &format!("{k}={v}")))
        .collect::<Result<Vec<_>, _>>()?;

    let root = isys::geteuid() == 0;
    let mut warnings = Vec::new();
    let mut evidence_made = false;
    if let Some(dir) = &opts.evidence {
        evidence_made = !dir.exists();
        evidence::prepare_dir(dir)?;
    }
    let audit = match &opts.audit_log {
        Some(p) => Some(AuditLog::open(p, &id)?),
        None => None,
    };
    // A cgroup costs a migration, which takes a global kernel lock (milliseconds on a
    // busy v1 host): made only when a limit or the freezer needs one. Without it, CPU
    // time and peak memory come from the init's rusage (its reaped descendants' CPU,
    // the largest process's RSS).
    let limits = &opts.limits;
    let wants_cgroup = limits.memory.is_some()
        || limits.pids.is_some()
        || limits.cpu_time.is_some()
        || opts.evidence.is_some();
    let cgroup = if root && wants_cgroup {
        Some(
            SandboxCgroup::create(
                &id,
                opts.limits.memory,
                opts.limits.pids,
                Needs {
                    cpu: opts.limits.cpu_time.is_some(),
                    pids: opts.limits.pids.is_some(),
                    freezer: opts.evidence.is_some(),
                },
            )
            .map_err(SandboxError::Cgroup)?,
        )
    } else {
        if !root && (limits.memory.is_some() || limits.pids.is_some()) {
            warnings.push(
                "no cgroup (not root): memory is limited by RLIMIT_AS per process, \
                 processes by RLIMIT_NPROC, and the peak is the largest process's RSS"
                    .to_string(),
            );
        }
        None
    };
    let mut sup = Supervisor {
        opts,
        net,
        cgroup,
        init: None,
        audit,
        evidence_made,
        started,
        warnings,
        wire: None,
        out: None,
        err: None,
        out_sink: None,
        err_sink: None,
        sinks_broken: false,
        output_bytes: 0,
        listener: None,
        state: None,
        signals: None,
        exited: None,
        failure: None,
        breach: None,
        denied: None,
        killed: false,
        frozen: false,
    };
    let verdict = match sup.start(fs, seccomp, argv, envp, path_dirs) {
        Ok(()) => sup.watch(),
        Err(e) => {
            sup.cleanup();
            return Err(e);
        }
    };
    Ok(verdict)
}

/// The sandbox's init, as the supervisor holds it.
struct Init {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// Reaped already.
    reaped: bool,
}

struct Supervisor<'a> {
    opts: &'a Options,
    /// `--net NETWORK`: released by cleanup (and by drop on every earlier error).
    net: Option<NetGuard>,
    cgroup: Option<SandboxCgroup>,
    init: Option<Init>,
    audit: Option<AuditLog>,
    evidence_made: bool,
    started: Instant,
    warnings: Vec<String>,
    wire: Option<Wire>,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    out_sink: Option<File>,
    err_sink: Option<File>,
    sinks_broken: bool,
    output_bytes: u64,
    listener: Option<OwnedFd>,
    state: Option<OwnedFd>,
    signals: Option<(OwnedFd, sys::SavedMask)>,
    exited: Option<i32>,
    failure: Option<String>,
    /// (status, limit) of a breach the supervisor saw and acted on.
    breach: Option<(Status, &'static str)>,
    denied: Option<Denied>,
    killed: bool,
    /// The sandbox's cgroup is frozen (to keep evidence).
    frozen: bool,
}

impl Supervisor<'_> {
    fn started(&self) -> Instant {
        self.started
    }

    fn audit(&mut self, r: Record) {
        if let Some(a) = &mut self.audit
            && let Err(e) = a.write(&r)
        {
            let msg = format!("{e}: {}", e.source);
            if !self.warnings.contains(&msg) {
                self.warnings.push(msg);
            }
        }
    }

    /// The `--landlock` ruleset: made now (the kernel's ABI decides which rights it
    /// handles), its path rules added by the program once the sandbox's mounts exist.
    fn landlock_plan(
        paths: &crate::LandlockPaths,
        opts: &Options,
    ) -> Result<child::LandlockPlan, SandboxError> {
        use cella_isolate::landlock::{Ruleset, fs_access, fs_rights};
        // The network namespace is the wall for sockets: leave TCP to it.
        let rs = Ruleset::for_kernel()
            .map_err(SandboxError::Landlock)?
            .allow_all_tcp();
        let all = fs_rights(rs.abi());
        let ro: Vec<PathBuf> = if paths.read_only.is_empty() {
            vec!["/".into()]
        } else {
            paths.read_only.clone()
        };
        let rw: Vec<PathBuf> = if paths.read_write.is_empty() {
            let mut v: Vec<PathBuf> = vec!["/tmp".into(), "/dev".into()];
            v.extend(opts.workdir.iter().map(|w| w.destination.clone()));
            v.extend(
                opts.binds
                    .iter()
                    .filter(|b| !b.readonly)
                    .map(|b| b.destination.clone()),
            );
            v
        } else {
            paths.read_write.clone()
        };
        let mut rules = Vec::new();
        for (list, access) in [(&ro, fs_access::READ_ONLY), (&rw, all)] {
            for p in list {
                let c = CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| {
                    SandboxError::Invalid {
                        option: "--landlock",
                        reason: format!("{p:?} contains a NUL byte"),
                    }
                })?;
                if !p.is_absolute() {
                    return Err(SandboxError::Invalid {
                        option: "--landlock",
                        reason: format!("{p:?} is not an absolute path inside the sandbox"),
                    });
                }
                rules.push((c, access));
            }
        }
        let ruleset = rs.prepare().map_err(SandboxError::Landlock)?;
        Ok(child::LandlockPlan { ruleset, rules })
    }

    /// Forks the init, writes its id maps, puts it in the cgroup and lets it go.
    fn start(
        &mut self,
        fs: FsPlan,
        seccomp: Option<SeccompProgram>,
        argv: Vec<CString>,
        envp: Vec<CString>,
        path_dirs: Vec<CString>,
    ) -> Result<(), SandboxError> {
        let opts = self.opts;
        let stdin =
            match &opts.stdin {
                Some(p) => Some(File::open(p).map(OwnedFd::from).map_err(|source| {
                    SandboxError::Stdio {
                        option: "--stdin",
                        path: p.clone(),
                        source,
                    }
                })?),
                None => None,
            };
        self.out_sink = Some(output_sink("--stdout", opts.stdout.as_deref(), 1)?);
        self.err_sink = Some(output_sink("--stderr", opts.stderr.as_deref(), 2)?);
        let (out_r, out_w) = sys::pipe().map_err(sys_err("create the stdout pipe"))?;
        let (err_r, err_w) = sys::pipe().map_err(sys_err("create the stderr pipe"))?;
        sys::set_nonblocking(out_r.as_fd()).map_err(sys_err("set up the stdout pipe"))?;
        sys::set_nonblocking(err_r.as_fd()).map_err(sys_err("set up the stderr pipe"))?;
        let (mine, theirs) = Wire::pair().map_err(sys_err("create the sandbox channel"))?;
        self.signals = Some(
            sys::block_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
                .map_err(sys_err("block termination signals"))?,
        );
        let landlock = match &opts.landlock {
            Some(paths) => Some(Self::landlock_plan(paths, opts)?),
            None => None,
        };
        let plan = ChildPlan {
            landlock,
            core_sched: opts.core_sched,
            fs,
            argv,
            envp,
            path_dirs,
            rlimits: rlimits(opts, self.cgroup.is_some()),
            seccomp,
            stdin,
            stdout: out_w,
            stderr: err_w,
            setgroups: isys::geteuid() == 0,
        };
        let cg_fd = match &self.cgroup {
            Some(c) => c.clone_fd().map_err(SandboxError::Cgroup)?,
            None => None,
        };
        let flags = (libc::CLONE_NEWUSER
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS) as u64;
        let pid = match isys::clone_fork(flags, cg_fd.as_ref().map(|f| f.as_fd())) {
            Ok(isys::Forked::Child) => child::init_main(&plan, &theirs),
            Ok(isys::Forked::Parent(pid)) => pid,
            Err(e) => {
                return Err(SandboxError::Sys {
                    op: "clone the sandbox's init",
                    source: e,
                });
            }
        };
        drop(plan);
        drop(theirs);
        let pidfd = match sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = isys::kill(pid, libc::SIGKILL);
                let _ = sys::wait4(pid);
                return Err(SandboxError::Sys {
                    op: "open a pidfd of the sandbox's init",
                    source: e,
                });
            }
        };
        self.init = Some(Init {
            pid,
            pidfd,
            reaped: false,
        });
        self.out = Some(out_r);
        self.err = Some(err_r);
        let (host_uid, host_gid, deny) = if isys::geteuid() == 0 {
            (NOBODY, NOBODY, false)
        } else {
            // SAFETY: getegid cannot fail.
            (isys::geteuid(), unsafe { libc::getegid() }, true)
        };
        let map = |outside| {
            [IdMap {
                inside: SANDBOX_ID,
                outside,
                count: 1,
            }]
        };
        write_id_maps(pid, &map(host_uid), &map(host_gid), deny).map_err(|e| {
            SandboxError::Sys {
                op: "write the sandbox's id maps",
                source: io::Error::other(e.to_string()),
            }
        })?;
        if let Some(n) = &self.net {
            n.attach(pid)?;
        }
        mine.send(Message::Go)
            .map_err(sys_err("start the sandbox's init"))?;
        // Moving the init into its cgroup (v1: a write to cgroup.procs per hierarchy,
        // the first waiting for an RCU grace period) overlaps with its mounts; it forks
        // the program only after InCgroup.
        if let Some(c) = &mut self.cgroup {
            c.add(pid).map_err(SandboxError::Cgroup)?;
        }
        mine.send(Message::InCgroup)
            .map_err(sys_err("start the sandbox's init"))?;
        self.wire = Some(mine);
        self.audit(Record::Start);
        Ok(())
    }

    fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        if let Some(init) = &self.init
            && !init.reaped
        {
            // The init is pid 1 of the sandbox's pid namespace: when it dies, the kernel
            // kills every process in it.
            let _ = sys::pidfd_kill(init.pidfd.as_fd(), libc::SIGKILL);
        }
        // Frozen, every process gets its SIGKILL before the thaw, so none runs again;
        // the init's alone would reach the others only once the init has died.
        if self.frozen
            && let Some(c) = &self.cgroup
        {
            for pid in c.cg.pids().unwrap_or_default() {
                let _ = isys::kill(pid, libc::SIGKILL);
            }
            let _ = c.cg.thaw();
        }
    }

    fn breach(&mut self, status: Status, limit: &'static str) {
        if self.breach.is_none() && self.denied.is_none() {
            self.breach = Some((status, limit));
            self.audit(Record::Limit { limit });
        }
        self.kill();
    }

    /// Moves one chunk of the program's output to its sink, counting it.
    fn pump(&mut self, stderr: bool) -> bool {
        let fd = if stderr { &self.err } else { &self.out };
        let Some(fd) = fd else { return false };
        let mut buf = [0u8; 65536];
        let n = match isys::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => {
                if stderr {
                    self.err = None;
                } else {
                    self.out = None;
                }
                return false;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => {
                if stderr {
                    self.err = None;
                } else {
                    self.out = None;
                }
                return false;
            }
        };
        let mut keep = n;
        let mut over = false;
        if let Some(limit) = self.opts.limits.output {
            let room = limit.saturating_sub(self.output_bytes);
            if n as u64 > room {
                keep = room as usize;
                over = true;
            }
        }
        self.output_bytes += n as u64;
        let sink = if stderr {
            &mut self.err_sink
        } else {
            &mut self.out_sink
        };
        if !self.sinks_broken
            && keep > 0
            && let Some(s) = sink
            && s.write_all(&buf[..keep]).is_err()
        {
            // A closed reader of the supervisor's own output must not stall the run.
            self.sinks_broken = true;
        }
        if over {
            self.breach(Status::OutputLimit, "output");
        }
        true
    }

    fn on_wire(&mut self) -> bool {
        let Some(w) = &self.wire else { return false };
        match w.recv() {
            Ok(Some((Message::StateDir, Some(fd)))) => self.state = Some(fd),
            Ok(Some((Message::Listener, Some(fd)))) => self.listener = Some(fd),
            Ok(Some((Message::Exited(status), _))) => self.exited = Some(status),
            Ok(Some((Message::Failed(errno, text), _))) => {
                if self.failure.is_none() {
                    let e = io::Error::from_raw_os_error(errno);
                    self.failure = Some(format!("sandbox setup: {}: {e}", text.text()));
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                self.wire = None;
                return false;
            }
        }
        true
    }

    fn on_notification(&mut self) {
        let Some(l) = &self.listener else { return };
        let n = match sys::notif_recv(l.as_fd()) {
            Ok(n) => n,
            // The caller died before we read it (ENOENT), or the listener is gone.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
            Err(_) => {
                self.listener = None;
                return;
            }
        };
        // The run is over at the first violation: later notifications (other threads,
        // or the same call restarted after the freeze) are neither recorded twice nor
        // answered; their callers die blocked in the call.
        if self.denied.is_some() {
            return;
        }
        // The caller waits for an answer, so its /proc entry is still there to read.
        let pid = ns_pid(n.pid);
        // The call is never answered: the program is stopped in it, frozen when evidence
        // is to be kept (the call is interrupted and would restart, but the program is
        // killed before it runs again), else killed at once.
        let frozen = self.opts.evidence.is_some()
            && self
                .cgroup
                .as_ref()
                .is_some_and(|c| c.can_freeze() && c.cg.freeze().is_ok());
        self.frozen = frozen;
        if !frozen {
            self.kill();
        }
        let nr = i64::from(n.data.nr);
        let arch = match n.data.arch {
            AUDIT_ARCH_X86_64 if n.data.nr & 0x4000_0000 != 0 => "x32",
            AUDIT_ARCH_X86_64 => "x86_64",
            AUDIT_ARCH_I386 => "i386",
            _ => "unknown",
        };
        let name = cella_seccomp::syscall_name(n.data.arch, n.data.nr as u32);
        self.audit(Record::DeniedSyscall {
            syscall: name,
            nr,
            arch,
            pid,
        });
        self.denied = Some(Denied {
            syscall: name.map(str::to_owned),
            nr,
            arch: arch.to_owned(),
        });
        self.violation();
    }

    /// A security violation, the sandbox frozen or killed already: keep the evidence
    /// (the state outlives the processes: the supervisor holds its directory), kill.
    fn violation(&mut self) {
        if let (Some(dir), Some(state)) = (&self.opts.evidence, &self.state) {
            // The state lives in memory the cgroup limits; without a limit, 1 GiB.
            let budget = self.opts.limits.memory.unwrap_or(1 << 30);
            match evidence::keep(
                state.as_fd(),
                &[("upper", "work"), ("tmp", "tmp")],
                dir,
                budget,
            ) {
                Ok(k) => {
                    self.audit(Record::Evidence {
                        files: k.files,
                        bytes: k.bytes,
                    });
                    self.evidence_made = false;
                }
                Err(e) => {
                    let src = std::error::Error::source(&e)
                        .map(|s| format!(": {s}"))
                        .unwrap_or_default();
                    self.warnings.push(format!("{e}{src}"));
                }
            }
        }
        self.kill();
    }

    fn tick(&mut self) {
        let limits = &self.opts.limits;
        if let Some(w) = limits.wall_time
            && self.started().elapsed() >= w
        {
            self.breach(Status::TimeLimit, "wall");
            return;
        }
        let Some(c) = &self.cgroup else { return };
        if let Some(cpu) = limits.cpu_time
            && c.cpu_ns().is_some_and(|ns| ns >= cpu.as_nanos() as u64)
        {
            self.breach(Status::TimeLimit, "cpu");
            return;
        }
        if limits.pids.is_some() && c.pids_max_hits() > 0 {
            self.breach(Status::RuntimeError, "pids");
        }
    }

    /// Watches the sandbox until its init is gone, then judges and cleans up.
    fn watch(&mut self) -> Verdict {
        let limits = self.opts.limits.clone();
        let needs_tick =
            self.cgroup.is_some() && (limits.cpu_time.is_some() || limits.pids.is_some());
        let mut init_gone = false;
        let mut drain_until: Option<Instant> = None;
        loop {
            let mut timeout = if needs_tick && !self.killed {
                TICK.as_millis() as i32
            } else {
                -1
            };
            if let Some(w) = limits.wall_time
                && !self.killed
            {
                let left = w.saturating_sub(self.started().elapsed());
                let ms = (left.as_millis() as i32).saturating_add(1);
                timeout = if timeout < 0 { ms } else { timeout.min(ms) };
            }
            if let Some(d) = drain_until {
                let ms = d.saturating_duration_since(Instant::now()).as_millis() as i32;
                timeout = if timeout < 0 { ms } else { timeout.min(ms) };
            }
            let mut fds: Vec<(i32, i16)> = Vec::new();
            let mut slots = Vec::new();
            let mut add = |fd: Option<i32>, slot: u8| {
                if let Some(fd) = fd {
                    fds.push((fd, libc::POLLIN));
                    slots.push(slot);
                }
            };
            add(
                self.init
                    .as_ref()
                    .filter(|_| !init_gone)
                    .map(|i| i.pidfd.as_raw_fd()),
                0,
            );
            add(self.wire.as_ref().map(Wire::raw), 1);
            add(self.out.as_ref().map(|f| f.as_raw_fd()), 2);
            add(self.err.as_ref().map(|f| f.as_raw_fd()), 3);
            add(self.listener.as_ref().map(|f| f.as_raw_fd()), 4);
            add(self.signals.as_ref().map(|s| s.0.as_raw_fd()), 5);
            let revents = match sys::poll(&fds, timeout) {
                Ok(r) => r,
                Err(e) => {
                    self.failure
                        .get_or_insert_with(|| format!("poll the sandbox: {e}"));
                    self.kill();
                    break;
                }
            };
            for (slot, rev) in slots.iter().zip(revents) {
                if rev == 0 {
                    continue;
                }
                match slot {
                    0 => init_gone = true,
                    1 => {
                        self.on_wire();
                    }
                    2 => {
                        if !self.pump(false) && rev & libc::POLLHUP != 0 {
                            self.out = None;
                        }
                    }
                    3 => {
                        if !self.pump(true) && rev & libc::POLLHUP != 0 {
                            self.err = None;
                        }
                    }
                    4 => {
                        if rev & libc::POLLIN != 0 {
                            self.on_notification();
                        } else {
                            // Every process that could notify is gone.
                            self.listener = None;
                        }
                    }
                    _ => {
                        if let Some((fd, _)) = &self.signals
                            && let Some(sig) = sys::read_signal(fd.as_fd())
                        {
                            self.failure.get_or_insert_with(|| {
                                format!("the supervisor was interrupted by signal {sig}")
                            });
                            self.kill();
                        }
                    }
                }
            }
            if !self.killed {
                self.tick();
            }
            if init_gone {
                let done = self.out.is_none() && self.err.is_none() && self.wire.is_none();
                let deadline =
                    *drain_until.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
                if done || Instant::now() >= deadline {
                    break;
                }
            }
        }
        self.finish()
    }

    fn finish(&mut self) -> Verdict {
        let wall_ms = self.started().elapsed().as_millis() as u64;
        let (mut cpu_ms, mut peak_kib) = (0, None);
        if let Some(init) = &mut self.init
            && !init.reaped
        {
            if let Ok((_, ms, maxrss)) = sys::wait4(init.pid) {
                cpu_ms = ms;
                peak_kib = Some(maxrss);
            }
            init.reaped = true;
        }
        // Drain what is still queued (the exit report, usually).
        while self.wire.is_some() && self.on_wire() {}
        let counters = self
            .cgroup
            .as_ref()
            .map(|c| c.counters())
            .unwrap_or_default();
        if let Some(ns) = counters.cpu_ns {
            cpu_ms = ns / 1_000_000;
        }
        if self.cgroup.is_some() {
            peak_kib = counters.memory_peak.map(|b| b / 1024);
        }
        let limits = &self.opts.limits;
        let (exit_code, signal) = match self.exited {
            Some(s) if libc::WIFEXITED(s) => (Some(libc::WEXITSTATUS(s)), None),
            Some(s) if libc::WIFSIGNALED(s) => (None, Some(libc::WTERMSIG(s))),
            // The supervisor killed it (a limit, a violation): SIGKILL ended it.
            _ if self.killed => (None, Some(libc::SIGKILL)),
            _ => (None, None),
        };
        let mut v = Verdict {
            status: Status::Ok,
            exit_code,
            signal,
            cpu_ms,
            wall_ms,
            memory_peak_kib: peak_kib,
            limit: None,
            denied: self.denied.clone(),
            error: None,
            warnings: std::mem::take(&mut self.warnings),
        };
        let cpu_over = limits
            .cpu_time
            .is_some_and(|c| cpu_ms >= c.as_millis() as u64);
        let set = |v: &mut Verdict, s: Status, limit: Option<&str>| {
            v.status = s;
            v.limit = limit.map(str::to_owned);
        };
        if let Some(f) = self.failure.take() {
            set(&mut v, Status::InternalError, None);
            v.error = Some(f);
        } else if self.denied.is_some() {
            set(&mut v, Status::SecurityViolation, None);
        } else if signal == Some(libc::SIGSYS) && self.opts.seccomp != SeccompMode::Unconfined {
            // The filter killed it: a syscall through another ABI (i386, x32).
            set(&mut v, Status::SecurityViolation, None);
            self.audit(Record::DeniedSyscall {
                syscall: None,
                nr: -1,
                arch: "unknown",
                pid: None,
            });
        } else if let Some((s, limit)) = self.breach {
            set(&mut v, s, Some(limit));
        } else if counters.oom_kills > 0 {
            set(&mut v, Status::MemoryLimit, Some("memory"));
            self.audit(Record::Limit { limit: "memory" });
        } else if cpu_over || signal == Some(libc::SIGXCPU) {
            set(&mut v, Status::TimeLimit, Some("cpu"));
            self.audit(Record::Limit { limit: "cpu" });
        } else if signal == Some(libc::SIGXFSZ) {
            set(&mut v, Status::RuntimeError, Some("file-size"));
            self.audit(Record::Limit { limit: "file-size" });
        } else if limits.pids.is_some() && counters.pids_max_hits > 0 && self.cgroup.is_some() {
            set(&mut v, Status::RuntimeError, Some("pids"));
            self.audit(Record::Limit { limit: "pids" });
        } else if self.exited.is_none() {
            set(&mut v, Status::InternalError, None);
            v.error = Some("the sandbox ended without reporting the program's status".into());
        } else if signal.is_some() || exit_code != Some(0) {
            set(&mut v, Status::RuntimeError, None);
        }
        self.cleanup();
        // A cleanup failure (the cgroup could not be removed) is reported, not hidden.
        if let Some(w) = self.failure.take() {
            v.warnings.push(w);
        }
        self.audit(Record::Verdict {
            verdict: Box::new(v.clone()),
        });
        v
    }

    /// Kills and reaps the init if still there, drops the state, removes the cgroup and
    /// an evidence directory that stayed empty.
    fn cleanup(&mut self) {
        self.kill();
        if let Some(init) = &mut self.init
            && !init.reaped
        {
            let _ = sys::wait4(init.pid);
            init.reaped = true;
        }
        self.state = None;
        self.listener = None;
        if let Some(n) = self.net.take()
            && let Err(e) = n.release()
        {
            self.failure = Some(format!("remove the sandbox's network: {e}"));
        }
        if let Some(mut c) = self.cgroup.take()
            && let Err(e) = {
                c.reap_primer();
                c.destroy()
            }
        {
            self.failure = Some(format!("remove the sandbox cgroup: {e}"));
        }
        if self.evidence_made
            && let Some(dir) = &self.opts.evidence
        {
            let _ = std::fs::remove_dir(dir);
        }
        if let Some((_, saved)) = self.signals.take() {
            sys::restore_signals(&saved);
        }
    }
}

/// Where a sandbox's network record lives while it runs (root only). Not under the
/// runtime's 0700 state root: the sandbox's init, an unprivileged user on the host,
/// binds hosts and resolv.conf from here.
const NET_DIR: &str = "/run/cella-sandbox-net";

/// A sandbox's place on a bridge network: the lease and the DNS files from
/// `cella_net::container::plan`, the veth from `attach`. Released on drop.
struct NetGuard {
    dir: PathBuf,
    mounts: Vec<crate::Bind>,
    released: bool,
}

impl NetGuard {
    fn plan(n: &crate::SandboxNet, id: &str) -> Result<NetGuard, SandboxError> {
        if isys::geteuid() != 0 {
            return Err(SandboxError::Invalid {
                option: "--net",
                reason: "a bridge network needs root (unprivileged runs have a loopback only)"
                    .into(),
            });
        }
        let paths = cella_net::bridge::Paths {
            state_dir: n.state_dir.clone(),
            ipam_dir: n.ipam_dir.clone(),
            network_dir: n.network_dir.clone(),
        };
        // Ids of the runtime's containers share the network's store: keep ours apart.
        let req = cella_net::container::ContainerRequest {
            id: format!("sandbox-{id}"),
            network: n.name.clone(),
            hostname: "sandbox".into(),
            ..Default::default()
        };
        let dir = Path::new(NET_DIR).join(id);
        let made = std::fs::create_dir_all(&dir).and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            for d in [Path::new(NET_DIR), &dir] {
                std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
            }
            Ok(())
        });
        made.map_err(|source| SandboxError::Sys {
            op: "create the sandbox's network record directory",
            source,
        })?;
        let mut guard = NetGuard {
            dir,
            mounts: Vec::new(),
            released: false,
        };
        let planned =
            cella_net::container::plan(&paths, &req, &guard.dir).map_err(SandboxError::Net)?;
        for m in &planned.mounts {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&m.source, std::fs::Permissions::from_mode(0o644)).map_err(
                |source| SandboxError::Sys {
                    op: "make the sandbox's hosts and resolv.conf readable",
                    source,
                },
            )?;
        }
        guard.mounts = planned
            .mounts
            .iter()
            .map(|m| crate::Bind {
                source: m.source.clone(),
                destination: PathBuf::from(&m.destination),
                readonly: true,
            })
            .collect();
        Ok(guard)
    }

    /// Puts the veth into the init's network namespace, with addresses and routes.
    fn attach(&self, pid: libc::pid_t) -> Result<(), SandboxError> {
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        cella_net::container::attach(&self.dir, &netns)
            .map(drop)
            .map_err(SandboxError::Net)
    }

    fn release(mut self) -> Result<(), SandboxError> {
        self.released = true;
        let r = cella_net::container::detach(&self.dir).map_err(SandboxError::Net);
        let _ = std::fs::remove_dir_all(&self.dir);
        r
    }
}

impl Drop for NetGuard {
    fn drop(&mut self) {
        if !self.released {
            let _ = cella_net::container::detach(&self.dir);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The pid of host pid `pid` inside its innermost pid namespace (NSpid's last field).
fn ns_pid(pid: u32) -> Option<i64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}
