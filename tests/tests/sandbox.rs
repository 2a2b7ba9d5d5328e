//! End-to-end tests of `cella sandbox`: a corpus of hostile programs built here (gcc,
//! sh, python3), each with the verdict and audit record it must get and a check that the
//! host is unchanged; benign programs that must get OK with the right output; the audit
//! log's privacy; evidence and cleanup after a violation.

use cella_tests::{cella_bin, require_root, require_tool, show, unique};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where the tests' programs live: not in the checkout's target dir, which may sit under
/// the host's /tmp (hidden by the sandbox's own /tmp) or under a directory the sandbox's
/// unprivileged user cannot traverse (a checkout in /root), but in /var/tmp.
const SCRATCH_BASE: &str = "/var/tmp/cella-sandbox-tests";

fn sandbox_scratch_root() -> PathBuf {
    let base = PathBuf::from(SCRATCH_BASE);
    fs::create_dir_all(&base).expect("create the sandbox tests' scratch root");
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).expect("chmod scratch root");
    base
}

/// A scratch directory (mode 0755, so the sandbox's unprivileged user can read it),
/// removed on drop even when the test fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(prefix: &str) -> Scratch {
        let p = sandbox_scratch_root().join(unique(prefix));
        fs::create_dir_all(&p).expect("create scratch dir");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod scratch");
        Scratch(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Compiles `src` (C) into an executable named `name`.
    fn cc(&self, name: &str, src: &str) -> PathBuf {
        let c = self.path(&format!("{name}.c"));
        fs::write(&c, src).expect("write C source");
        let bin = self.path(name);
        let out = Command::new("gcc")
            .arg("-O1")
            .arg("-o")
            .arg(&bin)
            .arg(&c)
            .output()
            .expect("run gcc");
        assert!(out.status.success(), "gcc {name}: {}", show(&out));
        bin
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
        // The last test out removes the base (it fails while others still use it).
        let _ = fs::remove_dir(SCRATCH_BASE);
    }
}

/// One sandbox run: its output, verdict and audit log.
struct Run {
    out: Output,
    verdict: Value,
    audit: String,
    id: String,
}

impl Run {
    fn status(&self) -> &str {
        self.verdict["status"].as_str().unwrap_or("")
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    fn why(&self) -> String {
        format!(
            "verdict: {}\naudit:\n{}\n{}",
            self.verdict,
            self.audit,
            show(&self.out)
        )
    }

    /// The audit records of `event`.
    fn records(&self, event: &str) -> Vec<Value> {
        self.audit
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["event"] == event)
            .collect()
    }

    fn assert_denied(&self, syscall: &str) {
        assert_eq!(self.status(), "SV", "{}", self.why());
        assert_eq!(self.verdict["denied"]["syscall"], syscall, "{}", self.why());
        let recs = self.records("denied-syscall");
        assert!(
            recs.iter().any(|r| r["syscall"] == syscall
                && r["arch"] == "x86_64"
                && r["nr"].as_i64().is_some()
                && r["pid"].as_i64().is_some_and(|p| p > 1)),
            "no denied-syscall record for {syscall}: {}",
            self.why()
        );
        assert_eq!(self.records("verdict").len(), 1, "{}", self.why());
    }

    fn assert_limit(&self, status: &str, limit: &str) {
        assert_eq!(self.status(), status, "{}", self.why());
        assert_eq!(self.verdict["limit"], limit, "{}", self.why());
        assert!(
            self.records("limit").iter().any(|r| r["limit"] == limit),
            "no limit record for {limit}: {}",
            self.why()
        );
    }
}

/// Runs `cella sandbox ARGS -- CMD` with a result file and an audit log in `dir`.
fn sandbox(dir: &Scratch, args: &[&str], cmd: &[&str]) -> Run {
    let id = unique("sbx");
    let result = dir.path(&format!("{id}.result.json"));
    let audit = dir.path(&format!("{id}.audit.log"));
    let out = Command::new(cella_bin())
        .arg("sandbox")
        .arg("--id")
        .arg(&id)
        .arg("--result")
        .arg(&result)
        .arg("--audit-log")
        .arg(&audit)
        .args(args)
        .arg("--")
        .args(cmd)
        .output()
        .expect("run cella sandbox");
    let verdict = fs::read_to_string(&result)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let audit = fs::read_to_string(&audit).unwrap_or_default();
    let run = Run {
        out,
        verdict,
        audit,
        id,
    };
    assert_nothing_left(&run.id);
    run
}

