//! `cella state`: print a container's state as JSON.

use super::{CmdResult, runtime};
use crate::Cli;

/// Arguments of `cella state`.
#[derive(clap::Args, Debug)]
pub struct StateArgs {
    /// The container id.
    pub id: String,
}

/// Runs `cella state`.
pub fn run(args: &StateArgs, cli: &Cli) -> CmdResult {
    let st = runtime(cli)?.state(&args.id)?;
    println!("{}", serde_json::to_string_pretty(&st)?);
    Ok(0)
}
