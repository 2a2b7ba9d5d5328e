//! Rootless containers: the real binary run by an unprivileged user.
//!
//! Each test makes its own throwaway user (`useradd`, which on Debian also delegates
//! it a range in /etc/subuid and /etc/subgid; one is added with `usermod` when not) and
//! removes it, with its subordinate ranges, on drop (`userdel`). The user runs cella
//! through `setpriv --reuid --regid --init-groups` with `XDG_RUNTIME_DIR` set to a
//! directory it owns, so its state lives under `$XDG_RUNTIME_DIR/cella`. Bundles are
//! the harness's (root-owned, world-readable busybox rootfs) with the config that
//! `cella spec --rootless`, run as that user, writes.
//!
//! Needs root (to make the user), setpriv, useradd/usermod/userdel and newuidmap/
//! newgidmap (package uidmap).

use cella_tests::*;
use serde_json::{Value, json};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Serialises useradd/userdel of this process (the tools lock /etc/passwd and give up
/// after a while; other processes are handled by their retries).
static USERS: Mutex<()> = Mutex::new(());

fn ready() -> bool {
    require_root()
        && require_tool("setpriv")
        && require_tool("useradd")
        && require_tool("usermod")
        && require_tool("userdel")
        && require_tool("newuidmap")
        && require_tool("newgidmap")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first subordinate range of `name` in `file`.
fn sub_range(file: &str, name: &str) -> Option<(u32, u32)> {
    fs::read_to_string(file).ok()?.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() == 3 && f[0] == name).then(|| Some((f[1].parse().ok()?, f[2].parse().ok()?)))?
    })
}

/// A throwaway unprivileged user with subordinate ids and a runtime dir of its own;
/// removed, with every container it still has, on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    /// (first, count) in /etc/subuid and /etc/subgid.
    subuid: (u32, u32),
    subgid: (u32, u32),
    /// Its $XDG_RUNTIME_DIR (mode 700, owned by it, under /tmp).
    xdg: PathBuf,
}

impl TestUser {
    fn new() -> TestUser {
        let name = format!("cellarl{}", unique("").replace('-', "x"));
        let lock = USERS.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = None;
        for _ in 0..10 {
            let out = Command::new("useradd")
                .args(["-M", "-s", "/usr/sbin/nologin", &name])
                .output()
                .unwrap();
            if out.status.success() {
                last = None;
                break;
            }
            last = Some(show(&out));
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            last.is_none(),
            "useradd {name}: {}",
            last.unwrap_or_default()
        );
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            stdout(&out).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let mut user = TestUser {
            name,
            uid,
            gid,
            subuid: (0, 0),
            subgid: (0, 0),
            // Short: Podman's conmon times out on socket paths near the 108-byte limit.
            xdg: std::env::temp_dir().join(unique("cella-rl")),
        };
        // useradd delegates ranges when login.defs asks it to; otherwise add one past
        // every range in use.
        if sub_range("/etc/subuid", &user.name).is_none()
            || sub_range("/etc/subgid", &user.name).is_none()
        {
            let end = ["/etc/subuid", "/etc/subgid"]
                .iter()
                .flat_map(|f| {
                    fs::read_to_string(f)
                        .unwrap_or_default()
                        .lines()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    Some(f.get(1)?.parse::<u64>().ok()? + f.get(2)?.parse::<u64>().ok()?)
                })
                .max()
                .unwrap_or(100_000)
                .max(100_000);
            let range = format!("{end}-{}", end + 65_535);
            let out = Command::new("usermod")
                .args(["--add-subuids", &range, "--add-subgids", &range, &user.name])
                .output()
                .unwrap();
            assert!(out.status.success(), "usermod: {}", show(&out));
        }
        drop(lock);
        user.subuid = sub_range("/etc/subuid", &user.name).expect("subuid range");
        user.subgid = sub_range("/etc/subgid", &user.name).expect("subgid range");
        fs::create_dir_all(&user.xdg).unwrap();
        std::os::unix::fs::chown(&user.xdg, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&user.xdg, fs::Permissions::from_mode(0o700)).unwrap();
        user
    }

