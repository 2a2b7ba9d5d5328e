//! `cella net`: named network namespaces, links, addresses, routes, rules, and a bridge
//! network for a container (attach/detach). All the work is in cella-net.

use crate::Cli;
use crate::commands::CmdResult;
use cella_net::bridge::{self, AttachRequest, Paths, PortForward};
use cella_net::cidr::IpNet;
use cella_net::netlink::{self, Link, LinkChange, Netlink, Route, Rule, TABLE_MAIN, VethSpec};
use cella_net::netns::{self, Netns, NetnsRef};
use cella_net::p2p;
use cella_net::{doctor, resolv};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// Container networking.
#[derive(clap::Subcommand, Debug)]
pub enum NetCommand {
    /// Named network namespaces (compatible with `ip netns`).
    #[command(subcommand)]
    Ns(NsCmd),
    /// Links: veth pairs, bridges, state, MTU.
    #[command(subcommand)]
    Link(Box<LinkCmd>),
    /// Addresses on links.
    #[command(subcommand)]
    Addr(Box<AddrCmd>),
    /// Routes, and which route the kernel picks.
    #[command(subcommand)]
    Route(Box<RouteCmd>),
    /// Policy-routing rules.
    #[command(subcommand)]
    Rule(Box<RuleCmd>),
    /// Named bridge networks, for `org.cella.net.network` in a bundle's annotations.
    #[command(subcommand)]
    Network(Box<NetworkCmd>),
    /// Attach a container's network namespace to a bridge network.
    Attach(Box<AttachArgs>),
    /// Remove what `attach` made for a container.
    Detach(Box<DetachArgs>),
    /// List the recorded attachments.
    Attachments(StoreArgs),
    /// Put a point-to-point veth between two namespaces.
    Connect(Box<ConnectArgs>),
    /// Remove a link made by `connect`.
    Disconnect {
        /// The link id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Per-container /etc/hosts and /etc/resolv.conf.
    #[command(subcommand)]
    Dns(Box<DnsCmd>),
    /// Find, layer by layer, why a container cannot resolve or reach a name.
    Doctor(Box<DoctorArgs>),
}

/// `cella net network ...`
#[derive(clap::Subcommand, Debug)]
pub enum NetworkCmd {
    /// Define a network (nothing is made until a container uses it).
    Create(Box<NetworkCreateArgs>),
    /// Remove a network's definition (refused while a container uses it).
    #[command(alias = "remove", alias = "del")]
    Rm {
        /// The network.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the defined networks as JSON.
    #[command(alias = "ls")]
    List(StoreArgs),
}

/// `cella net network create`
#[derive(clap::Args, Debug)]
pub struct NetworkCreateArgs {
    /// The network's name.
    name: String,
    /// Its subnet, e.g. 10.88.0.0/16 or fd00:88::/64; given twice (one of each family)
    /// for dual stack. The first address of each is the gateway.
    #[arg(long, required = true, num_args = 1)]
    subnet: Vec<String>,
    /// The bridge; default: the network's name (at most 15 characters).
    #[arg(long)]
    bridge: Option<String>,
    /// Masquerade the containers' outgoing traffic.
    #[arg(long)]
    masquerade: bool,
    /// Drop frames from a container with a source MAC or IP other than its own.
    #[arg(long = "anti-spoof")]
    anti_spoof: bool,
    /// MTU.
    #[arg(long)]
    mtu: Option<u32>,
    #[command(flatten)]
    store: StoreArgs,
}

/// `cella net dns ...`
#[derive(clap::Subcommand, Debug)]
pub enum DnsCmd {
    /// Write hosts and resolv.conf for a container into a directory, atomically.
    Write(Box<DnsWriteArgs>),
    /// Print the OCI bind mounts of a directory's hosts and resolv.conf.
    Mounts {
        /// The directory `dns write` wrote to.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// `cella net dns write`
#[derive(clap::Args, Debug)]
pub struct DnsWriteArgs {
    /// The container's network namespace (name or path).
    #[arg(long, required_unless_present = "id", conflicts_with = "id")]
    netns: Option<String>,
    /// A cella container id (its state under --root names its pid), or a pid.
    #[arg(long)]
    id: Option<String>,
    /// Directory to write `hosts` and `resolv.conf` into (created when missing).
    #[arg(long)]
    dir: PathBuf,
    /// The container's host name.
    #[arg(long)]
    hostname: String,
    /// The container's domain.
    #[arg(long)]
    domain: Option<String>,
    /// Nameserver (repeatable); default: the host's, or the gateway if the host's are
    /// loopback addresses.
    #[arg(long)]
    nameserver: Vec<IpAddr>,
    /// Search domain (repeatable); default: the host's.
    #[arg(long)]
    search: Vec<String>,
    /// Resolver option such as ndots:2 (repeatable); default: the host's.
    #[arg(long)]
    option: Vec<String>,
    /// Extra hosts entry NAME:IP (repeatable).
    #[arg(long = "add-host")]
    add_host: Vec<String>,
    /// Read the host's nameservers from this file instead of /etc/resolv.conf (and
    /// systemd-resolved's list).
    #[arg(long = "host-resolv-conf")]
    host_resolv_conf: Option<PathBuf>,
}

/// `cella net doctor`
#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// A pid, a cella container id, or a network namespace (name or path).
    target: String,
    /// Also send a real query for NAME to the nameserver, from inside the target.
    #[arg(long)]
    name: Option<String>,
    /// Check this nameserver instead of the first one resolv.conf lists.
    #[arg(long)]
    nameserver: Option<IpAddr>,
    /// Read this resolv.conf (a host path) instead of the target's.
    #[arg(long = "resolv-conf")]
    resolv_conf: Option<PathBuf>,
    /// How long to wait for the query's answer, in milliseconds.
    #[arg(long = "timeout-ms", default_value_t = 2000)]
    timeout_ms: u64,
    /// Do not look at the forward chains of the namespace doctor runs in.
    #[arg(long = "no-host")]
    no_host: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// `cella net connect`
#[derive(clap::Args, Debug)]
pub struct ConnectArgs {
    /// One namespace (name or path).
    a: String,
    /// The other namespace.
    b: String,
    /// Link id; default: A--B.
    #[arg(long)]
    id: Option<String>,
    /// Interface name in A; default: cx and a hash of the id.
    #[arg(long = "ifname-a")]
    ifname_a: Option<String>,
    /// Interface name in B; default: as in A.
    #[arg(long = "ifname-b")]
    ifname_b: Option<String>,
    /// Address of A's end, e.g. 192.168.77.1/30.
    #[arg(long = "addr-a", requires = "addr_b")]
    addr_a: Option<IpNet>,
    /// Address of B's end.
    #[arg(long = "addr-b", requires = "addr_a")]
    addr_b: Option<IpNet>,
    /// MTU.
    #[arg(long)]
    mtu: Option<u32>,
    #[command(flatten)]
    store: StoreArgs,
}

/// `cella net ns ...`
#[derive(clap::Subcommand, Debug)]
pub enum NsCmd {
    /// Create /run/netns/NAME holding a new network namespace.
    Add {
        /// Namespace name.
        name: String,
    },
    /// Remove /run/netns/NAME.
    #[command(alias = "delete")]
    Del {
        /// Namespace name.
        name: String,
    },
    /// List named namespaces.
    #[command(alias = "ls")]
    List,
    /// Run a command inside a named namespace (with /sys remounted for it).
    Exec {
        /// Namespace name or path.
        name: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

/// Kind of link to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkKind {
    /// A veth pair.
    Veth,
    /// A bridge.
    Bridge,
}

/// `cella net link ...`
#[derive(clap::Subcommand, Debug)]
pub enum LinkCmd {
    /// List links.
    #[command(alias = "show", alias = "ls")]
    List {
        /// Namespace (name or path); default: the current one.
        #[arg(long)]
        ns: Option<String>,
    },
    /// Create a veth pair or a bridge.
    Add {
        /// Link name.
        name: String,
        /// veth or bridge.
        #[arg(long = "type")]
        kind: LinkKind,
        /// The veth's other end.
        #[arg(long, required_if_eq("kind", "veth"))]
        peer: Option<String>,
        /// Create the veth's other end directly in this namespace.
        #[arg(long = "peer-ns")]
        peer_ns: Option<String>,
        /// Namespace to create the link in; default: the current one.
        #[arg(long)]
        ns: Option<String>,
        /// MTU.
        #[arg(long)]
        mtu: Option<u32>,
        /// Enslave to this bridge.
        #[arg(long)]
        master: Option<String>,
        /// Bring it up.
        #[arg(long)]
        up: bool,
    },
    /// Change a link.
    Set {
        /// Link name.
        name: String,
        /// Namespace; default: the current one.
        #[arg(long)]
        ns: Option<String>,
        /// Bring it up.
        #[arg(long, conflicts_with = "down")]
        up: bool,
        /// Bring it down.
        #[arg(long)]
        down: bool,
        /// MTU.
        #[arg(long)]
        mtu: Option<u32>,
        /// Enslave to this bridge.
        #[arg(long, conflicts_with = "nomaster")]
        master: Option<String>,
        /// Free from its bridge.
        #[arg(long)]
        nomaster: bool,
        /// Hardware address.
        #[arg(long)]
        mac: Option<String>,
        /// Move into this namespace.
        #[arg(long = "move-to")]
        move_to: Option<String>,
    },
    /// Delete a link (a veth takes its peer along).
    #[command(alias = "delete")]
    Del {
        /// Link name.
        name: String,
        /// Namespace; default: the current one.
        #[arg(long)]
        ns: Option<String>,
    },
}

/// `cella net addr ...`
#[derive(clap::Subcommand, Debug)]
pub enum AddrCmd {
    /// Add ADDR/PREFIX to a link.
    Add {
        /// Address with prefix, e.g. 10.0.0.2/24.
        addr: IpNet,
        /// Link name.
        #[arg(long)]
        dev: String,
        /// Namespace; default: the current one.
        #[arg(long)]
        ns: Option<String>,
    },
    /// Remove ADDR/PREFIX from a link.
    #[command(alias = "delete")]
    Del {
        /// Address with prefix.
        addr: IpNet,
        /// Link name.
        #[arg(long)]
        dev: String,
        /// Namespace; default: the current one.
        #[arg(long)]
        ns: Option<String>,
    },
    /// List addresses.
    #[command(alias = "show", alias = "ls")]
    List {
        /// Namespace; default: the current one.
        #[arg(long)]
        ns: Option<String>,
    },
}

/// What a route add/del names.
#[derive(clap::Args, Debug)]
pub struct RouteSpec {
    /// Destination prefix, or `default`.
    dest: String,
    /// Next hop.
    #[arg(long)]
    via: Option<IpAddr>,
    /// Output link.
    #[arg(long)]
    dev: Option<String>,
    /// Table number (or main); default main.
    #[arg(long, default_value = "main")]
    table: String,
    /// Metric.
    #[arg(long)]
    metric: Option<u32>,
    /// Preferred source address.
    #[arg(long)]
    src: Option<IpAddr>,
    /// Namespace; default: the current one.
    #[arg(long)]
    ns: Option<String>,
}

/// `cella net route ...`
#[derive(clap::Subcommand, Debug)]
pub enum RouteCmd {
    /// Add a route.
    Add(RouteSpec),
    /// Delete a route.
    #[command(alias = "delete")]
    Del(RouteSpec),
    /// Show routes of a table (main by default, `all` for every table).
    #[command(alias = "list", alias = "ls")]
    Show {
        /// Table number, main, local, or all.
        #[arg(long, default_value = "main")]
        table: String,
        /// Namespace; default: the current one.
        #[arg(long)]
        ns: Option<String>,
        /// IPv6 instead of IPv4.
        #[arg(short = '6')]
        v6: bool,
    },
    /// Show the route the namespace's tables and rules choose for DEST.
    Get {
        /// Namespace (name or path).
        ns: String,
        /// Destination address.
        dest: IpAddr,
        /// As if sent from this address.
        #[arg(long)]
        from: Option<IpAddr>,
        /// With this firewall mark.
        #[arg(long)]
        mark: Option<String>,
    },
}

/// What a rule add/del names.
#[derive(clap::Args, Debug)]
pub struct RuleSpec {
    /// Source prefix.
    #[arg(long)]
    from: Option<IpNet>,
    /// Destination prefix.
    #[arg(long)]
    to: Option<IpNet>,
    /// Firewall mark, MARK or MARK/MASK (decimal or 0x hex).
    #[arg(long)]
    fwmark: Option<String>,
    /// Input interface.
    #[arg(long)]
    iif: Option<String>,
    /// Table to look up.
    #[arg(long)]
    table: String,
    /// Priority.
    #[arg(long, alias = "priority")]
    pref: Option<u32>,
    /// Namespace; default: the current one.
    #[arg(long)]
    ns: Option<String>,
}

/// `cella net rule ...`
#[derive(clap::Subcommand, Debug)]
pub enum RuleCmd {
    /// Add a rule.
    Add(RuleSpec),
    /// Delete a rule.
    #[command(alias = "delete")]
    Del(RuleSpec),
    /// Show rules.
    #[command(alias = "list", alias = "ls")]
    Show {
        /// Namespace; default: the current one.
        #[arg(long)]
        ns: Option<String>,
        /// IPv6 instead of IPv4.
        #[arg(short = '6')]
        v6: bool,
    },
}

/// Where attachment records and leases live.
#[derive(clap::Args, Debug)]
pub struct StoreArgs {
    /// Attachment state directory.
    #[arg(long = "state-dir", default_value = bridge::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// IPAM lease directory.
    #[arg(long = "ipam-dir", default_value = cella_net::ipam::DEFAULT_IPAM_DIR)]
    ipam_dir: PathBuf,
    /// Network definition directory.
    #[arg(long = "network-dir", default_value = cella_net::network::DEFAULT_NETWORK_DIR)]
    network_dir: PathBuf,
}

impl StoreArgs {
    fn paths(&self) -> Paths {
        Paths {
            state_dir: self.state_dir.clone(),
            ipam_dir: self.ipam_dir.clone(),
            network_dir: self.network_dir.clone(),
        }
    }
}

/// `cella net attach`
#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// The container's network namespace (name or path).
    #[arg(long)]
    netns: String,
    /// Bridge in the current namespace (created when missing).
    #[arg(long)]
    bridge: String,
    /// Subnet of the bridge, e.g. 10.88.0.0/16 or fd00:88::/64; given twice (one of each
    /// family) for dual stack. The first address of each is the gateway.
    #[arg(long, required = true, num_args = 1)]
    subnet: Vec<String>,
    /// Attachment id; default: derived from --netns.
    #[arg(long)]
    id: Option<String>,
    /// Interface name in the container.
    #[arg(long, default_value = "eth0")]
    ifname: String,
    /// MTU.
    #[arg(long)]
    mtu: Option<u32>,
    /// Forward HOSTPORT:CONTAINERPORT[/tcp|/udp] from the host (repeatable).
    #[arg(long, short = 'p')]
    publish: Vec<String>,
    /// Masquerade the container's outgoing traffic.
    #[arg(long)]
    masquerade: bool,
    /// Drop frames from the container with a source MAC or IP other than its own.
    #[arg(long = "anti-spoof")]
    anti_spoof: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `cella net detach`
#[derive(clap::Args, Debug)]
pub struct DetachArgs {
    /// Attachment id.
    #[arg(long, required_unless_present = "netns")]
    id: Option<String>,
    /// The namespace given to attach (its id is derived the same way).
    #[arg(long)]
    netns: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

fn id_for(netns: &str) -> String {
    let s: String = netns
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.trim_start_matches(['_', '.']).to_string()
}

/// `--subnet` given once (IPv4 or IPv6-only) or twice (dual stack, in either order).
fn subnets(given: &[String]) -> Result<(IpNet, Option<IpNet>), Box<dyn std::error::Error>> {
    let nets = given
        .iter()
        .map(|s| s.parse::<IpNet>())
        .collect::<Result<Vec<_>, _>>()?;
    match nets.as_slice() {
        [one] => Ok((*one, None)),
        [v4, v6] | [v6, v4] if v4.addr.is_ipv4() && v6.addr.is_ipv6() => Ok((*v4, Some(*v6))),
        _ => Err("--subnet: give one subnet (IPv4 or IPv6), or one of each for dual stack".into()),
    }
}

fn handle(ns: &Option<String>) -> Result<Netlink, Box<dyn std::error::Error>> {
    Ok(match ns {
        Some(n) => Netlink::open_in(&Netns::open(&NetnsRef::parse(n))?)?,
        None => Netlink::open()?,
    })
}

fn parse_table(s: &str) -> Result<u32, String> {
    match s {
        "main" => Ok(TABLE_MAIN),
        "local" => Ok(255),
        "default" => Ok(253),
        n => n
            .parse()
            .map_err(|_| format!("invalid table {s:?}: a number, main, local or default")),
    }
}

fn parse_mark(s: &str) -> Result<(u32, Option<u32>), String> {
    let num = |t: &str| match t.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => t.parse().ok(),
    };
    let err = || format!("invalid fwmark {s:?}: MARK or MARK/MASK");
    match s.split_once('/') {
        Some((m, k)) => Ok((num(m).ok_or_else(err)?, Some(num(k).ok_or_else(err)?))),
        None => Ok((num(s).ok_or_else(err)?, None)),
    }
}

fn names(nl: &mut Netlink) -> Result<HashMap<u32, String>, Box<dyn std::error::Error>> {
    Ok(nl.links()?.into_iter().map(|l| (l.index, l.name)).collect())
}

fn show_route(r: &Route, names: &HashMap<u32, String>) -> String {
    let mut s = match r.kind.as_str() {
        "unicast" => String::new(),
        k => format!("{k} "),
    };
    s += &r.dst.map_or_else(
        || "default".to_string(),
        |d| {
            if d.prefix == 32 || d.prefix == 128 {
                d.addr.to_string()
            } else {
                d.to_string()
            }
        },
    );
    if let Some(g) = r.gateway {
        s += &format!(" via {g}");
    }
    if let Some(o) = r.oif {
        s += &format!(
            " dev {}",
            names.get(&o).cloned().unwrap_or_else(|| format!("#{o}"))
        );
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

fn route_of(spec: &RouteSpec, nl: &mut Netlink) -> Result<Route, Box<dyn std::error::Error>> {
    let dst = match spec.dest.as_str() {
        "default" => None,
        d => Some(d.parse::<IpNet>()?),
    };
    let oif = match &spec.dev {
        Some(d) => Some(nl.index(d)?),
        None => None,
    };
    Ok(Route {
        dst,
        gateway: spec.via,
        oif,
        src: spec.src,
        table: parse_table(&spec.table)?,
        metric: spec.metric,
        kind: "unicast".into(),
    })
}

fn rule_of(spec: &RuleSpec) -> Result<Rule, Box<dyn std::error::Error>> {
    let (fwmark, fwmask) = match &spec.fwmark {
        Some(m) => {
            let (k, mask) = parse_mark(m)?;
            (Some(k), mask)
        }
        None => (None, None),
    };
    Ok(Rule {
        priority: spec.pref,
        from: spec.from,
        to: spec.to,
        fwmark,
        fwmask,
        iif: spec.iif.clone(),
        table: parse_table(&spec.table)?,
    })
}

fn print_link(l: &Link, names: &HashMap<u32, String>) {
    let master = l
        .master
        .and_then(|m| names.get(&m))
        .map(|m| format!(" master {m}"))
        .unwrap_or_default();
    let kind = if l.kind.is_empty() {
        String::new()
    } else {
        format!(" {}", l.kind)
    };
    println!(
        "{}: {}:{kind} mtu {} {} {}{master}",
        l.index,
        l.name,
        l.mtu,
        if l.up { "UP" } else { "DOWN" },
        l.mac
    );
}

/// Exit status of `net doctor` when a layer is broken (1 means doctor could not run).
const DOCTOR_FAILED: u8 = 3;

fn doctor(a: &DoctorArgs, cli: &Cli) -> CmdResult {
    let target = doctor::resolve_target(&a.target, &crate::commands::state_root(cli)?)?;
    let opts = doctor::Options {
        name: a.name.clone(),
        nameserver: a.nameserver,
        resolv_conf: a.resolv_conf.clone(),
        timeout: std::time::Duration::from_millis(a.timeout_ms),
        check_host: !a.no_host,
    };
    let report = doctor::diagnose(&target, &opts)?;
    let first = report.first_failure();
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["ok"] = serde_json::Value::Bool(first.is_none());
        v["first_failure"] = first.map_or(serde_json::Value::Null, |c| c.layer.name().into());
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let what = match target.kind {
            doctor::TargetKind::Pid => format!("pid {}", target.pid.unwrap_or_default()),
            doctor::TargetKind::Container => format!(
                "container {} (pid {})",
                a.target,
                target.pid.unwrap_or_default()
            ),
            doctor::TargetKind::Netns => format!("network namespace {}", a.target),
        };
        let ns = report
            .nameserver
            .map_or_else(|| "none".to_string(), |n| n.to_string());
        println!("target: {what}; nameserver: {ns}");
        for c in &report.checks {
            let st = match c.status {
                doctor::Status::Ok => "OK",
                doctor::Status::Warn => "WARN",
                doctor::Status::Fail => "FAIL",
                doctor::Status::Skip => "SKIP",
            };
            println!("{st:<5} {:<12} {}", c.layer.name(), c.detail);
            if let Some(f) = &c.fix
                && matches!(c.status, doctor::Status::Fail | doctor::Status::Warn)
            {
                println!("{:18} fix: {f}", "");
            }
        }
        match first {
            Some(c) => println!("first broken layer: {}", c.layer.name()),
            None => println!("all layers OK"),
        }
    }
    Ok(if first.is_some() { DOCTOR_FAILED } else { 0 })
}

fn dns(c: &DnsCmd, cli: &Cli) -> CmdResult {
    match c {
        DnsCmd::Mounts { dir } => {
            println!("{}", serde_json::to_string_pretty(&resolv::mounts(dir)?)?);
        }
        DnsCmd::Write(w) => {
            let ns_path = match (&w.netns, &w.id) {
                (Some(n), _) => NetnsRef::parse(n),
                (None, Some(id)) => NetnsRef::Path(
                    doctor::resolve_target(id, &crate::commands::state_root(cli)?)?.netns,
                ),
                (None, None) => return Err("dns write: give --netns or --id".into()),
            };
            let mut extra = Vec::new();
            for (i, h) in w.add_host.iter().enumerate() {
                let parsed = h
                    .split_once(':')
                    .and_then(|(n, ip)| Some((n.to_string(), ip.parse::<IpAddr>().ok()?)));
                match parsed {
                    Some(p) => extra.push(p),
                    None => {
                        return Err(format!("add-host[{i}]: {h:?} is not NAME:IP").into());
                    }
                }
            }
            let req = resolv::DnsRequest {
                hostname: w.hostname.clone(),
                domain: w.domain.clone(),
                nameservers: w.nameserver.clone(),
                search: w.search.clone(),
                options: w.option.clone(),
                extra_hosts: extra,
            };
            req.validate()?;
            let host_files: Vec<PathBuf> = match &w.host_resolv_conf {
                Some(p) => vec![p.clone()],
                None => resolv::HOST_RESOLV_CONF.iter().map(PathBuf::from).collect(),
            };
            let host = resolv::read_host(&host_files)?;
            let net = resolv::ContainerNet::read(&Netns::open(&ns_path)?)?;
            let written = resolv::write(&w.dir, &req, &host, &net)?;
            if let Some(n) = &written.note {
                eprintln!("cella: note: {n}");
            }
            println!("{}", serde_json::to_string_pretty(&written)?);
        }
    }
    Ok(0)
}

/// Runs a `cella net` verb.
pub fn run(cmd: &NetCommand, cli: &Cli) -> CmdResult {
    match cmd {
        NetCommand::Doctor(a) => return doctor(a, cli),
        NetCommand::Dns(c) => return dns(c, cli),
        NetCommand::Ns(c) => match c {
            NsCmd::Add { name } => {
                netns::add(name)?;
            }
            NsCmd::Del { name } => netns::delete(name)?,
            NsCmd::List => {
                for n in netns::list()? {
                    println!("{n}");
                }
            }
            NsCmd::Exec { name, command } => {
                let ns = Netns::open(&NetnsRef::parse(name))?;
                let mut c = std::process::Command::new(&command[0]);
                c.args(&command[1..]);
                ns.prepare_command(&mut c)?;
                let e = c.exec();
                return Err(format!("exec `{}`: {e}", command[0]).into());
            }
        },
        NetCommand::Link(c) => link(c)?,
        NetCommand::Addr(c) => match c.as_ref() {
            AddrCmd::Add { addr, dev, ns } => {
                let mut nl = handle(ns)?;
                let i = nl.index(dev)?;
                nl.add_addr(i, *addr)?;
            }
            AddrCmd::Del { addr, dev, ns } => {
                let mut nl = handle(ns)?;
                let i = nl.index(dev)?;
                nl.del_addr(i, *addr)?;
            }
            AddrCmd::List { ns } => {
                let mut nl = handle(ns)?;
                let names = names(&mut nl)?;
                for a in nl.addrs()? {
                    println!(
                        "{}: {}",
                        names.get(&a.index).cloned().unwrap_or_default(),
                        a.net
                    );
                }
            }
        },
        NetCommand::Route(c) => match c.as_ref() {
            RouteCmd::Add(spec) => {
                let mut nl = handle(&spec.ns)?;
                let r = route_of(spec, &mut nl)?;
                nl.add_route(&r)?;
            }
            RouteCmd::Del(spec) => {
                let mut nl = handle(&spec.ns)?;
                let r = route_of(spec, &mut nl)?;
                nl.del_route(&r)?;
            }
            RouteCmd::Show { table, ns, v6 } => {
                let mut nl = handle(ns)?;
                let want = if table == "all" {
                    None
                } else {
                    Some(parse_table(table)?)
                };
                let names = names(&mut nl)?;
                for r in nl.routes(*v6)? {
                    if want.is_none_or(|t| t == r.table) {
                        println!("{}", show_route(&r, &names));
                    }
                }
            }
            RouteCmd::Get {
                ns,
                dest,
                from,
                mark,
            } => {
                let mark = mark.as_deref().map(parse_mark).transpose()?.map(|m| m.0);
                let mut nl = handle(&Some(ns.clone()))?;
                let r = nl.route_get(*dest, *from, mark)?;
                let names = names(&mut nl)?;
                println!("{}", show_route(&r, &names));
            }
        },
        NetCommand::Rule(c) => match c.as_ref() {
            RuleCmd::Add(spec) => handle(&spec.ns)?.add_rule(&rule_of(spec)?)?,
            RuleCmd::Del(spec) => handle(&spec.ns)?.del_rule(&rule_of(spec)?)?,
            RuleCmd::Show { ns, v6 } => {
                for r in handle(ns)?.rules(*v6)? {
                    let d = netlink::describe_rule(&r);
                    println!(
                        "{}",
                        d.replace("lookup 254", "lookup main")
                            .replace("lookup 255", "lookup local")
                    );
                }
            }
        },
        NetCommand::Attach(a) => {
            let (subnet, subnet6) = subnets(&a.subnet)?;
            let publish = a
                .publish
                .iter()
                .map(|p| p.parse::<PortForward>())
                .collect::<Result<Vec<_>, _>>()?;
            let req = AttachRequest {
                id: a.id.clone().unwrap_or_else(|| id_for(&a.netns)),
                netns: NetnsRef::parse(&a.netns),
                bridge: a.bridge.clone(),
                subnet,
                subnet6,
                ifname: a.ifname.clone(),
                mtu: a.mtu,
                publish,
                masquerade: a.masquerade,
                anti_spoof: a.anti_spoof,
            };
            let att = bridge::attach(&a.store.paths(), &req)?;
            println!("{}", serde_json::to_string_pretty(&att)?);
        }
        NetCommand::Detach(d) => {
            let id = match (&d.id, &d.netns) {
                (Some(id), _) => id.clone(),
                (None, Some(ns)) => id_for(ns),
                (None, None) => return Err("detach: give --id or --netns".into()),
            };
            bridge::detach(&d.store.paths(), &id)?;
        }
        NetCommand::Connect(c) => {
            let id =
                c.id.clone()
                    .unwrap_or_else(|| format!("{}--{}", id_for(&c.a), id_for(&c.b)));
            let default_if = format!("cx{}", &bridge::host_veth_name(&id)[2..10]);
            let req = p2p::ConnectRequest {
                a: NetnsRef::parse(&c.a),
                b: NetnsRef::parse(&c.b),
                ifname_a: c.ifname_a.clone().unwrap_or_else(|| default_if.clone()),
                ifname_b: c
                    .ifname_b
                    .clone()
                    .or(c.ifname_a.clone())
                    .unwrap_or(default_if),
                addr_a: c.addr_a,
                addr_b: c.addr_b,
                mtu: c.mtu,
                id,
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&p2p::connect(&c.store.paths(), &req)?)?
            );
        }
        NetCommand::Disconnect { id, store } => p2p::disconnect(&store.paths(), id)?,
        NetCommand::Network(c) => match c.as_ref() {
            NetworkCmd::Create(a) => {
                let net = cella_net::network::Network {
                    name: a.name.clone(),
                    bridge: a.bridge.clone().unwrap_or_else(|| a.name.clone()),
                    subnet: subnets(&a.subnet)?.0,
                    subnet6: subnets(&a.subnet)?.1,
                    masquerade: a.masquerade,
                    anti_spoof: a.anti_spoof,
                    mtu: a.mtu,
                };
                cella_net::network::create(&a.store.paths(), &net)?;
            }
            NetworkCmd::Rm { name, store } => cella_net::network::remove(&store.paths(), name)?,
            NetworkCmd::List(s) => println!(
                "{}",
                serde_json::to_string_pretty(&cella_net::network::list(&s.paths())?)?
            ),
        },
        NetCommand::Attachments(s) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&bridge::list(&s.paths())?)?
            );
        }
    }
    Ok(0)
}

fn link(c: &LinkCmd) -> Result<(), Box<dyn std::error::Error>> {
    match c {
        LinkCmd::List { ns } => {
            let mut nl = handle(ns)?;
            let links = nl.links()?;
            let names: HashMap<u32, String> =
                links.iter().map(|l| (l.index, l.name.clone())).collect();
            for l in &links {
                print_link(l, &names);
            }
        }
        LinkCmd::Add {
            name,
            kind,
            peer,
            peer_ns,
            ns,
            mtu,
            master,
            up,
        } => {
            let mut nl = handle(ns)?;
            let master = match master {
                Some(m) => Some(nl.index(m)?),
                None => None,
            };
            match kind {
                LinkKind::Bridge => {
                    nl.add_bridge(name, *mtu, *up)?;
                }
                LinkKind::Veth => {
                    let peer_ns = peer_ns
                        .as_ref()
                        .map(|p| Netns::open(&NetnsRef::parse(p)))
                        .transpose()?;
                    nl.add_veth(&VethSpec {
                        name: name.clone(),
                        peer: peer.clone().unwrap_or_default(),
                        peer_netns: peer_ns.as_ref().map(Netns::fd),
                        peer_mac: None,
                        mtu: *mtu,
                        master,
                        up: *up,
                    })?;
                }
            }
            if let (Some(m), LinkKind::Bridge) = (master, kind) {
                let i = nl.index(name)?;
                nl.set_link(
                    i,
                    name,
                    &LinkChange {
                        master: Some(Some(m)),
                        ..LinkChange::default()
                    },
                )?;
            }
        }
        LinkCmd::Set {
            name,
            ns,
            up,
            down,
            mtu,
            master,
            nomaster,
            mac,
            move_to,
        } => {
            let mut nl = handle(ns)?;
            let i = nl.index(name)?;
            let master = match (master, nomaster) {
                (Some(m), _) => Some(Some(nl.index(m)?)),
                (None, true) => Some(None),
                (None, false) => None,
            };
            let mac = match mac {
                Some(m) => Some(netlink::parse_mac(m).ok_or_else(|| format!("invalid MAC {m:?}"))?),
                None => None,
            };
            let target = move_to
                .as_ref()
                .map(|p| Netns::open(&NetnsRef::parse(p)))
                .transpose()?;
            let change = LinkChange {
                up: if *up {
                    Some(true)
                } else if *down {
                    Some(false)
                } else {
                    None
                },
                mtu: *mtu,
                master,
                netns: target.as_ref().map(Netns::fd),
                mac,
            };
            nl.set_link(i, name, &change)?;
        }
        LinkCmd::Del { name, ns } => {
            let mut nl = handle(ns)?;
            let i = nl.index(name)?;
            nl.del_link(i, name)?;
        }
    }
    Ok(())
}
