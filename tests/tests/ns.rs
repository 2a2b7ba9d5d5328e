//! End-to-end tests of `cella ns`, with util-linux (lsns, nsenter, unshare) as the oracle.
//! Targets are `sleep` processes in fresh namespaces made by util-linux's unshare; every
//! process, mount and named namespace a test makes is removed by a Drop guard.

use cella_tests::{Cella, cella_bin, require_root, require_tool, scratch_root, show, unique};
use serde_json::Value;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ready(tools: &[&str]) -> bool {
    require_root() && tools.iter().all(|t| require_tool(t))
}

/// A process tree started by util-linux unshare; killed (with its children, through
/// --kill-child) when dropped.
struct Target {
    unshare: Child,
    /// The `sleep` inside the new namespaces.
    pid: i32,
}

impl Target {
    /// `unshare --fork --kill-child <flags> sh -c <script>`; `script` must end by exec'ing
    /// `sleep 1000` (the target). Waits until that sleep runs.
    fn start(flags: &[&str], script: &str) -> Target {
        Target::wait(
            Target::spawn(flags, script),
            &format!("unshare {flags:?} sh -c {script:?}"),
        )
    }

    fn spawn(flags: &[&str], script: &str) -> Child {
        Command::new("unshare")
            .args(flags)
            .args(["--fork", "--kill-child", "sh", "-c", script])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn unshare")
    }

