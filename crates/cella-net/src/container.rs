//! A container's network on a named bridge network, as a runtime (or a sandbox) sets it
//! up around a container it creates. Three steps, each recorded before it acts:
//!
//! 1. [`check`], before anything exists: the network is defined, the port forwards are
//!    well-formed and free, the subnet is usable. Makes nothing.
//! 2. [`plan`], before the container's init is cloned: writes the record
//!    `DIR/net.json`, leases the address (so it is known before the container exists),
//!    writes `DIR/hosts` and `DIR/resolv.conf`, and returns their read-only bind mounts
//!    for the container's mount plan (the files are never written into the rootfs).
//! 3. [`attach`], once init exists and before it runs anything of the user's: the veth
//!    into `/proc/PID/ns/net`, address, routes, masquerade, port forwards and
//!    anti-spoofing, through [`crate::bridge::attach`], which records every resource in
//!    the attachment store before making it.
//!
//! [`detach`] removes everything the record names, whichever step was reached, and
//! succeeds when there is nothing left; so it also serves a `delete --force` after a crash
//! at any point. `DIR` is the caller's per-container directory (the runtime's state
//! directory of the container); it must outlive the container.

use crate::bridge::{self, AttachRequest, Paths, PortForward};
use crate::cidr::IpNet;
use crate::ipam::Ipam;
use crate::netns::NetnsRef;
use crate::network::{self, Network, NetworkError};
use crate::resolv::{self, BindMount, DnsRequest, ResolvError};
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// The record's file name in the container's directory.
pub const RECORD_FILE: &str = "net.json";

/// What a container asks of its network.
#[derive(Clone, Debug, Default)]
pub struct ContainerRequest {
    /// The container id (the attachment id is derived from it).
    pub id: String,
    /// The network's name.
    pub network: String,
    /// Port forwards from the host.
    pub publish: Vec<PortForward>,
    /// Nameservers for resolv.conf; empty: the host's (see [`crate::resolv`]).
    pub nameservers: Vec<IpAddr>,
    /// The container's host name, for /etc/hosts.
    pub hostname: String,
    /// The interface name inside the container (`eth0` when empty).
    pub ifname: String,
}

/// What the container's network is made of, written to `DIR/net.json` before each
/// resource is made.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerRecord {
    /// The container id.
    pub container: String,
    /// The attachment id in the attachment store (and the owner of the lease).
    pub attachment: String,
    /// The network as it was defined when the container was planned.
    pub network: Network,
    /// The attachment store.
    pub state_dir: PathBuf,
    /// The lease store.
    pub ipam_dir: PathBuf,
    /// Port forwards.
    pub publish: Vec<PortForward>,
    /// Interface inside the container.
    pub ifname: String,
    /// The leased IPv4 address, once leased (none on an IPv6-only network).
    pub ip: Option<Ipv4Addr>,
    /// The IPv4 gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The leased IPv6 address (dual-stack networks), once leased.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// The IPv6 gateway.
    #[serde(default)]
    pub gateway6: Option<Ipv6Addr>,
    /// [`attach`] has begun: the attachment store may hold resources.
    pub attach_started: bool,
    /// [`attach`] finished.
    pub attached: bool,
}

impl ContainerRecord {
    fn paths(&self) -> Paths {
        Paths {
            state_dir: self.state_dir.clone(),
            ipam_dir: self.ipam_dir.clone(),
            network_dir: PathBuf::new(),
        }
    }
}

/// What [`plan`] made.
#[derive(Clone, Debug)]
pub struct Planned {
    /// The record as written.
    pub record: ContainerRecord,
    /// Read-only bind mounts of `DIR/hosts` and `DIR/resolv.conf` at `/etc/hosts` and
    /// `/etc/resolv.conf`.
    pub mounts: Vec<BindMount>,
    /// Why the host's nameservers were not used, if they were not.
    pub note: Option<String>,
}

/// Which part of a [`ContainerRequest`] a refusal is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The network name.
    Network,
    /// The port forwards.
    Publish,
    /// The name resolution settings (nameservers, host name).
    Dns,
}