    /// `program` run as this user, with its XDG_RUNTIME_DIR.
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--init-groups")
            .arg("--")
            .arg(program)
            .env("XDG_RUNTIME_DIR", &self.xdg)
            .current_dir("/")
            .stdin(Stdio::null());
        c
    }

    /// `cella <args>` run as this user, with its XDG_RUNTIME_DIR.
    fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.command(cella_bin());
        c.args(args);
        c
    }

    /// `cella run [-d] --bundle <b> <id>` as this user.
    fn run(&self, b: &Bundle, id: &str, detach: bool) -> Output {
        let mut args = vec![OsStr::new("run")];
        if detach {
            args.push(OsStr::new("-d"));
        }
        args.extend([OsStr::new("--bundle"), b.dir.as_os_str(), OsStr::new(id)]);
        self.output(args)
    }

    fn output<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        output_via_files(self.cmd(args))
    }

    fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let out = self.output(args);
        assert!(out.status.success(), "cella as user failed: {}", show(&out));
        stdout(&out)
    }

    /// The state root cella must use for this user.
    fn state_root(&self) -> PathBuf {
        self.xdg.join("cella")
    }

    /// What is left in the state root (nothing, once every container is deleted).
    fn leftovers(&self) -> Vec<String> {
        fs::read_dir(self.state_root())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A busybox bundle whose config is what `cella spec --rootless` writes for this
    /// user, running `args` without a terminal.
    fn bundle(&self, name: &str, args: &[&str]) -> Bundle {
        let mut b = Bundle::new(name, args);
        let dir = self.xdg.join(unique("spec"));
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(self.uid), Some(self.gid)).unwrap();
        self.ok([
            OsStr::new("spec"),
            OsStr::new("--rootless"),
            OsStr::new("--bundle"),
            dir.as_os_str(),
        ]);
        let mut config: Value =
            serde_json::from_str(&fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = json!(args);
        b.config = config;
        b.save();
        b
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        for id in self.leftovers() {
            let _ = self.output(["delete", "--force", &id]);
        }
        let _ = fs::remove_dir_all(&self.xdg);
        let _lock = USERS.lock().unwrap_or_else(|e| e.into_inner());
        // userdel also removes the user's /etc/subuid and /etc/subgid entries.
        for _ in 0..10 {
            let out = Command::new("userdel").arg(&self.name).output();
            if out.is_ok_and(|o| o.status.success()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // A range added with usermod when useradd gave none goes with the user too;
        // make sure of it.
        for f in ["/etc/subuid", "/etc/subgid"] {
            if sub_range(f, &self.name).is_some() {
                let _ = Command::new("usermod")
                    .args([
                        "--del-subuids",
                        "0-4294967294",
                        "--del-subgids",
                        "0-4294967294",
                        &self.name,
                    ])
                    .output();
            }
        }
    }
}

/// The 64-bit capability mask of capability numbers.
fn cap_mask(caps: &[u32]) -> u64 {
    caps.iter().fold(0, |m, c| m | 1 << c)
}

/// The host uid of `pid` (real uid, from /proc/<pid>/status).
fn host_uid(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

fn state_of(user: &TestUser, id: &str) -> Value {
    serde_json::from_str(&user.ok(["state", id])).unwrap()
}

/// Waits until `cella state` says `status` (init exits asynchronously after a kill).
fn wait_status(user: &TestUser, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while state_of(user, id)["status"] != status {
        assert!(Instant::now() < deadline, "{id} never became {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn rootless_spec_runs_as_the_user_mapped_to_root() {
    if !ready() {
        return;
    }
    let user = TestUser::new();
    let script = "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; id -u; id -g; id; \
                  hostname; echo written > /tmp/f && cat /tmp/f; echo x > /dev/null && echo null-ok; \
                  head -c 4 /dev/zero | wc -c; grep CapEff /proc/self/status";
    let mut b = user.bundle("rl-basic", &["sh", "-c", script]);
    // A tmpfs for the write (the root is read-only), and a capability set of our own.
    b.config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}));
    let caps = json!([
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_SETUID",
        "CAP_NET_BIND_SERVICE"
    ]);
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set] = caps.clone();
    }
    b.save();
    let id = unique("c");
    let out = user.run(&b, &id, false);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (u, g) = (user.uid.to_string(), user.gid.to_string());
    assert_eq!(lines[0], ["0", u.as_str(), "1"], "uid_map: {text}");
    assert_eq!(lines[1], ["0", g.as_str(), "1"], "gid_map: {text}");
    // An unprivileged writer must deny setgroups before writing a gid map.
    assert_eq!(lines[2], ["deny"], "{text}");
    assert_eq!(lines[3], ["0"], "{text}");
    assert_eq!(lines[4], ["0"], "{text}");
    assert!(lines[5][0].starts_with("uid=0(root)"), "{text}");
    assert_eq!(lines[6], ["cella"], "hostname: {text}");
    assert_eq!(lines[7], ["written"], "{text}");
    assert_eq!(lines[8], ["null-ok"], "{text}");
    assert_eq!(lines[9], ["4"], "{text}");
    // CAP_CHOWN 0, CAP_KILL 5, CAP_SETUID 7, CAP_NET_BIND_SERVICE 10.
    assert_eq!(
        lines[10],
        ["CapEff:", &format!("{:016x}", cap_mask(&[0, 5, 7, 10]))],
        "{text}"
    );
    // The cgroup hierarchy is not delegated to the user: one warning, and it runs.
    let err = stderr(&out);
    assert_eq!(err.matches("warning").count(), 1, "{err}");
    assert!(
        err.contains(
            "running without a cgroup: the cgroup hierarchy is not delegated to this user"
        ) && err.contains("no resource limits were requested"),
        "{err}"
    );
    // `run` deleted the container: nothing is left in the user's state root.
    assert!(
        user.state_root().is_dir(),
        "state root under XDG_RUNTIME_DIR"
    );
    assert_eq!(user.leftovers(), Vec::<String>::new());
}

