//! Error and debug reporting: to stderr, or to `--log` as text or JSON lines the way
//! runc writes them (containerd and Podman read the last error from that file).

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;

/// Format of `--log`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Plain lines.
    Text,
    /// One JSON object a line: {"level","msg","time"}.
    Json,
}

/// Where errors go, chosen once from the global flags.
pub struct Reporter {
    log: Option<PathBuf>,
    format: LogFormat,
}

impl Reporter {
    /// A reporter for the global flags of this invocation.
    pub fn new(cli: &crate::Cli) -> Reporter {
        Reporter {
            log: cli.log.clone(),
            format: cli.log_format,
        }
    }

    /// Prints a debug line (`--debug`), to the log too when there is one.
    pub fn debug(&self, msg: &str) {
        eprintln!("cella: debug: {msg}");
        if let Some(path) = &self.log {
            self.write_log(path, "debug", msg);
        }
    }

    /// Prints an error with its chain of causes, once: `cella: a: b: c`.
    pub fn error(&self, e: &dyn Error) {
        let msg = chain(e);
        eprintln!("cella: {msg}");
        if let Some(path) = &self.log {
            self.write_log(path, "error", &msg);
        }
    }

    fn write_log(&self, path: &PathBuf, level: &str, msg: &str) {
        let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        else {
            return;
        };
        let line = match self.format {
            LogFormat::Text => format!("{level}: {msg}\n"),
            LogFormat::Json => {
                let time = cella_runtime::now_rfc3339();
                format!(
                    "{}\n",
                    serde_json::json!({"level": level, "msg": msg, "time": time})
                )
            }
        };
        let _ = f.write_all(line.as_bytes());
    }
}

/// `e` followed by each of its sources, joined by ": ".
pub fn chain(e: &dyn Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    msg
}
