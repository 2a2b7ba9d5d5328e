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
                let time = humantime_now();
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

/// Seconds since the epoch in RFC 3339 form (UTC), without a date library.
fn humantime_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
    }
}