#[test]
fn lifecycle_commands_work_on_the_users_own_containers() {
    if !ready() {
        return;
    }
    let user = TestUser::new();
    let b = user.bundle("rl-life", &["sleep", "1000"]);
    let id = unique("c");
    let out = user.run(&b, &id, true);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(
        stderr(&out).matches("running without a cgroup").count(),
        1,
        "{}",
        show(&out)
    );
    let st = state_of(&user, &id);
    assert_eq!(st["status"], "running");
    let pid = st["pid"].as_u64().unwrap() as u32;
    // From the host: the container's init runs as the user, state lives in its runtime dir.
    assert_eq!(host_uid(pid), user.uid);
    let dir = user.state_root().join(&id);
    assert_eq!(fs::metadata(&dir).unwrap().uid(), user.uid);
    assert!(dir.join("state.json").is_file());
    assert!(!Path::new("/run/cella").join(&id).exists());
    let list = user.ok(["list"]);
    assert!(list.contains(&id) && list.contains(&user.name), "{list}");
    let ps = user.ok(["ps", "--format", "json", &id]);
    assert_eq!(ps.trim(), format!("[{pid}]"), "{ps}");
    let out = user.output(["exec", &id, "sh", "-c", "id -u; cat /proc/self/uid_map"]);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    assert!(text.starts_with("0\n"), "{text}");
    assert!(text.contains(&format!(" {} ", user.uid)), "{text}");
    // exec's exit status comes back.
    let out = user.output(["exec", &id, "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    user.ok(["kill", &id, "KILL"]);
    wait_status(&user, &id, "stopped");
    user.ok(["delete", &id]);
    assert!(!dir.exists());
    assert_eq!(user.leftovers(), Vec::<String>::new());
    // Gone, or a zombie left for pid 1 to reap (detached init was reparented to it).
    let state = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        state.is_empty()
            || state
                .lines()
                .any(|l| l.starts_with("State:") && l.contains('Z')),
        "{state}"
    );
}

#[test]
fn subordinate_ids_are_mapped_through_newuidmap() {
    if !ready() {
        return;
    }
    let user = TestUser::new();
    let mut b = user.bundle(
        "rl-subid",
        &["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; id -u; id -G; exec sleep 1000"],
    );
    let (su, sg) = (user.subuid, user.subgid);
    b.config["linux"]["uidMappings"] = json!([
        {"containerID": 0, "hostID": user.uid, "size": 1},
        {"containerID": 1, "hostID": su.0, "size": su.1},
    ]);
    b.config["linux"]["gidMappings"] = json!([
        {"containerID": 0, "hostID": user.gid, "size": 1},
        {"containerID": 1, "hostID": sg.0, "size": sg.1},
    ]);
    // The process runs as a subordinate id, with an extra group (setgroups is allowed
    // in a namespace whose gid map newgidmap wrote).
    b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [1001]});
    b.config["process"]["cwd"] = json!("/");
    b.save();
    let id = unique("c");
    let out = user.run(&b, &id, true);
    assert!(out.status.success(), "{}", show(&out));
    let pid = state_of(&user, &id)["pid"].as_u64().unwrap() as u32;
    // From the host: inside uid 1000 is subordinate id first + 999.
    assert_eq!(host_uid(pid), su.0 + 999);
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        // The script's output went to the file run -d's stdout pointed at; read the
        // maps from the host instead, which is what newuidmap wrote.
        let maps = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
        if !maps.is_empty() || Instant::now() > deadline {
            break maps;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines: Vec<Vec<&str>> = log
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (u, s0, s1) = (user.uid.to_string(), su.0.to_string(), su.1.to_string());
    assert_eq!(
        lines,
        vec![
            vec!["0", u.as_str(), "1"],
            vec!["1", s0.as_str(), s1.as_str()]
        ],
        "{log}"
    );
    let gid_map = fs::read_to_string(format!("/proc/{pid}/gid_map")).unwrap();
    assert_eq!(gid_map.lines().count(), 2, "{gid_map}");
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/setgroups"))
            .unwrap()
            .trim(),
        "allow"
    );
    let groups = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let groups = groups
        .lines()
        .find(|l| l.starts_with("Groups:"))
        .unwrap()
        .to_owned();
    assert!(groups.contains(&(sg.0 + 1000).to_string()), "{groups}");
    let out = user.output(["exec", &id, "id", "-u"]);
    assert_eq!(stdout(&out).trim(), "1000", "{}", show(&out));
    user.ok(["delete", "--force", &id]);
    assert_eq!(user.leftovers(), Vec::<String>::new());
}

