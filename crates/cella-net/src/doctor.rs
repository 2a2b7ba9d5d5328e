//! `net doctor`: why a container cannot resolve names, layer by layer.
//!
//! The layers, in the order a DNS query meets them:
//!
//! 1. `resolv.conf`: the file the target's resolver reads exists and lists a nameserver
//!    the target can reach (a loopback nameserver needs a listener in the target's own
//!    network namespace);
//! 2. `link`: loopback is up, and the interface toward the nameserver is up with an
//!    address;
//! 3. `route`: the target's tables and rules choose a usable route to the nameserver
//!    (RTM_GETROUTE inside its namespace, the lookup `net route get` prints);
//! 4. `neighbor`: the next hop is on-link and answers ARP;
//! 5. `firewall`: no nftables rule in the target's namespace (nor in the forward chains
//!    of the namespace doctor runs in, the host) drops or rejects port 53;
//! 6. `dns`: optionally, a real query for a name, sent from inside the target's
//!    namespace.
//!
//! Every layer is checked where it can be; the first that fails is the diagnosis. The
//! library only reads: it never changes the target.

use crate::netlink::{Link, Netlink, NetlinkError, Route, TABLE_MAIN};
use crate::netns::{Netns, NetnsError, NetnsRef};
use crate::resolv::ResolvConf;
use serde_json::Value;
use std::collections::VecDeque;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Errors that stop the doctor before any layer is checked.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// The target names nothing doctor can find.
    #[error(
        "unknown target {target:?}: not a running pid, not a container in `{}`, not a \
         network namespace (`{}`)",
        root.display(),
        netns.display()
    )]
    UnknownTarget {
        /// What was given.
        target: String,
        /// The state root searched for containers.
        root: PathBuf,
        /// The namespace path tried.
        netns: PathBuf,
    },
    /// A pid was given but no such process exists.
    #[error("target pid {0}: no such process")]
    NoSuchProcess(String),
    /// The container exists but has no running process.
    #[error("container {id:?} (`{}`) is not running (pid {pid})", state.display())]
    NotRunning {
        /// The container id.
        id: String,
        /// Its state file.
        state: PathBuf,
        /// The pid recorded.
        pid: i64,
    },
    /// A state file could not be read.
    #[error("read container state `{}`", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A state file holds no usable pid.
    #[error("container state `{}`: field \"pid\": missing or not a number", .0.display())]
    StateFormat(PathBuf),
    /// The target's network namespace could not be opened or entered.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Netlink failed outright (not a routing answer).
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// What kind of thing the target was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A process id.
    Pid,
    /// A cella container (its state names its pid).
    Container,
    /// A named network namespace or a namespace file.
    Netns,
}

/// A resolved target: its network namespace, and where its files are.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Target {
    /// What was given.
    pub label: String,
    /// What it turned out to be.
    pub kind: TargetKind,
    /// The process whose namespaces are examined, if any.
    pub pid: Option<i32>,
    /// The network namespace file.
    pub netns: PathBuf,
    /// The root directory the target's resolver sees (`/proc/PID/root`), if known.
    pub root: Option<PathBuf>,
}

fn proc_exists(pid: i64) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// Finds what `s` names: a pid (all digits), a container id with state under
/// `state_root/<id>/state.json`, or a network namespace (a name under /run/netns or a
/// path).
pub fn resolve_target(s: &str, state_root: &Path) -> Result<Target, DoctorError> {
    let from_pid = |pid: i32, kind| Target {
        label: s.into(),
        kind,
        pid: Some(pid),
        netns: PathBuf::from(format!("/proc/{pid}/ns/net")),
        root: Some(PathBuf::from(format!("/proc/{pid}/root"))),
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let pid: i64 = s.parse().unwrap_or(i64::MAX);
        let pid = match i32::try_from(pid) {
            Ok(p) if proc_exists(pid) => p,
            _ => return Err(DoctorError::NoSuchProcess(s.into())),
        };
        return Ok(from_pid(pid, TargetKind::Pid));
    }
    if !s.is_empty() && !s.contains('/') && s != "." && s != ".." {
        let state = state_root.join(s).join("state.json");
        match fs::read(&state) {
            Ok(text) => {
                let v: Value = serde_json::from_slice(&text)
                    .map_err(|_| DoctorError::StateFormat(state.clone()))?;
                let pid = v
                    .get("pid")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| DoctorError::StateFormat(state.clone()))?;
                if !proc_exists(pid) {
                    return Err(DoctorError::NotRunning {
                        id: s.into(),
                        state,
                        pid,
                    });
                }
                let pid = i32::try_from(pid).map_err(|_| DoctorError::StateFormat(state))?;
                return Ok(from_pid(pid, TargetKind::Container));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(DoctorError::State {
                    path: state,
                    source,
                });
            }
        }
    }
    // `/proc/PID/ns/net` names a process: look at its root too.
    if let Some(pid) = s
        .strip_prefix("/proc/")
        .and_then(|r| r.strip_suffix("/ns/net"))
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| proc_exists((*p).into()))
    {
        return Ok(from_pid(pid, TargetKind::Pid));
    }
    let r = NetnsRef::parse(s);
    let path = r.path();
    if s.is_empty() || !path.exists() {
        return Err(DoctorError::UnknownTarget {
            target: s.into(),
            root: state_root.into(),
            netns: path,
        });
    }
    Ok(Target {
        label: s.into(),
        kind: TargetKind::Netns,
        pid: None,
        netns: path,
        root: None,
    })
}

/// Resolves `path` (absolute) under `root` the way a process whose root is `root` would:
/// symlinks, absolute ones included, never lead out of `root`.
pub fn resolve_in_root(root: &Path, path: &str) -> io::Result<PathBuf> {
    let mut todo: VecDeque<String> = path.split('/').map(String::from).collect();
    let mut done: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_str() {
            "" | "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let mut here = root.to_path_buf();
        here.extend(&done);
        here.push(&c);
        let meta = fs::symlink_metadata(&here)?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = fs::read_link(&here)?;
            let t = target.to_string_lossy();
            if t.starts_with('/') {
                done.clear();
            }
            for part in t.split('/').rev() {
                todo.push_front(part.into());
            }
        } else {
            done.push(c);
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&done);
    Ok(out)
}

/// The layers doctor checks, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Layer {
    /// resolv.conf in the target's mount namespace.
    #[serde(rename = "resolv.conf")]
    ResolvConf,
    /// Link state and addresses.
    #[serde(rename = "link")]
    Link,
    /// A route to the nameserver.
    #[serde(rename = "route")]
    Route,
    /// The next hop answers ARP.
    #[serde(rename = "neighbor")]
    Neighbor,
    /// Firewall rules on port 53.
    #[serde(rename = "firewall")]
    Firewall,
    /// A real query.
    #[serde(rename = "dns")]
    Dns,
}

