//! `cella sandbox`: run an untrusted program with hard limits, a syscall allowlist, a
//! verdict and a minimal audit log (see docs/sandbox.md). One run, or a batch.

use crate::Cli;
use crate::commands::CmdResult;
use cella_sandbox::{Bind, Limits, Options, SeccompMode, Verdict};
use std::path::PathBuf;

/// Run untrusted code: isolated, confined, bounded, judged and audited.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Exit status: the program's (OK, RE: its code or 128+signal), \
TLE 124, MLE 123, OLE 122, SV 121, IE 120."
)]
pub struct SandboxArgs {
    /// Root directory of the sandbox (default: the host's root, read-only).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Bind-mount SRC at DST (default: the same path), writable.
    #[arg(long, value_name = "SRC[:DST]")]
    bind: Vec<String>,
    /// Bind-mount SRC at DST (default: the same path), read-only.
    #[arg(long = "ro-bind", value_name = "SRC[:DST]")]
    ro_bind: Vec<String>,
    /// Writable work directory: an overlay of DIR whose changes stay in the sandbox,
    /// mounted at DST (default: the same path); the program starts there (else /tmp).
    #[arg(long, value_name = "DIR[:DST]")]
    workdir: Option<String>,
    /// Set an environment variable (the host's environment is not passed on).
    #[arg(long, value_name = "K=V")]
    env: Vec<String>,
    /// CPU time limit of all processes together, seconds.
    #[arg(long = "cpu-time", value_name = "SECS", value_parser = cella_sandbox::parse_seconds)]
    cpu_time: Option<std::time::Duration>,
    /// Wall-clock limit, seconds.
    #[arg(long = "wall-time", value_name = "SECS", value_parser = cella_sandbox::parse_seconds)]
    wall_time: Option<std::time::Duration>,
    /// Memory limit (e.g. 256M).
    #[arg(long, value_name = "SIZE", value_parser = cella_sandbox::parse_size)]
    memory: Option<u64>,
    /// Processes and threads at once.
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// Limit of stdout and stderr together.
    #[arg(long = "output-limit", value_name = "SIZE", value_parser = cella_sandbox::parse_size)]
    output_limit: Option<u64>,
    /// Largest file the program may write.
    #[arg(long = "file-size", value_name = "SIZE", value_parser = cella_sandbox::parse_size)]
    file_size: Option<u64>,
    /// Open descriptors per process.
    #[arg(long = "open-files", value_name = "N")]
    open_files: Option<u64>,
    /// Stack size.
    #[arg(long, value_name = "SIZE", value_parser = cella_sandbox::parse_size)]
    stack: Option<u64>,
    /// Seccomp profile: default (built-in allowlist), unconfined, or an OCI profile file.
    #[arg(
        long,
        value_name = "FILE|default|unconfined",
        default_value = "default"
    )]
    seccomp: String,
    /// Network: none (a private loopback only), or the name of a bridge network made
    /// with `cella net network create` (root only).
    #[arg(long, value_name = "none|NETWORK", default_value = "none")]
    net: String,
    /// Write the verdict JSON here (`-` for stderr).
    #[arg(long, value_name = "FILE")]
    result: Option<String>,
    /// The program's stdin (default: cella's).
    #[arg(long, value_name = "FILE")]
    stdin: Option<PathBuf>,
    /// Write the program's stdout here (default: cella's stdout).
    #[arg(long, value_name = "FILE")]
    stdout: Option<PathBuf>,
    /// Write the program's stderr here (default: cella's stderr).
    #[arg(long, value_name = "FILE")]
    stderr: Option<PathBuf>,
    /// Append audit records (JSON lines) here.
    #[arg(long = "audit-log", value_name = "FILE")]
    audit_log: Option<PathBuf>,
    /// On a security violation, keep the writable state here with a sha256 manifest.
    #[arg(long, value_name = "DIR")]
    evidence: Option<PathBuf>,
    /// Name of the run in the audit log.
    #[arg(long, value_name = "ID")]
    id: Option<String>,
    /// Add a Landlock ruleset under the mount namespace: by default everything readable
    /// and only /tmp, /dev, the work directory and read-write binds writable.
    #[arg(long)]
    landlock: bool,
    /// A path the Landlock ruleset lets the program read (replaces the default `/`).
    #[arg(long = "landlock-ro", value_name = "PATH", requires = "landlock")]
    landlock_ro: Vec<PathBuf>,
    /// A path the Landlock ruleset lets the program read and write (replaces the
    /// default writable places).
    #[arg(long = "landlock-rw", value_name = "PATH", requires = "landlock")]
    landlock_rw: Vec<PathBuf>,
    /// Give the sandbox a core-scheduling cookie of its own (SMT side channels).
    #[arg(long = "core-sched")]
    core_sched: bool,
    /// Run every submission of a JSON-lines manifest (id, command, limits, files).
    #[arg(long, value_name = "MANIFEST", conflicts_with = "command")]
    batch: Option<PathBuf>,
    /// Submissions run at once with --batch (default: the number of CPUs).
    #[arg(long, value_name = "N", requires = "batch")]
    jobs: Option<usize>,
    /// One submission of a batch, as JSON options (used by --batch for its children).
    #[arg(
        long = "batch-run",
        value_name = "JSON",
        hide = true,
        conflicts_with = "batch"
    )]
    batch_run: Option<String>,
    /// The program and its arguments.
    #[arg(
        last = true,
        value_name = "COMMAND",
        required_unless_present_any = ["batch", "batch_run"]
    )]
    command: Vec<String>,
}

