//! The `cella-cni` binary: reads the CNI_* environment and the configuration on stdin,
//! runs the command, prints the result or the spec's error JSON.

use cella_cni::plugin::{self, Env, Output};
use cella_cni::types::{CniError, Code};
use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    // VERSION may come with an empty stdin.
    let read = if env.command == "VERSION" {
        std::io::stdin()
            .read_to_end(&mut stdin)
            .map(|_| ())
            .or(Ok(()))
    } else {
        std::io::stdin().read_to_end(&mut stdin).map(|_| ())
    };
    let result = match read {
        Ok(()) => plugin::run(&env, &stdin),
        Err(e) => Err(CniError::with_source(
            Code::Io,
            "read the configuration from stdin",
            &e,
        )),
    };
    let mut out = std::io::stdout().lock();
    match result {
        Ok(Output::Json(v)) => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(Output::Nothing) => ExitCode::SUCCESS,
        Err(e) => {
            let v = e.to_json(&plugin::version_of(&stdin));
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            );
            ExitCode::FAILURE
        }
    }
}