impl Layer {
    /// The name printed and used in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Layer::ResolvConf => "resolv.conf",
            Layer::Link => "link",
            Layer::Route => "route",
            Layer::Neighbor => "neighbor",
            Layer::Firewall => "firewall",
            Layer::Dns => "dns",
        }
    }
}

/// The outcome of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Ok,
    /// Works, with something worth knowing.
    Warn,
    /// Broken.
    Fail,
    /// Not checked (the reason says why).
    Skip,
}

/// One layer's result.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    /// Which layer.
    pub layer: Layer,
    /// Its outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// How to fix it, when it is broken.
    pub fix: Option<String>,
}

impl Check {
    fn new(layer: Layer, status: Status, detail: impl Into<String>) -> Check {
        Check {
            layer,
            status,
            detail: detail.into(),
            fix: None,
        }
    }

    fn fix(mut self, f: impl Into<String>) -> Check {
        self.fix = Some(f.into());
        self
    }
}

/// What doctor found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// The target.
    pub target: Target,
    /// The resolv.conf read, if one was found.
    pub resolv_conf: Option<PathBuf>,
    /// The nameserver whose path was checked.
    pub nameserver: Option<IpAddr>,
    /// One result per layer, in order.
    pub checks: Vec<Check>,
}

impl Report {
    /// The first broken layer: the diagnosis.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.status == Status::Fail)
    }
}

/// How to run doctor.
#[derive(Clone, Debug)]
pub struct Options {
    /// Send a real query for this name (A record) to the nameserver.
    pub name: Option<String>,
    /// Check this nameserver instead of the first one listed.
    pub nameserver: Option<IpAddr>,
    /// Read this resolv.conf (on the host) instead of the target's.
    pub resolv_conf: Option<PathBuf>,
    /// How long to wait for the query's answer.
    pub timeout: Duration,
    /// Also check the forward chains of the caller's namespace (the host).
    pub check_host: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            name: None,
            nameserver: None,
            resolv_conf: None,
            timeout: Duration::from_secs(2),
            check_host: true,
        }
    }
}

/// Where the target's resolver reads resolv.conf: inside its root for a process; for a
/// named namespace, `/etc/netns/NAME/resolv.conf` when present (what `ip netns exec`
/// binds over /etc/resolv.conf), else the caller's /etc/resolv.conf.
fn resolv_path(t: &Target) -> io::Result<PathBuf> {
    if let Some(root) = &t.root {
        return resolve_in_root(root, "/etc/resolv.conf");
    }
    if let NetnsRef::Name(n) = NetnsRef::parse(&t.label) {
        let p = Path::new("/etc/netns").join(n).join("resolv.conf");
        if p.exists() {
            return Ok(p);
        }
    }
    Ok(PathBuf::from("/etc/resolv.conf"))
}

