//! The plugin's commands: ADD, DEL, CHECK, VERSION, run in the host's (the caller's)
//! network namespace on a container's namespace.
//!
//! ADD checks everything it can before making anything; if a later step fails, what was
//! made is removed again (the same teardown DEL runs). DEL needs no state: the host end
//! of the veth is named from the container id and interface, the leases are found by
//! their content, the nft elements by their comment, and a bridge this plugin made is
//! marked by its alias; so DEL is idempotent and works after a crash at any point.

use crate::hostlocal::{self, HostLocal, HostLocalError};
use crate::nft::{self as cnft, Elements, Mapping};
use crate::sys;
use crate::types::{
    CniError, CniResult, Code, Interface, IpConfig, LATEST, NetConf, RouteConf, SUPPORTED_VERSIONS,
};
use cella_net::cidr::IpNet;
use cella_net::netlink::{LinkChange, Netlink, NetlinkError, Route, TABLE_MAIN, VethSpec};
use cella_net::netns::{Netns, NetnsError, NetnsRef};
use cella_net::nft::{NftError, Proto};
use serde_json::{Value, json};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The alias of a bridge this plugin made: removed with its last port.
pub const BRIDGE_ALIAS: &str = "cella-cni";

/// Where ADD notes that it is about to make a bridge, before making it: the kernel takes
/// no alias in the request that creates a link, so a plugin killed between creating the
/// bridge and marking it would leave a bridge that DEL could not tell from the host's own.
pub const BRIDGE_MARKS: &str = "/run/cella/cni-bridges";

/// The mark of bridge `name` in the caller's network namespace (named by its device and
/// inode: every host namespace has its own bridges).
fn bridge_mark(name: &str) -> Result<PathBuf, CniError> {
    use std::os::unix::fs::MetadataExt;
    let own = "/proc/thread-self/ns/net";
    let m = fs::metadata(own)
        .map_err(|e| CniError::with_source(Code::Io, format!("stat `{own}`"), &e))?;
    Ok(Path::new(BRIDGE_MARKS).join(format!("{}-{}-{name}", m.dev(), m.ino())))
}

/// The lock serialising the host-side work (bridge, veth, nft tables) of concurrent calls.
pub const LOCK_PATH: &str = "/run/cella/cni.lock";

/// The CNI_* environment of one call.
#[derive(Clone, Debug, Default)]
pub struct Env {
    /// CNI_COMMAND.
    pub command: String,
    /// CNI_CONTAINERID.
    pub container_id: Option<String>,
    /// CNI_NETNS.
    pub netns: Option<String>,
    /// CNI_IFNAME.
    pub ifname: Option<String>,
    /// CNI_ARGS.
    pub args: Option<String>,
    /// CNI_PATH.
    pub path: Option<String>,
}

impl Env {
    /// Reads the CNI_* variables of this process.
    pub fn from_process() -> Env {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            command: get("CNI_COMMAND").unwrap_or_default(),
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            args: get("CNI_ARGS"),
            path: get("CNI_PATH"),
        }
    }
}

/// What the binary prints on success.
#[derive(Debug)]
pub enum Output {
    /// Print this JSON.
    Json(Value),
    /// Print nothing.
    Nothing,
}

fn need<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, CniError> {
    v.as_deref()
        .ok_or_else(|| CniError::new(Code::InvalidEnv, format!("{name} is not set")))
}

fn check_ifname(v: &str) -> Result<(), CniError> {
    let ok = !v.is_empty()
        && v.len() <= 15
        && !v.contains(['/', ':'])
        && !v.chars().any(char::is_whitespace)
        && v != "."
        && v != "..";
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            Code::InvalidEnv,
            format!(
                "CNI_IFNAME: invalid interface name {v:?} (1-15 characters, no `/`, `:` or white space)"
            ),
        ))
    }
}

fn check_id(v: &str) -> Result<(), CniError> {
    let ok = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            Code::InvalidEnv,
            format!("CNI_CONTAINERID: invalid container id {v:?} (letters, digits, `-`, `_`, `.`)"),
        ))
    }
}

