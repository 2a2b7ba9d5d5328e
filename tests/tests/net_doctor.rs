//! End-to-end tests of `cella net doctor` and `cella net dns`, through the real binary.
//!
//! Each test makes its own "host" network namespace and runs cella in it (nsenter --net).
//! Inside: a container namespace attached to a bridge (10.77.0.0/24, gateway 10.77.0.1),
//! and a fake nameserver at 198.51.100.53 in a namespace of its own, linked to the host.
//! The nameserver is a thread of the test that joined that namespace and answers every A
//! query with 203.0.113.7 (NXDOMAIN for names under `nx.`). The "container process" is a
//! busybox `sleep` chrooted into a directory the test owns, inside the container's network
//! namespace, so its /etc/resolv.conf (seen through /proc/PID/root) is a file the test
//! controls. No packet leaves namespaces the test made; the guards remove everything.

use cella_tests::{busybox, cella_bin, require_root, require_tool, scratch_root, show, unique};
use serde_json::Value;
use std::fs::{self, File};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const NAMESERVER: &str = "198.51.100.53";

/// The namespaces, processes and directories of one test, removed on drop.
struct Lab {
    host: String,
    netns: Vec<String>,
    base: PathBuf,
    container: Option<Child>,
    dns_stop: Arc<AtomicBool>,
    dns: Option<JoinHandle<()>>,
}

impl Lab {
    fn new() -> Lab {
        let host = unique("cdh");
        ip(&["netns", "add", &host]);
        let base = scratch_root().join(unique("doctor"));
        fs::create_dir_all(&base).unwrap();
        let lab = Lab {
            host,
            netns: Vec::new(),
            base,
            container: None,
            dns_stop: Arc::new(AtomicBool::new(false)),
            dns: None,
        };
        lab.ok(&["net", "link", "set", "lo", "--up"]);
        lab
    }

    /// `cella ARGS` inside the host namespace (network namespace only, as in net.rs).
    fn cella(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg(cella_bin())
            .args(args)
            .output()
            .expect("spawn cella")
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

    fn netns(&mut self, prefix: &str) -> String {
        let name = unique(prefix);
        self.ok(&["net", "ns", "add", &name]);
        self.netns.push(name.clone());
        name
    }

    /// The container namespace on the bridge, the nameserver's namespace and server, and
    /// the container process. Returns (container netns, container root, pid).
    fn world(&mut self) -> (String, PathBuf, u32) {
        let c = self.netns("cdc");
        let state = self.base.join("state").display().to_string();
        let ipam = self.base.join("ipam").display().to_string();
        self.ok(&[
            "net",
            "attach",
            "--netns",
            &c,
            "--bridge",
            "brd0",
            "--subnet",
            "10.77.0.0/24",
            "--state-dir",
            &state,
            "--ipam-dir",
            &ipam,
        ]);
        let d = self.netns("cdd");
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
            &d,
            "--up",
        ]);
        self.ok(&["net", "addr", "add", "198.51.100.1/24", "--dev", "up0"]);
        for args in [
            vec!["net", "addr", "add", "198.51.100.53/24", "--dev", "eth0"],
            vec!["net", "link", "set", "eth0", "--up"],
            vec!["net", "link", "set", "lo", "--up"],
            vec!["net", "route", "add", "default", "--via", "198.51.100.1"],
        ] {
            let mut a = args.clone();
            a.extend(["--ns", d.as_str()]);
            self.ok(&a);
        }
        self.dns = Some(fake_nameserver(&d, self.dns_stop.clone()));

