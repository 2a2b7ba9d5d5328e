//! A container's bridge network: a veth from the container's namespace to a bridge in the
//! host's (the caller's) namespace, an address from IPAM, a default route via the bridge's
//! gateway address, masquerade and port forwards in nftables, and L2 anti-spoofing.
//!
//! [`attach`] validates everything before creating anything, records what it is about to
//! make in a state file before making it, and on failure removes what it made; [`detach`]
//! removes exactly what the state file names, so it also works after a crash at any point.
//!
//! State layout under the state directory (default [`DEFAULT_STATE_DIR`]):
//!
//! ```text
//! .lock                       flock(2) serialising attach and detach
//! attachments/ID.json         one per attached container
//! bridges/NAME.json           a bridge (or its gateway address) that cella made
//! ports/PROTO-PORT            which attachment forwards a host port (holds its id)
//! links/ID.json               a point-to-point link (see `p2p`)
//! ```

use crate::cidr::IpNet;
use crate::ipam::{Ipam, IpamError, mac_for_ip};
use crate::netlink::{LinkChange, Netlink, NetlinkError, Route, TABLE_MAIN, VethSpec};
use crate::netns::{Netns, NetnsError, NetnsRef};
use crate::nft::{self, ContainerRules, NftError, Proto};
use crate::sys;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Where attachment state lives unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/run/cella/net";

/// A host port forwarded to a container port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortForward {
    /// Port on the host.
    pub host_port: u16,
    /// Port in the container.
    pub container_port: u16,
    /// TCP or UDP.
    pub proto: Proto,
}

/// A `--publish` value that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid port forward {0:?}: expected HOSTPORT:CONTAINERPORT[/tcp|/udp] with ports 1-65535"
)]
pub struct PortForwardError(pub String);

impl FromStr for PortForward {
    type Err = PortForwardError;
    fn from_str(s: &str) -> Result<PortForward, PortForwardError> {
        let err = || PortForwardError(s.into());
        let (ports, proto) = match s.rsplit_once('/') {
            Some((p, "tcp")) => (p, Proto::Tcp),
            Some((p, "udp")) => (p, Proto::Udp),
            Some(_) => return Err(err()),
            None => (s, Proto::Tcp),
        };
        let (h, c) = ports.split_once(':').ok_or_else(err)?;
        let host_port: u16 = h.parse().map_err(|_| err())?;
        let container_port: u16 = c.parse().map_err(|_| err())?;
        if host_port == 0 || container_port == 0 {
            return Err(err());
        }
        Ok(PortForward {
            host_port,
            container_port,
            proto,
        })
    }
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.container_port,
            self.proto.name()
        )
    }
}

/// Where attach and detach keep their records.
#[derive(Clone, Debug)]
pub struct Paths {
    /// Attachment state (`attachments/`, `bridges/`).
    pub state_dir: PathBuf,
    /// IPAM leases.
    pub ipam_dir: PathBuf,
    /// Named network definitions (see [`crate::network`]).
    pub network_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            state_dir: DEFAULT_STATE_DIR.into(),
            ipam_dir: crate::ipam::DEFAULT_IPAM_DIR.into(),
            network_dir: crate::network::DEFAULT_NETWORK_DIR.into(),
        }
    }
}

/// What to attach.
#[derive(Clone, Debug)]
pub struct AttachRequest {
    /// Names the attachment (the container id); detach takes the same id.
    pub id: String,
    /// The container's network namespace.
    pub netns: NetnsRef,
    /// Bridge in the host namespace; created when missing.
    pub bridge: String,
    /// The bridge's subnet (IPv4, or IPv6 for an IPv6-only network); its first address is
    /// the gateway.
    pub subnet: IpNet,
    /// An IPv6 subnet next to an IPv4 `subnet` (dual stack); its first address is the
    /// IPv6 gateway.
    pub subnet6: Option<IpNet>,
    /// Interface name inside the container.
    pub ifname: String,
    /// MTU of the veth (and of the bridge when cella creates it).
    pub mtu: Option<u32>,
    /// Port forwards from the host.
    pub publish: Vec<PortForward>,
    /// Masquerade the container's outgoing traffic.
    pub masquerade: bool,
    /// Drop frames from the container whose source MAC or IP is not its own.
    pub anti_spoof: bool,
}

impl AttachRequest {
    /// The IPv4 subnet, if any.
    fn v4(&self) -> Option<IpNet> {
        self.subnet.addr.is_ipv4().then_some(self.subnet)
    }

