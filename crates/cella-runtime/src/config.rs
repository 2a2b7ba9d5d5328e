//! Reading config.json and turning it into an [`InitPlan`]: everything validated, every
//! string converted for the kernel, every namespace path opened, before anything is
//! created. Errors carry the JSON path of the offending value.

use crate::error::{Error, Result};
use cella_isolate::caps::{self, CapSets};
use cella_isolate::creds::{self, Rlimit, SchedAttr, User};
use cella_isolate::idmap::{Caller, IdMapError, IdMapPlan};
use cella_isolate::namespaces::{IdMap, NsJoin, NsKind, TimeOffsets};
use cella_isolate::rootfs::{RootfsOptions, RootfsPlan};
use oci_spec::runtime::{Hook, LinuxIdMapping, Spec};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// Reads and parses `<bundle>/config.json`. A malformed document or a value of the wrong
/// type is reported with its JSON path.
pub fn load(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let bytes = std::fs::read(&path).map_err(Error::io("read", &path))?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." || field == "?" {
            "(document)".to_owned()
        } else {
            field
        };
        Error::config(field, e.into_inner().to_string())
    })
}

/// What the container's init does, decided in the runtime before the clone.
#[derive(Debug)]
pub struct InitPlan {
    /// CLONE_NEW* flags of the namespaces to create.
    pub new_ns: libc::c_int,
    /// Existing namespaces to join, user namespace first.
    pub joins: Vec<NsJoin>,
    /// uid map of a new user namespace.
    pub uid_maps: Vec<IdMap>,
    /// gid map of a new user namespace.
    pub gid_maps: Vec<IdMap>,
    /// Who writes those maps (the runtime, or newuidmap/newgidmap for an unprivileged
    /// caller's subordinate ids), checked against /etc/subuid and /etc/subgid.
    pub id_map_plan: Option<IdMapPlan>,
    /// Offsets of a new time namespace.
    pub time_offsets: TimeOffsets,
    /// Hostname to set.
    pub hostname: Option<Vec<u8>>,
    /// Domainname to set.
    pub domainname: Option<Vec<u8>>,
    /// The root filesystem.
    pub rootfs: RootfsPlan,
    /// (path under /proc/sys, value) to write.
    pub sysctls: Vec<(CString, Vec<u8>)>,
    /// The user's process.
    pub process: ProcessPlan,
    /// Hooks run by init in the container's namespaces, before pivot_root.
    pub create_container_hooks: Vec<Hook>,
    /// Hooks run by init after `start`, before exec.
    pub start_container_hooks: Vec<Hook>,
    /// The compiled seccomp filter, and where to send its notify fd (listenerPath,
    /// listenerMetadata).
    pub seccomp: Option<SeccompPlan>,
    /// Things the config asks for that cella cannot do on this host, to tell the user.
    pub warnings: Vec<String>,
}

/// A seccomp filter compiled before the fork.
#[derive(Debug)]
pub struct SeccompPlan {
    /// The BPF program.
    pub program: cella_seccomp::SeccompProgram,
    /// `linux.seccomp.listenerPath`, for SCMP_ACT_NOTIFY.
    pub listener: Option<PathBuf>,
    /// `linux.seccomp.listenerMetadata`.
    pub metadata: Option<String>,
}

/// The user's process: program, environment, identity and limits.
#[derive(Debug)]
pub struct ProcessPlan {
    /// argv.
    pub args: Vec<CString>,
    /// envp.
    pub env: Vec<CString>,
    /// PATH used to find args[0].
    pub path_var: Vec<u8>,
    /// Working directory inside the container.
    pub cwd: CString,
    /// Identity.
    pub user: User,
    /// Capabilities.
    pub caps: CapSets,
    /// Set no_new_privs.
    pub no_new_privs: bool,
    /// rlimits.
    pub rlimits: Vec<Rlimit>,
    /// /proc/self/oom_score_adj.
    pub oom_score_adj: Option<i32>,
    /// (class, level) for ioprio_set.
    pub io_priority: Option<(u32, u32)>,
    /// sched_setattr.
    pub scheduler: Option<SchedAttr>,
    /// AppArmor profile to exec into, when AppArmor is enabled.
    pub apparmor: Option<CString>,
    /// SELinux label to exec into, when SELinux is enabled.
    pub selinux_label: Option<CString>,
    /// Allocate a pty.
    pub terminal: bool,
    /// Its size (rows, columns), `process.consoleSize`.
    pub console_size: Option<(u16, u16)>,
}

