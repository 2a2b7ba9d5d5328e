//! Runs untrusted programs (an autograder's submissions) one-shot: isolated in new user,
//! pid, mount, network, IPC, UTS and cgroup namespaces, without capabilities, under
//! no_new_privs and a seccomp allowlist, bounded (CPU and wall time, memory, processes,
//! output, file size, open files, stack), judged (a [`Verdict`]) and audited without
//! recording the submission's data ([`audit`]).
//!
//! [`run`] is the supervisor: it stays alive until the program ends, watches its limits,
//! hears of every denied syscall through a seccomp notification listener, keeps evidence
//! of a violation ([`evidence`]) and removes everything it made. `docs/sandbox.md`
//! describes the whole design and the verdict's mapping to exit codes.

pub mod audit;
pub mod batch;
mod cgroup;
mod child;
pub mod evidence;
mod fs;
pub mod profile;
pub mod sha256;
mod supervisor;
mod sys;
mod wire;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use child::SANDBOX_ID;
pub use fs::{Bind, FsError};
pub use supervisor::run;

/// The resource limits of one run. `None` means no limit of that kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// CPU time of all processes together (RLIMIT_CPU per process as a backstop).
    #[serde(with = "opt_secs")]
    pub cpu_time: Option<Duration>,
    /// Wall-clock time from start to end.
    #[serde(with = "opt_secs")]
    pub wall_time: Option<Duration>,
    /// Memory of all processes together (cgroup; tmpfs files count), bytes.
    #[serde(with = "opt_size")]
    pub memory: Option<u64>,
    /// Processes and threads alive at once.
    pub pids: Option<u64>,
    /// Bytes of stdout and stderr together.
    #[serde(with = "opt_size")]
    pub output: Option<u64>,
    /// Largest file the program may write (RLIMIT_FSIZE), bytes.
    #[serde(with = "opt_size")]
    pub file_size: Option<u64>,
    /// Open descriptors per process (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
    /// Stack size (RLIMIT_STACK), bytes.
    #[serde(with = "opt_size")]
    pub stack: Option<u64>,
}

/// The seccomp profile of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// The built-in allowlist ([`profile::default_profile`]).
    #[default]
    Default,
    /// No filter at all (explicitly asked for).
    Unconfined,
    /// An OCI `linux.seccomp` object (or a whole config.json holding one) from a file.
    Profile(PathBuf),
}

/// Everything one run needs (serializable, so a batch can hand it to a child process).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Options {
    /// The command and its arguments (argv[0] is looked up in PATH when it has no `/`).
    pub command: Vec<String>,
    /// The root directory; `None` for the host's root, read-only.
    pub rootfs: Option<PathBuf>,
    /// `--bind` and `--ro-bind` mounts, in order.
    pub binds: Vec<Bind>,
    /// The writable work directory: an overlay of `source` at `destination`, which is
    /// also the program's working directory (else /tmp).
    pub workdir: Option<Bind>,
    /// Environment (the host's is never passed on): PATH and HOME have defaults.
    pub env: Vec<(String, String)>,
    /// The limits.
    pub limits: Limits,
    /// The seccomp profile.
    pub seccomp: SeccompMode,
    /// The program's stdin (default: the supervisor's).
    pub stdin: Option<PathBuf>,
    /// Where the program's stdout goes (default: the supervisor's stdout).
    pub stdout: Option<PathBuf>,
    /// Where the program's stderr goes (default: the supervisor's stderr).
    pub stderr: Option<PathBuf>,
    /// Append audit records here.
    pub audit_log: Option<PathBuf>,
    /// On a security violation, keep the writable state here.
    pub evidence: Option<PathBuf>,
    /// Names the run in the audit log and its cgroup (default: `<pid>-<time>`).
    pub id: Option<String>,
    /// `--landlock`: a Landlock ruleset as a second wall under the mount namespace.
    pub landlock: Option<LandlockPaths>,
    /// `--core-sched`: a core-scheduling cookie of the sandbox's own (no SMT sibling
    /// shared with another process at the same time).
    pub core_sched: bool,
    /// `--net NETWORK`: attach to a bridge network made with `cella net network create`
    /// (None: a private loopback only).
    pub network: Option<SandboxNet>,
}