    /// The IPv6 subnet, if any.
    fn v6(&self) -> Option<IpNet> {
        self.subnet6
            .or_else(|| self.subnet.addr.is_ipv6().then_some(self.subnet))
    }
}

/// The record of one attachment, written before anything is created.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    /// The attachment id.
    pub id: String,
    /// The container's namespace file.
    pub netns: PathBuf,
    /// The bridge.
    pub bridge: String,
    /// The subnet (IPv6 for an IPv6-only attachment).
    pub subnet: IpNet,
    /// Interface inside the container.
    pub ifname: String,
    /// Host end of the veth (a bridge port).
    pub host_veth: String,
    /// The leased IPv4 address, once leased.
    pub ip: Option<Ipv4Addr>,
    /// The IPv4 gateway (the bridge's address); 0.0.0.0 for an IPv6-only attachment.
    pub gateway: Ipv4Addr,
    /// The IPv6 subnet next to the IPv4 one, for a dual-stack attachment.
    #[serde(default)]
    pub subnet6: Option<IpNet>,
    /// The leased IPv6 address, once leased.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// The IPv6 gateway (the bridge's address).
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    /// The container's MAC, once leased.
    pub mac: Option<String>,
    /// Port forwards.
    pub publish: Vec<PortForward>,
    /// Masquerade on.
    pub masquerade: bool,
    /// Anti-spoofing on.
    pub anti_spoof: bool,
    /// Every step finished.
    pub complete: bool,
}

/// A bridge, or a gateway address on one, that cella made and removes with its last user.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct BridgeRecord {
    name: String,
    created: bool,
    gateway: Option<IpNet>,
    #[serde(default)]
    gateway6: Option<IpNet>,
}

/// Why an attachment was refused before anything was made.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRequest {
    /// A name that the kernel or the state store cannot take.
    #[error("{field}: invalid name {value:?}: {why}")]
    Name {
        /// Which argument.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The id is attached already.
    #[error("attachment {0:?} exists already; detach it first")]
    Exists(String),
    /// Two forwards of one request use the same host port.
    #[error("port forward {0} is given twice")]
    DuplicatePort(PortForward),
    /// Another attachment forwards the host port already.
    #[error("host port {port}/{proto} is already forwarded to attachment {owner:?}")]
    PortTaken {
        /// The host port.
        port: u16,
        /// Its protocol.
        proto: &'static str,
        /// Who has it.
        owner: String,
    },
    /// The subnet overlaps an address of the host on another link.
    #[error("subnet {subnet} overlaps address {addr} on host link `{link}`")]
    HostOverlap {
        /// The subnet.
        subnet: IpNet,
        /// The host address.
        addr: IpNet,
        /// Its link.
        link: String,
    },
    /// The named bridge exists but is not a bridge.
    #[error("`{0}` exists and is not a bridge")]
    NotABridge(String),
    /// The interface exists in the container already.
    #[error("interface `{ifname}` exists already in network namespace `{}`", netns.display())]
    IfnameTaken {
        /// The name.
        ifname: String,
        /// The namespace.
        netns: PathBuf,
    },
    /// A subnet of the wrong family.
    #[error("{field}: {subnet} is not an {family} subnet")]
    Family {
        /// Which argument.
        field: &'static str,
        /// The subnet.
        subnet: IpNet,
        /// The family it should be.
        family: &'static str,
    },
    /// The host end's name is taken by a link cella did not record.
    #[error("host link `{0}` exists already")]
    HostLinkTaken(String),
    /// The subnet is not usable.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// The namespace cannot be opened.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Querying links or addresses failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The attachment records cannot be read.
    #[error(transparent)]
    Store(Box<StepError>),
}

/// A failed step of attach or detach.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Netlink refused.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// nft refused.
    #[error(transparent)]
    Nft(#[from] NftError),
    /// IPAM failed.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// Entering a namespace failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// A state or sysctl file failed.
    #[error("{op} `{}`", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A state file that cannot be read or written.
    #[error("state file `{}`", .0.display())]
    State(PathBuf, #[source] serde_json::Error),
    /// Several teardown steps failed.
    #[error(transparent)]
    Teardown(TeardownErrors),
}

/// Every failure of one teardown (it goes on past the first).
#[derive(Debug)]
pub struct TeardownErrors(pub Vec<StepError>);

impl fmt::Display for TeardownErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} teardown step(s) failed:", self.0.len())?;
        for e in &self.0 {
            write!(f, " [{}", e)?;
            let mut s = std::error::Error::source(e);
            while let Some(c) = s {
                write!(f, ": {c}")?;
                s = c.source();
            }
            write!(f, "]")?;
        }
        Ok(())
    }
}

