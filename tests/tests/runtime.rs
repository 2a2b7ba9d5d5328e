//! End-to-end tests of the OCI runtime core: the real binary, as root, on busybox
//! bundles. Each checks from inside the container what the config asked for.

use cella_tests::{Bundle, Cella, cella_bin, require_root, show, unique, write_script};
use serde_json::{Value, json};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A bundle running `sh -c script`.
fn sh_bundle(name: &str, script: &str) -> Bundle {
    Bundle::new(name, &["sh", "-c", script])
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn host_ns(kind: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Adds `{"type": kind}` to linux.namespaces.
fn add_ns(b: &mut Bundle, kind: &str) {
    b.config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": kind}));
}

fn user_ns(b: &mut Bundle) {
    add_ns(b, "user");
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
}

/// Nothing of container `id` may remain: no state dir under the root.
fn assert_no_state(c: &Cella, id: &str) {
    assert!(!c.root.join(id).exists(), "state dir of {id} left behind");
}

/// No mount of the host mentions `path`.
fn assert_no_mounts_under(path: &Path) {
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    assert!(!mi.contains(p.as_ref()), "mounts left under {p}:\n{mi}");
}

#[test]
fn namespaces_differ_from_host() {
    if !require_root() {
        return;
    }
    let kinds = ["pid", "net", "ipc", "uts", "mnt", "cgroup", "user", "time"];
    let script: String = kinds
        .iter()
        .map(|k| format!("readlink /proc/self/ns/{k}; "))
        .collect();
    let mut b = sh_bundle("ns", &script);
    user_ns(&mut b);
    add_ns(&mut b, "time");
    b.save();
    let out = Cella::new().run_ok(&b);
    let inside: Vec<&str> = out.lines().collect();
    assert_eq!(inside.len(), kinds.len(), "{out}");
    for (k, line) in kinds.iter().zip(inside) {
        assert!(line.starts_with(&format!("{k}:[")), "{k}: {line}");
        assert_ne!(line, host_ns(k), "{k} namespace is the host's");
    }
}

#[test]
fn joins_a_namespace_by_path() {
    if !require_root() {
        return;
    }
    // A network namespace held by a bind mount, as `ip netns add` makes it.
    let name = unique("cella-join");
    let holder = Path::new("/run/netns").join(&name);
    let st = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(st.success());
    let want_ino = fs::metadata(&holder).unwrap().ino();
    let mut b = sh_bundle("join", "readlink /proc/self/ns/net");
    for ns in b.config["linux"]["namespaces"].as_array_mut().unwrap() {
        if ns["type"] == "network" {
            ns["path"] = json!(holder);
        }
    }
    b.save();
    let out = Cella::new().run(&b, &unique("c"));
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(stdout(&out).trim(), format!("net:[{want_ino}]"));
}

#[test]
fn hostname_domainname_env_cwd() {
    if !require_root() {
        return;
    }
    let mut b = sh_bundle(
        "uts",
        "hostname; cat /proc/sys/kernel/domainname; pwd; echo $FOO",
    );
    b.config["hostname"] = json!("box1");
    b.config["domainname"] = json!("example.test");
    b.config["process"]["cwd"] = json!("/tmp");
    b.config["process"]["env"] = json!(["PATH=/bin:/sbin", "FOO=bar baz"]);
    b.save();
    assert_eq!(
        Cella::new().run_ok(&b),
        "box1\nexample.test\n/tmp\nbar baz\n"
    );
}

#[test]
fn user_namespace_id_maps() {
    if !require_root() {
        return;
    }
    let mut b = sh_bundle(
        "userns",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g",
    );
    user_ns(&mut b);
    b.save();
    let out = Cella::new().run_ok(&b);
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        words,
        ["0", "100000", "65536", "0", "100000", "65536", "0", "0"],
        "{out}"
    );
}

#[test]
fn time_namespace_offsets() {
    if !require_root() {
        return;
    }
    let year = 365 * 86_400;
    let mut b = sh_bundle("timens", "cat /proc/uptime");
    add_ns(&mut b, "time");
    b.config["linux"]["timeOffsets"] =
        json!({"boottime": {"secs": year}, "monotonic": {"secs": year}});
    b.save();
    let out = Cella::new().run_ok(&b);
    let inside: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
    let host: f64 = fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        inside - host > (year - 60) as f64 && inside - host < (year + 60) as f64,
        "inside {inside}, host {host}"
    );
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn capabilities_and_no_new_privs() {
    if !require_root() {
        return;
    }
    // The default set.
    let b = sh_bundle("caps", "cat /proc/self/status");
    let st = Cella::new().run_ok(&b);
    assert_eq!(status_field(&st, "CapEff"), "00000000a80425fb");
    assert_eq!(status_field(&st, "CapBnd"), "00000000a80425fb");
    assert_eq!(status_field(&st, "NoNewPrivs"), "1");
    // One capability in every set, ambient included, and no_new_privs off.
    let mut b = sh_bundle("caps2", "cat /proc/self/status");
    let one = json!(["CAP_NET_RAW"]);
    b.config["process"]["capabilities"] = json!({
        "bounding": one, "effective": one, "permitted": one, "inheritable": one, "ambient": one});
    b.config["process"]["noNewPrivileges"] = json!(false);
    b.save();
    let st = Cella::new().run_ok(&b);
    for k in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(status_field(&st, k), "0000000000002000", "{k}");
    }
    assert_eq!(status_field(&st, "NoNewPrivs"), "0");
}