/// No cgroup of the run remains in any hierarchy.
fn assert_nothing_left(id: &str) {
    for entry in fs::read_dir("/sys/fs/cgroup")
        .expect("read /sys/fs/cgroup")
        .flatten()
    {
        let leftover = entry.path().join("cella-sandbox").join(id);
        assert!(!leftover.exists(), "{} was left behind", leftover.display());
    }
    let own = Path::new("/sys/fs/cgroup/cella-sandbox").join(id);
    assert!(!own.exists(), "{} was left behind", own.display());
}

fn ready() -> bool {
    require_root() && require_tool("gcc")
}

const PYTHON: &str = "/usr/bin/python3";

// ---------------------------------------------------------------- benign programs

#[test]
fn hello_world_in_c_is_ok() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-hello");
    let bin = d.cc(
        "hello",
        r#"#include <stdio.h>
int main(void) { printf("hello, world\n"); return 0; }"#,
    );
    let r = sandbox(
        &d,
        &["--wall-time", "10", "--memory", "64M"],
        &[bin.to_str().unwrap()],
    );
    assert_eq!(r.status(), "OK", "{}", r.why());
    assert_eq!(r.stdout(), "hello, world\n", "{}", r.why());
    assert_eq!(r.verdict["exit_code"], 0);
    assert!(r.verdict["wall_ms"].as_u64().is_some());
    assert!(
        r.verdict["memory_peak_kib"].as_u64().is_some_and(|k| k > 0),
        "{}",
        r.why()
    );
    assert!(r.out.status.success(), "{}", r.why());
}

#[test]
fn python_script_is_ok() {
    if !ready() || !cella_tests::skip_unless(Path::new(PYTHON).exists(), "needs /usr/bin/python3") {
        return;
    }
    let d = Scratch::new("sbx-py");
    let script = d.path("sum.py");
    fs::write(
        &script,
        "import sys\nprint(sum(range(101)))\nprint(sys.argv[1])\n",
    )
    .unwrap();
    let r = sandbox(
        &d,
        &["--wall-time", "20", "--memory", "256M"],
        &[PYTHON, script.to_str().unwrap(), "arg"],
    );
    assert_eq!(r.status(), "OK", "{}", r.why());
    assert_eq!(r.stdout(), "5050\narg\n", "{}", r.why());
}

#[test]
fn shell_pipeline_is_ok() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-sh");
    let r = sandbox(
        &d,
        &["--env", "GREETING=hi"],
        &[
            "sh",
            "-c",
            "printf 'b\\na\\nc\\n' | sort | tr a-z A-Z; echo $GREETING; echo $HOME",
        ],
    );
    assert_eq!(r.status(), "OK", "{}", r.why());
    assert_eq!(r.stdout(), "A\nB\nC\nhi\n/tmp\n", "{}", r.why());
}

#[test]
fn workdir_is_writable_and_the_host_copy_unchanged() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-work");
    let work = d.path("work");
    fs::create_dir(&work).unwrap();
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(work.join("input.txt"), "21\n").unwrap();
    let spec = format!("{}:/tmp/work", work.display());
    let r = sandbox(
        &d,
        &["--workdir", &spec],
        &[
            "sh",
            "-c",
            "pwd; read n < input.txt; echo $((n * 2)) > output.txt; cat output.txt; touch /etc/x 2>/dev/null || echo ro",
        ],
    );
    assert_eq!(r.status(), "OK", "{}", r.why());
    assert_eq!(r.stdout(), "/tmp/work\n42\nro\n", "{}", r.why());
    assert!(
        !work.join("output.txt").exists(),
        "the overlay leaked to the host"
    );
    assert_eq!(fs::read_to_string(work.join("input.txt")).unwrap(), "21\n");
}

// ---------------------------------------------------------------- limits

#[test]
fn fork_bomb_hits_the_pids_limit() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-fork");
    let bin = d.cc(
        "forkbomb",
        r#"#include <unistd.h>
int main(void) { for (;;) fork(); }"#,
    );
    let r = sandbox(
        &d,
        &["--pids", "32", "--wall-time", "10"],
        &[bin.to_str().unwrap()],
    );
    r.assert_limit("RE", "pids");
}

