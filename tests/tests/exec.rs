//! End-to-end tests of `cella exec`: the real binary, as root, on busybox bundles. A
//! container runs `sleep 100` detached; each test execs into it and checks, from inside
//! and from the host, that the new process shares the container's namespaces, cgroup,
//! root and identity as asked.

use cella_tests::{Bundle, Cella, require_root, show, unique};
use serde_json::json;
use std::fs;
use std::process::Output;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A running container (`sleep 100`, detached), force-deleted on drop.
struct Running {
    c: Cella,
    b: Bundle,
    id: String,
    pid: i32,
}

impl Running {
    fn start(name: &str, edit: impl FnOnce(&mut Bundle)) -> Running {
        let c = Cella::new();
        let mut b = Bundle::new(name, &["sleep", "100"]);
        b.config["hostname"] = json!("exec-box");
        edit(&mut b);
        b.save();
        let id = unique("x");
        c.ok(["run", "--detach", "--bundle", b.dir.to_str().unwrap(), &id]);
        let st: serde_json::Value = serde_json::from_str(&c.ok(["state", &id])).unwrap();
        let pid = st["pid"].as_i64().unwrap() as i32;
        Running { c, b, id, pid }
    }

    /// `cella exec <flags> ID sh -c script`.
    fn sh(&self, flags: &[&str], script: &str) -> Output {
        let mut args: Vec<&str> = vec!["exec"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[&self.id, "sh", "-c", script]);
        self.c.output(args)
    }

    fn sh_ok(&self, flags: &[&str], script: &str) -> String {
        let out = self.sh(flags, script);
        assert!(out.status.success(), "exec failed: {}", show(&out));
        stdout(&out)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.c.output(["delete", "--force", &self.id]);
    }
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn joins_namespaces_cgroup_and_pid_namespace() {
    if !require_root() {
        return;
    }
    let r = Running::start("exec-ns", |_| {});
    let kinds = ["pid", "net", "ipc", "uts", "mnt", "cgroup"];
    let script: String = kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k}; "))
        .collect::<String>()
        + "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
           cat /proc/self/cgroup | sort | md5sum; cat /proc/1/cgroup | sort | md5sum";
    let out = r.sh_ok(&[], &script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), kinds.len() + 4, "{out}");
    for (k, line) in kinds.iter().zip(&lines) {
        let init = fs::read_link(format!("/proc/{}/ns/{k}", r.pid)).unwrap();
        assert_eq!(
            *line,
            init.to_string_lossy(),
            "{k} namespace differs from init's"
        );
        let host = fs::read_link(format!("/proc/self/ns/{k}")).unwrap();
        assert_ne!(*line, host.to_string_lossy(), "{k} is the host's");
    }
    assert_eq!(lines[kinds.len()], "exec-box");
    assert_eq!(
        lines[kinds.len() + 1].trim(),
        "sleep 100",
        "pid 1 is not init"
    );
    assert_eq!(
        lines[kinds.len() + 2],
        lines[kinds.len() + 3],
        "cgroup differs from init's"
    );
}

#[test]
fn exit_status_env_cwd_user() {
    if !require_root() {
        return;
    }
    let r = Running::start("exec-basic", |_| {});
    let out = r.sh(&[], "exit 7");
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    let out = r.sh(&[], "kill -9 $$");
    assert_eq!(out.status.code(), Some(137), "{}", show(&out));
    let out = r.sh_ok(
        &[
            "--env",
            "FOO=bar baz",
            "--cwd",
            "/tmp",
            "--user",
            "1000:1001",
        ],
        "echo $FOO; pwd; id -u; id -g; echo $PATH",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..4], ["bar baz", "/tmp", "1000", "1001"], "{out}");
    assert!(lines[4].contains("/bin"), "config's PATH lost: {out}");
    let out = r.sh_ok(&["--additional-gids", "7", "-u", "5"], "id -G");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["0", "7"],
        "{out}"
    );
}

#[test]
fn capabilities_and_no_new_privs() {
    if !require_root() {
        return;
    }
    let r = Running::start("exec-caps", |b| {
        b.config["process"]["noNewPrivileges"] = json!(false);
    });
    let st = r.sh_ok(&[], "cat /proc/self/status");
    assert_eq!(status_field(&st, "CapEff"), "00000000a80425fb");
    assert_eq!(status_field(&st, "NoNewPrivs"), "0");
    // --cap adds one (CAP_SYS_ADMIN, bit 21) to the config's set.
    let st = r.sh_ok(
        &["--cap", "CAP_SYS_ADMIN", "--no-new-privs"],
        "cat /proc/self/status",
    );
    assert_eq!(status_field(&st, "CapEff"), "00000000a82425fb");
    assert_eq!(status_field(&st, "CapAmb"), "0000000000200000");
    assert_eq!(status_field(&st, "NoNewPrivs"), "1");
}

