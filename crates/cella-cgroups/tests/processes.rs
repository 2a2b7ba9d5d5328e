//! Processes in a cgroup on this host's layout: listing, freezing, stats, killing.

mod common;

use std::thread::sleep;
use std::time::Duration;

use cella_cgroups::{Cgroup, FreezerState};
use common::*;

fn guard(tag: &str) -> Option<CgroupGuard> {
    if !require_root() {
        return None;
    }
    let cg = Cgroup::new(
        Some(&format!("/{}/ctr", unique(&format!("cella-test-{tag}")))),
        "x",
        false,
    )
    .unwrap();
    cg.create().unwrap();
    Some(CgroupGuard(cg))
}

/// CPU ticks a process gains over `ms` milliseconds.
fn gained(pid: i32, ms: u64) -> u64 {
    let a = cpu_ticks(pid);
    sleep(Duration::from_millis(ms));
    cpu_ticks(pid) - a
}

#[test]
fn freeze_stops_a_busy_process_and_thaw_resumes_it() {
    let Some(g) = guard("freeze") else { return };
    let cg = &g.0;
    let spin = spinner();
    cg.add_process(spin.pid()).unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    assert!(gained(spin.pid(), 300) > 5, "spinner does not run");
    cg.freeze().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    assert_eq!(gained(spin.pid(), 300), 0, "frozen process still runs");
    cg.thaw().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Thawed);
    assert!(gained(spin.pid(), 300) > 5, "thawed process does not run");
    cg.destroy().unwrap();
}

#[test]
fn stats_show_cpu_memory_and_pids() {
    let Some(g) = guard("stats") else { return };
    let cg = &g.0;
    let mut busy = Gated::new("sh -c 'while :; do :; done'");
    cg.add_process(busy.pid()).unwrap();
    busy.release();
    sleep(Duration::from_millis(300));
    let s = cg.stats().unwrap();
    assert!(
        s.cpu.usage.total > 50_000_000,
        "cpu total {} ns",
        s.cpu.usage.total
    );
    assert!(s.cpu.usage.user + s.cpu.usage.kernel > 0);
    assert!(
        s.memory.usage.usage > 0,
        "memory usage 0: {:?}",
        s.memory.usage
    );
    assert!(s.memory.usage.limit > 0);
    assert!(!s.memory.raw.is_empty());
    assert_eq!(s.pids.current, 1);
    if cg.v1_dir("cpuacct").is_some() {
        assert!(!s.cpu.usage.percpu.is_empty());
        // Read after the total, so never less while the process runs.
        assert!(s.cpu.usage.percpu.iter().sum::<u64>() >= s.cpu.usage.total);
    }
    let v = serde_json::to_value(&s).unwrap();
    assert!(v["cpu"]["usage"]["total"].as_u64().unwrap() > 0);
    assert!(v["memory"]["usage"]["usage"].as_u64().unwrap() > 0);
    assert_eq!(v["pids"]["current"], 1);
    cg.destroy().unwrap();
    assert!(cg.stats().is_err(), "stats of a removed cgroup");
}

#[test]
fn kill_all_beats_a_forking_process_and_destroy_leaves_nothing() {
    let Some(g) = guard("kill") else { return };
    let cg = &g.0;
    cg.apply(&serde_json::from_str(r#"{"pids":{"limit":64}}"#).unwrap())
        .unwrap();
    let mut forker = Gated::new("sh -c 'while :; do sleep 10 & done'");
    cg.add_process(forker.pid()).unwrap();
    let quiet = sleeper();
    cg.add_process(quiet.pid()).unwrap();
    forker.release();
    eventually("the forker to fork", || cg.pids().unwrap().len() > 5);
    cg.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(cg.pids().unwrap(), Vec::<i32>::new());
    cg.destroy().unwrap();
    for d in cg.dirs() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    cg.destroy().unwrap();
}

#[test]
fn kill_all_with_another_signal_signals_every_process() {
    let Some(g) = guard("term") else { return };
    let cg = &g.0;
    let a = sleeper();
    let b = sleeper();
    cg.add_process(a.pid()).unwrap();
    cg.add_process(b.pid()).unwrap();
    let mut want = vec![a.pid(), b.pid()];
    want.sort();
    assert_eq!(cg.pids().unwrap(), want);
    cg.kill_all(libc::SIGTERM).unwrap();
    let (mut a, mut b) = (a, b);
    for c in [&mut a, &mut b] {
        let st = c.0.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGTERM));
    }
    assert_eq!(
        cg.freezer_state().unwrap(),
        FreezerState::Thawed,
        "left frozen"
    );
    cg.destroy().unwrap();
}

#[test]
fn destroy_kills_what_is_left_in_sub_cgroups() {
    let Some(g) = guard("nested") else { return };
    let cg = &g.0;
    // A container may create its own sub-cgroups; destroy must remove them too.
    let sub = cg
        .dirs()
        .into_iter()
        .map(|d| d.join("inner"))
        .collect::<Vec<_>>();
    for s in &sub {
        std::fs::create_dir(s).unwrap();
        if s.parent().unwrap().join("cpuset.cpus").exists() {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                std::fs::write(s.join(f), read(&s.parent().unwrap().join(f))).unwrap();
            }
        }
    }
    let c = sleeper();
    for s in &sub {
        std::fs::write(s.join("cgroup.procs"), c.pid().to_string()).unwrap();
    }
    assert_eq!(cg.pids().unwrap(), vec![c.pid()]);
    cg.destroy().unwrap();
    for d in cg.dirs() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn kill_all_without_cgroup_kill_freezes_and_signals_until_empty() {
    let Some(g) = guard("killv1") else { return };
    if !cella_tests::skip_unless(g.0.v1_dir("freezer").is_some(), "needs the v1 freezer") {
        return;
    }
    // The same cgroup seen without its cgroup2 directory: no cgroup.kill, so the v1
    // freezer + per-pid signal loop has to do it.
    let mut v1_only = g.0.clone();
    v1_only.unified = None;
    let mut forker = Gated::new("sh -c 'while :; do sleep 10 & done'");
    g.0.add_process(forker.pid()).unwrap();
    forker.release();
    eventually("the forker to fork", || v1_only.pids().unwrap().len() > 5);
    v1_only.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(v1_only.pids().unwrap(), Vec::<i32>::new());
    assert_eq!(v1_only.freezer_state().unwrap(), FreezerState::Thawed);
    g.0.destroy().unwrap();
}

#[test]
fn a_paused_cgroup_stays_paused_for_sigterm_and_is_destroyed_by_force() {
    let Some(g) = guard("paused") else { return };
    let cg = &g.0;
    let mut a = sleeper();
    cg.add_process(a.pid()).unwrap();
    cg.freeze().unwrap();
    cg.kill_all(libc::SIGTERM).unwrap();
    assert_eq!(
        cg.freezer_state().unwrap(),
        FreezerState::Frozen,
        "kill must not resume a paused container"
    );
    assert!(
        a.0.try_wait().unwrap().is_none(),
        "a frozen process cannot act on SIGTERM yet"
    );
    // delete --force on a paused container.
    cg.destroy().unwrap();
    for d in cg.dirs() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    use std::os::unix::process::ExitStatusExt;
    let sig = a.0.wait().unwrap().signal();
    assert!(
        sig == Some(libc::SIGTERM) || sig == Some(libc::SIGKILL),
        "{sig:?}"
    );
}