impl std::error::Error for TeardownErrors {}

/// A failed attach.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Refused before anything was made.
    #[error("attach {id:?}")]
    Invalid {
        /// The attachment id.
        id: String,
        /// Why.
        #[source]
        source: InvalidRequest,
    },
    /// A step failed; what was made was removed again, unless `cleanup` says otherwise.
    #[error("attach {id:?}{}", cleanup.as_ref().map(|c| format!(" (and the cleanup: {c})")).unwrap_or_default())]
    Setup {
        /// The attachment id.
        id: String,
        /// The step that failed.
        #[source]
        source: StepError,
        /// Failures while undoing, if any; the state file is then kept for `detach`.
        cleanup: Option<TeardownErrors>,
    },
    /// The state store cannot be used.
    #[error("attach {id:?}")]
    State {
        /// The attachment id.
        id: String,
        /// Why.
        #[source]
        source: StepError,
    },
}

/// A failed detach.
#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    /// No attachment of that id.
    #[error("detach {0:?}: no such attachment")]
    NotFound(String),
    /// The state store cannot be used.
    #[error("detach {id:?}")]
    State {
        /// The attachment id.
        id: String,
        /// Why.
        #[source]
        source: StepError,
    },
    /// Some steps failed; the state file is kept so that detach can be retried.
    #[error("detach {id:?}")]
    Teardown {
        /// The attachment id.
        id: String,
        /// The failures.
        #[source]
        source: TeardownErrors,
    },
}

fn io_step<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StepError + 'a {
    move |source| StepError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The host end's name for attachment `id`: `cv` and 12 hex digits of a hash of the id,
/// so that detach after a crash finds it from the id alone.
pub fn host_veth_name(id: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("cv{:012x}", h & 0xffff_ffff_ffff)
}

fn check_ifname(field: &'static str, v: &str) -> Result<(), InvalidRequest> {
    let bad = |why| InvalidRequest::Name {
        field,
        value: v.into(),
        why,
    };
    if v.is_empty() || v.len() > 15 {
        return Err(bad("interface names have 1-15 characters"));
    }
    if v.contains(['/', ':']) || v.chars().any(char::is_whitespace) || v == "." || v == ".." {
        return Err(bad("no `/`, `:` or white space"));
    }
    Ok(())
}

fn check_id(v: &str) -> Result<(), InvalidRequest> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !v.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(InvalidRequest::Name {
            field: "id",
            value: v.into(),
            why: "use 1-128 letters, digits, `-`, `_`, `.`, not starting with `.`",
        })
    }
}

/// The attachment store (also holds the point-to-point link records of [`crate::p2p`]).
pub(crate) struct Store {
    pub(crate) dir: PathBuf,
}

