//! End-to-end tests of a bundle's bridge network: `cella run`/`create` of a busybox bundle
//! whose annotations name a network made with `cella net network create`.
//!
//! The "host" is a network namespace the test makes; cella runs in it (`nsenter --net`),
//! so the runtime's bridge, veths and nftables tables live there. The fake internet host
//! 198.51.100.20 is a namespace of its own. Traffic is made by threads of the test
//! process that join a container's network namespace (`/proc/PID/ns/net`) or one of the
//! test's; no packet leaves namespaces the test made. The [`Lab`] guard deletes the
//! containers (inside the host namespace), the namespaces and the state directories,
//! even when the test fails.

use cella_tests::{Bundle, cella_bin, require_root, require_tool, scratch_root, show, unique};
use serde_json::json;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(3);

struct Lab {
    host: String,
    netns: Vec<String>,
    base: PathBuf,
    root: PathBuf,
    containers: Vec<String>,
}

impl Lab {
    fn new() -> Lab {
        let host = unique("crh");
        ip(&["netns", "add", &host]);
        let base = scratch_root().join(unique("netrun"));
        fs::create_dir_all(&base).unwrap();
        let lab = Lab {
            host,
            netns: Vec::new(),
            root: base.join("root"),
            base,
            containers: Vec::new(),
        };
        lab.ok(&["net", "link", "set", "lo", "--up"]);
        lab
    }

    /// `cella ARGS` in the host namespace, with this lab's state root and net directories.
    fn cmd(&self, args: &[&str]) -> Command {
        // nsenter joins only the network namespace: `ip netns exec` would also remount
        // /sys for the namespace, hiding the cgroup hierarchies the runtime needs.
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.host))
            .arg(cella_bin())
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env("CELLA_NET_STATE_DIR", self.base.join("state"))
            .env("CELLA_NET_IPAM_DIR", self.base.join("ipam"))
            .env("CELLA_NET_NETWORK_DIR", self.base.join("networks"))
            .stdin(Stdio::null());
        c
    }

    fn cella(&self, args: &[&str]) -> Output {
        cella_tests::output_via_files(self.cmd(args))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cella(args);
        assert!(out.status.success(), "cella {args:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cella net ARGS` with the lab's directories as flags.
    fn net(&self, args: &[&str]) -> String {
        let dirs = [
            "--state-dir".to_string(),
            self.base.join("state").display().to_string(),
            "--ipam-dir".into(),
            self.base.join("ipam").display().to_string(),
            "--network-dir".into(),
            self.base.join("networks").display().to_string(),
        ];
        let mut a = vec!["net"];
        a.extend_from_slice(args);
        a.extend(dirs.iter().map(String::as_str));
        self.ok(&a)
    }

    fn netns(&mut self, prefix: &str) -> String {
        let n = unique(prefix);
        ip(&["netns", "add", &n]);
        self.netns.push(n.clone());
        n
    }

    /// [`internet`](Self::internet) with IPv6 too: the fake internet host is
    /// 2001:db8:100::20, the host 2001:db8:100::1.
    fn internet6(&mut self) -> String {
        let inet = self.internet();
        for (ns, addr, dev) in [
            (self.host.as_str(), "2001:db8:100::1/64", "up0"),
            (inet.as_str(), "2001:db8:100::20/64", "eth0"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev, "nodad"]);
        }
        inet
    }

    /// The fake internet host 198.51.100.20, linked to the host (198.51.100.1/24).
    fn internet(&mut self) -> String {
        let inet = self.netns("cri");
        let peer_ns = format!("/run/netns/{inet}");
        self.ok(&[
            "net",
            "link",
            "add",
            "up0",
            "--type",
            "veth",
            "--peer",
            "eth0",
            "--peer-ns",
            &peer_ns,
            "--up",
        ]);
        self.ok(&["net", "addr", "add", "198.51.100.1/24", "--dev", "up0"]);
        for a in [
            vec![
                "net",
                "addr",
                "add",
                "198.51.100.20/24",
                "--dev",
                "eth0",
                "--ns",
                &peer_ns,
            ],
            vec!["net", "link", "set", "eth0", "--up", "--ns", &peer_ns],
            vec!["net", "link", "set", "lo", "--up", "--ns", &peer_ns],
        ] {
            self.ok(&a);
        }
        inet
    }

    /// `cella run -d` of `bundle` as a new container; returns its id.
    fn run(&mut self, bundle: &Bundle) -> Result<String, Output> {
        let id = unique("nr");
        self.containers.push(id.clone());
        let out = self.cella(&[
            "run",
            "-d",
            "--bundle",
            &bundle.dir.display().to_string(),
            &id,
        ]);
        if out.status.success() {
            Ok(id)
        } else {
            Err(out)
        }
    }

    fn pid(&self, id: &str) -> i32 {
        let s: serde_json::Value = serde_json::from_str(&self.ok(&["state", id])).unwrap();
        s["pid"].as_i64().unwrap() as i32
    }

    /// The container's address, from its network record.
    fn addr(&self, id: &str) -> String {
        let rec: serde_json::Value =
            serde_json::from_slice(&fs::read(self.root.join(id).join("net.json")).unwrap())
                .unwrap();
        rec["ip"].as_str().unwrap().to_string()
    }

    /// What must be gone once every container is deleted: host links, nft ruleset, state
    /// files of the attachment and lease stores.
    fn leftovers(&self) -> String {
        let mut s = String::new();
        let links = Command::new("ip")
            .args(["-n", &self.host, "-o", "link", "show"])
            .output()
            .unwrap();
        for l in String::from_utf8_lossy(&links.stdout).lines() {
            let name = l.split(':').nth(1).unwrap_or("").trim();
            let name = name.split('@').next().unwrap_or("");
            if name != "lo" && name != "up0" {
                s += &format!("link {name}\n");
            }
        }
        let nft = Command::new("ip")
            .args(["netns", "exec", &self.host, "nft", "list", "ruleset"])
            .output()
            .unwrap();
        s += &String::from_utf8_lossy(&nft.stdout);
        s += &files(&self.base.join("state"));
        s += &files(&self.base.join("ipam"));
        if let Ok(rd) = fs::read_dir(&self.root) {
            for e in rd.flatten() {
                s += &format!("container state {}\n", e.path().display());
            }
        }
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Inside the host namespace, so the teardown touches only the lab's links and tables.
        for id in &self.containers {
            let _ = self.cella(&["delete", "--force", id]);
        }
        for n in self.netns.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host])
            .output();
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", show(&out));
}

