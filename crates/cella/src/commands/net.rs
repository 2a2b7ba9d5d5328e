//! `cella net`: named network namespaces, links, addresses, routes, rules, and a bridge
//! network for a container (attach/detach). All the work is in cella-net.

use crate::Cli;
use crate::commands::CmdResult;
use cella_net::bridge::{self, AttachRequest, Paths, PortForward};
use cella_net::cidr::IpNet;
use cella_net::netlink::{self, Link, LinkChange, Netlink, Route, Rule, TABLE_MAIN, VethSpec};
use cella_net::netns::{self, Netns, NetnsRef};
use cella_net::p2p;
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
}

impl StoreArgs {
    fn paths(&self) -> Paths {
        Paths {
            state_dir: self.state_dir.clone(),
            ipam_dir: self.ipam_dir.clone(),
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
    /// Subnet of the bridge, e.g. 10.88.0.0/16; the first address is the gateway.
    #[arg(long)]
    subnet: String,
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

/// Runs a `cella net` verb.
pub fn run(cmd: &NetCommand, _cli: &Cli) -> CmdResult {
    match cmd {
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
            let subnet: IpNet = a.subnet.parse()?;
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
