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
/// everyone else.
pub fn state_root(cli: &Cli) -> PathBuf {
    if let Some(r) = &cli.root {
        return r.clone();
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/run/cella");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("cella"),
        None => std::env::temp_dir().join(format!("cella-{}", unsafe_uid())),
    }
}

fn unsafe_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

/// The runtime for this invocation's global flags.
pub fn runtime(cli: &Cli) -> Runtime {
    Runtime::new(state_root(cli)).with_systemd_cgroup(cli.systemd_cgroup)
}

/// Prints warnings a library handed back.
pub fn warn_all(warnings: &[String]) {
    for w in warnings {
        eprintln!("cella: warning: {w}");
    }
}
