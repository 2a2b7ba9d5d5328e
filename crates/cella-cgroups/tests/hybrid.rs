//! Root tests on this host's real hierarchies (v1, hybrid or v2 as detected).

mod common;

use cella_cgroups::{Cgroup, Layout, detect};
use common::*;

fn new_cgroup(tag: &str) -> Option<CgroupGuard> {
    if !require_root() {
        return None;
    }
    let name = unique(&format!("cella-test-{tag}"));
    let cg = Cgroup::new(Some(&format!("/{name}/ctr")), "unused", false).expect("new");
    Some(CgroupGuard(cg))
}

#[test]
fn detect_reports_this_hosts_layout() {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let has_v2 = mounts.lines().any(|l| l.contains(" - cgroup2 "));
    let has_v1 = mounts
        .lines()
        .any(|l| l.contains(" - cgroup ") && !l.ends_with("name=systemd"));
    let want = match (has_v1, has_v2) {
        (true, true) => Layout::Hybrid,
        (true, false) => Layout::V1,
        _ => Layout::Unified,
    };
    assert_eq!(detect().unwrap(), want);
}

#[test]
fn paths_follow_runc_cgroupfs_semantics() {
    let cg = Cgroup::new(None, "abc", false).unwrap();
    for d in cg.dirs() {
        assert!(d.ends_with("cella/abc"), "{}", d.display());
    }
    if cg.layout != Layout::Unified {
        assert!(
            cg.v1.iter().any(|d| d.controllers == ["name=systemd"])
                || !std::path::Path::new("/sys/fs/cgroup/systemd").exists()
        );
        assert!(cg.v1_dir("memory").is_some());
    }
    let cg = Cgroup::new(Some("/x/y"), "abc", false).unwrap();
    for d in &cg.v1 {
        assert_eq!(d.dir, d.mount_point.join("x/y"));
    }
    // Relative: under this process's own cgroup in each hierarchy.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let cg = Cgroup::new(Some("rel/c"), "abc", false).unwrap();
    if let Some(mem) = cg.v1.iter().find(|d| d.controllers == ["memory"]) {
        let mine = own
            .lines()
            .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
            .unwrap();
        assert_eq!(
            mem.dir,
            mem.mount_point
                .join(mine.trim_start_matches('/'))
                .join("rel/c")
        );
    }
    // The state file can carry it.
    let json = serde_json::to_string(&cg).unwrap();
    assert_eq!(serde_json::from_str::<Cgroup>(&json).unwrap(), cg);
}

#[test]
fn systemd_driver_without_systemd_is_refused_clearly() {
    let r = Cgroup::new(Some("system.slice:cella:abc"), "abc", true);
    if std::path::Path::new("/run/systemd/system").exists() {
        // Computing touches nothing; the unit and its directories are recorded.
        let cg = r.unwrap();
        let u = cg.systemd.as_ref().unwrap();
        assert_eq!(u.unit, "cella-abc.scope");
        assert!(
            cg.dirs()
                .iter()
                .all(|d| d.ends_with("system.slice/cella-abc.scope"))
        );
    } else {
        assert_eq!(
            r.unwrap_err().to_string(),
            "systemd is not running (no /run/systemd/system)"
        );
    }
    // A malformed path is refused before systemd is even looked for.
    for bad in ["/not/systemd", "a:b", "nota.slic:x:y", "system.slice:x:"] {
        let e = Cgroup::new(Some(bad), "abc", true).unwrap_err().to_string();
        assert!(e.starts_with("linux.cgroupsPath: "), "{bad}: {e}");
    }
    let e = Cgroup::new(Some("/not/systemd"), "abc", true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("slice:prefix:name"), "{e}");
}

#[test]
fn create_add_destroy_in_every_hierarchy() {
    let Some(g) = new_cgroup("life") else { return };
    let cg = &g.0;
    for d in cg.dirs() {
        assert!(!d.exists());
    }
    cg.create().unwrap();
    cg.create().unwrap(); // idempotent
    for d in cg.dirs() {
        assert!(d.is_dir(), "{}", d.display());
    }
    if let Some(cs) = cg.v1_dir("cpuset") {
        assert!(!read(&cs.join("cpuset.cpus")).is_empty());
        assert!(!read(&cs.join("cpuset.mems")).is_empty());
    }
    let child = sleeper();
    cg.add_process(child.pid()).unwrap();
    for d in cg.dirs() {
        assert!(in_procs(d, child.pid()), "pid not in {}", d.display());
    }
    assert_eq!(cg.pids().unwrap(), vec![child.pid()]);
    // On hybrid there is no single-directory cgroup for CLONE_INTO_CGROUP.
    assert_eq!(
        cg.open_unified_dir().unwrap().is_some(),
        cg.layout == Layout::Unified
    );
    cg.destroy().unwrap();
    for d in cg.dirs() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    cg.destroy().unwrap(); // twice is fine
    drop(child);
}

#[test]
fn destroy_of_a_never_created_cgroup_is_fine() {
    let Some(g) = new_cgroup("never") else { return };
    g.0.destroy().unwrap();
}
