//! `cella pause`: freeze every process of a container.

use super::{CmdResult, runtime};
use crate::Cli;

/// Arguments of `cella pause`.
#[derive(clap::Args, Debug)]
pub struct PauseArgs {
    /// The container id.
    pub id: String,
}

/// Runs `cella pause`.
pub fn run(args: &PauseArgs, cli: &Cli) -> CmdResult {
    runtime(cli)?.pause(&args.id)?;
    Ok(0)
}
