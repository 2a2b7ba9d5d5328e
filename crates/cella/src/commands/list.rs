//! `cella list`: every container under the root.

use super::{CmdResult, runtime};
use crate::Cli;

/// Arguments of `cella list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// table or json.
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// Print ids only.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `cella list`.
pub fn run(args: &ListArgs, cli: &Cli) -> CmdResult {
    let all = runtime(cli)?.list()?;
    match args.format.as_str() {
        "json" => println!("{}", serde_json::Value::Array(all)),
        "table" if args.quiet => {
            for c in &all {
                println!("{}", c["id"].as_str().unwrap_or(""));
            }
        }
        "table" => {
            let rows: Vec<[String; 6]> = all
                .iter()
                .map(|c| {
                    let s = |k: &str| {
                        c[k].as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| c[k].to_string())
                    };
                    [
                        s("id"),
                        s("pid"),
                        s("status"),
                        s("bundle"),
                        s("created"),
                        s("owner"),
                    ]
                })
                .collect();
            let head = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"].map(String::from);
            let mut w = [0usize; 6];
            for r in std::iter::once(&head).chain(&rows) {
                for (i, cell) in r.iter().enumerate() {
                    w[i] = w[i].max(cell.len());
                }
            }
            for r in std::iter::once(&head).chain(&rows) {
                let line: Vec<String> = r
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{c:<width$}", width = w[i]))
                    .collect();
                println!("{}", line.join("   ").trim_end());
            }
        }
        other => {
            return Err(format!("--format: unknown format {other:?} (use table or json)").into());
        }
    }
    Ok(0)
}
