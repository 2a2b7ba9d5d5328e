//! `cella spec`: write a default config.json.

use super::CmdResult;
use std::path::PathBuf;

/// Arguments of `cella spec`.
#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    /// Directory to write config.json into.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// A config for an unprivileged user (user namespace mapping the caller to root).
    #[arg(long)]
    pub rootless: bool,
}

/// Runs `cella spec`. Refuses to overwrite an existing config.json, as runc does.
pub fn run(args: &SpecArgs) -> CmdResult {
    let path = args.bundle.join("config.json");
    if path.exists() {
        return Err(format!("`{}` exists already: remove it first", path.display()).into());
    }
    // SAFETY: getuid and getgid cannot fail.
    let ids = unsafe { (libc::getuid(), libc::getgid()) };
    let spec = cella_runtime::spec::default_spec(args.rootless.then_some(ids));
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&path, text + "\n").map_err(|e| format!("write `{}`: {e}", path.display()))?;
    Ok(0)
}