/// Regular files under `dir` (the lock files left out), one line each.
fn files(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            out += &files(&p);
        } else if e.file_name() != ".lock" {
            out += &format!("file {}\n", p.display());
        }
    }
    out
}

/// Runs `f` on a thread that has joined the network namespace at `ns` (a path).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let file = File::open(ns).expect("open netns");
    std::thread::spawn(move || {
        // SAFETY: `file` is an open namespace file owned by this closure for the whole call;
        // setns changes only this thread's network namespace, and the thread ends after f.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

fn ctr_ns(pid: i32) -> String {
    format!("/proc/{pid}/ns/net")
}

fn named(ns: &str) -> String {
    format!("/run/netns/{ns}")
}

/// A TCP server in `ns` on `addr` answering one connection with "hello"; returns the
/// peer's address (None after 10 s without one).
fn serve_once(ns: &str, addr: &str) -> JoinHandle<Option<SocketAddr>> {
    let addr: SocketAddr = addr.parse().unwrap();
    let (tx, rx) = mpsc::channel();
    let h = in_ns(ns, move || {
        let l = TcpListener::bind(addr).expect("bind");
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok((mut s, peer)) = l.accept() {
                s.set_nonblocking(false).unwrap();
                s.write_all(b"hello").unwrap();
                return Some(peer);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    });
    rx.recv().expect("server bound");
    h
}

fn connect(ns: &str, to: &str) -> Result<String, String> {
    let to: SocketAddr = to.parse().unwrap();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, T).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(T)).unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
        Ok(buf)
    })
    .join()
    .unwrap()
}

fn ready() -> bool {
    require_root() && require_tool("ip") && require_tool("nft") && require_tool("nsenter")
}

