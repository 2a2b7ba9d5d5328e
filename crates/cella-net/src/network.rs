//! Named bridge networks: a bridge, its subnet and its policy (masquerade,
//! anti-spoofing, MTU) under one name, so that a runtime or a sandbox can ask for "network
//! `web`" instead of repeating the bridge's details for every container.
//!
//! A network is only a definition: `NETWORK_DIR/NAME.json`, written atomically. Nothing
//! is made in the kernel until a container is attached to it (see [`crate::container`],
//! which goes through [`crate::bridge::attach`]); the bridge then lives while containers
//! use it.

use crate::bridge::Paths;
use crate::cidr::IpNet;
use crate::ipam::{Ipam, IpamError};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where network definitions live unless told otherwise.
pub const DEFAULT_NETWORK_DIR: &str = "/var/lib/cella/networks";

/// A named bridge network.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Network {
    /// The network's name.
    pub name: String,
    /// The bridge in the host namespace (made on first use).
    pub bridge: String,
    /// The subnet: IPv4, or IPv6 for an IPv6-only network; its first address is the
    /// gateway.
    pub subnet: IpNet,
    /// An IPv6 subnet next to an IPv4 `subnet` (dual stack); its first address is the
    /// IPv6 gateway.
    #[serde(default)]
    pub subnet6: Option<IpNet>,
    /// Masquerade the containers' traffic leaving the subnet.
    #[serde(default)]
    pub masquerade: bool,
    /// Drop frames whose source MAC or address is not the container's own.
    #[serde(default)]
    pub anti_spoof: bool,
    /// MTU of the veths (and of the bridge when cella makes it).
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// A failed operation on network definitions.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A name that cannot be a network's.
    #[error("network name {0:?}: use 1-64 letters, digits, `-`, `_`, `.`, not starting with `.`")]
    BadName(String),
    /// A bridge name the kernel cannot take.
    #[error(
        "network {network:?}: bridge name {bridge:?}: interface names have 1-15 characters, no `/`, `:` or white space"
    )]
    BadBridge {
        /// The network.
        network: String,
        /// The bridge name.
        bridge: String,
    },
    /// The name is taken.
    #[error("network {0:?} exists already")]
    Exists(String),
    /// No such network.
    #[error("no network {name:?} (defined: {})", if known.is_empty() { "none; create one with `cella net network create`".to_string() } else { known.join(", ") })]
    NotFound {
        /// The name asked for.
        name: String,
        /// The networks that exist.
        known: Vec<String>,
    },
    /// Another network uses the bridge or an overlapping subnet.
    #[error("network {new:?}: {what} is used by network {existing:?}")]
    Conflict {
        /// The network being created.
        new: String,
        /// What clashes.
        what: String,
        /// The other network.
        existing: String,
    },
    /// The network is in use.
    #[error("network {network:?} is in use by attachment {attachment:?}")]
    InUse {
        /// The network.
        network: String,
        /// One attachment on its bridge.
        attachment: String,
    },
    /// The subnet cannot be managed.
    #[error("network {network:?}")]
    Subnet {
        /// The network.
        network: String,
        /// Why.
        #[source]
        source: IpamError,
    },
    /// A definition file failed.
    #[error("network definition `{}`: {op}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A definition file that cannot be read.
    #[error("network definition `{}`", .0.display())]
    Corrupt(PathBuf, #[source] serde_json::Error),
    /// The attachment store cannot be read.
    #[error("network {network:?}: read the attachments")]
    Store {
        /// The network.
        network: String,
        /// Why.
        #[source]
        source: Box<crate::bridge::StepError>,
    },
}

fn check_name(name: &str) -> Result<(), NetworkError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(NetworkError::BadName(name.into()))
    }
}

fn path_of(paths: &Paths, name: &str) -> PathBuf {
    paths.network_dir.join(format!("{name}.json"))
}

/// The network called `name`, or [`NetworkError::NotFound`] listing the ones there are.
pub fn get(paths: &Paths, name: &str) -> Result<Network, NetworkError> {
    let not_found = || -> Result<Network, NetworkError> {
        Err(NetworkError::NotFound {
            name: name.into(),
            known: list(paths)?.into_iter().map(|n| n.name).collect(),
        })
    };
    if check_name(name).is_err() {
        return not_found();
    }
    let path = path_of(paths, name);
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| NetworkError::Corrupt(path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => not_found(),
        Err(source) => Err(NetworkError::Io {
            op: "read",
            path,
            source,
        }),
    }
}