/// Default PATH when the config's environment has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn cstring(field: &str, s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::config(field, "contains a NUL byte"))
}

fn id_maps(field: &str, maps: Option<&Vec<LinuxIdMapping>>) -> Vec<IdMap> {
    let _ = field;
    maps.map(|v| {
        v.iter()
            .map(|m| IdMap {
                inside: m.container_id(),
                outside: m.host_id(),
                count: m.size(),
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Capability names in `set` as a mask; unknown names are skipped with a warning, as
/// runc does, so a config written for a newer kernel still runs.
fn cap_mask(
    field: &str,
    set: Option<&oci_spec::runtime::Capabilities>,
    warnings: &mut Vec<String>,
) -> u64 {
    let last = caps::last_cap();
    let mut mask = 0u64;
    for c in set.into_iter().flatten() {
        let name = serde_json::to_value(c)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned));
        match name.as_deref().and_then(caps::from_name) {
            Some(n) if n <= last => mask |= 1 << n,
            _ => warnings.push(format!(
                "{field}: {} is not known to this kernel; ignored",
                name.unwrap_or_default()
            )),
        }
    }
    mask
}

/// Which namespace a sysctl key needs, or None if it is not namespaced at all.
fn sysctl_namespace(key: &str) -> Option<NsKind> {
    const IPC: [&str; 7] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
    ];
    if IPC.contains(&key) || key == "kernel.shm_rmid_forced" || key.starts_with("fs.mqueue.") {
        Some(NsKind::Ipc)
    } else if key.starts_with("net.") {
        Some(NsKind::Net)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(NsKind::Uts)
    } else {
        None
    }
}

/// Validates `spec` (from the bundle at `bundle`) and builds the plan.
pub fn plan(spec: &Spec, bundle: &Path, no_pivot: bool) -> Result<InitPlan> {
    let mut warnings = Vec::new();
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::config("linux", "missing"))?;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::config("process", "missing"))?;

    // Namespaces.
    let mut new_ns = 0;
    let mut joins = Vec::new();
    let mut seen = BTreeMap::new();
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        let name = serde_json::to_value(ns.typ()).ok();
        let name = name.as_ref().and_then(|v| v.as_str()).unwrap_or("");
        let kind = NsKind::from_oci_name(name).ok_or_else(|| {
            Error::config(
                format!("linux.namespaces[{i}].type"),
                format!("unknown namespace \"{name}\""),
            )
        })?;
        if let Some(j) = seen.insert(kind, i) {
            return Err(Error::config(
                format!("linux.namespaces[{i}].type"),
                format!("\"{name}\" is already listed at linux.namespaces[{j}]"),
            ));
        }
        match ns.path() {
            Some(p) if !p.as_os_str().is_empty() => {
                if !p.is_absolute() {
                    return Err(Error::config(
                        format!("linux.namespaces[{i}].path"),
                        "must be an absolute path",
                    ));
                }
                let j = NsJoin::open(kind, p).map_err(|e| {
                    Error::config(
                        format!("linux.namespaces[{i}].path"),
                        crate::error_chain(&e),
                    )
                })?;
                joins.push(j);
            }
            _ => new_ns |= kind.flag(),
        }
    }
    joins.sort_by_key(|j| j.kind);
    let has = |k: NsKind| seen.contains_key(&k);
    let creates = |k: NsKind| new_ns & k.flag() != 0;
    if !has(NsKind::Mount) {
        return Err(Error::config(
            "linux.namespaces",
            "a mount namespace is required",
        ));
    }

    // User namespace and id maps.
    let uid_maps = id_maps("linux.uidMappings", linux.uid_mappings().as_ref());
    let gid_maps = id_maps("linux.gidMappings", linux.gid_mappings().as_ref());
    if creates(NsKind::User) {
        if uid_maps.is_empty() || gid_maps.is_empty() {
            return Err(Error::config(
                "linux.uidMappings",
                "a new user namespace needs uidMappings and gidMappings",
            ));
        }
    } else if !uid_maps.is_empty() || !gid_maps.is_empty() {
        return Err(Error::config(
            "linux.uidMappings",
            "id mappings need a new user namespace",
        ));
    }
    // Only CAP_SYS_ADMIN may create the other namespaces; an unprivileged user has it
    // in a user namespace of its own, created first.
    if cella_isolate::sys::geteuid() != 0 && !has(NsKind::User) && new_ns != 0 {
        return Err(Error::config(
            "linux.namespaces",
            "an unprivileged user can create namespaces only inside a user namespace: add {\"type\": \"user\"} with linux.uidMappings and linux.gidMappings (`cella spec --rootless` writes such a config)",
        ));
    }
    let id_map_plan = if creates(NsKind::User) {
        Some(
            IdMapPlan::new(uid_maps.clone(), gid_maps.clone(), &Caller::current()).map_err(
                |e| match e {
                    IdMapError::Invalid { field, message } => Error::config(field, message),
                    e => Error::IdMap(e),
                },
            )?,
        )
    } else {
        None
    };
    // The runtime may itself be root of a user namespace (rootless Podman runs it so):
    // its container is in one too, even without a new one of its own.
    let in_user_namespace = has(NsKind::User) || !cella_isolate::idmap::in_initial_user_namespace();

    // Time namespace.
    let mut time_offsets = TimeOffsets::default();
    for (clock, off) in linux.time_offsets().iter().flatten() {
        let field = format!("linux.timeOffsets.{clock}");
        if !creates(NsKind::Time) {
            return Err(Error::config(
                field,
                "time offsets need a new time namespace",
            ));
        }
        let v = Some((off.secs().unwrap_or(0), off.nanosecs().unwrap_or(0)));
        if off.nanosecs().unwrap_or(0) >= 1_000_000_000 {
            return Err(Error::config(
                format!("{field}.nanosecs"),
                "must be below 1000000000",
            ));
        }
        match clock.as_str() {
            "monotonic" => time_offsets.monotonic = v,
            "boottime" => time_offsets.boottime = v,
            _ => {
                return Err(Error::config(
                    field,
                    "unknown clock: use monotonic or boottime",
                ));
            }
        }
    }

    // Hostname and domainname.
    let hostname = spec
        .hostname()
        .as_ref()
        .filter(|h| !h.is_empty())
        .map(|h| h.as_bytes().to_vec());
    let domainname = spec
        .domainname()
        .as_ref()
        .filter(|h| !h.is_empty())
        .map(|h| h.as_bytes().to_vec());
    if (hostname.is_some() || domainname.is_some()) && !creates(NsKind::Uts) {
        let field = if hostname.is_some() {
            "hostname"
        } else {
            "domainname"
        };
        return Err(Error::config(field, "setting it needs a new uts namespace"));
    }

    // Sysctls: only namespaced ones, and only in a namespace of the container's own.
    let mut sysctls = Vec::new();
    let mut keys: Vec<_> = linux.sysctl().iter().flatten().collect();
    keys.sort();
    for (key, value) in keys {
        let field = format!("linux.sysctl.{key}");
        if key.is_empty() || key.split(['.', '/']).any(|p| p.is_empty() || p == "..") {
            return Err(Error::config(field, "not a valid sysctl name"));
        }
        match sysctl_namespace(key) {
            Some(k) if creates(k) => {}
            Some(k) => {
                return Err(Error::config(
                    field,
                    format!(
                        "needs a new {} namespace of the container's own",
                        k.oci_name()
                    ),
                ));
            }
            None => {
                return Err(Error::config(
                    field,
                    "is not namespaced: it would change the host",
                ));
            }
        }
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        sysctls.push((cstring(&field, &path)?, value.as_bytes().to_vec()));
    }

    // Rootfs.
    let rootfs = RootfsPlan::from_spec(
        spec,
        bundle,
        RootfsOptions {
            no_pivot,
            in_user_namespace,
            new_mount_namespace: creates(NsKind::Mount),
        },
    )?;

    let process = process_plan(process, &mut warnings)?;
    let seccomp = match linux.seccomp() {
        Some(s) => Some(SeccompPlan {
            program: cella_seccomp::compile(s)?,
            listener: s.listener_path().clone(),
            metadata: s.listener_metadata().clone(),
        }),
        None => None,
    };
    let hooks = spec.hooks().as_ref();
    let list = |h: Option<&Vec<Hook>>| h.cloned().unwrap_or_default();
    Ok(InitPlan {
        new_ns,
        joins,
        uid_maps,
        gid_maps,
        id_map_plan,
        time_offsets,
        hostname,
        domainname,
        rootfs,
        sysctls,
        process,
        create_container_hooks: list(hooks.and_then(|h| h.create_container().as_ref())),
        start_container_hooks: list(hooks.and_then(|h| h.start_container().as_ref())),
        seccomp,
        warnings,
    })
}

