//! Root tests of the rootfs setup against the real kernel: a forked child unshares a mount
//! namespace, runs mount_all / pivot / finish on a busybox rootfs, checks what it sees from
//! inside and reports over a pipe; the parent asserts. The child's mount namespace dies
//! with it, and each test checks that nothing is left mounted on the host.
//!
//! Needs root: under `CI=true` a test that cannot run fails, otherwise it says SKIPPED.

use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cella_isolate::rootfs::{RootfsOptions, RootfsPlan};
use oci_spec::runtime::Spec;

fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("cannot run under CI=true: needs root");
    }
    eprintln!("SKIPPED: needs root");
    false
}

/// A bundle with a busybox rootfs in a fresh temp dir, removed on drop.
struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    fn new(tag: &str) -> Bundle {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("cella-rootfs-{tag}-{}-{n}", std::process::id()));
        let rootfs = dir.join("rootfs");
        for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
            fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        let bb = ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .find(|p| Path::new(p).is_file())
            .expect("busybox-static is not installed");
        fs::copy(bb, rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "ls", "cat", "mount"] {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        Bundle { dir }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    fn plan(&self, config: &str, opts: RootfsOptions) -> RootfsPlan {
        let p = self.dir.join("config.json");
        fs::write(&p, config).unwrap();
        let spec = Spec::load(&p).unwrap();
        RootfsPlan::from_spec(&spec, &self.dir, opts).unwrap()
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn opts() -> RootfsOptions {
    RootfsOptions {
        no_pivot: false,
        in_user_namespace: false,
        new_mount_namespace: true,
    }
}

/// Host mount points under `dir` (nothing should ever be left there).
fn host_mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|mp| mp.starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// Runs `f` in a forked child inside a new mount namespace and returns what it reported:
/// "OK" or the list of failures.
fn in_child(f: impl FnOnce() -> Result<(), String>) -> String {
    fork_and_report(libc::CLONE_NEWNS, f)
}

/// Forks, unshares `namespaces` in the child (none if 0), runs `f` there and returns its
/// report.
fn fork_and_report(namespaces: libc::c_int, f: impl FnOnce() -> Result<(), String>) -> String {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a writable array of two ints on this frame.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two fresh fds that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child only runs `f` (test code using glibc's fork-safe malloc, no locks
    // held by other threads are taken: no printing) and then _exit()s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(r);
        let mut w = fs::File::from(w);
        // SAFETY: unshare has no memory arguments; the child is single-threaded.
        let msg = if namespaces != 0 && unsafe { libc::unshare(namespaces) } != 0 {
            format!("unshare: {}", std::io::Error::last_os_error())
        } else {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                Ok(Ok(())) => "OK".to_string(),
                Ok(Err(e)) => e,
                Err(_) => "child panicked".to_string(),
            }
        };
        let _ = w.write_all(msg.as_bytes());
        // SAFETY: ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    let mut out = String::new();
    fs::File::from(r).read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: `pid` is our child; `status` is a writable int on this frame.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    out
}

/// mount(2) for test setup in the child.
fn sys_mount(src: &CStr, target: &CStr, fstype: &CStr, flags: libc::c_ulong) -> Result<(), String> {
    let opt = |s: &CStr| {
        if s.is_empty() {
            std::ptr::null()
        } else {
            s.as_ptr()
        }
    };
    // SAFETY: the strings are NUL-terminated and outlive the call; data is null.
    let r = unsafe {
        libc::mount(
            opt(src),
            target.as_ptr(),
            opt(fstype),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(format!(
            "mount {target:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// One line of /proc/self/mountinfo.
struct MountLine {
    point: String,
    opts: String,
    optional: String,
    fstype: String,
}

fn mountinfo() -> Vec<MountLine> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            Some(MountLine {
                point: f.get(4)?.to_string(),
                opts: f.get(5)?.to_string(),
                optional: f[6..].join(" "),
                fstype: right.split(' ').next()?.to_string(),
            })
        })
        .collect()
}

/// Collects failed checks instead of stopping at the first.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }
    /// The last mount on `point` has type `fstype` and every option in `opts`.
    fn mount(&mut self, mounts: &[MountLine], point: &str, fstype: &str, opts: &[&str]) {
        match mounts.iter().rev().find(|m| m.point == point) {
            None => self.0.push(format!("no mount on {point}")),
            Some(m) => {
                self.check(
                    fstype.is_empty() || m.fstype == fstype,
                    format!("{point}: type {} != {fstype}", m.fstype),
                );
                let have: Vec<&str> = m.opts.split(',').collect();
                for o in opts {
                    self.check(
                        have.contains(o),
                        format!("{point}: {o} missing in {}", m.opts),
                    );
                }
            }
        }
    }
    fn result(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0.join("\n"))
        }
    }
}

const FULL_CONFIG: &str = r#"{
  "ociVersion": "1.2.0",
  "root": {"path": "rootfs", "readonly": true},
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    {"destination": "/cg2", "type": "cgroup2", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "ro", "nosuid", "nodev"]},
    {"destination": "/data2", "type": "bind", "source": "data", "options": ["rbind", "rro"]},
    {"destination": "/etc/hosts", "type": "bind", "source": "hosts", "options": ["bind", "ro"]},
    {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nodev", "tmpcopyup", "mode=700"]},
    {"destination": "/shared", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "rshared"]},
    {"destination": "/private", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m", "noexec", "private"]}
  ],
  "linux": {
    "namespaces": [{"type": "mount"}],
    "devices": [
      {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 416, "uid": 1000, "gid": 1001},
      {"path": "/dev/myfifo", "type": "p"}
    ],
    "maskedPaths": ["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
    "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
  }
}"#;

