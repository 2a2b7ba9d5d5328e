//! `cella ns unshare`: run a command in new namespaces, as util-linux unshare does.
//!
//! Order, and why:
//! 1. Everything is prepared first (command, paths, id ranges, persist targets).
//! 2. A helper is forked *before* unshare when namespaces are to be persisted or ids
//!    mapped through newuidmap: it stays in the original namespaces, where the bind
//!    mounts must land and where newuidmap must run. It waits on the `go` pipe.
//! 3. unshare(2); simple id maps (one id onto our own) are written by us from inside.
//! 4. `go` is sent; the helper maps ids / bind-mounts `/proc/<us>/ns/*` and reports on
//!    the report pipe (see [`crate::exec`]), then exits.
//! 5. Time offsets go to /proc/self/timens_offsets before any child exists (the kernel
//!    refuses them once a process has entered the time namespace).
//! 6. Mount propagation of / is changed (default private) so nothing leaks back.
//! 7. With --fork a child is forked (pid and time namespaces apply to children); it sets
//!    the parent-death signal, changes root and cwd, mounts proc, then execs.

use crate::exec::{self, ChildReporter, ChildStep, ExecError, ExecPlan};
use crate::kind::{NsSet, NsType};
use crate::sys;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Unsharing failed.
#[derive(Debug, thiserror::Error)]
pub enum UnshareError {
    /// The command is malformed.
    #[error(transparent)]
    Command(#[from] ExecError),
    /// `--persist FILE` with several types.
    #[error("--persist `{}`: a file holds one namespace and {count} types are unshared: give an existing directory to get one file per type", path.display())]
    PersistNeedsDir {
        /// The path given.
        path: PathBuf,
        /// Number of types.
        count: usize,
    },
    /// A pid namespace persisted without --fork.
    #[error(
        "--persist with --pid needs --fork: a pid namespace exists only once its first process does"
    )]
    PidPersistNeedsFork,
    /// A persist target could not be created.
    #[error("create `{}` to persist a namespace on", path.display())]
    PersistFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No subordinate ids for --map-auto.
    #[error("no subordinate id range for `{user}` in `{}`: add a line such as `{user}:100000:65536`", file.display())]
    NoSubIds {
        /// The user.
        user: String,
        /// /etc/subuid or /etc/subgid.
        file: PathBuf,
    },
    /// unshare(2) was refused for lack of privilege.
    #[error(
        "unshare {types}: this needs CAP_SYS_ADMIN: run as root, or add --user --map-root-user to do it as an unprivileged user"
    )]
    Denied {
        /// The types asked.
        types: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// unshare(2) failed.
    #[error("unshare {types}")]
    Unshare {
        /// The types asked.
        types: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing a /proc file (id map, setgroups, time offsets) failed.
    #[error("write `{path}`")]
    ProcWrite {
        /// The file.
        path: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Changing the propagation of / failed.
    #[error("make mounts under / {mode}")]
    Propagation {
        /// The propagation asked.
        mode: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A step of the helper or the child failed.
    #[error("{what}")]
    Step {
        /// The step, with its object.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// newuidmap/newgidmap exited with an error.
    #[error(
        "{program} exited with status {status}: check the ranges in /etc/subuid and /etc/subgid"
    )]
    IdMapTool {
        /// newuidmap or newgidmap.
        program: &'static str,
        /// Its exit status.
        status: i32,
    },
    /// fork, pipe or wait failed.
    #[error("{what}")]
    Process {
        /// The operation.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The command could not be executed.
    #[error("execute `{program}`")]
    Exec {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Mount propagation to give / in a new mount namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    /// No events in or out (the default, as unshare(1)).
    Private,
    /// Events both ways.
    Shared,
    /// Events in only.
    Slave,
    /// Leave as inherited.
    Unchanged,
}

impl Propagation {
    /// Parses `private`, `shared`, `slave` or `unchanged`.
    pub fn from_name(s: &str) -> Option<Propagation> {
        Some(match s {
            "private" => Propagation::Private,
            "shared" => Propagation::Shared,
            "slave" => Propagation::Slave,
            "unchanged" => Propagation::Unchanged,
            _ => return None,
        })
    }

    fn flag(self) -> Option<(libc::c_ulong, &'static str)> {
        match self {
            Propagation::Private => Some((libc::MS_PRIVATE, "private")),
            Propagation::Shared => Some((libc::MS_SHARED, "shared")),
            Propagation::Slave => Some((libc::MS_SLAVE, "slave")),
            Propagation::Unchanged => None,
        }
    }
}

/// What to unshare and run.
#[derive(Clone, Debug)]
pub struct UnshareOptions {
    /// New namespaces. Id maps imply user, --mount-proc implies mnt, offsets imply time.
    pub types: NsSet,
    /// Map this uid inside onto our effective uid (0 for --map-root-user).
    pub map_user: Option<u32>,
    /// Map this gid inside onto our effective gid (setgroups is denied, as it must be).
    pub map_group: Option<u32>,
    /// Map our first subordinate uid and gid ranges from /etc/subuid and /etc/subgid to
    /// ids from 0, through newuidmap/newgidmap.
    pub map_auto: bool,
    /// Offset of CLOCK_MONOTONIC in the new time namespace, in seconds.
    pub monotonic: Option<i64>,
    /// Offset of CLOCK_BOOTTIME in the new time namespace, in seconds.
    pub boottime: Option<i64>,
    /// Run the command in a forked child (needed to be inside new pid/time namespaces).
    pub fork: bool,
    /// Mount a fresh proc here (in the child) before exec.
    pub mount_proc: Option<PathBuf>,
    /// Propagation for / in a new mount namespace.
    pub propagation: Propagation,
    /// Signal the child gets when we die (implies fork).
    pub kill_child: Option<i32>,
    /// New root directory (chroot) before exec.
    pub root: Option<PathBuf>,
    /// Working directory before exec (inside the new root).
    pub wd: Option<PathBuf>,
    /// Keep the namespaces alive by bind mounts: a file (one type) or a directory (one
    /// file per type, named after it).
    pub persist: Option<PathBuf>,
    /// The command; empty means `$SHELL` or /bin/sh.
    pub command: Vec<OsString>,
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

/// The first subordinate range of `user` (or of the numeric `id`) in `file`.
pub fn subordinate_range(file: &Path, user: &str, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    let id = id.to_string();
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let who = f.next()?;
        if who != user && who != id {
            return None;
        }
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)? == uid.to_string()).then(|| name.to_string())
        })
        .unwrap_or_else(|| uid.to_string())
}

/// The persist plan: (type, source name under /proc/<pid>/ns, target file).
type PersistPlan = Vec<(NsType, CString, CString, PathBuf)>;

fn plan_persist(
    opts: &UnshareOptions,
    types: NsSet,
    pid: u32,
) -> Result<(PersistPlan, Vec<PathBuf>), UnshareError> {
    let Some(base) = &opts.persist else {
        return Ok((Vec::new(), Vec::new()));
    };
    let count = types.iter().count();
    let targets: Vec<(NsType, PathBuf)> = if base.is_dir() {
        types.iter().map(|t| (t, base.join(t.name()))).collect()
    } else if count == 1 {
        types.iter().map(|t| (t, base.clone())).collect()
    } else {
        return Err(UnshareError::PersistNeedsDir {
            path: base.clone(),
            count,
        });
    };
    let mut plan = Vec::new();
    let mut created = Vec::new();
    for (t, path) in targets {
        if !path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|source| UnshareError::PersistFile {
                    path: path.clone(),
                    source,
                })?;
            created.push(path.clone());
        }
        let src =
            CString::new(format!("/proc/{pid}/ns/{}", t.for_children_name())).unwrap_or_default();
        plan.push((t, src, cpath(&path), path));
    }
    Ok((plan, created))
}