fn lsm_enabled(name: &str) -> bool {
    std::fs::read_to_string("/sys/kernel/security/lsm")
        .is_ok_and(|s| s.split(',').any(|l| l.trim() == name))
}

/// Validates the `process` section and converts it.
pub fn process_plan(
    p: &oci_spec::runtime::Process,
    warnings: &mut Vec<String>,
) -> Result<ProcessPlan> {
    let args = p
        .args()
        .as_ref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::config("process.args", "must name the program to run"))?;
    let args = args
        .iter()
        .enumerate()
        .map(|(i, a)| cstring(&format!("process.args[{i}]"), a))
        .collect::<Result<Vec<_>>>()?;
    let mut path_var = DEFAULT_PATH.as_bytes().to_vec();
    let mut env = Vec::new();
    for (i, kv) in p.env().iter().flatten().enumerate() {
        if !kv.contains('=') {
            return Err(Error::config(
                format!("process.env[{i}]"),
                format!("{kv:?} is not of the form KEY=VALUE"),
            ));
        }
        if let Some(v) = kv.strip_prefix("PATH=") {
            path_var = v.as_bytes().to_vec();
        }
        env.push(cstring(&format!("process.env[{i}]"), kv)?);
    }
    let cwd = p.cwd();
    if !cwd.is_absolute() {
        return Err(Error::config(
            "process.cwd",
            format!("{} is not an absolute path", cwd.display()),
        ));
    }
    let cwd = cstring("process.cwd", &cwd.to_string_lossy())?;

    let u = p.user();
    let user = User {
        uid: u.uid(),
        gid: u.gid(),
        additional_gids: u.additional_gids().clone().unwrap_or_default(),
        umask: u.umask(),
    };
    let caps = match p.capabilities() {
        Some(c) => CapSets {
            bounding: cap_mask(
                "process.capabilities.bounding",
                c.bounding().as_ref(),
                warnings,
            ),
            effective: cap_mask(
                "process.capabilities.effective",
                c.effective().as_ref(),
                warnings,
            ),
            permitted: cap_mask(
                "process.capabilities.permitted",
                c.permitted().as_ref(),
                warnings,
            ),
            inheritable: cap_mask(
                "process.capabilities.inheritable",
                c.inheritable().as_ref(),
                warnings,
            ),
            ambient: cap_mask(
                "process.capabilities.ambient",
                c.ambient().as_ref(),
                warnings,
            ),
        },
        None => CapSets::default(),
    };

    let mut rlimits = Vec::new();
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        let name = serde_json::to_value(r.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let resource = creds::rlimit_from_name(&name).ok_or_else(|| {
            Error::config(
                format!("process.rlimits[{i}].type"),
                format!("unknown rlimit {name:?}"),
            )
        })?;
        if r.soft() > r.hard() {
            return Err(Error::config(
                format!("process.rlimits[{i}]"),
                format!("soft limit {} is above hard limit {}", r.soft(), r.hard()),
            ));
        }
        rlimits.push(Rlimit {
            resource,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    if let Some(adj) = p.oom_score_adj()
        && !(-1000..=1000).contains(&adj)
    {
        return Err(Error::config(
            "process.oomScoreAdj",
            format!("{adj} is outside -1000..1000"),
        ));
    }
    let io_priority = match p.io_priority() {
        Some(io) => {
            let class = serde_json::to_value(io.class())
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let class = match class.as_str() {
                "IOPRIO_CLASS_RT" => 1,
                "IOPRIO_CLASS_BE" => 2,
                "IOPRIO_CLASS_IDLE" => 3,
                other => {
                    return Err(Error::config(
                        "process.ioPriority.class",
                        format!("unknown class {other:?}"),
                    ));
                }
            };
            if !(0..=7).contains(&io.priority()) {
                return Err(Error::config(
                    "process.ioPriority.priority",
                    "must be between 0 and 7",
                ));
            }
            Some((class, io.priority() as u32))
        }
        None => None,
    };
    let scheduler = match p.scheduler() {
        Some(s) => {
            let policy = serde_json::to_value(s.policy())
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let policy = match policy.as_str() {
                "SCHED_OTHER" => 0,
                "SCHED_FIFO" => 1,
                "SCHED_RR" => 2,
                "SCHED_BATCH" => 3,
                "SCHED_ISO" => 4,
                "SCHED_IDLE" => 5,
                "SCHED_DEADLINE" => 6,
                other => {
                    return Err(Error::config(
                        "process.scheduler.policy",
                        format!("unknown policy {other:?}"),
                    ));
                }
            };
            Some(SchedAttr {
                policy,
                nice: s.nice().unwrap_or(0),
                priority: s.priority().unwrap_or(0).max(0) as u32,
                runtime: s.runtime().unwrap_or(0),
                deadline: s.deadline().unwrap_or(0),
                period: s.period().unwrap_or(0),
                ..SchedAttr::default()
            })
        }
        None => None,
    };
    let apparmor = match p.apparmor_profile().as_deref().filter(|s| !s.is_empty()) {
        Some(prof) if lsm_enabled("apparmor") => {
            Some(cstring("process.apparmorProfile", &format!("exec {prof}"))?)
        }
        Some(prof) => {
            warnings.push(format!("process.apparmorProfile: AppArmor is not enabled on this host; {prof:?} not applied"));
            None
        }
        None => None,
    };
    let selinux_label = match p.selinux_label().as_deref().filter(|s| !s.is_empty()) {
        Some(l) if lsm_enabled("selinux") => Some(cstring("process.selinuxLabel", l)?),
        Some(l) => {
            warnings.push(format!(
                "process.selinuxLabel: SELinux is not enabled on this host; {l:?} not applied"
            ));
            None
        }
        None => None,
    };
    Ok(ProcessPlan {
        args,
        env,
        path_var,
        cwd,
        user,
        caps,
        no_new_privs: p.no_new_privileges().unwrap_or(false),
        rlimits,
        oom_score_adj: p.oom_score_adj(),
        io_priority,
        scheduler,
        apparmor,
        selinux_label,
        terminal: p.terminal().unwrap_or(false),
        console_size: p.console_size().as_ref().map(|b| {
            (
                b.height().min(u16::MAX as u64) as u16,
                b.width().min(u16::MAX as u64) as u16,
            )
        }),
    })
}

/// The absolute path of the rootfs named in the config.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::config("root", "missing"))?;
    let p = root.path();
    let abs = if p.is_absolute() {
        p.clone()
    } else {
        bundle.join(p)
    };
    std::fs::canonicalize(&abs)
        .map_err(|e| Error::config("root.path", format!("{}: {e}", abs.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_classes() {
        assert_eq!(sysctl_namespace("net.ipv4.ip_forward"), Some(NsKind::Net));
        assert_eq!(sysctl_namespace("kernel.shmmax"), Some(NsKind::Ipc));
        assert_eq!(sysctl_namespace("fs.mqueue.msg_max"), Some(NsKind::Ipc));
        assert_eq!(sysctl_namespace("vm.swappiness"), None);
    }

    #[test]
    fn json_path_in_parse_errors() {
        let dir = std::env::temp_dir().join(format!("cella-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"netw"}]}}"#,
        )
        .unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(
            e.starts_with("config.json: linux.namespaces[2].type: unknown variant `netw`"),
            "{e}"
        );
        // Cut inside a value: the path names the value.
        std::fs::write(dir.join("config.json"), "{\"ociVersion\": ").unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(
            e.starts_with("config.json: ociVersion: EOF while parsing"),
            "{e}"
        );
        // Cut between values: the document as a whole.
        std::fs::write(dir.join("config.json"), "{\"ociVersion\": \"1.0.0\",").unwrap();
        let e = load(&dir).unwrap_err().to_string();
        assert!(
            e.starts_with("config.json: (document): EOF while parsing"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