fn setup_full(b: &Bundle) {
    use std::os::unix::fs::PermissionsExt;
    let run = b.rootfs().join("run");
    fs::create_dir_all(run.join("lock")).unwrap();
    fs::set_permissions(run.join("lock"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(run.join("file"), "image").unwrap();
    std::os::unix::fs::chown(run.join("file"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(run.join("file"), fs::Permissions::from_mode(0o4755)).unwrap();
    symlink("lock", run.join("link")).unwrap();
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(b.dir.join("data/sub")).unwrap();
    fs::write(b.dir.join("data/file"), "data").unwrap();
    fs::write(b.dir.join("hosts"), "127.0.0.1 localhost\n").unwrap();
}

fn check_full_rootfs(c: &mut Checks, host_cgroups: &BTreeSet<String>) {
    let m = mountinfo();
    c.mount(&m, "/", "", &[]);
    let root = m.iter().rev().find(|l| l.point == "/");
    c.check(
        root.is_some_and(|r| r.opts.split(',').any(|o| o == "ro")),
        "/ is not ro",
    );
    c.mount(&m, "/proc", "proc", &["rw"]);
    c.mount(&m, "/dev", "tmpfs", &["nosuid"]);
    c.mount(&m, "/dev/pts", "devpts", &["nosuid", "noexec"]);
    c.mount(&m, "/dev/shm", "tmpfs", &["nosuid", "noexec", "nodev"]);
    c.mount(&m, "/dev/mqueue", "mqueue", &["nosuid", "noexec", "nodev"]);
    c.mount(&m, "/sys", "sysfs", &["ro", "nosuid"]);
    c.mount(&m, "/sys/fs/cgroup", "tmpfs", &["ro"]);
    c.mount(&m, "/cg2", "cgroup2", &["ro", "nosuid", "noexec", "nodev"]);
    c.mount(&m, "/data", "", &["ro", "nosuid", "nodev"]);
    c.mount(&m, "/etc/hosts", "", &["ro"]);
    c.mount(&m, "/shared", "tmpfs", &["rw"]);
    c.mount(&m, "/private", "tmpfs", &["noexec"]);
    let shared = m.iter().rev().find(|l| l.point == "/shared");
    c.check(
        shared.is_some_and(|l| l.optional.contains("shared:")),
        "/shared is not shared",
    );
    let private = m.iter().rev().find(|l| l.point == "/private");
    c.check(
        private.is_some_and(|l| l.optional.is_empty()),
        "/private is not private",
    );
    // The old root is gone: no mount point outside what the config asked for.
    c.check(
        !m.iter().any(|l| l.point.starts_with("/tmp")),
        "a host mount is visible after pivot_root",
    );

    c.check(
        fs::read_to_string("/data/file").is_ok_and(|s| s == "data"),
        "/data/file unreadable",
    );
    c.check(fs::write("/data/new", "x").is_err(), "/data is writable");
    // rbind + ro makes only the top mount read-only; rro reaches the submount too.
    c.check(
        fs::write("/data/sub/x", "x").is_ok(),
        "/data/sub (under plain ro) is not writable",
    );
    c.mount(&m, "/data2", "", &["ro"]);
    c.mount(&m, "/data2/sub", "tmpfs", &["ro"]);
    c.check(
        fs::write("/data2/sub/y", "x").is_err(),
        "/data2/sub is writable despite rro",
    );
    c.check(
        fs::read_to_string("/etc/hosts").is_ok_and(|s| s.contains("localhost")),
        "/etc/hosts",
    );
    c.check(fs::create_dir("/newdir").is_err(), "the root is writable");
    c.check(
        fs::write("/shared/x", "x").is_ok(),
        "/shared is not writable",
    );

    // Masked: files read as empty, directories are empty read-only tmpfs.
    for f in ["/proc/keys", "/proc/timer_list"] {
        c.check(
            fs::read(f).is_ok_and(|d| d.is_empty()),
            format!("{f} is not masked"),
        );
        // A bind of the container's /dev/null, which lives on its /dev tmpfs.
        c.mount(&m, f, "tmpfs", &[]);
    }
    c.check(
        fs::read_dir("/proc/acpi").is_ok_and(|mut d| d.next().is_none()),
        "/proc/acpi is not masked",
    );
    c.mount(&m, "/proc/acpi", "tmpfs", &["ro"]);
    c.check(
        fs::read_dir("/sys/firmware").is_ok_and(|mut d| d.next().is_none()),
        "/sys/firmware is not masked",
    );
    c.check(!Path::new("/proc/kcore").exists(), "/proc/kcore appeared");
    // Read-only paths.
    c.mount(&m, "/proc/sys", "proc", &["ro"]);
    let e = fs::write("/proc/sys/kernel/hostname", "x").unwrap_err();
    c.check(
        e.raw_os_error() == Some(libc::EROFS),
        format!("/proc/sys write: {e}"),
    );
    if Path::new("/proc/sysrq-trigger").exists() {
        c.mount(&m, "/proc/sysrq-trigger", "proc", &["ro"]);
    }

    // /dev holds exactly the expected entries.
    let names: BTreeSet<String> = fs::read_dir("/dev")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut want: BTreeSet<String> = [
        "null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout", "stderr",
        "ptmx", "pts", "shm", "mqueue", "mynull", "myfifo",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if Path::new("/proc/kcore").exists() {
        want.insert("core".into());
    }
    c.check(names == want, format!("/dev has {names:?}, want {want:?}"));
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = format!("/dev/{name}");
        let ok = fs::symlink_metadata(&p).is_ok_and(|md| {
            md.file_type().is_char_device()
                && md.mode() & 0o777 == 0o666
                && md.rdev() == libc::makedev(major, minor)
                && md.uid() == 0
        });
        c.check(ok, format!("{p} is not a 0666 char device {major}:{minor}"));
    }
    let ok = fs::symlink_metadata("/dev/mynull").is_ok_and(|md| {
        md.file_type().is_char_device()
            && md.mode() & 0o777 == 0o640
            && md.uid() == 1000
            && md.gid() == 1001
    });
    c.check(ok, "/dev/mynull mode/owner");
    c.check(
        fs::symlink_metadata("/dev/myfifo").is_ok_and(|md| md.file_type().is_fifo()),
        "/dev/myfifo is not a fifo",
    );
    c.check(
        fs::write("/dev/null", "x").is_ok(),
        "/dev/null not writable",
    );
    c.check(
        fs::read_link("/dev/ptmx").is_ok_and(|t| t == Path::new("pts/ptmx")),
        "/dev/ptmx link",
    );
    c.check(
        fs::read_link("/dev/stdin").is_ok_and(|t| t == Path::new("/proc/self/fd/0")),
        "/dev/stdin link",
    );
    c.check(
        fs::read_link("/dev/fd").is_ok_and(|t| t == Path::new("/proc/self/fd")),
        "/dev/fd link",
    );
    // A new devpts instance gives a working ptmx.
    let ptmx = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/ptmx");
    c.check(ptmx.is_ok(), format!("open /dev/ptmx: {:?}", ptmx.err()));
    // cgroup (v1/hybrid here): one read-only entry per hierarchy the init is in.
    let cg: BTreeSet<String> = fs::read_dir("/sys/fs/cgroup")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    c.check(!cg.is_empty(), "/sys/fs/cgroup is empty");
    c.check(
        host_cgroups.is_subset(&cg),
        format!("/sys/fs/cgroup has {cg:?}, want the host's {host_cgroups:?}"),
    );
    if cg.contains("memory") {
        c.mount(&m, "/sys/fs/cgroup/memory", "cgroup", &["ro", "nosuid"]);
        c.check(
            Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists(),
            "memory hierarchy content missing",
        );
        // It is the init's own cgroup, not the hierarchy's root.
        let me = std::process::id().to_string();
        c.check(
            fs::read_to_string("/sys/fs/cgroup/memory/cgroup.procs")
                .is_ok_and(|p| p.lines().any(|l| l == me)),
            "/sys/fs/cgroup/memory is not the init's own cgroup",
        );
    }
    // The cwd is the new root.
    c.check(
        std::env::current_dir().is_ok_and(|d| d == Path::new("/")),
        "cwd is not /",
    );
}

#[test]
fn full_rootfs_seen_from_inside() {
    if !require_root() {
        return;
    }
    full_rootfs(false);
}

#[test]
fn full_rootfs_without_openat2() {
    if !require_root() {
        return;
    }
    // As on kernels before 5.6: openat2 fails with ENOSYS and every path goes through
    // the component walk.
    full_rootfs(true);
}

/// Makes openat2 fail with ENOSYS in this (forked, single-threaded) process from now on.
fn deny_openat2() -> Result<(), String> {
    const OPENAT2: u32 = 437;
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: OPENAT2,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with integer arguments only; `prog` and `filter` live on this frame for
    // the seccomp call, which copies the program.
    let ok = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) == 0
    };
    if !ok {
        return Err(format!("seccomp: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a plain openat2 probe with a null `how`; the filter answers before the
    // kernel reads any argument.
    let r = unsafe { libc::syscall(libc::SYS_openat2, libc::AT_FDCWD, c"/".as_ptr(), 0, 0) };
    if r != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
        return Err("openat2 still works".into());
    }
    Ok(())
}

fn full_rootfs(no_openat2: bool) {
    let b = Bundle::new("full");
    setup_full(&b);
    let plan = b.plan(FULL_CONFIG, opts());
    let sub = CString::new(b.dir.join("data/sub").to_string_lossy().as_bytes()).unwrap();
    // Every cgroup hierarchy mounted under the host's /sys/fs/cgroup (on cgroup v1 or
    // hybrid hosts), by directory name; the container shows its own part of each.
    let host_cgroups: BTreeSet<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" - cgroup"))
        .filter_map(|l| l.split(' ').nth(4))
        .filter_map(|mp| mp.strip_prefix("/sys/fs/cgroup/"))
        .map(str::to_string)
        .collect();
    let out = in_child(|| {
        if no_openat2 {
            deny_openat2()?;
        }
        // A submount in the bind source, private to this child's namespace.
        sys_mount(c"", c"/", c"", libc::MS_SLAVE | libc::MS_REC)?;
        sys_mount(c"tmpfs", &sub, c"tmpfs", 0)?;
        plan.mount_all()
            .map_err(|e| format!("mount_all: {e}: {:?}", std::error::Error::source(&e)))?;
        plan.pivot()
            .map_err(|e| format!("pivot: {e}: {:?}", std::error::Error::source(&e)))?;
        plan.finish()
            .map_err(|e| format!("finish: {e}: {:?}", std::error::Error::source(&e)))?;
        let mut c = Checks::default();
        check_full_rootfs(&mut c, &host_cgroups);
        c.result()
    });
    assert_eq!(out, "OK");
    assert!(
        !b.rootfs().join("run/new").exists(),
        "a write to the tmpfs reached the image"
    );
    assert_eq!(host_mounts_under(&b.dir), Vec::<String>::new());
}

#[test]
fn no_pivot_moves_and_chroots() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("nopivot");
    setup_full(&b);
    let plan = b.plan(
        FULL_CONFIG,
        RootfsOptions {
            no_pivot: true,
            ..opts()
        },
    );
    let out = in_child(|| {
        plan.mount_all().map_err(|e| format!("mount_all: {e}"))?;
        plan.pivot()
            .map_err(|e| format!("pivot: {e}: {:?}", std::error::Error::source(&e)))?;
        plan.finish()
            .map_err(|e| format!("finish: {e}: {:?}", std::error::Error::source(&e)))?;
        let mut c = Checks::default();
        c.check(Path::new("/bin/busybox").is_file(), "not in the rootfs");
        c.check(
            fs::read("/proc/keys").is_ok_and(|d| d.is_empty()),
            "/proc/keys not masked",
        );
        c.check(fs::create_dir("/newdir").is_err(), "the root is writable");
        c.result()
    });
    assert_eq!(out, "OK");
    assert_eq!(host_mounts_under(&b.dir), Vec::<String>::new());
}

#[test]
fn user_namespace_mode_binds_host_device_nodes() {
    if !require_root() {
        return;
    }
    // As root outside a user namespace the kernel allows both ways; this checks that the
    // userns path binds the host nodes instead of calling mknod.
    let b = Bundle::new("userns");
    let config = r#"{"ociVersion":"1.2.0","root":{"path":"rootfs"},
      "mounts":[{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]}],
      "linux":{"namespaces":[{"type":"mount"}]}}"#;
    let plan = b.plan(
        config,
        RootfsOptions {
            in_user_namespace: true,
            ..opts()
        },
    );
    let out = in_child(|| {
        plan.mount_all()
            .map_err(|e| format!("mount_all: {e}: {:?}", std::error::Error::source(&e)))?;
        let dev = b.rootfs().join("dev");
        let m = mountinfo();
        let mut c = Checks::default();
        for n in ["null", "zero", "full", "random", "urandom", "tty"] {
            let p = dev.join(n).to_string_lossy().into_owned();
            c.check(
                m.iter().any(|l| l.point == p),
                format!("{p} is not a bind mount"),
            );
            c.check(
                fs::metadata(&p).is_ok_and(|md| md.file_type().is_char_device()),
                format!("{p} is not a char device"),
            );
        }
        c.result()
    });
    assert_eq!(out, "OK");
    assert_eq!(host_mounts_under(&b.dir), Vec::<String>::new());
}