#[test]
fn a_mapping_outside_subuid_is_refused_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let user = TestUser::new();
    let mut b = user.bundle("rl-badmap", &["true"]);
    // Host uid 1 is nobody's subordinate id.
    b.config["linux"]["uidMappings"] = json!([
        {"containerID": 0, "hostID": user.uid, "size": 1},
        {"containerID": 1, "hostID": 1, "size": 10},
    ]);
    b.save();
    let id = unique("c");
    let out = user.output([
        OsStr::new("create"),
        OsStr::new("--bundle"),
        b.dir.as_os_str(),
        OsStr::new(&id),
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("config.json: linux.uidMappings[1]: host uids 1-10 are not yours to map")
            && err.contains("/etc/subuid")
            && err.contains(&user.name),
        "{err}"
    );
    assert!(!user.state_root().join(&id).exists());
    assert_eq!(user.leftovers(), Vec::<String>::new());
    // A gid range of someone else's: named in linux.gidMappings.
    b.config["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": user.uid, "size": 1}]);
    b.config["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 1}]);
    b.save();
    let out = user.run(&b, &id, false);
    assert!(
        stderr(&out).contains("linux.gidMappings[0]: host gids 0-0 are not yours to map"),
        "{}",
        show(&out)
    );
    assert_eq!(user.leftovers(), Vec::<String>::new());
}