/// Checks every layer for `target` and reports what it found.
pub fn diagnose(target: &Target, opts: &Options) -> Result<Report, DoctorError> {
    let ns = Netns::open(&NetnsRef::Path(target.netns.clone()))?;
    // How the fix hints name the namespace: its name, or its file for a process.
    let ns_arg = match target.kind {
        TargetKind::Netns => target.label.clone(),
        _ => target.netns.display().to_string(),
    };
    let mut checks = Vec::new();

    // (a) resolv.conf
    let (path, what) = match (&opts.resolv_conf, &target.root) {
        (Some(p), _) => (Ok(p.clone()), format!("`{}`", p.display())),
        (None, Some(_)) => (
            resolv_path(target),
            "/etc/resolv.conf in the target's root".to_string(),
        ),
        (None, None) => (resolv_path(target), "resolv.conf".to_string()),
    };
    let mut resolv_conf = None;
    let mut listed = ResolvConf::default();
    let dns_write_fix = format!(
        "write one with `cella net dns write --netns {} --dir DIR --hostname NAME` and \
         bind-mount DIR/resolv.conf at /etc/resolv.conf in the container",
        target.netns.display()
    );
    let file_check = match path.and_then(|p| fs::read_to_string(&p).map(|t| (p, t))) {
        Err(e) => {
            let why = if e.kind() == io::ErrorKind::NotFound {
                "does not exist".to_string()
            } else {
                format!("cannot be read: {e}")
            };
            Check::new(Layer::ResolvConf, Status::Fail, format!("{what} {why}"))
                .fix(dns_write_fix.clone())
        }
        Ok((p, text)) => {
            listed = ResolvConf::parse(&text);
            resolv_conf = Some(p.clone());
            if listed.nameservers.is_empty() {
                Check::new(
                    Layer::ResolvConf,
                    Status::Fail,
                    format!("`{}` lists no nameserver", p.display()),
                )
                .fix(format!("add a `nameserver IP` line, or {dns_write_fix}"))
            } else {
                let list: Vec<String> =
                    listed.nameservers.iter().map(ToString::to_string).collect();
                Check::new(
                    Layer::ResolvConf,
                    Status::Ok,
                    format!("`{}`: nameserver {}", p.display(), list.join(", ")),
                )
            }
        }
    };
    let nameserver = opts
        .nameserver
        .or_else(|| listed.nameservers.first().copied());
    let Some(nsip) = nameserver else {
        checks.push(file_check);
        for l in [
            Layer::Link,
            Layer::Route,
            Layer::Neighbor,
            Layer::Firewall,
            Layer::Dns,
        ] {
            checks.push(Check::new(l, Status::Skip, "no nameserver to check"));
        }
        return Ok(Report {
            target: target.clone(),
            resolv_conf,
            nameserver,
            checks,
        });
    };

    // Everything read inside the namespace is read in one visit.
    let seen = ns.run(|| inside(nsip))??;
    let file_check = if file_check.status == Status::Ok && nsip.is_loopback() && !seen.listener {
        Check::new(
            Layer::ResolvConf,
            Status::Fail,
            format!(
                "nameserver {nsip} is a loopback address and nothing listens on port 53 there \
                 in the target's network namespace (a host's local stub resolver is not \
                 reachable from a container)"
            ),
        )
        .fix(format!(
            "list a nameserver the container can reach (`cella net dns write` picks one), or \
             run a resolver inside it; {dns_write_fix}"
        ))
    } else {
        file_check
    };
    checks.push(file_check);

    // (b) link
    let v6 = nsip.is_ipv6();
    let has_addr = |l: &Link| {
        seen.addrs
            .iter()
            .any(|(i, a)| *i == l.index && a.is_ipv6() == v6)
    };
    let lo = seen.links.iter().find(|l| l.name == "lo");
    let lo_ok = lo.is_some_and(|l| l.up);
    let route_oif = seen.route.as_ref().ok().and_then(|r| r.oif);
    let mut link_check = match route_oif.and_then(|o| seen.links.iter().find(|l| l.index == o)) {
        Some(l) if l.up && (has_addr(l) || l.name == "lo") => Check::new(
            Layer::Link,
            Status::Ok,
            format!(
                "{} is up with an address{}",
                l.name,
                addr_list(&seen, l.index, v6)
            ),
        ),
        Some(l) => Check::new(
            Layer::Link,
            Status::Fail,
            format!(
                "{} (toward {nsip}) is {}",
                l.name,
                if l.up {
                    "up but has no address"
                } else {
                    "down"
                }
            ),
        )
        .fix(format!("cella net link set {} --up --ns {ns_arg}", l.name)),
        None => {
            let usable: Vec<&Link> = seen
                .links
                .iter()
                .filter(|l| l.name != "lo" && l.up && has_addr(l))
                .collect();
            if let Some(l) = usable.first() {
                Check::new(
                    Layer::Link,
                    Status::Ok,
                    format!(
                        "{} is up with an address{}",
                        l.name,
                        addr_list(&seen, l.index, v6)
                    ),
                )
            } else {
                let states: Vec<String> = seen
                    .links
                    .iter()
                    .filter(|l| l.name != "lo")
                    .map(|l| {
                        format!(
                            "{} {}{}",
                            l.name,
                            if l.up { "up" } else { "down" },
                            if has_addr(l) { "" } else { ", no address" }
                        )
                    })
                    .collect();
                let fam = if v6 { "IPv6" } else { "IPv4" };
                let detail = if states.is_empty() {
                    "no interface but lo in the target's network namespace".to_string()
                } else {
                    format!(
                        "no interface is up with an {fam} address ({})",
                        states.join("; ")
                    )
                };
                Check::new(Layer::Link, Status::Fail, detail).fix(format!(
                    "attach the namespace to a network (`cella net attach --netns {} ...`) or \
                     bring its interface up (`cella net link set IF --up --ns {ns_arg}`)",
                    target.netns.display()
                ))
            }
        }
    };
    if !lo_ok && link_check.status != Status::Fail {
        let (status, why) = if nsip.is_loopback() {
            (Status::Fail, "and the nameserver is a loopback address")
        } else {
            (
                Status::Warn,
                "(DNS does not need it, but localhost services do)",
            )
        };
        link_check = Check::new(
            Layer::Link,
            status,
            format!("{}; but lo is down {why}", link_check.detail),
        )
        .fix(format!("cella net link set lo --up --ns {ns_arg}"));
    }
    let link_failed = link_check.status == Status::Fail;
    checks.push(link_check);

    // (c) route, with the lookup `cella net route get` makes.
    let name_of = |i: u32| {
        seen.links
            .iter()
            .find(|l| l.index == i)
            .map_or_else(|| format!("#{i}"), |l| l.name.clone())
    };
    let route_get_hint = format!("see the path with `cella net route get {ns_arg} {nsip}`");
    let route = match &seen.route {
        Ok(r) if matches!(r.kind.as_str(), "unicast" | "local") => {
            checks.push(Check::new(
                Layer::Route,
                Status::Ok,
                show_route(nsip, r, &name_of),
            ));
            Some(r.clone())
        }
        Ok(r) => {
            checks.push(
                Check::new(
                    Layer::Route,
                    Status::Fail,
                    format!(
                        "the route to {nsip} is `{}`: the kernel refuses to send there",
                        show_route(nsip, r, &name_of)
                    ),
                )
                .fix(format!(
                    "remove that route or add a more specific one; {route_get_hint}"
                )),
            );
            None
        }
        Err(e) => {
            let detail = match e.errno() {
                Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => {
                    format!("no route to {nsip} in the target's network namespace")
                }
                _ => format!("route lookup for {nsip} failed: {}", chain(e)),
            };
            let status = if link_failed {
                Status::Skip
            } else {
                Status::Fail
            };
            let detail = if link_failed {
                format!("{detail} (follows from the link layer)")
            } else {
                detail
            };
            checks.push(Check::new(Layer::Route, status, detail).fix(format!(
                "add a default route via the network's gateway: `cella net route add default \
                 --via GATEWAY --ns {ns_arg}`; {route_get_hint}"
            )));
            None
        }
    };

    // (d) neighbor
    let mut arp_pending = None;
    match &route {
        None => checks.push(Check::new(Layer::Neighbor, Status::Skip, "no route")),
        Some(r) if r.kind == "local" => checks.push(Check::new(
            Layer::Neighbor,
            Status::Skip,
            "the nameserver is an address of the target itself",
        )),
        Some(r) => {
            let hop = r.gateway.unwrap_or(nsip);
            let dev = r.oif.map(&name_of).unwrap_or_default();
            let check = match (&seen.hop_route, hop) {
                (Some(Ok(hr)), _) if hr.gateway.is_some() => Check::new(
                    Layer::Neighbor,
                    Status::Fail,
                    format!(
                        "next hop {hop} is not on-link (it is itself reached via {})",
                        hr.gateway.map(|g| g.to_string()).unwrap_or_default()
                    ),
                )
                .fix(format!(
                    "use a gateway in a subnet of {dev}; {route_get_hint}"
                )),
                (Some(Err(e)), _) => Check::new(
                    Layer::Neighbor,
                    Status::Fail,
                    format!("next hop {hop} cannot be reached: {}", chain(e)),
                ),
                (_, IpAddr::V4(h)) => match arp_state(&seen.arp, h) {
                    Some(Some(mac)) => Check::new(
                        Layer::Neighbor,
                        Status::Ok,
                        format!("next hop {hop} on {dev} answers ARP ({mac})"),
                    ),
                    Some(None) => neighbor_fail(hop, &dev),
                    None => {
                        arp_pending = Some((h, dev.clone()));
                        Check::new(
                            Layer::Neighbor,
                            Status::Ok,
                            format!("next hop {hop} is on-link on {dev} (no ARP entry yet)"),
                        )
                    }
                },
                (_, IpAddr::V6(_)) => Check::new(
                    Layer::Neighbor,
                    Status::Ok,
                    format!("next hop {hop} is on-link on {dev} (IPv6 neighbor state not checked)"),
                ),
            };
            checks.push(check);
        }
    }

    // (e) firewall
    let src = route.as_ref().and_then(|r| r.src);
    let mut fw = match &seen.ruleset {
        Err(e) => vec![Check::new(
            Layer::Firewall,
            Status::Warn,
            format!("nftables not checked: {e}"),
        )],
        Ok(rs) => firewall_findings(rs, nsip, src, false)
            .into_iter()
            .map(|f| finding_check(f, "the target's network namespace", &ns_arg))
            .collect(),
    };
    if let Some(save) = &seen.legacy {
        fw.extend(
            legacy_findings(save, false)
                .into_iter()
                .map(|f| finding_check(f, "the target's network namespace", &ns_arg)),
        );
    }
    let own = fs::metadata("/proc/thread-self/ns/net").map(|m| (m.dev(), m.ino()));
    let theirs = fs::metadata(&target.netns).map(|m| (m.dev(), m.ino()));
    if opts.check_host && own.is_ok() && own.ok() != theirs.ok() {
        if let Ok(rs) = nft_ruleset() {
            fw.extend(
                firewall_findings(&rs, nsip, src, true)
                    .into_iter()
                    .map(|f| finding_check(f, "the host's forward chain", "")),
            );
        }
        if let Some(save) = legacy_iptables() {
            fw.extend(
                legacy_findings(&save, true)
                    .into_iter()
                    .map(|f| finding_check(f, "the host's forward chain", "")),
            );
        }
    }
    fw.sort_by_key(|c| match c.status {
        Status::Fail => 0,
        Status::Warn => 1,
        _ => 2,
    });
    match fw.first() {
        Some(c) if c.status != Status::Ok => {
            let mut c = c.clone();
            if fw.len() > 1 {
                let more: Vec<&str> = fw[1..].iter().map(|c| c.detail.as_str()).collect();
                c.detail = format!("{}; also: {}", c.detail, more.join("; "));
            }
            checks.push(c);
        }
        _ => checks.push(Check::new(
            Layer::Firewall,
            Status::Ok,
            "no nftables rule drops or rejects port 53 on the path",
        )),
    }

    // (f) a real query
    match &opts.name {
        None => checks.push(Check::new(
            Layer::Dns,
            Status::Skip,
            "give --name NAME to send a real query",
        )),
        Some(name) => {
            let timeout = opts.timeout;
            let name2 = name.clone();
            let answer = ns.run(move || query(nsip, &name2, timeout))?;
            let mut c = dns_check(nsip, name, answer, timeout);
            if c.status == Status::Fail && checks.iter().any(|c| c.status == Status::Fail) {
                c.detail += " (expected while a layer above is broken)";
            }
            if let Some((h, dev)) = &arp_pending {
                // The query made the kernel resolve the next hop: look again.
                let arp =
                    ns.run(|| fs::read_to_string("/proc/thread-self/net/arp").unwrap_or_default())?;
                if let Some(None) = arp_state(&arp, *h) {
                    let nb = checks
                        .iter_mut()
                        .find(|c| c.layer == Layer::Neighbor)
                        .expect("neighbor check was pushed");
                    *nb = neighbor_fail(IpAddr::V4(*h), dev);
                    if c.status == Status::Fail {
                        c.status = Status::Skip;
                        c.detail += " (follows from the neighbor layer)";
                    }
                }
            }
            checks.push(c);
        }
    }
    Ok(Report {
        target: target.clone(),
        resolv_conf,
        nameserver,
        checks,
    })
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += &format!(": {c}");
        cur = c.source();
    }
    s
}

