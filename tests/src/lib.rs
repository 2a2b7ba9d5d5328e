//! Shared harness for the end-to-end tests: find the built `cella` binary, require root
//! (failing under `CI=true` instead of skipping), build a busybox rootfs from Debian's
//! busybox-static once, and make OCI bundles from it.
//!
//! Every test that needs root calls [`require_root`] first. Outside CI a test that cannot
//! run prints `SKIPPED: <why>` and returns; under `CI=true` it panics, so a skip can never
//! pass as a success there.

pub mod engines;
pub mod vm;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Path of the `cella` binary under test: `$CELLA_BIN`, else the one cargo built next to
/// this test executable (`target/<profile>/cella`).
pub fn cella_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CELLA_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/cella
    let profile_dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = profile_dir.join("cella");
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build` before the tests, or set CELLA_BIN",
        bin.display()
    );
    bin
}

/// True under CI (`CI=true`), where a test that cannot run must fail.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Says that a test cannot run here: panics under CI, prints `SKIPPED` otherwise.
/// Returns false so callers can write `if !skip_unless(cond, why) { return; }`.
pub fn skip_unless(condition: bool, why: &str) -> bool {
    if condition {
        return true;
    }
    if in_ci() {
        panic!("cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// True when the test runs as root. Under CI, not being root is a failure.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    skip_unless(euid == 0, "needs root")
}

/// True when `tool` is on PATH. Under CI, a missing tool is a failure.
pub fn require_tool(tool: &str) -> bool {
    skip_unless(which(tool).is_some(), &format!("needs `{tool}` on PATH"))
}

/// Finds `tool` on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A directory for this test run's scratch files, removed by nobody: it lives under the
/// cargo target dir so `cargo clean` takes it away.
pub fn scratch_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let bin = cella_bin();
        let base = bin
            .parent()
            .map(|p| p.join("e2e"))
            .unwrap_or_else(|| std::env::temp_dir().join("cella-e2e"));
        fs::create_dir_all(&base).expect("create scratch root");
        base
    })
    .clone()
}

/// A name unique within this test process and across concurrent test processes.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Path of the statically linked busybox from Debian's busybox-static.
pub fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Fills `dir` with a minimal busybox root filesystem: the static busybox binary, one
/// symlink per applet, /etc/passwd and /etc/group, and empty mount points.
pub fn make_busybox_rootfs(dir: &Path) {
    let bb = busybox().expect("busybox-static is not installed (apt-get install busybox-static)");
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "var",
        "run", "home",
    ] {
        fs::create_dir_all(dir.join(d)).expect("mkdir rootfs dir");
    }
    fs::copy(&bb, dir.join("bin/busybox")).expect("copy busybox");
    let list = Command::new(&bb)
        .arg("--list-full")
        .output()
        .expect("busybox --list-full");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let target = dir.join(applet);
        if applet == "bin/busybox" || target.exists() {
            continue;
        }
        let depth = applet.matches('/').count();
        let rel = format!("{}bin/busybox", "../".repeat(depth));
        let _ = symlink(rel, &target);
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .expect("write passwd");
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("write group");
    fs::set_permissions(
        dir.join("tmp"),
        std::os::unix::fs::PermissionsExt::from_mode(0o1777),
    )
    .expect("chmod tmp");
}

/// A fresh OCI bundle directory holding a busybox rootfs and the config that
/// `cella spec` writes, ready to be changed through [`Bundle::config`].
pub struct Bundle {
    /// The bundle directory (holds `config.json` and `rootfs/`).
    pub dir: PathBuf,
    /// The parsed `config.json`, written back by [`Bundle::save`].
    pub config: serde_json::Value,
}

impl Bundle {
    /// Makes a bundle named after `name` with a busybox rootfs and a default config whose
    /// process runs `args`.
    pub fn new(name: &str, args: &[&str]) -> Bundle {
        let dir = scratch_root().join(unique(name));
        fs::create_dir_all(&dir).expect("mkdir bundle");
        make_busybox_rootfs(&dir.join("rootfs"));
        let out = Command::new(cella_bin())
            .arg("spec")
            .arg("--bundle")
            .arg(&dir)
            .output()
            .expect("run cella spec");
        assert!(out.status.success(), "cella spec failed: {}", show(&out));
        let text = fs::read_to_string(dir.join("config.json")).expect("read config.json");
        let mut config: serde_json::Value = serde_json::from_str(&text).expect("parse config");
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = args.iter().map(|a| serde_json::json!(a)).collect();
        let b = Bundle { dir, config };
        b.save();
        b
    }

    /// Writes [`Bundle::config`] to `config.json`.
    pub fn save(&self) {
        let text = serde_json::to_string_pretty(&self.config).expect("serialize config");
        fs::write(self.dir.join("config.json"), text).expect("write config.json");
    }

    /// Path of the rootfs directory.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        // Mounts made by a failed test may still pin the directory: leave it then.
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A `cella` invocation with `--root` pointing at a state dir private to the test.
pub struct Cella {
    /// The state root passed as `--root`.
    pub root: PathBuf,
}

impl Default for Cella {
    fn default() -> Self {
        Self::new()
    }
}

impl Cella {
    /// A fresh, private state root.
    pub fn new() -> Cella {
        let root = scratch_root().join(unique("state"));
        Cella { root }
    }

    /// A command running `cella --root <root> <args...>`.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(cella_bin());
        c.arg("--root").arg(&self.root).args(args);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `cella --root <root> <args...>` and returns its output. Output goes
    /// through files, not pipes: a detached container inherits cella's stdout and
    /// stderr, and would hold a pipe open long after cella exits.
    pub fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output_via_files(self.cmd(args))
    }

    /// Runs `args` and panics with both output streams unless it succeeded.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.output(args);
        assert!(out.status.success(), "cella failed: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cella run --bundle <bundle> <id>` in the foreground; returns its output.
    pub fn run(&self, bundle: &Bundle, id: &str) -> Output {
        let out = self.output([
            OsStr::new("run"),
            OsStr::new("--bundle"),
            bundle.dir.as_os_str(),
            OsStr::new(id),
        ]);
        // A foreground run deletes the container itself; make sure of it.
        let _ = self.output(["delete", "--force", id]);
        out
    }

    /// Runs the bundle and returns stdout, panicking unless the container exited 0.
    pub fn run_ok(&self, bundle: &Bundle) -> String {
        let id = unique("c");
        let out = self.run(bundle, &id);
        assert!(out.status.success(), "container failed: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Cella {
    fn drop(&mut self) {
        // Force-delete whatever a failed test left, then the root itself.
        if let Ok(entries) = fs::read_dir(&self.root) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = self
                        .cmd([
                            OsStr::new("delete"),
                            OsStr::new("--force"),
                            e.file_name().as_os_str(),
                        ])
                        .output();
                }
            }
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// Runs `cmd` with stdout and stderr sent to temporary files, and reads them back once
/// the command itself has exited (children it leaves behind do not delay this).
pub fn output_via_files(mut cmd: Command) -> Output {
    let base = scratch_root().join(unique("out"));
    let (o, e) = (base.with_extension("stdout"), base.with_extension("stderr"));
    cmd.stdout(fs::File::create(&o).expect("create stdout file"));
    cmd.stderr(fs::File::create(&e).expect("create stderr file"));
    let status = cmd.status().expect("spawn");
    let out = Output {
        status,
        stdout: fs::read(&o).unwrap_or_default(),
        stderr: fs::read(&e).unwrap_or_default(),
    };
    let _ = fs::remove_file(o);
    let _ = fs::remove_file(e);
    out
}

/// Both output streams and the exit status, for assertion messages.
pub fn show(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes `text` to a new file at `path` with mode 0755.
pub fn write_script(path: &Path, text: &str) {
    let mut f = fs::File::create(path).expect("create script");
    f.write_all(text.as_bytes()).expect("write script");
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod script");
}

/// Receives one message with one descriptor attached (SCM_RIGHTS) from a connected
/// UNIX stream, as an engine receives a pty master or a seccomp agent its fd.
pub fn recv_with_fd(sock: &std::os::unix::net::UnixStream) -> (Vec<u8>, std::os::fd::OwnedFd) {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut buf = vec![0u8; 65536];
    let mut cmsg = [0u8; 64];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    // SAFETY: msghdr points at live local buffers (iov, cmsg) for the duration of the
    // call; the kernel writes at most their stated lengths, and the descriptor read
    // from the control message is owned by nobody else.
    let (n, fd) = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = iov.as_mut_ptr().cast();
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = cmsg.len();
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, 0);
        assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
        let c = libc::CMSG_FIRSTHDR(&msg);
        assert!(
            !c.is_null() && (*c).cmsg_type == libc::SCM_RIGHTS,
            "no fd received"
        );
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32);
        (n as usize, std::os::fd::OwnedFd::from_raw_fd(fd))
    };
    buf.truncate(n);
    (buf, fd)
}

