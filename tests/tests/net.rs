//! End-to-end tests of `cella net`, through the real binary.
//!
//! Every test first makes its own "host": a fresh network namespace (`ip netns add`) in
//! which the binary runs (`ip netns exec HOST cella ...`). Bridges, NAT tables and the fake
//! internet host 198.51.100.20 all live in namespaces the test made; the [`Lab`] guard
//! deletes them, and its state directories, at the end, even when the test fails. No
//! packet leaves those namespaces.
//!
//! Traffic is made by threads of the test process that join one of those namespaces with
//! setns(2) and then end, so no tool beyond iproute2 and nft is needed.

use cella_tests::{cella_bin, require_root, require_tool, scratch_root, show, unique};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The namespaces and directories of one test, removed on drop.
struct Lab {
    host: String,
    netns: Vec<String>,
    state: PathBuf,
    ipam: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let host = unique("cnh");
        ip(&["netns", "add", &host]);
        let base = scratch_root().join(unique("net"));
        let lab = Lab {
            host,
            netns: Vec::new(),
            state: base.join("state"),
            ipam: base.join("ipam"),
        };
        // The host's loopback is needed for forwards used through 127.0.0.1.
        lab.ok(&["net", "link", "set", "lo", "--up"]);
        lab
    }

    /// `cella ARGS` run inside the host namespace. nsenter joins only the network
    /// namespace (unlike `ip netns exec`, which also makes a mount namespace, where a
    /// namespace named by `net ns add` would be bound out of everyone else's sight).
    fn cella(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg(cella_bin())
            .args(args)
            .output()
            .expect("spawn ip netns exec cella")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cella(args);
        assert!(
            out.status.success(),
            "cella {args:?} failed: {}",
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A new named namespace made with `cella net ns add`, removed with the lab.
    fn netns(&mut self, prefix: &str) -> String {
        let name = unique(prefix);
        self.ok(&["net", "ns", "add", &name]);
        self.netns.push(name.clone());
        name
    }

    fn dirs(&self) -> [String; 4] {
        [
            "--state-dir".into(),
            self.state.display().to_string(),
            "--ipam-dir".into(),
            self.ipam.display().to_string(),
        ]
    }

    /// `cella net attach` with this lab's state directories.
    fn attach(&self, args: &[&str]) -> Output {
        let dirs = self.dirs();
        let mut a = vec!["net", "attach"];
        a.extend_from_slice(args);
        a.extend(dirs.iter().map(String::as_str));
        self.cella(&a)
    }

    fn detach(&self, ns: &str) -> Output {
        let dirs = self.dirs();
        let mut a = vec!["net", "detach", "--netns", ns];
        a.extend(dirs.iter().map(String::as_str));
        self.cella(&a)
    }

    /// A fake internet host at 198.51.100.20, linked to the host (198.51.100.1/24).
    fn internet(&mut self) -> String {
        let inet = self.netns("cni");
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
            &inet,
            "--up",
        ]);
        self.ok(&["net", "addr", "add", "198.51.100.1/24", "--dev", "up0"]);
        self.ok(&[
            "net",
            "addr",
            "add",
            "198.51.100.20/24",
            "--dev",
            "eth0",
            "--ns",
            &inet,
        ]);
        self.ok(&["net", "link", "set", "eth0", "--up", "--ns", &inet]);
        self.ok(&["net", "link", "set", "lo", "--up", "--ns", &inet]);
        inet
    }

    /// What a failed request must leave unchanged: host links, nft ruleset, state files.
    fn snapshot(&self, containers: &[&str]) -> String {
        let mut s = self.ok(&["net", "link", "list"]);
        s += &self.ok(&["net", "addr", "list"]);
        let nft = Command::new("ip")
            .args(["netns", "exec", &self.host, "nft", "list", "ruleset"])
            .output()
            .unwrap();
        s += &String::from_utf8_lossy(&nft.stdout);
        for c in containers {
            s += &self.ok(&["net", "link", "list", "--ns", c]);
        }
        s += &tree(&self.state);
        s += &tree(&self.ipam);
        s
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in self.netns.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host])
            .output();
        if let Some(base) = self.state.parent() {
            let _ = fs::remove_dir_all(base);
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", show(&out));
}