/// Runs one call: `stdin` is the network configuration.
pub fn run(env: &Env, stdin: &[u8]) -> Result<Output, CniError> {
    match env.command.as_str() {
        "VERSION" => Ok(Output::Json(json!({
            "cniVersion": LATEST,
            "supportedVersions": SUPPORTED_VERSIONS,
        }))),
        "ADD" | "DEL" | "CHECK" => {
            let conf = parse_conf(stdin)?;
            let id = need(&env.container_id, "CNI_CONTAINERID")?;
            check_id(id)?;
            let ifname = need(&env.ifname, "CNI_IFNAME")?;
            check_ifname(ifname)?;
            need(&env.path, "CNI_PATH")?;
            let plan = Plan::new(&conf)?;
            match env.command.as_str() {
                "ADD" => {
                    let netns = need(&env.netns, "CNI_NETNS")?;
                    add(&plan, stdin, env, id, ifname, netns).map(Output::Json)
                }
                "DEL" => del(&plan, stdin, env, id, ifname).map(|()| Output::Nothing),
                _ => {
                    let netns = need(&env.netns, "CNI_NETNS")?;
                    check(&plan, id, ifname, netns).map(|()| Output::Nothing)
                }
            }
        }
        "" => Err(CniError::new(Code::InvalidEnv, "CNI_COMMAND is not set")),
        other => Err(CniError::new(
            Code::InvalidEnv,
            format!("CNI_COMMAND: unknown command {other:?} (ADD, DEL, CHECK, VERSION)"),
        )),
    }
}

/// The version of a configuration, for errors: what it says, or the newest.
pub fn version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(String::from)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST.into())
}

fn parse_conf(stdin: &[u8]) -> Result<NetConf, CniError> {
    let v: Value = serde_json::from_slice(stdin)
        .map_err(|e| CniError::with_source(Code::Decode, "network configuration: not JSON", &e))?;
    if let Some(ver) = v.get("cniVersion").and_then(Value::as_str)
        && !SUPPORTED_VERSIONS.contains(&ver)
    {
        return Err(CniError {
            code: Code::IncompatibleVersion.number(),
            msg: "incompatible CNI versions".into(),
            details: format!("config is {ver:?}, plugin supports {SUPPORTED_VERSIONS:?}"),
        });
    }
    serde_json::from_value(v)
        .map_err(|e| CniError::with_source(Code::Decode, "network configuration", &e))
}

/// The IPAM of a network.
enum Ipam {
    /// Built in.
    HostLocal(HostLocal),
    /// Delegated to the plugin of this name in CNI_PATH.
    Plugin(String),
}

/// A checked configuration.
struct Plan {
    conf: NetConf,
    bridge: String,
    ipam: Ipam,
    mappings: Vec<Mapping>,
    gateway: bool,
}

fn invalid(msg: String) -> CniError {
    CniError::new(Code::InvalidConfig, msg)
}

impl Plan {
    fn new(conf: &NetConf) -> Result<Plan, CniError> {
        if conf.name.is_empty() || conf.name.contains('/') || conf.name.starts_with('.') {
            return Err(invalid(format!(
                "name: invalid network name {:?} (it names a directory)",
                conf.name
            )));
        }
        if conf.vlan != 0 {
            return Err(CniError::new(
                Code::UnsupportedField,
                format!("vlan: {} is not supported by cella-cni", conf.vlan),
            ));
        }
        let bridge = conf.bridge.clone().unwrap_or_else(|| "cni0".into());
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ':', ' ']) {
            return Err(invalid(format!(
                "bridge: invalid interface name {bridge:?}"
            )));
        }
        if let Some(m) = conf.mtu
            && !(68..=65535).contains(&m)
        {
            return Err(invalid(format!("mtu: {m} is not in 68-65535")));
        }
        let Some(ipam_v) = &conf.ipam else {
            return Err(invalid("ipam: missing".into()));
        };
        let kind = ipam_v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let ipam = match kind {
            "host-local" => {
                Ipam::HostLocal(hostlocal::parse(ipam_v, &conf.name).map_err(|e| match e {
                    HostLocalError::Decode(_) => CniError::with_source(Code::Decode, "ipam", &e),
                    other => invalid(other.to_string()),
                })?)
            }
            "" => return Err(invalid("ipam.type: missing".into())),
            k if k.contains('/') || k.starts_with('.') => {
                return Err(invalid(format!("ipam.type: invalid plugin name {k:?}")));
            }
            k => Ipam::Plugin(k.into()),
        };
        let mut mappings = Vec::new();
        for (i, m) in conf.runtime_config.port_mappings.iter().enumerate() {
            let field = format!("runtimeConfig.portMappings[{i}]");
            let port = |p: u32, f: &str| -> Result<u16, CniError> {
                u16::try_from(p)
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid(format!("{field}.{f}: {p} is not a port (1-65535)")))
            };
            let proto = match m.protocol.to_ascii_lowercase().as_str() {
                "" | "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                p => {
                    return Err(invalid(format!(
                        "{field}.protocol: {p:?} is not supported (tcp, udp)"
                    )));
                }
            };
            let host_ip = match m.host_ip.as_str() {
                "" | "0.0.0.0" | "::" => None,
                s => match s.parse::<IpAddr>() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        return Err(invalid(format!(
                            "{field}.hostIP: {s:?} is not an IP address"
                        )));
                    }
                },
            };
            let mapping = Mapping {
                proto,
                host_ip,
                host_port: port(m.host_port, "hostPort")?,
                container_port: port(m.container_port, "containerPort")?,
            };
            if mappings.iter().any(|o: &Mapping| {
                o.proto == mapping.proto
                    && o.host_port == mapping.host_port
                    && o.host_ip == mapping.host_ip
            }) {
                return Err(invalid(format!(
                    "{field}: host port {}/{} is given twice",
                    mapping.host_port,
                    proto.name()
                )));
            }
            mappings.push(mapping);
        }
        Ok(Plan {
            conf: conf.clone(),
            bridge,
            ipam,
            mappings,
            gateway: conf.is_gateway || conf.is_default_gateway,
        })
    }
}