/// Holds the store's lock until dropped.
pub(crate) struct StoreLock(#[allow(dead_code)] File);

impl Store {
    pub(crate) fn lock(&self) -> Result<StoreLock, StepError> {
        for d in ["attachments", "bridges", "links", "ports"] {
            let p = self.dir.join(d);
            fs::create_dir_all(&p).map_err(io_step("create directory", &p))?;
        }
        let path = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_step("open", &path))?;
        sys::flock_exclusive(f.as_fd()).map_err(io_step("lock", &path))?;
        // Every record is written under this lock: a `*.tmp` seen now is what a writer
        // killed half-way left (its record, if any, was never renamed into place).
        for d in ["attachments", "bridges", "links", "ports"] {
            if let Ok(rd) = fs::read_dir(self.dir.join(d)) {
                for e in rd.flatten() {
                    if e.file_name().as_encoded_bytes().ends_with(b".tmp") {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(StoreLock(f))
    }

    fn att_path(&self, id: &str) -> PathBuf {
        self.dir.join("attachments").join(format!("{id}.json"))
    }

    /// The index file saying which attachment forwards host port `port`/`proto`, so that
    /// checking a port costs one lookup however many attachments there are.
    fn port_path(&self, proto: Proto, port: u16) -> PathBuf {
        self.dir
            .join("ports")
            .join(format!("{}-{port}", proto.name()))
    }

    fn br_path(&self, name: &str) -> PathBuf {
        self.dir.join("bridges").join(format!("{name}.json"))
    }

    pub(crate) fn write<T: serde::Serialize>(&self, path: &Path, v: &T) -> Result<(), StepError> {
        let text = serde_json::to_vec_pretty(v).map_err(|e| StepError::State(path.into(), e))?;
        // Attachment records describe kernel state (links, nft elements) that a reboot
        // clears too, so they need no fsync: they only have to survive a crash of cella.
        crate::ipam::write_atomic(path, &text, false).map_err(StepError::Ipam)
    }

    pub(crate) fn read<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
    ) -> Result<Option<T>, StepError> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StepError::State(path.into(), e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StepError::Io {
                op: "read",
                path: path.into(),
                source: e,
            }),
        }
    }

    /// Removes a record, and the temporary file of a write that was killed half-way.
    pub(crate) fn remove(&self, path: &Path) -> Result<(), StepError> {
        let _ = fs::remove_file(path.with_extension("tmp"));
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StepError::Io {
                op: "remove",
                path: path.into(),
                source: e,
            }),
        }
    }

    /// The first attachment (in directory order) for which `pred` holds; reads records
    /// only until it finds one.
    fn find(&self, pred: impl Fn(&Attachment) -> bool) -> Result<Option<Attachment>, StepError> {
        let dir = self.dir.join("attachments");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(StepError::Io {
                    op: "read directory",
                    path: dir,
                    source: e,
                });
            }
        };
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "json")
                && let Some(a) = self.read::<Attachment>(&e.path())?
                && pred(&a)
            {
                return Ok(Some(a));
            }
        }
        Ok(None)
    }

    fn all(&self) -> Result<Vec<Attachment>, StepError> {
        let dir = self.dir.join("attachments");
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(StepError::Io {
                    op: "read directory",
                    path: dir,
                    source: e,
                });
            }
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            if e.path().extension().is_some_and(|x| x == "json")
                && let Some(a) = self.read::<Attachment>(&e.path())?
            {
                out.push(a);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

/// The attachment that forwards host port `port`/`proto`, if any (a lookup in the port
/// index, without the store's lock: an answer for early, clear errors; attach checks
/// again under the lock).
pub fn port_owner(paths: &Paths, proto: Proto, port: u16) -> Option<String> {
    let store = Store {
        dir: paths.state_dir.clone(),
    };
    fs::read_to_string(store.port_path(proto, port)).ok()
}

/// Every attachment recorded in `paths.state_dir`.
pub fn list(paths: &Paths) -> Result<Vec<Attachment>, StepError> {
    let store = Store {
        dir: paths.state_dir.clone(),
    };
    let _l = store.lock()?;
    store.all()
}

/// Checks the request against the host, the container's namespace, IPAM and the other
/// attachments; returns the opened namespace. Makes nothing.
fn validate(
    req: &AttachRequest,
    store: &Store,
    ipam: &Ipam,
    host: &mut Netlink,
) -> Result<Netns, InvalidRequest> {
    check_id(&req.id)?;
    check_ifname("bridge", &req.bridge)?;
    check_ifname("ifname", &req.ifname)?;
    if store.att_path(&req.id).exists() {
        return Err(InvalidRequest::Exists(req.id.clone()));
    }
    if req.subnet.addr.is_ipv6() && req.subnet6.is_some() {
        return Err(InvalidRequest::Family {
            field: "subnet",
            subnet: req.subnet,
            family: "IPv4 (the IPv6 subnet of a dual-stack network is the second one)",
        });
    }
    ipam.check(req.subnet, &req.bridge)?;
    if let Some(s6) = req.subnet6 {
        if !s6.addr.is_ipv6() {
            return Err(InvalidRequest::Family {
                field: "subnet6",
                subnet: s6,
                family: "IPv6",
            });
        }
        ipam.check(s6, &req.bridge)?;
    }
    for (i, p) in req.publish.iter().enumerate() {
        if req.publish[..i]
            .iter()
            .any(|q| q.host_port == p.host_port && q.proto == p.proto)
        {
            return Err(InvalidRequest::DuplicatePort(*p));
        }
    }
    for p in &req.publish {
        if let Ok(owner) = fs::read_to_string(store.port_path(p.proto, p.host_port)) {
            return Err(InvalidRequest::PortTaken {
                port: p.host_port,
                proto: p.proto.name(),
                owner,
            });
        }
    }
    let netns = Netns::open(&req.netns)?;
    // Targeted questions, not dumps: the host may hold hundreds of container links.
    let bridge = host.link(&req.bridge)?;
    if let Some(b) = &bridge
        && b.kind != "bridge"
    {
        return Err(InvalidRequest::NotABridge(req.bridge.clone()));
    }
    let mut host_addrs = host.addrs_family(false)?;
    if req.v6().is_some() {
        host_addrs.extend(host.addrs_family(true)?);
    }
    for a in host_addrs {
        if Some(a.index) == bridge.as_ref().map(|b| b.index) {
            continue;
        }
        let hits = |s: &IpNet| a.net.network().overlaps(s).then_some(*s);
        if let Some(subnet) = hits(&req.subnet).or_else(|| req.subnet6.as_ref().and_then(hits)) {
            let link = host
                .link_name(a.index)?
                .unwrap_or_else(|| format!("#{}", a.index));
            return Err(InvalidRequest::HostOverlap {
                subnet,
                addr: a.net,
                link,
            });
        }
    }
    let host_veth = host_veth_name(&req.id);
    if host.link(&host_veth)?.is_some() {
        return Err(InvalidRequest::HostLinkTaken(host_veth));
    }
    let mut inside = Netlink::open_in(&netns)?;
    if inside.link(&req.ifname)?.is_some() {
        return Err(InvalidRequest::IfnameTaken {
            ifname: req.ifname.clone(),
            netns: netns.path().into(),
        });
    }
    Ok(netns)
}

fn write_sysctl(path: &str, value: &str) -> Result<(), StepError> {
    fs::write(path, value).map_err(io_step("write", Path::new(path)))
}

fn rules_of(a: &Attachment) -> ContainerRules {
    ContainerRules {
        ip: a.ip,
        ip6: a.ip6,
        forwards: a
            .publish
            .iter()
            .map(|p| (p.proto, p.host_port, p.container_port))
            .collect(),
        masquerade: a.masquerade,
        anti_spoof: match (&a.mac, a.anti_spoof) {
            (Some(mac), true) => Some((a.host_veth.clone(), mac.clone())),
            _ => None,
        },
    }
}

/// Attaches a container's network namespace to a bridge (see the module docs). Returns
/// the completed record.
pub fn attach(paths: &Paths, req: &AttachRequest) -> Result<Attachment, AttachError> {
    let id = req.id.clone();
    let store = Store {
        dir: paths.state_dir.clone(),
    };
    let ipam = Ipam::new(&paths.ipam_dir);
    let state_err = |source| AttachError::State {
        id: id.clone(),
        source,
    };
    let mut host = Netlink::open().map_err(|e| state_err(e.into()))?;
    let _lock = store.lock().map_err(state_err)?;
    let netns = validate(req, &store, &ipam, &mut host).map_err(|source| AttachError::Invalid {
        id: id.clone(),
        source,
    })?;
    let gateway = req.subnet.nth_v4(1).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let mut att = Attachment {
        id: id.clone(),
        netns: netns.path().into(),
        bridge: req.bridge.clone(),
        subnet: req.subnet,
        ifname: req.ifname.clone(),
        host_veth: host_veth_name(&id),
        ip: None,
        gateway,
        subnet6: req.subnet6,
        ip6: None,
        gateway6: None,
        mac: None,
        publish: req.publish.clone(),
        masquerade: req.masquerade,
        anti_spoof: req.anti_spoof,
        complete: false,
    };
    let path = store.att_path(&id);
    store.write(&path, &att).map_err(state_err)?;
    match setup(&store, &ipam, &mut host, &netns, req, &mut att) {
        Ok(()) => Ok(att),
        Err(source) => {
            let cleanup = teardown(&store, &ipam, &mut host, &att).err();
            Err(AttachError::Setup {
                id,
                source,
                cleanup,
            })
        }
    }
}

fn setup(
    store: &Store,
    ipam: &Ipam,
    host: &mut Netlink,
    netns: &Netns,
    req: &AttachRequest,
    att: &mut Attachment,
) -> Result<(), StepError> {
    let path = store.att_path(&att.id);
    for p in &req.publish {
        let pp = store.port_path(p.proto, p.host_port);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&pp)
            .map_err(io_step("claim port", &pp))?;
        io::Write::write_all(&mut f, att.id.as_bytes()).map_err(io_step("write", &pp))?;
    }
    // The MAC comes from the first lease: the IPv4 address, or the IPv6 one of an
    // IPv6-only network.
    for (i, subnet) in [Some(req.subnet), req.subnet6]
        .into_iter()
        .flatten()
        .enumerate()
    {
        let lease = ipam.allocate(subnet, &req.bridge, &att.id)?;
        match (lease.ip, lease.gateway) {
            (IpAddr::V4(ip), IpAddr::V4(gw)) => {
                att.ip = Some(ip);
                att.gateway = gw;
            }
            (IpAddr::V6(ip), IpAddr::V6(gw)) => {
                att.ip6 = Some(ip);
                att.gateway6 = Some(gw);
            }
            _ => return Err(IpamError::BadSubnet(subnet, "gateway of another family").into()),
        }
        if i == 0 {
            att.mac = Some(lease.mac.clone());
        }
        store.write(&path, att)?;
    }

    // nftables: one transaction, and the one step that can still find a port taken by a
    // concurrent forward (the `create` of its element then fails the whole batch). The
    // tables' rules never change per container, so the common case is one batch of
    // elements; only when a table is missing (the first attach on this host) are the
    // tables, chains and rules created, in the same transaction as the elements. The nft
    // process runs while the links are made below; both wait on the kernel.
    let rules = rules_of(att);
    let elements = rules.add();
    let op = format!("add rules for {:?}", att.id);
    let pending = if elements.is_empty() {
        None
    } else {
        Some(nft::spawn(elements.clone(), &op)?)
    };
    let linked = make_links(store, host, netns, req, att);
    let nft_done = match pending.map(nft::Pending::wait) {
        None | Some(Ok(())) => Ok(()),
        Some(Err(e)) if e.is_not_found() => {
            // The bridge table needs nft's own syntax (see nft::bridge_base_text); it is
            // idempotent, so a crash between the two transactions leaves nothing wrong.
            if req.anti_spoof {
                nft::apply_text(nft::bridge_base_text(nft::TABLE), &op)?;
            }
            let mut batch = nft::nat_base(att.ip.is_some(), att.ip6.is_some());
            batch.extend(elements);
            nft::apply(batch, &op)
        }
        Some(Err(e)) => Err(e),
    };
    let mut inside = linked?;
    nft_done?;
    // The last kernel step, after everything that can be refused: an attach that fails
    // before it leaves the container's loopback as it was.
    let lo = inside.index("lo")?;
    inside.set_link(
        lo,
        "lo",
        &LinkChange {
            up: Some(true),
            ..LinkChange::default()
        },
    )?;
    att.complete = true;
    store.write(&path, att)
}

