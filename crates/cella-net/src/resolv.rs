//! Per-container `/etc/hosts` and `/etc/resolv.conf`: what goes in them, writing them
//! atomically into a state directory, and the OCI bind mounts that put them at the
//! container's `/etc/hosts` and `/etc/resolv.conf`.
//!
//! Nameservers default to the host's. A host whose resolv.conf lists only loopback
//! nameservers (a local stub resolver such as systemd-resolved's 127.0.0.53) cannot lend
//! them to a container, whose loopback is its own: as Podman does, cella then reads the
//! next candidate file (systemd-resolved's upstream list), and failing that uses the
//! container's gateway, or the nameservers given explicitly.

use crate::netlink::{Netlink, NetlinkError};
use crate::netns::Netns;
use std::fs::{self, File};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// The host files whose nameservers a container inherits, in order: the second is read
/// only when the first lists loopback nameservers alone.
pub const HOST_RESOLV_CONF: [&str; 2] = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"];

/// glibc reads at most three nameservers; more are ignored, so cella writes three.
pub const MAX_NAMESERVERS: usize = 3;

/// Errors of writing hosts and resolv.conf.
#[derive(Debug, thiserror::Error)]
pub enum ResolvError {
    /// A file could not be read or written.
    #[error("{op} `{}`", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A field of the request is not acceptable.
    #[error("{field}: {why}")]
    Invalid {
        /// Which field (`hostname`, `add-host[1]`...).
        field: String,
        /// What is wrong.
        why: String,
    },
    /// No nameserver could be chosen.
    #[error(
        "no usable nameserver: the host's resolv.conf lists {host} and the container has no \
         gateway; give one with --nameserver"
    )]
    NoNameserver {
        /// What the host's files listed.
        host: String,
    },
    /// Reading the container's addresses or routes failed.
    #[error("read the container's addresses and routes")]
    Netlink(#[from] NetlinkError),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ResolvError + 'a {
    move |source| ResolvError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The content of a resolv.conf.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<IpAddr>,
    /// The `search` list (a `domain` line counts as a one-entry search list, as in glibc).
    pub search: Vec<String>,
    /// `options` words (`ndots:2`, `edns0`...).
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads resolv.conf text. Unknown lines and unparsable nameservers are skipped, as
    /// the resolver skips them; an IPv6 zone (`fe80::1%eth0`) is dropped.
    pub fn parse(text: &str) -> ResolvConf {
        let mut rc = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words
                        .next()
                        .and_then(|w| w.split('%').next())
                        .and_then(|w| w.parse().ok())
                    {
                        rc.nameservers.push(ip);
                    }
                }
                // The last of `domain` and `search` wins, as in glibc.
                Some("domain") => rc.search = words.take(1).map(String::from).collect(),
                Some("search") => rc.search = words.map(String::from).collect(),
                Some("options") => rc.options.extend(words.map(String::from)),
                _ => {}
            }
        }
        rc
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        if !self.search.is_empty() {
            s += &format!("search {}\n", self.search.join(" "));
        }
        for n in self.nameservers.iter().take(MAX_NAMESERVERS) {
            s += &format!("nameserver {n}\n");
        }
        if !self.options.is_empty() {
            s += &format!("options {}\n", self.options.join(" "));
        }
        s
    }
}

/// True for addresses that mean "this machine": 127.0.0.0/8 and ::1. In a container they
/// mean the container, where the host's stub resolver does not listen.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

/// What to write for one container.
#[derive(Clone, Debug, Default)]
pub struct DnsRequest {
    /// The container's host name.
    pub hostname: String,
    /// Its domain; the hosts file then names it `hostname.domain` too.
    pub domain: Option<String>,
    /// Nameservers to use; empty means "the host's" (see the module docs).
    pub nameservers: Vec<IpAddr>,
    /// Search domains; empty means the host's.
    pub search: Vec<String>,
    /// Resolver options; empty means the host's.
    pub options: Vec<String>,
    /// Extra `/etc/hosts` entries (name, address).
    pub extra_hosts: Vec<(String, IpAddr)>,
}