fn neighbor_fail(hop: IpAddr, dev: &str) -> Check {
    Check::new(
        Layer::Neighbor,
        Status::Fail,
        format!("next hop {hop} does not answer ARP on {dev}"),
    )
    .fix(format!(
        "check that {hop} exists and is up on the other end of {dev} (the bridge holds the \
         gateway address and is up; the host end of the veth is up and enslaved)"
    ))
}

fn addr_list(seen: &Inside, index: u32, v6: bool) -> String {
    let a: Vec<String> = seen
        .addrs
        .iter()
        .filter(|(i, a)| *i == index && a.is_ipv6() == v6)
        .map(|(_, a)| a.to_string())
        .collect();
    if a.is_empty() {
        String::new()
    } else {
        format!(" ({})", a.join(", "))
    }
}

/// `198.51.100.53 via 10.77.0.1 dev eth0 src 10.77.0.2`, as `net route get` prints.
fn show_route(dst: IpAddr, r: &Route, name_of: &dyn Fn(u32) -> String) -> String {
    let mut s = match r.kind.as_str() {
        "unicast" => String::new(),
        k => format!("{k} "),
    };
    s += &dst.to_string();
    if let Some(g) = r.gateway {
        s += &format!(" via {g}");
    }
    if let Some(o) = r.oif {
        s += &format!(" dev {}", name_of(o));
    }
    if r.table != TABLE_MAIN {
        s += &format!(" table {}", r.table);
    }
    if let Some(src) = r.src {
        s += &format!(" src {src}");
    }
    if let Some(m) = r.metric {
        s += &format!(" metric {m}");
    }
    s
}

/// What doctor reads inside the target's network namespace.
struct Inside {
    links: Vec<Link>,
    addrs: Vec<(u32, IpAddr)>,
    route: Result<Route, NetlinkError>,
    hop_route: Option<Result<Route, NetlinkError>>,
    arp: String,
    listener: bool,
    ruleset: Result<Value, String>,
    legacy: Option<String>,
}

/// Runs on a thread inside the target's namespace.
fn inside(nsip: IpAddr) -> Result<Inside, NetlinkError> {
    let mut nl = Netlink::open()?;
    let links = nl.links()?;
    let addrs = nl
        .addrs()?
        .into_iter()
        .map(|a| (a.index, a.net.addr))
        .collect();
    let route = nl.route_get(nsip, None, None);
    let hop_route = match &route {
        Ok(r) => r.gateway.map(|g| nl.route_get(g, None, None)),
        Err(_) => None,
    };
    let arp = fs::read_to_string("/proc/thread-self/net/arp").unwrap_or_default();
    let listener = udp_listener(nsip, 53);
    // nft is a separate process: it is started from this thread, so it inherits the
    // target's network namespace.
    let ruleset = nft_ruleset();
    let legacy = legacy_iptables();
    Ok(Inside {
        links,
        addrs,
        route,
        hop_route,
        arp,
        listener,
        ruleset,
        legacy,
    })
}

/// `Some(Some(mac))` when `/proc/net/arp` text holds a complete entry for `ip`,
/// `Some(None)` for an incomplete or failed one, `None` when there is none.
fn arp_state(arp: &str, ip: Ipv4Addr) -> Option<Option<String>> {
    for line in arp.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 4 && f[0].parse::<Ipv4Addr>().ok() == Some(ip) {
            let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).unwrap_or(0);
            // ATF_COM: the entry is complete (the neighbour answered).
            return Some((flags & 0x2 != 0).then(|| f[3].to_string()));
        }
    }
    None
}

/// True when a UDP socket of the calling thread's namespace is bound to `port` on `ip`
/// or on the wildcard address.
fn udp_listener(ip: IpAddr, port: u16) -> bool {
    let (file, want) = match ip {
        IpAddr::V4(a) => ("/proc/thread-self/net/udp", hex_v4(a)),
        IpAddr::V6(a) => ("/proc/thread-self/net/udp6", hex_v6(a)),
    };
    let Ok(text) = fs::read_to_string(file) else {
        return false;
    };
    text.lines().skip(1).any(|l| {
        let Some(local) = l.split_whitespace().nth(1) else {
            return false;
        };
        let Some((addr, p)) = local.split_once(':') else {
            return false;
        };
        u16::from_str_radix(p, 16).ok() == Some(port)
            && (addr == want || addr.bytes().all(|b| b == b'0'))
    })
}

