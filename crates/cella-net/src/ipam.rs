//! IP address management: IPv4 and IPv6 subnets and their leases, kept on disk so they survive the
//! process, and safe under concurrent allocation.
//!
//! Layout under the IPAM directory (default [`DEFAULT_IPAM_DIR`]):
//!
//! ```text
//! .lock                  flock(2) taken for every operation
//! 10.88.0.0-16/          one directory per subnet
//!   network.json         {"subnet": "10.88.0.0/16", "gateway": "10.88.0.1", "bridge": "br0"}
//!   10.88.0.2            a lease: the file holds the owner's id
//! ```
//!
//! The gateway is the subnet's first address; leases start at the second. A lease's MAC is
//! derived from its address ([`mac_for`]), so no two leases share a MAC either.

use crate::cidr::IpNet;
use crate::sys;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// Where leases live unless told otherwise.
pub const DEFAULT_IPAM_DIR: &str = "/var/lib/cella/ipam";

/// IPAM errors.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// A file operation failed.
    #[error("ipam: {op} `{}`", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The subnet cannot hold containers.
    #[error("subnet {0}: {1}")]
    BadSubnet(IpNet, &'static str),
    /// The subnet overlaps one already managed.
    #[error("subnet {new} overlaps subnet {existing} already used by bridge `{bridge}`")]
    Overlap {
        /// The subnet asked for.
        new: IpNet,
        /// The one it overlaps.
        existing: IpNet,
        /// The bridge of that one.
        bridge: String,
    },
    /// The subnet is bound to another bridge.
    #[error("subnet {subnet} belongs to bridge `{bridge}`, not `{asked}`")]
    OtherBridge {
        /// The subnet.
        subnet: IpNet,
        /// Its bridge.
        bridge: String,
        /// The bridge asked for.
        asked: String,
    },
    /// Every address is leased.
    #[error("subnet {0}: no free address left")]
    Exhausted(IpNet),
    /// A network.json that cannot be read.
    #[error("ipam: `{}`: unreadable network record", .0.display())]
    Corrupt(PathBuf, #[source] serde_json::Error),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> IpamError + 'a {
    move |source| IpamError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A subnet IPAM manages.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IpamNetwork {
    /// The subnet (network address).
    pub subnet: IpNet,
    /// The gateway: the subnet's first address.
    pub gateway: IpAddr,
    /// The bridge the subnet lives on.
    pub bridge: String,
}

/// An address handed to one owner.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The address.
    pub ip: IpAddr,
    /// The subnet it belongs to.
    pub subnet: IpNet,
    /// The subnet's gateway.
    pub gateway: IpAddr,
    /// The MAC that goes with the address.
    pub mac: String,
    /// Who holds it.
    pub owner: String,
}

/// The locally administered unicast MAC for `ip`: `02:ce:` then the four address bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0xce, o[0], o[1], o[2], o[3]]
}

/// The MAC for an address of either family: [`mac_for`] for IPv4; for IPv6, `02:cf:` then
/// the last four address bytes (unique within a subnet of /96 or longer, and within the
/// first 2^32 leases of any subnet, since leases are taken from the bottom).
pub fn mac_for_ip(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(a) => mac_for(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            [0x02, 0xcf, o[12], o[13], o[14], o[15]]
        }
    }
}

/// The IPAM store in one directory.
#[derive(Clone, Debug)]
pub struct Ipam {
    dir: PathBuf,
}