#[test]
fn user_groups_umask_rlimits_oom() {
    if !require_root() {
        return;
    }
    let mut b = sh_bundle(
        "user",
        "id -u; id -g; cat /proc/self/status | grep ^Groups; umask; \
         grep 'Max open files' /proc/self/limits; cat /proc/self/oom_score_adj",
    );
    b.config["process"]["user"] =
        json!({"uid": 1000, "gid": 1001, "additionalGids": [10, 20], "umask": 63});
    b.config["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]);
    b.config["process"]["oomScoreAdj"] = json!(500);
    b.save();
    let out = Cella::new().run_ok(&b);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1001");
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["Groups:", "10", "20"]
    );
    assert_eq!(lines[3], "0077");
    assert_eq!(
        lines[4].split_whitespace().collect::<Vec<_>>(),
        ["Max", "open", "files", "100", "200", "files"]
    );
    assert_eq!(lines[5], "500");
}

#[test]
fn sysctl_in_own_namespace_only() {
    if !require_root() {
        return;
    }
    let host = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let want = if host.trim() == "1" { "0" } else { "1" };
    let mut b = sh_bundle("sysctl", "cat /proc/sys/net/ipv4/ip_forward");
    b.config["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": want});
    b.save();
    assert_eq!(Cella::new().run_ok(&b).trim(), want);
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host
    );
    // A sysctl that is not namespaced would change the host: refused.
    b.config["linux"]["sysctl"] = json!({"vm.swappiness": "10"});
    b.save();
    let c = Cella::new();
    let id = unique("c");
    let out = c.run(&b, &id);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("config.json: linux.sysctl.vm.swappiness: is not namespaced"),
        "{}",
        show(&out)
    );
    assert_no_state(&c, &id);
}