        let root = self.base.join("root");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::copy(busybox().unwrap(), root.join("bin/busybox")).unwrap();
        fs::write(
            root.join("etc/resolv.conf"),
            format!("nameserver {NAMESERVER}\n"),
        )
        .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{c}"))
            .arg("chroot")
            .arg(&root)
            .args(["/bin/busybox", "sleep", "600"])
            .spawn()
            .expect("spawn container process");
        let pid = child.id();
        self.container = Some(child);
        // nsenter and chroot exec in place: wait until the pid's root is the directory.
        let deadline = Instant::now() + Duration::from_secs(5);
        while fs::read_link(format!("/proc/{pid}/root")).ok().as_deref() != Some(&root) {
            assert!(
                Instant::now() < deadline,
                "container process did not chroot"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        (c, root, pid)
    }

    /// `net doctor TARGET --json ARGS`: the exit code and the report.
    fn doctor(&self, target: &str, args: &[&str]) -> (i32, Value, Output) {
        let mut a = vec!["net", "doctor", target, "--json", "--timeout-ms", "1500"];
        a.extend_from_slice(args);
        let out = self.cella(&a);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}): {}", show(&out)));
        (out.status.code().unwrap_or(-1), v, out)
    }

    /// nft commands run inside namespace `ns`.
    fn nft(&self, ns: &str, script: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft {script}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.container.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.dns_stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.dns.take() {
            let _ = h.join();
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

/// A nameserver on 198.51.100.53:53 inside `ns`: A queries get 203.0.113.7, names under
/// `nx.` get NXDOMAIN. Runs until `stop` is set.
fn fake_nameserver(ns: &str, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let file = File::open(Path::new("/run/netns").join(ns)).expect("open netns");
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        // SAFETY: `file` is an open namespace file owned by this closure for the call;
        // setns changes only this thread's network namespace, and the thread ends here.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        let s = UdpSocket::bind((NAMESERVER, 53)).expect("bind nameserver");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, peer)) = s.recv_from(&mut buf) else {
                continue;
            };
            if n < 17 {
                continue;
            }
            // The question ends at the name's zero byte plus type and class.
            let mut i = 12;
            while i < n && buf[i] != 0 {
                i += 1 + usize::from(buf[i]);
            }
            let qend = (i + 5).min(n);
            let nx = buf[12] == 2 && &buf[13..15] == b"nx";
            let mut r = buf[..qend].to_vec();
            r[2] = 0x81;
            r[3] = if nx { 0x83 } else { 0x80 };
            r[6] = 0;
            r[7] = if nx { 0 } else { 1 };
            r[8..12].fill(0);
            if !nx {
                r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 7]);
            }
            let _ = s.send_to(&r, peer);
        }
    });
    rx.recv().expect("nameserver bound");
    h
}

fn ready() -> bool {
    require_root()
        && require_tool("ip")
        && require_tool("nft")
        && require_tool("nsenter")
        && require_tool("chroot")
        && cella_tests::skip_unless(busybox().is_some(), "needs busybox-static")
}

fn layer<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["layer"] == name)
        .unwrap_or_else(|| panic!("no {name} layer in {report}"))
}