/// Runs in the helper, in the original namespaces, after `go`: maps ids through
/// newuidmap/newgidmap and bind-mounts the namespace files. Only system calls on data
/// prepared before the fork.
fn helper_main(
    go: &sys::Pipe,
    reporter: &ChildReporter,
    maps: &[(ChildStep, ExecPlan)],
    persist: &PersistPlan,
) -> ! {
    let mut b = [0u8; 1];
    if !matches!(sys::read_full(go.as_fd(), &mut b), Ok(1)) {
        // The parent failed before unsharing: nothing to do.
        sys::exit_now(0);
    }
    for (step, plan) in maps {
        match sys::fork() {
            Ok(sys::Forked::Child) => {
                plan.exec();
                sys::exit_now(127);
            }
            Ok(sys::Forked::Parent(pid)) => match sys::wait_exit_code(pid) {
                Ok(0) => {}
                Ok(code) => {
                    reporter.report(*step, -(code as i32));
                    sys::exit_now(1);
                }
                Err(e) => reporter.fail(*step, &e),
            },
            Err(e) => reporter.fail(*step, &e),
        }
    }
    for (i, (_, src, dst, _)) in persist.iter().enumerate() {
        if let Err(e) = sys::mount(src, dst, None, libc::MS_BIND) {
            // All or nothing: undo the bind mounts made so far, here where they live.
            for (_, _, done, _) in &persist[..i] {
                let _ = sys::umount_detach(done);
            }
            reporter.fail(ChildStep::BindNamespace, &e);
        }
    }
    sys::exit_now(0)
}

