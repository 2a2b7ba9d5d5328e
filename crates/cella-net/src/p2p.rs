//! Links on demand: a point-to-point veth between two network namespaces (say, the
//! replication link between two tenants' databases), with an address on each end.
//!
//! Like a bridge attachment, a link is recorded (`STATE/links/ID.json`) before it is
//! made, validated before anything is created, and removed by [`disconnect`] from the
//! record alone.

use crate::bridge::{Paths, StepError, Store, TeardownErrors};
use crate::cidr::IpNet;
use crate::netlink::{LinkChange, Netlink, VethSpec};
use crate::netns::{Netns, NetnsError, NetnsRef};
use std::path::PathBuf;

/// What to connect.
#[derive(Clone, Debug)]
pub struct ConnectRequest {
    /// Names the link; disconnect takes the same id.
    pub id: String,
    /// One end's namespace.
    pub a: NetnsRef,
    /// The other end's namespace.
    pub b: NetnsRef,
    /// Interface name in `a`.
    pub ifname_a: String,
    /// Interface name in `b`.
    pub ifname_b: String,
    /// Address for `a`'s end (with prefix), if any.
    pub addr_a: Option<IpNet>,
    /// Address for `b`'s end (with prefix), if any.
    pub addr_b: Option<IpNet>,
    /// MTU of both ends.
    pub mtu: Option<u32>,
}

/// The record of one point-to-point link.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct P2pLink {
    /// The link id.
    pub id: String,
    /// One end's namespace file.
    pub a: PathBuf,
    /// The other end's namespace file.
    pub b: PathBuf,
    /// Interface name in `a`.
    pub ifname_a: String,
    /// Interface name in `b`.
    pub ifname_b: String,
    /// Address of `a`'s end.
    pub addr_a: Option<IpNet>,
    /// Address of `b`'s end.
    pub addr_b: Option<IpNet>,
}

/// Why a link was refused before anything was made.
#[derive(Debug, thiserror::Error)]
pub enum InvalidLink {
    /// A bad id or interface name.
    #[error("{field}: invalid name {value:?}: {why}")]
    Name {
        /// Which argument.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The id is in use.
    #[error("link {0:?} exists already; disconnect it first")]
    Exists(String),
    /// Both ends in one namespace.
    #[error("both ends are in network namespace `{}`", .0.display())]
    SameNetns(PathBuf),
    /// The two addresses do not make a link.
    #[error("addresses {0} and {1} are not two different addresses of one subnet")]
    Addresses(IpNet, IpNet),
    /// An interface name is taken in its namespace.
    #[error("interface `{ifname}` exists already in network namespace `{}`", netns.display())]
    IfnameTaken {
        /// The name.
        ifname: String,
        /// The namespace.
        netns: PathBuf,
    },
    /// A namespace cannot be opened.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Querying a namespace's links failed.
    #[error(transparent)]
    Netlink(#[from] crate::netlink::NetlinkError),
}

/// A failed connect or disconnect.
#[derive(Debug, thiserror::Error)]
pub enum P2pError {
    /// Refused before anything was made.
    #[error("connect {id:?}")]
    Invalid {
        /// The link id.
        id: String,
        /// Why.
        #[source]
        source: InvalidLink,
    },
    /// A step failed; what was made was removed, unless `cleanup` says otherwise.
    #[error("connect {id:?}{}", cleanup.as_ref().map(|c| format!(" (and the cleanup: {c})")).unwrap_or_default())]
    Setup {
        /// The link id.
        id: String,
        /// The failed step.
        #[source]
        source: StepError,
        /// Failures while undoing.
        cleanup: Option<TeardownErrors>,
    },
    /// No link of that id.
    #[error("disconnect {0:?}: no such link")]
    NotFound(String),
    /// The record store failed, or removing the link did.
    #[error("{op} {id:?}")]
    Step {
        /// connect or disconnect.
        op: &'static str,
        /// The link id.
        id: String,
        /// Why.
        #[source]
        source: StepError,
    },
}

fn check_name(field: &'static str, v: &str, max: usize) -> Result<(), InvalidLink> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !v.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(InvalidLink::Name {
            field,
            value: v.into(),
            why: "use letters, digits, `-`, `_`, `.`; interface names at most 15",
        })
    }
}