/// The bridge, the veth and the container's side: address, routes, links up.
fn make_links(
    store: &Store,
    host: &mut Netlink,
    netns: &Netns,
    req: &AttachRequest,
    att: &Attachment,
) -> Result<Netlink, StepError> {
    // (address, gateway, prefix) of each family the attachment has.
    let v4 = att
        .ip
        .zip(req.v4())
        .map(|(ip, s)| (IpAddr::V4(ip), IpAddr::V4(att.gateway), s.prefix));
    let v6 = att
        .ip6
        .zip(att.gateway6)
        .zip(req.v6())
        .map(|((ip, gw), s)| (IpAddr::V6(ip), IpAddr::V6(gw), s.prefix));
    let gateways: Vec<IpNet> = [v4, v6]
        .into_iter()
        .flatten()
        .map(|(_, gw, prefix)| IpNet { addr: gw, prefix })
        .collect();
    let bridge_index = ensure_bridge(store, host, req, &gateways)?;
    if v4.is_some() {
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    }
    if v6.is_some() {
        write_sysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
    }
    if v4.is_some() && !req.publish.is_empty() {
        // Forwards used through 127.0.0.1 leave by the bridge with a loopback source,
        // which the kernel drops unless the bridge allows it.
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{}/route_localnet", req.bridge),
            "1",
        )?;
    }

    let first = v4
        .or(v6)
        .map(|(ip, _, _)| ip)
        .ok_or(StepError::Ipam(IpamError::BadSubnet(
            req.subnet,
            "no address was leased",
        )))?;
    let mac = mac_for_ip(first);
    host.add_veth(&VethSpec {
        name: att.host_veth.clone(),
        peer: req.ifname.clone(),
        peer_netns: Some(netns.fd()),
        peer_mac: Some(mac),
        mtu: req.mtu,
        master: Some(bridge_index),
        up: true,
    })?;

    if !req.publish.is_empty() {
        let port = host.index(&att.host_veth)?;
        host.set_hairpin(port, &att.host_veth, true)?;
    }

    let mut inside = Netlink::open_in(netns)?;
    let eth = inside.index(&req.ifname)?;
    if let Some((ip, _, prefix)) = v4 {
        inside.add_addr(eth, IpNet { addr: ip, prefix })?;
    }
    if let Some((ip, _, prefix)) = v6 {
        // No duplicate address detection: IPAM made the address unique, and DAD would
        // keep it unusable ("tentative") for a second or more after the link comes up.
        inside.add_addr_nodad(eth, IpNet { addr: ip, prefix })?;
    }
    inside.set_link(
        eth,
        &req.ifname,
        &LinkChange {
            up: Some(true),
            ..LinkChange::default()
        },
    )?;
    for (_, gw, _) in [v4, v6].into_iter().flatten() {
        inside.add_route(&Route {
            gateway: Some(gw),
            oif: Some(eth),
            table: TABLE_MAIN,
            ..Route::default()
        })?;
    }
    Ok(inside)
}

