//! End-to-end tests of `linux.seccomp` through the runtime: the filter the config asks
//! for is in force inside the container. (Compiler correctness against libseccomp is
//! tested in crates/cella-seccomp.)

use cella_tests::{Bundle, Cella, require_root, show, unique};
use serde_json::{Value, json};
use std::os::unix::net::UnixListener;

fn bundle(script: &str, seccomp: Value) -> Bundle {
    let mut b = Bundle::new("seccomp", &["sh", "-c", script]);
    b.config["linux"]["seccomp"] = seccomp;
    b.save();
    b
}

#[test]
fn errno_and_kill_actions_apply_inside() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let b = bundle(
        "mkdir /tmp/x 2>&1; echo mkdir=$?; hostname changed 2>/dev/null; echo hostname=$?; exec hostname changed",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["sethostname"], "action": "SCMP_ACT_KILL_PROCESS"}
            ]
        }),
    );
    let out = c.run(&b, &unique("sc"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Permission denied") && text.contains("mkdir=1"),
        "{}",
        show(&out)
    );
    // sethostname kills the process that calls it with SIGSYS (128 + 31), first a
    // child of sh, then init itself. Without the filter it would fail with EPERM
    // (exit 1), CAP_SYS_ADMIN not being in the default set.
    assert!(text.contains("hostname=159"), "{}", show(&out));
    assert_eq!(out.status.code(), Some(159), "{}", show(&out));
}

#[test]
fn filter_is_checked_before_anything_is_made() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let b = bundle(
        "true",
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
    );
    let id = unique("sc");
    let out = c.run(&b, &id);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linux.seccomp.syscalls[0].args[0].index"),
        "{}",
        show(&out)
    );
    assert!(!c.root.join(&id).exists());
    let b = bundle("true", json!({"defaultAction": "SCMP_ACT_NOPE"}));
    let out = c.run(&b, &unique("sc"));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("linux.seccomp.defaultAction"),
        "{}",
        show(&out)
    );
}

#[test]
fn notify_hands_the_listener_fd_and_state_to_the_agent() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let dir = cella_tests::scratch_root().join(unique("agent"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join("agent.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let b = bundle(
        "mkdir /tmp/y 2>&1; echo done",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock_path,
            "listenerMetadata": "agent-test",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
        }),
    );
    let id = unique("sc");
    let agent = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let (msg, fd) = cella_tests::recv_with_fd(&conn);
        // Dropping the listener fd: the notified syscall fails (ENOSYS) instead of
        // hanging, so the container finishes.
        drop(fd);
        msg
    });
    let out = c.run(&b, &id);
    let msg = agent.join().unwrap();
    let st: Value = serde_json::from_slice(&msg).unwrap();
    assert_eq!(st["fds"], json!(["seccompFd"]), "{st}");
    assert_eq!(st["metadata"], json!("agent-test"));
    assert_eq!(st["state"]["id"], json!(id));
    assert!(st["pid"].as_i64().unwrap() > 0);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn notify_for_an_exec_reaches_the_agent_with_the_exec_pid() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let dir = cella_tests::scratch_root().join(unique("agent-x"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join("agent.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let b = bundle(
        "exec sleep 100",
        json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": sock_path,
            "listenerMetadata": "exec-test",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
        }),
    );
    let id = unique("scx");
    // One connection for init (at create), one for the exec'd process.
    let agent = std::thread::spawn(move || {
        (0..2)
            .map(|_| {
                let (conn, _) = listener.accept().unwrap();
                let (msg, fd) = cella_tests::recv_with_fd(&conn);
                drop(fd);
                msg
            })
            .collect::<Vec<_>>()
    });
    c.ok(["run", "--detach", "--bundle", b.dir.to_str().unwrap(), &id]);
    let pid_file = dir.join("exec.pid");
    let out = c.output([
        "exec",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sh",
        "-c",
        "mkdir /tmp/z 2>&1; echo done",
    ]);
    let msgs = agent.join().unwrap();
    assert!(out.status.success(), "{}", show(&out));
    // The agent dropped the listener: the notified mkdir fails instead of hanging.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("done"),
        "{}",
        show(&out)
    );
    let exec_pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let st: Value = serde_json::from_slice(&msgs[1]).unwrap();
    assert_eq!(st["fds"], json!(["seccompFd"]), "{st}");
    assert_eq!(st["metadata"], json!("exec-test"));
    assert_eq!(st["pid"], json!(exec_pid), "{st}");
    assert_eq!(st["state"]["id"], json!(id));
    assert_eq!(st["state"]["status"], json!("running"));
    c.ok(["delete", "--force", &id]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn log_action_reaches_the_kernel_log() {
    if !require_root() {
        return;
    }
    let actions =
        std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_logged").unwrap_or_default();
    if !cella_tests::skip_unless(
        actions.split_whitespace().any(|a| a == "log"),
        "the kernel does not log SECCOMP_RET_LOG",
    ) {
        return;
    }
    let c = Cella::new();
    let b = bundle(
        "exec /bin/busybox sync",
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["sync"], "action": "SCMP_ACT_LOG"}]}),
    );
    let id = unique("log");
    c.ok(["create", "--bundle", b.dir.to_str().unwrap(), &id]);
    let st: Value = serde_json::from_str(&c.ok(["state", &id])).unwrap();
    let pid = st["pid"].as_i64().unwrap();
    c.ok(["start", &id]);
    // An audit record for this pid: sync (162 on x86_64) allowed with SECCOMP_RET_LOG.
    let want = format!("pid={pid} ");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let kmsg = std::process::Command::new("dmesg").output().unwrap();
        let text = String::from_utf8_lossy(&kmsg.stdout);
        if text.lines().any(|l| {
            l.contains("type=1326")
                && l.contains(&want)
                && l.contains("syscall=162")
                && l.contains("code=0x7ffc0000")
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no seccomp LOG record for pid {pid} in dmesg"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    c.ok(["delete", "--force", &id]);
}
