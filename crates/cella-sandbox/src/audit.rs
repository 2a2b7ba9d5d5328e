//! The audit log: JSON lines with what security needs and nothing more.
//!
//! Recorded: the run id, timestamps, denied syscalls (name, number, ABI) with the pid
//! inside the sandbox, limit breaches (which limit and its configured value), whether
//! evidence was kept, and the verdict. Never recorded: syscall arguments, file names or
//! contents, the environment, the command line, or anything the program printed. The
//! types below have no field that could carry them.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::Verdict;

/// One record of the audit log.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Record {
    /// The sandbox started.
    Start,
    /// A syscall outside the profile was attempted (it never ran: the run ended in it).
    DeniedSyscall {
        /// Its name, when the tables know the number.
        syscall: Option<&'static str>,
        /// Its number on `arch`.
        nr: i64,
        /// The ABI it came through (`x86_64`, `i386`, `x32`).
        arch: &'static str,
        /// The calling thread's pid inside the sandbox.
        pid: Option<i64>,
    },
    /// A limit was crossed.
    Limit {
        /// Which one (`cpu`, `wall`, `memory`, `pids`, `output`, `file-size`).
        limit: &'static str,
    },
    /// The writable state was kept.
    Evidence {
        /// Files copied.
        files: u64,
        /// Bytes copied.
        bytes: u64,
    },
    /// The verdict.
    Verdict {
        /// As written to `--result`.
        #[serde(flatten)]
        verdict: Box<Verdict>,
    },
}

#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    run: &'a str,
    #[serde(flatten)]
    record: &'a Record,
}

/// An error writing the audit log.
#[derive(Debug, thiserror::Error)]
#[error("audit log `{}`", path.display())]
pub struct AuditError {
    /// The log file.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// An open audit log (appended to, one line per record).
#[derive(Debug)]
pub struct AuditLog {
    file: File,
    path: PathBuf,
    run: String,
}

impl AuditLog {
    /// Opens (creates, appends to) the log at `path` for run `run`.
    pub fn open(path: &Path, run: &str) -> Result<AuditLog, AuditError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AuditError {
                path: path.to_owned(),
                source,
            })?;
        Ok(AuditLog {
            file,
            path: path.to_owned(),
            run: run.to_owned(),
        })
    }

    /// Appends one record (one write, so concurrent runs sharing a log do not interleave
    /// within a line).
    pub fn write(&mut self, record: &Record) -> Result<(), AuditError> {
        let line = Line {
            ts: rfc3339_now(),
            run: &self.run,
            record,
        };
        let mut text = serde_json::to_vec(&line).map_err(|e| AuditError {
            path: self.path.clone(),
            source: io::Error::other(e),
        })?;
        text.push(b'\n');
        self.file.write_all(&text).map_err(|source| AuditError {
            path: self.path.clone(),
            source,
        })
    }
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_millis())
}

/// `secs` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_435_200, 123), "2026-11-23T12:00:00.123Z");
    }
}