/// The host end of the veth: `veth` and 11 hex digits of a hash of the id and interface,
/// so DEL finds it from the environment alone.
pub fn host_veth_name(id: &str, ifname: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes().chain([b'/']).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("veth{:011x}", h & 0xfff_ffff_ffff)
}

struct HostLock(#[allow(dead_code)] File);

fn host_lock() -> Result<HostLock, CniError> {
    let path = Path::new(LOCK_PATH);
    let io = |op: &str, e: std::io::Error| {
        CniError::with_source(Code::Io, format!("{op} `{}`", path.display()), &e)
    };
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).map_err(|e| io("create the directory of", e))?;
    }
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| io("open", e))?;
    sys::flock_exclusive(f.as_fd()).map_err(|e| io("lock", e))?;
    Ok(HostLock(f))
}

fn nl_err(what: &str) -> impl FnOnce(NetlinkError) -> CniError + '_ {
    move |e| CniError::with_source(Code::Netlink, what, &e)
}

fn nft_err(what: &str) -> impl FnOnce(NftError) -> CniError + '_ {
    move |e| {
        if e.is_exists() {
            CniError::with_source(
                Code::PortTaken,
                format!("{what}: a host port is already mapped"),
                &e,
            )
        } else {
            CniError::with_source(Code::Nftables, what, &e)
        }
    }
}

fn open_netns(path: &str) -> Result<Netns, CniError> {
    Netns::open(&NetnsRef::Path(PathBuf::from(path))).map_err(|e| match e {
        NetnsError::NotFound(_) => CniError::new(
            Code::UnknownContainer,
            format!("CNI_NETNS: network namespace `{path}` does not exist"),
        ),
        other => CniError::with_source(
            Code::InvalidEnv,
            format!("CNI_NETNS: open `{path}`"),
            &other,
        ),
    })
}

/// Addresses, routes and DNS from IPAM.
struct IpamResult {
    ips: Vec<(IpNet, Option<IpAddr>)>,
    routes: Vec<RouteConf>,
    dns: crate::types::Dns,
}

fn find_plugin(env: &Env, name: &str) -> Result<PathBuf, CniError> {
    let path = env.path.as_deref().unwrap_or_default();
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                Code::Ipam,
                format!("ipam.type: plugin {name:?} not found in CNI_PATH {path:?}"),
            )
        })
}

/// Runs the IPAM plugin `name` with this call's environment (CNI_COMMAND `command`) and
/// configuration, as the spec's delegation says.
fn delegate(
    env: &Env,
    name: &str,
    command: &str,
    stdin: &[u8],
) -> Result<Option<CniResult>, CniError> {
    let bin = find_plugin(env, name)?;
    let mut child = Command::new(&bin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            CniError::with_source(
                Code::Ipam,
                format!("run IPAM plugin `{}`", bin.display()),
                &e,
            )
        })?;
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| {
        CniError::with_source(
            Code::Ipam,
            format!("run IPAM plugin `{}`", bin.display()),
            &e,
        )
    })?;
    if !out.status.success() {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        return Err(CniError {
            code: v
                .get("code")
                .and_then(Value::as_u64)
                .and_then(|c| u32::try_from(c).ok())
                .unwrap_or(Code::Ipam.number()),
            msg: format!(
                "IPAM plugin {name:?} ({command}): {}",
                v.get("msg").and_then(Value::as_str).unwrap_or("failed")
            ),
            details: v
                .get("details")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string()),
        });
    }
    if command != "ADD" {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout).map(Some).map_err(|e| {
        CniError::with_source(
            Code::Ipam,
            format!("IPAM plugin {name:?}: unreadable result"),
            &e,
        )
    })
}

/// The addresses asked for with `CNI_ARGS=...;IP=10.22.0.5[,fd00::5]` (host-local's
/// convention); other keys are ignored.
fn requested_ips(env: &Env) -> Result<Vec<IpAddr>, CniError> {
    let mut out = Vec::new();
    for kv in env.args.as_deref().unwrap_or_default().split(';') {
        let Some(("IP", v)) = kv.split_once('=') else {
            continue;
        };
        for ip in v.split(',').filter(|s| !s.is_empty()) {
            out.push(ip.trim().parse().map_err(|_| {
                CniError::new(
                    Code::InvalidEnv,
                    format!("CNI_ARGS: IP={ip:?} is not an IP address"),
                )
            })?);
        }
    }
    Ok(out)
}

