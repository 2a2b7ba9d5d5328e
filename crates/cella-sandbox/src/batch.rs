//! Batches: a manifest of submissions (JSON lines), each run in its own sandbox with
//! bounded parallelism.
//!
//! A manifest line: `{"id": "s1", "command": ["./a.out"], "limits": {"cpu_time": 1,
//! "memory": "64M"}, "files": {"workdir": "/subs/s1", "stdin": "/tests/1.in",
//! "stdout": "/out/s1.out"}, "env": {"K": "V"}}`. Only `id` and `command` are required;
//! `limits` override the batch's own limits one by one; `files` name the submission's
//! work directory and its stdio and evidence files (stdin, stdout and stderr default to
//! /dev/null in a batch; a batch-wide evidence directory gets one subdirectory per id).
//!
//! [`run_all`] runs the submissions on `jobs` worker threads; how one submission runs is
//! the caller's (the `cella` binary starts one `cella sandbox` process per submission, so
//! every run has a single-threaded supervisor of its own).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::{Bind, Limits, Options, Verdict};

/// The files of one submission.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Files {
    /// Work directory, `DIR` or `DIR:DST` (see [`Options::workdir`]).
    pub workdir: Option<String>,
    /// The program's stdin.
    pub stdin: Option<PathBuf>,
    /// Where its stdout goes.
    pub stdout: Option<PathBuf>,
    /// Where its stderr goes.
    pub stderr: Option<PathBuf>,
    /// Evidence directory on a violation.
    pub evidence: Option<PathBuf>,
}

/// One submission of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Names the submission in its result line and the audit log.
    pub id: String,
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Limits overriding the batch's.
    #[serde(default)]
    pub limits: Limits,
    /// Its files.
    #[serde(default)]
    pub files: Files,
    /// Extra environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// A manifest line that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("manifest line {line}: {reason}")]
pub struct ManifestError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Parses a manifest: one JSON object per non-empty line; ids must be unique.
pub fn parse_manifest(text: &str) -> Result<Vec<Entry>, ManifestError> {
    let mut out: Vec<Entry> = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.is_empty() {
            continue;
        }
        let bad = |reason: String| ManifestError {
            line: i + 1,
            reason,
        };
        let e: Entry = serde_json::from_str(l).map_err(|e| bad(e.to_string()))?;
        if e.command.is_empty() {
            return Err(bad("`command` is empty".into()));
        }
        if out.iter().any(|o| o.id == e.id) {
            return Err(bad(format!("id {:?} appears twice", e.id)));
        }
        out.push(e);
    }
    Ok(out)
}

fn split_bind(s: &str) -> Bind {
    let (src, dst) = s.split_once(':').unwrap_or((s, s));
    Bind {
        source: PathBuf::from(src),
        destination: PathBuf::from(dst),
        readonly: false,
    }
}

impl Entry {
    /// The options of this submission: the batch's `base`, with this entry's command,
    /// limits, files and environment on top.
    pub fn options(&self, base: &Options) -> Options {
        let mut o = base.clone();
        o.id = Some(self.id.clone());
        o.command = self.command.clone();
        let l = &self.limits;
        let b = &mut o.limits;
        b.cpu_time = l.cpu_time.or(b.cpu_time);
        b.wall_time = l.wall_time.or(b.wall_time);
        b.memory = l.memory.or(b.memory);
        b.pids = l.pids.or(b.pids);
        b.output = l.output.or(b.output);
        b.file_size = l.file_size.or(b.file_size);
        b.open_files = l.open_files.or(b.open_files);
        b.stack = l.stack.or(b.stack);
        let null = || Some(PathBuf::from("/dev/null"));
        if let Some(w) = &self.files.workdir {
            o.workdir = Some(split_bind(w));
        }
        o.stdin = self.files.stdin.clone().or_else(null);
        o.stdout = self.files.stdout.clone().or_else(null);
        o.stderr = self.files.stderr.clone().or_else(null);
        // A batch-wide evidence directory holds one directory per submission.
        o.evidence = match (&self.files.evidence, &base.evidence) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(dir)) => Some(dir.join(&self.id)),
            (None, None) => None,
        };
        for (k, v) in &self.env {
            o.env.retain(|(ek, _)| ek != k);
            o.env.push((k.clone(), v.clone()));
        }
        o
    }
}