/// A helper process waiting in the original namespaces for `go`.
struct Helper {
    pid: libc::pid_t,
    go: sys::Pipe,
    reader: exec::ParentReader,
}

impl Helper {
    fn start(maps: &[(ChildStep, ExecPlan)], persist: &PersistPlan) -> io::Result<Helper> {
        let (go_r, go_w) = sys::pipe()?;
        let (reader, reporter) = exec::report_pipe()?;
        match sys::fork()? {
            sys::Forked::Child => {
                drop(go_w);
                drop(reader);
                helper_main(&go_r, &reporter, maps, persist)
            }
            sys::Forked::Parent(pid) => Ok(Helper {
                pid,
                go: go_w,
                reader,
            }),
        }
    }

    /// Lets the helper go without work (we failed first) and reaps it.
    fn abandon(self) {
        drop(self.go);
        let _ = sys::wait_exit_code(self.pid);
    }

    /// Lets the helper do its work; returns its failure, if any.
    fn release(self, opts: &UnshareOptions, plan: &ExecPlan) -> Result<(), UnshareError> {
        let sent = sys::write_all(self.go.as_fd(), b"g");
        drop(self.go);
        let report = self.reader.wait_code();
        let _ = sys::wait_exit_code(self.pid);
        sent.map_err(|source| UnshareError::Process {
            what: "signal a helper process",
            source,
        })?;
        match report {
            Ok(None) => Ok(()),
            Ok(Some((step, code))) if code < 0 => {
                let program = if step == ChildStep::NewUidMap {
                    "newuidmap"
                } else {
                    "newgidmap"
                };
                Err(UnshareError::IdMapTool {
                    program,
                    status: -code,
                })
            }
            Ok(Some((step, code))) => Err(step_error(
                opts,
                plan,
                step,
                io::Error::from_raw_os_error(code),
            )),
            Err(source) => Err(UnshareError::Process {
                what: "read a helper's report",
                source,
            }),
        }
    }
}

fn write_proc(path: &'static str, text: &str) -> Result<(), UnshareError> {
    std::fs::write(path, text).map_err(|source| UnshareError::ProcWrite { path, source })
}

/// Prepared, allocation-free steps of the process that execs.
struct FinalSteps {
    kill_child: Option<i32>,
    root: Option<CString>,
    wd: Option<CString>,
    proc_dir: Option<CString>,
}

impl FinalSteps {
    /// Runs the steps; on failure names the step. Async-signal-safe.
    fn run(&self) -> Result<(), (ChildStep, io::Error)> {
        if let Some(sig) = self.kill_child {
            sys::set_parent_death_signal(sig).map_err(|e| (ChildStep::ParentDeathSignal, e))?;
        }
        if let Some(r) = &self.root {
            sys::chroot(r).map_err(|e| (ChildStep::Chroot, e))?;
            if self.wd.is_none() {
                sys::chdir(c"/").map_err(|e| (ChildStep::Chdir, e))?;
            }
        }
        if let Some(w) = &self.wd {
            sys::chdir(w).map_err(|e| (ChildStep::Chdir, e))?;
        }
        if let Some(p) = &self.proc_dir {
            sys::mount(c"none", p, None, libc::MS_PRIVATE | libc::MS_REC)
                .map_err(|e| (ChildStep::Propagation, e))?;
            sys::mount(
                c"proc",
                p,
                Some(c"proc"),
                libc::MS_NOSUID | libc::MS_NOEXEC | libc::MS_NODEV,
            )
            .map_err(|e| (ChildStep::MountProc, e))?;
        }
        Ok(())
    }
}