#[test]
fn all_good_exits_zero_for_pid_container_and_netns() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let (c, root, pid) = lab.world();
    let t0 = Instant::now();
    let (code, r, out) = lab.doctor(&pid.to_string(), &["--name", "www.example.test"]);
    eprintln!("doctor with a query took {:?}", t0.elapsed());
    assert_eq!(code, 0, "{}", show(&out));
    assert_eq!(r["ok"], true);
    assert_eq!(r["first_failure"], Value::Null);
    assert_eq!(r["nameserver"], NAMESERVER);
    for l in [
        "resolv.conf",
        "link",
        "route",
        "neighbor",
        "firewall",
        "dns",
    ] {
        assert_eq!(layer(&r, l)["status"], "ok", "{l}: {r}");
    }
    assert!(
        layer(&r, "dns")["detail"]
            .as_str()
            .unwrap()
            .contains("203.0.113.7"),
        "{r}"
    );
    // The route layer shows what `net route get` shows.
    let route = lab.ok(&["net", "route", "get", &c, NAMESERVER]);
    assert_eq!(
        layer(&r, "route")["detail"].as_str().unwrap(),
        route.trim(),
        "{r}"
    );
    // The same by container id (state.json names the pid) and in text form.
    let state_root = lab.base.join("cella-root");
    let id = "doc1";
    fs::create_dir_all(state_root.join(id)).unwrap();
    fs::write(
        state_root.join(id).join("state.json"),
        format!(r#"{{"id":"{id}","pid":{pid},"status":"running"}}"#),
    )
    .unwrap();
    let out = lab.cella(&[
        "--root",
        state_root.to_str().unwrap(),
        "net",
        "doctor",
        id,
        "--name",
        "www.example.test",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        text.contains(&format!("container {id} (pid {pid})")),
        "{text}"
    );
    assert!(text.contains("all layers OK"), "{text}");
    // A named namespace has no root of its own: point doctor at a resolv.conf.
    let rc = root.join("etc/resolv.conf").display().to_string();
    let (code, r, out) = lab.doctor(&c, &["--resolv-conf", &rc]);
    assert_eq!(code, 0, "{}", show(&out));
    assert_eq!(layer(&r, "dns")["status"], "skip");
    // lo down does not stop DNS to a remote nameserver: a warning, exit 0.
    lab.ok(&["net", "link", "set", "lo", "--down", "--ns", &c]);
    let (code, r, _) = lab.doctor(&pid.to_string(), &[]);
    assert_eq!(
        (code, &layer(&r, "link")["status"]),
        (0, &Value::from("warn")),
        "{r}"
    );
    lab.ok(&["net", "link", "set", "lo", "--up", "--ns", &c]);
    // A name the nameserver does not know: the dns layer fails, nothing below it.
    let (code, r, _) = lab.doctor(&pid.to_string(), &["--name", "nx.example.test"]);
    assert_eq!((code, r["first_failure"].as_str()), (3, Some("dns")), "{r}");
}

#[test]
fn missing_resolv_conf_is_the_first_broken_layer() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let (_c, root, pid) = lab.world();
    fs::remove_file(root.join("etc/resolv.conf")).unwrap();
    let (code, r, _) = lab.doctor(&pid.to_string(), &[]);
    assert_eq!(code, 3);
    assert_eq!(r["first_failure"], "resolv.conf", "{r}");
    let rc = layer(&r, "resolv.conf");
    assert!(
        rc["detail"].as_str().unwrap().contains("does not exist"),
        "{r}"
    );
    assert!(
        rc["fix"].as_str().unwrap().contains("cella net dns write"),
        "{r}"
    );
    // Named by its namespace file, the process's root is still found.
    let (_, r, _) = lab.doctor(&format!("/proc/{pid}/ns/net"), &[]);
    assert_eq!(r["first_failure"], "resolv.conf", "{r}");
    assert_eq!(r["target"]["kind"], "pid", "{r}");
    // A resolv.conf with no nameserver is as broken.
    fs::write(root.join("etc/resolv.conf"), "search example.test\n").unwrap();
    let (code, r, _) = lab.doctor(&pid.to_string(), &[]);
    assert_eq!(
        (code, r["first_failure"].as_str()),
        (3, Some("resolv.conf"))
    );
    // A loopback nameserver nobody listens on in the container (a host's stub resolver).
    fs::write(root.join("etc/resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
    let (code, r, _) = lab.doctor(&pid.to_string(), &[]);
    assert_eq!(
        (code, r["first_failure"].as_str()),
        (3, Some("resolv.conf"))
    );
    assert!(
        layer(&r, "resolv.conf")["detail"]
            .as_str()
            .unwrap()
            .contains("loopback"),
        "{r}"
    );
}

#[test]
fn no_route_to_the_nameserver_is_found() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let (c, _root, pid) = lab.world();
    lab.ok(&[
        "net",
        "route",
        "del",
        "default",
        "--via",
        "10.77.0.1",
        "--ns",
        &c,
    ]);
    let out = lab.cella(&[
        "net",
        "doctor",
        &pid.to_string(),
        "--name",
        "www.example.test",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("route") && l.contains("no route")),
        "{text}"
    );
    assert!(text.contains("first broken layer: route"), "{text}");
    assert!(text.contains("route add default"), "{text}");
    assert!(text.contains(&format!("--ns /proc/{pid}/ns/net")), "{text}");
    // A gateway nobody answers for: on-link, but no ARP answer once the query tried.
    lab.ok(&[
        "net",
        "route",
        "add",
        "default",
        "--via",
        "10.77.0.254",
        "--ns",
        &c,
    ]);
    let (_, r, _) = lab.doctor(&pid.to_string(), &["--name", "www.example.test"]);
    assert_eq!(r["first_failure"], "neighbor", "{r}");
    assert!(
        layer(&r, "neighbor")["detail"]
            .as_str()
            .unwrap()
            .contains("10.77.0.254 does not answer ARP"),
        "{r}"
    );
    lab.ok(&[
        "net",
        "route",
        "del",
        "default",
        "--via",
        "10.77.0.254",
        "--ns",
        &c,
    ]);
    // The link layer above it is fine: eth0 is up with its address.
    let (_, r, _) = lab.doctor(&pid.to_string(), &[]);
    assert_eq!(layer(&r, "link")["status"], "ok", "{r}");
    assert_eq!(r["first_failure"], "route");
    // A link taken down is found one layer earlier.
    lab.ok(&["net", "link", "set", "eth0", "--down", "--ns", &c]);
    let (_, r, _) = lab.doctor(&pid.to_string(), &[]);
    assert_eq!(r["first_failure"], "link", "{r}");
}

#[test]
fn a_rule_dropping_udp_53_is_found() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let (c, _root, pid) = lab.world();
    lab.nft(
        &c,
        "table inet dnsblock {
  chain out {
    type filter hook output priority 0; policy accept;
    udp dport 53 drop
  }
}
",
    );
    let (code, r, _) = lab.doctor(&pid.to_string(), &["--name", "www.example.test"]);
    assert_eq!(code, 3);
    assert_eq!(r["first_failure"], "firewall", "{r}");
    let fw = layer(&r, "firewall");
    let detail = fw["detail"].as_str().unwrap();
    assert!(
        detail.contains("inet dnsblock out") && detail.contains("udp dport 53 drop"),
        "{r}"
    );
    assert!(
        fw["fix"]
            .as_str()
            .unwrap()
            .contains("nft delete rule inet dnsblock out handle"),
        "{r}"
    );
    // And the query really does not get through.
    assert_eq!(layer(&r, "dns")["status"], "fail", "{r}");
    lab.nft(&c, "delete table inet dnsblock");
    let (code, _, _) = lab.doctor(&pid.to_string(), &[]);
    assert_eq!(code, 0);
    // A legacy iptables rule (which nft does not list) is found too.
    if cella_tests::which("iptables-legacy").is_some() {
        let rule = ["-p", "udp", "-m", "udp", "--dport", "53", "-j", "DROP"];
        let run = |op: &str| {
            let out = Command::new("ip")
                .args(["netns", "exec", &c, "iptables-legacy", op, "OUTPUT"])
                .args(rule)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", show(&out));
        };
        run("-A");
        let (code, r, _) = lab.doctor(&pid.to_string(), &[]);
        assert_eq!((code, r["first_failure"].as_str()), (3, Some("firewall")));
        let fw = layer(&r, "firewall");
        assert!(
            fw["fix"]
                .as_str()
                .unwrap()
                .contains("iptables-legacy -D OUTPUT -p udp -m udp --dport 53 -j DROP"),
            "{r}"
        );
        run("-D");
    }
    // The same rule in the host's forward chain is found there.
    let host = lab.host.clone();
    lab.nft(
        &host,
        "table ip hostfw {
  chain fw {
    type filter hook forward priority 0; policy accept;
    ip daddr 198.51.100.53 udp dport 53 reject
  }
}
",
    );
    let (code, r, _) = lab.doctor(&pid.to_string(), &[]);
    assert_eq!((code, r["first_failure"].as_str()), (3, Some("firewall")));
    assert!(
        layer(&r, "firewall")["detail"]
            .as_str()
            .unwrap()
            .contains("host's forward chain"),
        "{r}"
    );
}