/// A failed container network operation.
#[derive(Debug, thiserror::Error)]
pub enum ContainerNetError {
    /// The network cannot be used.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// Two forwards use one host port.
    #[error("port forward {0} is given twice")]
    DuplicatePort(PortForward),
    /// Another attachment forwards the host port.
    #[error("host port {port}/{proto} is already forwarded (to attachment {owner:?})")]
    PortTaken {
        /// The host port.
        port: u16,
        /// Its protocol.
        proto: &'static str,
        /// Who has it.
        owner: String,
    },
    /// The subnet cannot be used (or no address is left).
    #[error("network {network:?}")]
    Ipam {
        /// The network.
        network: String,
        /// Why.
        #[source]
        source: crate::ipam::IpamError,
    },
    /// hosts or resolv.conf cannot be written.
    #[error("name resolution files")]
    Resolv(#[from] ResolvError),
    /// The record cannot be read or written.
    #[error("container network record `{}`: {op}", path.display())]
    Record {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The record cannot be parsed.
    #[error("container network record `{}`", .0.display())]
    Corrupt(PathBuf, #[source] serde_json::Error),
    /// Setting up the veth, addresses, routes or nftables failed.
    #[error(transparent)]
    Attach(#[from] bridge::AttachError),
    /// Removing it failed.
    #[error(transparent)]
    Detach(#[from] bridge::DetachError),
    /// Several teardown steps failed.
    #[error("{} teardown step(s) failed: {}", .0.len(), .0.iter().map(|e| error_text(e)).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<ContainerNetError>),
}

fn error_text(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl ContainerNetError {
    /// The part of the request a refusal by [`check`] is about; `None` for failures of
    /// the host (files, netlink, nftables).
    pub fn input(&self) -> Option<Input> {
        match self {
            ContainerNetError::Network(
                NetworkError::NotFound { .. } | NetworkError::BadName(_),
            )
            | ContainerNetError::Ipam { .. } => Some(Input::Network),
            ContainerNetError::DuplicatePort(_) | ContainerNetError::PortTaken { .. } => {
                Some(Input::Publish)
            }
            ContainerNetError::Resolv(ResolvError::Invalid { .. }) => Some(Input::Dns),
            ContainerNetError::Attach(bridge::AttachError::Invalid { source, .. }) => {
                match source {
                    bridge::InvalidRequest::PortTaken { .. }
                    | bridge::InvalidRequest::DuplicatePort(_) => Some(Input::Publish),
                    _ => Some(Input::Network),
                }
            }
            _ => None,
        }
    }
}

/// The attachment id of container `id`: the id itself when the attachment store takes it
/// (1-128 of `A-Za-z0-9-_.`), else a readable prefix and a hash of the whole id.
pub fn attachment_id(id: &str) -> String {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        return id.into();
    }
    let prefix: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(32)
        .collect();
    format!("c{prefix}-{}", &bridge::host_veth_name(id)[2..])
}

/// Checks a request against the network definitions, the port index and IPAM; returns
/// the network. Makes nothing.
pub fn check(paths: &Paths, req: &ContainerRequest) -> Result<Network, ContainerNetError> {
    let net = network::get(paths, &req.network)?;
    for (i, p) in req.publish.iter().enumerate() {
        if req.publish[..i]
            .iter()
            .any(|q| q.host_port == p.host_port && q.proto == p.proto)
        {
            return Err(ContainerNetError::DuplicatePort(*p));
        }
        if let Some(owner) = bridge::port_owner(paths, p.proto, p.host_port) {
            return Err(ContainerNetError::PortTaken {
                port: p.host_port,
                proto: p.proto.name(),
                owner,
            });
        }
    }
    let ipam = Ipam::new(&paths.ipam_dir);
    for s in [Some(net.subnet), net.subnet6].into_iter().flatten() {
        ipam.check(s, &net.bridge)
            .map_err(|source| ContainerNetError::Ipam {
                network: net.name.clone(),
                source,
            })?;
    }
    dns_request(req).validate()?;
    Ok(net)
}

fn dns_request(req: &ContainerRequest) -> DnsRequest {
    DnsRequest {
        hostname: req.hostname.clone(),
        nameservers: req.nameservers.clone(),
        ..DnsRequest::default()
    }
}

fn record_path(dir: &Path) -> PathBuf {
    dir.join(RECORD_FILE)
}

fn save(dir: &Path, rec: &ContainerRecord) -> Result<(), ContainerNetError> {
    let path = record_path(dir);
    let text =
        serde_json::to_vec_pretty(rec).map_err(|e| ContainerNetError::Corrupt(path.clone(), e))?;
    let tmp = dir.join(format!(".{RECORD_FILE}.tmp"));
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| ContainerNetError::Record { op, path, source }
    };
    fs::write(&tmp, text).map_err(io("write", &tmp))?;
    fs::rename(&tmp, &path).map_err(io("rename into place", &path))
}

/// The record in `dir`, if there is one.
pub fn load(dir: &Path) -> Result<Option<ContainerRecord>, ContainerNetError> {
    let path = record_path(dir);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| ContainerNetError::Corrupt(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ContainerNetError::Record {
            op: "read",
            path,
            source,
        }),
    }
}

/// Step 2 (see the module docs): record, lease, write hosts and resolv.conf into `dir`
/// (which must exist). On failure, what it made is removed again.
pub fn plan(
    paths: &Paths,
    req: &ContainerRequest,
    dir: &Path,
) -> Result<Planned, ContainerNetError> {
    let net = check(paths, req)?;
    let mut rec = ContainerRecord {
        container: req.id.clone(),
        attachment: attachment_id(&req.id),
        state_dir: std::path::absolute(&paths.state_dir).unwrap_or(paths.state_dir.clone()),
        ipam_dir: std::path::absolute(&paths.ipam_dir).unwrap_or(paths.ipam_dir.clone()),
        publish: req.publish.clone(),
        ifname: if req.ifname.is_empty() {
            "eth0".into()
        } else {
            req.ifname.clone()
        },
        ip: None,
        gateway: None,
        ip6: None,
        gateway6: None,
        attach_started: false,
        attached: false,
        network: net,
    };
    save(dir, &rec)?;
    match plan_steps(req, dir, &mut rec) {
        Ok((mounts, note)) => Ok(Planned {
            record: rec,
            mounts,
            note,
        }),
        Err(e) => match detach(dir) {
            Ok(()) => Err(e),
            Err(c) => Err(ContainerNetError::Teardown(vec![e, c])),
        },
    }
}

fn plan_steps(
    req: &ContainerRequest,
    dir: &Path,
    rec: &mut ContainerRecord,
) -> Result<(Vec<BindMount>, Option<String>), ContainerNetError> {
    let ipam = Ipam::new(&rec.ipam_dir);
    let net = &rec.network;
    let ipam_err = |source| ContainerNetError::Ipam {
        network: net.name.clone(),
        source,
    };
    let lease = ipam
        .allocate(net.subnet, &net.bridge, &rec.attachment)
        .map_err(ipam_err)?;
    let mut addresses = vec![lease.ip];
    match (lease.ip, lease.gateway) {
        (IpAddr::V4(ip), IpAddr::V4(gw)) => {
            rec.ip = Some(ip);
            rec.gateway = Some(gw);
        }
        (IpAddr::V6(ip), IpAddr::V6(gw)) => {
            rec.ip6 = Some(ip);
            rec.gateway6 = Some(gw);
        }
        _ => {}
    }
    save(dir, rec)?;
    let net = &rec.network;
    if let Some(s6) = net.subnet6 {
        let l6 = ipam
            .allocate(s6, &net.bridge, &rec.attachment)
            .map_err(|source| ContainerNetError::Ipam {
                network: net.name.clone(),
                source,
            })?;
        addresses.push(l6.ip);
        if let (IpAddr::V6(ip), IpAddr::V6(gw)) = (l6.ip, l6.gateway) {
            rec.ip6 = Some(ip);
            rec.gateway6 = Some(gw);
        }
        save(dir, rec)?;
    }
    let host_files: Vec<PathBuf> = resolv::HOST_RESOLV_CONF.iter().map(PathBuf::from).collect();
    let host = resolv::read_host(&host_files)?;
    let cnet = resolv::ContainerNet {
        addresses,
        gateway: Some(lease.gateway),
    };
    let written = resolv::write(dir, &dns_request(req), &host, &cnet)?;
    let dir = std::path::absolute(dir).unwrap_or(dir.to_path_buf());
    let mounts = [
        (written.hosts, "/etc/hosts"),
        (written.resolv_conf, "/etc/resolv.conf"),
    ]
    .into_iter()
    .map(|(source, dest)| BindMount {
        destination: dest.into(),
        kind: "bind".into(),
        source: dir.join(source.file_name().unwrap_or_default()),
        options: vec!["rbind".into(), "ro".into()],
    })
    .collect();
    Ok((mounts, written.note))
}

/// Step 3 (see the module docs): connects the container whose network namespace is
/// `netns` (such as `/proc/PID/ns/net`) as the record in `dir` says. On failure, what was
/// made is removed again; [`detach`] still removes the rest.
pub fn attach(dir: &Path, netns: &Path) -> Result<ContainerRecord, ContainerNetError> {
    let path = record_path(dir);
    let mut rec = load(dir)?.ok_or_else(|| ContainerNetError::Record {
        op: "read",
        path,
        source: io::ErrorKind::NotFound.into(),
    })?;
    rec.attach_started = true;
    save(dir, &rec)?;
    let net = &rec.network;
    bridge::attach(
        &rec.paths(),
        &AttachRequest {
            id: rec.attachment.clone(),
            netns: NetnsRef::Path(netns.to_path_buf()),
            bridge: net.bridge.clone(),
            subnet: net.subnet,
            subnet6: net.subnet6,
            ifname: rec.ifname.clone(),
            mtu: net.mtu,
            publish: rec.publish.clone(),
            masquerade: net.masquerade,
            anti_spoof: net.anti_spoof,
        },
    )?;
    rec.attached = true;
    save(dir, &rec)?;
    Ok(rec)
}

/// Removes everything the record in `dir` names (the attachment, the lease, the files and
/// the record itself). Succeeds when there is no record. A failed step does not stop the
/// others; the record is kept then, so detach can run again.
pub fn detach(dir: &Path) -> Result<(), ContainerNetError> {
    let Some(rec) = load(dir)? else {
        return Ok(());
    };
    let mut errs = Vec::new();
    if rec.attach_started {
        match bridge::detach(&rec.paths(), &rec.attachment) {
            Ok(()) | Err(bridge::DetachError::NotFound(_)) => {}
            Err(e) => errs.push(e.into()),
        }
    }
    // The lease plan() took before the attachment existed (attach releases it too; a
    // second release finds nothing).
    if errs.is_empty() {
        let ipam = Ipam::new(&rec.ipam_dir);
        for s in [Some(rec.network.subnet), rec.network.subnet6]
            .into_iter()
            .flatten()
        {
            if let Err(source) = ipam.release(s, &rec.attachment) {
                errs.push(ContainerNetError::Ipam {
                    network: rec.network.name.clone(),
                    source,
                });
            }
        }
    }
    if errs.is_empty() {
        for f in [resolv::HOSTS_FILE, resolv::RESOLV_FILE, RECORD_FILE] {
            // The temporary file of a write killed half-way, if any.
            let _ = fs::remove_file(dir.join(format!(".{f}.tmp")));
            let p = dir.join(f);
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => errs.push(ContainerNetError::Record {
                    op: "remove",
                    path: p,
                    source,
                }),
            }
        }
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(errs.remove(0)),
        _ => Err(ContainerNetError::Teardown(errs)),
    }
}

/// The addresses a record holds with their prefix length, as `10.88.0.2/16` and
/// `fd00:88::2/64`.
pub fn addresses(rec: &ContainerRecord) -> Vec<IpNet> {
    let net = &rec.network;
    let v6_prefix = net.subnet6.unwrap_or(net.subnet).prefix;
    let mut v = Vec::new();
    if let Some(ip) = rec.ip {
        v.push(IpNet {
            addr: IpAddr::V4(ip),
            prefix: net.subnet.prefix,
        });
    }
    if let Some(ip) = rec.ip6 {
        v.push(IpNet {
            addr: IpAddr::V6(ip),
            prefix: v6_prefix,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_then_detach_releases_both_families_and_files() {
        let base = std::env::temp_dir().join(format!("cella-ctrnet-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let paths = Paths {
            state_dir: base.join("state"),
            ipam_dir: base.join("ipam"),
            network_dir: base.join("networks"),
        };
        network::create(
            &paths,
            &Network {
                name: "n".into(),
                bridge: "brn".into(),
                subnet: "10.99.0.0/24".parse().unwrap(),
                subnet6: Some("fd00:99::/64".parse().unwrap()),
                masquerade: false,
                anti_spoof: false,
                mtu: None,
            },
        )
        .unwrap();
        let dir = base.join("ctr");
        fs::create_dir_all(&dir).unwrap();
        let req = ContainerRequest {
            id: "c1".into(),
            network: "n".into(),
            nameservers: vec!["192.0.2.53".parse().unwrap()],
            hostname: "c1".into(),
            ..ContainerRequest::default()
        };
        let p = plan(&paths, &req, &dir).unwrap();
        assert_eq!(p.record.ip6, Some("fd00:99::2".parse().unwrap()));
        let hosts = fs::read_to_string(dir.join("hosts")).unwrap();
        assert!(
            hosts.contains("10.99.0.2\tc1") && hosts.contains("fd00:99::2\tc1"),
            "{hosts}"
        );
        assert_eq!(p.mounts.len(), 2);
        detach(&dir).unwrap();
        assert!(Ipam::new(&paths.ipam_dir).networks().unwrap().is_empty());
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
        detach(&dir).unwrap();
        let _ = fs::remove_dir_all(base);
    }

    #[test]
    fn attachment_ids_are_valid_and_distinct() {
        assert_eq!(attachment_id("web-1"), "web-1");
        let a = attachment_id("a+b");
        let b = attachment_id("a+c");
        assert_ne!(a, b);
        assert!(a.starts_with("cab-"), "{a}");
        let long = "x".repeat(300);
        assert!(attachment_id(&long).len() <= 128);
    }
}
