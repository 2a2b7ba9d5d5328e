//! Podman (Debian's 4.3) drives cella unchanged: `podman --runtime <cella>` with a
//! private store per test (see cella_tests::engines::Podman). Where the right result is
//! not obvious, the same scenario runs with crun as the oracle.

use cella_tests::engines::{NetNs, Podman, cgroup_dirs, crun_runtime, run_in_pty};
use cella_tests::{cella_bin, require_root, require_tool, scratch_root, show, skip_unless};
use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// A private Podman driving cella, or None when the test cannot run here.
fn podman() -> Option<Podman> {
    if !require_root() || !require_tool("podman") || !require_tool("conmon") {
        return None;
    }
    Some(Podman::new(&cella_bin()))
}

/// The same, driving crun (the oracle).
fn podman_crun() -> Option<Podman> {
    if !require_tool("crun") {
        return None;
    }
    Some(Podman::new(&crun_runtime(&scratch_root())))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `cmd` in a fresh `--network none` container and returns its output, asserting
/// it exited 0.
fn run_ok(p: &Podman, flags: &[&str], cmd: &[&str]) -> String {
    let mut f = vec!["--network", "none"];
    f.extend_from_slice(flags);
    let out = p.run(&f, cmd);
    assert!(
        out.status.success(),
        "podman run {flags:?} {cmd:?}: {}",
        show(&out)
    );
    stdout(&out)
}

/// Asserts that the runtime, podman and the kernel hold nothing of the store's
/// containers any more: no runtime state, no container cgroup, no rootfs mount.
fn assert_nothing_left(p: &Podman) {
    assert_eq!(
        p.runtime_state_left(),
        Vec::<String>::new(),
        "runtime state left"
    );
    assert!(
        p.container_cgroups_left().is_empty(),
        "cgroups left: {:?}",
        p.container_cgroups_left()
    );
    assert!(
        p.rootfs_mounts_left().is_empty(),
        "mounts left: {:?}",
        p.rootfs_mounts_left()
    );
    assert_eq!(p.ok(["ps", "-a", "-q"]).trim(), "", "containers left");
}

/// The value of `podman inspect -f '{{.State.Status}}'`.
fn status(p: &Podman, name: &str) -> String {
    p.ok(["inspect", "-f", "{{.State.Status}}", name])
        .trim()
        .to_owned()
}

#[test]
fn run_true_and_false_give_their_exit_codes() {
    let Some(p) = podman() else { return };
    let t = p.run(&["--network", "none"], &["true"]);
    assert_eq!(t.status.code(), Some(0), "{}", show(&t));
    let f = p.run(&["--network", "none"], &["false"]);
    assert_eq!(f.status.code(), Some(1), "{}", show(&f));
    let s = p.run(&["--network", "none"], &["sh", "-c", "echo out; exit 7"]);
    assert_eq!(s.status.code(), Some(7), "{}", show(&s));
    assert_eq!(stdout(&s), "out\n");
    assert_nothing_left(&p);
}

#[test]
fn run_it_gets_a_terminal_of_the_callers_size() {
    let Some(p) = podman() else { return };
    let args = p.run_args(
        &["-it", "--network", "none"],
        &["sh", "-c", "tty; stty size; test -t 0 && echo stdin-is-tty"],
    );
    let (out, code) = run_in_pty(p.cmd(&args), 40, 100, Duration::from_secs(60));
    assert_eq!(code, 0, "output: {out}");
    let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
    assert!(lines.contains(&"/dev/pts/0"), "tty: {out:?}");
    assert!(lines.contains(&"40 100"), "stty size: {out:?}");
    assert!(lines.contains(&"stdin-is-tty"), "{out:?}");
    assert_nothing_left(&p);
}

#[test]
fn exec_it_gets_a_terminal_through_the_console_socket() {
    let Some(p) = podman() else { return };
    p.run_detached("d", &["--network", "none"]);
    let cmd = p.cmd(["exec", "-it", "d", "sh", "-c", "tty; stty size; echo $TERM"]);
    let (out, code) = run_in_pty(cmd, 30, 90, Duration::from_secs(60));
    assert_eq!(code, 0, "output: {out}");
    let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
    assert!(lines.contains(&"/dev/pts/0"), "tty: {out:?}");
    assert!(lines.contains(&"30 90"), "stty size: {out:?}");
    assert!(lines.contains(&"xterm"), "TERM: {out:?}");
    p.ok(["rm", "-f", "-t", "0", "d"]);
    assert_nothing_left(&p);
}

#[test]
fn detached_exec_stop_rm() {
    let Some(p) = podman() else { return };
    let id = p.run_detached("d", &["--network", "none"]);
    assert_eq!(status(&p, "d"), "running");
    assert!(
        p.runtime_state_left().contains(&id),
        "cella has no state for {id}"
    );
    let e = p.output(["exec", "d", "sh", "-c", "echo $((6*7)); exit 3"]);
    assert_eq!(e.status.code(), Some(3), "{}", show(&e));
    assert_eq!(stdout(&e), "42\n");
    // exec joins the container: same pid namespace (init is pid 1, sleep).
    let ps = p.ok(["exec", "d", "cat", "/proc/1/cmdline"]);
    assert_eq!(ps.split('\0').collect::<Vec<_>>(), ["sleep", "1000", ""]);
    // sleep as pid 1 ignores SIGTERM: stop falls back to SIGKILL after 1 s.
    p.ok(["stop", "-t", "1", "d"]);
    assert_eq!(status(&p, "d"), "exited");
    p.ok(["rm", "d"]);
    assert_nothing_left(&p);
}

#[test]
fn timeout_kills_the_container_and_podman_records_it() {
    let Some(p) = podman() else { return };
    // conmon ends the container with kill(-pgid): init needs a process group of its
    // own (runc and crun give it one), or conmon kills itself first.
    let out = p.run(&["--network", "none", "--timeout", "1"], &["sleep", "30"]);
    assert_eq!(out.status.code(), Some(255), "{}", show(&out));
    let pgid = run_ok(&p, &[], &["sh", "-c", "cut -d' ' -f5,6 /proc/self/stat"]);
    assert_eq!(
        pgid.trim(),
        "1 1",
        "pgid and session of the container's init"
    );
    assert_nothing_left(&p);
    if let Some(c) = podman_crun() {
        let out = c.run(&["--network", "none", "--timeout", "1"], &["sleep", "30"]);
        assert_eq!(out.status.code(), Some(255), "crun: {}", show(&out));
    }
}

#[test]
fn joins_another_containers_namespaces() {
    let Some(p) = podman() else { return };
    p.run_detached("host", &["--network", "none", "--hostname", "first"]);
    // Podman hands the runtime namespace paths (/proc/PID/ns/...) to join.
    let out = run_ok(
        &p,
        &[
            "--pid",
            "container:host",
            "--uts",
            "container:host",
            "--ipc",
            "container:host",
        ],
        &["sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '"],
    );
    assert_eq!(out, "first\nsleep 1000 ");
    let out = p.run(
        &["--network", "container:host"],
        &["sh", "-c", "ip -o link | cut -d' ' -f2"],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out), "lo:\n");
    p.ok(["rm", "-f", "-t", "0", "host"]);
    assert_nothing_left(&p);
}

