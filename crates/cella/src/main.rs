//! The `cella` command line: parses arguments, calls a library, maps errors to messages
//! and exit codes. Nothing else lives here.
//!
//! Global flags and verbs follow runc's command line so that engines (Podman, containerd)
//! can drive cella unchanged. Each verb lives in `commands/<verb>.rs`.

mod commands;
mod report;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Global flags, as runc takes them (before the verb).
#[derive(clap::Args, Debug)]
pub struct Globals {
    /// Root directory for container state (default /run/cella, or
    /// $XDG_RUNTIME_DIR/cella when not root).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Write errors and debug messages to this file instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Format of the log: text or json.
    #[arg(long = "log-format", value_name = "FORMAT", default_value = "text")]
    pub log_format: report::LogFormat,
    /// Print what cella does, step by step.
    #[arg(long)]
    pub debug: bool,
    /// Manage cgroups through systemd.
    #[arg(long = "systemd-cgroup")]
    pub systemd_cgroup: bool,
    /// Rootless mode, as runc's: true ignores cgroup permission errors (running
    /// without a cgroup, with a warning), false never does, auto (default) decides
    /// from the caller's privileges.
    #[arg(long, value_name = "MODE", hide = true)]
    pub rootless: Option<commands::RootlessMode>,
    /// Accepted for crun compatibility; `--debug` turns debug output on.
    #[arg(long = "log-level", value_name = "LEVEL", hide = true)]
    pub log_level: Option<String>,
}

/// What every verb receives: the global flags.
pub type Cli = Globals;

/// The whole command line.
#[derive(Parser, Debug)]
#[command(
    name = "cella",
    version,
    about = "A Linux container runtime and namespace-isolation toolkit"
)]
struct FullCli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

/// The runtime verbs alone. Engines call these for every container: building clap's
/// tree for `ns` and `net` too would cost every lifecycle command time and memory.
#[derive(Parser, Debug)]
#[command(name = "cella", version)]
struct RuntimeCli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: RuntimeCommand,
}

/// Every verb cella understands.
#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Runtime(RuntimeCommand),
    /// Namespace tools: list, enter, unshare, create and remove namespaces.
    #[command(subcommand)]
    Ns(commands::ns::NsCommand),
    /// Container networking: named netns, links, addresses, routes, rules, bridge networks.
    #[command(subcommand)]
    Net(commands::net::NetCommand),
    /// Run untrusted code with hard limits, a syscall allowlist, a verdict and an audit log.
    Sandbox(Box<commands::sandbox::SandboxArgs>),
}

/// The OCI runtime's verbs, runc's command line.
#[derive(Subcommand, Debug)]
enum RuntimeCommand {
    /// Create a container from a bundle; its process waits for `start`.
    Create(commands::create::CreateArgs),
    /// Start a created container.
    Start(commands::start::StartArgs),
    /// Create and start a container, and wait for it unless --detach.
    Run(commands::create::RunArgs),
    /// Print a container's state as JSON.
    State(commands::state::StateArgs),
    /// Run a new process in a created or running container.
    Exec(commands::exec::ExecArgs),
    /// Send a signal to a container's init (or all its processes).
    Kill(commands::kill::KillArgs),
    /// Delete a container and everything made for it.
    Delete(commands::delete::DeleteArgs),
    /// List containers.
    #[command(alias = "ls")]
    List(commands::list::ListArgs),
    /// Show a container's processes.
    Ps(commands::ps::PsArgs),
    /// Freeze every process of a container.
    Pause(commands::pause::PauseArgs),
    /// Thaw a paused container.
    Resume(commands::resume::ResumeArgs),
    /// Print a container's resource usage as JSON events (once with --stats).
    Events(commands::events::EventsArgs),
    /// Change a container's resource limits.
    Update(commands::update::UpdateArgs),
    /// Print the features this build supports (OCI features JSON).
    Features,
    /// Write a default config.json.
    Spec(commands::spec::SpecArgs),
}

/// Global flags that take a value, to skip when looking for the verb.
const VALUE_FLAGS: [&str; 5] = [
    "--root",
    "--log",
    "--log-format",
    "--rootless",
    "--log-level",
];

/// The first word that is not a global flag or its value.
fn verb(args: &[std::ffi::OsString]) -> Option<&str> {
    let mut it = args.iter().skip(1).map(|a| a.to_str().unwrap_or(""));
    while let Some(a) = it.next() {
        if VALUE_FLAGS.contains(&a) {
            it.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// Parses the command line, building only the runtime's part of it when the verb is
/// one of the runtime's.
fn parse() -> (Globals, Command) {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if !matches!(verb(&args), None | Some("ns" | "net" | "sandbox" | "help"))
        && let Ok(c) = RuntimeCli::try_parse_from(&args)
    {
        return (c.globals, Command::Runtime(c.command));
    }
    // Help, errors and the tools: the whole tree, so messages list every verb.
    let c = FullCli::parse_from(&args);
    (c.globals, c.command)
}

fn main() -> ExitCode {
    let (cli, command) = parse();
    let reporter = report::Reporter::new(&cli);
    let result = match &command {
        Command::Runtime(r) => match r {
            RuntimeCommand::Create(a) => commands::create::run(a, &cli, &reporter),
            RuntimeCommand::Start(a) => commands::start::run(a, &cli),
            RuntimeCommand::Run(a) => commands::create::run_run(a, &cli, &reporter),
            RuntimeCommand::State(a) => commands::state::run(a, &cli),
            RuntimeCommand::Exec(a) => commands::exec::run(a, &cli),
            RuntimeCommand::Kill(a) => commands::kill::run(a, &cli),
            RuntimeCommand::Delete(a) => commands::delete::run(a, &cli),
            RuntimeCommand::List(a) => commands::list::run(a, &cli),
            RuntimeCommand::Ps(a) => commands::ps::run(a, &cli),
            RuntimeCommand::Pause(a) => commands::pause::run(a, &cli),
            RuntimeCommand::Resume(a) => commands::resume::run(a, &cli),
            RuntimeCommand::Events(a) => commands::events::run(a, &cli),
            RuntimeCommand::Update(a) => commands::update::run(a, &cli),
            RuntimeCommand::Features => commands::features::run(),
            RuntimeCommand::Spec(a) => commands::spec::run(a),
        },
        Command::Ns(c) => commands::ns::run(c, &cli),
        Command::Net(c) => commands::net::run(c, &cli),
        Command::Sandbox(a) => commands::sandbox::run(a, &cli),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            reporter.error(e.as_ref());
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verb_skips_global_flags() {
        let v = |a: &[&str]| -> Option<String> {
            let args: Vec<std::ffi::OsString> = a.iter().map(Into::into).collect();
            verb(&args).map(str::to_owned)
        };
        assert_eq!(
            v(&["cella", "--root", "/x", "--debug", "create", "id"]).as_deref(),
            Some("create")
        );
        assert_eq!(
            v(&["cella", "--log-format", "json", "ns", "ls"]).as_deref(),
            Some("ns")
        );
        assert_eq!(
            v(&["cella", "--root=/x", "state", "a"]).as_deref(),
            Some("state")
        );
        assert_eq!(v(&["cella", "--version"]), None);
    }

    #[test]
    fn both_trees_are_valid() {
        use clap::CommandFactory;
        FullCli::command().debug_assert();
        RuntimeCli::command().debug_assert();
    }
}