/// A busybox bundle that sleeps, asking for `network` (and more annotations), with
/// sentinel /etc/hosts and /etc/resolv.conf in its rootfs.
fn bundle(network: &str, extra: &[(&str, &str)]) -> Bundle {
    let mut b = Bundle::new("netrun", &["sleep", "1000"]);
    let mut ann = serde_json::Map::new();
    ann.insert("org.cella.net.network".into(), json!(network));
    for (k, v) in extra {
        ann.insert((*k).into(), json!(v));
    }
    b.config["annotations"] = serde_json::Value::Object(ann);
    b.config["hostname"] = json!("web");
    fs::write(b.rootfs().join("etc/hosts"), "# rootfs hosts\n").unwrap();
    fs::write(b.rootfs().join("etc/resolv.conf"), "# rootfs resolv\n").unwrap();
    b.save();
    b
}

/// A unique /24 in 10.200-249.x.0 for one test's network.
fn subnet() -> (String, String) {
    let n = std::process::id() as usize * 7 + unique("s").len() * 13 + {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    };
    let (a, b) = (200 + n % 50, (n / 50) % 250);
    (format!("10.{a}.{b}.0/24"), format!("10.{a}.{b}."))
}

#[test]
fn run_with_a_network_talks_forwards_resolves_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let inet = lab.internet();
    let (sub, prefix) = subnet();
    let br = unique("crb");
    lab.net(&[
        "network",
        "create",
        "web",
        "--subnet",
        &sub,
        "--bridge",
        &br,
        "--masquerade",
    ]);
    let listed = lab.net(&["network", "list"]);
    assert!(listed.contains("\"web\""), "{listed}");

    let a = bundle(
        "web",
        &[
            ("org.cella.net.publish", "18080:8080"),
            ("org.cella.net.dns", "192.0.2.53, 192.0.2.54"),
        ],
    );
    let b = bundle("web", &[]);
    let ida = lab
        .run(&a)
        .unwrap_or_else(|o| panic!("run a: {}", show(&o)));
    let idb = lab
        .run(&b)
        .unwrap_or_else(|o| panic!("run b: {}", show(&o)));
    let (pa, pb) = (lab.pid(&ida), lab.pid(&idb));
    let (ipa, ipb) = (lab.addr(&ida), lab.addr(&idb));
    assert!(
        ipa.starts_with(&prefix) && ipb.starts_with(&prefix),
        "{ipa} {ipb}"
    );
    assert_ne!(ipa, ipb);

    // The files inside are the generated ones; the rootfs's are untouched.
    let resolv = fs::read_to_string(format!("/proc/{pa}/root/etc/resolv.conf")).unwrap();
    assert!(
        resolv.contains("nameserver 192.0.2.53\nnameserver 192.0.2.54"),
        "{resolv}"
    );
    let hosts = fs::read_to_string(format!("/proc/{pa}/root/etc/hosts")).unwrap();
    assert!(
        hosts.contains(&format!("{ipa}\tweb")) || hosts.contains(&format!("{ipa} web")),
        "{hosts}"
    );
    assert!(hosts.contains("localhost"), "{hosts}");
    assert_eq!(
        fs::read_to_string(a.rootfs().join("etc/hosts")).unwrap(),
        "# rootfs hosts\n"
    );
    assert_eq!(
        fs::read_to_string(a.rootfs().join("etc/resolv.conf")).unwrap(),
        "# rootfs resolv\n"
    );
    // Read-only inside.
    let w = Command::new("nsenter")
        .args([
            "-t",
            &pa.to_string(),
            "-m",
            "-p",
            "--",
            "/bin/sh",
            "-c",
            "echo x >> /etc/hosts",
        ])
        .output()
        .unwrap();
    assert!(
        !w.status.success(),
        "/etc/hosts is writable inside: {}",
        show(&w)
    );

    // B reaches A by TCP over the bridge.
    let srv = serve_once(&ctr_ns(pa), "0.0.0.0:8080");
    assert_eq!(
        connect(&ctr_ns(pb), &format!("{ipa}:8080")).as_deref(),
        Ok("hello")
    );
    assert_eq!(
        srv.join().unwrap().map(|p| p.ip().to_string()),
        Some(ipb.clone())
    );

    // The port forward: from the internet host to the host's address, into A.
    let srv = serve_once(&ctr_ns(pa), "0.0.0.0:8080");
    assert_eq!(
        connect(&named(&inet), "198.51.100.1:18080").as_deref(),
        Ok("hello")
    );
    assert!(srv.join().unwrap().is_some());

    // Masquerade: the internet host sees the host's address.
    let srv = serve_once(&named(&inet), "198.51.100.20:80");
    assert_eq!(
        connect(&ctr_ns(pb), "198.51.100.20:80").as_deref(),
        Ok("hello")
    );
    assert_eq!(
        srv.join().unwrap().map(|p| p.ip().to_string()).as_deref(),
        Some("198.51.100.1")
    );

    // A network in use cannot be removed.
    let out = lab.cella(&[
        "net",
        "network",
        "rm",
        "web",
        "--network-dir",
        &lab.base.join("networks").display().to_string(),
        "--state-dir",
        &lab.base.join("state").display().to_string(),
    ]);
    assert!(!out.status.success(), "{}", show(&out));

    lab.ok(&["delete", "--force", &ida]);
    lab.ok(&["delete", "--force", &idb]);
    assert_eq!(lab.leftovers(), "");
}