#[test]
fn process_json_drops_capabilities() {
    if !require_root() {
        return;
    }
    let r = Running::start("exec-pj", |_| {});
    let one = json!(["CAP_NET_RAW"]);
    let p = json!({
        "args": ["sh", "-c", "cat /proc/self/status; pwd; echo $X"],
        "cwd": "/etc",
        "env": ["PATH=/bin", "X=from-json"],
        "user": {"uid": 0, "gid": 0},
        "capabilities": {"bounding": one, "effective": one, "permitted": one},
        "noNewPrivileges": true
    });
    let file = r.b.dir.join("process.json");
    fs::write(&file, p.to_string()).unwrap();
    let out =
        r.c.output(["exec", "--process", file.to_str().unwrap(), &r.id]);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    assert_eq!(status_field(&text, "CapEff"), "0000000000002000");
    assert_eq!(status_field(&text, "CapBnd"), "0000000000002000");
    assert!(text.ends_with("/etc\nfrom-json\n"), "{text}");
    // A malformed process JSON names its field.
    fs::write(
        &file,
        r#"{"args": ["true"], "cwd": "/", "user": {"uid": "root"}}"#,
    )
    .unwrap();
    let out =
        r.c.output(["exec", "--process", file.to_str().unwrap(), &r.id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("process.json: user.uid: invalid type"),
        "{}",
        show(&out)
    );
    fs::write(
        &file,
        r#"{"args": [], "cwd": "/", "user": {"uid": 0, "gid": 0}}"#,
    )
    .unwrap();
    let out =
        r.c.output(["exec", "--process", file.to_str().unwrap(), &r.id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("process.json: process.args: must name the program to run"),
        "{}",
        show(&out)
    );
}

#[test]
fn detach_and_pid_file() {
    if !require_root() {
        return;
    }
    let r = Running::start("exec-detach", |_| {});
    let pf = r.b.dir.join("exec.pid");
    let out = r.sh(
        &["--detach", "--pid-file", pf.to_str().unwrap()],
        "sleep 30; true",
    );
    assert!(out.status.success(), "{}", show(&out));
    let pid: i32 = fs::read_to_string(&pf).unwrap().trim().parse().unwrap();
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, b"sh\0-c\0sleep 30; true\0");
    // Seen from the host: in init's cgroups and namespaces, one of the container's
    // processes.
    let cg = |p: i32| fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    assert_eq!(cg(pid), cg(r.pid));
    for k in ["pid", "net", "ipc", "uts", "mnt", "cgroup"] {
        let ns = |p: i32| fs::read_link(format!("/proc/{p}/ns/{k}")).unwrap();
        assert_eq!(ns(pid), ns(r.pid), "{k}");
    }
    let ps = r.c.ok(["ps", "--format", "json", &r.id]);
    assert!(ps.contains(&pid.to_string()), "{ps}");
}

#[test]
fn tty_through_the_console_socket() {
    if !require_root() {
        return;
    }
    let r = Running::start("exec-tty", |_| {});
    let sock = r.b.dir.join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let engine = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        cella_tests::recv_with_fd(&conn)
    });
    let out = r.sh(
        &["--tty", "--console-socket", sock.to_str().unwrap()],
        "tty; readlink /proc/self/fd/0; echo done",
    );
    assert!(out.status.success(), "{}", show(&out));
    let (name, master) = engine.join().unwrap();
    assert_eq!(name, b"/dev/ptmx");
    let mut f = fs::File::from(master);
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&text).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("/dev/pts/"), "{text}");
    assert_eq!(lines[0], lines[1]);
    assert_eq!(lines[2], "done");
    // Detached, a terminal needs a socket to go to.
    let out = r.sh(&["--tty", "--detach"], "true");
    assert!(
        stderr(&out).contains("a detached process's terminal needs --console-socket"),
        "{}",
        show(&out)
    );
    // In the foreground, cella relays it to its own terminal.
    let mut typed = false;
    let (status, shown) = cella_tests::run_on_pty(
        r.c.cmd([
            "exec",
            "--tty",
            &r.id,
            "sh",
            "-c",
            "stty size; echo ready; read x; echo got:$x",
        ]),
        25,
        90,
        |text| {
            (text.contains("ready\n") && !typed).then(|| {
                typed = true;
                b"yes\n".to_vec()
            })
        },
    );
    assert!(status.success(), "{shown}");
    assert_eq!(
        shown.lines().collect::<Vec<_>>(),
        ["25 90", "ready", "yes", "got:yes"],
        "{shown}"
    );
}