/// Every file under `dir` with its content.
fn tree(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            out += &tree(&p);
        } else if e.file_name() != ".lock" {
            out += &format!(
                "{} = {}\n",
                p.display(),
                fs::read_to_string(&p).unwrap_or_default()
            );
        }
    }
    out
}

/// Runs `f` on a new thread that has joined network namespace `ns` (a /run/netns name).
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let file = File::open(Path::new("/run/netns").join(ns)).expect("open netns");
    std::thread::spawn(move || {
        // SAFETY: `file` is an open namespace file owned by this closure for the whole call;
        // setns changes only this thread's network namespace, and the thread ends after f.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// A TCP server in `ns` on `addr` that answers one connection with "hello" and returns the
/// peer's address (or None after 10 s without one).
fn serve_once(ns: &str, addr: &str) -> JoinHandle<Option<SocketAddr>> {
    let addr: SocketAddr = addr.parse().unwrap();
    let (tx, rx) = mpsc::channel();
    let h = in_ns(ns, move || {
        let l = TcpListener::bind(addr).expect("bind");
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).unwrap();
                    s.write_all(b"hello").unwrap();
                    return Some(peer);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        None
    });
    rx.recv().expect("server bound");
    h
}

/// Connects from `ns` to `to` and returns what the server said, or the error.
fn connect(ns: &str, to: &str, timeout: Duration) -> Result<String, String> {
    let to: SocketAddr = to.parse().unwrap();
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, timeout).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(timeout)).unwrap();
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

const T: Duration = Duration::from_secs(3);

#[test]
fn named_netns_add_list_exec_del() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let ns = lab.netns("cnx");
    assert!(Path::new("/run/netns").join(&ns).exists());
    assert!(lab.ok(&["net", "ns", "list"]).lines().any(|l| l == ns));
    // iproute2 sees it too, and exec runs inside it: only a loopback there.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "ip", "-o", "link"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("lo:"));
    let out = lab.ok(&["net", "ns", "exec", &ns, "--", "cat", "/proc/net/dev"]);
    assert!(out.contains("lo:") && out.lines().count() == 3, "{out}");
    let out = lab.cella(&["net", "ns", "add", &ns]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already exists")
    );
    lab.ok(&["net", "ns", "del", &ns]);
    assert!(!Path::new("/run/netns").join(&ns).exists());
    let out = lab.cella(&["net", "ns", "exec", &ns, "--", "true"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        show(&out)
    );
}

#[test]
fn two_containers_on_a_bridge_talk_tcp() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let c1 = lab.netns("cna");
    let c2 = lab.netns("cnb");
    for c in [&c1, &c2] {
        lab.attach(&["--netns", c, "--bridge", "br0", "--subnet", "10.88.0.0/24"]);
    }
    let s = lab.ok(&["net", "addr", "list", "--ns", &c1]);
    assert!(s.contains("eth0: 10.88.0.2/24"), "{s}");
    let s = lab.ok(&["net", "addr", "list", "--ns", &c2]);
    assert!(s.contains("eth0: 10.88.0.3/24"), "{s}");
    let server = serve_once(&c1, "10.88.0.2:7000");
    assert_eq!(connect(&c2, "10.88.0.2:7000", T).unwrap(), "hello");
    assert_eq!(
        server.join().unwrap().unwrap().ip().to_string(),
        "10.88.0.3"
    );
    // Loopback isolation: a server on 127.0.0.1 in c1 is not reachable from c2.
    let _lo = serve_once(&c1, "127.0.0.1:7001");
    assert!(connect(&c2, "10.88.0.2:7001", T).is_err());
    for c in [&c1, &c2] {
        let out = lab.detach(c);
        assert!(out.status.success(), "{}", show(&out));
    }
    // Teardown removed the veths, the bridge cella made, the leases and the tables.
    let links = lab.ok(&["net", "link", "list"]);
    assert_eq!(links.lines().count(), 1, "{links}"); // lo, and nothing of ours
    assert_eq!(tree(&lab.ipam), "");
    assert!(!lab.snapshot(&[]).contains("table"), "nft tables left");
}