fn validate(req: &ConnectRequest, store: &Store) -> Result<(Netns, Netns), InvalidLink> {
    check_name("id", &req.id, 128)?;
    check_name("ifname-a", &req.ifname_a, 15)?;
    check_name("ifname-b", &req.ifname_b, 15)?;
    if store
        .dir
        .join("links")
        .join(format!("{}.json", req.id))
        .exists()
    {
        return Err(InvalidLink::Exists(req.id.clone()));
    }
    match (req.addr_a, req.addr_b) {
        (Some(a), Some(b)) => {
            if a.addr == b.addr || a.prefix != b.prefix || !a.network().contains(b.addr) {
                return Err(InvalidLink::Addresses(a, b));
            }
        }
        (None, None) => {}
        (Some(a), None) | (None, Some(a)) => return Err(InvalidLink::Addresses(a, a)),
    }
    let a = Netns::open(&req.a)?;
    let b = Netns::open(&req.b)?;
    let id_a = crate::sys::ns_id(a.fd()).ok();
    if id_a.is_some() && id_a == crate::sys::ns_id(b.fd()).ok() {
        return Err(InvalidLink::SameNetns(a.path().into()));
    }
    for (ns, name) in [(&a, &req.ifname_a), (&b, &req.ifname_b)] {
        if Netlink::open_in(ns)?.link(name)?.is_some() {
            return Err(InvalidLink::IfnameTaken {
                ifname: name.clone(),
                netns: ns.path().into(),
            });
        }
    }
    Ok((a, b))
}

/// Puts a veth between two namespaces, with an address and the link up on each end.
pub fn connect(paths: &Paths, req: &ConnectRequest) -> Result<P2pLink, P2pError> {
    let id = req.id.clone();
    let store = Store {
        dir: paths.state_dir.clone(),
    };
    let step = |source| P2pError::Step {
        op: "connect",
        id: id.clone(),
        source,
    };
    let _lock = store.lock().map_err(step)?;
    let (a, b) = validate(req, &store).map_err(|source| P2pError::Invalid {
        id: id.clone(),
        source,
    })?;
    let rec = P2pLink {
        id: id.clone(),
        a: a.path().into(),
        b: b.path().into(),
        ifname_a: req.ifname_a.clone(),
        ifname_b: req.ifname_b.clone(),
        addr_a: req.addr_a,
        addr_b: req.addr_b,
    };
    let path = store.dir.join("links").join(format!("{id}.json"));
    store.write(&path, &rec).map_err(step)?;
    let made = (|| -> Result<(), StepError> {
        let mut na = Netlink::open_in(&a)?;
        // Created from a's side with the peer born inside b: no move between namespaces.
        na.add_veth(&VethSpec {
            name: req.ifname_a.clone(),
            peer: req.ifname_b.clone(),
            peer_netns: Some(b.fd()),
            peer_mac: None,
            mtu: req.mtu,
            master: None,
            up: false,
        })?;
        let mut nb = Netlink::open_in(&b)?;
        for (nl, name, addr) in [
            (&mut na, &req.ifname_a, req.addr_a),
            (&mut nb, &req.ifname_b, req.addr_b),
        ] {
            let i = nl.index(name)?;
            if let Some(addr) = addr {
                nl.add_addr(i, addr)?;
            }
            nl.set_link(
                i,
                name,
                &LinkChange {
                    up: Some(true),
                    ..LinkChange::default()
                },
            )?;
        }
        Ok(())
    })();
    match made {
        Ok(()) => Ok(rec),
        Err(source) => {
            let cleanup = remove(&store, &rec).err();
            Err(P2pError::Setup {
                id,
                source,
                cleanup,
            })
        }
    }
}

/// Deletes the veth (from whichever end's namespace still exists) and the record.
fn remove(store: &Store, rec: &P2pLink) -> Result<(), TeardownErrors> {
    let mut errs = Vec::new();
    for (ns, name) in [(&rec.a, &rec.ifname_a), (&rec.b, &rec.ifname_b)] {
        let r = (|| -> Result<bool, StepError> {
            let ns = match Netns::open(&NetnsRef::Path(ns.clone())) {
                Ok(ns) => ns,
                Err(NetnsError::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e.into()),
            };
            let mut nl = Netlink::open_in(&ns)?;
            match nl.link(name)? {
                Some(l) => {
                    nl.del_link(l.index, &l.name)?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })();
        match r {
            // One end deleted takes the other along.
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => errs.push(e),
        }
    }
    if errs.is_empty()
        && let Err(e) = store.remove(&store.dir.join("links").join(format!("{}.json", rec.id)))
    {
        errs.push(e);
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(TeardownErrors(errs))
    }
}

/// Removes the link `id` made by [`connect`].
pub fn disconnect(paths: &Paths, id: &str) -> Result<(), P2pError> {
    let store = Store {
        dir: paths.state_dir.clone(),
    };
    if check_name("id", id, 128).is_err() {
        return Err(P2pError::NotFound(id.into()));
    }
    let step = |source| P2pError::Step {
        op: "disconnect",
        id: id.into(),
        source,
    };
    let _lock = store.lock().map_err(step)?;
    let rec: P2pLink = store
        .read(&store.dir.join("links").join(format!("{id}.json")))
        .map_err(step)?
        .ok_or_else(|| P2pError::NotFound(id.into()))?;
    remove(&store, &rec).map_err(|e| step(StepError::Teardown(e)))
}
