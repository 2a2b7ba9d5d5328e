//! The container lifecycle: create, start, run, state, kill, delete, list, pids.
//!
//! No daemon and no monitor: `create` leaves init blocked on `exec.fifo` and exits;
//! `start` writes one byte to the fifo and waits until init has exec'd (the fifo loses
//! its last reader when init's close-on-exec descriptor goes); `delete` removes what
//! the state file says exists.

use crate::config::{self, InitPlan};
use crate::error::{Error, Result};
use crate::init::{self, InitContext};
use crate::state::{self, ContainerState, Locked, Status, Store};
use cella_isolate::channel::{Channel, Message};
use cella_isolate::namespaces::{self, NsKind};
use cella_isolate::sys::{self, Forked};
use oci_spec::runtime::Hook;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `create` and `run`, as runc names them.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Write init's pid here.
    pub pid_file: Option<PathBuf>,
    /// UNIX socket to send the pty master to (terminal: true).
    pub console_socket: Option<PathBuf>,
    /// Pass this many fds after stdio to the container.
    pub preserve_fds: u32,
    /// Use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// Do not give the container a new session keyring.
    pub no_new_keyring: bool,
}

/// The runtime: a state store and what it was asked to do.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub(crate) store: Store,
    systemd_cgroup: bool,
    /// `--rootless`: Some(true) tolerates cgroup permission errors, Some(false) never
    /// does, None decides from the process's privileges.
    rootless: Option<bool>,
    net_paths: cella_net::bridge::Paths,
}

/// What a successful operation wants the user told (warnings).
pub type Warnings = Vec<String>;