#[test]
fn masquerade_reaches_the_internet_with_the_hosts_address() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let inet = lab.internet();
    let c = lab.netns("cnm");
    let out = lab.attach(&[
        "--netns",
        &c,
        "--bridge",
        "br0",
        "--subnet",
        "10.88.0.0/16",
        "--masquerade",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let server = serve_once(&inet, "198.51.100.20:80");
    assert_eq!(connect(&c, "198.51.100.20:80", T).unwrap(), "hello");
    let peer = server.join().unwrap().expect("server saw a connection");
    assert_eq!(
        peer.ip().to_string(),
        "198.51.100.1",
        "the server sees the host, not 10.88.x"
    );
    assert!(lab.detach(&c).status.success());
    // Without masquerade the internet host has no way back: no connection.
    let out = lab.attach(&["--netns", &c, "--bridge", "br0", "--subnet", "10.88.0.0/16"]);
    assert!(out.status.success(), "{}", show(&out));
    let _server = serve_once(&inet, "198.51.100.20:81");
    assert!(connect(&c, "198.51.100.20:81", Duration::from_millis(800)).is_err());
    assert!(lab.detach(&c).status.success());
}

#[test]
fn port_forward_reaches_the_container_from_outside_and_from_the_host() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let inet = lab.internet();
    let c = lab.netns("cnp");
    let out = lab.attach(&[
        "--netns",
        &c,
        "--bridge",
        "br0",
        "--subnet",
        "10.88.0.0/24",
        "--publish",
        "8080:80/tcp",
        "--publish",
        "5353:53/udp",
        "--masquerade",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    // From the internet host to the host's address.
    let s = serve_once(&c, "10.88.0.2:80");
    assert_eq!(connect(&inet, "198.51.100.1:8080", T).unwrap(), "hello");
    assert_eq!(s.join().unwrap().unwrap().ip().to_string(), "198.51.100.20");
    // From the host itself, to its own address and to 127.0.0.1.
    for to in ["198.51.100.1:8080", "127.0.0.1:8080"] {
        let s = serve_once(&c, "10.88.0.2:80");
        assert_eq!(
            connect(&lab.host.clone(), to, T).unwrap(),
            "hello",
            "via {to}"
        );
        assert!(s.join().unwrap().is_some());
    }
    // UDP: one datagram through the forward, answered.
    let srv = in_ns(&c, || {
        let u = std::net::UdpSocket::bind("10.88.0.2:53").unwrap();
        u.set_read_timeout(Some(T)).unwrap();
        let mut b = [0u8; 16];
        let (n, from) = u.recv_from(&mut b).ok()?;
        u.send_to(&b[..n], from).ok()?;
        Some(n)
    });
    std::thread::sleep(Duration::from_millis(100));
    let got = in_ns(&inet, || {
        let u = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(T)).unwrap();
        u.send_to(b"ping", "198.51.100.1:5353").unwrap();
        let mut b = [0u8; 16];
        u.recv(&mut b).ok().map(|n| b[..n].to_vec())
    })
    .join()
    .unwrap();
    assert_eq!(got.as_deref(), Some(&b"ping"[..]));
    assert_eq!(srv.join().unwrap(), Some(4));
    // Hairpin: the container itself, and a neighbour on the bridge, through the host's
    // address; the server sees the gateway (masqueraded), so its answer goes back through
    // the host's connection tracking.
    let n = lab.netns("cnp");
    let out = lab.attach(&[
        "--netns",
        &n,
        "--bridge",
        "br0",
        "--subnet",
        "10.88.0.0/24",
        "--masquerade",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    for client in [&c, &n] {
        let s = serve_once(&c, "10.88.0.2:80");
        assert_eq!(
            connect(client, "198.51.100.1:8080", T).unwrap(),
            "hello",
            "hairpin from {client}"
        );
        assert_eq!(s.join().unwrap().unwrap().ip().to_string(), "10.88.0.1");
    }
    assert!(lab.detach(&n).status.success());
    assert!(lab.detach(&c).status.success());
    assert!(connect(&inet, "198.51.100.1:8080", Duration::from_millis(500)).is_err());
}

#[test]
fn containers_with_different_gateways_get_different_first_hops() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let inet = lab.internet();
    let c1 = lab.netns("cng");
    let c2 = lab.netns("cng");
    assert!(
        lab.attach(&[
            "--netns",
            &c1,
            "--bridge",
            "br1",
            "--subnet",
            "10.91.0.0/24",
            "--masquerade"
        ])
        .status
        .success()
    );
    assert!(
        lab.attach(&[
            "--netns",
            &c2,
            "--bridge",
            "br2",
            "--subnet",
            "10.92.0.0/24",
            "--masquerade"
        ])
        .status
        .success()
    );
    let r1 = lab.ok(&["net", "route", "get", &c1, "198.51.100.20"]);
    let r2 = lab.ok(&["net", "route", "get", &c2, "198.51.100.20"]);
    assert!(r1.contains("via 10.91.0.1 dev eth0"), "{r1}");
    assert!(r2.contains("via 10.92.0.1 dev eth0"), "{r2}");
    // And the path really works from both.
    for c in [&c1, &c2] {
        let s = serve_once(&inet, "198.51.100.20:80");
        assert_eq!(connect(c, "198.51.100.20:80", T).unwrap(), "hello");
        assert!(s.join().unwrap().is_some());
    }
    // Policy routing in c1: marked traffic and traffic to 203.0.113.0/24 use table 100,
    // whose default route is blackholed by pointing at an on-link neighbour we name.
    lab.ok(&[
        "net",
        "route",
        "add",
        "default",
        "--via",
        "10.91.0.9",
        "--dev",
        "eth0",
        "--table",
        "100",
        "--ns",
        &c1,
    ]);
    lab.ok(&[
        "net", "rule", "add", "--fwmark", "0x1", "--table", "100", "--pref", "100", "--ns", &c1,
    ]);
    lab.ok(&[
        "net",
        "rule",
        "add",
        "--to",
        "203.0.113.0/24",
        "--table",
        "100",
        "--pref",
        "101",
        "--ns",
        &c1,
    ]);
    let rules = lab.ok(&["net", "rule", "show", "--ns", &c1]);
    assert!(
        rules.contains("pref 100 from all fwmark 0x1 lookup 100"),
        "{rules}"
    );
    assert!(
        rules.contains("pref 101 from all to 203.0.113.0/24 lookup 100"),
        "{rules}"
    );
    let marked = lab.ok(&["net", "route", "get", &c1, "198.51.100.20", "--mark", "1"]);
    assert!(
        marked.contains("via 10.91.0.9") && marked.contains("table 100"),
        "{marked}"
    );
    let to = lab.ok(&["net", "route", "get", &c1, "203.0.113.5"]);
    assert!(to.contains("via 10.91.0.9"), "{to}");
    let t100 = lab.ok(&["net", "route", "show", "--table", "100", "--ns", &c1]);
    assert_eq!(t100.trim(), "default via 10.91.0.9 dev eth0 table 100");
    lab.ok(&[
        "net", "rule", "del", "--fwmark", "0x1", "--table", "100", "--pref", "100", "--ns", &c1,
    ]);
    lab.ok(&[
        "net",
        "route",
        "del",
        "default",
        "--via",
        "10.91.0.9",
        "--table",
        "100",
        "--ns",
        &c1,
    ]);
    let plain = lab.ok(&["net", "route", "get", &c1, "198.51.100.20", "--mark", "1"]);
    assert!(plain.contains("via 10.91.0.1"), "{plain}");
    for c in [&c1, &c2] {
        assert!(lab.detach(c).status.success());
    }
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let c1 = lab.netns("cnv");
    let c2 = lab.netns("cnv");
    let out = lab.attach(&[
        "--netns",
        &c1,
        "--bridge",
        "br0",
        "--subnet",
        "10.88.0.0/16",
        "--publish",
        "8080:80",
        "--masquerade",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    lab.ok(&["net", "link", "add", "dummy0", "--type", "bridge"]);
    lab.ok(&["net", "addr", "add", "10.99.1.1/24", "--dev", "dummy0"]);
    let before = lab.snapshot(&[&c1, &c2]);
    let missing = unique("cn-missing");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "--netns",
                &c2,
                "--bridge",
                "br1",
                "--subnet",
                "10.88.5.0/24",
            ],
            "overlaps subnet 10.88.0.0/16",
        ),
        (
            vec![
                "--netns",
                &c2,
                "--bridge",
                "br1",
                "--subnet",
                "10.99.0.0/16",
            ],
            "overlaps address 10.99.1.1/24",
        ),
        (
            vec![
                "--netns",
                &c2,
                "--bridge",
                "br0",
                "--subnet",
                "10.88.0.0/33",
            ],
            "invalid CIDR",
        ),
        (
            vec![
                "--netns",
                &c2,
                "--bridge",
                "br0",
                "--subnet",
                "10.88.0.7/16",
            ],
            "host bits",
        ),
        (
            vec![
                "--netns",
                &c2,
                "--bridge",
                "br0",
                "--subnet",
                "10.88.0.0/16",
                "--publish",
                "8080:81",
            ],
            "already forwarded",
        ),
        (
            vec![
                "--netns",
                &c2,
                "--bridge",
                "br0",
                "--subnet",
                "10.88.0.0/16",
                "--publish",
                "99999:1",
            ],
            "invalid port forward",
        ),
        (
            vec![
                "--netns",
                &missing,
                "--bridge",
                "br0",
                "--subnet",
                "10.88.0.0/16",
            ],
            "does not exist",
        ),
        (
            vec![
                "--netns",
                &c1,
                "--bridge",
                "br0",
                "--subnet",
                "10.88.0.0/16",
            ],
            "exists already",
        ),
        (
            vec![
                "--netns",
                &c2,
                "--id",
                &c1,
                "--bridge",
                "br0",
                "--subnet",
                "10.88.0.0/16",
            ],
            "exists already",
        ),
        (
            vec![
                "--netns",
                &c2,
                "--bridge",
                "dummy0x-too-long-name",
                "--subnet",
                "10.77.0.0/16",
            ],
            "1-15 characters",
        ),
    ];
    for (args, want) in &cases {
        let out = lab.attach(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: expected {want:?} in: {err}");
        assert_eq!(
            lab.snapshot(&[&c1, &c2]),
            before,
            "{args:?} left something behind"
        );
    }
    assert!(lab.detach(&c1).status.success());
    let out = lab.detach(&c1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such attachment"));
}

#[test]
fn detach_after_a_crash_mid_attach_removes_what_exists() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let c = lab.netns("cnc");
    let clean = lab.snapshot(&[]);
    let out = lab.attach(&[
        "--netns",
        &c,
        "--bridge",
        "br0",
        "--subnet",
        "10.88.0.0/24",
        "--publish",
        "8080:80",
        "--masquerade",
        "--anti-spoof",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    // Pretend attach died before finishing: the record says incomplete, and part of what
    // it made is already gone.
    let rec = lab.state.join("attachments").join(format!("{c}.json"));
    let text = fs::read_to_string(&rec)
        .unwrap()
        .replace("\"complete\": true", "\"complete\": false");
    fs::write(&rec, text).unwrap();
    let nft = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.host,
            "nft",
            "delete",
            "element",
            "ip",
            "cella",
            "masq",
            "{ 10.88.0.2 }",
        ])
        .output()
        .unwrap();
    assert!(nft.status.success(), "{}", show(&nft));
    let out = lab.detach(&c);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(lab.snapshot(&[]), clean);
    let inside = lab.ok(&["net", "link", "list", "--ns", &c]);
    assert_eq!(inside.lines().count(), 1, "{inside}");
}

#[test]
fn anti_spoofing_drops_a_container_that_copies_anothers_mac_and_ip() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.netns("cns");
    let b = lab.netns("cns");
    for c in [&a, &b] {
        let out = lab.attach(&[
            "--netns",
            c,
            "--bridge",
            "br0",
            "--subnet",
            "10.88.0.0/24",
            "--anti-spoof",
        ]);
        assert!(out.status.success(), "{}", show(&out));
    }
    let host = lab.host.clone();
    // Before: b reaches the host's gateway address.
    let s = serve_once(&host, "10.88.0.1:9000");
    assert_eq!(connect(&b, "10.88.0.1:9000", T).unwrap(), "hello");
    assert!(s.join().unwrap().is_some());
    // b takes a's MAC and address.
    lab.ok(&["net", "link", "set", "eth0", "--down", "--ns", &b]);
    lab.ok(&[
        "net",
        "link",
        "set",
        "eth0",
        "--mac",
        "02:ce:0a:58:00:02",
        "--ns",
        &b,
    ]);
    lab.ok(&[
        "net",
        "addr",
        "del",
        "10.88.0.3/24",
        "--dev",
        "eth0",
        "--ns",
        &b,
    ]);
    lab.ok(&[
        "net",
        "addr",
        "add",
        "10.88.0.2/24",
        "--dev",
        "eth0",
        "--ns",
        &b,
    ]);
    lab.ok(&["net", "link", "set", "eth0", "--up", "--ns", &b]);
    let _s = serve_once(&host, "10.88.0.1:9001");
    assert!(
        connect(&b, "10.88.0.1:9001", Duration::from_millis(1500)).is_err(),
        "spoofed frames passed"
    );
    // a keeps working.
    let s = serve_once(&host, "10.88.0.1:9002");
    assert_eq!(connect(&a, "10.88.0.1:9002", T).unwrap(), "hello");
    assert_eq!(s.join().unwrap().unwrap().ip().to_string(), "10.88.0.2");
    for c in [&a, &b] {
        assert!(lab.detach(c).status.success());
    }
}

#[test]
fn concurrent_attaches_get_distinct_addresses_and_all_detach() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let names: Vec<String> = (0..8).map(|_| lab.netns("cnq")).collect();
    let dirs = lab.dirs();
    let spawn = |args: Vec<String>| {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.host))
            .arg(cella_bin())
            .args(args)
            .spawn()
            .expect("spawn cella")
    };
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            let mut a: Vec<String> = [
                "net",
                "attach",
                "--netns",
                n,
                "--bridge",
                "br0",
                "--subnet",
                "10.88.0.0/24",
                "--masquerade",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(dirs.iter().cloned());
            spawn(a)
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let mut ips: Vec<String> = names
        .iter()
        .map(|n| {
            let a = lab.ok(&["net", "addr", "list", "--ns", n]);
            a.lines()
                .find(|l| l.starts_with("eth0: 10."))
                .expect("eth0 address")
                .to_string()
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 8, "{ips:?}");
    let macs: std::collections::HashSet<String> = names
        .iter()
        .map(|n| {
            lab.ok(&["net", "link", "list", "--ns", n])
                .lines()
                .find(|l| l.contains("eth0"))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(macs.len(), 8);
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            let mut a: Vec<String> = ["net", "detach", "--netns", n]
                .iter()
                .map(|s| s.to_string())
                .collect();
            a.extend(dirs.iter().cloned());
            spawn(a)
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(tree(&lab.ipam), "");
    assert_eq!(tree(&lab.state), "");
    assert_eq!(lab.ok(&["net", "link", "list"]).lines().count(), 1);
}

#[test]
fn links_veth_bridge_mtu_master_move_and_delete() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.netns("cnl");
    let b = lab.netns("cnl");
    // A veth whose peer is born inside `a`, and a bridge to enslave the host end to.
    lab.ok(&["net", "link", "add", "br9", "--type", "bridge", "--up"]);
    lab.ok(&[
        "net",
        "link",
        "add",
        "vh",
        "--type",
        "veth",
        "--peer",
        "vc",
        "--peer-ns",
        &a,
        "--mtu",
        "1400",
        "--master",
        "br9",
        "--up",
    ]);
    let host = lab.ok(&["net", "link", "list"]);
    let vh = host
        .lines()
        .find(|l| l.contains(" vh:"))
        .expect("vh on the host")
        .to_string();
    assert!(
        vh.contains("veth mtu 1400 UP") && vh.ends_with("master br9"),
        "{vh}"
    );
    let inside = lab.ok(&["net", "link", "list", "--ns", &a]);
    assert!(
        inside
            .lines()
            .any(|l| l.contains(" vc: veth mtu 1400 DOWN")),
        "{inside}"
    );
    lab.ok(&[
        "net",
        "link",
        "set",
        "vc",
        "--mtu",
        "1280",
        "--mac",
        "02:00:00:00:00:01",
        "--ns",
        &a,
    ]);
    let inside = lab.ok(&["net", "link", "list", "--ns", &a]);
    assert!(
        inside
            .lines()
            .any(|l| l.contains(" vc: veth mtu 1280 DOWN 02:00:00:00:00:01")),
        "{inside}"
    );
    lab.ok(&["net", "link", "set", "vh", "--nomaster"]);
    assert!(!lab.ok(&["net", "link", "list"]).contains("master br9"));
    // Move the container end from a to b.
    lab.ok(&["net", "link", "set", "vc", "--move-to", &b, "--ns", &a]);
    assert!(
        !lab.ok(&["net", "link", "list", "--ns", &a])
            .contains(" vc:")
    );
    assert!(
        lab.ok(&["net", "link", "list", "--ns", &b])
            .contains(" vc:")
    );
    // Errors name the link.
    let out = lab.cella(&["net", "link", "del", "nope0"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("link `nope0` does not exist"),
        "{}",
        show(&out)
    );
    let out = lab.cella(&["net", "link", "add", "vh", "--type", "bridge"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("add bridge `vh`"),
        "{}",
        show(&out)
    );
    // Deleting one end takes the peer along.
    lab.ok(&["net", "link", "del", "vh"]);
    assert!(
        !lab.ok(&["net", "link", "list", "--ns", &b])
            .contains(" vc:")
    );
    lab.ok(&["net", "link", "del", "br9"]);
    assert_eq!(lab.ok(&["net", "link", "list"]).lines().count(), 1);
}

#[test]
fn connect_puts_a_point_to_point_link_between_two_namespaces() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.netns("cnk");
    let b = lab.netns("cnk");
    let dirs = lab.dirs();
    let state = [dirs[0].as_str(), dirs[1].as_str()];
    let before = lab.snapshot(&[&a, &b]);
    // Bad input first: nothing may be left of it.
    let missing = unique("cn-missing");
    let bad: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                &a,
                &missing,
                "--addr-a",
                "192.168.77.1/30",
                "--addr-b",
                "192.168.77.2/30",
            ],
            "does not exist",
        ),
        (
            vec![
                &a,
                &b,
                "--addr-a",
                "192.168.77.1/30",
                "--addr-b",
                "192.168.78.2/30",
            ],
            "not two different addresses",
        ),
        (vec![&a, &a], "both ends"),
        (vec![&a, &b, "--ifname-a", "lo"], "exists already"),
    ];
    for (args, want) in &bad {
        let mut v = vec!["net", "connect"];
        v.extend(args);
        v.extend(state);
        let out = lab.cella(&v);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{args:?}: {}",
            show(&out)
        );
        assert_eq!(
            lab.snapshot(&[&a, &b]),
            before,
            "{args:?} left something behind"
        );
    }
    let mut v = vec![
        "net",
        "connect",
        &a,
        &b,
        "--id",
        "repl",
        "--ifname-a",
        "repl0",
        "--addr-a",
        "192.168.77.1/30",
        "--addr-b",
        "192.168.77.2/30",
    ];
    v.extend(state);
    lab.ok(&v);
    assert!(
        lab.ok(&["net", "addr", "list", "--ns", &b])
            .contains("repl0: 192.168.77.2/30")
    );
    let s = serve_once(&b, "192.168.77.2:5432");
    assert_eq!(connect(&a, "192.168.77.2:5432", T).unwrap(), "hello");
    assert_eq!(s.join().unwrap().unwrap().ip().to_string(), "192.168.77.1");
    let mut v = vec!["net", "disconnect", "repl"];
    v.extend(state);
    lab.ok(&v);
    assert_eq!(lab.snapshot(&[&a, &b]), before);
    let out = lab.cella(&v);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such link"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_failure_mid_attach_is_rolled_back() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.netns("cnr");
    let b = lab.netns("cnr");
    let out = lab.attach(&[
        "--netns",
        &a,
        "--bridge",
        "br0",
        "--subnet",
        "10.88.0.0/24",
        "--masquerade",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    // Someone else forwards port 8443 behind cella's back: validation cannot know, so the
    // nft transaction is what fails, after the links were made.
    let nft = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.host,
            "nft",
            "add",
            "element",
            "ip",
            "cella",
            "tcp_addr",
            "{ 8443 : 10.1.2.3 }",
        ])
        .output()
        .unwrap();
    assert!(nft.status.success(), "{}", show(&nft));
    let before = lab.snapshot(&[&a, &b]);
    let out = lab.attach(&[
        "--netns",
        &b,
        "--bridge",
        "br0",
        "--subnet",
        "10.88.0.0/24",
        "--publish",
        "8443:443",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("File exists") && !err.contains("cleanup"),
        "{err}"
    );
    assert_eq!(
        lab.snapshot(&[&a, &b]),
        before,
        "the failed attach left something"
    );
    // The other container's network is untouched.
    let s = serve_once(&lab.host.clone(), "10.88.0.1:9000");
    assert_eq!(connect(&a, "10.88.0.1:9000", T).unwrap(), "hello");
    assert!(s.join().unwrap().is_some());
    assert!(lab.detach(&a).status.success());
}

