//! The one error type of this crate: every variant names the operation and the path or field.

use std::io;
use std::path::PathBuf;

/// What went wrong while planning or driving a cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A configuration value is invalid or cannot be honoured on this host.
    #[error("{field}: {reason}")]
    Invalid {
        /// The config field, e.g. `linux.resources.memory.limit`.
        field: String,
        /// Why it was rejected.
        reason: String,
    },
    /// No cgroup hierarchy is mounted at all.
    #[error("no cgroup filesystem is mounted (see /proc/self/mountinfo)")]
    NotMounted,
    /// The systemd driver was asked for but systemd is not the init system.
    #[error("systemd is not running (no /run/systemd/system)")]
    SystemdNotRunning,
    /// A call to the systemd manager failed.
    #[error("systemd: {op} `{unit}`")]
    Systemd {
        /// What was asked, e.g. "start transient unit".
        op: &'static str,
        /// The unit.
        unit: String,
        /// The D-Bus failure (systemd's own error name and text when it refused).
        #[source]
        source: crate::systemd::dbus::DbusError,
    },
    /// A systemd job ended other than "done".
    #[error("systemd: {op} `{unit}`: the job ended {result:?} (see `journalctl -u {unit}`)")]
    SystemdJob {
        /// "start" or "stop".
        op: &'static str,
        /// The unit.
        unit: String,
        /// The job's result, e.g. "failed" or "timeout".
        result: String,
    },
    /// systemd put the unit's cgroup somewhere else than computed (and recorded).
    #[error(
        "systemd put `{unit}` in cgroup {got:?}, not {want:?} (is cella in another cgroup namespace than systemd?)"
    )]
    SystemdPlacement {
        /// The unit.
        unit: String,
        /// Where cella expected it.
        want: String,
        /// Its ControlGroup property.
        got: String,
    },
    /// Reading a file failed.
    #[error("read `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Writing a value to a cgroup file failed.
    #[error("write {value:?} to `{path}`")]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Opening a file or directory failed.
    #[error("open `{path}`")]
    Open {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Creating a cgroup directory failed.
    #[error("create `{path}`")]
    Mkdir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("remove `{path}`")]
    Rmdir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A kernel file had content we could not parse.
    #[error("parse `{path}`: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Querying a filesystem failed.
    #[error("statfs `{path}`")]
    Statfs {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Sending a signal failed.
    #[error("send signal {signal} to pid {pid}")]
    Kill {
        /// The process.
        pid: i32,
        /// The signal number.
        signal: i32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The cgroup did not reach the frozen state in time (it was thawed again).
    #[error("`{path}` did not freeze within {millis} ms")]
    FreezeTimeout {
        /// The freezer directory.
        path: PathBuf,
        /// How long we waited.
        millis: u64,
    },
    /// Processes kept appearing or did not exit while killing the cgroup.
    #[error("`{path}` still has processes after {millis} ms of SIGKILL")]
    KillTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// How long we tried.
        millis: u64,
    },
    /// Loading or attaching the cgroup v2 device program failed.
    #[error("linux.resources.devices: {op} the eBPF device program for `{path}`{}", verifier_log(.log))]
    DeviceProgram {
        /// "load" or "attach".
        op: &'static str,
        /// The cgroup directory.
        path: PathBuf,
        /// The verifier's log, if it said anything.
        log: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Several cleanup steps failed; the first failure is the source.
    #[error("destroy cgroup: {count} step(s) failed (the first is the cause; see `rest`)")]
    Destroy {
        /// How many steps failed.
        count: usize,
        /// The first failure.
        #[source]
        first: Box<CgroupError>,
        /// The other failures, in order.
        rest: Vec<CgroupError>,
    },
}

fn verifier_log(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (verifier: {log})")
    }
}

impl CgroupError {
    /// Shorthand for a validation error on `field`.
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CgroupError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The errno behind this error, if it came from the kernel.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            CgroupError::Read { source, .. }
            | CgroupError::Write { source, .. }
            | CgroupError::Open { source, .. }
            | CgroupError::Mkdir { source, .. }
            | CgroupError::Rmdir { source, .. }
            | CgroupError::Statfs { source, .. }
            | CgroupError::Kill { source, .. }
            | CgroupError::DeviceProgram { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