/// Holds the store's lock until dropped.
struct Locked(#[allow(dead_code)] File);

impl Ipam {
    /// The store in `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Ipam {
        Ipam { dir: dir.into() }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Locked, IpamError> {
        fs::create_dir_all(&self.dir).map_err(io_err("create directory", &self.dir))?;
        let path = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        sys::flock_exclusive(f.as_fd()).map_err(io_err("lock", &path))?;
        Ok(Locked(f))
    }

    fn subnet_dir(&self, subnet: IpNet) -> PathBuf {
        let n = subnet.network();
        self.dir.join(format!("{}-{}", n.addr, n.prefix))
    }

    fn read_networks(&self) -> Result<Vec<IpamNetwork>, IpamError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(IpamError::Io {
                    op: "read directory",
                    path: self.dir.clone(),
                    source: e,
                });
            }
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let path = e.path().join("network.json");
            let text = match fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(IpamError::Io {
                        op: "read",
                        path,
                        source: e,
                    });
                }
            };
            out.push(serde_json::from_str(&text).map_err(|e| IpamError::Corrupt(path, e))?);
        }
        out.sort_by_key(|n: &IpamNetwork| n.subnet.to_string());
        Ok(out)
    }

    /// The subnets in the store.
    pub fn networks(&self) -> Result<Vec<IpamNetwork>, IpamError> {
        let _l = self.lock()?;
        self.read_networks()
    }

    fn check_locked(&self, subnet: IpNet, bridge: &str) -> Result<Option<IpamNetwork>, IpamError> {
        if !subnet.is_network() {
            return Err(IpamError::BadSubnet(
                subnet,
                "host bits are set; give the network address",
            ));
        }
        if subnet.addr.is_ipv4() && subnet.prefix > 30 {
            return Err(IpamError::BadSubnet(
                subnet,
                "prefix longer than /30 leaves no room",
            ));
        }
        if subnet.addr.is_ipv6() && subnet.prefix > 126 {
            return Err(IpamError::BadSubnet(
                subnet,
                "prefix longer than /126 leaves no room",
            ));
        }
        for n in self.read_networks()? {
            if n.subnet == subnet {
                if n.bridge != bridge {
                    return Err(IpamError::OtherBridge {
                        subnet,
                        bridge: n.bridge,
                        asked: bridge.into(),
                    });
                }
                return Ok(Some(n));
            }
            if n.subnet.overlaps(&subnet) {
                return Err(IpamError::Overlap {
                    new: subnet,
                    existing: n.subnet,
                    bridge: n.bridge,
                });
            }
            // One subnet per bridge and family: a bridge may be dual-stack.
            if n.bridge == bridge && n.subnet.addr.is_ipv4() == subnet.addr.is_ipv4() {
                return Err(IpamError::OtherBridge {
                    subnet: n.subnet,
                    bridge: n.bridge,
                    asked: format!("{bridge}` with subnet {subnet}, it has `{}", n.subnet),
                });
            }
        }
        Ok(None)
    }

    /// Checks that `subnet` may be used on `bridge`: a network address, not longer than
    /// /30 (IPv4) or /126 (IPv6), overlapping no other managed subnet, not bound to another bridge.
    pub fn check(&self, subnet: IpNet, bridge: &str) -> Result<(), IpamError> {
        let _l = self.lock()?;
        self.check_locked(subnet, bridge).map(|_| ())
    }

    /// Leases an address of `subnet` (registering the subnet for `bridge` if new) to
    /// `owner`. An owner that already holds a lease there gets the same one back.
    pub fn allocate(&self, subnet: IpNet, bridge: &str, owner: &str) -> Result<Lease, IpamError> {
        let _l = self.lock()?;
        let dir = self.subnet_dir(subnet);
        let net = match self.check_locked(subnet, bridge)? {
            Some(n) => n,
            None => {
                let gateway = subnet
                    .nth(1)
                    .ok_or(IpamError::BadSubnet(subnet, "too small"))?;
                let n = IpamNetwork {
                    subnet,
                    gateway,
                    bridge: bridge.into(),
                };
                fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
                let text =
                    serde_json::to_string(&n).map_err(|e| IpamError::Corrupt(dir.clone(), e))?;
                write_atomic(&dir.join("network.json"), text.as_bytes(), true)?;
                n
            }
        };
        let held = self.leases_locked(subnet)?;
        let lease = |ip: IpAddr| Lease {
            ip,
            subnet,
            gateway: net.gateway,
            mac: crate::netlink::format_mac(&mac_for_ip(ip)),
            owner: owner.into(),
        };
        if let Some((ip, _)) = held.iter().find(|(_, o)| o == owner) {
            return Ok(lease(*ip));
        }
        // Skip the network address, the gateway and (IPv4) the broadcast address. The
        // lowest free address is at most `held.len()` steps away, however large an IPv6
        // subnet is.
        let last = if subnet.addr.is_ipv4() {
            subnet.size() - 1
        } else {
            subnet.size()
        };
        for n in 2..last {
            let ip = subnet.nth(n).ok_or(IpamError::Exhausted(subnet))?;
            if held.iter().any(|(h, _)| *h == ip) {
                continue;
            }
            // Written aside, then linked into place: a lease file exists only with its
            // owner in it, even if the process is killed half-way (an empty lease would
            // belong to no one and never be released).
            let path = dir.join(ip.to_string());
            let tmp = dir.join(format!(".{ip}.tmp"));
            let mut f = File::create(&tmp).map_err(io_err("create lease", &tmp))?;
            f.write_all(owner.as_bytes())
                .map_err(io_err("write lease", &tmp))?;
            f.sync_all().map_err(io_err("sync lease", &tmp))?;
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            linked.map_err(io_err("create lease", &path))?;
            return Ok(lease(ip));
        }
        Err(IpamError::Exhausted(subnet))
    }

    fn leases_locked(&self, subnet: IpNet) -> Result<Vec<(IpAddr, String)>, IpamError> {
        let dir = self.subnet_dir(subnet);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(IpamError::Io {
                    op: "read directory",
                    path: dir,
                    source: e,
                });
            }
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Some(ip) = e
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let owner = fs::read_to_string(e.path()).map_err(io_err("read lease", &e.path()))?;
            out.push((ip, owner.trim().to_string()));
        }
        out.sort();
        Ok(out)
    }

    /// The leases of `subnet`: address and owner.
    pub fn leases(&self, subnet: IpNet) -> Result<Vec<(IpAddr, String)>, IpamError> {
        let _l = self.lock()?;
        self.leases_locked(subnet)
    }

    /// Releases every lease `owner` holds in `subnet`; when the subnet is left without
    /// leases, forgets it too. Returns the released addresses.
    pub fn release(&self, subnet: IpNet, owner: &str) -> Result<Vec<IpAddr>, IpamError> {
        let _l = self.lock()?;
        let dir = self.subnet_dir(subnet);
        let mut released = Vec::new();
        let held = self.leases_locked(subnet)?;
        for (ip, o) in &held {
            if o == owner {
                let path = dir.join(ip.to_string());
                fs::remove_file(&path).map_err(io_err("remove lease", &path))?;
                released.push(*ip);
            }
        }
        if held.len() == released.len() && dir.exists() {
            // The record, and what a writer killed half-way left (`*.tmp`).
            let rd = fs::read_dir(&dir).map_err(io_err("read directory", &dir))?;
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name == "network.json" || name.ends_with(".tmp") {
                    match fs::remove_file(e.path()) {
                        Ok(()) => {}
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                        Err(err) => {
                            return Err(IpamError::Io {
                                op: "remove",
                                path: e.path(),
                                source: err,
                            });
                        }
                    }
                }
            }
            fs::remove_dir(&dir).map_err(io_err("remove directory", &dir))?;
        }
        Ok(released)
    }

    /// True when `ip` is leased in any managed subnet.
    pub fn is_leased(&self, ip: IpAddr) -> Result<bool, IpamError> {
        let _l = self.lock()?;
        for n in self.read_networks()? {
            if n.subnet.contains(ip) {
                return Ok(self.leases_locked(n.subnet)?.iter().any(|(l, _)| *l == ip));
            }
        }
        Ok(false)
    }
}