#[test]
fn exit_status_and_signals() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let b = sh_bundle("exit", "exit 3");
    assert_eq!(c.run(&b, &unique("c")).status.code(), Some(3));
    // Killed by a signal: 128 + the signal, as a shell reports it.
    let b = sh_bundle("sig", "sleep 100");
    let id = unique("c");
    let mut run = c.cmd(["run", "--bundle", b.dir.to_str().unwrap(), &id]);
    let runner = std::thread::spawn(move || {
        cella_tests::output_via_files(std::mem::replace(&mut run, Command::new("true")))
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c
        .output(["state", &id])
        .stdout
        .windows(9)
        .any(|w| w == b"\"running\"")
    {
        assert!(Instant::now() < deadline, "never running");
        std::thread::sleep(Duration::from_millis(10));
    }
    c.ok(["kill", &id, "KILL"]);
    assert_eq!(runner.join().unwrap().status.code(), Some(137));
    let b = Bundle::new("noexec", &["/no/such/program"]);
    let out = c.run(&b, &unique("c"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/no/such/program"), "{}", show(&out));
    let b = Bundle::new("nopath", &["nosuchprogram"]);
    let out = c.run(&b, &unique("c"));
    assert!(
        stderr(&out).contains("exec: \"nosuchprogram\": executable file not found in $PATH"),
        "{}",
        show(&out)
    );
}

fn state(c: &Cella, id: &str) -> Value {
    serde_json::from_str(&c.ok(["state", id])).unwrap()
}

fn wait_status(c: &Cella, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = state(c, id);
        if s["status"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "{id} never became {want}: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn lifecycle_create_start_kill_delete() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let b = sh_bundle("life", "trap 'exit 0' TERM; sleep 100 & wait");
    let id = unique("c");
    let pidfile = b.dir.join("pid");
    c.ok([
        "create",
        "--bundle",
        b.dir.to_str().unwrap(),
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
    ]);
    let s = state(&c, &id);
    assert_eq!(s["status"], "created");
    let pid = s["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(fs::read_to_string(&pidfile).unwrap(), pid.to_string());
    assert_eq!(s["bundle"], json!(fs::canonicalize(&b.dir).unwrap()));
    // The process waits: its command is still the runtime's.
    let list: Value = serde_json::from_str(&c.ok(["list", "--format", "json"])).unwrap();
    assert_eq!(list[0]["id"], json!(id));
    // Starting twice fails the second time.
    c.ok(["start", &id]);
    let again = c.output(["start", &id]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("only a created container can be started"),
        "{}",
        show(&again)
    );
    wait_status(&c, &id, "running");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pids: Vec<i64> = serde_json::from_str(&c.ok(["ps", "--format", "json", &id])).unwrap();
        if pids.contains(&pid) && pids.len() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "ps never showed init and sleep: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A running container is not deleted without --force.
    let del = c.output(["delete", &id]);
    assert!(!del.status.success());
    assert!(stderr(&del).contains("is running"), "{}", show(&del));
    c.ok(["kill", &id, "TERM"]);
    wait_status(&c, &id, "stopped");
    let k = c.output(["kill", &id, "KILL"]);
    assert!(!k.status.success(), "kill of a stopped container must fail");
    c.ok(["delete", &id]);
    let gone = c.output(["state", &id]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains(&format!("container \"{id}\" does not exist")));
    assert_no_state(&c, &id);
}

#[test]
fn kill_all_and_delete_force() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let b = sh_bundle("killall", "sleep 100 & sleep 100 & sleep 100");
    let id = unique("c");
    c.ok(["run", "--detach", "--bundle", b.dir.to_str().unwrap(), &id]);
    wait_status(&c, &id, "running");
    let pids: Vec<i64> = serde_json::from_str(&c.ok(["ps", "--format", "json", &id])).unwrap();
    assert!(pids.len() >= 3, "{pids:?}");
    c.ok(["kill", "--all", &id, "9"]);
    wait_status(&c, &id, "stopped");
    for p in &pids {
        let alive = fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| !s.contains(") Z"));
        assert!(!alive, "pid {p} survived kill --all");
    }
    c.ok(["delete", &id]);
    // --force on a running container kills it.
    let id = unique("c");
    c.ok(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &id]);
    let pid = state(&c, &id)["pid"].as_i64().unwrap();
    c.ok(["delete", "--force", &id]);
    assert!(
        !Path::new(&format!("/proc/{pid}/exe")).exists()
            || fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap()
                .contains(") Z")
    );
    assert_no_state(&c, &id);
    // --force on an unknown id is fine, as engines expect.
    c.ok(["delete", "--force", "never-existed"]);
}

#[test]
fn hooks_run_at_the_right_time_and_place() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let mut b = sh_bundle("hooks", "cat /hook-out/startContainer");
    let out = b.dir.join("hook-out");
    fs::create_dir_all(&out).unwrap();
    fs::create_dir_all(b.rootfs().join("hook-out")).unwrap();
    // Host-side hooks record the state they got and the uts namespace they ran in.
    let host_hook = b.dir.join("host-hook.sh");
    write_script(
        &host_hook,
        &format!(
            "#!/bin/sh\ncat > {o}/$1.json\nreadlink /proc/self/ns/uts > {o}/$1.uts\nhostname >> {o}/$1.uts\n",
            o = out.display()
        ),
    );
    // startContainer resolves in the container: a script inside the rootfs.
    write_script(
        &b.rootfs().join("bin/start-hook"),
        "#!/bin/sh\ncat > /hook-out/startContainer\n",
    );
    let hook =
        |kind: &str| json!({"path": host_hook, "args": ["host-hook.sh", kind], "env": ["X=1"]});
    b.config["hooks"] = json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")],
        "startContainer": [{"path": "/bin/start-hook"}],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    b.config["hostname"] = json!("hooked");
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/hook-out", "type": "bind", "source": out, "options": ["rbind", "rw"]}));
    b.save();
    let id = unique("c");
    let run = c.run(&b, &id);
    assert!(run.status.success(), "{}", show(&run));
    // startContainer got the state, in the container.
    let st: Value = serde_json::from_str(&stdout(&run)).unwrap();
    assert_eq!(st["id"], json!(id));
    for kind in [
        "prestart",
        "createRuntime",
        "createContainer",
        "poststart",
        "poststop",
    ] {
        let text = fs::read_to_string(out.join(format!("{kind}.json")))
            .unwrap_or_else(|_| panic!("{kind} did not run"));
        let st: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(st["id"], json!(id), "{kind}");
        assert!(
            st["pid"].as_i64().unwrap() > 0 || kind == "poststop",
            "{kind}: {st}"
        );
        let uts = fs::read_to_string(out.join(format!("{kind}.uts"))).unwrap();
        let in_container = kind == "createContainer";
        let want_host = if in_container {
            "hooked".to_owned()
        } else {
            host_hostname()
        };
        assert_eq!(
            uts.lines().nth(1),
            Some(want_host.as_str()),
            "{kind}: {uts}"
        );
        assert_eq!(
            uts.lines().next().unwrap() == host_ns("uts"),
            !in_container,
            "{kind}: {uts}"
        );
    }
}

fn host_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn failing_hook_fails_create_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let mut b = sh_bundle("badhook", "true");
    b.config["hooks"] =
        json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 7"]}]});
    b.save();
    let id = unique("c");
    let out = c.output(["create", "--bundle", b.dir.to_str().unwrap(), &id]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("createRuntime hook #0 `/bin/sh`: exited with status 7"),
        "{}",
        show(&out)
    );
    assert_no_state(&c, &id);
    assert_no_mounts_under(&b.dir);
}