#[test]
fn memory_hog_is_mle_with_its_peak() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-mem");
    let bin = d.cc(
        "hog",
        r#"#include <stdlib.h>
#include <string.h>
int main(void) {
    for (int i = 0; i < 1024; i++) { char *p = malloc(1 << 20); if (!p) return 3; memset(p, 1, 1 << 20); }
    return 0;
}"#,
    );
    let r = sandbox(
        &d,
        &["--memory", "64M", "--wall-time", "20"],
        &[bin.to_str().unwrap()],
    );
    r.assert_limit("MLE", "memory");
    let peak = r.verdict["memory_peak_kib"].as_u64().unwrap_or(0);
    assert!(
        (60 * 1024..=64 * 1024).contains(&peak),
        "peak {peak}: {}",
        r.why()
    );
}

#[test]
fn busy_loop_is_tle_cpu() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-cpu");
    let bin = d.cc("spin", "int main(void) { for (;;) {} }");
    let r = sandbox(
        &d,
        &["--cpu-time", "0.5", "--wall-time", "20"],
        &[bin.to_str().unwrap()],
    );
    r.assert_limit("TLE", "cpu");
    assert_eq!(r.out.status.code(), Some(124), "{}", r.why());
}

#[test]
fn sleeping_past_the_wall_limit_is_tle_wall() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-wall");
    let r = sandbox(&d, &["--wall-time", "0.3"], &["sleep", "30"]);
    r.assert_limit("TLE", "wall");
    let wall = r.verdict["wall_ms"].as_u64().unwrap_or(0);
    assert!((300..5000).contains(&wall), "wall {wall}: {}", r.why());
    assert!(r.verdict["cpu_ms"].as_u64().unwrap_or(u64::MAX) < 300);
}

#[test]
fn huge_output_is_ole_and_cut_at_the_limit() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-out");
    let r = sandbox(
        &d,
        &["--output-limit", "10K", "--wall-time", "20"],
        &["sh", "-c", "while :; do echo 0123456789abcdef; done"],
    );
    r.assert_limit("OLE", "output");
    assert_eq!(r.out.stdout.len(), 10 * 1024, "{}", r.why());
    assert_eq!(r.out.status.code(), Some(122));
}

#[test]
fn huge_file_hits_the_file_size_limit() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-fsize");
    let bin = d.cc(
        "bigfile",
        r#"#include <stdio.h>
#include <string.h>
int main(void) {
    static char buf[1 << 16]; memset(buf, 'x', sizeof buf);
    FILE *f = fopen("/tmp/big", "w"); if (!f) return 4;
    for (int i = 0; i < 1024; i++) fwrite(buf, 1, sizeof buf, f);
    fclose(f); return 0;
}"#,
    );
    let r = sandbox(
        &d,
        &["--file-size", "1M", "--wall-time", "20"],
        &[bin.to_str().unwrap()],
    );
    r.assert_limit("RE", "file-size");
    assert_eq!(r.verdict["signal"], libc::SIGXFSZ, "{}", r.why());
}

// ---------------------------------------------------------------- hostile programs

#[test]
fn host_shadow_file_is_not_readable() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-shadow");
    let r = sandbox(&d, &[], &["cat", "/etc/shadow"]);
    assert_eq!(r.status(), "RE", "{}", r.why());
    assert!(r.out.stdout.is_empty(), "{}", r.why());
    assert!(
        String::from_utf8_lossy(&r.out.stderr).contains("Permission denied"),
        "{}",
        r.why()
    );
}

#[test]
fn ptrace_of_another_process_is_sv() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-ptrace");
    let bin = d.cc(
        "ptrace",
        r#"#include <sys/ptrace.h>
#include <unistd.h>
#include <stdio.h>
int main(void) {
    pid_t child = fork();
    if (child == 0) { sleep(30); return 0; }
    long r = ptrace(PTRACE_ATTACH, child, 0, 0);
    printf("ptrace=%ld\n", r);
    return 0;
}"#,
    );
    let r = sandbox(&d, &["--wall-time", "10"], &[bin.to_str().unwrap()]);
    r.assert_denied("ptrace");
}