#[test]
fn dns_write_makes_hosts_and_resolv_conf() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let (c, _root, pid) = lab.world();
    let dir = lab.base.join("dns");
    let host_rc = lab.base.join("host-resolv.conf");
    fs::write(
        &host_rc,
        "nameserver 127.0.0.53\nsearch corp.test\noptions edns0\n",
    )
    .unwrap();
    let d = dir.display().to_string();
    let h = host_rc.display().to_string();
    // The host lists only a loopback stub: the container's gateway is used instead.
    let out = lab.cella(&[
        "net",
        "dns",
        "write",
        "--netns",
        &c,
        "--dir",
        &d,
        "--hostname",
        "web",
        "--domain",
        "example.test",
        "--add-host",
        "db:10.77.0.9",
        "--host-resolv-conf",
        &h,
    ]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway 10.77.0.1"));
    let hosts = fs::read_to_string(dir.join("hosts")).unwrap();
    assert!(hosts.starts_with("127.0.0.1\tlocalhost"), "{hosts}");
    assert!(hosts.contains("::1\tlocalhost"), "{hosts}");
    assert!(
        hosts.contains("\n10.77.0.2\tweb.example.test web\n"),
        "{hosts}"
    );
    assert!(hosts.ends_with("10.77.0.9\tdb\n"), "{hosts}");
    assert_eq!(
        fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        "search corp.test\nnameserver 10.77.0.1\noptions edns0\n"
    );
    // Given nameservers, search and options win; by pid (--id) this time.
    lab.ok(&[
        "net",
        "dns",
        "write",
        "--id",
        &pid.to_string(),
        "--dir",
        &d,
        "--hostname",
        "web",
        "--nameserver",
        NAMESERVER,
        "--search",
        "a.test",
        "--search",
        "b.test",
        "--option",
        "ndots:2",
        "--host-resolv-conf",
        &h,
    ]);
    assert_eq!(
        fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        format!("search a.test b.test\nnameserver {NAMESERVER}\noptions ndots:2\n")
    );
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["hosts", "resolv.conf"], "temporary files left");
    // The mounts a runtime adds to config.json.
    let m: Value = serde_json::from_str(&lab.ok(&["net", "dns", "mounts", "--dir", &d])).unwrap();
    assert_eq!(m[0]["destination"], "/etc/hosts");
    assert_eq!(m[1]["destination"], "/etc/resolv.conf");
    assert_eq!(m[1]["type"], "bind");
    assert_eq!(
        m[1]["source"],
        dir.join("resolv.conf").display().to_string()
    );
    assert_eq!(m[1]["options"], serde_json::json!(["rbind", "ro"]));
    // A container whose resolv.conf is the written one passes doctor.
    let (code, r, _) = lab.doctor(
        &pid.to_string(),
        &[
            "--resolv-conf",
            &dir.join("resolv.conf").display().to_string(),
            "--name",
            "x.test",
        ],
    );
    assert_eq!(code, 0, "{r}");
}