#[test]
fn bad_input_is_named_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let bundle_dir = |b: &Bundle| b.dir.to_str().unwrap().to_owned();
    let try_create = |b: &Bundle, id: &str| c.output(["create", "--bundle", &bundle_dir(b), id]);
    type Edit = Box<dyn Fn(&mut Bundle)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "malformed",
            Box::new(|b: &mut Bundle| {
                fs::write(b.dir.join("config.json"), "{\"ociVersion\": \"1.0.0\",").unwrap()
            }),
            "config.json: (document): EOF while parsing",
        ),
        (
            "unknown-ns",
            Box::new(|b: &mut Bundle| {
                b.config["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "netw"}));
                b.save();
            }),
            "config.json: linux.namespaces[6].type: unknown variant `netw`",
        ),
        (
            "dup-ns",
            Box::new(|b: &mut Bundle| {
                b.config["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"type": "pid"}));
                b.save();
            }),
            "config.json: linux.namespaces[6].type: \"pid\" is already listed at linux.namespaces[0]",
        ),
        (
            "no-rootfs",
            Box::new(|b: &mut Bundle| {
                b.config["root"]["path"] = json!("nonexistent");
                b.save();
            }),
            "root.path",
        ),
        (
            "bad-ns-path",
            Box::new(|b: &mut Bundle| {
                b.config["linux"]["namespaces"][1]["path"] = json!("/proc/self/ns/uts");
                b.save();
            }),
            "config.json: linux.namespaces[1].path: `/proc/self/ns/uts` is not a net namespace",
        ),
        (
            "relative-cwd",
            Box::new(|b: &mut Bundle| {
                b.config["process"]["cwd"] = json!("tmp");
                b.save();
            }),
            "config.json: process.cwd: tmp is not an absolute path",
        ),
        (
            "maps-without-userns",
            Box::new(|b: &mut Bundle| {
                b.config["linux"]["uidMappings"] =
                    json!([{"containerID": 0, "hostID": 1000, "size": 1}]);
                b.save();
            }),
            "config.json: linux.uidMappings: id mappings need a new user namespace",
        ),
    ];
    for (name, edit, want) in cases {
        let mut b = sh_bundle(name, "true");
        edit(&mut b);
        let id = unique(name);
        let out = try_create(&b, &id);
        assert!(!out.status.success(), "{name}: {}", show(&out));
        assert!(
            stderr(&out).contains(want),
            "{name}: want {want:?} in {}",
            show(&out)
        );
        assert_no_state(&c, &id);
        assert_no_mounts_under(&b.dir);
    }
    // --systemd-cgroup where systemd does not run: a clear error, nothing made.
    if !Path::new("/run/systemd/system").exists() {
        let b = sh_bundle("systemd", "true");
        let id = unique("sd");
        let out = c.output([
            "--systemd-cgroup",
            "create",
            "--bundle",
            &bundle_dir(&b),
            &id,
        ]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("systemd is not running"),
            "{}",
            show(&out)
        );
        assert_no_state(&c, &id);
    }
    // A duplicate id: the first container is untouched.
    let b = sh_bundle("dup", "sleep 100");
    let id = unique("dup");
    c.ok(["create", "--bundle", &bundle_dir(&b), &id]);
    let out = try_create(&b, &id);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("container \"{id}\" already exists")),
        "{}",
        show(&out)
    );
    assert_eq!(state(&c, &id)["status"], "created");
    c.ok(["delete", &id]);
    // Unknown ids and ids that could escape the root.
    for verb in ["state", "start", "kill", "delete", "ps"] {
        let out = c.output([verb, "nope"]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("container \"nope\" does not exist"),
            "{verb}: {}",
            show(&out)
        );
    }
    let out = c.output(["state", "../etc"]);
    assert!(
        stderr(&out).contains("invalid container id"),
        "{}",
        show(&out)
    );
}