#[test]
fn mount_is_sv() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-mount");
    let bin = d.cc(
        "mount",
        r#"#include <sys/mount.h>
int main(void) { return mount("none", "/tmp", "tmpfs", 0, 0) == 0 ? 0 : 5; }"#,
    );
    let r = sandbox(&d, &[], &[bin.to_str().unwrap()]);
    r.assert_denied("mount");
}

#[test]
fn unshare_of_a_user_namespace_is_sv() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-unshare");
    let bin = d.cc(
        "unshare",
        r#"#define _GNU_SOURCE
#include <sched.h>
int main(void) { return unshare(CLONE_NEWUSER) == 0 ? 0 : 5; }"#,
    );
    let r = sandbox(&d, &[], &[bin.to_str().unwrap()]);
    r.assert_denied("unshare");
}

#[test]
fn clone_with_a_new_user_namespace_is_sv() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-clone");
    let bin = d.cc(
        "clonens",
        r#"#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) { return syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0) >= 0 ? 0 : 5; }"#,
    );
    let r = sandbox(&d, &[], &[bin.to_str().unwrap()]);
    r.assert_denied("clone");
}

#[test]
fn kill_minus_one_does_not_reach_the_host() {
    if !ready() {
        return;
    }
    struct Sentinel(std::process::Child);
    impl Drop for Sentinel {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // A host process of the same host uid the sandbox user maps to.
    let mut sentinel = Sentinel(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sleep",
                "60",
            ])
            .spawn()
            .expect("spawn the sentinel"),
    );
    let d = Scratch::new("sbx-kill");
    let r = sandbox(&d, &[], &["sh", "-c", "kill -9 -1; echo still here"]);
    assert_eq!(r.status(), "OK", "{}", r.why());
    assert_eq!(r.stdout(), "still here\n", "{}", r.why());
    assert!(
        sentinel.0.try_wait().expect("try_wait").is_none(),
        "kill -9 -1 in the sandbox killed a host process"
    );
}

#[test]
fn raw_socket_is_sv() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-raw");
    let bin = d.cc(
        "raw",
        r#"#include <sys/socket.h>
#include <netinet/in.h>
int main(void) { return socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) >= 0 ? 0 : 5; }"#,
    );
    let r = sandbox(&d, &[], &[bin.to_str().unwrap()]);
    r.assert_denied("socket");
}

#[test]
fn keyctl_is_sv() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-keyctl");
    let bin = d.cc(
        "keyctl",
        r#"#include <sys/syscall.h>
#include <unistd.h>
int main(void) { return syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0) >= 0 ? 0 : 5; }"#,
    );
    let r = sandbox(&d, &[], &[bin.to_str().unwrap()]);
    r.assert_denied("keyctl");
}

#[test]
fn raw_disks_and_memory_are_absent() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-dev");
    let r = sandbox(
        &d,
        &[],
        &[
            "sh",
            "-c",
            "for f in /dev/sda /dev/vda /dev/mem /dev/kmem /dev/port; do [ -e $f ] && echo present $f; done; \
             cat /dev/mem 2>/dev/null || echo absent; ls /dev",
        ],
    );
    assert_eq!(r.status(), "OK", "{}", r.why());
    let text = r.stdout();
    assert!(!text.contains("present"), "{}", r.why());
    assert!(text.starts_with("absent\n"), "{}", r.why());
}

#[test]
fn host_loopback_is_not_the_sandbox_loopback() {
    if !ready() || !cella_tests::skip_unless(Path::new(PYTHON).exists(), "needs /usr/bin/python3") {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen on the host loopback");
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let d = Scratch::new("sbx-net");
    let code = format!(
        "import socket\ns = socket.socket()\ntry:\n    s.connect(('127.0.0.1', {port}))\n    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)\n"
    );
    let r = sandbox(&d, &["--wall-time", "20"], &[PYTHON, "-c", &code]);
    assert_eq!(r.status(), "OK", "{}", r.why());
    assert!(r.stdout().starts_with("refused"), "{}", r.why());
    assert!(
        listener.accept().is_err(),
        "the sandbox reached the host's loopback"
    );
}

#[test]
fn setuid_binaries_are_inert() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-suid");
    let bin = d.cc(
        "whoami",
        r#"#include <stdio.h>
#include <unistd.h>
int main(void) { printf("%d %d\n", (int)getuid(), (int)geteuid()); return 0; }"#,
    );
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o4755)).unwrap();
    let r = sandbox(&d, &[], &[bin.to_str().unwrap()]);
    assert_eq!(r.status(), "OK", "{}", r.why());
    assert_eq!(r.stdout(), "1000 1000\n", "{}", r.why());
}

