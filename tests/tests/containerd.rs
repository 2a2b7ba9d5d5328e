//! containerd (Debian's 1.6) drives cella through its io.containerd.runc.v2 shim:
//! `ctr run --runc-binary <cella>`, with a daemon of the test's own (see
//! cella_tests::engines::Containerd).

use cella_tests::engines::{Containerd, IMAGE, cgroup_dirs, run_in_pty};
use cella_tests::{cella_bin, require_root, require_tool, show};
use std::ffi::OsString;
use std::fs;
use std::time::{Duration, Instant};

/// A private containerd with the busybox image, or None when the test cannot run here.
fn containerd() -> Option<Containerd> {
    if !require_root()
        || !require_tool("containerd")
        || !require_tool("ctr")
        || !require_tool("containerd-shim-runc-v2")
    {
        return None;
    }
    let c = Containerd::start();
    c.import_busybox();
    Some(c)
}

/// `ctr run --runc-binary <cella> <flags> IMAGE <id> <cmd...>`.
fn run_args(flags: &[&str], id: &str, cmd: &[&str]) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["run".into(), "--runc-binary".into(), cella_bin().into()];
    a.extend(flags.iter().map(OsString::from));
    a.push(IMAGE.into());
    a.push(id.into());
    a.extend(cmd.iter().map(OsString::from));
    a
}

/// Waits until `ctr task ls` shows `id` in `want` status.
fn wait_status(c: &Containerd, id: &str, want: &str) {
    let start = Instant::now();
    loop {
        let now = c.task_status(id);
        if now.as_deref() == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "task {id} is {now:?}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts cella holds no state for `id` any more.
fn assert_no_runtime_state(c: &Containerd, id: &str) {
    let dir = c.runtime_root().join(id);
    assert!(!dir.exists(), "{} is left", dir.display());
}

#[test]
fn run_to_completion_returns_the_exit_status() {
    let Some(c) = containerd() else { return };
    let out = c.ctr(run_args(
        &["--rm"],
        "once",
        &["sh", "-c", "echo hello from pid $$; exit 3"],
    ));
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from pid 1\n");
    let ok = c.ctr(run_args(&["--rm"], "zero", &["true"]));
    assert_eq!(ok.status.code(), Some(0), "{}", show(&ok));
    assert_no_runtime_state(&c, "once");
    assert_no_runtime_state(&c, "zero");
    assert_eq!(c.ctr_ok(["container", "ls", "-q"]).trim(), "");
}

#[test]
fn detached_task_exec_kill_delete() {
    let Some(c) = containerd() else { return };
    c.ctr_ok(run_args(&["-d"], "bg", &["sleep", "1000"]));
    wait_status(&c, "bg", "RUNNING");
    // cella created it: its state is under the shim's root for our namespace.
    assert!(c.runtime_root().join("bg/state.json").exists());
    let out = c.ctr([
        "task",
        "exec",
        "--exec-id",
        "e1",
        "bg",
        "sh",
        "-c",
        "echo pid1=$(cat /proc/1/comm); exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "pid1=sleep\n");
    let ps = c.ctr_ok(["task", "ps", "bg"]);
    assert_eq!(ps.lines().count(), 2, "one process after exec ended: {ps}");
    // sleep as pid 1 ignores SIGTERM: SIGKILL ends it.
    c.ctr_ok(["task", "kill", "-s", "SIGKILL", "bg"]);
    wait_status(&c, "bg", "STOPPED");
    c.ctr_ok(["task", "delete", "bg"]);
    assert!(c.task_status("bg").is_none());
    c.ctr_ok(["container", "delete", "bg"]);
    assert_no_runtime_state(&c, "bg");
    let cg = format!("{}/bg", c.namespace);
    assert!(cgroup_dirs(&cg).is_empty(), "cgroup {cg} is left");
}

#[test]
fn pause_and_resume_freeze_the_task() {
    let Some(c) = containerd() else { return };
    c.ctr_ok(run_args(&["-d"], "fz", &["sleep", "1000"]));
    wait_status(&c, "fz", "RUNNING");
    let freezer = cgroup_dirs(&format!("{}/fz", c.namespace))
        .into_iter()
        .map(|d| d.join("freezer.state"))
        .find(|f| f.exists());
    c.ctr_ok(["task", "pause", "fz"]);
    wait_status(&c, "fz", "PAUSED");
    if let Some(f) = &freezer {
        assert_eq!(fs::read_to_string(f).unwrap().trim(), "FROZEN");
    }
    c.ctr_ok(["task", "resume", "fz"]);
    wait_status(&c, "fz", "RUNNING");
    if let Some(f) = &freezer {
        assert_eq!(fs::read_to_string(f).unwrap().trim(), "THAWED");
    }
    let out = c.ctr(["task", "exec", "--exec-id", "e2", "fz", "echo", "alive"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alive\n");
    c.ctr_ok(["task", "kill", "-s", "SIGKILL", "fz"]);
    wait_status(&c, "fz", "STOPPED");
    c.ctr_ok(["task", "delete", "fz"]);
    c.ctr_ok(["container", "delete", "fz"]);
    assert_no_runtime_state(&c, "fz");
}

#[test]
fn run_with_a_terminal_returns_and_keeps_the_exit_status() {
    let Some(c) = containerd() else { return };
    // With -t the shim reads `create`'s output to its end: the container must not
    // hold that pipe, or this hangs until the container exits (it never would here).
    let cmd = c.ctr_cmd(run_args(
        &["-t", "--rm"],
        "tty",
        &["sh", "-c", "tty; test -t 1 && echo stdout-is-tty; exit 5"],
    ));
    let (out, code) = run_in_pty(cmd, 30, 90, Duration::from_secs(60));
    assert_eq!(code, 5, "output: {out:?}");
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    assert!(lines.contains(&"/dev/pts/0"), "{out:?}");
    assert!(lines.contains(&"stdout-is-tty"), "{out:?}");
    assert_no_runtime_state(&c, "tty");
}