#[test]
fn concurrent_creates_of_one_id_give_one_container() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let b = sh_bundle("race", "sleep 100");
    let id = unique("race");
    let children: Vec<_> = (0..4)
        .map(|_| {
            let mut cmd = c.cmd(["create", "--bundle", b.dir.to_str().unwrap(), &id]);
            std::thread::spawn(move || {
                cella_tests::output_via_files(std::mem::replace(&mut cmd, Command::new("true")))
            })
        })
        .collect();
    let results: Vec<_> = children.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = results.iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "exactly one create must win");
    for o in results.iter().filter(|o| !o.status.success()) {
        assert!(stderr(o).contains("already exists"), "{}", show(o));
    }
    assert_eq!(state(&c, &id)["status"], "created");
    c.ok(["delete", "--force", &id]);
}

#[test]
fn delete_force_after_a_crash_during_create() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let mut b = sh_bundle("crash", "true");
    let marker = b.dir.join("in-hook");
    b.config["hooks"] = json!({"createRuntime": [{"path": "/bin/sh",
        "args": ["sh", "-c", format!("touch {}; sleep 30", marker.display())]}]});
    b.save();
    let id = unique("crash");
    let mut create = c
        .cmd(["create", "--bundle", b.dir.to_str().unwrap(), &id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "hook never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The runtime dies in the middle of create, with init alive and waiting.
    let st: Value =
        serde_json::from_str(&fs::read_to_string(c.root.join(&id).join("state.json")).unwrap())
            .unwrap();
    let init = st["pid"].as_i64().unwrap();
    create.kill().unwrap();
    create.wait().unwrap();
    assert_eq!(state(&c, &id)["status"], "creating");
    c.ok(["delete", "--force", &id]);
    assert_no_state(&c, &id);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::read_to_string(format!("/proc/{init}/stat")).is_ok_and(|s| !s.contains(") Z")) {
        assert!(
            Instant::now() < deadline,
            "init {init} survived delete --force"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_no_mounts_under(&b.dir);
    // The orphaned hook (sleep 30) is the test's to clean up.
    let _ = Command::new("pkill")
        .args(["-f", &format!("touch {}", marker.display())])
        .status();
}

#[test]
fn runtime_binary_is_not_reachable_from_the_container() {
    if !require_root() {
        return;
    }
    // runc CVE-2019-5736: until start, init is the runtime, so /proc/<init>/exe reaches
    // the runtime's binary. An attacker keeps an O_PATH handle to it, waits for the
    // runtime to finish, and reopens the handle for writing.
    let c = Cella::new();
    let b = sh_bundle("exe", "sleep 100");
    let id = unique("exe");
    c.ok(["create", "--bundle", b.dir.to_str().unwrap(), &id]);
    let pid = state(&c, &id)["pid"].as_i64().unwrap();
    let handle = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(format!("/proc/{pid}/exe"))
        .unwrap();
    let host = fs::metadata(cella_bin()).unwrap();
    let reach = handle.metadata().unwrap();
    assert!(
        (reach.dev(), reach.ino()) != (host.dev(), host.ino()),
        "init's exe is the host binary: a container could overwrite it"
    );
    c.ok(["start", &id]);
    wait_status(&c, &id, "running");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&handle);
    let through = format!("/proc/self/fd/{fd}");
    // What the handle reaches lies on a read-only mount...
    let cpath = std::ffi::CString::new(through.clone()).unwrap();
    // SAFETY: `st` is a live statvfs the kernel fills in; `cpath` is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::statvfs(cpath.as_ptr(), &mut st) }, 0);
    assert!(
        st.f_flag & libc::ST_RDONLY != 0,
        "init's exe is on a writable mount"
    );
    // ...so reopening it to append a byte fails: EROFS, or ETXTBSY first while another
    // cella runs from it. Were the protection gone, the byte would land at the end of
    // the test's own cella build, where an ELF file ignores it.
    let err = match fs::OpenOptions::new().append(true).open(&through) {
        Err(e) => e,
        Ok(mut w) => std::io::Write::write_all(&mut w, b"\n").unwrap_err(),
    };
    assert!(
        matches!(err.raw_os_error(), Some(libc::EROFS | libc::ETXTBSY)),
        "{err}"
    );
    c.ok(["delete", "--force", &id]);
}

/// Runs `cella run` with a host directory open as fd 3 in the runtime.
fn run_with_fd3(c: &Cella, b: &Bundle, extra: &[&str]) -> std::process::Output {
    let dir = fs::File::open("/").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
    let id = unique("fd");
    let mut cmd = c.cmd(["run"]);
    cmd.args(extra)
        .args(["--bundle", b.dir.to_str().unwrap(), &id]);
    // SAFETY: dup2 and fcntl are async-signal-safe; `fd` stays open in the parent until
    // spawn returns, and the child only makes it fd 3 without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2(3, 3) would keep close-on-exec: clear the flag instead.
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cella_tests::output_via_files(cmd);
    let _ = c.output(["delete", "--force", &id]);
    drop(dir);
    out
}

#[test]
fn no_runtime_fd_reaches_the_container() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    // A second command keeps sh from exec'ing ls, so $$ is the container's sh.
    let b = sh_bundle("fds", "ls /proc/$$/fd; true");
    let out = run_with_fd3(&c, &b, &[]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2"]
    );
    // --preserve-fds passes exactly what was asked.
    let out = run_with_fd3(&c, &b, &["--preserve-fds", "1"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "{}",
        show(&out)
    );
}

#[test]
fn cwd_through_a_runtime_fd_is_refused() {
    if !require_root() {
        return;
    }
    // runc CVE-2024-21626: a cwd of /proc/self/fd/3 would be the host's / here.
    let c = Cella::new();
    let mut b = sh_bundle("cwd", "pwd; ls");
    b.config["process"]["cwd"] = json!("/proc/self/fd/3");
    b.save();
    let out = run_with_fd3(&c, &b, &[]);
    assert!(
        !out.status.success(),
        "container ran with a host cwd: {}",
        show(&out)
    );
    assert!(
        stderr(&out).contains("working directory is outside the container's root"),
        "{}",
        show(&out)
    );
}

#[test]
fn features_and_spec() {
    let out = Command::new(cella_bin()).arg("features").output().unwrap();
    assert!(out.status.success());
    let f: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ns: Vec<&str> = f["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for k in [
        "cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time",
    ] {
        assert!(ns.contains(&k), "{k}");
    }
    let dir = std::env::temp_dir().join(unique("spec"));
    fs::create_dir_all(&dir).unwrap();
    let st = Command::new(cella_bin())
        .args(["spec", "--rootless", "--bundle"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let spec: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert!(
        spec["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .contains(&json!({"type": "user"}))
    );
    // A second spec refuses to overwrite.
    let again = Command::new(cella_bin())
        .args(["spec", "--bundle"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists already"));
    fs::remove_dir_all(dir).unwrap();
}

/// The mountinfo line whose mount point is `target`, split into fields.
fn mount_of<'a>(mountinfo: &'a str, target: &str) -> Option<Vec<&'a str>> {
    mountinfo
        .lines()
        .rev()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[4] == target)
}

#[test]
fn rootfs_masked_readonly_propagation_and_dev() {
    if !require_root() {
        return;
    }
    let mut b = sh_bundle(
        "rootfs",
        "cat /proc/self/mountinfo; echo ===; ls /dev | tr '\\n' ' '; echo; echo ===; \
         cat /proc/keys 2>&1 | head -c 100; echo; echo ===; \
         touch /newfile 2>&1; echo ===; (echo 1 > /proc/sys/kernel/shmmax) 2>&1; echo ===; \
         touch /data/ok && echo data-rw; touch /ro/x 2>&1; echo ===; ls /sys/firmware | wc -l",
    );
    let data = b.dir.join("data");
    let ro = b.dir.join("ro");
    fs::create_dir_all(&data).unwrap();
    fs::create_dir_all(&ro).unwrap();
    let mounts = b.config["mounts"].as_array_mut().unwrap();
    mounts.push(json!({"destination": "/data", "type": "bind", "source": data, "options": ["rbind", "rw", "rshared"]}));
    mounts.push(json!({"destination": "/ro", "type": "bind", "source": ro, "options": ["bind", "ro", "nosuid", "nodev", "noexec"]}));
    b.config["linux"]["devices"] =
        json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438}]);
    b.config["linux"]["rootfsPropagation"] = json!("slave");
    b.save();
    let out = Cella::new().run_ok(&b);
    let parts: Vec<&str> = out.split("===\n").collect();
    assert_eq!(parts.len(), 7, "{out}");
    let mi = parts[0];
    // The root is read-only (root.readonly in the default spec).
    let root = mount_of(mi, "/").expect("a root mount");
    assert!(
        root[5].split(',').any(|o| o == "ro"),
        "root not ro: {root:?}"
    );
    // readonlyPaths are read-only and maskedPaths masked: every one this kernel has.
    let cfg = &b.config["linux"];
    for p in cfg["readonlyPaths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
    {
        if Path::new(p).exists() {
            let m = mount_of(mi, p).unwrap_or_else(|| panic!("{p} not remounted:\n{mi}"));
            assert!(
                m[5].split(',').any(|o| o == "ro"),
                "{p} not read-only: {m:?}"
            );
        }
    }
    let mut masked = 0;
    for p in cfg["maskedPaths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
    {
        if Path::new(p).exists() {
            assert!(mount_of(mi, p).is_some(), "{p} not masked:\n{mi}");
            masked += 1;
        }
    }
    assert!(
        masked >= 3,
        "this host should have /proc/keys, /proc/timer_list, /sys/firmware"
    );
    assert_eq!(
        parts[2].trim(),
        "",
        "reading the masked /proc/keys must give nothing"
    );
    assert!(parts[3].contains("Read-only file system"), "{}", parts[3]);
    assert!(parts[4].contains("Read-only file system"), "{}", parts[4]);
    // The bind mounts: rw+shared data, ro+nosuid+nodev+noexec ro.
    let d = mount_of(mi, "/data").unwrap();
    assert!(
        d[5].starts_with("rw") && d[6].starts_with("shared:"),
        "{d:?}"
    );
    let r = mount_of(mi, "/ro").unwrap();
    for o in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(r[5].split(',').any(|x| x == o), "/ro lacks {o}: {r:?}");
    }
    assert!(
        parts[5].starts_with("data-rw") && parts[5].contains("Read-only file system"),
        "{}",
        parts[5]
    );
    assert!(
        data.join("ok").exists(),
        "the write to /data must reach the host"
    );
    // /dev: the defaults, the configured device, and nothing of the host's.
    let dev: Vec<&str> = parts[1].split_whitespace().collect();
    for want in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "mqueue", "fuse",
        "fd", "stdin", "stdout", "stderr",
    ] {
        assert!(dev.contains(&want), "/dev lacks {want}: {dev:?}");
    }
    for host_only in ["sda", "vda", "mem", "kmsg", "kvm"] {
        assert!(
            !dev.contains(&host_only),
            "/dev has the host's {host_only}: {dev:?}"
        );
    }
    // /sys/firmware is masked (empty).
    assert_eq!(parts[6].trim(), "0");
}

#[test]
fn mount_through_an_escaping_symlink_is_refused() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let mut b = sh_bundle("escape", "true");
    let outside = b.dir.join("outside");
    fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../../../..".to_owned() + outside.to_str().unwrap(),
        b.rootfs().join("escape"),
    )
    .unwrap();
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/escape/x", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}));
    b.save();
    let id = unique("esc");
    let out = c.run(&b, &id);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(stderr(&out).contains("mounts[6].destination: \"/escape/x\" goes through symlink \"/escape\" which points outside the rootfs"), "{}", show(&out));
    assert!(
        fs::read_dir(&outside).unwrap().next().is_none(),
        "something was made outside the rootfs"
    );
    assert_no_state(&c, &id);
    assert_no_mounts_under(&b.dir);
}

