//! `cella delete`: remove a container and everything cella made for it.

use super::{CmdResult, runtime, warn_all};
use crate::Cli;

/// Arguments of `cella delete`.
#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Kill the container first if it still runs.
    #[arg(short, long)]
    pub force: bool,
    /// The container id.
    pub id: String,
}

/// Runs `cella delete`. With --force, a container that does not exist is no error
/// (runc's behaviour, which engines rely on when cleaning up).
pub fn run(args: &DeleteArgs, cli: &Cli) -> CmdResult {
    match runtime(cli)?.delete(&args.id, args.force) {
        Ok(w) => warn_all(&w),
        Err(cella_runtime::Error::NotFound(_)) if args.force => {}
        Err(e) => return Err(e.into()),
    }
    Ok(0)
}
