//! The cgroup v2 code paths on any cgroup2 mount. On this hybrid host that is
//! /sys/fs/cgroup/unified, which has cgroup.procs, cgroup.freeze, cgroup.kill and
//! cgroup.events but (besides hugetlb) no controllers; on a pure v2 host it is
//! /sys/fs/cgroup itself.

mod common;

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread::sleep;
use std::time::Duration;

use cella_cgroups::{Cgroup, FreezerState, Layout};
use common::*;

fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        post.starts_with("cgroup2 ")
            .then(|| PathBuf::from(pre.split(' ').nth(4).unwrap_or("")))
    })
}

fn v2(tag: &str) -> Option<CgroupGuard> {
    if !require_root() {
        return None;
    }
    let root = cgroup2_mount();
    if !cella_tests::skip_unless(root.is_some(), "needs a cgroup2 mount") {
        return None;
    }
    let name = unique(&format!("cella-test-{tag}"));
    let cg = Cgroup::new_unified_at(&root.unwrap(), &format!("{name}/ctr")).unwrap();
    assert_eq!(cg.layout, Layout::Unified);
    Some(CgroupGuard(cg))
}

#[test]
fn create_join_freeze_kill_destroy_on_cgroup2() {
    let Some(g) = v2("v2life") else { return };
    let cg = &g.0;
    let dir = cg.unified_dir().unwrap().to_owned();
    cg.create().unwrap();
    assert!(dir.is_dir());
    // Controllers available at the root are enabled down to the leaf's parent.
    let avail = read(
        &cg.unified
            .as_ref()
            .unwrap()
            .mount_point
            .join("cgroup.controllers"),
    );
    let leaf_has = read(&dir.join("cgroup.controllers"));
    for c in avail.split_whitespace() {
        assert!(
            leaf_has.split_whitespace().any(|l| l == c),
            "{c} not enabled for the leaf"
        );
    }
    let spin = spinner();
    cg.add_process(spin.pid()).unwrap();
    assert!(in_procs(&dir, spin.pid()));
    assert_eq!(cg.pids().unwrap(), vec![spin.pid()]);

    cg.freeze().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    assert_eq!(read(&dir.join("cgroup.freeze")), "1");
    let a = cpu_ticks(spin.pid());
    sleep(Duration::from_millis(300));
    assert_eq!(cpu_ticks(spin.pid()), a, "frozen process still runs");
    cg.thaw().unwrap();
    eventually("thaw", || {
        cg.freezer_state().unwrap() == FreezerState::Thawed
    });
    let a = cpu_ticks(spin.pid());
    sleep(Duration::from_millis(300));
    assert!(cpu_ticks(spin.pid()) > a, "thawed process does not run");

    // cpu.stat is part of the cgroup2 core, so cpu usage shows even without controllers.
    let s = cg.stats().unwrap();
    assert!(
        s.cpu.usage.total > 100_000_000,
        "cpu total {} ns",
        s.cpu.usage.total
    );

    cg.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(
        read(&dir.join("cgroup.events")).lines().next(),
        Some("populated 0")
    );
    cg.destroy().unwrap();
    assert!(!dir.exists());
    cg.destroy().unwrap();
}

#[test]
fn kill_all_with_sigterm_on_cgroup2_freezes_then_signals() {
    let Some(g) = v2("v2term") else { return };
    let cg = &g.0;
    cg.create().unwrap();
    let mut a = sleeper();
    cg.add_process(a.pid()).unwrap();
    cg.kill_all(libc::SIGTERM).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(a.0.wait().unwrap().signal(), Some(libc::SIGTERM));
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    cg.destroy().unwrap();
}