/// Every defined network, by name.
pub fn list(paths: &Paths) -> Result<Vec<Network>, NetworkError> {
    let dir = &paths.network_dir;
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NetworkError::Io {
                op: "read directory",
                path: dir.clone(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let b = fs::read(&p).map_err(|source| NetworkError::Io {
            op: "read",
            path: p.clone(),
            source,
        })?;
        out.push(serde_json::from_slice(&b).map_err(|e| NetworkError::Corrupt(p, e))?);
    }
    out.sort_by(|a: &Network, b: &Network| a.name.cmp(&b.name));
    Ok(out)
}

/// Defines a network after checking it: a free name, a usable bridge name, a subnet IPAM
/// can manage on that bridge, and no other network on the same bridge or an overlapping
/// subnet.
pub fn create(paths: &Paths, net: &Network) -> Result<(), NetworkError> {
    check_name(&net.name)?;
    let b = &net.bridge;
    if b.is_empty() || b.len() > 15 || b.contains(['/', ':']) || b.chars().any(char::is_whitespace)
    {
        return Err(NetworkError::BadBridge {
            network: net.name.clone(),
            bridge: b.clone(),
        });
    }
    let subnet_err = |source| NetworkError::Subnet {
        network: net.name.clone(),
        source,
    };
    let ipam = Ipam::new(&paths.ipam_dir);
    if net.subnet.addr.is_ipv6() && net.subnet6.is_some() {
        return Err(subnet_err(IpamError::BadSubnet(
            net.subnet,
            "a dual-stack network's first subnet is the IPv4 one",
        )));
    }
    ipam.check(net.subnet, &net.bridge).map_err(subnet_err)?;
    if let Some(s6) = net.subnet6 {
        if !s6.addr.is_ipv6() {
            return Err(subnet_err(IpamError::BadSubnet(
                s6,
                "the second subnet must be IPv6",
            )));
        }
        ipam.check(s6, &net.bridge).map_err(subnet_err)?;
    }
    for other in list(paths)? {
        let conflict = |what: String| NetworkError::Conflict {
            new: net.name.clone(),
            what,
            existing: other.name.clone(),
        };
        if other.name == net.name {
            return Err(NetworkError::Exists(net.name.clone()));
        }
        if other.bridge == net.bridge {
            return Err(conflict(format!("bridge `{}`", net.bridge)));
        }
        let mine = [Some(net.subnet), net.subnet6];
        let theirs = [Some(other.subnet), other.subnet6];
        for a in mine.iter().flatten() {
            if let Some(b) = theirs.iter().flatten().find(|b| b.overlaps(a)) {
                return Err(conflict(format!("subnet {a} (overlaps {b})")));
            }
        }
    }
    fs::create_dir_all(&paths.network_dir).map_err(|source| NetworkError::Io {
        op: "create directory",
        path: paths.network_dir.clone(),
        source,
    })?;
    let path = path_of(paths, &net.name);
    let text =
        serde_json::to_vec_pretty(net).map_err(|e| NetworkError::Corrupt(path.clone(), e))?;
    write_new(&path, &text)
}

/// Writes a new file atomically, failing when it exists (two concurrent creates of one
/// name: one wins).
fn write_new(path: &Path, data: &[u8]) -> Result<(), NetworkError> {
    let io = |op| {
        move |source| NetworkError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, data).map_err(io("write"))?;
    let r = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(NetworkError::Exists(
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        )),
        Err(e) => Err(io("link into place")(e)),
    }
}

/// Removes a network's definition; refused while an attachment uses its bridge.
pub fn remove(paths: &Paths, name: &str) -> Result<(), NetworkError> {
    let net = get(paths, name)?;
    let used = crate::bridge::list(paths).map_err(|e| NetworkError::Store {
        network: name.into(),
        source: Box::new(e),
    })?;
    if let Some(a) = used.iter().find(|a| a.bridge == net.bridge) {
        return Err(NetworkError::InUse {
            network: name.into(),
            attachment: a.id.clone(),
        });
    }
    let path = path_of(paths, name);
    fs::remove_file(&path).map_err(|source| NetworkError::Io {
        op: "remove",
        path,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(name: &str) -> (PathBuf, Paths) {
        let base = std::env::temp_dir().join(format!("cella-netdef-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let p = Paths {
            state_dir: base.join("state"),
            ipam_dir: base.join("ipam"),
            network_dir: base.join("networks"),
        };
        (base, p)
    }

    fn net(name: &str, bridge: &str, subnet: &str) -> Network {
        Network {
            name: name.into(),
            bridge: bridge.into(),
            subnet: subnet.parse().unwrap(),
            subnet6: None,
            masquerade: true,
            anti_spoof: false,
            mtu: None,
        }
    }

    #[test]
    fn create_get_list_remove() {
        let (base, p) = paths("crud");
        create(&p, &net("web", "brweb", "10.90.0.0/24")).unwrap();
        assert_eq!(get(&p, "web").unwrap().bridge, "brweb");
        assert!(matches!(
            create(&p, &net("web", "brx", "10.91.0.0/24")),
            Err(NetworkError::Exists(_))
        ));
        assert!(matches!(
            create(&p, &net("db", "brweb", "10.91.0.0/24")),
            Err(NetworkError::Conflict { .. })
        ));
        assert!(matches!(
            create(&p, &net("db", "brdb", "10.90.0.128/25")),
            Err(NetworkError::Conflict { .. })
        ));
        assert!(matches!(
            create(&p, &net("db", "brdb", "10.90.1.1/24")),
            Err(NetworkError::Subnet { .. })
        ));
        assert!(matches!(
            create(&p, &net("../x", "brdb", "10.92.0.0/24")),
            Err(NetworkError::BadName(_))
        ));
        create(&p, &net("db", "brdb", "10.91.0.0/24")).unwrap();
        let names: Vec<_> = list(&p).unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["db", "web"]);
        match get(&p, "nope") {
            Err(e @ NetworkError::NotFound { .. }) => {
                assert!(e.to_string().contains("db, web"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        remove(&p, "web").unwrap();
        assert!(get(&p, "web").is_err());
        let _ = fs::remove_dir_all(base);
    }
}