#[test]
fn a_config_without_a_user_namespace_is_refused() {
    if !ready() {
        return;
    }
    let user = TestUser::new();
    // runc's default (root) config: new namespaces but no user namespace.
    let b = Bundle::new("rl-nouserns", &["true"]);
    let id = unique("c");
    let out = user.run(&b, &id, false);
    assert!(!out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("config.json: linux.namespaces: an unprivileged user can create namespaces only inside a user namespace")
            && err.contains("cella spec --rootless"),
        "{err}"
    );
    assert_eq!(user.leftovers(), Vec::<String>::new());
}

#[test]
fn rootless_false_makes_a_missing_cgroup_an_error() {
    if !ready() {
        return;
    }
    let user = TestUser::new();
    let mut b = user.bundle("rl-strict", &["true"]);
    b.config["linux"]["resources"] = json!({"pids": {"limit": 10}});
    b.save();
    let id = unique("c");
    // runc's `--rootless false`: cgroup permission errors are not ignored.
    let out = user.output([
        OsStr::new("--rootless=false"),
        OsStr::new("run"),
        OsStr::new("--bundle"),
        b.dir.as_os_str(),
        OsStr::new(&id),
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cgroup: create `") && err.contains("Permission denied"),
        "{err}"
    );
    assert_eq!(user.leftovers(), Vec::<String>::new());
    // Auto (the default) runs it, naming the limit it could not apply.
    let out = user.run(&b, &id, false);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains("linux.resources.pids not applied"),
        "{}",
        show(&out)
    );
    assert_eq!(user.leftovers(), Vec::<String>::new());
}

#[test]
fn without_xdg_runtime_dir_the_error_says_to_pass_root() {
    if !ready() {
        return;
    }
    let user = TestUser::new();
    let mut c = user.cmd(["list"]);
    c.env_remove("XDG_RUNTIME_DIR");
    let out = output_via_files(c);
    assert!(!out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("$XDG_RUNTIME_DIR is not set") && err.contains("--root"),
        "{err}"
    );
    // With --root it works without it.
    let root = user.xdg.join("explicit");
    let mut c = user.cmd([OsStr::new("--root"), root.as_os_str(), OsStr::new("list")]);
    c.env_remove("XDG_RUNTIME_DIR");
    let out = output_via_files(c);
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn sysfs_and_mqueue_without_their_namespaces() {
    if !ready() {
        return;
    }
    let user = TestUser::new();
    // No network namespace: sysfs cannot be mounted, the host's /sys is bound
    // read-only, all the way down.
    let mut b = user.bundle("rl-sys", &["cat", "/proc/self/mountinfo"]);
    let ns: Vec<Value> = b.config["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "network")
        .cloned()
        .collect();
    b.config["linux"]["namespaces"] = json!(ns);
    for m in b.config["mounts"].as_array_mut().unwrap() {
        if m["destination"] == "/sys" {
            *m = json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]});
        }
    }
    b.save();
    let id = unique("c");
    let out = user.run(&b, &id, false);
    assert!(out.status.success(), "{}", show(&out));
    let info = stdout(&out);
    let sys: Vec<&str> = info
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|mp| mp == "/sys" || mp.starts_with("/sys/"))
        })
        .collect();
    assert!(
        sys.len() > 1,
        "the host's mounts under /sys come along: {info}"
    );
    for l in &sys {
        let opts = l.split(' ').nth(5).unwrap();
        assert!(opts.split(',').any(|o| o == "ro"), "not read-only: {l}");
    }

    // No ipc namespace: mqueue cannot be mounted; the host's /dev/mqueue is bound when
    // it has one, else the error says what to add.
    let mut b = user.bundle(
        "rl-mq",
        &["sh", "-c", "grep ' /dev/mqueue ' /proc/self/mountinfo"],
    );
    let ns: Vec<Value> = b.config["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "ipc")
        .cloned()
        .collect();
    b.config["linux"]["namespaces"] = json!(ns);
    b.save();
    let host_mqueue = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/dev/mqueue") && l.contains(" - mqueue "));
    let id = unique("c");
    let out = user.run(&b, &id, false);
    if host_mqueue {
        assert!(out.status.success(), "{}", show(&out));
        assert!(stdout(&out).contains(" - mqueue "), "{}", show(&out));
    } else {
        assert!(!out.status.success(), "{}", show(&out));
        let err = stderr(&out);
        assert!(
            err.contains(
                "mqueue cannot be mounted in a user namespace sharing the host's ipc namespace"
            ) && err.contains(r#"add {"type": "ipc"} to linux.namespaces"#),
            "{err}"
        );
    }
    assert_eq!(user.leftovers(), Vec::<String>::new());
}

/// A cgroup subtree delegated to a user in every hierarchy (chowned to it), removed on
/// drop. The processes started through [`Delegated::wrap`] begin inside it, as a user
/// session of a delegating init system would.
struct Delegated {
    dirs: Vec<PathBuf>,
    name: String,
}

impl Delegated {
    fn new(user: &TestUser) -> Delegated {
        let name = unique("cellarl-deleg");
        let mut dirs = Vec::new();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        for l in info.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            let fstype = l.split(" - ").nth(1).and_then(|r| r.split(' ').next());
            if !matches!(fstype, Some("cgroup" | "cgroup2")) || !f[4].starts_with("/sys/fs/cgroup")
            {
                continue;
            }
            let dir = Path::new(f[4]).join(&name);
            fs::create_dir(&dir).unwrap();
            dirs.push(dir.clone());
            // New cpuset levels start empty and refuse tasks.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = fs::read_to_string(Path::new(f[4]).join(file)) {
                    fs::write(dir.join(file), v.trim()).unwrap();
                }
            }
            std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
            for e in fs::read_dir(&dir).unwrap().flatten() {
                std::os::unix::fs::chown(e.path(), Some(user.uid), Some(user.gid)).unwrap();
            }
        }
        Delegated { dirs, name }
    }

    /// `cmd` started inside the delegated cgroups: a root shell joins them, then execs it.
    fn wrap(&self, cmd: &Command) -> Command {
        let mut script = String::new();
        for d in &self.dirs {
            script.push_str(&format!("echo $$ > '{}/cgroup.procs' && ", d.display()));
        }
        script.push_str("exec \"$@\"");
        let mut c = Command::new("sh");
        c.args(["-c", &script, "sh"])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c.current_dir("/").stdin(Stdio::null());
        c
    }
}

impl Drop for Delegated {
    fn drop(&mut self) {
        for d in &self.dirs {
            // Children first (cella removes its own; a failed test may leave one).
            if let Ok(entries) = fs::read_dir(d) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        let _ = fs::remove_dir(e.path());
                    }
                }
            }
            let _ = fs::remove_dir(d);
        }
    }
}

#[test]
fn a_delegated_cgroup_gets_the_limits() {
    if !ready() {
        return;
    }
    let user = TestUser::new();
    let deleg = Delegated::new(&user);
    let mut b = user.bundle("rl-cg", &["sleep", "1000"]);
    b.config["linux"]["cgroupsPath"] = json!(format!("/{}/c", deleg.name));
    b.config["linux"]["resources"] =
        json!({"pids": {"limit": 20}, "memory": {"limit": 67_108_864}});
    b.save();
    let id = unique("c");
    let run = user.cmd([
        OsStr::new("run"),
        OsStr::new("-d"),
        OsStr::new("--bundle"),
        b.dir.as_os_str(),
        OsStr::new(&id),
    ]);
    let out = output_via_files(deleg.wrap(&run));
    assert!(out.status.success(), "{}", show(&out));
    assert!(!stderr(&out).contains("warning"), "{}", show(&out));
    let pid = state_of(&user, &id)["pid"].as_u64().unwrap();
    let pids_dir = deleg
        .dirs
        .iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/pids"));
    if let Some(d) = pids_dir {
        assert_eq!(
            fs::read_to_string(d.join("c/pids.max")).unwrap().trim(),
            "20"
        );
        let procs = fs::read_to_string(d.join("c/cgroup.procs")).unwrap();
        assert!(procs.lines().any(|p| p == pid.to_string()), "{procs}");
    }
    let memory = deleg
        .dirs
        .iter()
        .find(|d| d.starts_with("/sys/fs/cgroup/memory"))
        .map(|d| d.join("c/memory.limit_in_bytes"))
        .or_else(|| deleg.dirs.first().map(|d| d.join("c/memory.max")));
    if let Some(f) = memory.as_ref().filter(|f| f.exists()) {
        assert_eq!(fs::read_to_string(f).unwrap().trim(), "67108864");
    }
    assert!(
        pids_dir.is_some() || memory.is_some(),
        "no pids or memory hierarchy here"
    );
    user.ok(["delete", "--force", &id]);
    for d in &deleg.dirs {
        assert!(
            !d.join("c").exists(),
            "{} left behind",
            d.join("c").display()
        );
    }
    assert_eq!(user.leftovers(), Vec::<String>::new());
}

/// Rootless Podman, with its storage and runtime dirs in the user's XDG_RUNTIME_DIR,
/// running a busybox image imported from the harness's rootfs. Its pause process (which
/// holds Podman's user namespace) is killed by pid at the end.
struct RootlessPodman<'a> {
    user: &'a TestUser,
    home: PathBuf,
}

impl<'a> RootlessPodman<'a> {
    fn new(user: &'a TestUser) -> RootlessPodman<'a> {
        let home = user.xdg.join("home");
        fs::create_dir_all(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(user.uid), Some(user.gid)).unwrap();
        RootlessPodman { user, home }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.user.command("podman");
        c.env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .arg("--runtime")
            .arg(cella_bin())
            .args(args);
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        output_via_files(self.cmd(args))
    }
}

impl Drop for RootlessPodman<'_> {
    fn drop(&mut self) {
        let _ = self.output(&["rm", "--all", "--force", "--time", "0"]);
        let pause = self.user.xdg.join("libpod/tmp/pause.pid");
        if let Some(pid) = fs::read_to_string(pause)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|p| *p > 1)
        {
            // SAFETY: kill(2) on a pid this test's Podman started; no memory involved.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn rootless_podman_runs_cella_with_and_without_keep_id() {
    if !ready() || !require_tool("podman") {
        return;
    }
    let user = TestUser::new();
    let podman = RootlessPodman::new(&user);
    // The image: the harness's busybox rootfs, imported (no registry here).
    let b = Bundle::new("rl-podman", &["true"]);
    let tar = user.xdg.join("rootfs.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(b.rootfs())
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    std::os::unix::fs::chown(&tar, Some(user.uid), Some(user.gid)).unwrap();
    let image = unique("cella-rl").to_lowercase();
    let out = podman.output(&["import", tar.to_str().unwrap(), &image]);
    assert!(out.status.success(), "podman import: {}", show(&out));

    // Podman's own user namespace maps the user to root and its subordinate ids after;
    // cella runs in it as root of a user namespace and binds the device nodes.
    let script = "id -u; cat /proc/self/uid_map; echo x > /dev/null && echo null-ok";
    let out = podman.output(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (u, s0) = (user.uid.to_string(), user.subuid.0.to_string());
    assert_eq!(lines[0], ["0"], "{text}");
    assert_eq!(lines[1], ["0", u.as_str(), "1"], "{text}");
    assert_eq!(lines[2][..2], ["1", s0.as_str()], "{text}");
    assert!(text.contains("null-ok"), "{text}");

    // --userns=keep-id: a user namespace of the container's own, in which the user keeps
    // its uid (mapped to Podman's 0, the user outside).
    let out = podman.output(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--userns=keep-id",
        &image,
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().next(), Some(u.as_str()), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [u.as_str(), "0", "1"]),
        "{text}"
    );

    // Exit codes come through, and exec into a detached container works.
    let out = podman.output(&[
        "run",
        "--rm",
        "--network",
        "none",
        &image,
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let name = unique("rl-pd");
    let out = podman.output(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        &image,
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let out = podman.output(&["exec", &name, "sh", "-c", "echo exec-ok"]);
    assert_eq!(stdout(&out).trim(), "exec-ok", "{}", show(&out));
    let out = podman.output(&["rm", "--force", "--time", "0", &name]);
    assert!(out.status.success(), "{}", show(&out));
}