#[test]
fn destination_through_escaping_symlink_is_rejected() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("escape");
    // The symlink climbs far above the rootfs, towards a host directory.
    let host = b.dir.join("host-target");
    fs::create_dir_all(&host).unwrap();
    let depth = b.rootfs().components().count();
    let up = "../".repeat(depth + 2);
    let rel_host = host
        .strip_prefix("/")
        .unwrap()
        .to_string_lossy()
        .into_owned();
    symlink(format!("{up}{rel_host}"), b.rootfs().join("escape")).unwrap();
    let config = r#"{"ociVersion":"1.2.0","root":{"path":"rootfs"},
      "mounts":[{"destination":"/proc","type":"proc"},{"destination":"/dev","type":"tmpfs"},
        {"destination":"/tmp","type":"tmpfs"},{"destination":"/escape/x","type":"tmpfs"}],
      "linux":{"namespaces":[{"type":"mount"}]}}"#;
    let plan = b.plan(config, opts());
    let out = in_child(|| match plan.mount_all() {
        Ok(()) => Err("mount_all succeeded".into()),
        Err(e) => Err(e.to_string()),
    });
    assert_eq!(
        out,
        "mounts[3].destination: \"/escape/x\" goes through symlink \"/escape\" which points outside the rootfs"
    );
    assert!(!host.join("x").exists(), "created on the host");
    assert_eq!(host_mounts_under(&b.dir), Vec::<String>::new());
}

