//! End-to-end tests of the operations on a live container: pause/resume (freezer),
//! events (stats JSON, once and streamed) and update (limits from flags and JSON).
//! The real binary, as root, on busybox bundles run detached.

use cella_tests::{Bundle, Cella, require_root, show, unique};
use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

const BUSY: &str = "while :; do :; done";

/// Runs `script` detached in a new container; returns the bundle and the id.
fn detached(c: &Cella, name: &str, script: &str) -> (Bundle, String) {
    let b = Bundle::new(name, &["sh", "-c", script]);
    let id = unique(name);
    c.ok(["run", "--detach", "--bundle", b.dir.to_str().unwrap(), &id]);
    (b, id)
}

fn state(c: &Cella, id: &str) -> Value {
    serde_json::from_str(&c.ok(["state", id])).unwrap()
}

fn status(c: &Cella, id: &str) -> String {
    state(c, id)["status"].as_str().unwrap().to_owned()
}

/// utime (field 14 of /proc/<pid>/stat) in clock ticks.
fn utime(pid: i64) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &text[text.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(11).unwrap().parse().unwrap()
}

/// The container's directory in the v1 hierarchy `ctrl` (default cgroupsPath).
fn v1_dir(ctrl: &str, id: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/cgroup/{ctrl}/cella/{id}"))
}

fn read_trim(p: PathBuf) -> String {
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn pause_freezes_and_resume_thaws() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let (_b, id) = detached(&c, "pause", BUSY);
    let pid = state(&c, &id)["pid"].as_i64().unwrap();
    let t0 = utime(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(utime(pid) > t0, "the busy loop does not run");

    let out = c.output(["resume", &id]);
    assert!(!out.status.success(), "resume of a running container");
    assert!(
        stderr(&out).contains("container not paused"),
        "{}",
        show(&out)
    );

    c.ok(["pause", &id]);
    assert_eq!(status(&c, &id), "paused");
    let frozen = utime(pid);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(utime(pid), frozen, "CPU time grew while paused");

    let out = c.output(["pause", &id]);
    assert!(!out.status.success(), "pause of a paused container");
    assert!(
        stderr(&out).contains("container not running"),
        "{}",
        show(&out)
    );

    c.ok(["resume", &id]);
    assert_eq!(status(&c, &id), "running");
    let t1 = utime(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(utime(pid) > t1, "CPU time does not grow after resume");
    c.ok(["delete", "--force", &id]);
}

#[test]
fn pause_of_a_stopped_container_fails() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let (_b, id) = detached(&c, "pstop", "true");
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&c, &id) != "stopped" {
        assert!(Instant::now() < deadline, "container did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = c.output(["pause", &id]);
    assert!(!out.status.success(), "pause of a stopped container");
    let err = stderr(&out);
    assert!(
        err.contains("stopped") && err.contains("container not running"),
        "{err}"
    );
    let out = c.output(["events", "--stats", &id]);
    assert!(!out.status.success(), "stats of a stopped container");
    c.ok(["delete", &id]);
}

#[test]
fn events_stats_is_runc_json() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let (_b, id) = detached(&c, "evs", BUSY);
    std::thread::sleep(Duration::from_millis(200));
    let out = c.ok(["events", "--stats", &id]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let ev: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], id.as_str());
    let d = &ev["data"];
    assert!(d["cpu"]["usage"]["total"].as_u64().unwrap() > 0, "{d}");
    assert!(d["memory"]["usage"]["usage"].as_u64().unwrap() > 0, "{d}");
    assert!(d["pids"]["current"].as_u64().unwrap() >= 1, "{d}");
    assert!(d["blkio"].is_object() && d["hugetlb"].is_object(), "{d}");
    c.ok(["delete", "--force", &id]);
}

#[test]
fn events_stream_until_the_container_stops() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let (_b, id) = detached(&c, "evstream", "sleep 1000");
    let mut child = c
        .cmd(["events", "--interval", "100ms", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        let l = lines.next().expect("an event line").unwrap();
        let ev: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(ev["type"], "stats");
        assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1, "{l}");
    }
    let killed = Instant::now();
    c.ok(["kill", &id, "KILL"]);
    // The stream ends by itself once the container has stopped.
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("events did not exit after the container stopped");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(code.success(), "events exited with {code}");
    eprintln!("events exited {:?} after kill", killed.elapsed());
    c.ok(["delete", "--force", &id]);
}

