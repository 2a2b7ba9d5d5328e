//! Built-in `host-local` IPAM with the reference plugin's on-disk format, so that leases
//! made by either plugin are seen by the other:
//!
//! ```text
//! DATADIR/NETWORK/lock                 flock(2) held during allocate and release
//! DATADIR/NETWORK/10.22.0.2            one file per leased address: "ID\r\nIFNAME"
//! DATADIR/NETWORK/last_reserved_ip.0   last address leased from range set 0
//! ```
//!
//! Allocation walks each range set round-robin from the address after the last one
//! leased, skipping each range's gateway, and takes the first address whose file it can
//! create (`O_EXCL`), as host-local does.

use crate::sys;
use crate::types::RouteConf;
use cella_net::cidr::IpNet;
use serde::Deserialize;
use serde_json::Value;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// host-local's default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// Errors of the host-local IPAM.
#[derive(Debug, thiserror::Error)]
pub enum HostLocalError {
    /// The `ipam` section is not of the expected shape.
    #[error("ipam: {0}")]
    Decode(#[source] serde_json::Error),
    /// A field of the `ipam` section is invalid.
    #[error("{field}: {why}")]
    Invalid {
        /// The field, e.g. `ipam.ranges[0][1].subnet`.
        field: String,
        /// What is wrong with it.
        why: String,
    },
    /// Every address of a range set is leased.
    #[error("no free address in range set {set} ({ranges}) of network `{network}`")]
    Exhausted {
        /// The range set's index.
        set: usize,
        /// Its ranges.
        ranges: String,
        /// The network.
        network: String,
    },
    /// The container already holds a lease in this range set.
    #[error("{ip} is already leased to {id}/{ifname}: duplicate allocation is not allowed")]
    Duplicate {
        /// The leased address.
        ip: IpAddr,
        /// The container.
        id: String,
        /// Its interface.
        ifname: String,
    },
    /// A file of the lease store failed.
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
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> HostLocalError + 'a {
    move |source| HostLocalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One range: addresses `start..=end` of `subnet`, with `gateway` never leased.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The subnet (network address and prefix).
    pub subnet: IpNet,
    /// First address that may be leased.
    pub start: IpAddr,
    /// Last address that may be leased.
    pub end: IpAddr,
    /// The gateway.
    pub gateway: IpAddr,
}

/// A parsed and checked host-local `ipam` section.
#[derive(Clone, Debug)]
pub struct HostLocal {
    /// Range sets; one address is leased from each.
    pub sets: Vec<Vec<Range>>,
    /// Routes for the result.
    pub routes: Vec<RouteConf>,
    /// `DATADIR/NETWORK`.
    pub dir: PathBuf,
}

/// One address leased from a range set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leased {
    /// The address with the range's prefix length.
    pub addr: IpNet,
    /// The range's gateway.
    pub gateway: IpAddr,
    /// The range's subnet.
    pub subnet: IpNet,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: String,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(default)]
    ranges: Option<Vec<Vec<RawRange>>>,
    // The older single-range form.
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<String>,
    #[serde(default)]
    range_end: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    routes: Vec<RouteConf>,
    #[serde(default)]
    data_dir: Option<String>,
}

fn num(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

fn addr(n: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(n))
    } else {
        IpAddr::V4(Ipv4Addr::from(n as u32))
    }
}

fn last_of(subnet: &IpNet) -> u128 {
    let bits = if subnet.addr.is_ipv4() { 32 } else { 128 };
    let host = u32::from(bits - subnet.prefix);
    let size_minus_one = if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    };
    num(subnet.network().addr) + size_minus_one
}