// ---------------------------------------------------------------- audit and evidence

#[test]
fn the_audit_log_never_holds_the_programs_data() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-secret");
    let secret = format!("s3cr3t-{}", unique("x"));
    let bin = d.cc(
        "secret",
        r#"#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <fcntl.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *s = getenv("SECRET");
    printf("%s\n", s); fflush(stdout);
    int fd = open("/tmp/note", O_CREAT | O_WRONLY, 0600); write(fd, s, strlen(s)); close(fd);
    return mount(s, s, s, 0, s) == 0 ? 0 : 5;
}"#,
    );
    let env = format!("SECRET={secret}");
    let r = sandbox(&d, &["--env", &env], &[bin.to_str().unwrap(), &secret]);
    r.assert_denied("mount");
    assert!(r.stdout().contains(&secret), "{}", r.why());
    assert!(
        !r.audit.contains(&secret),
        "the secret is in the audit log:\n{}",
        r.audit
    );
    assert!(!r.audit.contains("s3cr3t"), "{}", r.audit);
    assert!(!r.audit.contains("/tmp/note"), "{}", r.audit);
}

#[test]
fn a_violation_keeps_evidence_and_leaves_nothing_else() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-evidence");
    let work = d.path("work");
    fs::create_dir(&work).unwrap();
    fs::set_permissions(&work, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(work.join("given.txt"), "given\n").unwrap();
    let evidence = d.path("evidence");
    let marker = unique("marker");
    let spec = format!("{}:/tmp/work", work.display());
    let script = format!(
        "echo alpha > /tmp/a.txt; mkdir /tmp/d; printf beta > /tmp/d/b.txt; \
         echo out > out.txt; ln -s /etc/passwd /tmp/link; \
         cp /bin/sleep /tmp/{marker}; /tmp/{marker} 60 & \
         sleep 0.2; unshare -U true; echo after"
    );
    let r = sandbox(
        &d,
        &["--workdir", &spec, "--evidence", evidence.to_str().unwrap()],
        &["sh", "-c", &script],
    );
    r.assert_denied("unshare");
    assert!(
        !r.stdout().contains("after"),
        "the run went on after the violation: {}",
        r.why()
    );
    // The files the program wrote, and a manifest that matches them.
    assert_eq!(
        fs::read_to_string(evidence.join("tmp/a.txt")).unwrap(),
        "alpha\n"
    );
    assert_eq!(
        fs::read_to_string(evidence.join("tmp/d/b.txt")).unwrap(),
        "beta"
    );
    assert_eq!(
        fs::read_to_string(evidence.join("work/out.txt")).unwrap(),
        "out\n"
    );
    assert!(
        !evidence.join("work/given.txt").exists(),
        "lower layer copied"
    );
    let link = fs::read_link(evidence.join("tmp/link")).expect("symlink kept as a link");
    assert_eq!(link, Path::new("/etc/passwd"));
    let manifest = fs::read_to_string(evidence.join("MANIFEST.sha256")).unwrap();
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg("--strict")
        .arg("MANIFEST.sha256")
        .current_dir(&evidence)
        .output()
        .expect("run sha256sum");
    assert!(check.status.success(), "{manifest}\n{}", show(&check));
    for f in ["tmp/a.txt", "tmp/d/b.txt", "work/out.txt"] {
        assert!(manifest.contains(f), "{f} not in the manifest:\n{manifest}");
    }
    assert!(r.records("evidence").len() == 1, "{}", r.why());
    // No process of the run remains (its cgroup is checked by `sandbox`).
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&ps.stdout).contains(&marker),
        "a process of the run survived"
    );
    // No mount of the run is visible on the host.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("overlay") || !mounts.contains(&work.display().to_string()));
}