#[test]
fn absolute_symlink_to_host_dir_is_resolved_inside_the_rootfs() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("swap");
    let host = b.dir.join("host-dir");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("precious"), "host").unwrap();
    // A symlink inside the rootfs to the host directory's absolute path: a path-based
    // mount would land on the host directory; ours must land in <rootfs>/<host path>.
    symlink(&host, b.rootfs().join("swap")).unwrap();
    let config = r#"{"ociVersion":"1.2.0","root":{"path":"rootfs"},
      "mounts":[{"destination":"/swap","type":"tmpfs","options":["size=1m"]}],
      "linux":{"namespaces":[{"type":"mount"}]}}"#;
    let plan = b.plan(config, opts());
    let host_s = host.to_string_lossy().into_owned();
    let inside = b.rootfs().join(host.strip_prefix("/").unwrap());
    let inside_s = inside.to_string_lossy().into_owned();
    let out = in_child(|| {
        plan.mount_all().map_err(|e| format!("mount_all: {e}"))?;
        let m = mountinfo();
        let mut c = Checks::default();
        c.check(
            !m.iter().any(|l| l.point == host_s),
            "mounted on the host directory",
        );
        c.check(
            m.iter().any(|l| l.point == inside_s),
            format!("nothing mounted on {inside_s}"),
        );
        c.check(
            fs::read_to_string(format!("{host_s}/precious")).is_ok_and(|s| s == "host"),
            "host directory hidden",
        );
        c.result()
    });
    assert_eq!(out, "OK");
    assert!(
        inside.is_dir(),
        "the target was not created inside the rootfs"
    );
    assert_eq!(fs::read_to_string(host.join("precious")).unwrap(), "host");
    assert_eq!(host_mounts_under(&b.dir), Vec::<String>::new());
}