/// An address as /proc/net/udp prints it: the in-memory bytes as one hex number.
fn hex_v4(a: Ipv4Addr) -> String {
    format!("{:08X}", u32::from_ne_bytes(a.octets()))
}

fn hex_v6(a: Ipv6Addr) -> String {
    a.octets()
        .chunks(4)
        .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
        .collect()
}

/// `nft -j list ruleset` in the calling thread's network namespace (a child inherits it).
fn nft_ruleset() -> Result<Value, String> {
    let out = Command::new("nft")
        .args(["-j", "list", "ruleset"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run `nft -j list ruleset`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`nft -j list ruleset`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`nft -j list ruleset`: unreadable output: {e}"))
}

/// `iptables-legacy-save -t filter` in the calling thread's namespace, when that
/// namespace has legacy iptables tables at all (nft does not see them). Skipped, without
/// starting a process, when there are none.
fn legacy_iptables() -> Option<String> {
    let names = fs::read_to_string("/proc/thread-self/net/ip_tables_names").ok()?;
    if !names.lines().any(|l| l.trim() == "filter") {
        return None;
    }
    let out = Command::new("iptables-legacy-save")
        .args(["-t", "filter"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The rules of an `iptables-save` listing (filter table) that drop or reject DNS: in the
/// target (`forward` false) OUTPUT rules on destination port 53 and INPUT rules on source
/// port 53; on the host, FORWARD rules on either.
pub fn legacy_findings(save: &str, forward: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    for line in save.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.first() != Some(&"-A") || w.len() < 2 {
            continue;
        }
        let chain = w[1];
        let arg = |flag: &str| w.iter().position(|x| *x == flag).and_then(|i| w.get(i + 1));
        let verdict = arg("-j").copied().unwrap_or("");
        if verdict != "DROP" && verdict != "REJECT" {
            continue;
        }
        let covers = |v: Option<&&str>| {
            v.is_some_and(|v| {
                v.split(',').any(|p| match p.split_once(':') {
                    Some((a, b)) => {
                        let a = a.parse().unwrap_or(0);
                        let b = b.parse().unwrap_or(u16::MAX);
                        (a..=b).contains(&53u16)
                    }
                    None => p == "53" || p == "domain",
                })
            })
        };
        let dport = covers(arg("--dport")) || covers(arg("--dports"));
        let sport = covers(arg("--sport")) || covers(arg("--sports"));
        let hit = match (forward, chain) {
            (true, "FORWARD") => dport || sport,
            (false, "OUTPUT") => dport,
            (false, "INPUT") => sport,
            _ => false,
        };
        if !hit || w.contains(&"!") {
            continue;
        }
        let proto = arg("-p").copied().unwrap_or("all");
        if proto != "udp" && proto != "tcp" {
            continue;
        }
        out.push(Finding {
            chain: format!("iptables-legacy filter {chain}"),
            what: w[2..].join(" "),
            handle: None,
            udp: proto == "udp",
            legacy: true,
        });
    }
    out
}

/// A rule (or chain policy) that stops DNS packets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// `inet t out`
    pub chain: String,
    /// What stops the packets, in words.
    pub what: String,
    /// The rule's handle (None for a chain policy).
    pub handle: Option<u64>,
    /// True when UDP queries (not only TCP ones) are stopped.
    pub udp: bool,
    /// True for a legacy iptables rule (`what` is its iptables-save text after the chain).
    pub legacy: bool,
}

/// A DNS packet as the firewall sees it.
#[derive(Clone, Copy, Debug)]
struct Pkt {
    udp: bool,
    sport: Option<u16>,
    dport: Option<u16>,
    saddr: Option<IpAddr>,
    daddr: Option<IpAddr>,
}

/// Whether `right` (an nft JSON value: a number, a set, a range, a prefix, a string)
/// holds `x`.
fn covers_port(right: &Value, x: u16) -> bool {
    match right {
        Value::Number(n) => n.as_u64() == Some(u64::from(x)),
        Value::String(s) => s == &x.to_string() || (x == 53 && (s == "domain" || s == "dns")),
        Value::Object(o) => {
            if let Some(set) = o.get("set") {
                match set {
                    Value::Array(a) => a.iter().any(|v| covers_port(v, x)),
                    v => covers_port(v, x),
                }
            } else if let Some(Value::Array(r)) = o.get("range") {
                let lo = r.first().and_then(Value::as_u64).unwrap_or(u64::MAX);
                let hi = r.get(1).and_then(Value::as_u64).unwrap_or(0);
                (lo..=hi).contains(&u64::from(x))
            } else {
                false
            }
        }
        Value::Array(a) => a.iter().any(|v| covers_port(v, x)),
        _ => false,
    }
}

fn covers_addr(right: &Value, ip: IpAddr) -> Option<bool> {
    match right {
        Value::String(s) => s.parse::<IpAddr>().ok().map(|a| a == ip),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                let addr: IpAddr = p.get("addr")?.as_str()?.parse().ok()?;
                let len = u8::try_from(p.get("len")?.as_u64()?).ok()?;
                Some(crate::cidr::IpNet::new(addr, len)?.contains(ip))
            } else if let Some(Value::Array(a)) = o.get("set") {
                let mut any_unknown = false;
                for v in a {
                    match covers_addr(v, ip) {
                        Some(true) => return Some(true),
                        None => any_unknown = true,
                        _ => {}
                    }
                }
                if any_unknown { None } else { Some(false) }
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Evaluates one match statement against `p`: `Some(true/false)` when it can tell,
/// `None` when the match is on something doctor does not model. The flag is true when
/// the match is on a port.
fn eval_match(m: &Value, p: &Pkt) -> (Option<bool>, bool) {
    let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
    let Some(left) = m.get("left") else {
        return (None, false);
    };
    let right = m.get("right").unwrap_or(&Value::Null);
    let negate = op == "!=";
    let apply = |r: Option<bool>| r.map(|b| b != negate);
    if let Some(pl) = left.get("payload") {
        let proto = pl.get("protocol").and_then(Value::as_str).unwrap_or("");
        let field = pl.get("field").and_then(Value::as_str).unwrap_or("");
        match (proto, field) {
            ("udp" | "tcp" | "th", "dport" | "sport") => {
                let proto_ok = proto == "th" || (proto == "udp") == p.udp;
                if !proto_ok {
                    return (Some(false), true);
                }
                let port = if field == "dport" { p.dport } else { p.sport };
                return match port {
                    Some(x) => (apply(Some(covers_port(right, x))), true),
                    None => (None, false),
                };
            }
            ("ip" | "ip6", "daddr" | "saddr") => {
                let a = if field == "daddr" { p.daddr } else { p.saddr };
                let fam_ok = a.is_some_and(|a| a.is_ipv6() == (proto == "ip6"));
                if a.is_some() && !fam_ok {
                    return (Some(false), false);
                }
                return match a {
                    Some(a) => (apply(covers_addr(right, a)), false),
                    None => (None, false),
                };
            }
            _ => return (None, false),
        }
    }
    if let Some(meta) = left.get("meta") {
        if meta.get("key").and_then(Value::as_str) == Some("l4proto") {
            let want = if p.udp { "udp" } else { "tcp" };
            let hit = match right {
                Value::String(s) => Some(s == want),
                Value::Number(n) => Some(n.as_u64() == Some(if p.udp { 17 } else { 6 })),
                Value::Object(o) => o
                    .get("set")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().any(|v| v.as_str() == Some(want))),
                _ => None,
            };
            return (apply(hit), false);
        }
    }
    (None, false)
}

enum Verdict {
    Accept,
    Stop,
    Other,
}

fn verdict(expr: &[Value]) -> Verdict {
    for e in expr {
        if e.get("drop").is_some() {
            return Verdict::Stop;
        }
        if e.get("reject").is_some() {
            return Verdict::Stop;
        }
        if e.get("accept").is_some() {
            return Verdict::Accept;
        }
    }
    Verdict::Other
}

/// Text of a rule's matches and verdict, close to nft's own.
fn describe_rule(expr: &[Value]) -> String {
    let mut parts = Vec::new();
    for e in expr {
        if let Some(m) = e.get("match") {
            let left = m.get("left").unwrap_or(&Value::Null);
            let l = if let Some(p) = left.get("payload") {
                format!(
                    "{} {}",
                    p.get("protocol").and_then(Value::as_str).unwrap_or("?"),
                    p.get("field").and_then(Value::as_str).unwrap_or("?")
                )
            } else if let Some(k) = left.get("meta").and_then(|m| m.get("key")) {
                format!("meta {}", k.as_str().unwrap_or("?"))
            } else if let Some(k) = left.get("ct").and_then(|m| m.get("key")) {
                format!("ct {}", k.as_str().unwrap_or("?"))
            } else {
                left.to_string()
            };
            let op = match m.get("op").and_then(Value::as_str) {
                Some("==") | Some("in") | None => String::new(),
                Some(o) => format!("{o} "),
            };
            parts.push(format!(
                "{l} {op}{}",
                short(m.get("right").unwrap_or(&Value::Null))
            ));
        } else if e.get("drop").is_some() {
            parts.push("drop".into());
        } else if e.get("reject").is_some() {
            parts.push("reject".into());
        } else if e.get("accept").is_some() {
            parts.push("accept".into());
        }
    }
    parts.join(" ")
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(Value::Array(s)) = o.get("set") {
                format!(
                    "{{ {} }}",
                    s.iter().map(short).collect::<Vec<_>>().join(", ")
                )
            } else if let Some(Value::Array(r)) = o.get("range") {
                format!(
                    "{}-{}",
                    short(&r[0]),
                    r.get(1).map(short).unwrap_or_default()
                )
            } else if let Some(p) = o.get("prefix") {
                format!(
                    "{}/{}",
                    p.get("addr").map(short).unwrap_or_default(),
                    p.get("len").map(short).unwrap_or_default()
                )
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

/// The rules and chain policies of an `nft -j list ruleset` listing that stop DNS to or
/// from `ns`: in the target (`forward` false) the output/postrouting path of queries and
/// the prerouting/input path of answers, plus regular chains; on the host (`forward`
/// true) the forward chains, both ways.
pub fn firewall_findings(
    ruleset: &Value,
    ns: IpAddr,
    src: Option<IpAddr>,
    forward: bool,
) -> Vec<Finding> {
    let items = ruleset
        .get("nftables")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let fam_ok = |f: &str| match f {
        "inet" => true,
        "ip" => ns.is_ipv4(),
        "ip6" => ns.is_ipv6(),
        _ => false,
    };
    let mut out = Vec::new();
    for c in items.iter().filter_map(|i| i.get("chain")) {
        let family = c.get("family").and_then(Value::as_str).unwrap_or("");
        let table = c.get("table").and_then(Value::as_str).unwrap_or("");
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        if !fam_ok(family) {
            continue;
        }
        let hook = c.get("hook").and_then(Value::as_str);
        let dirs: &[bool] = match (forward, hook) {
            (true, Some("forward")) => &[true, false],
            (true, _) => continue,
            (false, Some("output" | "postrouting")) => &[true],
            (false, Some("prerouting" | "input")) => &[false],
            (false, Some(_)) => continue,
            (false, None) => &[true, false],
        };
        let rules: Vec<&Value> = items
            .iter()
            .filter_map(|i| i.get("rule"))
            .filter(|r| {
                r.get("family").and_then(Value::as_str) == Some(family)
                    && r.get("table").and_then(Value::as_str) == Some(table)
                    && r.get("chain").and_then(Value::as_str) == Some(name)
            })
            .collect();
        let chain_name = format!("{family} {table} {name}");
        let mut found: Vec<Finding> = Vec::new();
        for udp in [true, false] {
            for &query in dirs {
                let p = if query {
                    Pkt {
                        udp,
                        sport: None,
                        dport: Some(53),
                        saddr: src,
                        daddr: Some(ns),
                    }
                } else {
                    Pkt {
                        udp,
                        sport: Some(53),
                        dport: None,
                        saddr: Some(ns),
                        daddr: src,
                    }
                };
                let mut accepted = false;
                for r in &rules {
                    let expr = r
                        .get("expr")
                        .and_then(Value::as_array)
                        .map_or(&[][..], Vec::as_slice);
                    let mut definite = true;
                    let mut port = false;
                    let mut miss = false;
                    for m in expr.iter().filter_map(|e| e.get("match")) {
                        let (res, on_port) = eval_match(m, &p);
                        match res {
                            Some(false) => miss = true,
                            Some(true) => port |= on_port,
                            None => definite = false,
                        }
                    }
                    if miss {
                        continue;
                    }
                    match verdict(expr) {
                        Verdict::Accept if definite => {
                            accepted = true;
                            break;
                        }
                        Verdict::Stop if definite || port => {
                            let handle = r.get("handle").and_then(Value::as_u64);
                            if !found.iter().any(|f| f.handle == handle) {
                                found.push(Finding {
                                    chain: chain_name.clone(),
                                    what: describe_rule(expr),
                                    handle,
                                    udp,
                                    legacy: false,
                                });
                            }
                            accepted = true;
                            break;
                        }
                        _ => {}
                    }
                }
                if !accepted
                    && hook.is_some()
                    && c.get("policy").and_then(Value::as_str) == Some("drop")
                    && !found.iter().any(|f| f.handle.is_none())
                {
                    found.push(Finding {
                        chain: chain_name.clone(),
                        what: format!(
                            "policy drop, and no rule accepts {} port 53 {}",
                            if udp { "UDP" } else { "TCP" },
                            if query { "queries" } else { "answers" }
                        ),
                        handle: None,
                        udp,
                        legacy: false,
                    });
                }
            }
        }
        out.extend(found);
    }
    out
}

fn finding_check(f: Finding, place: &str, ns_arg: &str) -> Check {
    let status = if f.udp { Status::Fail } else { Status::Warn };
    let rule = match f.handle {
        Some(h) => format!("rule `{}` (handle {h})", f.what),
        None if f.legacy => format!("rule `{}`", f.what),
        None => f.what.clone(),
    };
    let detail = format!(
        "chain {} in {place}: {rule} stops {} DNS",
        f.chain,
        if f.udp { "UDP" } else { "TCP (large answers)" }
    );
    let exec = if ns_arg.is_empty() {
        String::new()
    } else {
        format!("cella net ns exec {ns_arg} -- ")
    };
    let fix = match f.handle {
        None if f.legacy => {
            let chain = f.chain.rsplit(' ').next().unwrap_or_default();
            format!("delete it: `{exec}iptables-legacy -D {chain} {}`", f.what)
        }
        Some(h) => format!("delete it: `{exec}nft delete rule {} handle {h}`", f.chain),
        None => format!(
            "add a rule accepting port 53 before the policy: `{exec}nft insert rule {} udp dport 53 accept`",
            f.chain
        ),
    };
    Check::new(Layer::Firewall, status, detail).fix(fix)
}

/// The outcome of a query.
#[derive(Debug)]
enum Answer {
    /// Addresses in the answer (possibly none) and the response code.
    Reply { rcode: u8, addrs: Vec<IpAddr> },
    /// No reply in time.
    Timeout,
    /// The nameserver's host said nothing listens (ICMP port unreachable).
    Refused,
    /// Something else went wrong.
    Error(String),
}

fn dns_check(ns: IpAddr, name: &str, a: Answer, timeout: Duration) -> Check {
    match a {
        Answer::Reply { rcode: 0, addrs } if !addrs.is_empty() => {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            Check::new(
                Layer::Dns,
                Status::Ok,
                format!("{ns} answered: {name} has address {}", list.join(", ")),
            )
        }
        Answer::Reply { rcode: 0, .. } => Check::new(
            Layer::Dns,
            Status::Warn,
            format!("{ns} answered, but {name} has no IPv4 address there"),
        ),
        Answer::Reply { rcode: 3, .. } => Check::new(
            Layer::Dns,
            Status::Fail,
            format!("{ns} says {name} does not exist (NXDOMAIN)"),
        )
        .fix("check the name's spelling and the search domains in resolv.conf"),
        Answer::Reply { rcode, .. } => Check::new(
            Layer::Dns,
            Status::Fail,
            format!(
                "{ns} answered {name} with error code {rcode} ({})",
                rcode_name(rcode)
            ),
        )
        .fix("the nameserver is reachable but cannot answer: check its own upstream"),
        Answer::Timeout => Check::new(
            Layer::Dns,
            Status::Fail,
            format!(
                "no answer from {ns} port 53 within {} ms",
                timeout.as_millis()
            ),
        )
        .fix(
            "the query left but no answer came back: check that the nameserver runs, and that \
             the way back (its route to the target, NAT, firewalls between) lets answers through",
        ),
        Answer::Refused => Check::new(
            Layer::Dns,
            Status::Fail,
            format!("{ns} port 53 is unreachable (nothing listens there, or a reject rule)"),
        )
        .fix("start the nameserver, or list one that runs"),
        Answer::Error(e) => Check::new(Layer::Dns, Status::Fail, format!("query to {ns}: {e}")),
    }
}

fn rcode_name(r: u8) -> &'static str {
    match r {
        1 => "FORMERR",
        2 => "SERVFAIL",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "other",
    }
}

/// A DNS query for the A records of `name` (RFC 1035 §4.1).
pub fn encode_query(id: u16, name: &str) -> Option<Vec<u8>> {
    let mut m = Vec::with_capacity(32 + name.len());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 1]); // QTYPE A, QCLASS IN
    (m.len() <= 512).then_some(m)
}

fn skip_name(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *b.get(i)?;
        if len & 0xc0 == 0xc0 {
            return Some(i + 2);
        }
        if len == 0 {
            return Some(i + 1);
        }
        i += 1 + usize::from(len);
    }
}

/// Reads a reply to query `id`: its response code and the A records of its answer.
pub fn decode_reply(id: u16, b: &[u8]) -> Option<(u8, Vec<IpAddr>)> {
    if b.len() < 12 || u16::from_be_bytes([b[0], b[1]]) != id || b[2] & 0x80 == 0 {
        return None;
    }
    let rcode = b[3] & 0x0f;
    let qd = u16::from_be_bytes([b[4], b[5]]);
    let an = u16::from_be_bytes([b[6], b[7]]);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(b, i)? + 4;
    }
    let mut addrs = Vec::new();
    for _ in 0..an {
        i = skip_name(b, i)?;
        let h = b.get(i..i + 10)?;
        let (ty, len) = (
            u16::from_be_bytes([h[0], h[1]]),
            usize::from(u16::from_be_bytes([h[8], h[9]])),
        );
        let data = b.get(i + 10..i + 10 + len)?;
        if ty == 1 && len == 4 {
            addrs.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            )));
        }
        i += 10 + len;
    }
    Some((rcode, addrs))
}