fn split_bind(s: &str, readonly: bool) -> Bind {
    let (src, dst) = match s.split_once(':') {
        Some((a, b)) => (a, b),
        None => (s, s),
    };
    Bind {
        source: PathBuf::from(src),
        destination: PathBuf::from(dst),
        readonly,
    }
}

impl SandboxArgs {
    fn options(&self) -> Result<Options, Box<dyn std::error::Error>> {
        let mut binds: Vec<Bind> = self.bind.iter().map(|b| split_bind(b, false)).collect();
        binds.extend(self.ro_bind.iter().map(|b| split_bind(b, true)));
        let env = self
            .env
            .iter()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .ok_or_else(|| format!("--env: {kv:?} is not K=V"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let seccomp = match self.seccomp.as_str() {
            "default" => SeccompMode::Default,
            "unconfined" => SeccompMode::Unconfined,
            f => SeccompMode::Profile(PathBuf::from(f)),
        };
        Ok(Options {
            command: self.command.clone(),
            rootfs: self.rootfs.clone(),
            binds,
            workdir: self.workdir.as_deref().map(|w| split_bind(w, false)),
            env,
            limits: Limits {
                cpu_time: self.cpu_time,
                wall_time: self.wall_time,
                memory: self.memory,
                pids: self.pids,
                output: self.output_limit,
                file_size: self.file_size,
                open_files: self.open_files,
                stack: self.stack,
            },
            seccomp,
            stdin: self.stdin.clone(),
            stdout: self.stdout.clone(),
            stderr: self.stderr.clone(),
            audit_log: self.audit_log.clone(),
            evidence: self.evidence.clone(),
            id: self.id.clone(),
            landlock: self.landlock.then(|| cella_sandbox::LandlockPaths {
                read_only: self.landlock_ro.clone(),
                read_write: self.landlock_rw.clone(),
            }),
            core_sched: self.core_sched,
            network: (self.net != "none").then(|| {
                let p = super::net_paths();
                cella_sandbox::SandboxNet {
                    name: self.net.clone(),
                    state_dir: p.state_dir,
                    ipam_dir: p.ipam_dir,
                    network_dir: p.network_dir,
                }
            }),
        })
    }
}

fn write_result(dest: Option<&str>, v: &Verdict) -> Result<(), Box<dyn std::error::Error>> {
    let Some(dest) = dest else { return Ok(()) };
    let mut text = serde_json::to_string(v)?;
    text.push('\n');
    if dest == "-" {
        eprint!("{text}");
    } else {
        std::fs::write(dest, text).map_err(|e| format!("--result `{dest}`: {e}"))?;
    }
    Ok(())
}

/// Runs `cella sandbox`.
pub fn run(args: &SandboxArgs, _cli: &Cli) -> CmdResult {
    if let Some(manifest) = &args.batch {
        return batch(
            &args.options()?,
            manifest,
            args.jobs,
            args.result.as_deref(),
        );
    }
    if let Some(json) = &args.batch_run {
        return batch_child(json);
    }
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            write_result(args.result.as_deref(), &Verdict::internal(e.to_string(), 0))?;
            return Err(e);
        }
    };
    let verdict = match cella_sandbox::run(&opts) {
        Ok(v) => v,
        Err(e) => {
            // The grader still gets a verdict.
            let v = Verdict::internal(chain(&e), 0);
            write_result(args.result.as_deref(), &v)?;
            return Err(Box::new(e));
        }
    };
    write_result(args.result.as_deref(), &verdict)?;
    if let Some(e) = &verdict.error {
        eprintln!("cella: sandbox: {e}");
    }
    Ok(verdict.exit_status())
}