fn ipam_add(
    plan: &Plan,
    env: &Env,
    stdin: &[u8],
    id: &str,
    ifname: &str,
) -> Result<IpamResult, CniError> {
    match &plan.ipam {
        Ipam::HostLocal(h) => {
            let requested = requested_ips(env)?;
            let leased = h
                .allocate_requested(id, ifname, &requested)
                .map_err(|e| match e {
                    HostLocalError::Exhausted { .. } => {
                        CniError::new(Code::AddressesExhausted, e.to_string())
                    }
                    HostLocalError::Duplicate { .. } | HostLocalError::Invalid { .. } => {
                        invalid(e.to_string())
                    }
                    other => CniError::with_source(Code::Store, "host-local IPAM", &other),
                })?;
            Ok(IpamResult {
                ips: leased.iter().map(|l| (l.addr, Some(l.gateway))).collect(),
                routes: h.routes.clone(),
                dns: Default::default(),
            })
        }
        Ipam::Plugin(name) => {
            let r = delegate(env, name, "ADD", stdin)?.unwrap_or_default();
            let mut ips = Vec::new();
            for ip in &r.ips {
                let addr: IpNet = ip.address.parse().map_err(|_| {
                    CniError::new(
                        Code::Ipam,
                        format!("IPAM plugin {name:?}: bad address {:?}", ip.address),
                    )
                })?;
                let gw = ip.gateway.as_deref().and_then(|g| g.parse().ok());
                ips.push((addr, gw));
            }
            Ok(IpamResult {
                ips,
                routes: r.routes,
                dns: r.dns,
            })
        }
    }
}

fn ipam_del(plan: &Plan, env: &Env, stdin: &[u8], id: &str, ifname: &str) -> Result<(), CniError> {
    match &plan.ipam {
        Ipam::HostLocal(h) => h
            .release(id, ifname)
            .map(|_| ())
            .map_err(|e| CniError::with_source(Code::Store, "host-local IPAM: release", &e)),
        Ipam::Plugin(name) => delegate(env, name, "DEL", stdin).map(|_| ()),
    }
}

fn first_v4(ips: &[(IpNet, Option<IpAddr>)]) -> Option<(Ipv4Addr, IpNet)> {
    ips.iter().find_map(|(n, _)| match n.addr {
        IpAddr::V4(a) => Some((a, n.network())),
        IpAddr::V6(_) => None,
    })
}

fn first_v6(ips: &[(IpNet, Option<IpAddr>)]) -> Option<(Ipv6Addr, IpNet)> {
    ips.iter().find_map(|(n, _)| match n.addr {
        IpAddr::V6(a) => Some((a, n.network())),
        IpAddr::V4(_) => None,
    })
}

fn write_sysctl(path: &str, value: &str) -> Result<(), CniError> {
    fs::write(path, value)
        .map_err(|e| CniError::with_source(Code::Io, format!("write `{path}`"), &e))
}