#[test]
fn without_evidence_nothing_is_kept() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-noevidence");
    let r = sandbox(&d, &[], &["sh", "-c", "echo x > /tmp/x; unshare -U true"]);
    r.assert_denied("unshare");
    let left: Vec<_> = fs::read_dir(&d.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".json") && !n.ends_with(".log"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

// ---------------------------------------------------------------- options

#[test]
fn a_rootfs_of_its_own() {
    if !ready()
        || !cella_tests::skip_unless(cella_tests::busybox().is_some(), "needs busybox-static")
    {
        return;
    }
    let d = Scratch::new("sbx-rootfs");
    let root = d.path("rootfs");
    cella_tests::make_busybox_rootfs(&root);
    let data = d.path("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("in.txt"), "from the host\n").unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
    let bind = format!("{}:/tmp/data", data.display());
    let r = sandbox(
        &d,
        &["--rootfs", root.to_str().unwrap(), "--ro-bind", &bind],
        &[
            "sh",
            "-c",
            "cat /tmp/data/in.txt; ls /usr/bin/gcc 2>/dev/null || echo no-gcc; \
             echo x > /tmp/data/y 2>/dev/null || echo read-only; echo x > /bin/y 2>/dev/null || echo root-read-only",
        ],
    );
    assert_eq!(r.status(), "OK", "{}", r.why());
    assert_eq!(
        r.stdout(),
        "from the host\nno-gcc\nread-only\nroot-read-only\n",
        "{}",
        r.why()
    );
}

#[test]
fn a_custom_profile_and_unconfined_apply() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-profile");
    let profile = d.path("profile.json");
    fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )
    .unwrap();
    let r = sandbox(
        &d,
        &["--seccomp", profile.to_str().unwrap()],
        &["sh", "-c", "mkdir /tmp/x || echo denied"],
    );
    assert_eq!(r.status(), "OK", "{}", r.why());
    assert!(r.stdout().contains("denied"), "{}", r.why());
    // Unconfined: no filter, but still no capabilities, so mount fails with EPERM.
    let r = sandbox(
        &d,
        &["--seccomp", "unconfined"],
        &["sh", "-c", "grep Seccomp: /proc/self/status"],
    );
    assert_eq!(r.status(), "OK", "{}", r.why());
    assert!(r.stdout().contains("Seccomp:\t0"), "{}", r.why());
}

#[test]
fn bad_options_are_refused_with_a_verdict_and_nothing_left() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-bad");
    let r = sandbox(&d, &["--net", "host"], &["true"]);
    assert_ne!(r.out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&r.out.stderr).contains("--net"),
        "{}",
        r.why()
    );
    let r = sandbox(&d, &["--bind", "/nonexistent-cella-path"], &["true"]);
    assert_eq!(r.status(), "IE", "{}", r.why());
    assert!(
        r.verdict["error"]
            .as_str()
            .unwrap_or("")
            .contains("/nonexistent-cella-path"),
        "{}",
        r.why()
    );
    let r = sandbox(&d, &[], &["/no/such/program"]);
    assert_eq!(r.status(), "IE", "{}", r.why());
    assert_eq!(r.out.status.code(), Some(120), "{}", r.why());
}

// ---------------------------------------------------------------- batch