#[test]
fn hugetlb_limit_through_v2_where_available() {
    let Some(g) = v2("v2huge") else { return };
    let cg = &g.0;
    let res: oci_spec::runtime::LinuxResources =
        serde_json::from_str(r#"{"hugepageLimits":[{"pageSize":"2MB","limit":8388608}],"unified":{"cgroup.max.descendants":"3"}}"#).unwrap();
    let has_hugetlb = cg
        .unified
        .as_ref()
        .unwrap()
        .controllers
        .iter()
        .any(|c| c == "hugetlb");
    if !has_hugetlb {
        let e = cg.validate(&res).unwrap_err().to_string();
        assert!(
            e.starts_with("linux.resources.hugepageLimits[0]: the hugetlb controller is needed"),
            "{e}"
        );
        return;
    }
    cg.create().unwrap();
    cg.apply(&res).unwrap();
    let dir = cg.unified_dir().unwrap();
    assert_eq!(read(&dir.join("hugetlb.2MB.max")), "8388608");
    assert_eq!(read(&dir.join("cgroup.max.descendants")), "3");
    // A v1-only controller is refused by name before anything is written.
    let res: oci_spec::runtime::LinuxResources =
        serde_json::from_str(r#"{"memory":{"limit":67108864}}"#).unwrap();
    if !cg
        .unified
        .as_ref()
        .unwrap()
        .controllers
        .iter()
        .any(|c| c == "memory")
    {
        let e = cg.apply(&res).unwrap_err().to_string();
        assert!(
            e.starts_with("linux.resources.memory: the memory controller is needed"),
            "{e}"
        );
    }
    cg.destroy().unwrap();
}

/// The fd from open_unified_dir works for clone3(CLONE_INTO_CGROUP): the child is born
/// in the cgroup, with no cgroup.procs write.
#[test]
fn clone_into_cgroup_with_the_unified_dir_fd() {
    let Some(g) = v2("v2clone") else { return };
    let cg = &g.0;
    cg.create().unwrap();
    let fd = cg
        .open_unified_dir()
        .unwrap()
        .expect("pure v2 layout gives an fd");

    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: fd.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: `args` lives across the call and has the kernel's clone_args layout (v2,
    // 88 bytes). In the child only async-signal-safe pause/_exit run before it dies.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        loop {
            // SAFETY: pause has no preconditions; the child never returns into Rust code.
            unsafe { libc::pause() };
        }
    }
    assert!(pid > 0, "clone3: {}", std::io::Error::last_os_error());
    let pid = pid as i32;
    let found = in_procs(cg.unified_dir().unwrap(), pid);
    // SAFETY: plain syscalls on the child we just made.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
    assert!(found, "child not born in the cgroup");
    cg.destroy().unwrap();
}

/// Run `script` with sh inside the cgroup (joined before the script starts) and return
/// its output.
fn run_in(cg: &Cgroup, script: &str) -> String {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let mut child = ChildGuard(
        Command::new("sh")
            .args(["-c", &format!("read x; {script}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    cg.add_process(child.pid()).unwrap();
    child.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut out = String::new();
    child
        .0
        .stdout
        .as_mut()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child.0.wait().unwrap();
    out
}

#[test]
fn device_rules_become_an_ebpf_program_on_cgroup2() {
    let Some(g) = v2("v2dev") else { return };
    let cg = &g.0;
    cg.create().unwrap();
    let script = "(: </dev/null) 2>/dev/null && echo null-ok || echo null-denied; \
                  (: </dev/zero) 2>/dev/null && echo zero-ok || echo zero-denied; \
                  (: >/dev/full) 2>/dev/null && echo full-ok || echo full-denied";
    assert_eq!(
        run_in(cg, script),
        "null-ok\nzero-ok\nfull-ok\n",
        "before any rules"
    );
    let res: oci_spec::runtime::LinuxResources = serde_json::from_str(
        r#"{"devices":[{"allow":false,"access":"rwm"},
                       {"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"},
                       {"allow":true,"type":"c","major":1,"minor":7,"access":"r"}]}"#,
    )
    .unwrap();
    cg.apply(&res).unwrap();
    assert_eq!(cg.device_programs().unwrap(), Some(1));
    // /dev/null allowed; /dev/zero denied; /dev/full (1:7) readable but not writable.
    assert_eq!(run_in(cg, script), "null-ok\nzero-denied\nfull-denied\n");
    // Re-applying replaces the program instead of stacking a second one.
    let allow_all: oci_spec::runtime::LinuxResources =
        serde_json::from_str(r#"{"devices":[{"allow":true,"access":"rwm"}]}"#).unwrap();
    cg.apply(&allow_all).unwrap();
    assert_eq!(cg.device_programs().unwrap(), Some(1));
    assert_eq!(run_in(cg, script), "null-ok\nzero-ok\nfull-ok\n");
    cg.destroy().unwrap();
}