impl Range {
    fn parse(raw: &RawRange, field: &str) -> Result<Range, HostLocalError> {
        let bad = |f: &str, why: String| HostLocalError::Invalid {
            field: format!("{field}.{f}"),
            why,
        };
        let subnet: IpNet = raw
            .subnet
            .parse()
            .map_err(|e: cella_net::cidr::CidrError| bad("subnet", e.to_string()))?;
        if !subnet.is_network() {
            return Err(bad(
                "subnet",
                format!(
                    "{subnet} has host bits set; the network is {}",
                    subnet.network()
                ),
            ));
        }
        let bits = if subnet.addr.is_ipv4() { 32 } else { 128 };
        if subnet.prefix + 2 > bits {
            return Err(bad(
                "subnet",
                format!("{subnet} is too small to allocate from"),
            ));
        }
        let v6 = subnet.addr.is_ipv6();
        let first = num(subnet.addr) + 1;
        // host-local never leases an IPv4 network's broadcast address.
        let last = last_of(&subnet) - u128::from(!v6);
        let ip_in = |f: &str, s: &Option<String>, dflt: u128| -> Result<IpAddr, HostLocalError> {
            let Some(s) = s else {
                return Ok(addr(dflt, v6));
            };
            let a: IpAddr = s
                .parse()
                .map_err(|_| bad(f, format!("{s:?} is not an IP address")))?;
            if !subnet.contains(a) {
                return Err(bad(f, format!("{a} is not in network {subnet}")));
            }
            Ok(a)
        };
        let start = ip_in("rangeStart", &raw.range_start, first)?;
        let end = ip_in("rangeEnd", &raw.range_end, last)?;
        let gateway = ip_in("gateway", &raw.gateway, first)?;
        if num(start) > num(end) {
            return Err(bad(
                "rangeStart",
                format!("{start} is after rangeEnd {end}"),
            ));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    fn overlaps(&self, o: &Range) -> bool {
        self.start.is_ipv4() == o.start.is_ipv4()
            && num(self.start) <= num(o.end)
            && num(o.start) <= num(self.end)
    }

    fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.start.is_ipv4() && num(self.start) <= num(a) && num(a) <= num(self.end)
    }
}

fn describe(set: &[Range]) -> String {
    set.iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses and checks a host-local `ipam` section for network `network`.
pub fn parse(ipam: &Value, network: &str) -> Result<HostLocal, HostLocalError> {
    let raw: RawIpam = serde_json::from_value(ipam.clone()).map_err(HostLocalError::Decode)?;
    let raw_sets = match (raw.ranges, raw.subnet) {
        (Some(r), _) if !r.is_empty() => r,
        (_, Some(subnet)) => vec![vec![RawRange {
            subnet,
            range_start: raw.range_start,
            range_end: raw.range_end,
            gateway: raw.gateway,
        }]],
        _ => {
            return Err(HostLocalError::Invalid {
                field: "ipam.ranges".into(),
                why: "no IP ranges given".into(),
            });
        }
    };
    let mut sets: Vec<Vec<Range>> = Vec::new();
    for (i, rs) in raw_sets.iter().enumerate() {
        if rs.is_empty() {
            return Err(HostLocalError::Invalid {
                field: format!("ipam.ranges[{i}]"),
                why: "empty range set".into(),
            });
        }
        let mut set: Vec<Range> = Vec::new();
        for (j, r) in rs.iter().enumerate() {
            let field = format!("ipam.ranges[{i}][{j}]");
            let r = Range::parse(r, &field)?;
            if let Some(f) = set.first()
                && f.subnet.addr.is_ipv4() != r.subnet.addr.is_ipv4()
            {
                return Err(HostLocalError::Invalid {
                    field,
                    why: "mixes IPv4 and IPv6 in one range set".into(),
                });
            }
            if let Some((k, o)) = set.iter().enumerate().find(|(_, o)| o.overlaps(&r)) {
                return Err(HostLocalError::Invalid {
                    field,
                    why: format!(
                        "range {}-{} overlaps ipam.ranges[{i}][{k}] ({}-{})",
                        r.start, r.end, o.start, o.end
                    ),
                });
            }
            set.push(r);
        }
        for (k, other) in sets.iter().enumerate() {
            if other.iter().any(|o| set.iter().any(|r| r.overlaps(o))) {
                return Err(HostLocalError::Invalid {
                    field: format!("ipam.ranges[{i}]"),
                    why: format!("range set overlaps ipam.ranges[{k}]"),
                });
            }
        }
        sets.push(set);
    }
    for (i, r) in raw.routes.iter().enumerate() {
        if r.dst.parse::<IpNet>().is_err() {
            return Err(HostLocalError::Invalid {
                field: format!("ipam.routes[{i}].dst"),
                why: format!("{:?} is not a CIDR", r.dst),
            });
        }
        if let Some(gw) = &r.gw
            && gw.parse::<IpAddr>().is_err()
        {
            return Err(HostLocalError::Invalid {
                field: format!("ipam.routes[{i}].gw"),
                why: format!("{gw:?} is not an IP address"),
            });
        }
    }
    let data_dir = raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into());
    Ok(HostLocal {
        sets,
        routes: raw.routes,
        dir: Path::new(&data_dir).join(network),
    })
}

/// The content of a lease file.
fn owner(id: &str, ifname: &str) -> String {
    format!("{}\r\n{ifname}", id.trim())
}

/// Holds `DIR/lock` until dropped.
struct DirLock(#[allow(dead_code)] File);

impl HostLocal {
    fn lock(&self) -> Result<DirLock, HostLocalError> {
        fs::create_dir_all(&self.dir).map_err(io_err("create directory", &self.dir))?;
        let path = self.dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open", &path))?;
        sys::flock_exclusive(f.as_fd()).map_err(io_err("lock", &path))?;
        Ok(DirLock(f))
    }

    /// Leases: (address, file content) of every lease file.
    /// Creates lease file `path` holding `content`, or returns false when it exists. The
    /// file is written aside (`.NAME.PID.tmp`) and linked into place, so a lease never
    /// exists without its owner in it, even when the plugin is killed half-way (an empty
    /// lease would belong to no one and never be released); DEL removes a stray
    /// temporary file by its content.
    fn create_lease(&self, path: &Path, content: &str) -> Result<bool, HostLocalError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let written = f.write_all(content.as_bytes());
        drop(f);
        let linked = written.and_then(|()| fs::hard_link(&tmp, path));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err("create", path)(e)),
        }
    }

    fn leases(&self) -> Result<Vec<(IpAddr, String)>, HostLocalError> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read directory", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for e in rd.flatten() {
            let Some(ip) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            out.push((ip, text.trim().to_string()));
        }
        Ok(out)
    }

    fn is_owner(content: &str, id: &str, ifname: &str) -> bool {
        // Files written before host-local recorded the interface hold the id alone.
        content == owner(id, ifname) || content == id.trim()
    }

    /// The addresses leased to `id`/`ifname`.
    pub fn find(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, HostLocalError> {
        Ok(self
            .leases()?
            .into_iter()
            .filter(|(_, c)| Self::is_owner(c, id, ifname))
            .map(|(ip, _)| ip)
            .collect())
    }

    /// Leases one address from each range set to `id`/`ifname`; all or nothing.
    pub fn allocate(&self, id: &str, ifname: &str) -> Result<Vec<Leased>, HostLocalError> {
        self.allocate_requested(id, ifname, &[])
    }

    /// Like [`HostLocal::allocate`], but a range set holding one of `requested` (from
    /// `CNI_ARGS=IP=...`) leases that address or fails, as host-local does.
    pub fn allocate_requested(
        &self,
        id: &str,
        ifname: &str,
        requested: &[IpAddr],
    ) -> Result<Vec<Leased>, HostLocalError> {
        for ip in requested {
            if !self.sets.iter().flatten().any(|r| r.contains(*ip)) {
                return Err(HostLocalError::Invalid {
                    field: "CNI_ARGS IP".into(),
                    why: format!("requested address {ip} is in no range of the network"),
                });
            }
        }
        let _lock = self.lock()?;
        let existing = self.leases()?;
        let mut made: Vec<Leased> = Vec::new();
        let r = (|| {
            for (i, set) in self.sets.iter().enumerate() {
                if let Some((ip, _)) = existing.iter().find(|(ip, c)| {
                    Self::is_owner(c, id, ifname) && set.iter().any(|r| r.contains(*ip))
                }) {
                    return Err(HostLocalError::Duplicate {
                        ip: *ip,
                        id: id.into(),
                        ifname: ifname.into(),
                    });
                }
                match requested
                    .iter()
                    .find(|ip| set.iter().any(|r| r.contains(**ip)))
                {
                    Some(ip) => made.push(self.take(i, set, *ip, id, ifname)?),
                    None => made.push(self.allocate_in(i, set, id, ifname)?),
                }
            }
            Ok(())
        })();
        match r {
            Ok(()) => Ok(made),
            Err(e) => {
                for l in &made {
                    let _ = fs::remove_file(self.dir.join(l.addr.addr.to_string()));
                }
                Err(e)
            }
        }
    }

    /// Leases the requested address `ip` of range set `i`.
    fn take(
        &self,
        i: usize,
        set: &[Range],
        ip: IpAddr,
        id: &str,
        ifname: &str,
    ) -> Result<Leased, HostLocalError> {
        let unavailable = |why: &str| HostLocalError::Invalid {
            field: "CNI_ARGS IP".into(),
            why: format!("requested address {ip} is not available in range set {i}: {why}"),
        };
        let Some(r) = set.iter().find(|r| r.contains(ip)) else {
            return Err(unavailable("not in its ranges"));
        };
        if ip == r.gateway {
            return Err(unavailable("it is the gateway"));
        }
        let path = self.dir.join(ip.to_string());
        if !self.create_lease(&path, &owner(id, ifname))? {
            return Err(unavailable("it is leased"));
        }
        Ok(Leased {
            addr: IpNet {
                addr: ip,
                prefix: r.subnet.prefix,
            },
            gateway: r.gateway,
            subnet: r.subnet,
        })
    }

    fn allocate_in(
        &self,
        i: usize,
        set: &[Range],
        id: &str,
        ifname: &str,
    ) -> Result<Leased, HostLocalError> {
        let last_path = self.dir.join(format!("last_reserved_ip.{i}"));
        let last: Option<IpAddr> = fs::read_to_string(&last_path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        // Start after the last address leased, in the range holding it; else at the start.
        let (first_range, first_num) =
            match last.and_then(|l| set.iter().position(|r| r.contains(l))) {
                Some(k) => (k, num(last.unwrap_or(set[k].start)) + 1),
                None => (0, num(set[0].start)),
            };
        let content = owner(id, ifname);
        // Visit ranges first_range.., wrapping, and the first range's head at the end.
        for step in 0..=set.len() {
            let k = (first_range + step) % set.len();
            let r = &set[k];
            let v6 = r.start.is_ipv6();
            let (from, to) = if step == 0 {
                (first_num, num(r.end))
            } else if step == set.len() {
                (num(r.start), first_num.saturating_sub(1))
            } else {
                (num(r.start), num(r.end))
            };
            let mut n = from;
            while n <= to {
                let ip = addr(n, v6);
                n += 1;
                if ip == r.gateway {
                    continue;
                }
                let path = self.dir.join(ip.to_string());
                if !self.create_lease(&path, &content)? {
                    continue;
                }
                fs::write(&last_path, ip.to_string()).map_err(io_err("write", &last_path))?;
                return Ok(Leased {
                    addr: IpNet {
                        addr: ip,
                        prefix: r.subnet.prefix,
                    },
                    gateway: r.gateway,
                    subnet: r.subnet,
                });
            }
        }
        Err(HostLocalError::Exhausted {
            set: i,
            ranges: describe(set),
            network: self
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        })
    }

    /// The `last_reserved_ip.N` files and their contents (`None`: no file), to undo an
    /// allocation with [`HostLocal::restore_marks`].
    pub fn marks(&self) -> Vec<(PathBuf, Option<String>)> {
        (0..self.sets.len())
            .map(|i| {
                let p = self.dir.join(format!("last_reserved_ip.{i}"));
                let c = fs::read_to_string(&p).ok();
                (p, c)
            })
            .collect()
    }

    /// Puts the `last_reserved_ip.N` files back as [`HostLocal::marks`] found them (best
    /// effort: they only choose where the next search starts).
    pub fn restore_marks(&self, marks: &[(PathBuf, Option<String>)]) {
        for (p, c) in marks {
            let _ = match c {
                Some(c) => fs::write(p, c),
                None => fs::remove_file(p),
            };
        }
    }

    /// Removes every lease of `id`/`ifname`; returns the addresses released. A missing
    /// directory is nothing to release.
    pub fn release(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, HostLocalError> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let _lock = self.lock()?;
        let mut out = Vec::new();
        for ip in self.find(id, ifname)? {
            let path = self.dir.join(ip.to_string());
            match fs::remove_file(&path) {
                Ok(()) => out.push(ip),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path)(e)),
            }
        }
        // What an ADD killed between writing a lease aside and linking it left.
        for e in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.')
                && name.ends_with(".tmp")
                && fs::read_to_string(e.path()).is_ok_and(|c| Self::is_owner(c.trim(), id, ifname))
            {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allocates_round_robin_skipping_the_gateway_and_releases() {
        let dir = std::env::temp_dir().join(format!("cella-cni-hl-{}", std::process::id()));
        let h = parse(
            &json!({"ranges": [[{"subnet": "10.5.0.0/29", "rangeEnd": "10.5.0.4"}]], "dataDir": dir}),
            "n",
        )
        .unwrap();
        let ip = |v: Vec<Leased>| v[0].addr.to_string();
        assert_eq!(ip(h.allocate("a", "eth0").unwrap()), "10.5.0.2/29");
        assert_eq!(ip(h.allocate("b", "eth0").unwrap()), "10.5.0.3/29");
        assert!(matches!(
            h.allocate("a", "eth0"),
            Err(HostLocalError::Duplicate { .. })
        ));
        assert_eq!(h.release("a", "eth0").unwrap().len(), 1);
        // Round robin: after .3 comes .4, then the freed .2 (the gateway .1 is skipped).
        assert_eq!(ip(h.allocate("c", "eth0").unwrap()), "10.5.0.4/29");
        assert_eq!(ip(h.allocate("d", "eth0").unwrap()), "10.5.0.2/29");
        assert!(matches!(
            h.allocate("e", "eth0"),
            Err(HostLocalError::Exhausted { .. })
        ));
        let text = fs::read_to_string(dir.join("n/10.5.0.3")).unwrap();
        assert_eq!(text, "b\r\neth0");
        assert_eq!(
            h.find("b", "eth0").unwrap(),
            vec!["10.5.0.3".parse::<IpAddr>().unwrap()]
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn defaults_and_checks() {
        let h = parse(
            &json!({"type": "host-local", "ranges": [[{"subnet": "10.22.0.0/16"}]], "dataDir": "/x"}),
            "net",
        )
        .unwrap();
        let r = &h.sets[0][0];
        assert_eq!(r.start.to_string(), "10.22.0.1");
        assert_eq!(r.end.to_string(), "10.22.255.254");
        assert_eq!(r.gateway.to_string(), "10.22.0.1");
        assert_eq!(h.dir, Path::new("/x/net"));
        let bad = |v: Value| parse(&v, "n").unwrap_err().to_string();
        assert!(
            bad(json!({"ranges": [[{"subnet": "10.1.0.0/33"}]]}))
                .contains("ipam.ranges[0][0].subnet")
        );
        assert!(bad(json!({"ranges": [[{"subnet": "10.1.0.5/16"}]]})).contains("host bits"));
        assert!(
            bad(json!({"ranges": [[{"subnet": "10.1.0.0/16"}, {"subnet": "10.1.4.0/24"}]]}))
                .contains("overlaps")
        );
        assert!(
            bad(json!({"ranges": [[{"subnet": "10.1.0.0/16"}], [{"subnet": "10.1.4.0/24"}]]}))
                .contains("overlaps ipam.ranges[0]")
        );
    }
}