/// What the container's network namespace tells about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerNet {
    /// Its addresses, loopback and IPv6 link-local ones left out.
    pub addresses: Vec<IpAddr>,
    /// The next hop of its default route, if any.
    pub gateway: Option<IpAddr>,
}

impl ContainerNet {
    /// Reads the addresses and default gateway of namespace `ns`.
    pub fn read(ns: &Netns) -> Result<ContainerNet, ResolvError> {
        let mut nl = Netlink::open_in(ns)?;
        let addresses = nl
            .addrs()?
            .into_iter()
            .map(|a| a.net.addr)
            .filter(|ip| !ip.is_loopback() && !is_link_local(*ip))
            .collect();
        let gateway = nl
            .routes(false)?
            .into_iter()
            .chain(nl.routes(true)?)
            .find(|r| r.dst.is_none() && r.table == crate::netlink::TABLE_MAIN)
            .and_then(|r| r.gateway);
        Ok(ContainerNet { addresses, gateway })
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// A host name or domain: labels of letters, digits and `-`, dot-separated, 1-253 bytes.
fn check_name(field: &str, s: &str) -> Result<(), ResolvError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(ResolvError::Invalid {
            field: field.into(),
            why: format!("{s:?} is not a host name (dot-separated labels of letters, digits, `-`)"),
        })
    }
}

impl DnsRequest {
    /// Checks the names and options; nothing is written when this fails.
    pub fn validate(&self) -> Result<(), ResolvError> {
        check_name("hostname", &self.hostname)?;
        if let Some(d) = &self.domain {
            check_name("domain", d)?;
        }
        for (i, s) in self.search.iter().enumerate() {
            check_name(&format!("search[{i}]"), s)?;
        }
        for (i, (n, _)) in self.extra_hosts.iter().enumerate() {
            check_name(&format!("add-host[{i}]"), n)?;
        }
        for (i, o) in self.options.iter().enumerate() {
            if o.is_empty() || o.contains(char::is_whitespace) {
                return Err(ResolvError::Invalid {
                    field: format!("option[{i}]"),
                    why: format!("{o:?} is not one resolver option word"),
                });
            }
        }
        Ok(())
    }