#[test]
fn terminal_through_the_console_socket() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let mut b = sh_bundle("tty", "tty; stty size; readlink /proc/self/fd/0; echo done");
    b.config["process"]["terminal"] = json!(true);
    b.config["process"]["consoleSize"] = json!({"height": 30, "width": 100});
    b.save();
    let sock = b.dir.join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let engine = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        cella_tests::recv_with_fd(&conn)
    });
    let id = unique("tty");
    // Without a socket, a terminal is refused up front.
    let out = c.output(["create", "--bundle", b.dir.to_str().unwrap(), &id]);
    assert!(
        stderr(&out)
            .contains("process.terminal: a detached container's terminal needs --console-socket"),
        "{}",
        show(&out)
    );
    c.ok([
        "create",
        "--bundle",
        b.dir.to_str().unwrap(),
        "--console-socket",
        sock.to_str().unwrap(),
        &id,
    ]);
    let (name, master) = engine.join().unwrap();
    assert_eq!(name, b"/dev/ptmx");
    c.ok(["start", &id]);
    // Read the terminal until the slave side closes (EIO).
    let mut f = fs::File::from(master);
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&text).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        ["/dev/pts/0", "30 100", "/dev/pts/0", "done"],
        "{text}"
    );
    c.ok(["delete", "--force", &id]);
}