impl Runtime {
    /// A runtime keeping state under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Runtime {
        Runtime {
            store: Store::new(root),
            systemd_cgroup: false,
            rootless: None,
            net_paths: cella_net::bridge::Paths::default(),
        }
    }

    /// Where bridge networks are defined and their state kept (see [`crate::network`]).
    pub fn with_net_paths(mut self, paths: cella_net::bridge::Paths) -> Runtime {
        self.net_paths = paths;
        self
    }

    /// Uses the systemd cgroup driver (`--systemd-cgroup`).
    pub fn with_systemd_cgroup(mut self, on: bool) -> Runtime {
        self.systemd_cgroup = on;
        self
    }

    /// Sets rootless mode as runc's `--rootless true|false|auto` does (None: auto).
    /// Rootless, a cgroup the user may not create is skipped with a warning and device
    /// rules are not written; not rootless, both are errors.
    pub fn with_rootless(mut self, mode: Option<bool>) -> Runtime {
        self.rootless = mode;
        self
    }

    /// The state root.
    pub fn root(&self) -> &Path {
        self.store.root()
    }

    /// The steps `create` would take for this bundle, one line each, without doing any
    /// of them (for `--debug`): the validated plan.
    pub fn explain(&self, id: &str, opts: &CreateOptions) -> Result<Vec<String>> {
        let bundle =
            std::fs::canonicalize(&opts.bundle).map_err(Error::io("open bundle", &opts.bundle))?;
        let spec = config::load(&bundle)?;
        let plan = config::plan(&spec, &bundle, opts.no_pivot)?;
        let linux = spec.linux().as_ref().expect("plan checked linux");
        let cgroups_path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        let cgroup = cella_cgroups::Cgroup::new(cgroups_path.as_deref(), id, self.systemd_cgroup)?;
        let new: Vec<&str> = NsKind::ALL
            .iter()
            .filter(|k| plan.new_ns & k.flag() != 0)
            .map(|k| k.proc_name())
            .collect();
        let mut steps = vec![
            format!("state dir {}", self.store.root().join(id).display()),
            format!(
                "cgroup {:?} in {}",
                cgroup.layout,
                cgroup
                    .dirs()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "clone init ({}) with new namespaces: {}",
                if init::fast_path(&plan) {
                    "one clone3"
                } else {
                    "join, then fork"
                },
                new.join(" ")
            ),
        ];
        for j in &plan.joins {
            steps.push(format!(
                "join {} namespace {}",
                j.kind.proc_name(),
                j.path.display()
            ));
        }
        if let Some(m) = &plan.id_map_plan {
            steps.push(format!(
                "uid_map {:?} by {:?}, gid_map {:?} by {:?}",
                m.uid_maps, m.uid_writer, m.gid_maps, m.gid_writer
            ));
        }
        if !plan.time_offsets.is_empty() {
            steps.push(format!(
                "timens_offsets {}",
                plan.time_offsets.text().trim().replace('\n', ", ")
            ));
        }
        steps.push(format!("rootfs {:#?}", plan.rootfs));
        for (path, value) in &plan.sysctls {
            steps.push(format!(
                "sysctl {} = {}",
                path.to_string_lossy(),
                String::from_utf8_lossy(value)
            ));
        }
        if let Some(s) = &plan.seccomp {
            steps.push(format!(
                "seccomp filter of {} instructions, notify: {}",
                s.program.len(),
                s.program.needs_notify()
            ));
        }
        let p = &plan.process;
        steps.push(format!(
            "exec {:?} as {}:{} (groups {:?}) in {} with capabilities {:#x}, no_new_privs {}",
            p.args,
            p.user.uid,
            p.user.gid,
            p.user.additional_gids,
            p.cwd.to_string_lossy(),
            p.caps.effective,
            p.no_new_privs
        ));
        steps.extend(crate::network::explain(
            &spec,
            id,
            &self.net_paths,
            self.store.root(),
        )?);
        steps.extend(plan.warnings.iter().map(|w| format!("warning: {w}")));
        Ok(steps)
    }

    /// Creates container `id` from a bundle; init waits for `start`.
    pub fn create(&self, id: &str, opts: &CreateOptions) -> Result<Warnings> {
        self.create_inner(id, opts, None).map(|(_, w, _)| w)
    }

    /// Creates the container; with `own_console`, a terminal without --console-socket
    /// sends its master there (cella relays it itself). Returns init's pid, warnings and
    /// whether `own_console` was used.
    fn create_inner(
        &self,
        id: &str,
        opts: &CreateOptions,
        own_console: Option<&OwnedFd>,
    ) -> Result<(i32, Warnings, bool)> {
        state::check_id(id)?;
        // Started first so the grace period of the v1 migration runs while we work.
        let primer = cella_cgroups::AttachPrimer::start();
        let bundle =
            std::fs::canonicalize(&opts.bundle).map_err(Error::io("open bundle", &opts.bundle))?;
        let spec = config::load(&bundle)?;
        let rootfs = config::rootfs_path(&spec, &bundle)?;
        let mut plan = config::plan(&spec, &bundle, opts.no_pivot)?;
        let net = crate::network::check(&spec, id, &self.net_paths)?;
        let own_console = own_console.filter(|_| opts.console_socket.is_none());
        if plan.process.terminal && opts.console_socket.is_none() && own_console.is_none() {
            return Err(Error::config(
                "process.terminal",
                "a detached container's terminal needs --console-socket (or set terminal to false)",
            ));
        }
        let relayed = plan.process.terminal && own_console.is_some();
        let hooks = spec.hooks().as_ref();
        let list = |h: Option<&Vec<Hook>>| h.cloned().unwrap_or_default();
        let linux = spec.linux().as_ref().expect("plan checked linux");
        let resources = crate::resources::with_default_devices(linux)?;
        let cgroups_path = linux
            .cgroups_path()
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned());
        let cgroup = cella_cgroups::Cgroup::new(cgroups_path.as_deref(), id, self.systemd_cgroup)?;
        cella_cgroups::validate(&resources, cgroup.layout)?;
        let mut warnings = plan.warnings.clone();
        let mut st = ContainerState {
            oci_version: spec.version().clone(),
            id: id.to_owned(),
            pid: 0,
            pid_start_time: 0,
            bundle: bundle.clone(),
            rootfs,
            created: crate::now_rfc3339(),
            owner: sys::geteuid(),
            annotations: spec
                .annotations()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            created_complete: false,
            cgroup: Some(cgroup),
            poststop: list(hooks.and_then(|h| h.poststop().as_ref())),
            poststart: list(hooks.and_then(|h| h.poststart().as_ref())),
        };
        let runtime_hooks: Vec<(&'static str, Vec<Hook>)> = vec![
            ("prestart", list(hooks.and_then(|h| h.prestart().as_ref()))),
            (
                "createRuntime",
                list(hooks.and_then(|h| h.create_runtime().as_ref())),
            ),
        ];

        // Validation is over: from here on every resource is recorded before it is made.
        let locked = self.store.create(id)?;
        locked.save(&st)?;
        let rootless = self.rootless.unwrap_or_else(crate::rootless::rootless);
        let made = make_cgroup(&locked, &mut st, &resources, rootless, &mut warnings)
            .and_then(|()| match &net {
                Some(req) => crate::network::prepare(
                    &locked,
                    req,
                    &self.net_paths,
                    &spec,
                    &bundle,
                    opts.no_pivot,
                    &mut plan,
                )
                .map(|note| warnings.extend(note)),
                None => Ok(()),
            })
            .and_then(|()| {
                primer.finish();
                spawn(
                    &plan,
                    &locked,
                    &mut st,
                    opts,
                    own_console,
                    &runtime_hooks,
                    &resources,
                )
            });
        match made {
            Ok(pid) => Ok((pid, warnings, relayed)),
            Err(e) => {
                let cleanup = destroy(locked, &st).err().into_iter().collect::<Vec<_>>();
                if cleanup.is_empty() {
                    Err(e)
                } else {
                    Err(Error::WithCleanup {
                        error: Box::new(e),
                        cleanup,
                    })
                }
            }
        }
    }

    /// Lets a created container's init exec the user's process, then runs poststart
    /// hooks. Poststart failures come back as warnings, as the spec asks.
    pub fn start(&self, id: &str) -> Result<Warnings> {
        let locked = self.store.open(id, true)?;
        let st = load(&locked)?;
        let status = st.status(&locked);
        if status != Status::Created {
            return Err(Error::BadStatus {
                id: id.to_owned(),
                status: status.as_str(),
                what: "only a created container can be started",
            });
        }
        let fifo_path = locked.fifo_path();
        let c = CString::new(fifo_path.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::io("open", &fifo_path)(io::ErrorKind::InvalidInput.into()))?;
        let fifo = sys::open(&c, libc::O_WRONLY | libc::O_NONBLOCK, 0).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENXIO) {
                Error::BadStatus {
                    id: id.to_owned(),
                    status: "stopped",
                    what: "init exited before start",
                }
            } else {
                Error::Io {
                    op: "open",
                    path: fifo_path.clone(),
                    source: e,
                }
            }
        })?;
        sys::write_all(sys::AsFdRef::as_fd_ref(&fifo), b"0")
            .map_err(Error::io("write", &fifo_path))?;
        std::fs::remove_file(&fifo_path).map_err(Error::io("remove", &fifo_path))?;
        // Poststart hooks run once the user's process is executed, as the spec asks;
        // without any, `start` returns at once, as runc's does.
        if !st.poststart.is_empty() {
            wait_reader_gone(&fifo);
        }
        let mut warnings = Vec::new();
        let state = st.hook_json(Status::Running);
        for (i, h) in st.poststart.iter().enumerate() {
            if let Err(e) = crate::hooks::run(h, &state) {
                warnings.push(format!(
                    "poststart hook #{i} `{}`: {}",
                    h.path().display(),
                    crate::error_chain(&e)
                ));
            }
        }
        Ok(warnings)
    }

    /// create + start, then (unless `detach`) wait for init, forwarding signals to it,
    /// delete the container, and return its exit status as a shell would (128+signal).
    pub fn run(&self, id: &str, opts: &CreateOptions, detach: bool) -> Result<(u8, Warnings)> {
        if !detach {
            // Init's first child, in the joining path, forks init with CLONE_PARENT, so
            // init is our child either way; being a subreaper also catches anything
            // init leaves behind when it is pid 1 of nothing.
            let _ = sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0);
        }
        let blocked = if detach {
            None
        } else {
            Some(SignalForwarder::block())
        };
        // In the foreground, a terminal needs no engine: cella relays it.
        let pair = if detach {
            None
        } else {
            Some(crate::tty::ConsolePair::new().map_err(|e| Error::Sys("socketpair", e))?)
        };
        let (pid, mut warnings, relayed) =
            self.create_inner(id, opts, pair.as_ref().map(|p| &p.theirs))?;
        let relay = match pair.filter(|_| relayed).map(|p| {
            p.receive()
                .and_then(crate::tty::Relay::start)
                .map_err(|e| Error::Sys("relay the container's terminal", e))
        }) {
            Some(Err(e)) => {
                let _ = self.delete(id, true);
                return Err(e);
            }
            Some(Ok(r)) => Some(r),
            None => None,
        };
        match self.start(id) {
            Ok(w) => warnings.extend(w),
            Err(e) => {
                let _ = self.delete(id, true);
                return Err(e);
            }
        }
        let Some(fwd) = blocked else {
            return Ok((0, warnings));
        };
        let code = fwd.wait_forwarding_with(pid, relay.as_ref().map(|r| r as _));
        if let Some(r) = relay {
            r.finish();
        }
        warnings.extend(self.delete(id, true)?);
        Ok((code, warnings))
    }

    /// The state of `id` as runc prints it.
    pub fn state(&self, id: &str) -> Result<serde_json::Value> {
        let locked = self.store.open(id, false)?;
        let st = load(&locked)?;
        Ok(st.to_json(st.status(&locked)))
    }

    /// States of every container.
    pub fn list(&self) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for id in self.store.ids()? {
            match self.state(&id) {
                Ok(v) => out.push(v),
                Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Sends `signal` to init, or with `all` to every process of the container.
    pub fn kill(&self, id: &str, signal: i32, all: bool) -> Result<()> {
        let locked = self.store.open(id, false)?;
        let st = load(&locked)?;
        let status = st.status(&locked);
        if matches!(status, Status::Stopped | Status::Creating) {
            return Err(Error::BadStatus {
                id: id.to_owned(),
                status: status.as_str(),
                what: "container not running",
            });
        }
        let pids = if all {
            container_pids(&st)?
        } else {
            vec![st.pid]
        };
        for pid in pids {
            match sys::kill(pid, signal) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(Error::Sys("kill", e)),
            }
        }
        Ok(())
    }

    /// Pids of the container's processes.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let locked = self.store.open(id, false)?;
        let st = load(&locked)?;
        if st.status(&locked) == Status::Stopped {
            return Ok(Vec::new());
        }
        container_pids(&st)
    }

    /// Deletes a container: a stopped or created one always, a running one with
    /// `force` (killing it). Poststop hook failures come back as warnings.
    pub fn delete(&self, id: &str, force: bool) -> Result<Warnings> {
        let locked = self.store.open(id, true)?;
        let Some(st) = locked.load()? else {
            // Creation stopped before the first state write: nothing else exists.
            locked.remove()?;
            return Ok(Vec::new());
        };
        let status = st.status(&locked);
        if matches!(status, Status::Running | Status::Paused) && !force {
            return Err(Error::BadStatus {
                id: id.to_owned(),
                status: status.as_str(),
                what: "cannot delete a running container: stop it first or use --force",
            });
        }
        let mut warnings = Vec::new();
        let state = st.hook_json(Status::Stopped);
        destroy(locked, &st)?;
        for (i, h) in st.poststop.iter().enumerate() {
            if let Err(e) = crate::hooks::run(h, &state) {
                warnings.push(format!(
                    "poststop hook #{i} `{}`: {}",
                    h.path().display(),
                    crate::error_chain(&e)
                ));
            }
        }
        Ok(warnings)
    }
}