#[test]
fn pause_and_unpause_freeze_the_cgroup() {
    let Some(p) = podman() else { return };
    let id = p.run_detached("d", &["--network", "none"]);
    let freezer = cgroup_dirs(&format!("{}/libpod-{id}", p.cgroup_parent))
        .into_iter()
        .map(|d| d.join("freezer.state"))
        .find(|f| f.exists());
    p.ok(["pause", "d"]);
    assert_eq!(status(&p, "d"), "paused");
    if let Some(f) = &freezer {
        assert_eq!(fs::read_to_string(f).unwrap().trim(), "FROZEN");
    }
    p.ok(["unpause", "d"]);
    assert_eq!(status(&p, "d"), "running");
    if let Some(f) = &freezer {
        assert_eq!(fs::read_to_string(f).unwrap().trim(), "THAWED");
    }
    assert_eq!(p.ok(["exec", "d", "echo", "alive"]), "alive\n");
    p.ok(["rm", "-f", "-t", "0", "d"]);
    assert_nothing_left(&p);
}

#[test]
fn top_lists_the_container_processes() {
    let Some(p) = podman() else { return };
    p.run_detached("d", &["--network", "none"]);
    let out = p.ok(["top", "d", "pid", "user", "args"]);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["PID", "USER", "COMMAND"], "{out}");
    assert!(
        rows.iter().any(|r| r[..] == ["1", "root", "sleep", "1000"]),
        "{out}"
    );
    p.ok(["rm", "-f", "-t", "0", "d"]);
}

#[test]
fn stats_no_stream_reads_the_cgroup() {
    let Some(p) = podman() else { return };
    p.run_detached("d", &["--network", "none", "--memory", "64m"]);
    let out = p.ok([
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}} {{.MemUsage}}",
        "d",
    ]);
    let f: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(f[0], "d", "{out}");
    assert_eq!(f[1], "1", "pids: {out}");
    // "<usage> / 67.11MB"
    assert_eq!(f.last(), Some(&"67.11MB"), "memory limit: {out}");
    p.ok(["rm", "-f", "-t", "0", "d"]);
}