#[test]
fn update_memory_pids_and_cpu_shares() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    // The shell waits for /go, then forks 20 sleeps, recording each one that started.
    let script = "while [ ! -e /go ]; do sleep 0.05; done; \
                  i=0; while [ $i -lt 20 ]; do sleep 100 & echo $! >> /forked; i=$((i+1)); done; \
                  sleep 100";
    let mut b = Bundle::new("upd", &["sh", "-c", script]);
    b.config["root"]["readonly"] = false.into();
    b.save();
    let id = unique("upd");
    c.ok(["run", "--detach", "--bundle", b.dir.to_str().unwrap(), &id]);
    let mem = v1_dir("memory", &id);
    assert!(mem.is_dir(), "no v1 memory cgroup at {}", mem.display());

    c.ok(["update", "--memory", "64m", &id]);
    assert_eq!(read_trim(mem.join("memory.limit_in_bytes")), "67108864");

    // Swap alone is checked against the current limit: below it is refused.
    c.ok(["update", "--memory-swap", "128m", &id]);
    assert_eq!(
        read_trim(mem.join("memory.memsw.limit_in_bytes")),
        "134217728"
    );
    assert_eq!(read_trim(mem.join("memory.limit_in_bytes")), "67108864");
    let out = c.output(["update", "--memory-swap", "32m", &id]);
    assert!(!out.status.success(), "memory+swap below memory accepted");
    assert!(stderr(&out).contains("memory.swap"), "{}", show(&out));
    assert_eq!(
        read_trim(mem.join("memory.memsw.limit_in_bytes")),
        "134217728"
    );

    // A limit below one page is refused, naming the field, and nothing changes.
    let out = c.output(["update", "--memory", "1000", "--pids-limit", "9", &id]);
    assert!(!out.status.success(), "memory 1000 accepted");
    assert!(stderr(&out).contains("memory.limit"), "{}", show(&out));
    assert_eq!(read_trim(mem.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(read_trim(v1_dir("pids", &id).join("pids.max")), "max");

    // JSON: a value of the wrong type and an unknown key are named.
    for (json, field) in [
        (r#"{"memory":{"limit":"lots"}}"#, "memory.limit"),
        (r#"{"cpu":{"shares":512},"memroy":{"limit":1}}"#, "memroy"),
    ] {
        let mut child = c
            .cmd(["update", "--resources", "-", &id])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(json.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{json} accepted");
        assert!(stderr(&out).contains(field), "{json}: {}", show(&out));
    }
    let cpu = v1_dir("cpu", &id);
    let shares_before = read_trim(cpu.join("cpu.shares"));
    assert_ne!(shares_before, "512");

    // --resources from a file. Device rules in it are ignored (as runc does).
    let devices = read_trim(v1_dir("devices", &id).join("devices.list"));
    let file = b.dir.join("resources.json");
    fs::write(
        &file,
        r#"{"cpu":{"shares":512},"devices":[{"allow":false,"access":"rwm"}]}"#,
    )
    .unwrap();
    c.ok(["update", "--resources", file.to_str().unwrap(), &id]);
    assert_eq!(read_trim(cpu.join("cpu.shares")), "512");
    assert_eq!(
        read_trim(v1_dir("devices", &id).join("devices.list")),
        devices
    );
    assert_eq!(read_trim(mem.join("memory.limit_in_bytes")), "67108864");

    // pids: the limit is written and a burst of forks is capped by it.
    c.ok(["update", "--pids-limit", "5", &id]);
    let pids = v1_dir("pids", &id);
    assert_eq!(read_trim(pids.join("pids.max")), "5");
    let before: u64 = read_trim(pids.join("pids.current")).parse().unwrap();
    fs::write(b.rootfs().join("go"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let ev = read_trim(pids.join("pids.events"));
        let n: u64 = ev
            .strip_prefix("max ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if n > 0 {
            break n;
        }
        assert!(Instant::now() < deadline, "no fork hit the limit: {ev}");
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(200));
    let started = fs::read_to_string(b.rootfs().join("forked"))
        .unwrap_or_default()
        .lines()
        .count();
    let current: u64 = read_trim(pids.join("pids.current")).parse().unwrap();
    assert!(current <= 5, "pids.current {current} above the limit");
    assert!(
        started <= 4,
        "{started} sleeps started next to the shell under pids.max 5"
    );
    assert!(
        started >= 5 - before as usize - 1,
        "fewer forks than the limit allows"
    );
    eprintln!(
        "fork burst: {before} before, {started} of 20 started, {failed} forks refused, pids.current {current}"
    );
    c.ok(["delete", "--force", &id]);
    assert!(!mem.exists(), "cgroup left behind");
}

#[test]
fn events_stream_reports_oom_kills() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    // A subshell fills its memory once /go exists; the OOM killer ends it, init lives.
    let script = "while [ ! -e /go ]; do sleep 0.05; done; \
                  (x=$(head -c 200000000 /dev/zero | tr '\\0' a)); sleep 1000";
    let mut b = Bundle::new("oom", &["sh", "-c", script]);
    b.config["linux"]["resources"]["memory"] = serde_json::json!({"limit": 16 << 20});
    b.save();
    let id = unique("oom");
    c.ok(["run", "--detach", "--bundle", b.dir.to_str().unwrap(), &id]);
    let mut child = c
        .cmd(["events", "--interval", "100ms", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["type"], "stats");
    fs::write(b.rootfs().join("go"), "").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = false;
    while Instant::now() < deadline {
        let l = lines.next().expect("stream ended early").unwrap();
        let ev: Value = serde_json::from_str(&l).unwrap();
        if ev["type"] == "oom" {
            assert_eq!(ev["id"], id.as_str());
            seen = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen, "no oom event within 20s");
    assert_eq!(status(&c, &id), "running", "init was the OOM victim");
    c.ok(["delete", "--force", &id]);
}

/// Removes a leftover cgroup2 directory (made in a private mount namespace, so the
/// harness's `delete --force` from outside cannot see it).
struct RmdirOnDrop(PathBuf);

impl Drop for RmdirOnDrop {
    fn drop(&mut self) {
        if self.0.is_dir() {
            let _ = fs::write(self.0.join("cgroup.kill"), "1");
            std::thread::sleep(Duration::from_millis(100));
            let _ = fs::remove_dir(&self.0);
        }
    }
}

/// The cgroup v2 paths (cgroup.freeze, cpu.stat, v2 controller checks) on a pure-v2
/// view of this hybrid host: cgroup2 mounted over /sys/fs/cgroup in a private mount
/// namespace, where every cella command of the test runs.
#[test]
fn pause_events_update_on_a_pure_v2_view() {
    if !require_root() || !cella_tests::require_tool("unshare") {
        return;
    }
    let Some(v2root) = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split(' ').nth(4).map(PathBuf::from))
    else {
        eprintln!("SKIPPED: no cgroup2 mount on this host");
        return;
    };
    let c = Cella::new();
    let b = Bundle::new("v2ops", &["sh", "-c", BUSY]);
    let id = unique("v2ops");
    let _guard = RmdirOnDrop(v2root.join("cella").join(&id));
    let cella = cella_tests::cella_bin();
    let cella = format!("{} --root {}", cella.display(), c.root.display());
    let script = format!(
        "mount -t cgroup2 cgroup2 /sys/fs/cgroup || exit 99
         trap '{cella} delete --force {id}' EXIT
         {cella} run --detach --bundle {bundle} {id} || exit 98
         {cella} pause {id} && echo paused
         cat /sys/fs/cgroup/cella/{id}/cgroup.events
         {cella} state {id} | tr -d ' \\n'; echo
         {cella} resume {id} && echo resumed
         cat /sys/fs/cgroup/cella/{id}/cgroup.freeze
         sleep 0.2
         {cella} events --stats {id}
         {cella} update --pids-limit 5 {id} 2>&1 && echo pids.max=$(cat /sys/fs/cgroup/cella/{id}/pids.max) || echo update-failed",
        bundle = b.dir.display(),
    );
    let out = cella_tests::output_via_files({
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
        cmd
    });
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", show(&out));
    assert!(text.contains("paused\n"), "{text}");
    assert!(text.contains("frozen 1"), "{text}");
    assert!(text.contains(r#""status":"paused""#), "{text}");
    assert!(text.contains("resumed\n0\n"), "{text}");
    let ev: Value = text
        .lines()
        .find(|l| l.starts_with('{') && l.contains(r#""type":"stats""#))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no stats event: {text}"));
    assert!(
        ev["data"]["cpu"]["usage"]["total"].as_u64().unwrap() > 0,
        "{ev}"
    );
    let controllers = fs::read_to_string(v2root.join("cgroup.controllers")).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "pids") {
        assert!(text.contains("pids.max=5"), "{text}");
    } else {
        // The hybrid dev VM's v2 hierarchy has no pids controller: a clear error.
        assert!(
            text.contains("linux.resources.pids.limit") && text.contains("update-failed"),
            "{text}"
        );
    }
}
