//! `cella exec`: run a new process in a created or running container.

use super::create::protect_binary;
use super::{CmdResult, runtime, warn_all};
use crate::Cli;
use cella_runtime::exec::{ExecOptions, ExecOutcome};
use std::path::PathBuf;

/// Arguments of `cella exec`, named as runc names them.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// An OCI `process` JSON file describing the process (instead of ARGS and flags).
    #[arg(short, long, value_name = "FILE")]
    pub process: Option<PathBuf>,
    /// Give the process a pseudo-terminal (its master goes to --console-socket).
    #[arg(short, long)]
    pub tty: bool,
    /// UNIX socket that receives the pty master.
    #[arg(long = "console-socket", value_name = "SOCKET")]
    pub console_socket: Option<PathBuf>,
    /// Working directory inside the container.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Set an environment variable (KEY=VALUE); may be repeated.
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Run as UID[:GID].
    #[arg(short, long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Supplementary group; may be repeated.
    #[arg(short = 'g', long = "additional-gids", value_name = "GID")]
    pub additional_gids: Vec<u32>,
    /// Add a capability to every set; may be repeated.
    #[arg(short, long, value_name = "CAP")]
    pub cap: Vec<String>,
    /// Set no_new_privs for the process.
    #[arg(long = "no-new-privs")]
    pub no_new_privs: bool,
    /// Return at once instead of waiting for the process.
    #[arg(short, long)]
    pub detach: bool,
    /// File to write the process's pid to.
    #[arg(long = "pid-file", value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Pass this many file descriptors after stdio (3, 4, ...) to the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    pub preserve_fds: u32,
    /// AppArmor profile for the process.
    #[arg(long, value_name = "PROFILE")]
    pub apparmor: Option<String>,
    /// SELinux label for the process.
    #[arg(long = "process-label", value_name = "LABEL")]
    pub process_label: Option<String>,
    /// The container id.
    pub id: String,
    /// The program and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Parses `UID[:GID]`.
fn parse_user(s: &str) -> Result<(u32, Option<u32>), String> {
    let bad = || format!("--user {s:?}: use UID or UID:GID (numbers)");
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    let uid = u.parse().map_err(|_| bad())?;
    let gid = g.map(|g| g.parse().map_err(|_| bad())).transpose()?;
    Ok((uid, gid))
}

/// Runs `cella exec`; exits with the process's status unless detached.
pub fn run(args: &ExecArgs, cli: &Cli) -> CmdResult {
    let (uid, gid) = match &args.user {
        Some(u) => {
            let (uid, gid) = parse_user(u)?;
            (Some(uid), gid)
        }
        None => (None, None),
    };
    let opts = ExecOptions {
        process: args.process.clone(),
        args: args.args.clone(),
        tty: args.tty,
        console_socket: args.console_socket.clone(),
        cwd: args.cwd.clone(),
        env: args.env.clone(),
        uid,
        gid,
        additional_gids: args.additional_gids.clone(),
        caps: args.cap.clone(),
        no_new_privs: args.no_new_privs,
        detach: args.detach,
        pid_file: args.pid_file.clone(),
        preserve_fds: args.preserve_fds,
        apparmor: args.apparmor.clone(),
        process_label: args.process_label.clone(),
    };
    protect_binary()?;
    let (outcome, warnings) = runtime(cli)?.exec(&args.id, &opts)?;
    warn_all(&warnings);
    Ok(match outcome {
        ExecOutcome::Detached(_) => 0,
        ExecOutcome::Exited(code) => code,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_user;

    #[test]
    fn users() {
        assert_eq!(parse_user("1000"), Ok((1000, None)));
        assert_eq!(parse_user("1000:100"), Ok((1000, Some(100))));
        assert!(parse_user("bob").is_err());
        assert!(parse_user("1:x").is_err());
    }
}
