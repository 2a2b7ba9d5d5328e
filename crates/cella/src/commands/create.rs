//! `cella create`: set a container up from a bundle; its process waits for `start`.

use super::{CmdResult, runtime, warn_all};
use crate::Cli;
use crate::report::Reporter;
use cella_runtime::CreateOptions;
use std::path::PathBuf;

/// Flags shared by `create` and `run`, named as runc names them.
#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Path to the bundle (the directory holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// File to write the container's init pid to.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// UNIX socket that receives the pty master when process.terminal is true.
    #[arg(long = "console-socket", value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Pass this many file descriptors after stdio (3, 4, ...) to the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// Do not use pivot_root (for a rootfs on a ramdisk).
    #[arg(long = "no-pivot")]
    pub no_pivot: bool,
    /// Do not create a new session keyring for the container.
    #[arg(long = "no-new-keyring")]
    pub no_new_keyring: bool,
    /// The container id.
    pub id: String,
}

impl CreateArgs {
    /// The runtime's options.
    pub fn options(&self) -> CreateOptions {
        CreateOptions {
            bundle: self.bundle.clone(),
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
            preserve_fds: self.preserve_fds,
            no_pivot: self.no_pivot,
            no_new_keyring: self.no_new_keyring,
        }
    }
}

/// Re-executes from a sealed copy of the binary before anything is cloned into a
/// container (see cella_isolate::exe). Unprivileged users (and root of a user
/// namespace, to whom the host's root-owned binary is unmapped) cannot write the
/// installed binary anyway, so they skip the copy.
pub fn protect_binary() -> Result<(), cella_isolate::exe::ExeError> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 && cella_isolate::idmap::in_initial_user_namespace() {
        cella_isolate::exe::ensure_protected()?;
    }
    Ok(())
}

/// With `--debug`, prints the validated plan before acting on it.
fn explain(args: &CreateArgs, cli: &Cli, reporter: &Reporter) -> CmdResult {
    if cli.debug {
        for step in runtime(cli)?.explain(&args.id, &args.options())? {
            reporter.debug(&step);
        }
    }
    Ok(0)
}

/// Runs `cella create`.
pub fn run(args: &CreateArgs, cli: &Cli, reporter: &Reporter) -> CmdResult {
    protect_binary()?;
    explain(args, cli, reporter)?;
    let warnings = runtime(cli)?.create(&args.id, &args.options())?;
    warn_all(&warnings);
    Ok(0)
}

/// `cella run`: create, start, and wait (unless detached).
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Return as soon as the container has started.
    #[arg(short, long)]
    pub detach: bool,
    /// Accepted for runc compatibility (cella never keeps a stopped container).
    #[arg(long, hide = true)]
    pub keep: bool,
    #[command(flatten)]
    pub create: CreateArgs,
}

/// Runs `cella run`; exits with the container's status.
pub fn run_run(args: &RunArgs, cli: &Cli, reporter: &Reporter) -> CmdResult {
    protect_binary()?;
    explain(&args.create, cli, reporter)?;
    let (code, warnings) =
        runtime(cli)?.run(&args.create.id, &args.create.options(), args.detach)?;
    warn_all(&warnings);
    Ok(code)
}