/// Sends one query for `name` to `ns` port 53 from the calling thread's namespace and
/// waits up to `timeout` for the answer.
fn query(ns: IpAddr, name: &str, timeout: Duration) -> Answer {
    // A zero read timeout means "block forever" to the kernel, and std refuses it.
    let timeout = timeout.max(Duration::from_millis(1));
    let id = (std::process::id() as u16)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u16);
    let Some(msg) = encode_query(id, name) else {
        return Answer::Error(format!("{name:?} is not a valid DNS name"));
    };
    let bind: SocketAddr = if ns.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let run = || -> io::Result<Answer> {
        let s = UdpSocket::bind(bind)?;
        s.connect((ns, 53))?;
        s.set_read_timeout(Some(timeout))?;
        s.send(&msg)?;
        let deadline = std::time::Instant::now() + timeout;
        let mut buf = [0u8; 1500];
        loop {
            match s.recv(&mut buf) {
                Ok(n) => {
                    if let Some((rcode, addrs)) = decode_reply(id, &buf[..n]) {
                        return Ok(Answer::Reply { rcode, addrs });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    return Ok(Answer::Refused);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(Answer::Timeout);
                }
                Err(e) => return Err(e),
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(Answer::Timeout);
            }
            s.set_read_timeout(Some(left))?;
        }
    };
    run().unwrap_or_else(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused => Answer::Refused,
        _ => Answer::Error(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ns() -> IpAddr {
        "198.51.100.53".parse().unwrap()
    }

    fn ruleset(chain: Value, rules: Vec<Value>) -> Value {
        let mut items = vec![json!({ "chain": chain })];
        for (h, expr) in rules.into_iter().enumerate() {
            items.push(json!({ "rule": { "family": "inet", "table": "t", "chain": "out", "handle": h + 2, "expr": expr } }));
        }
        json!({ "nftables": items })
    }

    fn out_chain(policy: &str) -> Value {
        json!({ "family": "inet", "table": "t", "name": "out", "hook": "output", "type": "filter", "prio": 0, "policy": policy })
    }

    fn port_match(proto: &str, right: Value) -> Value {
        json!({ "match": { "op": "==", "left": { "payload": { "protocol": proto, "field": "dport" } }, "right": right } })
    }

    #[test]
    fn finds_rules_dropping_dns() {
        let drop = json!({ "drop": null });
        let rs = ruleset(
            out_chain("accept"),
            vec![json!([port_match("udp", json!(53)), drop])],
        );
        let f = firewall_findings(&rs, ns(), None, false);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].udp && f[0].handle == Some(2) && f[0].what == "udp dport 53 drop");
        // A set, a range, th: all hit.
        for right in [json!({ "set": [53, 5353] }), json!({ "range": [50, 60] })] {
            let rs = ruleset(
                out_chain("accept"),
                vec![json!([port_match("th", right), drop])],
            );
            assert_eq!(firewall_findings(&rs, ns(), None, false).len(), 1);
        }
        // Another port, another address, or TCP only: not a UDP finding.
        let rs = ruleset(
            out_chain("accept"),
            vec![json!([port_match("udp", json!(80)), drop])],
        );
        assert!(firewall_findings(&rs, ns(), None, false).is_empty());
        let other = json!({ "match": { "op": "==", "left": { "payload": { "protocol": "ip", "field": "daddr" } }, "right": "192.0.2.1" } });
        let rs = ruleset(
            out_chain("accept"),
            vec![json!([other, port_match("udp", json!(53)), drop])],
        );
        assert!(firewall_findings(&rs, ns(), None, false).is_empty());
        let rs = ruleset(
            out_chain("accept"),
            vec![json!([port_match("tcp", json!(53)), drop])],
        );
        let f = firewall_findings(&rs, ns(), None, false);
        assert!(f.len() == 1 && !f[0].udp);
        // An accept before the drop wins.
        let rs = ruleset(
            out_chain("accept"),
            vec![
                json!([port_match("udp", json!(53)), { "accept": null }]),
                json!([port_match("udp", json!(53)), drop]),
            ],
        );
        assert!(firewall_findings(&rs, ns(), None, false).is_empty());
        // Policy drop with no accept.
        let rs = ruleset(out_chain("drop"), vec![]);
        let f = firewall_findings(&rs, ns(), None, false);
        assert!(f.iter().any(|f| f.udp && f.handle.is_none()), "{f:?}");
        // The host's output chain is not on the forwarded path.
        let rs = ruleset(
            out_chain("accept"),
            vec![json!([port_match("udp", json!(53)), drop])],
        );
        assert!(firewall_findings(&rs, ns(), None, true).is_empty());
    }

    #[test]
    fn legacy_iptables_rules() {
        let save = "*filter\n:OUTPUT ACCEPT [0:0]\n\
                    -A OUTPUT -p udp -m udp --dport 53 -j DROP\n\
                    -A OUTPUT -p tcp -m multiport --dports 40:60 -j REJECT --reject-with tcp-reset\n\
                    -A OUTPUT -p udp -m udp --dport 80 -j DROP\n\
                    -A INPUT -p udp -m udp --sport 53 -j ACCEPT\n\
                    -A FORWARD -p udp -m udp --sport 53 -j DROP\nCOMMIT\n";
        let f = legacy_findings(save, false);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].udp && f[0].legacy && f[0].what == "-p udp -m udp --dport 53 -j DROP");
        assert!(!f[1].udp);
        let f = legacy_findings(save, true);
        assert!(f.len() == 1 && f[0].chain == "iptables-legacy filter FORWARD");
        let c = finding_check(f[0].clone(), "the host's forward chain", "");
        assert_eq!(
            c.fix.unwrap(),
            "delete it: `iptables-legacy -D FORWARD -p udp -m udp --sport 53 -j DROP`"
        );
    }

    #[test]
    fn dns_messages() {
        let q = encode_query(0x1234, "www.example.test").unwrap();
        assert_eq!(&q[12..16], b"\x03www");
        // A reply: the question echoed, one A record with a compressed name.
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 203, 0, 113, 7]);
        let (rcode, addrs) = decode_reply(0x1234, &r).unwrap();
        assert_eq!(rcode, 0);
        assert_eq!(addrs, vec!["203.0.113.7".parse::<IpAddr>().unwrap()]);
        assert!(decode_reply(0x9999, &r).is_none());
        assert!(encode_query(1, "a..b").is_none());
    }

    #[test]
    fn symlinks_stay_in_root() {
        let root = std::env::temp_dir().join(format!("cella-doctor-{}", std::process::id()));
        let etc = root.join("etc");
        fs::create_dir_all(root.join("run")).unwrap();
        fs::create_dir_all(&etc).unwrap();
        fs::write(root.join("run/resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
        std::os::unix::fs::symlink("/run/resolv.conf", etc.join("resolv.conf")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", etc.join("up")).unwrap();
        let p = resolve_in_root(&root, "/etc/resolv.conf").unwrap();
        assert_eq!(p, root.join("run/resolv.conf"));
        // `..` above the root stays at the root.
        assert_eq!(
            resolve_in_root(&root, "/etc/up").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn arp_table() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 10.77.0.1        0x1         0x2         02:00:00:00:00:01     *        eth0\n\
                 10.77.0.9        0x1         0x0         00:00:00:00:00:00     *        eth0\n";
        assert_eq!(
            arp_state(t, Ipv4Addr::new(10, 77, 0, 1)),
            Some(Some("02:00:00:00:00:01".into()))
        );
        assert_eq!(arp_state(t, Ipv4Addr::new(10, 77, 0, 9)), Some(None));
        assert_eq!(arp_state(t, Ipv4Addr::new(10, 77, 0, 5)), None);
        assert_eq!(
            hex_v4(Ipv4Addr::new(127, 0, 0, 53)),
            if cfg!(target_endian = "little") {
                "3500007F"
            } else {
                "7F000035"
            }
        );
    }
}