/// Creates the cgroup the state already records and applies the limits. An
/// unprivileged user without a delegated hierarchy (`rootless`) runs without one, with a
/// warning.
fn make_cgroup(
    locked: &Locked,
    st: &mut ContainerState,
    resources: &oci_spec::runtime::LinuxResources,
    rootless: bool,
    warnings: &mut Warnings,
) -> Result<()> {
    let Some(cg) = st.cgroup.clone() else {
        return Ok(());
    };
    if cg.is_systemd() {
        // systemd makes it when the unit starts with init in it (spawn's record).
        return Ok(());
    }
    if let Err(e) = cg.create() {
        let denied = matches!(
            e.raw_os_error(),
            Some(libc::EACCES | libc::EPERM | libc::EROFS)
        );
        if denied && rootless {
            let _ = cg.destroy();
            st.cgroup = None;
            locked.save(st)?;
            warnings.push(crate::rootless::no_cgroup_warning(
                &crate::error_chain(&e),
                resources,
            ));
            return Ok(());
        }
        return Err(e.into());
    }
    cg.apply(&crate::rootless::applicable(resources, rootless))?;
    Ok(())
}

pub(crate) fn load(locked: &Locked) -> Result<ContainerState> {
    locked.load()?.ok_or_else(|| Error::BadStatus {
        id: locked.id.clone(),
        status: "creating",
        what: "creation did not finish; delete it with --force",
    })
}