#[test]
fn bad_annotations_are_refused_naming_the_annotation_and_leave_nothing() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let (sub, _) = subnet();
    let br = unique("crb");
    lab.net(&[
        "network", "create", "web", "--subnet", &sub, "--bridge", &br,
    ]);

    let cases: Vec<(Bundle, &str, &str)> = vec![
        (
            bundle("nope", &[]),
            "annotations[\"org.cella.net.network\"]",
            "no network \"nope\"",
        ),
        (
            bundle("web", &[("org.cella.net.publish", "80")]),
            "annotations[\"org.cella.net.publish\"]",
            "invalid port forward",
        ),
        (
            bundle("web", &[("org.cella.net.publish", "8080:80,8080:81")]),
            "annotations[\"org.cella.net.publish\"]",
            "given twice",
        ),
        (
            bundle("web", &[("org.cella.net.dns", "not-an-ip")]),
            "annotations[\"org.cella.net.dns\"]",
            "not an IP address",
        ),
    ];
    for (b, field, what) in cases {
        let out = lab.run(&b).expect_err("must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field) && err.contains(what), "{}", show(&out));
        assert_eq!(lab.leftovers(), "");
    }
    // No network namespace of its own.
    let mut b = bundle("web", &[]);
    let ns: Vec<_> = b.config["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["type"] != "network")
        .cloned()
        .collect();
    b.config["linux"]["namespaces"] = json!(ns);
    b.save();
    let out = lab.run(&b).expect_err("must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs a new network namespace"),
        "{}",
        show(&out)
    );
    assert_eq!(lab.leftovers(), "");

    // A host port already forwarded by another container.
    let a = bundle("web", &[("org.cella.net.publish", "18081:80")]);
    let ida = lab.run(&a).unwrap_or_else(|o| panic!("{}", show(&o)));
    let before = lab.leftovers();
    let b = bundle("web", &[("org.cella.net.publish", "18082:80,18081:81/tcp")]);
    let out = lab.run(&b).expect_err("must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("annotations[\"org.cella.net.publish\"]")
            && err.contains("18081/tcp is already forwarded"),
        "{}",
        show(&out)
    );
    assert_eq!(lab.leftovers(), before);
    lab.ok(&["delete", "--force", &ida]);
    assert_eq!(lab.leftovers(), "");
}

