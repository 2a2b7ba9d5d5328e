//! Times each cgroup step on this host (as root) and prints a Markdown table:
//! `cargo run --release -p cella-cgroups --example cgroup_timings`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cella_cgroups::Cgroup;

const RUNS: u32 = 50;

fn main() {
    let res: oci_spec::runtime::LinuxResources = serde_json::from_str(
        r#"{"memory":{"limit":67108864,"swap":134217728},"cpu":{"shares":512,"quota":50000,"period":100000},
            "pids":{"limit":100},"devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]}"#,
    )
    .expect("resources");
    let steps = [
        "new",
        "create",
        "apply",
        "add_process",
        "freeze+thaw",
        "stats",
        "destroy (kill 1 + rmdir)",
    ];
    let mut total = [Duration::ZERO; 7];
    for i in 0..RUNS {
        let path = format!("/cella-timing-{}/c{i}", std::process::id());
        let t = Instant::now();
        let cg = Cgroup::new(Some(&path), "x", false).expect("new");
        total[0] += t.elapsed();
        let t = Instant::now();
        cg.create().expect("create");
        total[1] += t.elapsed();
        let t = Instant::now();
        cg.apply(&res).expect("apply");
        total[2] += t.elapsed();
        let mut child = Command::new("sleep")
            .arg("100")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep");
        let t = Instant::now();
        cg.add_process(child.id() as i32).expect("add_process");
        total[3] += t.elapsed();
        let t = Instant::now();
        cg.freeze().expect("freeze");
        cg.thaw().expect("thaw");
        total[4] += t.elapsed();
        let t = Instant::now();
        cg.stats().expect("stats");
        total[5] += t.elapsed();
        let t = Instant::now();
        cg.destroy().expect("destroy");
        total[6] += t.elapsed();
        let _ = child.wait();
    }
    for d in Cgroup::new(
        Some(&format!("/cella-timing-{}/x", std::process::id())),
        "x",
        false,
    )
    .expect("new")
    .dirs()
    {
        let _ = std::fs::remove_dir(d.parent().expect("parent"));
    }
    println!(
        "layout: {:?}, {RUNS} runs\n",
        cella_cgroups::detect().expect("detect")
    );
    println!("| step | mean |\n|---|---|");
    for (s, t) in steps.iter().zip(total) {
        println!(
            "| {s} | {:.1} µs |",
            t.as_secs_f64() * 1e6 / f64::from(RUNS)
        );
    }
}
