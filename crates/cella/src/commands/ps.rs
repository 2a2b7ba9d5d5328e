//! `cella ps`: the processes of a container.

use super::{CmdResult, runtime};
use crate::Cli;

/// Arguments of `cella ps`.
#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// table (through ps(1)) or json (pids).
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// The container id.
    pub id: String,
    /// Options passed to ps(1) (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// Runs `cella ps`.
pub fn run(args: &PsArgs, cli: &Cli) -> CmdResult {
    let pids = runtime(cli)?.pids(&args.id)?;
    if args.format == "json" {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(0);
    }
    if args.format != "table" {
        return Err(format!(
            "--format: unknown format {:?} (use table or json)",
            args.format
        )
        .into());
    }
    let ps_args = if args.ps_args.is_empty() {
        vec!["-ef".to_owned()]
    } else {
        args.ps_args.clone()
    };
    let out = std::process::Command::new("ps")
        .args(&ps_args)
        .output()
        .map_err(|e| format!("run ps: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ps {}: {}",
            ps_args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    let col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or("ps output has no PID column")?;
    println!("{header}");
    for l in lines {
        if l.split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(|p| pids.contains(&p))
        {
            println!("{l}");
        }
    }
    Ok(0)
}