/// Makes sure the bridge exists, is up and holds the gateway addresses; records what
/// cella made so the last detach removes it.
fn ensure_bridge(
    store: &Store,
    host: &mut Netlink,
    req: &AttachRequest,
    gateways: &[IpNet],
) -> Result<u32, StepError> {
    let rec_path = store.br_path(&req.bridge);
    let mut rec: BridgeRecord = store.read(&rec_path)?.unwrap_or(BridgeRecord {
        name: req.bridge.clone(),
        created: false,
        gateway: None,
        gateway6: None,
    });
    let link = host.link(&req.bridge)?;
    let index = match link {
        Some(l) => {
            if !l.up {
                host.set_link(
                    l.index,
                    &l.name,
                    &LinkChange {
                        up: Some(true),
                        ..LinkChange::default()
                    },
                )?;
            }
            l.index
        }
        None => {
            rec.created = true;
            store.write(&rec_path, &rec)?;
            host.add_bridge(&req.bridge, req.mtu, true)?;
            host.index(&req.bridge)?
        }
    };
    for gw in gateways {
        let v6 = gw.addr.is_ipv6();
        let has_gw = host
            .addrs_family(v6)?
            .iter()
            .any(|a| a.index == index && a.net == *gw);
        if has_gw {
            continue;
        }
        if v6 {
            rec.gateway6 = Some(*gw);
        } else {
            rec.gateway = Some(*gw);
        }
        store.write(&rec_path, &rec)?;
        if v6 {
            // Usable at once: a bridge without ports has no carrier, which would hold
            // duplicate address detection (and so the address) back.
            host.add_addr_nodad(index, *gw)?;
        } else {
            host.add_addr(index, *gw)?;
        }
    }
    if !rec.created && rec.gateway.is_none() && rec.gateway6.is_none() {
        store.remove(&rec_path)?;
    }
    Ok(index)
}