#[test]
fn kill_9_mid_create_then_delete_force_leaves_nothing() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let (sub, _) = subnet();
    let br = unique("crb");
    lab.net(&[
        "network",
        "create",
        "web",
        "--subnet",
        &sub,
        "--bridge",
        &br,
        "--masquerade",
        "--anti-spoof",
    ]);
    let mut b = bundle("web", &[("org.cella.net.publish", "18083:80")]);
    // The createRuntime hook runs after the network is attached: it says so, then waits
    // until the test has killed the runtime.
    let flag = lab.base.join("in-hook");
    b.config["hooks"] = json!({"createRuntime": [{
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("touch {0}; while [ -e {0} ]; do sleep 0.05; done", flag.display())],
    }]});
    b.save();
    let id = unique("nr");
    lab.containers.push(id.clone());
    let mut child = lab
        .cmd(&["create", "--bundle", &b.dir.display().to_string(), &id])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !flag.exists() {
        assert!(Instant::now() < deadline, "the hook never ran");
        if let Ok(Some(st)) = child.try_wait() {
            panic!("create ended early: {st}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // nsenter execs cella: the child is the runtime.
    child.kill().unwrap();
    child.wait().unwrap();
    fs::remove_file(&flag).unwrap();
    let mid = lab.leftovers();
    // (The veth may be gone already: init dies with the runtime, and its namespace's
    // teardown takes the veth along. The rest stays until delete.)
    assert!(
        mid.contains("state/attachments/"),
        "attached mid-create: {mid}"
    );
    assert!(mid.contains("18083 : 80"), "{mid}");
    lab.ok(&["delete", "--force", &id]);
    assert_eq!(lab.leftovers(), "");
}

/// A unique ULA /64 for one test's dual-stack network, from the same counter as [`subnet`].
fn subnet6(v4: &str) -> String {
    let parts: Vec<&str> = v4.split('.').collect();
    format!("fd00:{}:{}::/64", parts[1], parts[2])
}

/// Runs busybox's ping in the network namespace `ns`; true when an answer came.
fn ping(ns: &str, to: &str) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={ns}"))
        .args(["busybox", "ping", "-c", "1", "-W", "2", to])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Receives UDP datagrams in `ns` on `addr` for two seconds; returns their payloads.
fn udp_sink(ns: &str, addr: &str) -> JoinHandle<Vec<String>> {
    let addr: SocketAddr = addr.parse().unwrap();
    let (tx, rx) = mpsc::channel();
    let h = in_ns(ns, move || {
        let s = std::net::UdpSocket::bind(addr).expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tx.send(()).unwrap();
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            if let Ok(n) = s.recv(&mut buf) {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        got
    });
    rx.recv().unwrap();
    h
}

/// Sends `msg` by UDP from `from` (an address of namespace `ns`) to `to`.
fn udp_send(ns: &str, from: &str, to: &str, msg: &'static str) {
    let from: SocketAddr = from.parse().unwrap();
    let to: SocketAddr = to.parse().unwrap();
    in_ns(ns, move || {
        let s = std::net::UdpSocket::bind(from).expect("bind source");
        for _ in 0..3 {
            let _ = s.send_to(msg.as_bytes(), to);
        }
    })
    .join()
    .unwrap();
}

/// Sends, from namespace `ns` out of `dev`, an unsolicited neighbour advertisement (with
/// the override flag) claiming that `target` is at `mac`: what a container does to steal
/// another's IPv6 traffic.
fn send_fake_na(ns: &str, dev: &str, target: &str, mac: &str) {
    let script = format!(
        r#"
import socket, struct, ipaddress
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"{dev}")
mac = bytes(int(x, 16) for x in "{mac}".split(":"))
na = struct.pack("!BBHI", 136, 0, 0, 0x20000000) + ipaddress.IPv6Address("{target}").packed + bytes([2, 1]) + mac
idx = socket.if_nametoindex("{dev}")
for _ in range(3):
    s.sendto(na, ("ff02::1", 0, 0, idx))
"#
    );
    let out = Command::new("nsenter")
        .arg(format!("--net={ns}"))
        .args(["python3", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "send NA: {}", show(&out));
}

/// The MAC the host's neighbour table holds for `ip` (in the lab's host namespace).
fn neigh_mac(host: &str, ip: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", host, "-6", "neigh", "show", ip])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

#[test]
fn dual_stack_run_v6_ping_tcp_nat_forward_and_spoofing() {
    if !(ready() && require_tool("python3") && require_tool("busybox")) {
        return;
    }
    let mut lab = Lab::new();
    let inet = lab.internet6();
    let host_ns = named(&lab.host);
    let (sub, _) = subnet();
    let sub6 = subnet6(&sub);
    let br = unique("crb");
    lab.net(&[
        "network",
        "create",
        "web6",
        "--subnet",
        &sub,
        "--subnet",
        &sub6,
        "--bridge",
        &br,
        "--masquerade",
        "--anti-spoof",
    ]);
    let a = bundle("web6", &[("org.cella.net.publish", "18090:8090")]);
    let b = bundle("web6", &[]);
    let ida = lab
        .run(&a)
        .unwrap_or_else(|o| panic!("run a: {}", show(&o)));
    let idb = lab
        .run(&b)
        .unwrap_or_else(|o| panic!("run b: {}", show(&o)));
    let (pa, pb) = (lab.pid(&ida), lab.pid(&idb));
    let rec = |id: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(lab.root.join(id).join("net.json")).unwrap()).unwrap()
    };
    let (ra, rb) = (rec(&ida), rec(&idb));
    let a6 = ra["ip6"].as_str().unwrap().to_string();
    let b6 = rb["ip6"].as_str().unwrap().to_string();
    // Compared as addresses: as text, fd00:246:0::/64 holds fd00:246::2.
    let net6: std::net::Ipv6Addr = sub6.trim_end_matches("/64").parse().unwrap();
    let addr6: std::net::Ipv6Addr = a6.parse().unwrap();
    assert_eq!(
        addr6.segments()[..4],
        net6.segments()[..4],
        "{a6} in {sub6}"
    );
    let hosts = fs::read_to_string(format!("/proc/{pa}/root/etc/hosts")).unwrap();
    assert!(hosts.contains(&format!("{a6}\tweb")), "{hosts}");

    // ping and TCP over IPv6 between the containers, and to the gateway.
    let gw6 = ra["gateway6"].as_str().unwrap().to_string();
    assert!(ping(&ctr_ns(pb), &a6), "ping {a6}");
    assert!(ping(&ctr_ns(pa), &gw6), "ping {gw6}");
    let srv = serve_once(&ctr_ns(pa), "[::]:8090");
    assert_eq!(
        connect(&ctr_ns(pb), &format!("[{a6}]:8090")).as_deref(),
        Ok("hello")
    );
    assert_eq!(
        srv.join().unwrap().map(|p| p.ip().to_string()),
        Some(b6.clone())
    );

    // NAT: the internet host sees the host's IPv6 address.
    let srv = serve_once(&named(&inet), "[2001:db8:100::20]:80");
    assert_eq!(
        connect(&ctr_ns(pb), "[2001:db8:100::20]:80").as_deref(),
        Ok("hello")
    );
    assert_eq!(
        srv.join().unwrap().map(|p| p.ip().to_string()).as_deref(),
        Some("2001:db8:100::1")
    );

    // The port forward over IPv6, from the internet host to the host's address.
    let srv = serve_once(&ctr_ns(pa), "[::]:8090");
    assert_eq!(
        connect(&named(&inet), "[2001:db8:100::1]:18090").as_deref(),
        Ok("hello")
    );
    assert_eq!(
        srv.join().unwrap().map(|p| p.ip().to_string()).as_deref(),
        Some("2001:db8:100::20")
    );

    // Spoofing: B takes A's IPv6 address as a second address; what it sends from there
    // is dropped at the bridge (without anti-spoofing it would be masqueraded and
    // arrive), while what it sends from its own address arrives.
    let nsb = ctr_ns(pb);
    let out = Command::new("nsenter")
        .arg(format!("--net={nsb}"))
        .args([
            "ip",
            "addr",
            "add",
            &format!("{a6}/128"),
            "dev",
            "eth0",
            "nodad",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let sink = udp_sink(&named(&inet), "[2001:db8:100::20]:5353");
    udp_send(
        &nsb,
        &format!("[{a6}]:0"),
        "[2001:db8:100::20]:5353",
        "spoofed",
    );
    udp_send(&nsb, &format!("[{b6}]:0"), "[2001:db8:100::20]:5353", "own");
    let got = sink.join().unwrap();
    assert!(got.iter().any(|m| m == "own"), "{got:?}");
    assert!(
        !got.iter().any(|m| m == "spoofed"),
        "a spoofed source got through: {got:?}"
    );

    // ND: the host knows A's MAC for A's address; B's advertisement claiming A's address
    // is dropped, so the host's entry keeps A's MAC.
    assert!(ping(&host_ns, &a6));
    let mac_a = neigh_mac(&lab.host, &a6);
    assert!(mac_a.starts_with("02:ce:"), "{mac_a}");
    let mac_b = {
        let o = Command::new("nsenter")
            .arg(format!("--net={nsb}"))
            .args(["ip", "-o", "link", "show", "eth0"])
            .output()
            .unwrap();
        let t = String::from_utf8_lossy(&o.stdout).into_owned();
        t.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_ne!(mac_a, mac_b);
    send_fake_na(&nsb, "eth0", &a6, &mac_b);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(neigh_mac(&lab.host, &a6), mac_a, "B's NA poisoned the host");

    lab.ok(&["delete", "--force", &ida]);
    lab.ok(&["delete", "--force", &idb]);
    assert_eq!(lab.leftovers(), "");
}

#[test]
fn ipv6_only_network_for_cella_run() {
    if !(ready() && require_tool("busybox")) {
        return;
    }
    let mut lab = Lab::new();
    let inet = lab.internet6();
    let (sub, _) = subnet();
    let sub6 = subnet6(&sub);
    let br = unique("crb");
    lab.net(&[
        "network",
        "create",
        "only6",
        "--subnet",
        &sub6,
        "--bridge",
        &br,
        "--masquerade",
        "--anti-spoof",
    ]);
    let a = bundle(
        "only6",
        &[
            ("org.cella.net.publish", "18095:8095"),
            ("org.cella.net.dns", "2001:db8:100::53"),
        ],
    );
    let b = bundle("only6", &[]);
    let ida = lab
        .run(&a)
        .unwrap_or_else(|o| panic!("run a: {}", show(&o)));
    let idb = lab
        .run(&b)
        .unwrap_or_else(|o| panic!("run b: {}", show(&o)));
    let (pa, pb) = (lab.pid(&ida), lab.pid(&idb));
    let rec: serde_json::Value =
        serde_json::from_slice(&fs::read(lab.root.join(&ida).join("net.json")).unwrap()).unwrap();
    assert!(rec["ip"].is_null(), "{rec}");
    let a6 = rec["ip6"].as_str().unwrap().to_string();
    let hosts = fs::read_to_string(format!("/proc/{pa}/root/etc/hosts")).unwrap();
    assert!(hosts.contains(&format!("{a6}\tweb")), "{hosts}");
    let resolv = fs::read_to_string(format!("/proc/{pa}/root/etc/resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 2001:db8:100::53"), "{resolv}");

    let srv = serve_once(&ctr_ns(pa), "[::]:8095");
    assert_eq!(
        connect(&ctr_ns(pb), &format!("[{a6}]:8095")).as_deref(),
        Ok("hello")
    );
    assert!(srv.join().unwrap().is_some());
    let srv = serve_once(&ctr_ns(pa), "[::]:8095");
    assert_eq!(
        connect(&named(&inet), "[2001:db8:100::1]:18095").as_deref(),
        Ok("hello")
    );
    assert!(srv.join().unwrap().is_some());
    let srv = serve_once(&named(&inet), "[2001:db8:100::20]:80");
    assert_eq!(
        connect(&ctr_ns(pb), "[2001:db8:100::20]:80").as_deref(),
        Ok("hello")
    );
    assert_eq!(
        srv.join().unwrap().map(|p| p.ip().to_string()).as_deref(),
        Some("2001:db8:100::1")
    );
    // No IPv4 at all: the host made no IPv4 NAT table.
    let nft = Command::new("ip")
        .args(["netns", "exec", &lab.host, "nft", "list", "tables"])
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&nft.stdout).into_owned();
    assert!(
        tables.contains("table ip6 cella") && !tables.contains("table ip cella"),
        "{tables}"
    );

    lab.ok(&["delete", "--force", &ida]);
    lab.ok(&["delete", "--force", &idb]);
    assert_eq!(lab.leftovers(), "");
}

#[test]
fn foreground_run_sees_its_network_from_inside_and_cleans_up() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let (sub, prefix) = subnet();
    let br = unique("crb");
    lab.net(&["network", "create", "fg", "--subnet", &sub, "--bridge", &br]);
    let mut b = bundle("fg", &[("org.cella.net.dns", "192.0.2.53")]);
    b.config["process"]["args"] = json!([
        "sh",
        "-c",
        "cat /etc/resolv.conf; ip -o -4 addr show eth0; ip route; echo x >> /etc/hosts || echo read-only"
    ]);
    b.save();
    let id = unique("nr");
    lab.containers.push(id.clone());
    let out = lab.cella(&["run", "--bundle", &b.dir.display().to_string(), &id]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("nameserver 192.0.2.53"), "{text}");
    assert!(text.contains(&format!("inet {prefix}2/24")), "{text}");
    assert!(
        text.contains(&format!("default via {prefix}1 dev eth0")),
        "{text}"
    );
    assert!(text.contains("read-only"), "{text}");
    // run deleted the container, and with it its network.
    assert_eq!(lab.leftovers(), "");
}

#[test]
fn runtime_killed_at_any_point_of_create_leaves_nothing_after_delete_force() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let (sub, _) = subnet();
    let sub6 = subnet6(&sub);
    let br = unique("crb");
    lab.net(&[
        "network",
        "create",
        "kill",
        "--subnet",
        &sub,
        "--subnet",
        &sub6,
        "--bridge",
        &br,
        "--masquerade",
        "--anti-spoof",
    ]);
    let b = bundle("kill", &[("org.cella.net.publish", "18097:80")]);
    // SIGKILL after a growing delay: before the state exists, while the lease and the
    // files are made, while the veth and the nft elements are, and after create ended.
    let mut reached = Vec::new();
    for delay_ms in (0..=300).step_by(10) {
        let id = unique("nr");
        lab.containers.push(id.clone());
        let mut child = lab
            .cmd(&["create", "--bundle", &b.dir.display().to_string(), &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        let mut mid = lab.leftovers();
        mid += &fs::read_to_string(lab.root.join(&id).join("net.json")).unwrap_or_default();
        reached.push((delay_ms, status.success(), mid.lines().count()));
        let _ = lab.cella(&["delete", "--force", &id]);
        assert_eq!(
            lab.leftovers(),
            "",
            "killed after {delay_ms} ms; before delete: {mid}"
        );
    }
    // The kills landed at different points (some with resources made, at least one
    // before or after everything).
    assert!(
        reached.iter().any(|(_, _, n)| *n > 0),
        "no kill left anything to clean: {reached:?}"
    );
}

#[test]
fn sandbox_on_a_bridge_network_reaches_the_internet_through_nat_and_leaves_nothing() {
    if !ready() || !require_tool("python3") {
        return;
    }
    let mut lab = Lab::new();
    let inet = lab.internet();
    let (sub, prefix) = subnet();
    let br = unique("sbr");
    lab.net(&[
        "network",
        "create",
        "grader",
        "--subnet",
        &sub,
        "--bridge",
        &br,
        "--masquerade",
        "--anti-spoof",
    ]);
    let before = lab.leftovers();
    let server = serve_once(&named(&inet), "198.51.100.20:8080");
    let script = "import socket\n\
                  print(open('/etc/resolv.conf').read().count('nameserver') > 0)\n\
                  s = socket.create_connection(('198.51.100.20', 8080), 3)\n\
                  print(s.recv(16).decode())\n\
                  print(s.getsockname()[0])\n";
    let out = lab.cella(&[
        "sandbox",
        "--net",
        "grader",
        "--wall-time",
        "20",
        "--result",
        "-",
        "--",
        "/usr/bin/python3",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"True"), "{text}");
    assert_eq!(lines.get(1), Some(&"hello"), "{text}");
    assert!(
        lines.get(2).is_some_and(|a| a.starts_with(&prefix)),
        "{text}"
    );
    // Masquerade: the server saw the host's address, not the sandbox's.
    let peer = server.join().unwrap().expect("the sandbox connected");
    assert_eq!(peer.ip().to_string(), "198.51.100.1");
    // The lease, the veth and the nft elements are gone with the run.
    assert_eq!(lab.leftovers(), before);
    // An unknown network is refused before anything runs, naming the option.
    let out = lab.cella(&["sandbox", "--net", "nosuch", "--", "true"]);
    assert!(!out.status.success());
    assert!(show(&out).contains("--net"), "{}", show(&out));
    assert_eq!(lab.leftovers(), before);
}