fn step_error(
    opts: &UnshareOptions,
    plan: &ExecPlan,
    step: ChildStep,
    source: io::Error,
) -> UnshareError {
    let show = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let what = match step {
        ChildStep::Exec => {
            return UnshareError::Exec {
                program: plan.program(),
                source,
            };
        }
        ChildStep::MountProc => format!("mount proc at `{}`", show(&opts.mount_proc)),
        ChildStep::Propagation => format!(
            "make `{}` private before mounting proc",
            show(&opts.mount_proc)
        ),
        ChildStep::Chroot => format!("change root to `{}`", show(&opts.root)),
        ChildStep::Chdir => format!(
            "change directory to `{}`",
            opts.wd
                .as_ref()
                .map_or("/".into(), |p| p.display().to_string())
        ),
        ChildStep::ParentDeathSignal => "set the parent-death signal".into(),
        ChildStep::NewUidMap => "run newuidmap".into(),
        ChildStep::NewGidMap => "run newgidmap".into(),
        ChildStep::Unshare => "unshare".into(),
        ChildStep::BindNamespace
            if opts.types.contains(NsType::Mnt) && source.raw_os_error() == Some(libc::EINVAL) =>
        {
            format!(
                "bind-mount the new namespaces onto `{}` (a mount namespace cannot be bound on a shared mount: make the directory a private mount first, e.g. `mount --bind DIR DIR && mount --make-private DIR`)",
                show(&opts.persist)
            )
        }
        ChildStep::BindNamespace => format!(
            "bind-mount the new namespaces onto `{}`",
            show(&opts.persist)
        ),
    };
    UnshareError::Step { what, source }
}