/// A bridge network for the sandbox, and where `cella net` keeps its records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxNet {
    /// The network's name.
    pub name: String,
    /// Attachment state (`cella net --state-dir`).
    pub state_dir: PathBuf,
    /// IPAM leases (`cella net --ipam-dir`).
    pub ipam_dir: PathBuf,
    /// Network definitions (`cella net --network-dir`).
    pub network_dir: PathBuf,
}

/// The paths of the `--landlock` ruleset, as the sandbox sees them (after its mounts).
/// Empty lists take the defaults: everything readable (`/`) and only the sandbox's own
/// writable places writable (`/tmp`, `/dev`, the work directory, read-write binds).
/// Anything else (writes elsewhere, device ioctls, signals to and abstract sockets of
/// processes outside, where the kernel has those rights) is denied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LandlockPaths {
    /// Readable and executable.
    pub read_only: Vec<PathBuf>,
    /// Readable, executable and writable.
    pub read_write: Vec<PathBuf>,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Exited with status 0 within every limit.
    #[serde(rename = "OK")]
    Ok,
    /// Runtime error: a non-zero exit, a fatal signal, or a process or file-size limit.
    #[serde(rename = "RE")]
    RuntimeError,
    /// Time limit exceeded (CPU or wall).
    #[serde(rename = "TLE")]
    TimeLimit,
    /// Memory limit exceeded.
    #[serde(rename = "MLE")]
    MemoryLimit,
    /// Output limit exceeded.
    #[serde(rename = "OLE")]
    OutputLimit,
    /// Security violation: a denied syscall.
    #[serde(rename = "SV")]
    SecurityViolation,
    /// Internal error: the sandbox could not run the program.
    #[serde(rename = "IE")]
    InternalError,
}

impl Status {
    /// The short name used in the verdict (`OK`, `RE`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::RuntimeError => "RE",
            Status::TimeLimit => "TLE",
            Status::MemoryLimit => "MLE",
            Status::OutputLimit => "OLE",
            Status::SecurityViolation => "SV",
            Status::InternalError => "IE",
        }
    }
}

/// One denied syscall, as the verdict reports the first one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denied {
    /// Name, when known.
    pub syscall: Option<String>,
    /// Number on `arch`.
    pub nr: i64,
    /// ABI.
    pub arch: String,
}

/// The judgement of one run (`--result`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// OK, RE, TLE, MLE, OLE, SV or IE.
    pub status: Status,
    /// The program's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// CPU time of all its processes.
    pub cpu_ms: u64,
    /// Wall-clock time.
    pub wall_ms: u64,
    /// Peak memory of all its processes (cgroup), KiB.
    pub memory_peak_kib: Option<u64>,
    /// The limit that was hit: cpu, wall, memory, pids, output or file-size.
    pub limit: Option<String>,
    /// The first denied syscall, on SV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied: Option<Denied>,
    /// Why, on IE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Limits that could only be approximated (no cgroup, for instance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Exit status of `cella sandbox` for TLE (as timeout(1)).
pub const EXIT_TLE: u8 = 124;
/// Exit status for MLE.
pub const EXIT_MLE: u8 = 123;
/// Exit status for OLE.
pub const EXIT_OLE: u8 = 122;
/// Exit status for SV.
pub const EXIT_SV: u8 = 121;
/// Exit status for IE (also when the sandbox could not be set up at all).
pub const EXIT_IE: u8 = 120;

impl Verdict {
    /// An internal-error verdict carrying `error`.
    pub fn internal(error: String, wall_ms: u64) -> Verdict {
        Verdict {
            status: Status::InternalError,
            exit_code: None,
            signal: None,
            cpu_ms: 0,
            wall_ms,
            memory_peak_kib: None,
            limit: None,
            denied: None,
            error: Some(error),
            warnings: Vec::new(),
        }
    }

    /// `cella sandbox`'s exit status for this verdict: OK 0; RE the program's exit
    /// code, or 128 + the signal; TLE 124, MLE 123, OLE 122, SV 121, IE 120.
    pub fn exit_status(&self) -> u8 {
        match self.status {
            Status::Ok => 0,
            Status::RuntimeError => match (self.exit_code, self.signal) {
                (Some(c), _) if c != 0 => c as u8,
                (_, Some(s)) => (128 + s) as u8,
                _ => 1,
            },
            Status::TimeLimit => EXIT_TLE,
            Status::MemoryLimit => EXIT_MLE,
            Status::OutputLimit => EXIT_OLE,
            Status::SecurityViolation => EXIT_SV,
            Status::InternalError => EXIT_IE,
        }
    }
}