fn add(
    plan: &Plan,
    stdin: &[u8],
    env: &Env,
    id: &str,
    ifname: &str,
    netns_path: &str,
) -> Result<Value, CniError> {
    let netns = open_netns(netns_path)?;
    let mut inside = Netlink::open_in(&netns).map_err(nl_err("open netlink in the container"))?;
    if inside
        .link(ifname)
        .map_err(nl_err("look up CNI_IFNAME"))?
        .is_some()
    {
        return Err(CniError::new(
            Code::InvalidEnv,
            format!("CNI_IFNAME: interface `{ifname}` exists already in `{netns_path}`"),
        ));
    }
    let mut host = Netlink::open().map_err(nl_err("open netlink"))?;
    let host_veth = host_veth_name(id, ifname);
    if host
        .link(&host_veth)
        .map_err(nl_err("look up the host veth"))?
        .is_some()
    {
        return Err(CniError::new(
            Code::InvalidConfig,
            format!("host link `{host_veth}` for {id}/{ifname} exists already: run DEL first"),
        ));
    }
    if let Some(b) = host
        .link(&plan.bridge)
        .map_err(nl_err("look up the bridge"))?
        && b.kind != "bridge"
    {
        return Err(invalid(format!(
            "bridge: `{}` exists and is not a bridge",
            plan.bridge
        )));
    }
    let _lock = host_lock()?;
    let marks = match &plan.ipam {
        Ipam::HostLocal(h) => h.marks(),
        Ipam::Plugin(_) => Vec::new(),
    };
    let ipam = ipam_add(plan, env, stdin, id, ifname)?;
    match setup(
        plan, &mut host, &netns, netns_path, id, ifname, &host_veth, &ipam,
    ) {
        Ok(v) => Ok(v),
        Err(e) => {
            // Undo: the same steps as DEL, which skip what does not exist; and put
            // host-local's round-robin marks back, so a refused ADD changes no file.
            let _ = teardown_host(plan, &mut host, id, ifname);
            let _ = ipam_del(plan, env, stdin, id, ifname);
            if let Ipam::HostLocal(h) = &plan.ipam {
                h.restore_marks(&marks);
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn setup(
    plan: &Plan,
    host: &mut Netlink,
    netns: &Netns,
    netns_path: &str,
    id: &str,
    ifname: &str,
    host_veth: &str,
    ipam: &IpamResult,
) -> Result<Value, CniError> {
    let conf = &plan.conf;
    let v4 = first_v4(&ipam.ips);
    let v6 = first_v6(&ipam.ips);
    // A MAC derived from the address, as cella net does: known before the link exists, so
    // the nft elements can be sent while the links are made.
    let peer_mac = v4
        .map(|(a, _)| cella_net::ipam::mac_for(a))
        .or_else(|| v6.map(|(a, _)| cella_net::ipam::mac_for_ip(IpAddr::V6(a))));
    let tag = cnft::tag(id, ifname);
    let elements = Elements {
        tag: tag.clone(),
        ip: v4,
        ip6: v6,
        masq: conf.ip_masq,
        mappings: plan.mappings.clone(),
        anti_spoof: match (conf.anti_spoof, peer_mac) {
            (true, Some(m)) => Some((host_veth.to_string(), cella_net::netlink::format_mac(&m))),
            _ => None,
        },
    };
    if v4.is_none()
        && v6.is_none()
        && (conf.anti_spoof || !plan.mappings.is_empty() || conf.ip_masq)
    {
        return Err(invalid(
            "ipMasq, antiSpoof and portMappings need an address from IPAM".into(),
        ));
    }
    let batch = elements.add();
    let op = format!("add the elements of {tag}");
    let pending = if batch.is_empty() {
        None
    } else {
        Some(cella_net::nft::spawn(batch.clone(), &op).map_err(nft_err("nftables"))?)
    };
    let linked = make_links(plan, host, netns, ifname, host_veth, ipam, peer_mac);
    let nft_done = match pending.map(cella_net::nft::Pending::wait) {
        None | Some(Ok(())) => Ok(()),
        Some(Err(e)) if e.is_not_found() => {
            // The bridge table needs nft's own syntax; it is idempotent, so a crash between
            // the two transactions leaves nothing wrong.
            let bridge_table = if elements.needs_bridge_table() {
                cella_net::nft::apply_text(cnft::bridge_base_text(), &op)
            } else {
                Ok(())
            };
            bridge_table.and_then(|()| {
                let mut all = cnft::nat_base(v4.is_some(), v6.is_some());
                all.extend(batch);
                cella_net::nft::apply(all, &op)
            })
        }
        Some(Err(e)) => Err(e),
    };
    let (br_mac, host_mac, ctr_mac, routes) = linked?;
    nft_done.map_err(nft_err("nftables"))?;
    if v4.is_some() && !plan.mappings.is_empty() {
        // Mappings used through 127.0.0.1 leave by the bridge with a loopback source.
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", plan.bridge),
            "1",
        )?;
    }
    let old = conf.cni_version.as_str() != "1.0.0";
    let result = CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![
            Interface {
                name: plan.bridge.clone(),
                mac: br_mac,
                sandbox: None,
            },
            Interface {
                name: host_veth.into(),
                mac: host_mac,
                sandbox: None,
            },
            Interface {
                name: ifname.into(),
                mac: ctr_mac,
                sandbox: Some(netns_path.into()),
            },
        ],
        ips: ipam
            .ips
            .iter()
            .map(|(n, gw)| IpConfig {
                interface: Some(2),
                version: old.then(|| if n.addr.is_ipv4() { "4" } else { "6" }.to_string()),
                address: n.to_string(),
                gateway: gw.map(|g| g.to_string()),
            })
            .collect(),
        routes,
        dns: conf.dns.clone().unwrap_or(ipam.dns.clone()),
    };
    serde_json::to_value(&result)
        .map_err(|e| CniError::with_source(Code::Internal, "encode the result", &e))
}

fn is_default(dst: &str) -> bool {
    dst.parse::<IpNet>().is_ok_and(|n| n.prefix == 0)
}

/// Bridge, veth, the container's addresses and routes; returns the MACs of the bridge,
/// the host end and the container's end, and the routes of the result.
fn make_links(
    plan: &Plan,
    host: &mut Netlink,
    netns: &Netns,
    ifname: &str,
    host_veth: &str,
    ipam: &IpamResult,
    peer_mac: Option<[u8; 6]>,
) -> Result<(String, String, String, Vec<RouteConf>), CniError> {
    let conf = &plan.conf;
    let br = match host
        .link(&plan.bridge)
        .map_err(nl_err("look up the bridge"))?
    {
        Some(l) => {
            if !l.up {
                host.set_link(
                    l.index,
                    &l.name,
                    &LinkChange {
                        up: Some(true),
                        ..Default::default()
                    },
                )
                .map_err(nl_err("bring the bridge up"))?;
            }
            l
        }
        None => {
            let mark = bridge_mark(&plan.bridge)?;
            let io = |op: &str, p: &Path, e: std::io::Error| {
                CniError::with_source(Code::Io, format!("{op} `{}`", p.display()), &e)
            };
            fs::create_dir_all(BRIDGE_MARKS)
                .map_err(|e| io("create", Path::new(BRIDGE_MARKS), e))?;
            fs::write(&mark, b"").map_err(|e| io("write", &mark, e))?;
            host.add_bridge(&plan.bridge, conf.mtu, true)
                .map_err(nl_err("create the bridge"))?;
            let l = host
                .link(&plan.bridge)
                .map_err(nl_err("look up the bridge"))?
                .ok_or_else(|| {
                    CniError::new(Code::Netlink, format!("bridge `{}` vanished", plan.bridge))
                })?;
            host.set_alias(l.index, &l.name, BRIDGE_ALIAS)
                .map_err(nl_err("mark the bridge"))?;
            // The alias marks it now.
            let _ = fs::remove_file(&mark);
            // Pin the bridge's MAC to its own: otherwise it takes the lowest of its ports'
            // and changes as containers come and go (the reference plugin does the same).
            if let Some(mac) = cella_net::netlink::parse_mac(&l.mac) {
                host.set_link(
                    l.index,
                    &l.name,
                    &LinkChange {
                        mac: Some(mac),
                        ..Default::default()
                    },
                )
                .map_err(nl_err("set the bridge's MAC"))?;
            }
            l
        }
    };
    if plan.gateway {
        let have = host.addrs().map_err(nl_err("list addresses"))?;
        for (n, gw) in &ipam.ips {
            let Some(gw) = gw else { continue };
            let want = IpNet {
                addr: *gw,
                prefix: n.prefix,
            };
            if !have.iter().any(|a| a.index == br.index && a.net == want) {
                // IPv6 without duplicate address detection: usable at once (the bridge
                // has no carrier until its first port, which would hold DAD back).
                let r = if want.addr.is_ipv6() {
                    host.add_addr_nodad(br.index, want)
                } else {
                    host.add_addr(br.index, want)
                };
                r.map_err(nl_err("add the gateway address to the bridge"))?;
            }
        }
        if ipam.ips.iter().any(|(n, _)| n.addr.is_ipv4()) {
            write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        }
        if ipam.ips.iter().any(|(n, _)| n.addr.is_ipv6()) {
            write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
        }
    }
    host.add_veth(&VethSpec {
        name: host_veth.into(),
        peer: ifname.into(),
        peer_netns: Some(netns.fd()),
        peer_mac,
        mtu: conf.mtu,
        master: Some(br.index),
        up: true,
    })
    .map_err(nl_err("create the veth"))?;
    let hv = host
        .link(host_veth)
        .map_err(nl_err("look up the host veth"))?
        .ok_or_else(|| CniError::new(Code::Netlink, format!("veth `{host_veth}` vanished")))?;
    if conf.hairpin_mode {
        host.set_hairpin(hv.index, host_veth, true)
            .map_err(nl_err("set hairpin mode"))?;
    }
    let mut inside = Netlink::open_in(netns).map_err(nl_err("open netlink in the container"))?;
    let eth = inside
        .link(ifname)
        .map_err(nl_err("look up CNI_IFNAME"))?
        .ok_or_else(|| CniError::new(Code::Netlink, format!("`{ifname}` vanished")))?;
    for (n, _) in &ipam.ips {
        // IPv6 without duplicate address detection, as the reference bridge plugin does
        // with hairpin mode (where DAD sees its own echoed solicitation and fails): IPAM
        // made the address unique, and it is usable at once.
        let r = if n.addr.is_ipv6() {
            inside.add_addr_nodad(eth.index, *n)
        } else {
            inside.add_addr(eth.index, *n)
        };
        r.map_err(nl_err(&format!("add address {n} in the container")))?;
    }
    inside
        .set_link(
            eth.index,
            ifname,
            &LinkChange {
                up: Some(true),
                ..Default::default()
            },
        )
        .map_err(nl_err("bring the container's interface up"))?;
    let mut routes = ipam.routes.clone();
    if conf.is_default_gateway {
        for (n, gw) in &ipam.ips {
            let Some(gw) = gw else { continue };
            let dst = if n.addr.is_ipv4() {
                "0.0.0.0/0"
            } else {
                "::/0"
            };
            let has = routes
                .iter()
                .any(|r| is_default(&r.dst) && r.dst.contains(':') == n.addr.is_ipv6());
            if !has {
                routes.push(RouteConf {
                    dst: dst.into(),
                    gw: Some(gw.to_string()),
                });
            }
        }
    }
    for r in &routes {
        let dst: IpNet = r
            .dst
            .parse()
            .map_err(|_| invalid(format!("route {:?}: not a CIDR", r.dst)))?;
        let gw: Option<IpAddr> = match &r.gw {
            Some(g) => Some(
                g.parse()
                    .map_err(|_| invalid(format!("route gw {g:?}: not an address")))?,
            ),
            None => ipam
                .ips
                .iter()
                .find(|(n, _)| n.addr.is_ipv4() == dst.addr.is_ipv4())
                .and_then(|(_, g)| *g),
        };
        inside
            .add_route(&Route {
                dst: (dst.prefix != 0).then_some(dst),
                gateway: gw,
                oif: Some(eth.index),
                table: TABLE_MAIN,
                ..Route::default()
            })
            .map_err(nl_err(&format!("add route {} in the container", r.dst)))?;
    }
    Ok((br.mac, hv.mac, eth.mac, routes))
}

/// Removes the host side of `id`/`ifname`: nft elements, the veth, and the bridge this
/// plugin made when its last port is gone. Goes on past failures; returns the first.
fn teardown_host(plan: &Plan, host: &mut Netlink, id: &str, ifname: &str) -> Result<(), CniError> {
    let mut first: Option<CniError> = None;
    let mut keep = |r: Result<(), CniError>| {
        if let Err(e) = r
            && first.is_none()
        {
            first = Some(e);
        }
    };
    let tag = cnft::tag(id, ifname);
    let host_veth = host_veth_name(id, ifname);
    // The nft processes run on a thread while the veth is deleted here: both mostly wait
    // on the kernel (the veth for an RCU grace period).
    let (nft_done, veth_done) = std::thread::scope(|s| {
        let nft = s.spawn(|| cnft::delete_tagged(&tag));
        let veth = (|| {
            if let Some(l) = host
                .link(&host_veth)
                .map_err(nl_err("look up the host veth"))?
            {
                match host.del_link(l.index, &l.name) {
                    Ok(()) => {}
                    Err(e) if e.errno() == Some(libc::ENODEV) => {}
                    Err(e) => return Err(nl_err("delete the veth")(e)),
                }
            }
            Ok(())
        })();
        let nft = nft.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (nft, veth)
    });
    keep(nft_done.map_err(nft_err("nftables")));
    keep(veth_done);
    keep((|| {
        // Ours: marked by its alias, or by the note of an ADD killed before it could set
        // the alias.
        let mark = bridge_mark(&plan.bridge)?;
        let aliased = host
            .alias(&plan.bridge)
            .map_err(nl_err("look up the bridge"))?
            .as_deref()
            == Some(BRIDGE_ALIAS);
        if !aliased && !mark.exists() {
            return Ok(());
        }
        let Some(br) = host
            .link(&plan.bridge)
            .map_err(nl_err("look up the bridge"))?
        else {
            let _ = fs::remove_file(&mark);
            return Ok(());
        };
        let links = host.links().map_err(nl_err("list links"))?;
        if links.iter().any(|l| l.master == Some(br.index)) {
            return Ok(());
        }
        match host.del_link(br.index, &br.name) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::ENODEV) => {}
            Err(e) => return Err(nl_err("delete the bridge")(e)),
        }
        let _ = fs::remove_file(&mark);
        Ok(())
    })());
    first.map_or(Ok(()), Err)
}

