//! `cella features`: the OCI features document.

use super::CmdResult;

/// Runs `cella features`.
pub fn run() -> CmdResult {
    println!(
        "{}",
        serde_json::to_string_pretty(&cella_runtime::features::features())?
    );
    Ok(0)
}
