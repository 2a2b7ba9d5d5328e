//! `cella ns`: namespace tools (owned by the cella-ns work; replaced there).

use crate::Cli;
use crate::commands::CmdResult;

/// Namespace tools.
#[derive(clap::Subcommand, Debug)]
pub enum NsCommand {
    /// List namespaces.
    Ls,
}

/// Runs a `cella ns` verb.
pub fn run(_cmd: &NsCommand, _cli: &Cli) -> CmdResult {
    Err("cella ns: not built yet".into())
}
