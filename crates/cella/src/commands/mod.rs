//! One module per verb. Each parses nothing itself (clap does) and calls one library.

pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod net;
pub mod ns;
pub mod pause;
pub mod ps;
pub mod resume;
pub mod sandbox;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;

use crate::Cli;
use cella_runtime::Runtime;
use std::path::PathBuf;

/// What every verb returns: the exit status to leave with, or an error to report.
pub type CmdResult = Result<u8, Box<dyn std::error::Error>>;

/// The state root: `--root`, else /run/cella for root and $XDG_RUNTIME_DIR/cella for
/// everyone else (and for root of a user namespace when it is set) (never a shared directory such as /tmp, where another user could
/// have made it first).
pub fn state_root(cli: &Cli) -> Result<PathBuf, NoStateRoot> {
    if let Some(r) = &cli.root {
        return Ok(r.clone());
    }
    let xdg = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty());
    // Root of a user namespace other than the host's (rootless Podman runs the runtime
    // so) cannot write /run either: it uses $XDG_RUNTIME_DIR when that is set.
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    match xdg {
        _ if root && cella_isolate::idmap::in_initial_user_namespace() => {
            Ok(PathBuf::from("/run/cella"))
        }
        Some(d) => Ok(PathBuf::from(d).join("cella")),
        None if root => Ok(PathBuf::from("/run/cella")),
        None => Err(NoStateRoot),
    }
}

/// An unprivileged user without $XDG_RUNTIME_DIR and without `--root`.
#[derive(Debug)]
pub struct NoStateRoot;

impl std::fmt::Display for NoStateRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "no state directory: $XDG_RUNTIME_DIR is not set; set it (e.g. to /run/user/$(id -u)) or pass --root DIR (a directory only you can write)",
        )
    }
}

impl std::error::Error for NoStateRoot {}

/// `--rootless`: auto, true or false (runc's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RootlessMode {
    /// Rootless when not root of the host.
    Auto,
    /// Always rootless.
    True,
    /// Never rootless.
    False,
}

/// The runtime for this invocation's global flags.
pub fn runtime(cli: &Cli) -> Result<Runtime, NoStateRoot> {
    let rootless = match cli.rootless {
        None | Some(RootlessMode::Auto) => None,
        Some(RootlessMode::True) => Some(true),
        Some(RootlessMode::False) => Some(false),
    };
    Ok(Runtime::new(state_root(cli)?)
        .with_systemd_cgroup(cli.systemd_cgroup)
        .with_rootless(rootless)
        .with_net_paths(net_paths()))
}

/// Where bridge networks live: the defaults of `cella net`, or the directories named by
/// `CELLA_NET_STATE_DIR`, `CELLA_NET_IPAM_DIR` and `CELLA_NET_NETWORK_DIR` (what
/// `--state-dir`, `--ipam-dir` and `--network-dir` of `cella net` set).
pub(crate) fn net_paths() -> cella_net::bridge::Paths {
    let mut p = cella_net::bridge::Paths::default();
    for (var, dir) in [
        ("CELLA_NET_STATE_DIR", &mut p.state_dir),
        ("CELLA_NET_IPAM_DIR", &mut p.ipam_dir),
        ("CELLA_NET_NETWORK_DIR", &mut p.network_dir),
    ] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            *dir = v.into();
        }
    }
    p
}

/// Prints warnings a library handed back.
pub fn warn_all(warnings: &[String]) {
    for w in warnings {
        eprintln!("cella: warning: {w}");
    }
}