#[test]
fn run_in_the_foreground_relays_the_terminal() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let mut b = sh_bundle(
        "fg-tty",
        "tty; stty size; echo ready; read x; echo got:$x; exit 3",
    );
    b.config["process"]["terminal"] = json!(true);
    b.save();
    let id = unique("fgtty");
    // As a person types it: no --console-socket, cella's own stdio is a terminal.
    let mut typed = false;
    let (status, shown) = cella_tests::run_on_pty(
        c.cmd(["run", "--bundle", b.dir.to_str().unwrap(), &id]),
        40,
        120,
        |text| {
            (text.contains("ready\n") && !typed).then(|| {
                typed = true;
                b"hello\n".to_vec()
            })
        },
    );
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(status.code(), Some(3), "{shown}");
    // The container's own pty (its line discipline echoes what was typed), sized like
    // the user's terminal.
    assert_eq!(
        lines,
        ["/dev/pts/0", "40 120", "ready", "hello", "got:hello"],
        "{shown}"
    );
    // Removed on exit, as runc's foreground run does.
    assert!(!c.output(["state", &id]).status.success());
}

#[test]
fn debug_prints_the_plan_and_log_gets_json_errors() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    let b = sh_bundle("debug", "true");
    let id = unique("dbg");
    let out = c.output(["--debug", "run", "--bundle", b.dir.to_str().unwrap(), &id]);
    assert!(out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    for want in [
        "cella: debug: state dir",
        "clone init (one clone3) with new namespaces: mnt uts ipc net cgroup pid",
        "destination: \"/proc\"",
        "exec [\"sh\", \"-c\", \"true\"]",
    ] {
        assert!(err.contains(want), "missing {want:?} in {err}");
    }
    // --log --log-format json: the error as engines read it.
    let log = b.dir.join("log.json");
    let out = c.output([
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "state",
        "nope",
    ]);
    assert!(!out.status.success());
    let line: Value =
        serde_json::from_str(fs::read_to_string(&log).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(line["level"], "error");
    assert_eq!(line["msg"], "container \"nope\" does not exist");
    assert!(line["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn cgroup_namespace_is_rooted_at_the_container_cgroup() {
    if !require_root() {
        return;
    }
    let c = Cella::new();
    // Both ways in: one clone3, and the joining path (time offsets need it).
    for joining in [false, true] {
        let mut b = sh_bundle("cgns", "cat /proc/self/cgroup; sleep 100");
        if joining {
            add_ns(&mut b, "time");
            b.config["linux"]["timeOffsets"] = json!({"boottime": {"secs": 1}});
        }
        b.save();
        let id = unique("cgns");
        c.ok(["run", "-d", "--bundle", b.dir.to_str().unwrap(), &id]);
        let pid = state(&c, &id)["pid"].as_i64().unwrap();
        // From the host: init is in the container's cgroup in every hierarchy...
        let host = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        for line in host.lines() {
            assert!(
                line.ends_with(&format!("/cella/{id}")),
                "joining={joining}: {line}\n{host}"
            );
        }
        // ...and from inside, that cgroup is the root of its cgroup namespace.
        let inside_ns = fs::read_link(format!("/proc/{pid}/ns/cgroup")).unwrap();
        assert_ne!(inside_ns, fs::read_link("/proc/self/ns/cgroup").unwrap());
        // /proc/<pid>/cgroup read from inside the container's cgroup namespace.
        let out = Command::new("nsenter")
            .args([
                "-t",
                &pid.to_string(),
                "-C",
                "cat",
                &format!("/proc/{pid}/cgroup"),
            ])
            .output()
            .unwrap();
        let inside = String::from_utf8_lossy(&out.stdout);
        assert!(!inside.is_empty(), "{}", show(&out));
        for line in inside.lines() {
            assert!(line.ends_with(":/"), "joining={joining}: {line}\n{inside}");
        }
        c.ok(["delete", "--force", &id]);
    }
}

#[test]
fn home_from_the_containers_passwd_unless_set() {
    if !require_root() {
        return;
    }
    // As with runc: the user's entry in the container's /etc/passwd, else "/", and the
    // config wins when it sets HOME.
    let mut b = sh_bundle("home", "echo $HOME");
    b.config["process"]["env"] = json!(["PATH=/bin"]);
    b.save();
    assert_eq!(Cella::new().run_ok(&b), "/root\n");
    b.config["process"]["user"] = json!({"uid": 4242, "gid": 4242});
    b.save();
    assert_eq!(Cella::new().run_ok(&b), "/\n");
    b.config["process"]["env"] = json!(["PATH=/bin", "HOME=/tmp"]);
    b.save();
    assert_eq!(Cella::new().run_ok(&b), "/tmp\n");
}