#[test]
fn errors_are_clear() {
    if !require_root() {
        return;
    }
    let r = Running::start("exec-err", |_| {});
    let out = r.c.output(["exec", &r.id, "nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains(r#"exec: "nosuch": executable file not found in $PATH"#),
        "{}",
        show(&out)
    );
    let out = r.c.output(["exec", "--cwd", "/nonexistent", &r.id, "true"]);
    assert!(
        stderr(&out).contains("exec: chdir to /nonexistent: No such file or directory"),
        "{}",
        show(&out)
    );
    let out = r.c.output(["exec", "no-such-container", "true"]);
    assert!(
        stderr(&out).contains(r#"container "no-such-container" does not exist"#),
        "{}",
        show(&out)
    );
    // A stopped container.
    r.c.ok(["kill", &r.id, "KILL"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let st = r.c.ok(["state", &r.id]);
        if st.contains("\"stopped\"") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{st}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = r.c.output(["exec", &r.id, "true"]);
    assert!(
        stderr(&out).contains(&format!("container \"{}\" is stopped", r.id)),
        "{}",
        show(&out)
    );
}

#[test]
fn no_runtime_fd_reaches_the_process() {
    if !require_root() {
        return;
    }
    let r = Running::start("exec-fds", |_| {});
    let out = r.sh_ok(&[], "ls /proc/$$/fd; true");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["0", "1", "2"]);
}

#[test]
fn exec_into_a_created_container_and_user_namespace() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let mut b = Bundle::new("exec-created", &["sleep", "100"]);
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.save();
    let id = unique("x");
    c.ok(["create", "--bundle", b.dir.to_str().unwrap(), &id]);
    let out = c.output(["exec", &id, "sh", "-c", "cat /proc/self/uid_map; id -u"]);
    let _ = c.output(["delete", "--force", &id]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["0", "100000", "65536", "0"]
    );
}

#[test]
fn seccomp_profile_of_the_container_applies() {
    if !require_root() {
        return;
    }
    let r = Running::start("exec-seccomp", |b| {
        b.config["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    });
    let out = r.sh_ok(
        &[],
        "grep Seccomp: /proc/self/status; mkdir /dev/shm/x 2>/dev/null && echo made || echo refused",
    );
    assert_eq!(out, "Seccomp:\t2\nrefused\n", "{out}");
}

#[test]
fn preserve_fds_and_signal_forwarding() {
    if !require_root() {
        return;
    }
    use std::os::unix::process::CommandExt;
    let r = Running::start("exec-sig", |_| {});
    // fd 3 of the runtime reaches the process only with --preserve-fds 1.
    let file = fs::File::open("/").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let with_fd3 = |extra: &[&str]| {
        let mut cmd = r.c.cmd(["exec"]);
        cmd.args(extra)
            .args([r.id.as_str(), "sh", "-c", "ls /proc/$$/fd; true"]);
        // SAFETY: dup2 and fcntl are async-signal-safe; `fd` stays open in the parent
        // until spawn returns, and the child only makes it fd 3 without close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                let r = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cella_tests::output_via_files(cmd)
    };
    let out = with_fd3(&[]);
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2"],
        "{}",
        show(&out)
    );
    let out = with_fd3(&["--preserve-fds", "1"]);
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "{}",
        show(&out)
    );
    drop(file);
    // SIGTERM to a waiting `cella exec` reaches the process; the status says so.
    let ready = std::path::PathBuf::from(format!("/proc/{}/root/dev/shm/ready", r.pid));
    let mut child =
        r.c.cmd([
            "exec",
            &r.id,
            "sh",
            "-c",
            "trap 'exit 42' TERM; touch /dev/shm/ready; while true; do sleep 0.05; done",
        ])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the trap was never set"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SAFETY: kill with integer arguments; the pid is our live child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(42), "{st}");
}

#[test]
fn joins_the_time_namespace_without_a_pid_namespace() {
    if !require_root() {
        return;
    }
    let r = Running::start("exec-time", |b| {
        let ns = b.config["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
        ns.push(json!({"type": "time"}));
        b.config["linux"]["timeOffsets"] = json!({"boottime": {"secs": 864000}});
    });
    let out = r.sh_ok(
        &[],
        "readlink /proc/self/ns/time; readlink /proc/self/ns/pid; cat /proc/uptime",
    );
    let lines: Vec<&str> = out.lines().collect();
    let ns = |p: &str, k: &str| {
        fs::read_link(format!("/proc/{p}/ns/{k}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(lines[0], ns(&r.pid.to_string(), "time"), "{out}");
    assert_eq!(
        lines[1],
        ns("self", "pid"),
        "pid namespace is the host's: {out}"
    );
    let uptime: f64 = lines[2].split_whitespace().next().unwrap().parse().unwrap();
    assert!(uptime > 864000.0, "boottime offset missing: {out}");
}
