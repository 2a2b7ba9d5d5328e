//! `cella resume`: thaw a paused container.

use super::{CmdResult, runtime};
use crate::Cli;

/// Arguments of `cella resume`.
#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    /// The container id.
    pub id: String,
}

/// Runs `cella resume`.
pub fn run(args: &ResumeArgs, cli: &Cli) -> CmdResult {
    runtime(cli)?.resume(&args.id)?;
    Ok(0)
}