#[test]
fn console_is_bound_over_dev_console() {
    if !require_root() {
        return;
    }
    let b = Bundle::new("console");
    let config = r#"{"ociVersion":"1.2.0","root":{"path":"rootfs"},
      "mounts":[{"destination":"/proc","type":"proc"},{"destination":"/dev","type":"tmpfs","options":["mode=755"]},
        {"destination":"/dev/pts","type":"devpts","options":["newinstance","ptmxmode=0666","mode=0620"]}],
      "linux":{"namespaces":[{"type":"mount"}]}}"#;
    let plan = b.plan(config, opts());
    let ptmx = CString::new(b.rootfs().join("dev/pts/ptmx").to_string_lossy().as_bytes()).unwrap();
    let out = in_child(|| {
        plan.mount_all().map_err(|e| format!("mount_all: {e}"))?;
        // Open a pty from the container's own devpts instance, as the runtime would.
        // SAFETY: `ptmx` is a NUL-terminated path that outlives the call.
        let master = unsafe {
            libc::open(
                ptmx.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if master < 0 {
            return Err(format!("open ptmx: {}", std::io::Error::last_os_error()));
        }
        let mut n: libc::c_int = 0;
        // SAFETY: `master` is a pty master we own; TIOCGPTN writes one int to `n`;
        // TIOCSPTLCK reads one int from `unlock`.
        unsafe {
            let unlock: libc::c_int = 0;
            libc::ioctl(master, libc::TIOCSPTLCK, &unlock);
            libc::ioctl(master, libc::TIOCGPTN, &mut n);
        }
        let slave = b.rootfs().join(format!("dev/pts/{n}"));
        let slave_c = CString::new(slave.to_string_lossy().as_bytes()).unwrap();
        plan.mount_console(&slave_c)
            .map_err(|e| format!("mount_console: {e}"))?;
        plan.pivot().map_err(|e| format!("pivot: {e}"))?;
        let mut c = Checks::default();
        c.check(
            fs::metadata("/dev/console").is_ok_and(|md| {
                md.file_type().is_char_device()
                    && md.rdev()
                        == fs::metadata(format!("/dev/pts/{n}"))
                            .map(|m| m.rdev())
                            .unwrap_or(0)
            }),
            "/dev/console is not the pty slave",
        );
        c.result()
    });
    assert_eq!(out, "OK");
    assert_eq!(host_mounts_under(&b.dir), Vec::<String>::new());
}

#[test]
fn inside_a_real_user_namespace() {
    if !require_root() {
        return;
    }
    // As a rootless container would be: a new user namespace (only uid/gid 0 mapped, to
    // host root), owning new mount, pid and ipc namespaces but no network namespace.
    // mknod is refused, host mounts come in locked, and sysfs cannot be mounted.
    let b = Bundle::new("userns-real");
    fs::create_dir_all(b.dir.join("data")).unwrap();
    let config = r#"{"ociVersion":"1.2.0","root":{"path":"rootfs","readonly":true},
      "mounts":[
        {"destination":"/proc","type":"proc","source":"proc"},
        {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},
        {"destination":"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620"]},
        {"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["nosuid","noexec","nodev","mode=1777","size=65536k"]},
        {"destination":"/dev/mqueue","type":"mqueue","source":"mqueue","options":["nosuid","noexec","nodev"]},
        {"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]},
        {"destination":"/data","type":"bind","source":"data","options":["rbind","ro"]}],
      "linux":{"namespaces":[{"type":"mount"},{"type":"user"},{"type":"pid"},{"type":"ipc"}],
        "maskedPaths":["/proc/keys","/proc/acpi"],
        "readonlyPaths":["/proc/sys","/proc/bus"]}}"#;
    let plan = b.plan(
        config,
        RootfsOptions {
            in_user_namespace: true,
            ..opts()
        },
    );
    let out = fork_and_report(0, || {
        // SAFETY: unshare has no memory arguments; this forked child is single-threaded.
        let r = unsafe {
            libc::unshare(
                libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC,
            )
        };
        if r != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        fs::write("/proc/self/setgroups", "deny").map_err(|e| format!("setgroups: {e}"))?;
        fs::write("/proc/self/uid_map", "0 0 1").map_err(|e| format!("uid_map: {e}"))?;
        fs::write("/proc/self/gid_map", "0 0 1").map_err(|e| format!("gid_map: {e}"))?;
        // The init is pid 1 of the new pid namespace, so that /proc can be mounted.
        let out = fork_and_report(0, || {
            plan.mount_all()
                .map_err(|e| format!("mount_all: {e}: {:?}", std::error::Error::source(&e)))?;
            plan.pivot()
                .map_err(|e| format!("pivot: {e}: {:?}", std::error::Error::source(&e)))?;
            plan.finish()
                .map_err(|e| format!("finish: {e}: {:?}", std::error::Error::source(&e)))?;
            let m = mountinfo();
            let mut c = Checks::default();
            c.check(std::process::id() == 1, "not pid 1");
            let root = m.iter().rev().find(|l| l.point == "/");
            c.check(
                root.is_some_and(|r| r.opts.split(',').any(|o| o == "ro")),
                "/ is not ro",
            );
            c.mount(&m, "/proc", "proc", &[]);
            c.mount(&m, "/dev/mqueue", "mqueue", &["nosuid"]);
            // sysfs fell back to an rbind of the host's /sys, made read-only while keeping
            // its locked flags.
            c.mount(&m, "/sys", "sysfs", &["ro", "nosuid", "nodev", "noexec"]);
            c.mount(&m, "/data", "", &["ro"]);
            c.check(fs::write("/data/x", "x").is_err(), "/data is writable");
            c.mount(&m, "/proc/sys", "proc", &["ro"]);
            c.check(
                fs::read("/proc/keys").is_ok_and(|d| d.is_empty()),
                "/proc/keys not masked",
            );
            for n in ["null", "zero", "full", "random", "urandom", "tty"] {
                let p = format!("/dev/{n}");
                c.mount(&m, &p, "devtmpfs", &[]);
                c.check(
                    fs::metadata(&p).is_ok_and(|md| md.file_type().is_char_device()),
                    format!("{p} is not a char device"),
                );
            }
            c.check(
                fs::write("/dev/null", "x").is_ok(),
                "/dev/null not writable",
            );
            c.result()
        });
        if out == "OK" { Ok(()) } else { Err(out) }
    });
    assert_eq!(out, "OK");
    assert_eq!(host_mounts_under(&b.dir), Vec::<String>::new());
}

#[test]
fn symlink_exchange_race_never_reaches_the_host() {
    if !require_root() {
        return;
    }
    // CVE-2021-30465: while the runtime resolves and mounts, another process keeps
    // exchanging a directory of the rootfs with a symlink to a host directory. Whatever
    // the timing, the mount must land inside the rootfs (or fail), never on the host.
    let b = Bundle::new("race");
    let host = b.dir.join("host-race");
    fs::create_dir_all(host.join("x")).unwrap();
    fs::create_dir_all(b.rootfs().join("race/x")).unwrap();
    symlink(&host, b.rootfs().join("race-link")).unwrap();
    let config = r#"{"ociVersion":"1.2.0","root":{"path":"rootfs"},
      "mounts":[{"destination":"/race/x","type":"tmpfs","options":["size=1k"]}],
      "linux":{"namespaces":[{"type":"mount"}]}}"#;
    let plan = b.plan(config, opts());
    let race = CString::new(b.rootfs().join("race").to_string_lossy().as_bytes()).unwrap();
    let link = CString::new(b.rootfs().join("race-link").to_string_lossy().as_bytes()).unwrap();
    let rootfs = CString::new(b.rootfs().to_string_lossy().as_bytes()).unwrap();
    let host_x = host.join("x").to_string_lossy().into_owned();
    let out = in_child(|| {
        // SAFETY: fork in a single-threaded child; the grandchild only loops on
        // renameat2 and is killed below.
        let swapper = unsafe { libc::fork() };
        if swapper == 0 {
            loop {
                // SAFETY: both paths are NUL-terminated and live for the whole loop.
                unsafe {
                    libc::syscall(
                        libc::SYS_renameat2,
                        libc::AT_FDCWD,
                        race.as_ptr(),
                        libc::AT_FDCWD,
                        link.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    );
                }
            }
        }
        let mut result = Ok(());
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..300 {
            match plan.mount_all() {
                Ok(()) => ok += 1,
                Err(_) => failed += 1,
            }
            if mountinfo().iter().any(|l| l.point == host_x) {
                result = Err(format!("mounted on the host directory {host_x}"));
                break;
            }
            // Drop this round's rootfs bind and everything under it.
            // SAFETY: `rootfs` is a NUL-terminated path living across the call.
            unsafe { libc::umount2(rootfs.as_ptr(), libc::MNT_DETACH) };
        }
        // SAFETY: `swapper` is our child; kill and reap it.
        unsafe {
            libc::kill(swapper, libc::SIGKILL);
            libc::waitpid(swapper, std::ptr::null_mut(), 0);
        }
        if ok == 0 {
            return Err(format!("no round succeeded ({failed} failed)"));
        }
        result
    });
    assert_eq!(out, "OK");
    assert_eq!(host_mounts_under(&b.dir), Vec::<String>::new());
    assert_eq!(fs::read_dir(host.join("x")).unwrap().count(), 0);
}
