//! linux.resources on this host's v1 controllers (hybrid: hugetlb and unified keys go to
//! cgroup2): every value lands in the right file, bad input writes nothing.

mod common;

use cella_cgroups::{Cgroup, Layout};
use common::*;
use oci_spec::runtime::LinuxResources;

fn v1_host() -> Option<CgroupGuard> {
    if !require_root() {
        return None;
    }
    let cg = Cgroup::new(
        Some(&format!("/{}/ctr", unique("cella-test-res"))),
        "x",
        false,
    )
    .unwrap();
    if !cella_tests::skip_unless(
        cg.layout != Layout::Unified,
        "needs v1 controllers (v1 or hybrid host)",
    ) {
        return None;
    }
    Some(CgroupGuard(cg))
}

fn res(json: &str) -> LinuxResources {
    serde_json::from_str(json).expect("resources json")
}

const MIB: i64 = 1 << 20;

#[test]
fn full_resources_land_in_the_right_files() {
    let Some(g) = v1_host() else { return };
    let cg = &g.0;
    let hybrid_hugetlb = cg.v1_dir("hugetlb").is_none();
    let mut json = serde_json::json!({
        "memory": {"limit": 64 * MIB, "reservation": 32 * MIB, "swap": 128 * MIB,
                   "kernelTCP": 16 * MIB, "swappiness": 30, "disableOOMKiller": true},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "burst": 1000,
                "realtimePeriod": 500000, "idle": 0, "cpus": "0", "mems": "0"},
        "pids": {"limit": 100},
        "blockIO": {"weight": 500,
                    "throttleReadBpsDevice": [{"major": 254, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 254, "minor": 0, "rate": 100}]},
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4 * MIB}],
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "a", "major": 136, "access": "rw"}
        ]
    });
    if hybrid_hugetlb {
        json["unified"] = serde_json::json!({"hugetlb.1GB.max": "0"});
    }
    let r = res(&json.to_string());
    cg.validate(&r).unwrap();
    cg.create().unwrap();
    cg.apply(&r).unwrap();

    let mem = cg.v1_dir("memory").unwrap();
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        (64 * MIB).to_string()
    );
    assert_eq!(
        read(&mem.join("memory.soft_limit_in_bytes")),
        (32 * MIB).to_string()
    );
    assert_eq!(
        read(&mem.join("memory.memsw.limit_in_bytes")),
        (128 * MIB).to_string()
    );
    assert_eq!(
        read(&mem.join("memory.kmem.tcp.limit_in_bytes")),
        (16 * MIB).to_string()
    );
    assert_eq!(read(&mem.join("memory.swappiness")), "30");
    assert!(read(&mem.join("memory.oom_control")).contains("oom_kill_disable 1"));

    let cpu = cg.v1_dir("cpu").unwrap();
    assert_eq!(read(&cpu.join("cpu.shares")), "512");
    assert_eq!(read(&cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&cpu.join("cpu.cfs_burst_us")), "1000");
    assert_eq!(read(&cpu.join("cpu.rt_period_us")), "500000");
    assert_eq!(read(&cpu.join("cpu.idle")), "0");
    let cs = cg.v1_dir("cpuset").unwrap();
    assert_eq!(read(&cs.join("cpuset.cpus")), "0");
    assert_eq!(read(&cs.join("cpuset.mems")), "0");
    assert_eq!(read(&cg.v1_dir("pids").unwrap().join("pids.max")), "100");

    let blk = cg.v1_dir("blkio").unwrap();
    let wfile = if blk.join("blkio.weight").exists() {
        "blkio.weight"
    } else {
        "blkio.bfq.weight"
    };
    assert!(
        read(&blk.join(wfile)).ends_with("500"),
        "{}",
        read(&blk.join(wfile))
    );
    assert_eq!(
        read(&blk.join("blkio.throttle.read_bps_device")),
        "254:0 1048576"
    );
    assert_eq!(
        read(&blk.join("blkio.throttle.write_iops_device")),
        "254:0 100"
    );

    if hybrid_hugetlb {
        let u = cg.unified_dir().unwrap();
        assert_eq!(read(&u.join("hugetlb.2MB.max")), (4 * MIB).to_string());
        assert_eq!(read(&u.join("hugetlb.1GB.max")), "0");
    } else {
        let h = cg.v1_dir("hugetlb").unwrap();
        assert_eq!(
            read(&h.join("hugetlb.2MB.limit_in_bytes")),
            (4 * MIB).to_string()
        );
    }

    let list = read(&cg.v1_dir("devices").unwrap().join("devices.list"));
    let mut got: Vec<&str> = list.lines().collect();
    got.sort();
    assert_eq!(got, vec!["b 136:* rw", "c 136:* rw", "c 1:3 rwm"]);

    // The limits hold for a real process: it joins and shows up.
    let child = sleeper();
    cg.add_process(child.pid()).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![child.pid()]);
    cg.destroy().unwrap();
    for d in cg.dirs() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn raising_memory_and_swap_together_is_ordered_for_the_kernel() {
    let Some(g) = v1_host() else { return };
    let cg = &g.0;
    cg.create().unwrap();
    cg.apply(&res(&format!(
        r#"{{"memory":{{"limit":{},"swap":{}}}}}"#,
        16 * MIB,
        32 * MIB
    )))
    .unwrap();
    // memsw 32M -> 256M while limit 16M -> 128M: memsw must be raised first.
    cg.apply(&res(&format!(
        r#"{{"memory":{{"limit":{},"swap":{}}}}}"#,
        128 * MIB,
        256 * MIB
    )))
    .unwrap();
    let mem = cg.v1_dir("memory").unwrap();
    assert_eq!(
        read(&mem.join("memory.limit_in_bytes")),
        (128 * MIB).to_string()
    );
    assert_eq!(
        read(&mem.join("memory.memsw.limit_in_bytes")),
        (256 * MIB).to_string()
    );
    // And lowering both: the limit must go down first.
    cg.apply(&res(&format!(
        r#"{{"memory":{{"limit":{},"swap":{}}}}}"#,
        8 * MIB,
        8 * MIB
    )))
    .unwrap();
    assert_eq!(
        read(&mem.join("memory.memsw.limit_in_bytes")),
        (8 * MIB).to_string()
    );
    // Unlimited.
    cg.apply(&res(r#"{"memory":{"limit":-1}}"#)).unwrap();
    assert_eq!(
        read(&mem.join("memory.memsw.limit_in_bytes")),
        read(&mem.join("memory.limit_in_bytes"))
    );
}

#[test]
fn bad_input_names_the_field_and_writes_nothing() {
    let Some(g) = v1_host() else { return };
    let cg = &g.0;
    let cases = [
        (
            r#"{"memory":{"limit":1000}}"#,
            "linux.resources.memory.limit: 1000 is below one page",
        ),
        (
            r#"{"memory":{"limit":8388608,"swap":4194304}}"#,
            "linux.resources.memory.swap: 4194304 is below memory.limit 8388608",
        ),
        (
            r#"{"cpu":{"cpus":"0-"}}"#,
            "linux.resources.cpu.cpus: \"0-\" is not a list",
        ),
        (
            r#"{"unified":{"memory.max":"1M"}}"#,
            "linux.resources.unified.memory.max: ",
        ),
        (
            r#"{"hugepageLimits":[{"pageSize":"3MB","limit":1}]}"#,
            "linux.resources.hugepageLimits[0].pageSize: \"3MB\" is not a huge page size",
        ),
    ];
    for (json, want) in cases {
        // Before create: refused, and nothing is made.
        let msg = cg.validate(&res(json)).unwrap_err().to_string();
        assert!(msg.starts_with(want), "{json}: got {msg:?}, want {want:?}");
        for d in cg.dirs() {
            assert!(!d.exists(), "{json}: {} was created", d.display());
        }
    }
    if cg.v1_dir("net_cls").is_none() {
        let msg = cg
            .validate(&res(r#"{"network":{"classID":1048577}}"#))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "linux.resources.network.classID: the net_cls cgroup controller is not mounted on this host"
        );
    }
    // After create, a valid memory limit next to a bad cpus string is not written either.
    cg.create().unwrap();
    let mem = cg.v1_dir("memory").unwrap();
    let before = read(&mem.join("memory.limit_in_bytes"));
    let e = cg
        .apply(&res(r#"{"memory":{"limit":67108864},"cpu":{"cpus":"x"}}"#))
        .unwrap_err();
    assert!(
        e.to_string().starts_with("linux.resources.cpu.cpus: "),
        "{e}"
    );
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), before);
    // Files this kernel lacks are caught once the directory exists, by field, before any write.
    let mut cases = vec![(
        r#"{"blockIO":{"leafWeight":500}}"#,
        "linux.resources.blockIO.leafWeight: this kernel has no",
    )];
    if cg.v1_dir("hugetlb").is_none() {
        cases.push((
            r#"{"unified":{"hugetlb.2MB.bogus":"1"}}"#,
            "linux.resources.unified.hugetlb.2MB.bogus: this kernel has no",
        ));
    }
    for (json, want) in cases {
        if cg
            .v1_dir("blkio")
            .is_some_and(|b| b.join("blkio.leaf_weight").exists())
            && json.contains("leaf")
        {
            continue;
        }
        let e = cg.apply(&res(json)).unwrap_err().to_string();
        assert!(e.starts_with(want), "{json}: {e}");
    }
}