    /// Waits until the child of `unshare` is the target `sleep`.
    fn wait(unshare: Child, what: &str) -> Target {
        let mut t = Target { pid: 0, unshare };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let children = format!("/proc/{0}/task/{0}/children", t.unshare.id());
            if let Some(pid) = std::fs::read_to_string(&children).ok().and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<i32>().ok())
            }) {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "sleep" {
                    t.pid = pid;
                    return t;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("target did not start: {what}");
    }

    fn ns(&self, kind: &str) -> u64 {
        ns_of(self.pid, kind)
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // --kill-child does not reach a target that changed credentials: kill it by pid.
        if self.pid > 0 {
            // SAFETY: kill takes plain integers; the pid is our own target's.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn ns_of(pid: i32, kind: &str) -> u64 {
    std::fs::metadata(format!("/proc/{pid}/ns/{kind}"))
        .expect("stat ns file")
        .ino()
}

/// A file with a namespace bind-mounted on it; unmounted and removed when dropped.
struct BoundFile(PathBuf);

impl Drop for BoundFile {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A directory whose entries are namespace bind mounts; all unmounted when dropped.
struct BoundDir(PathBuf);

impl Drop for BoundDir {
    fn drop(&mut self) {
        if let Ok(d) = std::fs::read_dir(&self.0) {
            for e in d.flatten() {
                let _ = Command::new("umount").arg("-l").arg(e.path()).output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Named namespaces made by `cella ns create`; removed (and the state root's ns mount
/// taken down) when dropped.
struct Named<'a> {
    cella: &'a Cella,
    name: String,
}

impl Drop for Named<'_> {
    fn drop(&mut self) {
        let _ = self.cella.output(["ns", "rm", &self.name]);
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.cella.root.join("ns"))
            .output();
    }
}

fn cella(args: &[&str]) -> Output {
    Command::new(cella_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn cella")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.stdin(Stdio::null()).output().expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed: {}", show(&out));
    stdout(&out)
}

/// `{"namespaces": [...]}` as inode -> entry, flattening lsns's nested "children".
fn by_inode(json: &str) -> HashMap<u64, Value> {
    fn add(list: &Value, m: &mut HashMap<u64, Value>) {
        for n in list.as_array().expect("namespaces array") {
            let ino = n["ns"].as_u64().expect("ns is a number");
            assert!(
                m.insert(ino, n.clone()).is_none(),
                "namespace {ino} listed twice"
            );
            if let Some(children) = n.get("children") {
                add(children, m);
            }
        }
    }
    let v: Value = serde_json::from_str(json).expect("parse JSON");
    let mut m = HashMap::new();
    add(&v["namespaces"], &mut m);
    m
}

#[test]
fn ls_agrees_with_lsns_including_bind_mounts_and_fds() {
    if !ready(&["lsns", "unshare", "umount"]) {
        return;
    }
    // Two sleeps in new uts/ipc/net/mnt/cgroup/time and pid namespaces.
    let t = Target::start(
        &[
            "--uts", "--ipc", "--net", "--mount", "--cgroup", "--time", "--pid",
        ],
        "sleep 1000 & exec sleep 1000",
    );
    // Wait for the background sleep too, so counts are stable.
    let pidns = t.ns("pid");
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let count = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| {
                std::fs::metadata(format!("/proc/{p}/ns/pid")).is_ok_and(|m| m.ino() == pidns)
            })
            .count();
        if count == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // A uts namespace held only by a bind mount.
    let file = BoundFile(scratch_root().join(unique("uts-bound")));
    std::fs::write(&file.0, "").unwrap();
    run_ok(
        Command::new("unshare")
            .arg(format!("--uts={}", file.0.display()))
            .arg("true"),
    );
    let bound_ino = std::fs::metadata(&file.0).unwrap().ino();
    // A net namespace held only by an open fd of a process in the host namespaces.
    let netfile = BoundFile(scratch_root().join(unique("net-fd")));
    std::fs::write(&netfile.0, "").unwrap();
    run_ok(
        Command::new("unshare")
            .arg(format!("--net={}", netfile.0.display()))
            .arg("true"),
    );
    let fd_ino = std::fs::metadata(&netfile.0).unwrap().ino();
    // And an ipc namespace held only by an fd opened through /proc/<pid>/ns.
    let t2 = Target::start(&["--ipc"], "exec sleep 1000");
    let ipc_ino = t2.ns("ipc");
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec 3<{} 4</proc/{}/ns/ipc; exec sleep 1000",
            netfile.0.display(),
            t2.pid
        ))
        .spawn()
        .expect("spawn fd holder");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{}/fd/4", holder.id())).is_err()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let t2_pid = t2.pid;
    drop(t2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{t2_pid}/ns/ipc")).is_ok() && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    run_ok(Command::new("umount").arg("-l").arg(&netfile.0));

    let ours = by_inode(&stdout(&cella(&["ns", "ls", "--json"])));
    let theirs = by_inode(&run_ok(Command::new("lsns").arg("--json")));
    let _ = holder.kill();
    let _ = holder.wait();

    for kind in ["uts", "ipc", "net", "mnt", "cgroup", "time", "pid"] {
        let ino = t.ns(kind);
        let a = ours
            .get(&ino)
            .unwrap_or_else(|| panic!("cella ns ls misses {kind} {ino}"));
        let b = theirs
            .get(&ino)
            .unwrap_or_else(|| panic!("lsns misses {kind} {ino}"));
        assert_eq!(a["type"], b["type"], "{kind} {ino}: type");
        assert_eq!(
            a["nprocs"], b["nprocs"],
            "{kind} {ino}: nprocs\ncella: {a}\nlsns: {b}"
        );
        assert_eq!(a["pid"], b["pid"], "{kind} {ino}: lowest pid");
        assert_eq!(a["command"], b["command"], "{kind} {ino}: command");
        assert_eq!(a["user"], b["user"], "{kind} {ino}: user");
    }
    assert_eq!(ours[&t.ns("pid")]["nprocs"], 2);
    // lsns 2.38 does not list namespaces without processes; newer ones list them with
    // nprocs 0. cella must list them once, with their type.
    let b = ours
        .get(&bound_ino)
        .expect("bind-mounted uts namespace listed");
    assert_eq!(
        (b["type"].as_str(), b["nprocs"].as_u64()),
        (Some("uts"), Some(0))
    );
    assert_eq!(b["nsfs"].as_str(), file.0.to_str());
    let f = ours.get(&fd_ino).expect("fd-held net namespace listed");
    assert_eq!(
        (f["type"].as_str(), f["nprocs"].as_u64()),
        (Some("net"), Some(0))
    );
    let i = ours.get(&ipc_ino).expect("fd-held ipc namespace listed");
    assert_eq!(
        (i["type"].as_str(), i["nprocs"].as_u64()),
        (Some("ipc"), Some(0))
    );
    for ino in [bound_ino, fd_ino, ipc_ino] {
        if let Some(l) = theirs.get(&ino) {
            assert_eq!(l["nprocs"], 0);
        }
    }
}

#[test]
fn ls_filters_by_type_pid_and_container_and_draws_the_tree() {
    if !ready(&["unshare"]) {
        return;
    }
    let t = Target::start(
        &["--user", "--map-root-user", "--uts", "--net"],
        "exec sleep 1000",
    );
    let c = Cella::new();
    let id = unique("ctr");
    std::fs::create_dir_all(c.root.join(&id)).unwrap();
    std::fs::write(
        c.root.join(&id).join("state.json"),
        format!(
            r#"{{"ociVersion":"1.2.0","id":"{id}","status":"running","pid":{},"bundle":"/"}}"#,
            t.pid
        ),
    )
    .unwrap();

    let only_net = by_inode(&c.ok(["ns", "ls", "--json", "--type", "net"]));
    assert!(only_net.values().all(|n| n["type"] == "net"));
    assert!(only_net.contains_key(&t.ns("net")));

    let of_pid = by_inode(&c.ok(["ns", "ls", "--json", "--pid", &t.pid.to_string()]));
    assert_eq!(of_pid.len(), 8, "one namespace of each type: {of_pid:?}");

    let of_ctr = by_inode(&c.ok(["ns", "ls", "--json", "--container", &id]));
    let mut kinds: Vec<&str> = of_ctr
        .values()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        ["net", "user", "uts"],
        "the container's own namespaces only"
    );
    assert!(of_ctr.values().all(|n| n["container"] == id.as_str()));
    let table = c.ok(["ns", "ls", "--type", "uts"]);
    assert!(
        table.starts_with("        NS TYPE"),
        "lsns-like header: {table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.contains(&t.ns("uts").to_string()) && l.ends_with(&id))
    );

    // Ownership: the new uts and net namespaces belong to the new user namespace, whose
    // parent is ours.
    let tree = by_inode(&c.ok(["ns", "ls", "--json", "--tree", "--pid", &t.pid.to_string()]));
    let userns = t.ns("user");
    assert_eq!(tree[&t.ns("uts")]["ons"], userns);
    assert_eq!(tree[&t.ns("net")]["ons"], userns);
    assert_eq!(
        tree[&userns]["pns"],
        ns_of(std::process::id() as i32, "user")
    );
    let drawn = c.ok(["ns", "ls", "--tree", "--pid", &t.pid.to_string()]);
    let user_line = drawn
        .lines()
        .position(|l| l.contains(&userns.to_string()))
        .expect("user ns drawn");
    let uts_line = drawn
        .lines()
        .position(|l| l.contains(&t.ns("uts").to_string()))
        .expect("uts drawn");
    assert!(
        uts_line > user_line,
        "owned namespace drawn under its owner:\n{drawn}"
    );
    assert!(
        drawn.lines().nth(uts_line).unwrap().contains('─'),
        "tree branch:\n{drawn}"
    );
}

fn view_script() -> &'static str {
    "hostname; cat /proc/self/mountinfo; ip -o link; tr '\\0' ' ' </proc/1/cmdline; echo"
}

#[test]
fn enter_gives_the_same_view_as_nsenter() {
    if !ready(&["unshare", "nsenter", "ip"]) {
        return;
    }
    let name = unique("h");
    let t = Target::start(
        &[
            "--uts",
            "--ipc",
            "--net",
            "--mount",
            "--pid",
            "--cgroup",
            "--mount-proc",
        ],
        &format!(
            "hostname {name}; ip link set lo up; mount -t tmpfs cella-test /mnt; exec sleep 1000"
        ),
    );
    let pid = t.pid.to_string();
    let ours = run_ok(Command::new(cella_bin()).args([
        "ns",
        "enter",
        "-t",
        &pid,
        "--all",
        "--",
        "sh",
        "-c",
        view_script(),
    ]));
    let theirs =
        run_ok(Command::new("nsenter").args(["-t", &pid, "-a", "--", "sh", "-c", view_script()]));
    assert_eq!(ours, theirs);
    assert!(ours.starts_with(&format!("{name}\n")));
    assert!(ours.contains("cella-test"), "target's mount table: {ours}");
    assert!(
        ours.contains("sleep 1000"),
        "pid 1 is the target's init: {ours}"
    );
    // Subsets: only uts.
    let host = run_ok(&mut Command::new("hostname"));
    let out = run_ok(Command::new(cella_bin()).args([
        "ns",
        "enter",
        "-t",
        &pid,
        "--uts",
        "--",
        "sh",
        "-c",
        "hostname; ip -o link | wc -l",
    ]));
    let all_links = run_ok(Command::new("sh").args(["-c", "ip -o link | wc -l"]));
    assert_eq!(
        out,
        format!("{name}\n{all_links}"),
        "only the uts namespace entered"
    );
    assert_ne!(host.trim(), name);
    // The command's status comes back, and 128+signal when it is killed.
    let st = cella(&["ns", "enter", "-t", &pid, "-p", "--", "sh", "-c", "exit 7"]);
    assert_eq!(st.status.code(), Some(7), "{}", show(&st));
    let st = cella(&[
        "ns",
        "enter",
        "-t",
        &pid,
        "-p",
        "--",
        "sh",
        "-c",
        "kill -9 $$",
    ]);
    assert_eq!(st.status.code(), Some(137), "{}", show(&st));
}

#[test]
fn enter_a_user_namespace_and_a_container_by_id() {
    if !ready(&["unshare", "nsenter"]) {
        return;
    }
    let name = unique("u");
    let t = Target::start(
        &["--user", "--map-root-user", "--uts", "--mount"],
        &format!("hostname {name}; cd /tmp; exec sleep 1000"),
    );
    let pid = t.pid.to_string();
    let script = "id -u; hostname; cat /proc/self/uid_map";
    let ours = run_ok(Command::new(cella_bin()).args([
        "ns", "enter", "-t", &pid, "-U", "-u", "-m", "--", "sh", "-c", script,
    ]));
    let theirs = run_ok(
        Command::new("nsenter").args(["-t", &pid, "-U", "-u", "-m", "--", "sh", "-c", script]),
    );
    assert_eq!(ours, theirs);
    assert!(ours.starts_with(&format!("0\n{name}\n")));
    // The target's cwd is the default working directory when the mount ns is entered.
    let pwd =
        run_ok(Command::new(cella_bin()).args(["ns", "enter", "-t", &pid, "-m", "--", "pwd"]));
    assert_eq!(pwd, "/tmp\n");
    let pwd = run_ok(Command::new(cella_bin()).args([
        "ns",
        "enter",
        "-t",
        &pid,
        "-m",
        "--wd=/etc",
        "--",
        "pwd",
    ]));
    assert_eq!(pwd, "/etc\n");

    let c = Cella::new();
    let id = unique("ctr");
    std::fs::create_dir_all(c.root.join(&id)).unwrap();
    std::fs::write(
        c.root.join(&id).join("state.json"),
        format!(
            r#"{{"ociVersion":"1.2.0","id":"{id}","status":"running","pid":{pid},"bundle":"/"}}"#
        ),
    )
    .unwrap();
    assert_eq!(
        c.ok(["ns", "enter", "-t", &id, "--", "hostname"]),
        format!("{name}\n")
    );
}

fn unshare_ok(args: &[&str]) -> String {
    run_ok(Command::new(cella_bin()).args(["ns", "unshare"]).args(args))
}

#[test]
fn unshare_maps_ids() {
    if !ready(&[]) {
        return;
    }
    assert_eq!(unshare_ok(&["--map-root-user", "--", "id", "-u"]), "0\n");
    let map = unshare_ok(&[
        "-r",
        "--",
        "cat",
        "/proc/self/uid_map",
        "/proc/self/setgroups",
    ]);
    let words: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(words, ["0", "0", "1", "deny"]);
    assert_eq!(
        unshare_ok(&[
            "--map-user=1234",
            "--map-group=99",
            "--",
            "sh",
            "-c",
            "id -u; id -g"
        ]),
        "1234\n99\n"
    );
}

#[test]
fn unshare_map_auto_uses_subordinate_ranges() {
    if !ready(&["unshare", "newuidmap", "newgidmap"]) {
        return;
    }
    // A private /etc/subuid and /etc/subgid, in a mount namespace of our own.
    let dir = BoundDir(scratch_root().join(unique("subid")));
    std::fs::create_dir_all(&dir.0).unwrap();
    std::fs::write(dir.0.join("subid"), "root:200000:65536\n").unwrap();
    let s = dir.0.join("subid").display().to_string();
    let script = format!(
        "mount --bind {s} /etc/subuid && mount --bind {s} /etc/subgid && exec {} ns unshare --map-auto -- cat /proc/self/uid_map /proc/self/gid_map",
        cella_bin().display()
    );
    let out = run_ok(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words, ["0", "200000", "65536", "0", "200000", "65536"]);
    // Without a range: a clear error.
    let empty = dir.0.join("empty");
    std::fs::write(&empty, "").unwrap();
    let script = format!(
        "mount --bind {e} /etc/subuid && exec {} ns unshare --map-auto -- true",
        cella_bin().display(),
        e = empty.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no subordinate id range for `root` in `/etc/subuid`"),
        "{}",
        show(&out)
    );
}

fn uptime(text: &str) -> f64 {
    text.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn unshare_time_offsets() {
    if !ready(&[]) {
        return;
    }
    let host = uptime(&std::fs::read_to_string("/proc/uptime").unwrap());
    let inner = uptime(&unshare_ok(&[
        "--boottime",
        "86400",
        "--fork",
        "--",
        "cat",
        "/proc/uptime",
    ]));
    assert!(
        (inner - host - 86400.0).abs() < 30.0,
        "host {host}, inside {inner}"
    );
    let offsets = unshare_ok(&[
        "--time",
        "--monotonic",
        "-500",
        "--boottime",
        "7",
        "-f",
        "--",
        "cat",
        "/proc/self/timens_offsets",
    ]);
    let words: Vec<&str> = offsets.split_whitespace().collect();
    assert_eq!(words, ["monotonic", "-500", "0", "boottime", "7", "0"]);
}

#[test]
fn unshare_fork_mount_proc_sees_only_the_new_tree() {
    if !ready(&["ps"]) {
        return;
    }
    let pids = unshare_ok(&[
        "--pid",
        "--fork",
        "--mount-proc",
        "--",
        "sh",
        "-c",
        "ls /proc | grep '^[0-9]*$'",
    ]);
    // sh is pid 1; ls (and grep) are its children, all in the new pid namespace.
    let pids: Vec<i32> = pids.lines().map(|l| l.parse().unwrap()).collect();
    assert!(
        pids.contains(&1) && pids.iter().all(|p| *p < 10),
        "only the new tree: {pids:?}"
    );
    let ps = unshare_ok(&[
        "-p",
        "-f",
        "--mount-proc",
        "--",
        "ps",
        "-e",
        "-o",
        "pid=,comm=",
    ]);
    let lines: Vec<&str> = ps.lines().map(str::trim).collect();
    assert_eq!(lines, ["1 ps"]);
    // Propagation private: the proc mount does not leak into our mount namespace.
    let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(
        ours.matches(" /proc ").count(),
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .matches(" /proc ")
            .count()
    );
    // Exit status and signals come back.
    let st = cella(&["ns", "unshare", "-f", "--", "sh", "-c", "exit 3"]);
    assert_eq!(st.status.code(), Some(3));
    let st = cella(&["ns", "unshare", "-f", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(st.status.code(), Some(137));
}

#[test]
fn unshare_root_wd_and_uts() {
    if !ready(&[]) || cella_tests::busybox().is_none() {
        cella_tests::skip_unless(false, "needs busybox-static");
        return;
    }
    let root = BoundDir(scratch_root().join(unique("rootfs")));
    cella_tests::make_busybox_rootfs(&root.0);
    let r = root.0.display().to_string();
    let out = unshare_ok(&[
        "--mount",
        "--uts",
        "--root",
        &r,
        "--wd",
        "/etc",
        "--",
        "/bin/sh",
        "-c",
        "hostname inside; hostname; pwd; ls /bin/busybox",
    ]);
    assert_eq!(out, "inside\n/etc\n/bin/busybox\n");
    assert_ne!(run_ok(&mut Command::new("hostname")), "inside\n");
}

#[test]
fn unshare_persist_survives_its_creator() {
    if !ready(&["nsenter"]) {
        return;
    }
    let dir = BoundDir(scratch_root().join(unique("persist")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let d = dir.0.display().to_string();
    unshare_ok(&["--uts", "--net", "--persist", &d, "--", "hostname", "kept"]);
    let out = run_ok(
        Command::new("nsenter")
            .arg(format!("--uts={d}/uts"))
            .arg("hostname"),
    );
    assert_eq!(out, "kept\n");
    let ls = by_inode(&stdout(&cella(&["ns", "ls", "--json"])));
    for kind in ["uts", "net"] {
        let ino = std::fs::metadata(dir.0.join(kind)).unwrap().ino();
        assert_eq!(ls[&ino]["nprocs"], 0, "{kind} held by its bind mount only");
        assert_eq!(ls[&ino]["type"], kind);
    }
    // A pid namespace is kept with its first process (needs --fork).
    let out = cella(&[
        "ns",
        "unshare",
        "--pid",
        "--persist",
        &format!("{d}/p"),
        "--",
        "true",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs --fork"),
        "{}",
        show(&out)
    );
    // A mount namespace on a shared mount is refused, and nothing is left behind.
    let script = format!(
        "mount -t tmpfs cella-persist /mnt && mount --make-shared /mnt && a=$(grep -c nsfs /proc/self/mountinfo); \
         {} ns unshare -u -m --persist /mnt -- true; echo rc=$?; ls /mnt; \
         [ \"$a\" = \"$(grep -c nsfs /proc/self/mountinfo)\" ] && echo no-mount-left",
        cella_bin().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "rc=1\nno-mount-left\n", "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("make the directory a private mount"),
        "{}",
        show(&out)
    );
    let single = dir.0.join("single");
    unshare_ok(&["--ipc", "--persist", single.to_str().unwrap(), "--", "true"]);
    let ino = std::fs::metadata(&single).unwrap().ino();
    assert_ne!(ino, ns_of(std::process::id() as i32, "ipc"));
}

#[test]
fn create_and_rm_named_namespaces() {
    if !ready(&["ip"]) {
        return;
    }
    let c = Cella::new();
    let name = unique("nsn");
    let guard = Named {
        cella: &c,
        name: name.clone(),
    };
    c.ok(["ns", "create", &name, "--net", "--uts", "--ipc", "--mount"]);
    let list = run_ok(Command::new("ip").args(["netns", "list"]));
    assert!(
        list.lines()
            .any(|l| l.split_whitespace().next() == Some(name.as_str())),
        "ip netns sees it: {list}"
    );
    let links = run_ok(Command::new("ip").args(["netns", "exec", &name, "ip", "-o", "link"]));
    assert_eq!(
        links.lines().count(),
        1,
        "a fresh netns has only lo: {links}"
    );
    for kind in ["uts", "ipc", "mnt"] {
        let p = c.root.join("ns").join(kind).join(&name);
        let ino = std::fs::metadata(&p).unwrap().ino();
        assert_ne!(
            ino,
            ns_of(std::process::id() as i32, kind),
            "{kind} is a new namespace"
        );
    }
    let out = c.output(["ns", "create", &name, "--net"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exists at `/run/netns/"),
        "{}",
        show(&out)
    );
    c.ok(["ns", "rm", &name]);
    let list = run_ok(Command::new("ip").args(["netns", "list"]));
    assert!(!list.contains(&name));
    assert!(!c.root.join("ns/uts").join(&name).exists());
    let out = c.output(["ns", "rm", &name]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no named namespace"),
        "{}",
        show(&out)
    );
    drop(guard);
}

#[test]
fn errors_say_what_is_wrong_and_what_to_do() {
    if !ready(&["setpriv", "unshare"]) {
        return;
    }
    let err = |out: Output| {
        assert!(!out.status.success(), "should fail: {}", show(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        err(cella(&["ns", "enter", "-t", "2147483", "--", "true"]))
            .contains("pid 2147483 has exited")
    );
    assert!(err(cella(&["ns", "ls", "--pid", "2147483"])).contains("pid 2147483 has exited"));
    let c = Cella::new();
    let e = err(c.output(["ns", "enter", "-t", "nosuch", "--", "true"]));
    assert!(e.contains("no container `nosuch`"), "{e}");
    let e = err(c.output(["ns", "ls", "--container", "nosuch"]));
    assert!(e.contains("no container `nosuch`"), "{e}");
    let e = err(cella(&["ns", "ls", "--type", "netw"]));
    assert!(e.contains("unknown namespace type \"netw\""), "{e}");
    let e = err(cella(&[
        "ns",
        "unshare",
        "--uts",
        "--net",
        "--persist",
        "/nonexistent-file-x",
        "--",
        "true",
    ]));
    assert!(e.contains("give an existing directory"), "{e}");
    let e = err(cella(&["ns", "create", "a/b", "--net"]));
    assert!(e.contains("invalid namespace name"), "{e}");
    let e = err(cella(&["ns", "unshare", "--uts", "--", "/nonexistent/cmd"]));
    assert!(e.contains("execute `/nonexistent/cmd`"), "{e}");

    // Unprivileged: joining needs privilege over the target; unsharing needs a user ns.
    let nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let bin = cella_bin().display().to_string();
    let t = Target::start(&["--uts"], "exec sleep 1000");
    let e = err(nobody(&[
        &bin,
        "ns",
        "enter",
        "-t",
        &t.pid.to_string(),
        "-u",
        "--",
        "true",
    ]));
    assert!(
        e.contains(&format!("run as root or as the owner of pid {}", t.pid)),
        "{e}"
    );
    let e = err(nobody(&[&bin, "ns", "unshare", "--uts", "--", "true"]));
    assert!(
        e.contains("needs CAP_SYS_ADMIN: run as root, or add --user --map-root-user"),
        "{e}"
    );
    // A target of nobody's in nobody's own user namespace: nobody may open its files, but
    // joining its uts namespace from outside needs --user, and joining its user namespace
    // from a sibling user namespace is refused.
    let t = Target::start(
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "unshare",
            "--user",
            "--map-root-user",
            "--uts",
        ],
        "exec sleep 1000",
    );
    let pid = t.pid.to_string();
    let e = err(nobody(&[
        &bin, "ns", "enter", "-t", &pid, "-u", "--", "true",
    ]));
    assert!(
        e.contains("needs CAP_SYS_ADMIN in the user namespace that owns it")
            && e.contains("add --user"),
        "{e}"
    );
    let ok = nobody(&[
        &bin, "ns", "enter", "-t", &pid, "-U", "-u", "--", "id", "-u",
    ]);
    assert_eq!(stdout(&ok), "0\n", "the owner may enter: {}", show(&ok));
}