/// Kills what the state records and removes it: the cgroup (whose removal kills every
/// process still in it), then the state directory. Without a cgroup (rootless, not
/// delegated), the processes of init's pid namespace are killed one by one.
fn destroy(locked: Locked, st: &ContainerState) -> Result<()> {
    let init_alive = st.pid > 0
        && state::proc_start(st.pid)
            .is_some_and(|(start, zombie)| start == st.pid_start_time && !zombie);
    if init_alive {
        let _ = sys::kill(st.pid, libc::SIGKILL);
    }
    match &st.cgroup {
        Some(cg) => cg.destroy()?,
        None if init_alive => {
            for p in container_pids(st).unwrap_or_default() {
                let _ = sys::kill(p, libc::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while state::proc_start(st.pid).is_some_and(|(s, z)| s == st.pid_start_time && !z) {
                if Instant::now() > deadline {
                    return Err(Error::Sys(
                        "wait for init to die",
                        io::ErrorKind::TimedOut.into(),
                    ));
                }
                let _ = sys::waitpid(st.pid, libc::WNOHANG);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        None => {}
    }
    // Reap init when it is our child (run, or a failed create).
    let _ = sys::waitpid(st.pid, libc::WNOHANG);
    crate::network::teardown(&locked, st)?;
    locked.remove()
}

/// Every process in the container: those in its cgroup; without a cgroup, those
/// sharing init's pid namespace when it has its own, else init alone.
fn container_pids(st: &ContainerState) -> Result<Vec<i32>> {
    if let Some(cg) = &st.cgroup {
        let mut pids = cg.pids()?;
        pids.sort();
        return Ok(pids);
    }
    let ns = namespaces::ns_inode(st.pid, NsKind::Pid)
        .map_err(|e| Error::Sys("read init's pid namespace", e))?;
    let host = namespaces::ns_inode(sys::getpid(), NsKind::Pid)
        .map_err(|e| Error::Sys("read own pid namespace", e))?;
    if ns == host {
        return Ok(vec![st.pid]);
    }
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc")
        .map_err(Error::io("read", "/proc"))?
        .flatten()
    {
        if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok())
            && namespaces::ns_inode(pid, NsKind::Pid).is_ok_and(|i| i == ns)
        {
            pids.push(pid);
        }
    }
    pids.sort();
    Ok(pids)
}

/// Clones init and walks it through the protocol of [`cella_isolate::channel`] until it
/// is Ready. Returns init's pid.
fn spawn(
    plan: &InitPlan,
    locked: &Locked,
    st: &mut ContainerState,
    opts: &CreateOptions,
    own_console: Option<&OwnedFd>,
    runtime_hooks: &[(&'static str, Vec<Hook>)],
    resources: &oci_spec::runtime::LinuxResources,
) -> Result<i32> {
    let fifo_path = locked.fifo_path();
    let c =
        CString::new(fifo_path.as_os_str().as_encoded_bytes()).expect("state paths have no NUL");
    // SAFETY: `c` is a NUL-terminated path alive for the call.
    sys::check(unsafe { libc::mkfifo(c.as_ptr(), 0o600) })
        .map_err(Error::io("mkfifo", &fifo_path))?;
    let fifo = sys::open(&c, libc::O_RDWR, 0).map_err(Error::io("open", &fifo_path))?;
    let (parent, child) = Channel::pair().map_err(|e| Error::Sys("socketpair", e))?;
    let fast = init::fast_path(plan);
    let bundle = st.bundle.to_string_lossy().into_owned();
    let lock_fd = locked.lock_fd();
    // Connect to the engine's console socket here, so a bad path is named by create.
    let console_socket: Option<OwnedFd> = match (&opts.console_socket, plan.process.terminal) {
        (Some(path), true) => Some(
            std::os::unix::net::UnixStream::connect(path)
                .map_err(Error::io("connect to console socket", path))?
                .into(),
        ),
        (None, true) => match own_console {
            Some(fd) => Some(fd.try_clone().map_err(|e| Error::Sys("dup", e))?),
            None => None,
        },
        _ => None,
    };
    let rootfs_c =
        CString::new(st.rootfs.as_os_str().as_encoded_bytes()).expect("paths have no NUL");
    // On cgroup v2, spawn straight into the cgroup: no migration, no global rwsem.
    let cg = st.cgroup.clone();
    let cg_fd = match &cg {
        Some(c) if !c.is_systemd() => c.open_unified_dir()?,
        _ => None,
    };
    let into_cgroup = cg_fd.is_some()
        && cg
            .as_ref()
            .is_some_and(|c| c.layout == cella_cgroups::Layout::Unified);
    // The cgroup namespace must be rooted at the container's cgroup: created at clone
    // time only when init is cloned straight into it, else by init once it is there.
    let late_cgroupns = plan.new_ns & libc::CLONE_NEWCGROUP != 0 && !(fast && into_cgroup);
    let cx = InitContext {
        channel: &child,
        fifo: &fifo,
        close_now: &[lock_fd],
        id: &st.id,
        bundle: &bundle,
        preserve_fds: opts.preserve_fds,
        fast,
        new_keyring: !opts.no_new_keyring,
        console: console_socket.as_ref().map(|s| (s, rootfs_c.as_c_str())),
        late_cgroupns,
    };
    let mut flags = if fast { plan.new_ns as u64 } else { 0 };
    if late_cgroupns {
        flags &= !(libc::CLONE_NEWCGROUP as u64);
    }
    let first = match sys::clone_fork(
        flags,
        cg_fd
            .as_ref()
            .filter(|_| into_cgroup)
            .map(|f| std::os::fd::AsFd::as_fd(f)),
    )
    .map_err(|source| match (&cg, into_cgroup) {
        // Cloned straight into the cgroup, the new process counts against its limits:
        // say which cgroup refused it.
        (Some(c), true) => Error::Io {
            op: "clone into cgroup (check its pids.max)",
            path: c.unified_dir().map(Path::to_path_buf).unwrap_or_default(),
            source,
        },
        _ => Error::Sys("clone", source),
    })? {
        Forked::Child => {
            drop(parent);
            init::child_main(plan, &cx)
        }
        Forked::Parent(pid) => pid,
    };
    drop(child);
    drop(fifo);
    drop(console_socket);
    let mut init_pid = if fast { Some(first) } else { None };
    let record = |st: &mut ContainerState, pid: i32| -> Result<()> {
        st.pid = pid;
        st.pid_start_time = state::proc_start(pid).map(|(s, _)| s).unwrap_or(0);
        locked.save(st)?;
        // Before init is told to go on, so nothing it starts escapes the limits.
        if let Some(c) = &cg
            && !into_cgroup
        {
            if c.is_systemd() {
                c.start_unit(pid, resources)?;
            } else {
                c.add_process(pid)?;
            }
        }
        Ok(())
    };
    if let Some(pid) = init_pid {
        record(st, pid)?;
    }
    // Requests of init that wait for its pid (known at once in the fast path, from
    // the first child's InitPid in the joining path, in either order).
    let mut need_cgroup = false;
    let mut mounts_ready = false;
    loop {
        let msg = parent.recv().map_err(|e| Error::Sys("read from init", e))?;
        match msg {
            Some(Message::UserNsCreated) => {
                // Directly, or through newuidmap/newgidmap for an unprivileged caller.
                if let Some(maps) = &plan.id_map_plan {
                    maps.write(first)?;
                }
                parent
                    .send(Message::MapsWritten)
                    .map_err(|e| Error::Sys("write to init", e))?;
            }
            Some(Message::InitPid(pid)) => {
                let _ = sys::waitpid(first, 0);
                init_pid = Some(pid);
                record(st, pid)?;
            }
            Some(Message::NeedCgroup) => need_cgroup = true,
            Some(Message::MountsReady) => mounts_ready = true,
            Some(Message::Ready) => break,
            Some(Message::Failed(errno, detail)) => {
                reap(first, init_pid);
                return Err(Error::Init {
                    detail: detail.text(),
                    source: io::Error::from_raw_os_error(errno),
                });
            }
            Some(m) => {
                return Err(Error::Sys(
                    "init protocol",
                    io::Error::other(format!("unexpected {m:?}")),
                ));
            }
            None => {
                reap(first, init_pid);
                // A memory limit below what init needs gets it OOM-killed before it
                // can say anything (podman `--memory 100k`): say so.
                let why = if cg.as_ref().is_some_and(|c| crate::ops::oom_kills(c) > 0) {
                    "was killed by the OOM killer: linux.resources.memory.limit is too low"
                } else {
                    "exited without a word"
                };
                return Err(Error::Sys("init", io::Error::other(why)));
            }
        }
        if need_cgroup && init_pid.is_some() {
            // record() has put init in its cgroup when it learnt the pid.
            need_cgroup = false;
            parent
                .send(Message::Continue)
                .map_err(|e| Error::Sys("write to init", e))?;
        }
        if mounts_ready && let Some(pid) = init_pid {
            mounts_ready = false;
            crate::network::attach(locked, st, pid)?;
            let state = st.hook_json(Status::Creating);
            for (kind, hooks) in runtime_hooks {
                for (index, h) in hooks.iter().enumerate() {
                    crate::hooks::run(h, &state).map_err(|source| Error::Hook {
                        kind,
                        index,
                        path: h.path().clone(),
                        source,
                    })?;
                }
            }
            parent
                .send(Message::InitPid(pid))
                .map_err(|e| Error::Sys("write to init", e))?;
            parent
                .send(Message::Continue)
                .map_err(|e| Error::Sys("write to init", e))?;
        }
    }
    let pid = init_pid.expect("Ready comes after the pid");
    st.created_complete = true;
    locked.save(st)?;
    if let Some(pf) = &opts.pid_file {
        write_pid_file(pf, pid)?;
    }
    Ok(pid)
}

fn reap(first: i32, init: Option<i32>) {
    let _ = sys::waitpid(first, 0);
    if let Some(p) = init
        && p != first
    {
        let _ = sys::kill(p, libc::SIGKILL);
    }
}

/// Writes the pid file atomically, as runc does (engines read it at once).
pub(crate) fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_extension("cella-tmp");
    std::fs::write(&tmp, pid.to_string()).map_err(Error::io("write pid file", &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io("write pid file", path))
}

/// Waits until the fifo has no reader left: init has exec'd (its descriptor was
/// close-on-exec) or died.
fn wait_reader_gone(fifo: &OwnedFd) {
    let mut p = libc::pollfd {
        fd: fifo.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    loop {
        // SAFETY: `p` is one live pollfd.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r > 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Signals `cella run` forwards to the container's init.
const FORWARDED: [libc::c_int; 8] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCHLD,
];

/// Blocks the forwarded signals (so they queue) and later relays them to init.
pub(crate) struct SignalForwarder {
    set: libc::sigset_t,
}

impl SignalForwarder {
    pub(crate) fn block() -> SignalForwarder {
        // SAFETY: `set` is initialised by sigemptyset before any other use; the mask
        // change affects this (single) thread only. Init resets its mask before exec.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in FORWARDED {
                libc::sigaddset(&mut set, s);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            SignalForwarder { set }
        }
    }

    /// Relays signals to `pid` until it exits; returns its status as a shell shows it.
    /// With a relayed terminal, a window size change resizes the container's pty
    /// instead of being forwarded.
    pub(crate) fn wait_forwarding_with(&self, pid: i32, relay: Option<&crate::tty::Relay>) -> u8 {
        loop {
            // Reap everything that has exited; stop when init has.
            loop {
                match sys::waitpid(-1, libc::WNOHANG) {
                    Ok((0, _)) | Err(_) => break,
                    Ok((p, status)) if p == pid => return exit_code(status),
                    Ok(_) => {}
                }
            }
            // SAFETY: `self.set` is an initialised sigset; a null siginfo is allowed.
            let sig = unsafe { libc::sigwaitinfo(&self.set, std::ptr::null_mut()) };
            match (sig, relay) {
                (libc::SIGWINCH, Some(r)) => r.resize(),
                (s, _) if s > 0 && s != libc::SIGCHLD => {
                    let _ = sys::kill(pid, s);
                }
                _ => {}
            }
        }
    }
}

/// A wait status as a shell shows it: the exit code, or 128 + the signal.
pub fn exit_code(status: libc::c_int) -> u8 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u8
    } else if libc::WIFSIGNALED(status) {
        128u8.wrapping_add(libc::WTERMSIG(status) as u8)
    } else {
        255
    }
}