/// Runs `cmd` with a pty as its stdin, stdout and stderr, the way a person at a
/// terminal of `rows`x`cols` would: `answer` is called with everything read so far and
/// returns what to type next (once per distinct prompt). Returns the exit status and
/// everything the terminal showed, without carriage returns.
pub fn run_on_pty(
    mut cmd: Command,
    rows: u16,
    cols: u16,
    mut answer: impl FnMut(&str) -> Option<Vec<u8>>,
) -> (std::process::ExitStatus, String) {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, slave) = {
        let (mut m, mut s) = (-1, -1);
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two fds into the live locals; the name and termios
        // pointers may be null and `ws` is a live winsize it only reads.
        let rc =
            unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty succeeded: both fds are open and owned by nobody else.
        unsafe { (fs::File::from_raw_fd(m), OwnedFd::from_raw_fd(s)) }
    };
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let mut child = cmd.spawn().expect("spawn on a pty");
    // `cmd` holds the parent's copies of the slave: only the child's remain open.
    drop(cmd);
    let mut shown = Vec::new();
    let mut buf = [0u8; 4096];
    let mut answered = 0;
    loop {
        match master.read(&mut buf) {
            // EIO: the last holder of the slave closed it.
            Ok(0) | Err(_) => break,
            Ok(n) => shown.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&shown).replace('\r', "");
        if text.len() > answered
            && let Some(input) = answer(&text)
        {
            answered = text.len();
            master.write_all(&input).unwrap();
        }
    }
    let status = child.wait().unwrap();
    (status, String::from_utf8_lossy(&shown).replace('\r', ""))
}