/// An error and its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

/// One submission of a batch, in its own process: the verdict goes to stdout.
fn batch_child(json: &str) -> CmdResult {
    let opts: Options = serde_json::from_str(json).map_err(|e| format!("--batch-run: {e}"))?;
    let verdict = cella_sandbox::run(&opts).unwrap_or_else(|e| Verdict::internal(chain(&e), 0));
    println!("{}", serde_json::to_string(&verdict)?);
    Ok(verdict.exit_status())
}

/// Runs a whole manifest: one child `cella sandbox` per submission, `jobs` at once, one
/// result line per submission (to --result or stdout), a progress bar on a terminal.
fn batch(
    common: &Options,
    manifest: &std::path::Path,
    jobs: Option<usize>,
    result: Option<&str>,
) -> CmdResult {
    use std::io::{IsTerminal, Write};
    use std::process::{Command, Stdio};
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| format!("--batch `{}`: {e}", manifest.display()))?;
    let entries = cella_sandbox::batch::parse_manifest(&text)
        .map_err(|e| format!("--batch `{}`: {e}", manifest.display()))?;
    let exe = std::env::current_exe()?;
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut out: Box<dyn Write> = match result {
        Some("-") => Box::new(std::io::stderr()),
        Some(p) => Box::new(std::fs::File::create(p).map_err(|e| format!("--result `{p}`: {e}"))?),
        None => Box::new(std::io::stdout()),
    };
    let bar = std::io::stderr().is_terminal();
    let total = entries.len();
    let mut counts: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let mut failed_write = None;
    let mut internal = 0usize;
    let run_one = |e: &cella_sandbox::batch::Entry| -> Verdict {
        let opts = e.options(common);
        let json = match serde_json::to_string(&opts) {
            Ok(j) => j,
            Err(err) => return Verdict::internal(format!("encode the options: {err}"), 0),
        };
        let child = Command::new(&exe)
            .arg("sandbox")
            .arg("--batch-run")
            .arg(json)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output();
        match child {
            Ok(o) => serde_json::from_slice::<Verdict>(&o.stdout).unwrap_or_else(|_| {
                Verdict::internal(
                    format!(
                        "the submission's sandbox failed: {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    0,
                )
            }),
            Err(err) => Verdict::internal(format!("start `{}`: {err}", exe.display()), 0),
        }
    };
    let mut done = 0usize;
    cella_sandbox::batch::run_all(&entries, jobs, run_one, |_, line| {
        done += 1;
        *counts.entry(line.verdict.status.as_str()).or_default() += 1;
        if line.verdict.status == cella_sandbox::Status::InternalError {
            internal += 1;
        }
        let text = serde_json::to_string(&line).unwrap_or_default();
        if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
            failed_write.get_or_insert(e);
        }
        if bar {
            let width = 30;
            let filled = done * width / total.max(1);
            let tally: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
            eprint!(
                "\r[{}{}] {done}/{total}  {}",
                "#".repeat(filled),
                ".".repeat(width - filled),
                tally.join("  ")
            );
        }
    });
    if bar {
        eprintln!();
    }
    if let Some(e) = failed_write {
        return Err(format!("write the results: {e}").into());
    }
    Ok(if internal > 0 {
        cella_sandbox::EXIT_IE
    } else {
        0
    })
}
