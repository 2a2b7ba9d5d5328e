//! End-to-end tests of the `cella-cni` plugin, called exactly as the CNI spec says
//! (CNI_* environment, configuration on stdin, result or error JSON on stdout), side by
//! side with Debian's containernetworking-plugins (bridge + host-local + portmap) for the
//! same configuration.
//!
//! Every test makes its own "host" network namespace and runs the plugins in it with
//! `nsenter --net`; containers, and the fake internet host 198.51.100.20, are namespaces
//! of their own. The [`Lab`] guard deletes them and the lease directories at the end,
//! even when the test fails. No packet leaves those namespaces.

use cella_tests::{cella_bin, require_root, require_tool, scratch_root, show, skip_unless, unique};
use serde_json::{Value, json};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const REF_DIR: &str = "/usr/lib/cni";
const T: Duration = Duration::from_secs(3);

fn cni_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CELLA_CNI_BIN") {
        return PathBuf::from(p);
    }
    let bin = cella_bin().with_file_name("cella-cni");
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build --workspace` first, or set CELLA_CNI_BIN",
        bin.display()
    );
    bin
}

fn ready() -> bool {
    require_root() && require_tool("ip") && require_tool("nft") && require_tool("nsenter")
}

/// Debian's containernetworking-plugins, for the side-by-side tests.
fn reference_plugins() -> bool {
    skip_unless(
        ["bridge", "host-local", "portmap"]
            .iter()
            .all(|p| Path::new(REF_DIR).join(p).is_file()),
        "needs containernetworking-plugins (/usr/lib/cni/{bridge,host-local,portmap})",
    )
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", show(&out));
}

/// A host namespace, its containers and the lease directory, removed on drop.
struct Lab {
    host: String,
    netns: Vec<String>,
    data: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let host = unique("cch");
        ip(&["netns", "add", &host]);
        let lab = Lab {
            host,
            netns: Vec::new(),
            data: scratch_root().join(unique("cni")),
        };
        lab.sh(&["ip", "link", "set", "lo", "up"]);
        lab
    }

    fn netns(&mut self, prefix: &str) -> String {
        let n = unique(prefix);
        ip(&["netns", "add", &n]);
        self.netns.push(n.clone());
        n
    }

    /// Runs a command in the host namespace and returns its stdout; it must succeed.
    fn sh(&self, args: &[&str]) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .args(args)
            .output()
            .expect("spawn nsenter");
        assert!(out.status.success(), "{args:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Calls a CNI plugin as the spec says, in the host namespace.
    fn call(&self, plugin: &Path, env: &[(&str, &str)], conf: &Value) -> Output {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.host))
            .arg(plugin)
            .env_remove("CNI_COMMAND")
            .env("CNI_PATH", REF_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn plugin");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// `COMMAND` for container `id` in namespace `ns` as eth0.
    fn cni(&self, plugin: &Path, command: &str, id: &str, ns: &str, conf: &Value) -> Output {
        let netns = format!("/run/netns/{ns}");
        self.call(
            plugin,
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "eth0"),
            ],
            conf,
        )
    }

    /// A fake internet host at 198.51.100.20, linked to the host (198.51.100.1/24).
    fn internet(&mut self) -> String {
        let inet = self.netns("cci");
        self.sh(&[
            "ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &inet,
        ]);
        self.sh(&["ip", "addr", "add", "198.51.100.1/24", "dev", "up0"]);
        self.sh(&["ip", "link", "set", "up0", "up"]);
        for a in [
            &["ip", "addr", "add", "198.51.100.20/24", "dev", "eth0"][..],
            &["ip", "link", "set", "eth0", "up"],
            &["ip", "link", "set", "lo", "up"],
        ] {
            let out = Command::new("ip")
                .args(["netns", "exec", &inet])
                .args(a)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", show(&out));
        }
        inet
    }

    /// What must not change: host links and addresses, the ruleset, containers' links,
    /// the lease directory.
    fn snapshot(&self, containers: &[&str]) -> String {
        let mut s = self.sh(&["ip", "-o", "link"]);
        s += &self.sh(&["ip", "-o", "addr"]);
        s += &self.sh(&["nft", "list", "ruleset"]);
        for c in containers {
            let out = Command::new("ip")
                .args(["netns", "exec", c, "ip", "-o", "link"])
                .output()
                .unwrap();
            s += &String::from_utf8_lossy(&out.stdout);
        }
        s += &tree(&self.data);
        stable(&s)
    }
}

/// `s` without what changes on its own: link operational state, and addresses'
/// duplicate-address-detection flags.
fn stable(s: &str) -> String {
    s.lines()
        .map(|l| {
            let mut out = Vec::new();
            let mut skip = false;
            for w in l.split(' ') {
                if skip {
                    skip = false;
                    continue;
                }
                match w {
                    "state" => skip = true,
                    "tentative" | "dadfailed" => {}
                    w => out.push(w),
                }
            }
            out.join(" ") + "\n"
        })
        .collect()
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in self.netns.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.host])
            .output();
        let _ = fs::remove_dir_all(&self.data);
    }
}

/// Every file under `dir` with its content, paths relative to `dir`.
fn tree(dir: &Path) -> String {
    fn walk(base: &Path, dir: &Path, out: &mut String) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
                *out += &format!("{rel} = {:?}\n", fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    let mut out = String::new();
    walk(dir, dir, &mut out);
    out
}

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

/// A TCP server in `ns` on `addr` answering one connection with "hello"; returns the
/// peer's address (None after 10 s without one).
fn serve_once(ns: &str, addr: &str) -> JoinHandle<Option<SocketAddr>> {
    let addr: SocketAddr = addr.parse().unwrap();
    let (tx, rx) = mpsc::channel();
    let h = in_ns(ns, move || {
        // Retried: the previous server of the same test on this port was seen to hold it
        // a moment after it answered (EADDRINUSE once in a CI run).
        let bind_deadline = Instant::now() + Duration::from_secs(5);
        let l = loop {
            match TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && Instant::now() < bind_deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
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

/// The reference bridge plugin's configuration; `kind` is "bridge" or "cella-cni".
fn bridge_conf(kind: &str, data: &Path, mappings: Value) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "testnet",
        "type": kind,
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": true,
        "hairpinMode": true,
        "capabilities": { "portMappings": true },
        "runtimeConfig": { "portMappings": mappings },
        "ipam": {
            "type": "host-local",
            "ranges": [[{ "subnet": "10.89.0.0/24" }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
            "dataDir": data.display().to_string()
        }
    })
}

fn ok_json(out: &Output) -> Value {
    assert!(out.status.success(), "{}", show(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(out)))
}

/// ADD through cella-cni alone, or through bridge then portmap (with the bridge's result
/// as prevResult), as a conflist would; returns the final result.
fn add(lab: &Lab, reference: bool, id: &str, ns: &str, mappings: Value) -> Value {
    if !reference {
        let conf = bridge_conf("cella-cni", &lab.data, mappings);
        return ok_json(&lab.cni(&cni_bin(), "ADD", id, ns, &conf));
    }
    let conf = bridge_conf("bridge", &lab.data, json!([]));
    let res = ok_json(&lab.cni(&Path::new(REF_DIR).join("bridge"), "ADD", id, ns, &conf));
    let pm = portmap_conf(mappings, &res);
    ok_json(&lab.cni(&Path::new(REF_DIR).join("portmap"), "ADD", id, ns, &pm))
}

fn portmap_conf(mappings: Value, prev: &Value) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "testnet", "type": "portmap",
        "capabilities": { "portMappings": true },
        "runtimeConfig": { "portMappings": mappings },
        "prevResult": prev
    })
}

fn del(lab: &Lab, reference: bool, id: &str, ns: &str, mappings: Value, prev: &Value) {
    if reference {
        let out = lab.cni(
            &Path::new(REF_DIR).join("portmap"),
            "DEL",
            id,
            ns,
            &portmap_conf(mappings, prev),
        );
        assert!(out.status.success(), "{}", show(&out));
        let mut conf = bridge_conf("bridge", &lab.data, json!([]));
        conf["prevResult"] = prev.clone();
        let out = lab.cni(&Path::new(REF_DIR).join("bridge"), "DEL", id, ns, &conf);
        assert!(out.status.success(), "{}", show(&out));
    } else {
        let mut conf = bridge_conf("cella-cni", &lab.data, mappings);
        conf["prevResult"] = prev.clone();
        let out = lab.cni(&cni_bin(), "DEL", id, ns, &conf);
        assert!(out.status.success(), "{}", show(&out));
        assert!(out.stdout.is_empty(), "{}", show(&out));
    }
}

/// The parts of a result that must agree: everything but MACs and the host veth's name.
fn shape(r: &Value) -> Value {
    let ifs: Vec<Value> = r["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            json!({
                "in_sandbox": i.get("sandbox").is_some(),
                "has_mac": i["mac"].as_str().is_some_and(|m| m.len() == 17),
            })
        })
        .collect();
    json!({
        "cniVersion": r["cniVersion"], "interfaces": ifs, "bridge": r["interfaces"][0]["name"],
        "ctr": r["interfaces"][2]["name"], "ips": r["ips"], "routes": r["routes"], "dns": r["dns"],
    })
}

/// Builds one network with two containers, checks what can be observed, tears it down;
/// returns the result shapes and the lease directory as they were after ADD.
fn exercise(reference: bool) -> (Vec<Value>, String) {
    let mut lab = Lab::new();
    let inet = lab.internet();
    let before = lab.snapshot(&[]);
    let c1 = lab.netns("cc1");
    let c2 = lab.netns("cc2");
    let map = json!([{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }]);
    let r1 = add(&lab, reference, "ctr1", &c1, map.clone());
    let r2 = add(&lab, reference, "ctr2", &c2, json!([]));
    let leases = tree(&lab.data);
    let who = if reference { "reference" } else { "cella-cni" };

    // The container reaches the gateway (a server on the host's bridge address)...
    let gw = serve_once(&lab.host, "10.89.0.1:7000");
    assert_eq!(
        connect(&c2, "10.89.0.1:7000", T).as_deref(),
        Ok("hello"),
        "{who}: ctr2 -> gateway"
    );
    assert_eq!(gw.join().unwrap().unwrap().ip().to_string(), "10.89.0.3");
    // ... and the other container.
    let s = serve_once(&c1, "10.89.0.2:7001");
    assert_eq!(
        connect(&c2, "10.89.0.2:7001", T).as_deref(),
        Ok("hello"),
        "{who}: ctr2 -> ctr1"
    );
    assert_eq!(s.join().unwrap().unwrap().ip().to_string(), "10.89.0.3");
    // A port mapping from outside the host reaches the server in ctr1.
    let s = serve_once(&c1, "0.0.0.0:80");
    assert_eq!(
        connect(&inet, "198.51.100.1:8080", T).as_deref(),
        Ok("hello"),
        "{who}: mapping"
    );
    assert_eq!(s.join().unwrap().unwrap().ip().to_string(), "198.51.100.20");
    // Masquerade: the internet host sees the host's address, not 10.89.x.
    let s = serve_once(&inet, "198.51.100.20:80");
    assert_eq!(
        connect(&c1, "198.51.100.20:80", T).as_deref(),
        Ok("hello"),
        "{who}: masquerade"
    );
    assert_eq!(
        s.join().unwrap().unwrap().ip().to_string(),
        "198.51.100.1",
        "{who}"
    );

    del(&lab, reference, "ctr2", &c2, json!([]), &r2);
    del(&lab, reference, "ctr1", &c1, map, &r1);
    if !reference {
        // Nothing is left: links, addresses, nft tables (the snapshot), leases. host-local
        // keeps its lock and last_reserved_ip files, as the reference does.
        assert_eq!(
            lab.snapshot(&[]).replace(&tree(&lab.data), ""),
            before.replace(&tree(&lab.data), "")
        );
        let left = tree(&lab.data);
        assert!(!left.contains("testnet/10.89.0."), "leases left: {left}");
        assert!(
            left.contains("testnet/last_reserved_ip.0 = \"10.89.0.3\""),
            "{left}"
        );
        // DEL again is no error and changes nothing.
        del(&lab, false, "ctr1", &c1, json!([]), &r1);
        assert_eq!(
            lab.snapshot(&[]).replace(&tree(&lab.data), ""),
            before.replace(&tree(&lab.data), "")
        );
    } else {
        let left = tree(&lab.data);
        assert!(
            !left.contains("10.89.0.2 "),
            "reference left leases: {left}"
        );
    }
    (vec![shape(&r1), shape(&r2)], leases)
}

#[test]
fn same_result_and_network_as_bridge_host_local_portmap() {
    if !ready() || !reference_plugins() {
        return;
    }
    let (ours, our_leases) = exercise(false);
    let (theirs, their_leases) = exercise(true);
    assert_eq!(ours, theirs, "result shapes differ");
    // The lease directories are byte for byte the same (host-local's format).
    assert_eq!(our_leases, their_leases);
    assert!(
        our_leases.contains("testnet/10.89.0.2 = \"ctr1\\r\\neth0\""),
        "{our_leases}"
    );
}

fn cella_conf(lab: &Lab) -> Value {
    let mut c = bridge_conf(
        "cella-cni",
        &lab.data,
        json!([{ "hostPort": 8080, "containerPort": 80 }]),
    );
    c["antiSpoof"] = json!(true);
    c
}

fn error_of(out: &Output) -> Value {
    assert!(!out.status.success(), "expected failure: {}", show(out));
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(out)));
    assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["cniVersion"].is_string(), "{v}");
    v
}

#[test]
fn check_detects_a_deleted_veth_and_a_missing_address() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let c = lab.netns("ccc");
    let bin = cni_bin();
    let mut conf = cella_conf(&lab);
    let res = ok_json(&lab.cni(&bin, "ADD", "ctrc", &c, &conf));
    conf["prevResult"] = res.clone();
    let out = lab.cni(&bin, "CHECK", "ctrc", &c, &conf);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        show(&out)
    );
    // CHECK without prevResult is a configuration error.
    let mut bare = conf.clone();
    bare.as_object_mut().unwrap().remove("prevResult");
    assert_eq!(
        error_of(&lab.cni(&bin, "CHECK", "ctrc", &c, &bare))["code"],
        7
    );

    // The container's address removed: CHECK names it.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &c,
            "ip",
            "addr",
            "del",
            "10.89.0.2/24",
            "dev",
            "eth0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let e = error_of(&lab.cni(&bin, "CHECK", "ctrc", &c, &conf));
    assert_eq!(e["code"], 105, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("10.89.0.2/24"), "{e}");

    // The veth deleted (from the host): CHECK fails, DEL still cleans up, twice.
    let host_veth = res["interfaces"][1]["name"].as_str().unwrap().to_string();
    lab.sh(&["ip", "link", "del", &host_veth]);
    let e = error_of(&lab.cni(&bin, "CHECK", "ctrc", &c, &conf));
    assert_eq!(e["code"], 105, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("eth0"), "{e}");
    for _ in 0..2 {
        let out = lab.cni(&bin, "DEL", "ctrc", &c, &conf);
        assert!(out.status.success(), "{}", show(&out));
    }
    assert!(
        !lab.sh(&["nft", "list", "ruleset"]).contains("table"),
        "nft tables left"
    );
    assert_eq!(
        lab.sh(&["ip", "-o", "link"]).lines().count(),
        1,
        "links left"
    );
    assert!(!tree(&lab.data).contains("10.89.0.2 "));
    // DEL without CNI_NETNS (the namespace is gone) is fine too.
    let netns_less = lab.call(
        &bin,
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "ctrc"),
            ("CNI_IFNAME", "eth0"),
        ],
        &conf,
    );
    assert!(netns_less.status.success(), "{}", show(&netns_less));
}

#[test]
fn bad_input_gives_the_spec_error_and_creates_nothing() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let c = lab.netns("ccb");
    let other = lab.netns("ccx");
    let bin = cni_bin();
    // A container holding host port 8080 already, so a second mapping of it is refused.
    let good = cella_conf(&lab);
    ok_json(&lab.cni(&bin, "ADD", "holder", &other, &good));
    let before = lab.snapshot(&[&c, &other]);

    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    let netns = format!("/run/netns/{c}");
    // (what, configuration, environment overrides, expected code, text in the error)
    type Case<'a> = (&'a str, Value, Vec<(&'a str, &'a str)>, u64, &'a str);
    let cases: Vec<Case> = vec![
        (
            "invalid CIDR",
            with(&|v| v["ipam"]["ranges"] = json!([[{ "subnet": "10.89.0.0/33" }]])),
            vec![],
            7,
            "ipam.ranges[0][0].subnet",
        ),
        (
            "overlapping ranges",
            with(&|v| {
                v["ipam"]["ranges"] =
                    json!([[{ "subnet": "10.89.0.0/24" }, { "subnet": "10.89.0.128/25" }]])
            }),
            vec![],
            7,
            "overlaps",
        ),
        (
            "unknown cniVersion",
            with(&|v| v["cniVersion"] = json!("9.9.9")),
            vec![],
            1,
            "incompatible",
        ),
        (
            "missing CNI_NETNS",
            good.clone(),
            vec![("CNI_NETNS", "")],
            4,
            "CNI_NETNS",
        ),
        (
            "namespace that does not exist",
            good.clone(),
            vec![("CNI_NETNS", "/run/netns/no-such-netns-cella")],
            3,
            "does not exist",
        ),
        (
            "host port mapped already",
            good.clone(),
            vec![],
            103,
            "already mapped",
        ),
        ("not JSON", json!("{"), vec![], 6, "not JSON"),
        (
            "unknown protocol",
            with(&|v| {
                v["runtimeConfig"]["portMappings"] =
                    json!([{ "hostPort": 1, "containerPort": 2, "protocol": "sctp" }])
            }),
            vec![],
            7,
            "runtimeConfig.portMappings[0].protocol",
        ),
    ];
    for (what, conf, env_over, code, needle) in cases {
        let mut env = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "bad1"),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
        ];
        for (k, v) in &env_over {
            env.retain(|(e, _)| e != k);
            if !v.is_empty() {
                env.push((k, v));
            }
        }
        let conf = if what == "not JSON" {
            Value::Null
        } else {
            conf
        };
        let out = if what == "not JSON" {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net=/run/netns/{}", lab.host))
                .arg(&bin)
                .env("CNI_PATH", REF_DIR);
            for (k, v) in &env {
                cmd.env(k, v);
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(b"{").unwrap();
            child.wait_with_output().unwrap()
        } else {
            lab.call(&bin, &env, &conf)
        };
        let e = error_of(&out);
        assert_eq!(e["code"], code, "{what}: {e}");
        let text = format!("{} {}", e["msg"], e["details"]);
        assert!(text.contains(needle), "{what}: {needle:?} not in {e}");
        assert_eq!(
            lab.snapshot(&[&c, &other]),
            before,
            "{what} left something behind"
        );
    }
    let out = lab.cni(&bin, "DEL", "holder", &other, &good);
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn version_and_unknown_command() {
    if !ready() {
        return;
    }
    let lab = Lab::new();
    let out = lab.call(
        &cni_bin(),
        &[("CNI_COMMAND", "VERSION")],
        &json!({"cniVersion": "1.0.0"}),
    );
    let v = ok_json(&out);
    assert_eq!(v["cniVersion"], "1.0.0");
    assert!(
        v["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("0.4.0"))
    );
    let e = error_of(&lab.call(
        &cni_bin(),
        &[("CNI_COMMAND", "FROB")],
        &json!({"cniVersion": "1.0.0"}),
    ));
    assert_eq!(e["code"], 4);
}

#[test]
fn other_ipam_types_are_delegated_through_cni_path() {
    if !ready() || !reference_plugins() {
        return;
    }
    let mut lab = Lab::new();
    let c = lab.netns("ccd");
    // An IPAM plugin cella-cni does not know: Debian's host-local under another name.
    let dir = lab.data.join("plugins");
    fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("my-ipam");
    fs::write(
        &plugin,
        format!("#!/bin/sh\nexec {REF_DIR}/host-local \"$@\"\n"),
    )
    .unwrap();
    fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755)).unwrap();
    let mut conf = bridge_conf("cella-cni", &lab.data.join("leases"), json!([]));
    conf["ipam"]["type"] = json!("my-ipam");
    let path = dir.display().to_string();
    let netns = format!("/run/netns/{c}");
    let env = |cmd| {
        vec![
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "dlg"),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", path.as_str()),
        ]
    };
    let res = ok_json(&lab.call(&cni_bin(), &env("ADD"), &conf));
    assert_eq!(res["ips"][0]["address"], "10.89.0.2/24", "{res}");
    assert_eq!(res["ips"][0]["interface"], 2);
    let leases = tree(&lab.data.join("leases"));
    assert!(leases.contains("10.89.0.2 = \"dlg\\r\\neth0\""), "{leases}");
    // The built-in host-local shares the directory with Debian's: it sees that lease
    // and takes the next address.
    let c2 = lab.netns("ccd");
    let mut builtin = conf.clone();
    builtin["ipam"]["type"] = json!("host-local");
    builtin["bridge"] = json!("cni1");
    let r2 = ok_json(&lab.cni(&cni_bin(), "ADD", "dlg2", &c2, &builtin));
    assert_eq!(r2["ips"][0]["address"], "10.89.0.3/24", "{r2}");
    let out = lab.cni(&cni_bin(), "DEL", "dlg2", &c2, &builtin);
    assert!(out.status.success(), "{}", show(&out));
    let out = lab.call(&cni_bin(), &env("DEL"), &conf);
    assert!(out.status.success(), "{}", show(&out));
    assert!(!tree(&lab.data.join("leases")).contains("10.89.0.2 "));
    // A plugin that is not in CNI_PATH: an error, and nothing made.
    conf["ipam"]["type"] = json!("no-such-ipam");
    let e = error_of(&lab.call(&cni_bin(), &env("ADD"), &conf));
    assert_eq!(e["code"], 104, "{e}");
    assert_eq!(lab.sh(&["ip", "-o", "link"]).lines().count(), 1);
}

fn in_container(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", show(&out));
}

#[test]
fn anti_spoof_drops_a_container_that_copies_anothers_mac_and_ip() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.netns("cca");
    let b = lab.netns("ccb");
    let mut conf = bridge_conf("cella-cni", &lab.data, json!([]));
    conf["antiSpoof"] = json!(true);
    let ra = ok_json(&lab.cni(&cni_bin(), "ADD", "spa", &a, &conf));
    ok_json(&lab.cni(&cni_bin(), "ADD", "spb", &b, &conf));
    let host = lab.host.clone();
    let s = serve_once(&host, "10.89.0.1:9000");
    assert_eq!(connect(&b, "10.89.0.1:9000", T).as_deref(), Ok("hello"));
    assert!(s.join().unwrap().is_some());
    // b takes a's MAC and address.
    let mac_a = ra["interfaces"][2]["mac"].as_str().unwrap().to_string();
    in_container(&b, &["ip", "link", "set", "eth0", "down"]);
    in_container(&b, &["ip", "link", "set", "eth0", "address", &mac_a]);
    in_container(&b, &["ip", "addr", "flush", "dev", "eth0"]);
    in_container(&b, &["ip", "addr", "add", "10.89.0.2/24", "dev", "eth0"]);
    in_container(&b, &["ip", "link", "set", "eth0", "up"]);
    let _s = serve_once(&host, "10.89.0.1:9001");
    assert!(
        connect(&b, "10.89.0.1:9001", Duration::from_millis(1500)).is_err(),
        "spoofed frames passed"
    );
    // a keeps working.
    let s = serve_once(&host, "10.89.0.1:9002");
    assert_eq!(connect(&a, "10.89.0.1:9002", T).as_deref(), Ok("hello"));
    assert_eq!(s.join().unwrap().unwrap().ip().to_string(), "10.89.0.2");
    for (id, ns) in [("spa", &a), ("spb", &b)] {
        let out = lab.cni(&cni_bin(), "DEL", id, ns, &conf);
        assert!(out.status.success(), "{}", show(&out));
    }
    assert!(!lab.sh(&["nft", "list", "ruleset"]).contains("table"));
}

#[test]
fn a_mapping_is_reached_from_the_host_itself() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let inet = lab.internet();
    let c = lab.netns("cch");
    let map = json!([
        { "hostPort": 8080, "containerPort": 80 },
        { "hostPort": 8081, "containerPort": 81, "hostIP": "198.51.100.1" }
    ]);
    let conf = bridge_conf("cella-cni", &lab.data, map);
    ok_json(&lab.cni(&cni_bin(), "ADD", "hm", &c, &conf));
    let host = lab.host.clone();
    for to in ["127.0.0.1:8080", "198.51.100.1:8080", "10.89.0.1:8080"] {
        let s = serve_once(&c, "0.0.0.0:80");
        // Retried: right after ADD a connect was seen to fail once with EADDRNOTAVAIL.
        assert_eq!(connect_until(&host, to, T).as_deref(), Ok("hello"), "{to}");
        assert!(s.join().unwrap().is_some());
    }
    // Hairpin: the container reaches its own mapping through the host's address.
    let s = serve_once(&c, "0.0.0.0:80");
    assert_eq!(
        connect(&c, "198.51.100.1:8080", T).as_deref(),
        Ok("hello"),
        "hairpin"
    );
    assert!(s.join().unwrap().is_some());
    // A mapping limited to one host address answers there only.
    let s = serve_once(&c, "0.0.0.0:81");
    assert_eq!(
        connect(&inet, "198.51.100.1:8081", T).as_deref(),
        Ok("hello")
    );
    assert!(s.join().unwrap().is_some());
    let _s = serve_once(&c, "0.0.0.0:81");
    assert!(connect(&host, "10.89.0.1:8081", Duration::from_millis(800)).is_err());
    let out = lab.cni(&cni_bin(), "DEL", "hm", &c, &conf);
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn concurrent_adds_get_distinct_addresses_and_all_delete() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let before = lab.snapshot(&[]);
    let n = 8;
    let names: Vec<String> = (0..n).map(|_| lab.netns("ccp")).collect();
    let lab = std::sync::Arc::new(lab);
    let run = |command: &'static str| -> Vec<Output> {
        let hs: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let lab = lab.clone();
                let ns = ns.clone();
                std::thread::spawn(move || {
                    let map = json!([{ "hostPort": 9000 + i, "containerPort": 80 }]);
                    let mut conf = bridge_conf("cella-cni", &lab.data, map);
                    conf["antiSpoof"] = json!(true);
                    lab.cni(&cni_bin(), command, &format!("par{i}"), &ns, &conf)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    };
    let mut addrs: Vec<String> = run("ADD")
        .iter()
        .map(|o| {
            ok_json(o)["ips"][0]["address"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), n, "{addrs:?}");
    for o in run("DEL") {
        assert!(o.status.success(), "{}", show(&o));
    }
    let after = lab.snapshot(&[]);
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("last_reserved_ip") && !l.contains("testnet/lock"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&after), strip(&before));
}

#[test]
fn cni_args_ip_requests_an_address_as_host_local_does() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let a = lab.netns("ccr");
    let b = lab.netns("ccr");
    let conf = bridge_conf("cella-cni", &lab.data, json!([]));
    let call = |id: &str, ns: &str, command: &str, args: &str| {
        let netns = format!("/run/netns/{ns}");
        lab.call(
            &cni_bin(),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", args),
            ],
            &conf,
        )
    };
    let r = ok_json(&call(
        "ra",
        &a,
        "ADD",
        "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.89.0.42",
    ));
    assert_eq!(r["ips"][0]["address"], "10.89.0.42/24");
    // Taken, out of range, or the gateway: refused, nothing made.
    let before = lab.snapshot(&[&b]);
    for ip in ["10.89.0.42", "10.77.0.1", "10.89.0.1"] {
        let e = error_of(&call("rb", &b, "ADD", &format!("IP={ip}")));
        assert_eq!(e["code"], 7, "{ip}: {e}");
        assert!(e["msg"].as_str().unwrap().contains(ip), "{e}");
        assert_eq!(lab.snapshot(&[&b]), before, "{ip}");
    }
    for (id, ns) in [("ra", &a), ("rb", &b)] {
        let out = call(id, ns, "DEL", "");
        assert!(out.status.success(), "{}", show(&out));
    }
}

/// [`bridge_conf`] with a second, IPv6 range set (dual stack) and a default route for each
/// family, as host-local takes them.
fn bridge_conf6(kind: &str, data: &Path, mappings: Value, v6_only: bool) -> Value {
    let mut c = bridge_conf(kind, data, mappings);
    if v6_only {
        c["ipam"]["ranges"] = json!([[{ "subnet": "fd00:89::/64" }]]);
        c["ipam"]["routes"] = json!([{ "dst": "::/0" }]);
    } else {
        c["ipam"]["ranges"] =
            json!([[{ "subnet": "10.89.0.0/24" }], [{ "subnet": "fd00:89::/64" }]]);
        c["ipam"]["routes"] = json!([{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }]);
    }
    c
}

/// Connects until `deadline` (the reference plugins leave addresses tentative for a while:
/// duplicate address detection).
fn connect_until(ns: &str, to: &str, deadline: Duration) -> Result<String, String> {
    let end = Instant::now() + deadline;
    loop {
        match connect(ns, to, Duration::from_secs(1)) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > end => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Waits until namespace `ns` has no tentative IPv6 address (duplicate address detection
/// over), as the reference plugins' callers do.
fn settle(ns: &str, who: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("ip")
            .args(["-n", ns, "-6", "addr", "show", "tentative"])
            .output()
            .unwrap();
        if out.stdout.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "{who}: addresses stay tentative in {ns}: {}",
            show(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The dual-stack counterpart of [`exercise`], looking at IPv6: ADD, what can be observed
/// over IPv6 (gateway, the other container, a mapping, masquerade), DEL.
fn exercise6(reference: bool, v6_only: bool) -> (Vec<Value>, String) {
    let mut lab = Lab::new();
    let inet = lab.internet();
    lab.sh(&[
        "ip",
        "addr",
        "add",
        "2001:db8:100::1/64",
        "dev",
        "up0",
        "nodad",
    ]);
    let out = Command::new("ip")
        .args([
            "-n",
            &inet,
            "addr",
            "add",
            "2001:db8:100::20/64",
            "dev",
            "eth0",
            "nodad",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", show(&out));
    let before = lab.snapshot(&[]);
    let c1 = lab.netns("cc1");
    let c2 = lab.netns("cc2");
    let map = json!([{ "hostPort": 8080, "containerPort": 80, "protocol": "tcp" }]);
    let call = |id: &str, ns: &str, mappings: Value| -> Value {
        if !reference {
            let conf = bridge_conf6("cella-cni", &lab.data, mappings, v6_only);
            return ok_json(&lab.cni(&cni_bin(), "ADD", id, ns, &conf));
        }
        let conf = bridge_conf6("bridge", &lab.data, json!([]), v6_only);
        let res = ok_json(&lab.cni(&Path::new(REF_DIR).join("bridge"), "ADD", id, ns, &conf));
        let pm = portmap_conf(mappings, &res);
        ok_json(&lab.cni(&Path::new(REF_DIR).join("portmap"), "ADD", id, ns, &pm))
    };
    let r1 = call("ctr1", &c1, map.clone());
    let r2 = call("ctr2", &c2, json!([]));
    let leases = tree(&lab.data);
    let who = if reference { "reference" } else { "cella-cni" };
    let wait = Duration::from_secs(5);
    for ns in [&lab.host, &c1, &c2] {
        settle(ns, who);
    }

    let gw = serve_once(&lab.host, "[fd00:89::1]:7000");
    assert_eq!(
        connect_until(&c2, "[fd00:89::1]:7000", wait).as_deref(),
        Ok("hello"),
        "{who}: ctr2 -> gateway over IPv6"
    );
    assert_eq!(gw.join().unwrap().unwrap().ip().to_string(), "fd00:89::3");
    let s = serve_once(&c1, "[fd00:89::2]:7001");
    assert_eq!(
        connect_until(&c2, "[fd00:89::2]:7001", wait).as_deref(),
        Ok("hello"),
        "{who}: ctr2 -> ctr1 over IPv6"
    );
    assert_eq!(s.join().unwrap().unwrap().ip().to_string(), "fd00:89::3");
    let s = serve_once(&c1, "[::]:80");
    assert_eq!(
        connect_until(&inet, "[2001:db8:100::1]:8080", wait).as_deref(),
        Ok("hello"),
        "{who}: IPv6 mapping"
    );
    assert_eq!(
        s.join().unwrap().unwrap().ip().to_string(),
        "2001:db8:100::20"
    );
    let s = serve_once(&inet, "[2001:db8:100::20]:80");
    assert_eq!(
        connect_until(&c1, "[2001:db8:100::20]:80", wait).as_deref(),
        Ok("hello"),
        "{who}: IPv6 masquerade"
    );
    assert_eq!(
        s.join().unwrap().unwrap().ip().to_string(),
        "2001:db8:100::1",
        "{who}"
    );

    let del6 = |id: &str, ns: &str, mappings: Value, prev: &Value| {
        if reference {
            let out = lab.cni(
                &Path::new(REF_DIR).join("portmap"),
                "DEL",
                id,
                ns,
                &portmap_conf(mappings, prev),
            );
            assert!(out.status.success(), "{}", show(&out));
            let mut conf = bridge_conf6("bridge", &lab.data, json!([]), v6_only);
            conf["prevResult"] = prev.clone();
            let out = lab.cni(&Path::new(REF_DIR).join("bridge"), "DEL", id, ns, &conf);
            assert!(out.status.success(), "{}", show(&out));
        } else {
            let mut conf = bridge_conf6("cella-cni", &lab.data, mappings, v6_only);
            conf["prevResult"] = prev.clone();
            let out = lab.cni(&cni_bin(), "DEL", id, ns, &conf);
            assert!(out.status.success(), "{}", show(&out));
        }
    };
    del6("ctr2", &c2, json!([]), &r2);
    del6("ctr1", &c1, map, &r1);
    let left = tree(&lab.data);
    assert!(
        !left.contains("testnet/10.89.0.") && !left.contains("testnet/fd00:89::"),
        "{who}: leases left: {left}"
    );
    if !reference {
        // Nothing is left: links, addresses, nft tables (both families), leases.
        assert_eq!(
            lab.snapshot(&[]).replace(&tree(&lab.data), ""),
            before.replace(&tree(&lab.data), "")
        );
    }
    (vec![shape(&r1), shape(&r2)], leases)
}

#[test]
fn dual_stack_same_result_and_ipv6_network_as_the_reference() {
    if !ready() || !reference_plugins() {
        return;
    }
    let (ours, our_leases) = exercise6(false, false);
    let (theirs, their_leases) = exercise6(true, false);
    assert_eq!(ours, theirs, "result shapes differ");
    assert_eq!(our_leases, their_leases);
    assert!(
        our_leases.contains("testnet/fd00:89::2 = \"ctr1\\r\\neth0\""),
        "{our_leases}"
    );
}

#[test]
fn ipv6_only_same_result_and_network_as_the_reference() {
    if !ready() || !reference_plugins() {
        return;
    }
    let (ours, our_leases) = exercise6(false, true);
    let (theirs, their_leases) = exercise6(true, true);
    assert_eq!(ours, theirs, "result shapes differ");
    assert_eq!(our_leases, their_leases);
    assert!(!our_leases.contains("10.89."), "{our_leases}");
}

#[test]
fn add_killed_at_any_point_then_del_leaves_nothing() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let before = lab.snapshot(&[]);
    let c = lab.netns("cck");
    let map = json!([{ "hostPort": 8080, "containerPort": 80 }]);
    let mut conf = bridge_conf6("cella-cni", &lab.data, map, false);
    conf["antiSpoof"] = json!(true);
    let mut left_something = 0;
    for delay_ms in (0..=120).step_by(6) {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", lab.host))
            .arg(cni_bin())
            .env("CNI_COMMAND", "ADD")
            .env("CNI_CONTAINERID", "killed")
            .env("CNI_NETNS", format!("/run/netns/{c}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", REF_DIR)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes())
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        let data = tree(&lab.data);
        if lab.snapshot(&[]).replace(&data, "") != before || data.contains("testnet/10.89.") {
            left_something += 1;
        }
        let out = lab.cni(&cni_bin(), "DEL", "killed", &c, &conf);
        assert!(
            out.status.success(),
            "DEL after a kill at {delay_ms} ms: {}",
            show(&out)
        );
        let data = tree(&lab.data);
        assert_eq!(
            lab.snapshot(&[]).replace(&data, ""),
            before.replace(&tree(&lab.data), ""),
            "killed at {delay_ms} ms"
        );
        let leases: Vec<&str> = data
            .lines()
            .filter(|l| !l.contains("/lock =") && !l.contains("/last_reserved_ip."))
            .collect();
        assert!(leases.is_empty(), "killed at {delay_ms} ms: {leases:?}");
    }
    assert!(left_something > 0, "no kill landed mid-ADD");
}
