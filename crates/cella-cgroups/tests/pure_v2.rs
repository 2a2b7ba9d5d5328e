//! A real pure-v2 view on this hybrid host: in a private mount namespace, cgroup2 is
//! mounted over /sys/fs/cgroup, hiding the v1 mounts (mountinfo still lists them; statfs
//! shows they are shadowed). Detection, path computation, create, CLONE_INTO_CGROUP's fd,
//! join and destroy then run exactly as on a pure-v2 machine (minus the controllers this
//! host keeps in v1).

mod common;

use std::process::Command;

use cella_cgroups::{Cgroup, Layout, detect};
use common::*;

const INNER: &str = "CELLA_CGROUPS_PURE_V2_INNER";
const NAME: &str = "pure_v2_view_in_a_private_mount_namespace";

#[test]
fn pure_v2_view_in_a_private_mount_namespace() {
    if std::env::var_os(INNER).is_some() {
        inner();
        return;
    }
    if !require_root() || !cella_tests::require_tool("unshare") {
        return;
    }
    if detect().unwrap() == Layout::Unified {
        // Already pure v2: run the checks right here.
        inner();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec \"$0\" --exact {NAME} --nocapture --test-threads=1"
        ))
        .arg(&exe)
        .env(INNER, "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner run failed:\n{text}");
    assert!(text.contains("1 passed"), "inner test did not run:\n{text}");
}

fn inner() {
    assert_eq!(detect().unwrap(), Layout::Unified);
    let name = unique("cella-test-purev2");
    let g = CgroupGuard(Cgroup::new(Some(&format!("/{name}/ctr")), "x", false).unwrap());
    let cg = &g.0;
    assert!(
        cg.v1.is_empty(),
        "v1 hierarchies seen through the cgroup2 mount: {:?}",
        cg.v1
    );
    let dir = cg.unified_dir().unwrap().to_owned();
    assert_eq!(
        dir,
        std::path::Path::new("/sys/fs/cgroup")
            .join(&name)
            .join("ctr")
    );
    cg.create().unwrap();
    assert!(cg.open_unified_dir().unwrap().is_some());
    let c = sleeper();
    cg.add_process(c.pid()).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![c.pid()]);
    let has_hugetlb = cg
        .unified
        .as_ref()
        .unwrap()
        .controllers
        .iter()
        .any(|c| c == "hugetlb");
    if has_hugetlb {
        let res =
            serde_json::from_str(r#"{"hugepageLimits":[{"pageSize":"2MB","limit":2097152}]}"#)
                .unwrap();
        cg.apply(&res).unwrap();
        assert_eq!(read(&dir.join("hugetlb.2MB.max")), "2097152");
    }
    // The default path and a relative one, computed (not created) on this view.
    let d = Cgroup::new(None, "abc", false).unwrap();
    assert_eq!(
        d.unified_dir().unwrap(),
        std::path::Path::new("/sys/fs/cgroup/cella/abc")
    );
    cg.destroy().unwrap();
    assert!(!dir.exists());
}