#[test]
fn memory_cpus_and_pids_limits_reach_the_cgroup() {
    let Some(p) = podman() else { return };
    let flags = [
        "--network",
        "none",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--pids-limit",
        "50",
    ];
    let id = p.run_detached("d", &flags);
    // From the host: the container's cgroup under our parent.
    let cg = format!("{}/libpod-{id}", p.cgroup_parent);
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let read = |ctrl: &str, file: &str| -> String {
        let base = if unified {
            Path::new("/sys/fs/cgroup").join(cg.trim_start_matches('/'))
        } else {
            Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join(cg.trim_start_matches('/'))
        };
        fs::read_to_string(base.join(file))
            .unwrap_or_else(|e| panic!("{}: {e}", base.join(file).display()))
            .trim()
            .to_owned()
    };
    // And from inside, through the container's cgroup namespace.
    let inside = |file: &str| p.ok(["exec", "d", "cat", file]).trim().to_owned();
    if unified {
        assert_eq!(read("", "memory.max"), "67108864");
        assert_eq!(read("", "cpu.max"), "50000 100000");
        assert_eq!(read("", "pids.max"), "50");
        assert_eq!(inside("/sys/fs/cgroup/memory.max"), "67108864");
    } else {
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("pids", "pids.max"), "50");
        assert_eq!(
            inside("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(inside("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), "50000");
        assert_eq!(inside("/sys/fs/cgroup/pids/pids.max"), "50");
    }
    p.ok(["rm", "-f", "-t", "0", "d"]);
    assert_nothing_left(&p);
}

/// The Cap* lines of /proc/self/status.
fn caps(p: &Podman, flags: &[&str]) -> String {
    run_ok(p, flags, &["grep", "^Cap", "/proc/self/status"])
}

#[test]
fn cap_drop_all_leaves_no_capability() {
    let Some(p) = podman() else { return };
    let out = caps(&p, &["--cap-drop", "ALL"]);
    for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            out.contains(&format!("{field}:\t0000000000000000")),
            "{field}: {out}"
        );
    }
    // The default set (no --cap-drop) is podman's list, the same as crun gives.
    let default = caps(&p, &[]);
    if let Some(c) = podman_crun() {
        assert_eq!(
            default,
            caps(&c, &[]),
            "default capabilities differ from crun's"
        );
        assert_eq!(out, caps(&c, &["--cap-drop", "ALL"]));
    }
}