#[test]
fn bad_input_gets_a_clear_error() {
    if !ready() {
        return;
    }
    let lab = Lab::new();
    let root = lab.base.join("root-empty");
    let r = root.display().to_string();
    let out = lab.cella(&["--root", &r, "net", "doctor", "no-such-thing-xyz"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        err.contains("unknown target \"no-such-thing-xyz\"")
            && err.contains("/run/netns/no-such-thing-xyz"),
        "{err}"
    );
    let out = lab.cella(&["net", "doctor", "999999999"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such process"));
    // A container whose process is gone.
    fs::create_dir_all(root.join("dead")).unwrap();
    fs::write(root.join("dead/state.json"), r#"{"pid":999999999}"#).unwrap();
    let out = lab.cella(&["--root", &r, "net", "doctor", "dead"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not running"),
        "{}",
        show(&out)
    );
    // dns write: a bad host name writes nothing; an unknown namespace is named.
    let dir = lab.base.join("dns");
    let d = dir.display().to_string();
    let out = lab.cella(&[
        "net",
        "dns",
        "write",
        "--netns",
        &lab.host,
        "--dir",
        &d,
        "--hostname",
        "bad name",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hostname:"),
        "{}",
        show(&out)
    );
    let out = lab.cella(&[
        "net",
        "dns",
        "write",
        "--netns",
        &lab.host,
        "--dir",
        &d,
        "--hostname",
        "ok",
        "--add-host",
        "nocolon",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("add-host[0]"));
    let out = lab.cella(&[
        "net",
        "dns",
        "write",
        "--netns",
        "nosuch-ns-xyz",
        "--dir",
        &d,
        "--hostname",
        "ok",
        "--nameserver",
        NAMESERVER,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not exist"),
        "{}",
        show(&out)
    );
    assert!(!dir.exists(), "a refused write left {}", dir.display());
}