/// Unshares the namespaces and runs the command; returns its exit status (128+signal when
/// killed). Without fork the command replaces this process: returns only on failure.
pub fn unshare(opts: &UnshareOptions) -> Result<u8, UnshareError> {
    let mut types = opts.types;
    if opts.map_user.is_some() || opts.map_group.is_some() || opts.map_auto {
        types.insert(NsType::User);
    }
    if opts.mount_proc.is_some() {
        types.insert(NsType::Mnt);
    }
    if opts.monotonic.is_some() || opts.boottime.is_some() {
        types.insert(NsType::Time);
    }
    let fork = opts.fork || opts.kill_child.is_some();
    let plan = ExecPlan::new(&opts.command)?;
    let me = std::process::id();
    let (euid, egid) = (sys::geteuid(), sys::getegid());

    // Id ranges for newuidmap/newgidmap.
    let mut maps: Vec<(ChildStep, ExecPlan)> = Vec::new();
    if opts.map_auto {
        let user = user_name(euid);
        let mut uid_args: Vec<OsString> = vec!["newuidmap".into(), me.to_string().into()];
        let mut gid_args: Vec<OsString> = vec!["newgidmap".into(), me.to_string().into()];
        if let Some(u) = opts.map_user {
            uid_args.extend([u.to_string().into(), euid.to_string().into(), "1".into()]);
        }
        if let Some(g) = opts.map_group {
            gid_args.extend([g.to_string().into(), egid.to_string().into(), "1".into()]);
        }
        for (file, args) in [
            ("/etc/subuid", &mut uid_args),
            ("/etc/subgid", &mut gid_args),
        ] {
            let (start, count) =
                subordinate_range(Path::new(file), &user, euid).ok_or_else(|| {
                    UnshareError::NoSubIds {
                        user: user.clone(),
                        file: file.into(),
                    }
                })?;
            args.extend([
                "0".into(),
                start.to_string().into(),
                count.to_string().into(),
            ]);
        }
        maps.push((ChildStep::NewUidMap, ExecPlan::new(&uid_args)?));
        maps.push((ChildStep::NewGidMap, ExecPlan::new(&gid_args)?));
    }
    let (persist, created) = plan_persist(opts, types, me)?;
    let cleanup = |created: &[PathBuf]| {
        for p in created {
            let _ = std::fs::remove_file(p);
        }
    };
    let final_steps = FinalSteps {
        kill_child: opts.kill_child,
        root: opts.root.as_deref().map(cpath),
        wd: opts.wd.as_deref().map(cpath),
        proc_dir: opts.mount_proc.as_deref().map(cpath),
    };

    // The helpers, forked before unshare so they stay in the original namespaces.
    let pid_persisted = persist.iter().any(|(t, ..)| *t == NsType::Pid);
    if pid_persisted && !fork {
        cleanup(&created);
        return Err(UnshareError::PidPersistNeedsFork);
    }
    let start = |maps: &[(ChildStep, ExecPlan)], persist: &PersistPlan| {
        Helper::start(maps, persist).map_err(|source| UnshareError::Process {
            what: "start a helper process",
            source,
        })
    };
    let id_helper = if maps.is_empty() {
        None
    } else {
        Some(start(&maps, &Vec::new()))
    };
    let bind_helper = if persist.is_empty() {
        None
    } else {
        Some(start(&[], &persist))
    };
    let (id_helper, bind_helper) = match (id_helper.transpose(), bind_helper.transpose()) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            let mut err = None;
            for h in [a, b] {
                match h {
                    Ok(Some(h)) => h.abandon(),
                    Err(e) => err = Some(e),
                    Ok(None) => {}
                }
            }
            cleanup(&created);
            return Err(err.unwrap_or(UnshareError::PidPersistNeedsFork));
        }
    };

    let names: Vec<&str> = types.iter().map(NsType::name).collect();
    if let Err(source) = sys::unshare(types.clone_flags()) {
        let types = names.join(",");
        for h in [id_helper, bind_helper].into_iter().flatten() {
            h.abandon();
        }
        cleanup(&created);
        return Err(if source.raw_os_error() == Some(libc::EPERM) {
            UnshareError::Denied { types, source }
        } else {
            UnshareError::Unshare { types, source }
        });
    }

    if !opts.map_auto {
        if let Some(u) = opts.map_user {
            write_proc("/proc/self/uid_map", &format!("{u} {euid} 1\n"))?;
        }
        if let Some(g) = opts.map_group {
            write_proc("/proc/self/setgroups", "deny")?;
            write_proc("/proc/self/gid_map", &format!("{g} {egid} 1\n"))?;
        }
    }
    if let Some(h) = id_helper {
        h.release(opts, &plan)?;
    }
    let mut bind_helper = bind_helper;
    if !pid_persisted {
        if let Some(h) = bind_helper.take() {
            h.release(opts, &plan).inspect_err(|_| cleanup(&created))?;
        }
    }

    let mut offsets = String::new();
    if let Some(s) = opts.monotonic {
        offsets.push_str(&format!("monotonic {s} 0\n"));
    }
    if let Some(s) = opts.boottime {
        offsets.push_str(&format!("boottime {s} 0\n"));
    }
    if !offsets.is_empty() {
        write_proc("/proc/self/timens_offsets", &offsets)?;
    }
    if types.contains(NsType::Mnt) {
        if let Some((flag, mode)) = opts.propagation.flag() {
            sys::mount(c"none", c"/", None, libc::MS_REC | flag)
                .map_err(|source| UnshareError::Propagation { mode, source })?;
        }
    }

    if !fork {
        final_steps
            .run()
            .map_err(|(step, e)| step_error(opts, &plan, step, e))?;
        let source = plan.exec();
        return Err(UnshareError::Exec {
            program: plan.program(),
            source,
        });
    }
    let (reader, reporter) = exec::report_pipe().map_err(|source| UnshareError::Process {
        what: "make a pipe",
        source,
    })?;
    match sys::fork().map_err(|source| UnshareError::Process {
        what: "fork",
        source,
    })? {
        sys::Forked::Child => {
            drop(reader);
            if let Err((step, e)) = final_steps.run() {
                reporter.fail(step, &e);
            }
            let e = plan.exec();
            reporter.fail(ChildStep::Exec, &e)
        }
        sys::Forked::Parent(child) => {
            drop(reporter);
            // A pid namespace can be bound only once its first process exists.
            if let Some(h) = bind_helper {
                if let Err(e) = h.release(opts, &plan) {
                    let _ = sys::kill(child, libc::SIGKILL);
                    let _ = sys::wait_exit_code(child);
                    cleanup(&created);
                    return Err(e);
                }
            }
            sys::ignore_signal(libc::SIGINT, true);
            sys::ignore_signal(libc::SIGTERM, true);
            let report = reader.wait();
            let code = sys::wait_exit_code(child).map_err(|source| UnshareError::Process {
                what: "wait for the command",
                source,
            })?;
            match report {
                Ok(Some((step, source))) => Err(step_error(opts, &plan, step, source)),
                _ => Ok(code),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_subordinate_ranges_by_name_or_id() {
        let dir = std::env::temp_dir().join(format!("cella-ns-subuid-{}", std::process::id()));
        std::fs::write(&dir, "alice:100000:65536\n1001:200000:1000\n").unwrap();
        assert_eq!(
            subordinate_range(&dir, "alice", 1000),
            Some((100000, 65536))
        );
        assert_eq!(subordinate_range(&dir, "bob", 1001), Some((200000, 1000)));
        assert_eq!(subordinate_range(&dir, "carol", 7), None);
        std::fs::remove_file(&dir).unwrap();
    }
}