#[test]
fn dual_stack_and_ipv6_only_attach_talk_over_ipv6_and_detach_clean() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let before = lab.snapshot(&[]);
    let c1 = lab.netns("cna");
    let c2 = lab.netns("cnb");
    let c3 = lab.netns("cnc");
    for c in [&c1, &c2] {
        let out = lab.attach(&[
            "--netns",
            c,
            "--bridge",
            "br0",
            "--subnet",
            "10.88.0.0/24",
            "--subnet",
            "fd00:88::/64",
            "--anti-spoof",
        ]);
        assert!(out.status.success(), "{}", show(&out));
    }
    // A second network, IPv6 only, on another bridge.
    let out = lab.attach(&[
        "--netns",
        &c3,
        "--bridge",
        "br6",
        "--subnet",
        "fd00:99::/64",
    ]);
    assert!(out.status.success(), "{}", show(&out));
    let s = lab.ok(&["net", "addr", "list", "--ns", &c1]);
    assert!(
        s.contains("eth0: 10.88.0.2/24") && s.contains("eth0: fd00:88::2/64"),
        "{s}"
    );
    let s = lab.ok(&["net", "addr", "list", "--ns", &c3]);
    assert!(
        s.contains("eth0: fd00:99::2/64") && !s.contains("eth0: 10."),
        "{s}"
    );
    let r = lab.ok(&["net", "route", "show", "-6", "--ns", &c3]);
    assert!(r.contains("default via fd00:99::1"), "{r}");
    let server = serve_once(&c1, "[fd00:88::2]:7000");
    assert_eq!(connect(&c2, "[fd00:88::2]:7000", T).unwrap(), "hello");
    assert_eq!(
        server.join().unwrap().unwrap().ip().to_string(),
        "fd00:88::3"
    );
    // The IPv6-only container reaches the dual-stack one through the host (routed).
    let server = serve_once(&c1, "[fd00:88::2]:7001");
    assert_eq!(connect(&c3, "[fd00:88::2]:7001", T).unwrap(), "hello");
    assert!(server.join().unwrap().is_some());
    // A subnet of the wrong family in the second place is refused.
    let c4 = lab.netns("cnd");
    let out = lab.attach(&[
        "--netns",
        &c4,
        "--bridge",
        "br7",
        "--subnet",
        "fd00:77::/64",
        "--subnet",
        "fd00:78::/64",
    ]);
    assert!(!out.status.success(), "{}", show(&out));
    for c in [&c1, &c2, &c3] {
        let out = lab.detach(c);
        assert!(out.status.success(), "{}", show(&out));
    }
    assert_eq!(tree(&lab.ipam), "");
    let after = lab.snapshot(&[]);
    assert!(!after.contains("table"), "nft tables left: {after}");
    assert_eq!(after, before);
}