/// Removes everything `att` records; goes on past failures and reports them all. The state
/// file is removed only when every step succeeded.
fn teardown(
    store: &Store,
    ipam: &Ipam,
    host: &mut Netlink,
    att: &Attachment,
) -> Result<(), TeardownErrors> {
    let mut errs: Vec<StepError> = Vec::new();
    let rules = (att.ip.is_some() || att.ip6.is_some()).then(|| rules_of(att));
    let all = rules.as_ref().map(|r| r.delete(None)).unwrap_or_default();
    let op = format!("delete rules of {:?}", att.id);
    // A completed attachment's elements are all there: delete them in an nft process that
    // runs while the veth is deleted (each waits on the kernel).
    let pending = if att.complete && !all.is_empty() {
        nft::spawn(all.clone(), &op).ok()
    } else {
        None
    };
    match host.link(&att.host_veth) {
        Ok(Some(l)) => {
            // ENODEV: the container's network namespace was just torn down, which takes
            // the veth pair with it: what we came to do is done.
            if let Err(e) = host.del_link(l.index, &l.name)
                && e.errno() != Some(libc::ENODEV)
            {
                errs.push(e.into());
            }
        }
        Ok(None) => {}
        Err(e) => errs.push(e.into()),
    }
    let nft_done = match pending {
        Some(p) => p.wait().is_ok(),
        None => all.is_empty(),
    };
    if let (false, Some(rules)) = (nft_done, &rules) {
        // After a crash, or when someone changed the tables: delete only what is there
        // and still ours.
        let r = (|| -> Result<(), NftError> {
            let nat = nft::list_table("ip")?.unwrap_or_default();
            let nat6 = nft::list_table("ip6")?.unwrap_or_default();
            let br = nft::list_table("bridge")?.unwrap_or_default();
            let cmds = rules.delete(Some(nft::Listings {
                ip: &nat,
                ip6: &nat6,
                bridge: &br,
            }));
            if cmds.is_empty() {
                Ok(())
            } else {
                nft::apply(cmds, &op)
            }
        })();
        if let Err(e) = r {
            errs.push(e.into());
        }
    }
    if let Err(e) = ipam.release(att.subnet, &att.id) {
        errs.push(e.into());
    }
    if let Some(s6) = att.subnet6
        && let Err(e) = ipam.release(s6, &att.id)
    {
        errs.push(e.into());
    }
    for p in &att.publish {
        let pp = store.port_path(p.proto, p.host_port);
        // An empty claim is one whose writer was killed between creating and writing
        // it; claims are made under the store's lock, which we hold, so it was ours.
        if fs::read_to_string(&pp).is_ok_and(|owner| owner == att.id || owner.is_empty())
            && let Err(e) = store.remove(&pp)
        {
            errs.push(e);
        }
    }
    if errs.is_empty() {
        if let Err(e) = store.remove(&store.att_path(&att.id)) {
            errs.push(e);
        }
        if let Err(e) = release_bridge(store, host, &att.bridge) {
            errs.push(e);
        }
        if let Err(e) = release_tables(store) {
            errs.push(e);
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(TeardownErrors(errs))
    }
}

/// When no attachment uses `bridge` any more, removes what cella made of it.
fn release_bridge(store: &Store, host: &mut Netlink, bridge: &str) -> Result<(), StepError> {
    if store.find(|a| a.bridge == bridge)?.is_some() {
        return Ok(());
    }
    let rec_path = store.br_path(bridge);
    let Some(rec) = store.read::<BridgeRecord>(&rec_path)? else {
        return Ok(());
    };
    if let Some(l) = host.link(bridge)? {
        if rec.created {
            host.del_link(l.index, &l.name)?;
        } else {
            for gw in rec.gateway.into_iter().chain(rec.gateway6) {
                match host.del_addr(l.index, gw) {
                    Ok(()) => {}
                    Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    store.remove(&rec_path)
}

/// When no attachment is left, removes cella's nft tables (which then hold no element).
fn release_tables(store: &Store) -> Result<(), StepError> {
    if store.find(|_| true)?.is_some() {
        return Ok(());
    }
    nft::apply(nft::drop_tables(), "delete the cella tables").map_err(StepError::from)
}

/// Removes what [`attach`] made for `id` (also after a crash at any point of attach).
pub fn detach(paths: &Paths, id: &str) -> Result<(), DetachError> {
    let store = Store {
        dir: paths.state_dir.clone(),
    };
    let ipam = Ipam::new(&paths.ipam_dir);
    let state_err = |source| DetachError::State {
        id: id.into(),
        source,
    };
    if check_id(id).is_err() {
        return Err(DetachError::NotFound(id.into()));
    }
    let mut host = Netlink::open().map_err(|e| state_err(e.into()))?;
    let _lock = store.lock().map_err(state_err)?;
    let path = store.att_path(id);
    let Some(att): Option<Attachment> = store.read(&path).map_err(state_err)? else {
        // A first write killed half-way leaves only its temporary file: nothing was
        // made after it (the record comes first), so that file is all there is to undo.
        let _ = std::fs::remove_file(path.with_extension("tmp"));
        return Err(DetachError::NotFound(id.into()));
    };
    teardown(&store, &ipam, &mut host, &att).map_err(|source| DetachError::Teardown {
        id: id.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_port_forwards() {
        let p: PortForward = "8080:80/udp".parse().unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.proto),
            (8080, 80, Proto::Udp)
        );
        assert_eq!("8080:80".parse::<PortForward>().unwrap().proto, Proto::Tcp);
        for bad in ["8080", "0:80", "8080:80/sctp", "70000:80", "a:b"] {
            assert!(bad.parse::<PortForward>().is_err(), "{bad}");
        }
    }

    #[test]
    fn host_veth_names_fit_ifnamsiz() {
        let n = host_veth_name("a-very-long-container-id-that-goes-on-and-on");
        assert!(n.len() <= 15, "{n}");
        assert_ne!(host_veth_name("a"), host_veth_name("b"));
    }
}