#[test]
fn seccomp_profile_denies_with_its_errno() {
    let Some(p) = podman() else { return };
    let profile = p.dir.join("deny-mkdir.json");
    fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let script = "mkdir /tmp/x 2>&1; echo rc=$?; touch /tmp/y && echo touched; grep ^Seccomp: /proc/self/status";
    let out = run_ok(&p, &["--security-opt", &opt], &["sh", "-c", script]);
    assert!(out.contains("Permission denied"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(out.contains("touched"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    if let Some(c) = podman_crun() {
        assert_eq!(
            out,
            run_ok(&c, &["--security-opt", &opt], &["sh", "-c", script])
        );
    }
}

#[test]
fn read_only_rootfs_with_writable_tmp() {
    let Some(p) = podman() else { return };
    let out = run_ok(
        &p,
        &["--read-only"],
        &[
            "sh",
            "-c",
            "touch /x 2>&1; echo rc=$?; touch /tmp/y && echo tmp-ok",
        ],
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(out.contains("tmp-ok"), "{out}");
}

#[test]
fn user_and_hostname() {
    let Some(p) = podman() else { return };
    let id = run_ok(
        &p,
        &["--user", "1000:1000"],
        &["sh", "-c", "id -u; id -g; id -G"],
    );
    assert_eq!(id, "1000\n1000\n1000\n");
    let status = run_ok(
        &p,
        &["--user", "1000:1000"],
        &["grep", "^Uid", "/proc/self/status"],
    );
    assert_eq!(
        status.split_whitespace().collect::<Vec<_>>(),
        ["Uid:", "1000", "1000", "1000", "1000"]
    );
    let h = run_ok(
        &p,
        &["--hostname", "myhost"],
        &["sh", "-c", "hostname; cat /etc/hostname"],
    );
    // podman writes /etc/hostname without a newline.
    assert_eq!(h.lines().collect::<Vec<_>>(), ["myhost", "myhost"]);
}

#[test]
fn bind_mounts_read_write_and_read_only() {
    let Some(p) = podman() else { return };
    let host = p.dir.join("vol");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("in"), "from host\n").unwrap();
    let rw = format!("{}:/data", host.display());
    let out = run_ok(
        &p,
        &["-v", &rw],
        &["sh", "-c", "cat /data/in; echo from container > /data/out"],
    );
    assert_eq!(out, "from host\n");
    assert_eq!(
        fs::read_to_string(host.join("out")).unwrap(),
        "from container\n"
    );
    let ro = format!("{}:/data:ro", host.display());
    let out = run_ok(
        &p,
        &["-v", &ro],
        &["sh", "-c", "cat /data/in; touch /data/new 2>&1; echo rc=$?"],
    );
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!host.join("new").exists());
}

#[test]
fn network_none_has_loopback_only_and_up() {
    let Some(p) = podman() else { return };
    let script = "ip -o link | cut -d' ' -f2,3; ping -c1 -W2 127.0.0.1 >/dev/null && echo lo-ok";
    let out = run_ok(&p, &[], &["sh", "-c", script]);
    assert_eq!(out, "lo: <LOOPBACK,UP,LOWER_UP>\nlo-ok\n");
    if let Some(c) = podman_crun() {
        assert_eq!(out, run_ok(&c, &[], &["sh", "-c", script]));
    }
}

#[test]
fn default_bridge_network_inside_a_test_namespace() {
    let Some(p) = podman() else { return };
    if !skip_unless(
        Path::new("/usr/lib/podman/netavark").exists(),
        "needs netavark (apt-get install netavark)",
    ) || !require_tool("iptables")
    {
        return;
    }
    // The "host" is a namespace of the test's own: the bridge, its NAT rules and the
    // ip_forward sysctl netavark sets stay there.
    let ns = NetNs::new("pmbr");
    let script = "ip -4 -o addr show eth0 | awk '{print $4}'; ip route | grep default; \
                  ping -c1 -W3 10.88.0.1 >/dev/null && echo gateway-ok";
    let args = p.run_args(&[], &["sh", "-c", script]);
    let out = cella_tests::output_via_files(ns.wrap(p.cmd(&args)));
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let addr = lines.next().unwrap_or_default();
    assert!(
        addr.starts_with("10.88.") && addr.ends_with("/16"),
        "{text}"
    );
    assert!(text.contains("default via 10.88.0.1 dev eth0"), "{text}");
    assert!(text.contains("gateway-ok"), "{text}");
    assert_nothing_left(&p);
}

#[test]
fn nonexistent_command_fails_with_127_and_cellas_text() {
    let Some(p) = podman() else { return };
    let out = p.run(&["--network", "none"], &["/nonexistent"]);
    assert_eq!(out.status.code(), Some(127), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cella: container init: exec /nonexistent"),
        "{err}"
    );
    let out = p.run(&["--network", "none"], &["no-such-command"]);
    assert_eq!(out.status.code(), Some(127), "{}", show(&out));
    assert!(
        stderr(&out).contains("\"no-such-command\": executable file not found in $PATH"),
        "{}",
        show(&out)
    );
    assert_nothing_left(&p);
    if let Some(c) = podman_crun() {
        let out = c.run(&["--network", "none"], &["/nonexistent"]);
        assert_eq!(out.status.code(), Some(127), "crun: {}", show(&out));
    }
}

#[test]
fn invalid_seccomp_profile_is_refused_naming_the_field() {
    let Some(p) = podman() else { return };
    let profile = p.dir.join("bad.json");
    fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_BOGUS"}"#).unwrap();
    let opt = format!("seccomp={}", profile.display());
    let out = p.run(&["--network", "none", "--security-opt", &opt], &["true"]);
    assert_eq!(out.status.code(), Some(126), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("config.json: linux.seccomp.defaultAction: unknown variant `SCMP_ACT_BOGUS`"),
        "{err}"
    );
    assert_nothing_left(&p);
}

#[test]
fn memory_limit_below_what_init_needs_is_reported() {
    let Some(p) = podman() else { return };
    let out = p.run(&["--network", "none", "--memory", "100k"], &["true"]);
    assert_eq!(out.status.code(), Some(126), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("init: was killed by the OOM killer: linux.resources.memory.limit is too low"),
        "{err}"
    );
    assert_nothing_left(&p);
    if let Some(c) = podman_crun() {
        let out = c.run(&["--network", "none", "--memory", "100k"], &["true"]);
        assert_eq!(out.status.code(), Some(126), "crun: {}", show(&out));
    }
}
