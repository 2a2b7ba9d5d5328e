//! `cella start`: let a created container's process run.

use super::{CmdResult, runtime, warn_all};
use crate::Cli;

/// Arguments of `cella start`.
#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// The container id.
    pub id: String,
}

/// Runs `cella start`.
pub fn run(args: &StartArgs, cli: &Cli) -> CmdResult {
    warn_all(&runtime(cli)?.start(&args.id)?);
    Ok(0)
}