#[test]
fn a_batch_runs_every_submission_once() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-batch");
    let manifest = d.path("manifest.jsonl");
    let mut text = String::new();
    let kinds = [
        ("ok", r#"["sh", "-c", "echo out-$0", "ID"]"#, "OK"),
        ("spin", r#"["sh", "-c", "while :; do :; done"]"#, "TLE"),
        ("sv", r#"["unshare", "-U", "true"]"#, "SV"),
        ("re", r#"["sh", "-c", "exit 3"]"#, "RE"),
    ];
    for i in 0..12 {
        let (kind, cmd, _) = kinds[i % kinds.len()];
        let cmd = cmd.replace("ID", &format!("{kind}{i}"));
        let out = d.path(&format!("{kind}{i}.out"));
        text.push_str(&format!(
            "{{\"id\": \"{kind}{i}\", \"command\": {cmd}, \"limits\": {{\"cpu_time\": 0.2}}, \"files\": {{\"stdout\": \"{}\"}}}}\n",
            out.display()
        ));
    }
    fs::write(&manifest, text).unwrap();
    let results = d.path("results.jsonl");
    let audit = d.path("audit.log");
    let out = Command::new(cella_bin())
        .args([
            "sandbox",
            "--jobs",
            "3",
            "--wall-time",
            "10",
            "--memory",
            "64M",
        ])
        .arg("--batch")
        .arg(&manifest)
        .arg("--result")
        .arg(&results)
        .arg("--audit-log")
        .arg(&audit)
        .output()
        .expect("run the batch");
    assert!(out.status.success(), "{}", show(&out));
    let lines: Vec<Value> = fs::read_to_string(&results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON result line"))
        .collect();
    assert_eq!(lines.len(), 12, "{lines:?}");
    for i in 0..12 {
        let (kind, _, want) = kinds[i % kinds.len()];
        let id = format!("{kind}{i}");
        let line = lines
            .iter()
            .find(|l| l["id"] == id.as_str())
            .unwrap_or_else(|| panic!("no result for {id}"));
        assert_eq!(line["status"], want, "{id}: {line}");
        assert_nothing_left(&id);
    }
    assert_eq!(fs::read_to_string(d.path("ok0.out")).unwrap(), "out-ok0\n");
    let audit = fs::read_to_string(&audit).unwrap();
    assert_eq!(
        audit.matches("\"event\":\"verdict\"").count(),
        12,
        "{audit}"
    );
}

// ---------------------------------------------------------------- unprivileged

#[test]
fn works_for_an_unprivileged_user() {
    if !ready() || !require_tool("setpriv") {
        return;
    }
    let run = |extra: &[&str], cmd: &[&str]| -> (Output, Value) {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(cella_bin())
            .args(["sandbox", "--result", "-"])
            .args(extra)
            .arg("--")
            .args(cmd)
            .output()
            .expect("run setpriv cella sandbox");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        let verdict = err
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l).ok())
            .unwrap_or(Value::Null);
        (out, verdict)
    };
    let (out, v) = run(
        &["--memory", "64M"],
        &["sh", "-c", "id -u; echo x > /tmp/y; cat /tmp/y"],
    );
    assert_eq!(v["status"], "OK", "{v}\n{}", show(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\nx\n",
        "{}",
        show(&out)
    );
    assert!(
        v["warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("no cgroup"),
        "{v}"
    );
    let (out, v) = run(&[], &["unshare", "-U", "true"]);
    assert_eq!(v["status"], "SV", "{v}\n{}", show(&out));
    assert_eq!(v["denied"]["syscall"], "unshare", "{v}");
    let (out, v) = run(&["--wall-time", "0.3"], &["sleep", "10"]);
    assert_eq!(v["status"], "TLE", "{v}\n{}", show(&out));
}

#[test]
fn interrupting_cella_ends_the_run_and_cleans_up() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-int");
    let id = unique("sbx");
    let result = d.path("result.json");
    let mut child = Command::new(cella_bin())
        .args(["sandbox", "--memory", "64M", "--id", &id, "--result"])
        .arg(&result)
        .args(["--", "sleep", "30"])
        .spawn()
        .expect("spawn cella sandbox");
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: signalling the child this test spawned and has not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(120), "{status}");
    let v: Value = serde_json::from_str(&fs::read_to_string(&result).unwrap()).unwrap();
    assert_eq!(v["status"], "IE", "{v}");
    assert!(v["wall_ms"].as_u64().unwrap_or(u64::MAX) < 10_000, "{v}");
    assert_nothing_left(&id);
}

#[test]
fn a_sparse_file_does_not_flood_the_evidence() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-sparse");
    let evidence = d.path("evidence");
    let r = sandbox(
        &d,
        &["--memory", "64M", "--evidence", evidence.to_str().unwrap()],
        &[
            "sh",
            "-c",
            "truncate -s 100G /tmp/huge; echo small > /tmp/small; unshare -U true",
        ],
    );
    r.assert_denied("unshare");
    assert_eq!(
        fs::read_to_string(evidence.join("tmp/small")).unwrap(),
        "small\n"
    );
    assert!(!evidence.join("tmp/huge").exists(), "{}", r.why());
    let skipped = fs::read_to_string(evidence.join("SKIPPED")).unwrap();
    assert!(skipped.contains("107374182400  tmp/huge"), "{skipped}");
}

#[test]
fn other_runs_are_invisible() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-hide");
    let r = sandbox(
        &d,
        &["--memory", "64M"],
        &[
            "sh",
            "-c",
            "ls -A /sys/fs/cgroup | wc -l; ls /proc | grep -c '^[0-9]'",
        ],
    );
    assert_eq!(r.status(), "OK", "{}", r.why());
    // No cgroup tree; only the sandbox's own processes (init, sh, ls or grep, wc).
    let text = r.stdout();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("0"), "{}", r.why());
    let procs: u32 = lines
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(99);
    assert!(procs <= 5, "{}", r.why());
}