/// One finished submission, as [`run_all`] reports it.
#[derive(Clone, Debug, Serialize)]
pub struct ResultLine {
    /// The submission's id.
    pub id: String,
    /// Its verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Runs every entry with `run_one` on `jobs` threads (at least one), calling `done` on
/// the calling thread as each finishes, in completion order.
pub fn run_all<F, G>(entries: &[Entry], jobs: usize, run_one: F, mut done: G)
where
    F: Fn(&Entry) -> Verdict + Sync,
    G: FnMut(usize, ResultLine),
{
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, ResultLine)>();
    let tx = Mutex::new(tx);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(entries.len().max(1)) {
            let tx = tx.lock().map(|t| t.clone());
            let Ok(tx) = tx else { break };
            let (next, run_one) = (&next, &run_one);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(e) = entries.get(i) else { break };
                    let verdict = run_one(e);
                    let line = ResultLine {
                        id: e.id.clone(),
                        verdict,
                    };
                    if tx.send((i, line)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for (i, line) in rx {
            done(i, line);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn manifest_lines() {
        let text = r#"
{"id": "a", "command": ["./a.out"], "limits": {"cpu_time": 2, "memory": "64M"}, "files": {"workdir": "/subs/a:/w", "stdin": "/t/1.in"}}

{"id": "b", "command": ["python3", "b.py"], "env": {"X": "1"}}
"#;
        let e = parse_manifest(text).expect("parses");
        assert_eq!(e.len(), 2);
        let base = Options {
            limits: Limits {
                wall_time: Some(Duration::from_secs(5)),
                memory: Some(1 << 30),
                ..Limits::default()
            },
            ..Options::default()
        };
        let o = e[0].options(&base);
        assert_eq!(o.id.as_deref(), Some("a"));
        assert_eq!(o.limits.cpu_time, Some(Duration::from_secs(2)));
        assert_eq!(o.limits.memory, Some(64 << 20));
        assert_eq!(o.limits.wall_time, Some(Duration::from_secs(5)));
        assert_eq!(
            o.workdir.as_ref().map(|w| w.destination.clone()),
            Some("/w".into())
        );
        assert_eq!(o.stdin, Some(PathBuf::from("/t/1.in")));
        assert_eq!(o.stdout, Some(PathBuf::from("/dev/null")));
        let o = e[1].options(&base);
        assert_eq!(o.env, vec![("X".to_string(), "1".to_string())]);
        assert_eq!(o.limits.memory, Some(1 << 30));
    }

    #[test]
    fn bad_manifests_name_the_line() {
        let err = parse_manifest("{\"id\": \"a\", \"command\": []}").unwrap_err();
        assert_eq!(err.line, 1);
        let err = parse_manifest(
            "{\"id\": \"a\", \"command\": [\"x\"]}\n{\"id\": \"a\", \"command\": [\"y\"]}",
        )
        .unwrap_err();
        assert_eq!(err.line, 2);
        assert!(parse_manifest("{\"id\": \"a\", \"command\": [\"x\"], \"limts\": {}}").is_err());
    }

    #[test]
    fn runs_everything_once() {
        let entries: Vec<Entry> = (0..25)
            .map(|i| Entry {
                id: format!("e{i}"),
                command: vec!["true".into()],
                limits: Limits::default(),
                files: Files::default(),
                env: BTreeMap::new(),
            })
            .collect();
        let mut seen = Vec::new();
        run_all(
            &entries,
            4,
            |_| crate::Verdict::internal(String::new(), 0),
            |i, line| seen.push((i, line.id)),
        );
        seen.sort();
        assert_eq!(seen.len(), 25);
        assert!(
            seen.iter()
                .enumerate()
                .all(|(n, (i, id))| n == *i && *id == format!("e{i}"))
        );
    }
}
