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
/// everyone else (never a shared directory such as /tmp, where another user could
/// have made it first).
pub fn state_root(cli: &Cli) -> Result<PathBuf, NoStateRoot> {
    if let Some(r) = &cli.root {
        return Ok(r.clone());
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/run/cella"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => Ok(PathBuf::from(d).join("cella")),
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

/// The runtime for this invocation's global flags.
pub fn runtime(cli: &Cli) -> Result<Runtime, NoStateRoot> {
    Ok(Runtime::new(state_root(cli)?).with_systemd_cgroup(cli.systemd_cgroup))
}

/// Prints warnings a library handed back.
pub fn warn_all(warnings: &[String]) {
    for w in warnings {
        eprintln!("cella: warning: {w}");
    }
}