/// Errors that stop a run before the program starts. Once it has started, failures are
/// reported as an IE verdict instead.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// An option is invalid.
    #[error("{option}: {reason}")]
    Invalid {
        /// The option.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The filesystem plan failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The seccomp profile file cannot be read or parsed.
    #[error("--seccomp `{}`", path.display())]
    SeccompFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The seccomp profile does not compile.
    #[error("--seccomp")]
    Seccomp(#[source] cella_seccomp::SeccompError),
    /// The cgroup could not be made.
    #[error("create the sandbox cgroup")]
    Cgroup(#[source] cella_cgroups::CgroupError),
    /// Opening a stdio file failed.
    #[error("{option} `{}`", path.display())]
    Stdio {
        /// The option.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The audit log cannot be opened.
    #[error(transparent)]
    Audit(#[from] audit::AuditError),
    /// The evidence directory is unusable.
    #[error(transparent)]
    Evidence(#[from] evidence::EvidenceError),
    /// The `--landlock` ruleset cannot be made (e.g. a kernel without Landlock).
    #[error("--landlock")]
    Landlock(#[source] cella_isolate::landlock::LandlockError),
    /// `--core-sched` on a kernel without core scheduling (or without SMT).
    #[error("--core-sched")]
    CoreSched(#[source] cella_isolate::coresched::CoreSchedError),
    /// `--net NETWORK` could not be set up.
    #[error("--net")]
    Net(#[source] cella_net::container::ContainerNetError),
    /// A kernel call of the supervisor failed while starting the sandbox.
    #[error("{op}")]
    Sys {
        /// The operation.
        op: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Parses a size: bytes, or a number with K, M, G or T (powers of 1024; a trailing `B`
/// or `iB` is accepted).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 1 << 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 1 << 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 256M)"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("{s:?} is not a size (e.g. 256M)"));
    }
    Ok((n * mult as f64) as u64)
}

/// Parses seconds, with a fraction if wanted (`2`, `0.5`).
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let n: f64 = s
        .trim()
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !n.is_finite() || n <= 0.0 {
        return Err(format!("{s:?} is not a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(n))
}

/// Serde for `Option<Duration>` as seconds (a number or a string such as "0.5").
mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        match v {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Number(n)) => {
                let f = n.as_f64().unwrap_or(-1.0);
                super::parse_seconds(&f.to_string())
                    .map(Some)
                    .map_err(serde::de::Error::custom)
            }
            Some(serde_json::Value::String(s)) => super::parse_seconds(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(other) => Err(serde::de::Error::custom(format!(
                "{other} is not a number of seconds"
            ))),
        }
    }
}

/// Serde for `Option<u64>` sizes (a number of bytes or a string such as "256M").
mod opt_size {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_u64(*v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        match v {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a size"))),
            Some(serde_json::Value::String(s)) => super::parse_size(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            Some(other) => Err(serde::de::Error::custom(format!("{other} is not a size"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("10"), Ok(10));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1M").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_seconds("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_seconds("0").is_err());
    }

    #[test]
    fn exit_statuses() {
        let mut v = Verdict::internal(String::new(), 0);
        assert_eq!(v.exit_status(), EXIT_IE);
        v.status = Status::RuntimeError;
        v.signal = Some(9);
        assert_eq!(v.exit_status(), 137);
        v.signal = None;
        v.exit_code = Some(3);
        assert_eq!(v.exit_status(), 3);
        v.status = Status::Ok;
        v.exit_code = Some(0);
        assert_eq!(v.exit_status(), 0);
    }

    #[test]
    fn limits_from_json() {
        let l: Limits = serde_json::from_str(
            r#"{"cpu_time": 1.5, "memory": "64M", "pids": 16, "output": 1000}"#,
        )
        .expect("limits parse");
        assert_eq!(l.cpu_time, Some(Duration::from_millis(1500)));
        assert_eq!(l.memory, Some(64 << 20));
        assert_eq!(l.pids, Some(16));
        assert_eq!(l.output, Some(1000));
        assert!(serde_json::from_str::<Limits>(r#"{"memroy": 1}"#).is_err());
    }
}