    /// The container's `/etc/hosts`: loopback names, its own name on each of its
    /// addresses (127.0.1.1 when it has none, as Debian does), then the extra hosts.
    pub fn hosts(&self, net: &ContainerNet) -> String {
        let mut s = String::from(
            "127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
        let names = match &self.domain {
            Some(d) => format!("{}.{d} {}", self.hostname, self.hostname),
            None => self.hostname.clone(),
        };
        if net.addresses.is_empty() {
            s += &format!("{}\t{names}\n", Ipv4Addr::new(127, 0, 1, 1));
        }
        for a in &net.addresses {
            s += &format!("{a}\t{names}\n");
        }
        for (n, ip) in &self.extra_hosts {
            s += &format!("{ip}\t{n}\n");
        }
        s
    }

    /// The container's resolv.conf, from the request, the host's files (`host`, in the
    /// order of [`HOST_RESOLV_CONF`]) and the container's gateway. Also returns a note
    /// when the host's nameservers were replaced.
    pub fn resolv_conf(
        &self,
        host: &[ResolvConf],
        net: &ContainerNet,
    ) -> Result<(ResolvConf, Option<String>), ResolvError> {
        let first = host.first().cloned().unwrap_or_default();
        let mut note = None;
        let nameservers = if !self.nameservers.is_empty() {
            self.nameservers.clone()
        } else {
            let usable = host
                .iter()
                .map(|h| {
                    h.nameservers
                        .iter()
                        .copied()
                        .filter(|n| !is_loopback(*n))
                        .collect::<Vec<_>>()
                })
                .find(|v| !v.is_empty());
            match (usable, net.gateway) {
                (Some(v), _) => v,
                (None, Some(gw)) => {
                    note = Some(format!(
                        "the host's resolv.conf lists no nameserver a container can reach ({}); \
                         using the container's gateway {gw}",
                        describe(&first.nameservers)
                    ));
                    vec![gw]
                }
                (None, None) => {
                    return Err(ResolvError::NoNameserver {
                        host: describe(&first.nameservers),
                    });
                }
            }
        };
        let search = if self.search.is_empty() {
            first.search.clone()
        } else {
            self.search.clone()
        };
        let options = if self.options.is_empty() {
            first.options.clone()
        } else {
            self.options.clone()
        };
        Ok((
            ResolvConf {
                nameservers,
                search,
                options,
            },
            note,
        ))
    }
}

fn describe(ns: &[IpAddr]) -> String {
    if ns.is_empty() {
        "no nameserver".into()
    } else {
        ns.iter()
            .map(|n| format!("nameserver {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Reads the host's resolv.conf candidates; a missing file reads as empty.
pub fn read_host(paths: &[PathBuf]) -> Result<Vec<ResolvConf>, ResolvError> {
    let mut out = Vec::new();
    for p in paths {
        match fs::read_to_string(p) {
            Ok(t) => out.push(ResolvConf::parse(&t)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => out.push(ResolvConf::default()),
            Err(e) => return Err(io_err("read", p)(e)),
        }
    }
    Ok(out)
}

/// The names of the files in the state directory.
pub const HOSTS_FILE: &str = "hosts";
/// See [`HOSTS_FILE`].
pub const RESOLV_FILE: &str = "resolv.conf";

/// What [`write`] made.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Written {
    /// The hosts file.
    pub hosts: PathBuf,
    /// The resolv.conf file.
    pub resolv_conf: PathBuf,
    /// The resolv.conf written.
    pub resolv: ResolvConf,
    /// Why the host's nameservers were not used, if they were not.
    pub note: Option<String>,
}

/// Writes `hosts` and `resolv.conf` for the container into `dir` (created if missing),
/// each atomically (a temporary file, fsync, rename), so a container started meanwhile
/// sees the old file or the new one, never half of one.
pub fn write(
    dir: &Path,
    req: &DnsRequest,
    host: &[ResolvConf],
    net: &ContainerNet,
) -> Result<Written, ResolvError> {
    req.validate()?;
    let (resolv, note) = req.resolv_conf(host, net)?;
    let hosts_text = req.hosts(net);
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let hosts = dir.join(HOSTS_FILE);
    let resolv_conf = dir.join(RESOLV_FILE);
    write_atomic(&hosts, hosts_text.as_bytes())?;
    write_atomic(&resolv_conf, resolv.render().as_bytes())?;
    Ok(Written {
        hosts,
        resolv_conf,
        resolv,
        note,
    })
}

/// [`write`] for the container in network namespace `ns`, with the host's nameservers
/// read from [`HOST_RESOLV_CONF`]: what a runtime calls after the container's network is
/// set up, before it starts the container with the [`mounts`] of `dir`.
pub fn write_for(ns: &Netns, dir: &Path, req: &DnsRequest) -> Result<Written, ResolvError> {
    req.validate()?;
    let host_files: Vec<PathBuf> = HOST_RESOLV_CONF.iter().map(PathBuf::from).collect();
    let host = read_host(&host_files)?;
    let net = ContainerNet::read(ns)?;
    write(dir, req, &host, &net)
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ResolvError> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all(data).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("sync", &tmp))?;
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(io_err("chmod", &tmp))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err("rename into place", path)(e)
    })
}

/// One OCI bind mount; serializes as an entry of config.json's `mounts`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    /// Path inside the container.
    pub destination: String,
    /// Always `bind`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Absolute path on the host.
    pub source: PathBuf,
    /// Mount options: `rbind`, `ro`.
    pub options: Vec<String>,
}

/// The read-only bind mounts of `dir`'s hosts and resolv.conf at `/etc/hosts` and
/// `/etc/resolv.conf`, for a runtime to add to the container's mounts. The files must
/// exist (written by [`write`]); `dir` is made absolute.
pub fn mounts(dir: &Path) -> Result<Vec<BindMount>, ResolvError> {
    let dir = std::path::absolute(dir).map_err(io_err("make absolute", dir))?;
    [
        (HOSTS_FILE, "/etc/hosts"),
        (RESOLV_FILE, "/etc/resolv.conf"),
    ]
    .into_iter()
    .map(|(file, dest)| {
        let source = dir.join(file);
        fs::metadata(&source).map_err(io_err("stat", &source))?;
        Ok(BindMount {
            destination: dest.into(),
            kind: "bind".into(),
            source,
            options: vec!["rbind".into(), "ro".into()],
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_host_file() {
        let rc = ResolvConf::parse(
            "# comment\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\nnameserver bogus\n\
             domain a.test\nsearch b.test c.test ; tail\noptions ndots:2 edns0\n",
        );
        assert_eq!(rc.nameservers, vec![ip("10.0.0.1"), ip("fe80::1")]);
        assert_eq!(rc.search, vec!["b.test", "c.test"]);
        assert_eq!(rc.options, vec!["ndots:2", "edns0"]);
        assert_eq!(
            rc.render(),
            "search b.test c.test\nnameserver 10.0.0.1\nnameserver fe80::1\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn loopback_host_nameservers_fall_back() {
        let req = DnsRequest {
            hostname: "web".into(),
            ..DnsRequest::default()
        };
        let stub = ResolvConf::parse("nameserver 127.0.0.53\nnameserver ::1\nsearch x.test\n");
        let upstream = ResolvConf::parse("nameserver 192.0.2.1\n");
        let net = ContainerNet {
            addresses: vec![ip("10.88.0.2")],
            gateway: Some(ip("10.88.0.1")),
        };
        // systemd-resolved's upstream list first, as Podman does.
        let (rc, note) = req.resolv_conf(&[stub.clone(), upstream], &net).unwrap();
        assert_eq!(rc.nameservers, vec![ip("192.0.2.1")]);
        assert_eq!(rc.search, vec!["x.test"]);
        assert!(note.is_none());
        // Then the gateway, with a note saying why.
        let (rc, note) = req
            .resolv_conf(&[stub.clone(), ResolvConf::default()], &net)
            .unwrap();
        assert_eq!(rc.nameservers, vec![ip("10.88.0.1")]);
        assert!(note.unwrap().contains("127.0.0.53"));
        // No gateway: a clear error.
        let e = req
            .resolv_conf(&[stub], &ContainerNet::default())
            .unwrap_err();
        assert!(e.to_string().contains("--nameserver"), "{e}");
        // Given nameservers win.
        let req = DnsRequest {
            nameservers: vec![ip("198.51.100.53")],
            ..req
        };
        let (rc, _) = req.resolv_conf(&[], &ContainerNet::default()).unwrap();
        assert_eq!(rc.nameservers, vec![ip("198.51.100.53")]);
    }

    #[test]
    fn hosts_names_the_container() {
        let req = DnsRequest {
            hostname: "web".into(),
            domain: Some("example.test".into()),
            extra_hosts: vec![("db".into(), ip("10.88.0.9"))],
            ..DnsRequest::default()
        };
        let net = ContainerNet {
            addresses: vec![ip("10.88.0.2")],
            gateway: None,
        };
        let h = req.hosts(&net);
        assert!(h.starts_with("127.0.0.1\tlocalhost"));
        assert!(h.contains("\n10.88.0.2\tweb.example.test web\n"), "{h}");
        assert!(h.ends_with("10.88.0.9\tdb\n"), "{h}");
        assert!(
            req.hosts(&ContainerNet::default())
                .contains("127.0.1.1\tweb.example.test web")
        );
    }

    #[test]
    fn bad_names_are_refused() {
        let req = DnsRequest {
            hostname: "bad name".into(),
            ..DnsRequest::default()
        };
        assert!(
            req.validate()
                .unwrap_err()
                .to_string()
                .starts_with("hostname:")
        );
        let req = DnsRequest {
            hostname: "ok".into(),
            extra_hosts: vec![("x".into(), ip("1.2.3.4")), ("-y".into(), ip("1.2.3.4"))],
            ..DnsRequest::default()
        };
        assert!(
            req.validate()
                .unwrap_err()
                .to_string()
                .starts_with("add-host[1]:")
        );
    }
}