// ---------------------------------------------------------------- second walls

#[test]
fn landlock_is_a_second_wall_under_the_mounts() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-ll");
    let share = d.path("share");
    fs::create_dir_all(&share).unwrap();
    fs::set_permissions(&share, fs::Permissions::from_mode(0o777)).unwrap();
    let bind = format!("{}:/tmp/share", share.display());
    let script = "cat /etc/hostname > /tmp/share/copy && echo read-ok; \
                  (echo x > /tmp/a) 2>&1 && echo tmp-written; true";
    // The default ruleset: everything readable, the sandbox's writable places writable.
    let r = sandbox(&d, &["--landlock", "--bind", &bind], &["sh", "-c", script]);
    assert_eq!(r.status(), "OK", "{}", r.why());
    assert_eq!(r.stdout(), "read-ok\ntmp-written\n", "{}", r.why());
    // Only the shared directory writable: the private /tmp, writable as a mount, is not.
    let r = sandbox(
        &d,
        &["--landlock", "--landlock-rw", "/tmp/share", "--bind", &bind],
        &["sh", "-c", script],
    );
    assert_eq!(r.status(), "OK", "{}", r.why());
    assert!(r.stdout().starts_with("read-ok\n"), "{}", r.why());
    assert!(r.stdout().contains("Permission denied"), "{}", r.why());
    assert!(!r.stdout().contains("tmp-written"), "{}", r.why());
    // Narrowed reads: the program and its libraries, not /etc.
    let r = sandbox(
        &d,
        &[
            "--landlock",
            "--landlock-ro",
            "/usr",
            "--landlock-ro",
            "/bin",
            "--landlock-ro",
            "/lib",
            "--landlock-ro",
            "/lib64",
        ],
        &["sh", "-c", "cat /etc/hostname 2>&1; echo rc=$?"],
    );
    assert!(r.stdout().contains("Permission denied"), "{}", r.why());
    assert!(r.stdout().ends_with("rc=1\n"), "{}", r.why());
    // A rule on a path the sandbox does not have is an internal error naming it.
    let r = sandbox(
        &d,
        &["--landlock", "--landlock-rw", "/no/such/dir"],
        &["true"],
    );
    assert_eq!(r.status(), "IE", "{}", r.why());
    assert!(r.why().contains("/no/such/dir"), "{}", r.why());
}

#[test]
fn core_sched_gets_a_cookie_or_a_clear_refusal() {
    if !ready() {
        return;
    }
    let d = Scratch::new("sbx-cs");
    let r = sandbox(&d, &["--core-sched"], &["true"]);
    if cella_isolate_core_sched_supported() {
        assert_eq!(r.status(), "OK", "{}", r.why());
    } else {
        assert!(!r.out.status.success(), "{}", r.why());
        let err = String::from_utf8_lossy(&r.out.stderr);
        assert!(
            err.contains("--core-sched: core scheduling is not supported by this kernel"),
            "{}",
            r.why()
        );
    }
}

/// Whether this kernel has core scheduling: PR_SCHED_CORE_GET on ourselves answers
/// EINVAL without CONFIG_SCHED_CORE.
fn cella_isolate_core_sched_supported() -> bool {
    let mut cookie: u64 = 0;
    // SAFETY: PR_SCHED_CORE (62) / PR_SCHED_CORE_GET (0) on pid 0 writes one u64 into
    // the live local `cookie`.
    let rc = unsafe {
        libc::prctl(62, 0, 0, 0 /* PIDTYPE_PID */, &mut cookie as *mut u64)
    };
    rc == 0
}