fn del(plan: &Plan, stdin: &[u8], env: &Env, id: &str, ifname: &str) -> Result<(), CniError> {
    let mut host = Netlink::open().map_err(nl_err("open netlink"))?;
    let _lock = host_lock()?;
    let a = teardown_host(plan, &mut host, id, ifname);
    // The container's end goes with the host end; a veth that was moved or renamed on
    // the host is found from inside, when the namespace still exists.
    if let Some(p) = env.netns.as_deref()
        && let Ok(ns) = Netns::open(&NetnsRef::Path(p.into()))
        && let Ok(mut inside) = Netlink::open_in(&ns)
        && let Ok(Some(l)) = inside.link(ifname)
        && l.kind == "veth"
    {
        let _ = inside.del_link(l.index, &l.name);
    }
    let b = ipam_del(plan, env, stdin, id, ifname);
    a.and(b)
}

fn check_failed(msg: String) -> CniError {
    CniError::new(Code::CheckFailed, msg)
}

fn check(plan: &Plan, id: &str, ifname: &str, netns_path: &str) -> Result<(), CniError> {
    let prev: CniResult = match &plan.conf.prev_result {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| CniError::with_source(Code::Decode, "prevResult", &e))?,
        None => {
            return Err(invalid(
                "prevResult: missing (CHECK needs ADD's result)".into(),
            ));
        }
    };
    let netns = open_netns(netns_path)?;
    let mut inside = Netlink::open_in(&netns).map_err(nl_err("open netlink in the container"))?;
    let Some(eth) = inside.link(ifname).map_err(nl_err("look up CNI_IFNAME"))? else {
        return Err(check_failed(format!(
            "interface `{ifname}` is missing in `{netns_path}`"
        )));
    };
    if !eth.up {
        return Err(check_failed(format!("interface `{ifname}` is down")));
    }
    let addrs = inside
        .addrs()
        .map_err(nl_err("list addresses in the container"))?;
    let ctr_idx = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.is_some());
    for ip in &prev.ips {
        if ip.interface.is_some() && ip.interface != ctr_idx {
            continue;
        }
        let want: IpNet = ip
            .address
            .parse()
            .map_err(|_| invalid(format!("prevResult: bad address {:?}", ip.address)))?;
        if !addrs.iter().any(|a| a.index == eth.index && a.net == want) {
            return Err(check_failed(format!(
                "address {want} is missing on `{ifname}`"
            )));
        }
    }
    let routes = inside
        .routes(false)
        .map_err(nl_err("list routes in the container"))?;
    let routes6 = inside
        .routes(true)
        .map_err(nl_err("list routes in the container"))?;
    for r in &prev.routes {
        let Ok(dst) = r.dst.parse::<IpNet>() else {
            continue;
        };
        let table = if dst.addr.is_ipv4() {
            &routes
        } else {
            &routes6
        };
        let found = table.iter().any(|k| {
            k.table == TABLE_MAIN
                && k.oif == Some(eth.index)
                && match k.dst {
                    None => dst.prefix == 0,
                    Some(d) => d.network() == dst.network(),
                }
        });
        if !found {
            return Err(check_failed(format!(
                "route {} is missing in the container",
                r.dst
            )));
        }
    }
    let mut host = Netlink::open().map_err(nl_err("open netlink"))?;
    let host_veth = host_veth_name(id, ifname);
    let Some(hv) = host
        .link(&host_veth)
        .map_err(nl_err("look up the host veth"))?
    else {
        return Err(check_failed(format!("host veth `{host_veth}` is missing")));
    };
    let Some(br) = host
        .link(&plan.bridge)
        .map_err(nl_err("look up the bridge"))?
    else {
        return Err(check_failed(format!("bridge `{}` is missing", plan.bridge)));
    };
    if hv.master != Some(br.index) {
        return Err(check_failed(format!(
            "`{host_veth}` is not a port of `{}`",
            plan.bridge
        )));
    }
    if let Ipam::HostLocal(h) = &plan.ipam {
        let leased = h
            .find(id, ifname)
            .map_err(|e| CniError::with_source(Code::Store, "host-local IPAM", &e))?;
        for ip in &prev.ips {
            if let Ok(n) = ip.address.parse::<IpNet>()
                && !leased.contains(&n.addr)
            {
                return Err(check_failed(format!(
                    "no lease for {} in `{}`",
                    n.addr,
                    h.dir.display()
                )));
            }
        }
    }
    let v4 = prev
        .ips
        .iter()
        .filter_map(|i| i.address.parse::<IpNet>().ok())
        .find(|n| n.addr.is_ipv4());
    let v6 = prev
        .ips
        .iter()
        .filter_map(|i| i.address.parse::<IpNet>().ok())
        .find(|n| n.addr.is_ipv6());
    let expect = Elements {
        tag: cnft::tag(id, ifname),
        ip: v4.and_then(|n| match n.addr {
            IpAddr::V4(a) => Some((a, n.network())),
            IpAddr::V6(_) => None,
        }),
        ip6: v6.and_then(|n| match n.addr {
            IpAddr::V6(a) => Some((a, n.network())),
            IpAddr::V4(_) => None,
        }),
        masq: plan.conf.ip_masq,
        mappings: plan.mappings.clone(),
        anti_spoof: plan
            .conf
            .anti_spoof
            .then(|| (host_veth.clone(), eth.mac.clone())),
    }
    .add()
    .len();
    let have = cnft::count_tagged(&cnft::tag(id, ifname)).map_err(nft_err("nftables"))?;
    if have != expect {
        return Err(check_failed(format!(
            "nftables: {have} of {expect} elements of {id}/{ifname} are present"
        )));
    }
    Ok(())
}
