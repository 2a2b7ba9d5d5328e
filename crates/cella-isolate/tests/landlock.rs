//! Landlock against the real kernel: a forked child applies a prepared ruleset, as
//! `cella sandbox` does between fork and exec, then tries what it should and should not
//! be able to do, and reports over a pipe; the parent asserts. A counting allocator
//! checks that applying the ruleset allocates nothing.
//!
//! Needs a kernel with Landlock enabled: under `CI=true` a test that cannot run fails,
//! otherwise it says SKIPPED.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CString;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cella_isolate::landlock::{self, LandlockError, PreparedRuleset, Ruleset};

/// Counts allocations, so a forked (single-threaded) child can check that a call made none.
struct CountingAlloc;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged; the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds alloc's contract (non-zero size), passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System.alloc/realloc above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator (so from System) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The harness's skip rule: false (and SKIPPED) when `condition` fails, a panic under CI.
fn skip_unless(condition: bool, why: &str) -> bool {
    if condition {
        return true;
    }
    if in_ci() {
        panic!("cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED: {why}");
    false
}

/// The kernel's Landlock ABI, or None (after the skip rule) when it has none.
fn landlock_abi() -> Option<u32> {
    let abi = landlock::abi_version();
    // When securityfs is mounted, its list of LSMs must agree with the system call.
    if let Ok(lsm) = fs::read_to_string("/sys/kernel/security/lsm") {
        assert_eq!(
            lsm.split(',').any(|m| m.trim() == "landlock"),
            abi.is_ok(),
            "/sys/kernel/security/lsm ({lsm}) disagrees with abi_version() ({abi:?})"
        );
    }
    match abi {
        Ok(v) => {
            assert!(v >= 1);
            Some(v)
        }
        Err(e) => {
            skip_unless(false, &format!("needs Landlock: {e}"));
            None
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A fresh directory under the temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("cella-landlock-{tag}-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Removes a file on drop: for the file in /usr that the child must fail to create.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Forks; the child applies `ruleset` (checking it allocates nothing), runs `checks`
/// and reports "OK" or its failures; the parent returns the report.
fn restricted_child(
    ruleset: &PreparedRuleset,
    checks: impl FnOnce() -> Result<(), String>,
) -> String {
    restricted_child_with_setup(ruleset, || Ok(()), checks)
}

/// [`restricted_child`] that runs `setup` in the child before applying the ruleset.
fn restricted_child_with_setup(
    ruleset: &PreparedRuleset,
    setup: impl FnOnce() -> Result<(), String>,
    checks: impl FnOnce() -> Result<(), String>,
) -> String {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a writable array of two ints on this frame.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the child runs only restrict_self (no allocation, no locks), then test code
    // that relies on glibc's fork-safe malloc and takes no lock another thread could hold
    // (no printing), then _exit()s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(r);
        let setup_result = setup();
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        let applied = ruleset.restrict_self();
        let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
        let report = match (setup_result, applied) {
            (Err(e), _) => format!("setup: {e}"),
            (_, Err(e)) => format!("restrict_self: {e}: {:?}", std::error::Error::source(&e)),
            (_, Ok(())) if allocated != 0 => format!("restrict_self allocated {allocated} times"),
            (_, Ok(())) => match checks() {
                Ok(()) => "OK".to_string(),
                Err(e) => e,
            },
        };
        let _ = fs::File::from(w).write_all(report.as_bytes());
        // SAFETY: ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    drop(w);
    let mut out = String::new();
    fs::File::from(r).read_to_string(&mut out).unwrap();
    let mut status = 0;
    // SAFETY: `status` is a live int; `pid` is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status), "child died: status {status:#x}");
    out
}

/// Collects the outcomes a child expects, and the ones it did not get.
#[derive(Default)]
struct Expect {
    failures: Vec<String>,
}

impl Expect {
    fn ok<T>(&mut self, what: &str, r: std::io::Result<T>) {
        if let Err(e) = r {
            self.failures
                .push(format!("{what}: expected success, got {e}"));
        }
    }

    fn errno<T>(&mut self, what: &str, r: std::io::Result<T>, errno: i32) {
        match r {
            Ok(_) => self
                .failures
                .push(format!("{what}: expected errno {errno}, it succeeded")),
            Err(e) if e.raw_os_error() == Some(errno) => {}
            Err(e) => self
                .failures
                .push(format!("{what}: expected errno {errno}, got {e}")),
        }
    }

    fn done(self) -> Result<(), String> {
        if self.failures.is_empty() {
            Ok(())
        } else {
            Err(self.failures.join("\n"))
        }
    }
}

fn create_new(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

fn open_write(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new().write(true).open(path)
}

#[test]
fn child_gets_only_what_the_rules_allow() {
    let Some(_abi) = landlock_abi() else { return };
    let tmp = TempDir::new("dirs");
    let rw = tmp.0.join("rw");
    let ro = tmp.0.join("ro");
    fs::create_dir(&rw).unwrap();
    fs::create_dir(&ro).unwrap();
    fs::write(ro.join("existing"), "ro\n").unwrap();
    fs::write(tmp.0.join("outside"), "outside\n").unwrap();
    let in_usr = RemoveOnDrop(PathBuf::from(format!(
        "/usr/cella-landlock-test-{}",
        std::process::id()
    )));
    let hostname = ["/etc/hostname", "/etc/passwd"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("neither /etc/hostname nor /etc/passwd exists");
    // Without the ruleset these would all work as root: make sure the file is readable.
    fs::read(hostname).unwrap();

    let prepared = Ruleset::for_kernel()
        .unwrap()
        .read_only("/usr")
        .read_write(&rw)
        .read_only(&ro)
        .no_new_privs(true)
        .prepare()
        .unwrap();

    let report = restricted_child(&prepared, || {
        let mut x = Expect::default();
        x.ok("read /usr/bin/env", fs::read("/usr/bin/env"));
        x.ok("list /usr/bin", fs::read_dir("/usr/bin"));
        x.ok("create rw/new", fs::write(rw.join("new"), "new\n"));
        x.ok(
            "append rw/new",
            fs::OpenOptions::new().append(true).open(rw.join("new")),
        );
        x.ok("mkdir rw/sub", fs::create_dir(rw.join("sub")));
        x.ok(
            "rename rw/new to rw/sub/new",
            fs::rename(rw.join("new"), rw.join("sub/new")),
        );
        x.ok("unlink rw/sub/new", fs::remove_file(rw.join("sub/new")));
        x.errno("create in /usr", create_new(&in_usr.0), libc::EACCES);
        x.errno("read /etc file", fs::read(hostname), libc::EACCES);
        x.errno("list /etc", fs::read_dir("/etc"), libc::EACCES);
        x.ok("read ro/existing", fs::read(ro.join("existing")));
        x.errno(
            "write ro/existing",
            open_write(&ro.join("existing")),
            libc::EACCES,
        );
        x.errno("create ro/new", create_new(&ro.join("new")), libc::EACCES);
        x.errno(
            "unlink ro/existing",
            fs::remove_file(ro.join("existing")),
            libc::EACCES,
        );
        x.errno("mkdir ro/sub", fs::create_dir(ro.join("sub")), libc::EACCES);
        x.errno(
            "read the parent's file",
            fs::read(tmp.0.join("outside")),
            libc::EACCES,
        );
        // Moving a file out of a read-only tree needs REMOVE_FILE there.
        x.errno(
            "rename ro/existing to rw/",
            fs::rename(ro.join("existing"), rw.join("moved")),
            libc::EACCES,
        );
        x.done()
    });
    assert_eq!(report, "OK");
    assert!(
        !in_usr.0.exists(),
        "the child created {}",
        in_usr.0.display()
    );
    assert_eq!(fs::read_to_string(ro.join("existing")).unwrap(), "ro\n");
}

#[test]
fn file_rules_get_file_rights_only() {
    let Some(abi) = landlock_abi() else { return };
    let tmp = TempDir::new("files");
    let writable = tmp.0.join("writable");
    let readable = tmp.0.join("readable");
    fs::write(&writable, "0123456789").unwrap();
    fs::write(&readable, "r\n").unwrap();

    // read_write asks for every right, including directory ones the kernel would refuse
    // on a file (EINVAL): prepare must keep only the file rights.
    let ruleset = Ruleset::for_kernel()
        .unwrap()
        .read_write(&writable)
        .read_only(&readable)
        .no_new_privs(true);
    let prepared = ruleset.prepare().unwrap();

    let report = restricted_child(&prepared, || {
        let mut x = Expect::default();
        x.ok("write the writable file", fs::write(&writable, "new"));
        x.ok("read the readable file", fs::read(&readable));
        x.errno(
            "write the readable file",
            open_write(&readable),
            libc::EACCES,
        );
        x.errno(
            "create a sibling",
            create_new(&tmp.0.join("sibling")),
            libc::EACCES,
        );
        x.errno("list the parent", fs::read_dir(&tmp.0), libc::EACCES);
        x.errno(
            "unlink the writable file",
            fs::remove_file(&writable),
            libc::EACCES,
        );
        if abi >= 3 {
            // TRUNCATE (ABI 3) is a file right: granted on the writable file only.
            x.ok(
                "truncate the writable file",
                fs::OpenOptions::new()
                    .write(true)
                    .open(&writable)
                    .and_then(|f| f.set_len(1)),
            );
        }
        x.done()
    });
    assert_eq!(report, "OK");
    assert_eq!(
        fs::read(&writable).unwrap(),
        if abi >= 3 { &b"n"[..] } else { &b"new"[..] }
    );
}

#[test]
fn a_missing_path_is_named_in_the_error() {
    let Some(_abi) = landlock_abi() else { return };
    let tmp = TempDir::new("missing");
    let missing = tmp.0.join("no/such/dir");
    let err = Ruleset::for_kernel()
        .unwrap()
        .read_only("/usr")
        .read_write(&missing)
        .prepare()
        .unwrap_err();
    match &err {
        LandlockError::Open { path, source } => {
            assert_eq!(path, &missing);
            assert_eq!(source.kind(), ErrorKind::NotFound);
        }
        other => panic!("expected an Open error, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(msg.starts_with("open `"), "{msg}");
}

#[test]
fn tcp_ports_are_allowed_one_by_one() {
    let Some(abi) = landlock_abi() else { return };
    if !skip_unless(
        abi >= 4,
        &format!("TCP rules need Landlock ABI 4, kernel has {abi}"),
    ) {
        return;
    }
    if !skip_unless(is_root(), "needs root for a private network namespace") {
        return;
    }
    let prepared = Ruleset::new(abi)
        .allow_tcp_bind(18080)
        .allow_tcp_connect(18081)
        .no_new_privs(true)
        .prepare()
        .unwrap();
    let report = restricted_child(&prepared, || {
        // A network namespace of the child's own: nothing it does reaches the host's
        // ports or network.
        // SAFETY: unshare has no memory arguments; this forked child is single-threaded.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut x = Expect::default();
        x.ok("bind allowed port", TcpListener::bind("0.0.0.0:18080"));
        x.errno(
            "bind other port",
            TcpListener::bind("0.0.0.0:18082"),
            libc::EACCES,
        );
        // The loopback of a fresh namespace is down: an allowed connect gets as far as
        // routing and fails there, a denied one stops at Landlock.
        match TcpStream::connect("127.0.0.1:18081") {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => {
                x.failures.push("connect allowed port: EACCES".into());
            }
            _ => {}
        }
        x.errno(
            "connect other port",
            TcpStream::connect("127.0.0.1:18082"),
            libc::EACCES,
        );
        x.done()
    });
    assert_eq!(report, "OK");
}

#[test]
fn signals_stay_inside_the_domain() {
    let Some(abi) = landlock_abi() else { return };
    if !skip_unless(
        abi >= 6,
        &format!("scopes need Landlock ABI 6, kernel has {abi}"),
    ) {
        return;
    }
    let scoped = Ruleset::new(abi).no_new_privs(true).prepare().unwrap();
    let report = restricted_child(&scoped, || {
        // SAFETY: signal 0 only checks permission; the parent is the test process.
        let to_parent = unsafe { libc::kill(libc::getppid(), 0) };
        let err = std::io::Error::last_os_error();
        // SAFETY: as above, to ourselves.
        let to_self = unsafe { libc::kill(libc::getpid(), 0) };
        match (to_parent, err.raw_os_error(), to_self) {
            (-1, Some(libc::EPERM), 0) => Ok(()),
            other => Err(format!("kill(parent) and kill(self): {other:?} ({err})")),
        }
    });
    assert_eq!(report, "OK");

    let unscoped = Ruleset::new(abi)
        .unscoped()
        .no_new_privs(true)
        .prepare()
        .unwrap();
    let report = restricted_child(&unscoped, || {
        // SAFETY: signal 0 only checks permission; the parent is the test process.
        match unsafe { libc::kill(libc::getppid(), 0) } {
            0 => Ok(()),
            _ => Err(format!("kill(parent): {}", std::io::Error::last_os_error())),
        }
    });
    assert_eq!(report, "OK");
}

#[test]
fn rulesets_for_older_abis_work_on_this_kernel() {
    // A ruleset built for an older ABI passes a shorter struct and fewer rights: what a
    // 5.13 (ABI 1) or 6.2 (ABI 3) kernel is given. A newer kernel takes both.
    let Some(abi) = landlock_abi() else { return };
    let tmp = TempDir::new("abis");
    for old in 1..=abi {
        let file = tmp.0.join(format!("file-{old}"));
        fs::write(&file, "abc").unwrap();
        let ruleset = Ruleset::new(old)
            .read_only("/usr")
            .read_write(&tmp.0)
            .no_new_privs(true);
        assert_eq!(ruleset.restricts_tcp(), old >= 4);
        let prepared = ruleset.prepare().unwrap();
        assert_eq!(prepared.abi(), old);
        let report = restricted_child(&prepared, || {
            let mut x = Expect::default();
            x.ok("read /usr/bin/env", fs::read("/usr/bin/env"));
            x.ok("write the temp file", fs::write(&file, "x"));
            x.errno("list /etc", fs::read_dir("/etc"), libc::EACCES);
            // A right this ABI does not handle stays allowed: TCP bind before ABI 4.
            let bind = TcpListener::bind("127.0.0.1:0");
            if old >= 4 {
                x.errno("bind a TCP port", bind, libc::EACCES);
            } else {
                x.ok("bind a TCP port", bind);
            }
            x.done()
        });
        assert_eq!(report, "OK", "ruleset for ABI {old}");
    }
}

/// In the child: a private mount namespace with a tmpfs on `target`.
fn mount_tmpfs_in_child(target: &CString) -> Result<(), String> {
    let err = |what: &str| Err(format!("{what}: {}", std::io::Error::last_os_error()));
    // SAFETY: unshare has no memory arguments; this forked child is single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return err("unshare(CLONE_NEWNS)");
    }
    // SAFETY: NUL-terminated literals and `target`, alive for the calls; the mount
    // namespace is the child's own, so nothing changes on the host.
    unsafe {
        if libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return err("make / private");
        }
        if libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return err("mount tmpfs");
        }
    }
    Ok(())
}

#[test]
fn a_mount_made_in_the_child_needs_a_rule_added_there() {
    let Some(_abi) = landlock_abi() else { return };
    if !skip_unless(is_root(), "needs root to mount a tmpfs") {
        return;
    }
    let tmp = TempDir::new("mount");
    let ro = tmp.0.join("ro");
    let mnt = ro.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let c_mnt = CString::new(mnt.as_os_str().as_bytes()).unwrap();
    let ruleset = Ruleset::for_kernel()
        .unwrap()
        .read_only(&ro)
        .no_new_privs(true);

    // The tmpfs hangs below a read-only rule, and its inodes are new: read-only it is.
    let prepared = ruleset.prepare().unwrap();
    let report = restricted_child_with_setup(
        &prepared,
        || mount_tmpfs_in_child(&c_mnt),
        || {
            let mut x = Expect::default();
            x.ok("list the tmpfs", fs::read_dir(&mnt));
            x.errno(
                "create on the tmpfs",
                create_new(&mnt.join("f")),
                libc::EACCES,
            );
            x.done()
        },
    );
    assert_eq!(report, "OK");

    // With a rule added in the child, after the mount, the tmpfs is writable.
    let prepared = ruleset.prepare().unwrap();
    let report = restricted_child_with_setup(
        &prepared,
        || {
            mount_tmpfs_in_child(&c_mnt)?;
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            let added = prepared.allow_path_in_child(&c_mnt, u64::MAX);
            let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
            added.map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
            match allocated {
                0 => Ok(()),
                n => Err(format!("allow_path_in_child allocated {n} times")),
            }
        },
        || {
            let mut x = Expect::default();
            x.ok("create on the tmpfs", fs::write(mnt.join("f"), "f"));
            x.errno(
                "create beside the tmpfs",
                create_new(&ro.join("g")),
                libc::EACCES,
            );
            x.done()
        },
    );
    assert_eq!(report, "OK");
    // The tmpfs lived in the child's mount namespace only.
    assert!(!mnt.join("f").exists());
}

#[test]
fn a_child_rule_on_a_missing_path_names_it() {
    let Some(_abi) = landlock_abi() else { return };
    let prepared = Ruleset::for_kernel().unwrap().prepare().unwrap();
    let path = c"/nonexistent/cella-landlock";
    let err = prepared.allow_path_in_child(path, u64::MAX).unwrap_err();
    assert_eq!(err.step, landlock::RuleStep::Open);
    assert_eq!(err.source.raw_os_error(), Some(libc::ENOENT));
    assert_eq!(
        err.to_string(),
        "open `/nonexistent/cella-landlock` for a landlock rule"
    );
}

/// The child's no_new_privs flag, from prctl(PR_GET_NO_NEW_PRIVS).
fn no_new_privs_now() -> i32 {
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointers and only reads the caller's flag.
    unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) }
}

#[test]
fn no_new_privs_is_set_only_when_asked() {
    let Some(_abi) = landlock_abi() else { return };
    let asked = Ruleset::for_kernel()
        .unwrap()
        .read_only("/")
        .no_new_privs(true)
        .prepare()
        .unwrap();
    let report = restricted_child(&asked, || match no_new_privs_now() {
        1 => Ok(()),
        n => Err(format!("PR_GET_NO_NEW_PRIVS: {n}")),
    });
    assert_eq!(report, "OK");

    // Without no_new_privs Landlock needs CAP_SYS_ADMIN: root has it.
    if !skip_unless(
        is_root(),
        "needs root (CAP_SYS_ADMIN) to restrict without no_new_privs",
    ) {
        return;
    }
    if no_new_privs_now() != 0 {
        // The test runner itself runs with no_new_privs: nothing to tell apart.
        eprintln!("SKIPPED (second half): the test runner already has no_new_privs");
        return;
    }
    let not_asked = Ruleset::for_kernel()
        .unwrap()
        .read_only("/")
        .prepare()
        .unwrap();
    let report = restricted_child(&not_asked, || match no_new_privs_now() {
        0 => Ok(()),
        n => Err(format!("PR_GET_NO_NEW_PRIVS: {n}")),
    });
    assert_eq!(report, "OK");
}
