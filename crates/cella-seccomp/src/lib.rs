//! Seccomp: compiles OCI `linux.seccomp` profiles into classic BPF, in pure Rust.
//!
//! [`compile`] runs once in the runtime, before fork; [`SeccompProgram::install`] runs in
//! the container's init right before execve and does not allocate. The emitted program is
//! a balanced binary search over syscall numbers per architecture (see `compile.rs` for
//! its shape); `docs/seccomp.md` describes the semantics chosen where the spec is silent.

pub mod bpf;
mod compile;
mod sys;
mod tables;

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompFilterFlag as Flag};

pub use bpf::Insn;

/// Errors of compiling, installing and handing over a seccomp filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile is not valid; `path` names the field (`linux.seccomp.syscalls[3]...`).
    #[error("{path}: {reason}")]
    Invalid {
        /// Field path inside config.json.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The profile needs a flag or action this kernel lacks.
    #[error("{path}: {what} is not supported by this kernel")]
    Unsupported {
        /// Field path inside config.json.
        path: String,
        /// The flag or action.
        what: String,
    },
    /// The program is longer than the kernel accepts.
    #[error("seccomp filter has {len} instructions, above the kernel's limit of 4096")]
    TooLong {
        /// Instructions emitted.
        len: usize,
    },
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` failed (EACCES: neither no_new_privs nor
    /// CAP_SYS_ADMIN).
    #[error("load the seccomp filter")]
    Install(#[source] io::Error),
    /// Connecting to the seccomp agent's socket failed.
    #[error("connect to seccomp listener `{}`", path.display())]
    Connect {
        /// `linux.seccomp.listenerPath`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Sending the state and the notify fd to the agent failed.
    #[error("send the seccomp notify fd to `{}`", path.display())]
    Send {
        /// `linux.seccomp.listenerPath`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Encoding the container process state failed.
    #[error("encode the container process state for the seccomp listener")]
    Encode(#[source] serde_json::Error),
}

/// A syscall ABI an x86_64 kernel can be entered through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Abi {
    /// 64-bit: AUDIT_ARCH_X86_64, numbers below the x32 bit.
    X86_64,
    /// 32-bit: AUDIT_ARCH_I386.
    I386,
    /// x32: AUDIT_ARCH_X86_64 with the x32 bit set.
    X32,
}

/// One row of the generated table: name and its number on each ABI.
pub(crate) type SyscallRow = (&'static str, u32, u32, u32, u32);

/// The table row for `name`, if any x86 ABI has the syscall.
pub(crate) fn syscall_row(name: &str) -> Option<&'static SyscallRow> {
    let t = tables::SYSCALLS;
    t.binary_search_by(|r| r.0.cmp(name)).ok().map(|i| &t[i])
}

impl Abi {
    /// This ABI's number in `row`, if it has the syscall.
    pub(crate) fn nr(self, row: &SyscallRow) -> Option<u32> {
        let nr = match self {
            Abi::X86_64 => row.1,
            Abi::I386 => row.2,
            Abi::X32 => row.3,
        };
        (nr != tables::NONE).then_some(nr)
    }

    /// This ABI's number for `name`, if it has the syscall.
    pub(crate) fn lookup(self, name: &str) -> Option<u32> {
        syscall_row(name).and_then(|r| self.nr(r))
    }
}

/// The x86_64 syscall number of `name`, from the generated tables (for tests and tools).
pub fn syscall_nr_x86_64(name: &str) -> Option<u32> {
    Abi::X86_64.lookup(name)
}

/// The i386 syscall number of `name`.
pub fn syscall_nr_i386(name: &str) -> Option<u32> {
    Abi::I386.lookup(name)
}

/// The x32 syscall number of `name`, with the x32 bit set.
pub fn syscall_nr_x32(name: &str) -> Option<u32> {
    Abi::X32.lookup(name)
}

/// Every syscall name the tables know (any x86 ABI), sorted.
pub fn syscall_names() -> impl Iterator<Item = &'static str> {
    tables::SYSCALLS.iter().map(|r| r.0)
}

/// The name of syscall `nr` entered through the ABI of `audit_arch` (AUDIT_ARCH_X86_64,
/// whose x32 numbers carry the x32 bit, or AUDIT_ARCH_I386), for audit records.
pub fn syscall_name(audit_arch: u32, nr: u32) -> Option<&'static str> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    const X32_BIT: u32 = 0x4000_0000;
    let abi = match audit_arch {
        AUDIT_ARCH_X86_64 if nr & X32_BIT != 0 => Abi::X32,
        AUDIT_ARCH_X86_64 => Abi::X86_64,
        AUDIT_ARCH_I386 => Abi::I386,
        _ => return None,
    };
    tables::SYSCALLS
        .iter()
        .find(|r| abi.nr(r) == Some(nr))
        .map(|r| r.0)
}

/// A compiled filter, ready to install.
#[derive(Clone, Debug)]
pub struct SeccompProgram {
    insns: Vec<Insn>,
    flags: u32,
    notify: bool,
}

/// Compiles an OCI seccomp profile for an x86_64 kernel.
///
/// Probes the running kernel for the flags and actions the profile uses, so an
/// unsupported one is an error here, before anything is forked. `SECCOMP_FILTER_FLAG_TSYNC`
/// is accepted and ignored: the init that installs the filter is single-threaded.
pub fn compile(cfg: &LinuxSeccomp) -> Result<SeccompProgram, SeccompError> {
    let plan = compile::plan(cfg)?;
    let insns = compile::generate(&plan);
    if insns.len() > bpf::MAX_INSNS {
        return Err(SeccompError::TooLong { len: insns.len() });
    }
    let mut flags = 0;
    for (i, f) in cfg.flags().iter().flatten().enumerate() {
        let (bit, probe) = match f {
            Flag::SeccompFilterFlagTsync => continue,
            Flag::SeccompFilterFlagLog => (sys::FLAG_LOG, sys::FLAG_LOG),
            Flag::SeccompFilterFlagSpecAllow => (sys::FLAG_SPEC_ALLOW, sys::FLAG_SPEC_ALLOW),
            // The kernel accepts this flag only together with a listener, so it is set
            // only when some rule notifies (it means nothing otherwise).
            Flag::SeccompFilterFlagWaitKillableRecv => (
                if plan.notify {
                    sys::FLAG_WAIT_KILLABLE_RECV
                } else {
                    0
                },
                sys::FLAG_WAIT_KILLABLE_RECV | sys::FLAG_NEW_LISTENER,
            ),
        };
        if !sys::flags_supported(probe) {
            return Err(SeccompError::Unsupported {
                path: format!("linux.seccomp.flags[{i}]"),
                what: f.to_string(),
            });
        }
        flags |= bit;
    }
    if plan.notify {
        flags |= sys::FLAG_NEW_LISTENER;
    }
    for (path, action) in &plan.actions {
        if !sys::action_available(*action) {
            return Err(SeccompError::Unsupported {
                path: path.clone(),
                what: format!("seccomp action {action:#010x}"),
            });
        }
    }
    Ok(SeccompProgram {
        insns,
        flags,
        notify: plan.notify,
    })
}

impl SeccompProgram {
    /// Attaches the filter to the calling thread; returns the notify listener fd when a
    /// rule uses `SCMP_ACT_NOTIFY`.
    ///
    /// Does not allocate: safe between fork and exec. Does not set no_new_privs: the
    /// caller must have set it already or hold CAP_SYS_ADMIN, else the kernel answers
    /// EACCES.
    pub fn install(&self) -> Result<Option<OwnedFd>, SeccompError> {
        sys::load_filter(&self.insns, self.flags).map_err(SeccompError::Install)
    }

    /// Whether [`install`](Self::install) returns a listener fd to hand to the agent.
    pub fn needs_notify(&self) -> bool {
        self.notify
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Always false: a program has at least its bad-arch return.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// The instructions, for inspection and user-space evaluation.
    pub fn instructions(&self) -> &[Insn] {
        &self.insns
    }

    /// `SECCOMP_FILTER_FLAG_*` bits passed to the kernel on install.
    pub fn flags(&self) -> u32 {
        self.flags
    }
}

/// The message runc sends to a seccomp agent: the JSON of an OCI `ContainerProcessState`
/// (`fds: ["seccompFd"]`, the container's pid, `listenerMetadata` and its state).
pub fn process_state_json(
    state: &oci_spec::runtime::State,
    pid: i32,
    metadata: Option<&str>,
) -> Result<Vec<u8>, SeccompError> {
    let mut cps = oci_spec::runtime::ContainerProcessState::default();
    cps.set_version(state.version().clone());
    cps.set_fds(vec![oci_spec::runtime::SECCOMP_FD_NAME.to_string()]);
    cps.set_pid(pid);
    cps.set_metadata(metadata.map(str::to_string));
    cps.set_state(state.clone());
    serde_json::to_vec(&cps).map_err(SeccompError::Encode)
}

/// Hands the notify fd to the seccomp agent listening at `listener_path`, as runc does:
/// one stream connection, one message carrying `state_json` with the fd in SCM_RIGHTS.
pub fn send_to_listener(
    listener_path: &Path,
    notify_fd: BorrowedFd<'_>,
    state_json: &[u8],
) -> Result<(), SeccompError> {
    let sock = connect_listener(listener_path)?;
    send_over(sock.as_fd(), listener_path, notify_fd, state_json)
}

/// Connects to the seccomp agent at `listener_path`. The runtime connects while the
/// path is still reachable (before pivot_root) and sends later with [`send_over`].
pub fn connect_listener(listener_path: &Path) -> Result<UnixStream, SeccompError> {
    UnixStream::connect(listener_path).map_err(|source| SeccompError::Connect {
        path: listener_path.to_path_buf(),
        source,
    })
}

/// Sends `state_json` with `notify_fd` over a socket from [`connect_listener`];
/// `listener_path` only names it in errors.
pub fn send_over(
    sock: BorrowedFd<'_>,
    listener_path: &Path,
    notify_fd: BorrowedFd<'_>,
    state_json: &[u8],
) -> Result<(), SeccompError> {
    sys::send_with_fd(sock, state_json, notify_fd).map_err(|source| SeccompError::Send {
        path: listener_path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests;

/// Checks the raw JSON of `linux.seccomp` for names oci-spec would refuse with a bare
/// serde message, and reports the first one with its field path, e.g.
/// `linux.seccomp.syscalls[3].action: unknown action "SCMP_ACT_FOO"`.
///
/// The runtime calls this when parsing config.json fails, to tell the user which field.
pub fn check_json(seccomp: &serde_json::Value) -> Result<(), SeccompError> {
    use serde_json::Value;
    const ACTIONS: &[&str] = &[
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_NOTIFY",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_LOG",
        "SCMP_ACT_ALLOW",
    ];
    const OPS: &[&str] = &[
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    ];
    const FLAGS: &[&str] = &[
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    ];
    let bad = |path: String, what: &str, v: &Value| SeccompError::Invalid {
        path,
        reason: format!("unknown {what} {v}"),
    };
    let known = |v: &Value, list: &[&str]| v.as_str().is_some_and(|s| list.contains(&s));
    let arch_known =
        |v: &Value| serde_json::from_value::<oci_spec::runtime::Arch>(v.clone()).is_ok();
    let base = "linux.seccomp";
    if let Some(v) = seccomp.get("defaultAction")
        && !known(v, ACTIONS)
    {
        return Err(bad(format!("{base}.defaultAction"), "action", v));
    }
    for (i, a) in seccomp
        .get("architectures")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !arch_known(a) {
            return Err(bad(format!("{base}.architectures[{i}]"), "architecture", a));
        }
    }
    for (i, f) in seccomp
        .get("flags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !known(f, FLAGS) {
            return Err(bad(format!("{base}.flags[{i}]"), "flag", f));
        }
    }
    for (i, sc) in seccomp
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(v) = sc.get("action")
            && !known(v, ACTIONS)
        {
            return Err(bad(format!("{base}.syscalls[{i}].action"), "action", v));
        }
        for (j, arg) in sc
            .get("args")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            if let Some(v) = arg.get("op")
                && !known(v, OPS)
            {
                return Err(bad(
                    format!("{base}.syscalls[{i}].args[{j}].op"),
                    "operator",
                    v,
                ));
            }
            if let Some(idx) = arg.get("index").and_then(Value::as_u64)
                && idx > 5
            {
                return Err(SeccompError::Invalid {
                    path: format!("{base}.syscalls[{i}].args[{j}].index"),
                    reason: format!("{idx} is above 5"),
                });
            }
        }
    }
    Ok(())
}