/// Writes `path` by writing a temporary file and renaming it, so readers see the old or
/// the new content, never a part. `durable` adds an fsync, for records that must outlive
/// a power loss (leases); records of kernel state, which a reboot clears anyway, skip it.
pub(crate) fn write_atomic(path: &Path, data: &[u8], durable: bool) -> Result<(), IpamError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(data).map_err(io_err("write", &tmp))?;
    if durable {
        f.sync_all().map_err(io_err("sync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_err("rename into place", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cella-ipam-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn allocates_distinct_addresses_and_releases() {
        let d = tmp("basic");
        let ipam = Ipam::new(&d);
        let s: IpNet = "10.77.0.0/29".parse().unwrap();
        let a = ipam.allocate(s, "br0", "a").unwrap();
        let b = ipam.allocate(s, "br0", "b").unwrap();
        assert_eq!(a.ip.to_string(), "10.77.0.2");
        assert_eq!(b.ip.to_string(), "10.77.0.3");
        assert_eq!(a.gateway.to_string(), "10.77.0.1");
        assert_eq!(a.mac, "02:ce:0a:4d:00:02");
        assert_eq!(
            ipam.allocate(s, "br0", "a").unwrap(),
            a,
            "same owner, same lease"
        );
        for o in ["c", "d", "e"] {
            ipam.allocate(s, "br0", o).unwrap();
        }
        assert!(matches!(
            ipam.allocate(s, "br0", "g"),
            Err(IpamError::Exhausted(_))
        ));
        let other: IpNet = "10.77.0.0/24".parse().unwrap();
        assert!(matches!(
            ipam.allocate(other, "br1", "x"),
            Err(IpamError::Overlap { .. })
        ));
        assert!(matches!(
            ipam.allocate(s, "br1", "x"),
            Err(IpamError::OtherBridge { .. })
        ));
        for o in ["a", "b", "c", "d", "e"] {
            ipam.release(s, o).unwrap();
        }
        assert!(ipam.networks().unwrap().is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn rejects_bad_subnets() {
        let ipam = Ipam::new(tmp("bad"));
        for s in ["10.0.0.1/24", "10.0.0.0/31", "fd00::1/64", "fd00::/127"] {
            assert!(
                matches!(
                    ipam.check(s.parse().unwrap(), "br0"),
                    Err(IpamError::BadSubnet(..))
                ),
                "{s}"
            );
        }
    }

    #[test]
    fn allocates_ipv6() {
        let d = tmp("v6");
        let ipam = Ipam::new(&d);
        let s: IpNet = "fd00:77::/64".parse().unwrap();
        let a = ipam.allocate(s, "br0", "a").unwrap();
        let b = ipam.allocate(s, "br0", "b").unwrap();
        assert_eq!(a.ip.to_string(), "fd00:77::2");
        assert_eq!(b.ip.to_string(), "fd00:77::3");
        assert_eq!(a.gateway.to_string(), "fd00:77::1");
        assert_eq!(a.mac, "02:cf:00:00:00:02");
        // A v4 subnet on the same bridge is a different network: refused like any other
        // second subnet on one bridge.
        ipam.release(s, "a").unwrap();
        ipam.release(s, "b").unwrap();
        assert!(ipam.networks().unwrap().is_empty());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let d = tmp("race");
        let s: IpNet = "10.78.0.0/24".parse().unwrap();
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let d = d.clone();
                std::thread::spawn(move || {
                    Ipam::new(d)
                        .allocate(s, "br0", &format!("o{i}"))
                        .unwrap()
                        .ip
                })
            })
            .collect();
        let mut ips: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 16);
        let _ = fs::remove_dir_all(&d);
    }
}
