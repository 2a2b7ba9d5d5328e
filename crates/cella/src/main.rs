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
#[derive(Parser, Debug)]
#[command(
    name = "cella",
    version,
    about = "A Linux container runtime and namespace-isolation toolkit"
)]
pub struct Cli {
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
    /// Accepted for runc compatibility: auto, true or false.
    #[arg(long, value_name = "MODE", hide = true)]
    pub rootless: Option<String>,
    /// Accepted for crun compatibility; `--debug` turns debug output on.
    #[arg(long = "log-level", value_name = "LEVEL", hide = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Every verb cella understands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create(commands::create::CreateArgs),
    /// Start a created container.
    Start(commands::start::StartArgs),
    /// Create and start a container, and wait for it unless --detach.
    Run(commands::create::RunArgs),
    /// Print a container's state as JSON.
    State(commands::state::StateArgs),
    /// Send a signal to a container's init (or all its processes).
    Kill(commands::kill::KillArgs),
    /// Delete a container and everything made for it.
    Delete(commands::delete::DeleteArgs),
    /// List containers.
    #[command(alias = "ls")]
    List(commands::list::ListArgs),
    /// Show a container's processes.
    Ps(commands::ps::PsArgs),
    /// Print the features this build supports (OCI features JSON).
    Features,
    /// Write a default config.json.
    Spec(commands::spec::SpecArgs),
    /// Namespace tools: list, enter, unshare, create and remove namespaces.
    #[command(subcommand)]
    Ns(commands::ns::NsCommand),
    /// Container networking: named netns, links, addresses, routes, rules, bridge networks.
    #[command(subcommand)]
    Net(commands::net::NetCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let reporter = report::Reporter::new(&cli);
    let result = match &cli.command {
        Command::Create(a) => commands::create::run(a, &cli, &reporter),
        Command::Start(a) => commands::start::run(a, &cli),
        Command::Run(a) => commands::create::run_run(a, &cli, &reporter),
        Command::State(a) => commands::state::run(a, &cli),
        Command::Kill(a) => commands::kill::run(a, &cli),
        Command::Delete(a) => commands::delete::run(a, &cli),
        Command::List(a) => commands::list::run(a, &cli),
        Command::Ps(a) => commands::ps::run(a, &cli),
        Command::Features => commands::features::run(),
        Command::Spec(a) => commands::spec::run(a),
        Command::Ns(c) => commands::ns::run(c, &cli),
        Command::Net(c) => commands::net::run(c, &cli),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            reporter.error(e.as_ref());
            ExitCode::from(1)
        }
    }
}