#[test]
fn attach_killed_at_any_point_then_detach_leaves_nothing() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let c = lab.netns("cnk");
    let clean = lab.snapshot(&[]);
    let dirs = lab.dirs();
    let mut landed = 0;
    for delay_ms in (0..=60).step_by(3) {
        let mut args = vec![
            "net",
            "attach",
            "--netns",
            &c,
            "--bridge",
            "br0",
            "--subnet",
            "10.88.0.0/24",
            "--subnet",
            "fd00:88::/64",
            "--publish",
            "8080:80",
            "--masquerade",
            "--anti-spoof",
        ];
        args.extend(dirs.iter().map(String::as_str));
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", lab.host))
            .arg(cella_bin())
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        if lab.snapshot(&[]) != clean {
            landed += 1;
        }
        // Nothing recorded (killed before the record) is "no such attachment": fine.
        let _ = lab.detach(&c);
        assert_eq!(lab.snapshot(&[]), clean, "killed after {delay_ms} ms");
        // The container keeps only its loopback (which a finished attach left up).
        let inside = lab.ok(&["net", "link", "list", "--ns", &c]);
        assert_eq!(
            inside.lines().count(),
            1,
            "killed after {delay_ms} ms: {inside}"
        );
    }
    assert!(landed > 0, "no kill landed mid-attach");
}
