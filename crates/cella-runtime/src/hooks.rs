//! OCI hooks: run a program with the container state on stdin, its own args and env,
//! and a timeout after which it is killed.

use oci_spec::runtime::Hook;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// It could not be started.
    #[error("start")]
    Spawn(#[source] io::Error),
    /// It exited non-zero or was killed.
    #[error("exited with {0}")]
    Failed(String),
    /// It ran longer than its timeout.
    #[error("timed out after {0} s")]
    Timeout(i64),
    /// Waiting for it failed.
    #[error("wait")]
    Wait(#[source] io::Error),
}

/// Runs `hook` with `state` on stdin; stdout and stderr are the runtime's.
pub fn run(hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let mut cmd = Command::new(hook.path());
    if let Some([argv0, rest @ ..]) = hook.args().as_deref() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(HookError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state);
    }
    let timeout = hook.timeout().filter(|t| *t > 0);
    if let Some(secs) = timeout
        && !wait_exit(child.id() as i32, Duration::from_secs(secs as u64))
            .map_err(HookError::Wait)?
    {
        let _ = child.kill();
        let _ = child.wait();
        return Err(HookError::Timeout(secs));
    }
    let status = child.wait().map_err(HookError::Wait)?;
    if status.success() {
        return Ok(());
    }
    Err(HookError::Failed(match (status.code(), status.signal()) {
        (Some(c), _) => format!("status {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }))
}

/// Waits up to `limit` for `pid` to exit without reaping it. True if it exited.
fn wait_exit(pid: i32, limit: Duration) -> io::Result<bool> {
    // SAFETY: pidfd_open takes integers and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = cella_isolate::sys::check_long(fd)? as i32;
    // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = limit.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: `pfd` is one live pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn passes_state_args_and_env() {
        let dir = std::env::temp_dir().join(format!("cella-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let h = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", "cat > \"$1\"; echo \"$FOO\" >> \"$1\"", "sh", out],
            "env": ["FOO=bar"],
        }));
        run(&h, b"{\"id\":\"x\"}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"x\"}bar\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn failure_and_timeout() {
        let h = hook(serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}));
        assert_eq!(
            run(&h, b"").unwrap_err().to_string(),
            "exited with status 3"
        );
        let h =
            hook(serde_json::json!({"path": "/bin/sleep", "args": ["sleep", "5"], "timeout": 1}));
        let t = std::time::Instant::now();
        assert!(matches!(run(&h, b""), Err(HookError::Timeout(1))));
        assert!(t.elapsed() < Duration::from_secs(3));
        let h = hook(serde_json::json!({"path": "/nonexistent/hook"}));
        assert!(matches!(run(&h, b""), Err(HookError::Spawn(_))));
    }
}
