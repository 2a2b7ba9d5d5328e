//! rtnetlink over a blocking socket: links (veth, bridge), addresses, routes, rules and
//! route lookups. Messages are built and parsed by netlink-packet-route; this module only
//! sends requests and collects replies.
//!
//! A [`Netlink`] handle works in the network namespace its socket was created in:
//! [`Netlink::open_in`] creates the socket on a short-lived thread inside the target
//! namespace, and the handle is then used from any thread.

use crate::cidr::IpNet;
use crate::netns::{Netns, NetnsError};
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader,
    NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The main routing table.
pub const TABLE_MAIN: u32 = 254;

/// A failed netlink request.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel (or the socket) refused the request.
    #[error("netlink: {op}")]
    Request {
        /// The request, e.g. ``add link `veth0` ``.
        op: String,
        /// The kernel's errno.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer could not be parsed.
    #[error("netlink: {op}: unreadable reply: {why}")]
    Decode {
        /// The request.
        op: String,
        /// What could not be parsed.
        why: String,
    },
    /// A link named in a request does not exist.
    #[error("link `{0}` does not exist")]
    NoSuchLink(String),
    /// Entering the namespace for the socket failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

impl NetlinkError {
    /// The errno of a refused request, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A link (network interface) as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Kind from IFLA_INFO_KIND (`veth`, `bridge`...), empty for plain devices.
    pub kind: String,
    /// MTU in bytes.
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Hardware address as `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Index of the bridge (or other controller) this link is a port of.
    pub master: Option<u32>,
}

/// What to create with [`Netlink::add_veth`].
#[derive(Clone, Debug, Default)]
pub struct VethSpec<'a> {
    /// Name of the end that stays in the handle's namespace.
    pub name: String,
    /// Name of the other end.
    pub peer: String,
    /// Namespace to create the peer directly in (no later move, which costs an RCU wait).
    pub peer_netns: Option<BorrowedFd<'a>>,
    /// Hardware address of the peer.
    pub peer_mac: Option<[u8; 6]>,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    /// Bridge to enslave the local end to, at creation.
    pub master: Option<u32>,
    /// Bring the local end up at creation.
    pub up: bool,
}

/// A change to an existing link; `None` fields are left alone.
#[derive(Clone, Debug, Default)]
pub struct LinkChange<'a> {
    /// Administrative state.
    pub up: Option<bool>,
    /// MTU.
    pub mtu: Option<u32>,
    /// `Some(Some(i))` enslaves to link `i`, `Some(None)` frees it.
    pub master: Option<Option<u32>>,
    /// Move into this namespace.
    pub netns: Option<BorrowedFd<'a>>,
    /// Hardware address.
    pub mac: Option<[u8; 6]>,
}

/// An address on a link.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Addr {
    /// Interface index.
    pub index: u32,
    /// The address and prefix.
    pub net: IpNet,
}

/// A route.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Route {
    /// Destination prefix; `None` is the default route.
    pub dst: Option<IpNet>,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Preferred source address.
    pub src: Option<IpAddr>,
    /// Routing table (254 = main).
    pub table: u32,
    /// Route metric.
    pub metric: Option<u32>,
    /// Kind: `unicast`, `local`, `broadcast`, `blackhole`, `unreachable`...
    pub kind: String,
}

/// A policy-routing rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// Priority (order of evaluation); the kernel picks one when `None`.
    pub priority: Option<u32>,
    /// Source prefix.
    pub from: Option<IpNet>,
    /// Destination prefix.
    pub to: Option<IpNet>,
    /// Firewall mark to match.
    pub fwmark: Option<u32>,
    /// Mask for the firewall mark.
    pub fwmask: Option<u32>,
    /// Input interface name.
    pub iif: Option<String>,
    /// Table to look up.
    pub table: u32,
}

/// A netlink route socket bound to one network namespace.
pub struct Netlink {
    sock: Socket,
    seq: u32,
}

impl fmt::Debug for Netlink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Netlink")
            .field("fd", &self.sock.as_raw_fd())
            .finish()
    }
}

fn req_err(op: &str) -> impl FnOnce(io::Error) -> NetlinkError + '_ {
    move |source| NetlinkError::Request {
        op: op.to_string(),
        source,
    }
}

fn family_of(a: IpAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// Formats a hardware address.
pub fn format_mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(*v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(*v)),
        _ => None,
    }
}

fn route_type_name(t: RouteType) -> String {
    match t {
        RouteType::Unicast => "unicast".into(),
        RouteType::Local => "local".into(),
        RouteType::Broadcast => "broadcast".into(),
        RouteType::Anycast => "anycast".into(),
        RouteType::Multicast => "multicast".into(),
        RouteType::BlackHole => "blackhole".into(),
        RouteType::Unreachable => "unreachable".into(),
        RouteType::Prohibit => "prohibit".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

impl Netlink {
    /// Opens a route socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let op = "open route socket";
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(req_err(op))?;
        sock.bind_auto().map_err(req_err(op))?;
        sock.connect(&SocketAddr::new(0, 0)).map_err(req_err(op))?;
        // Extended acks make the kernel say which attribute it disliked; a kernel without
        // them still works.
        let _ = sock.set_ext_ack(true);
        Ok(Netlink { sock, seq: 0 })
    }

    /// Opens a route socket inside `ns` (created on a short-lived thread in `ns`).
    pub fn open_in(ns: &Netns) -> Result<Netlink, NetlinkError> {
        ns.run(Netlink::open)?
    }

    /// Sends one request and returns the messages of the reply, up to the ack or the end
    /// of the dump.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut header = NetlinkHeader::default();
        // Every request ends in a known way: a dump with NLMSG_DONE, anything else with
        // an ack (or an error), so the loop below never waits for a reply that won't come.
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.sock.send(&buf, 0).map_err(req_err(op))?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.sock.recv_from_full().map_err(req_err(op))?;
            let mut off = 0;
            while off < data.len() {
                let len = NetlinkBuffer::new_checked(&data[off..])
                    .map_err(|e| NetlinkError::Decode {
                        op: op.into(),
                        why: e.to_string(),
                    })?
                    .length() as usize;
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..off + len])
                    .map_err(|e| NetlinkError::Decode {
                        op: op.into(),
                        why: e.to_string(),
                    })?;
                off += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(NetlinkError::Request {
                                op: op.into(),
                                source: e.to_io(),
                            }),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                    }
                    _ => {}
                }
            }
        }
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16, op: &str) -> Result<(), NetlinkError> {
        self.request(msg, flags | NLM_F_ACK, op).map(|_| ())
    }

    // ---- links ----

    /// All links of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>, NetlinkError> {
        let msgs = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
            "list links",
        )?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from(&l)),
                _ => None,
            })
            .collect())
    }

    /// The link called `name`, if any.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, NetlinkError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        let op = format!("get link `{name}`");
        match self.request(RouteNetlinkMessage::GetLink(m), NLM_F_ACK, &op) {
            Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from(l)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The name of link `index`, if it exists.
    pub fn link_name(&mut self, index: u32) -> Result<Option<String>, NetlinkError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        let op = format!("get link #{index}");
        match self.request(RouteNetlinkMessage::GetLink(m), 0, &op) {
            Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from(l).name),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of the link called `name`, or [`NetlinkError::NoSuchLink`].
    pub fn index(&mut self, name: &str) -> Result<u32, NetlinkError> {
        self.link(name)?
            .map(|l| l.index)
            .ok_or_else(|| NetlinkError::NoSuchLink(name.into()))
    }

    /// Creates a veth pair; the peer may be created directly in another namespace.
    pub fn add_veth(&mut self, spec: &VethSpec<'_>) -> Result<(), NetlinkError> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(spec.peer.clone()));
        if let Some(fd) = spec.peer_netns {
            peer.attributes.push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
        }
        if let Some(mac) = spec.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        if let Some(mtu) = spec.mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(spec.name.clone()));
        if let Some(mtu) = spec.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(master) = spec.master {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        if spec.up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        let op = format!("add veth `{}` peer `{}`", spec.name, spec.peer);
        self.ack(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &op,
        )
    }

    /// Creates a bridge named `name`.
    pub fn add_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        up: bool,
    ) -> Result<(), NetlinkError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        if let Some(mtu) = mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        let op = format!("add bridge `{name}`");
        self.ack(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &op,
        )
    }

    /// Changes link `index` (named `name` in messages).
    pub fn set_link(
        &mut self,
        index: u32,
        name: &str,
        c: &LinkChange<'_>,
    ) -> Result<(), NetlinkError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        if let Some(up) = c.up {
            m.header.flags = if up {
                LinkFlags::Up
            } else {
                LinkFlags::empty()
            };
            m.header.change_mask = LinkFlags::Up;
        }
        if let Some(mtu) = c.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(master) = c.master {
            m.attributes
                .push(LinkAttribute::Controller(master.unwrap_or(0)));
        }
        if let Some(fd) = c.netns {
            m.attributes.push(LinkAttribute::NetNsFd(fd.as_raw_fd()));
        }
        if let Some(mac) = c.mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let op = format!("set link `{name}`");
        self.ack(RouteNetlinkMessage::SetLink(m), 0, &op)
    }

    /// Turns hairpin mode of bridge port `index` on or off: with it on, the bridge may send
    /// a frame back out of the port it came in by (a container reaching its own forwarded
    /// port through the host's address).
    pub fn set_hairpin(&mut self, index: u32, name: &str, on: bool) -> Result<(), NetlinkError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                on,
            )])),
        ]));
        let op = format!("set hairpin mode of bridge port `{name}`");
        // Port settings of an existing link go through RTM_NEWLINK (slave_changelink), not
        // RTM_SETLINK.
        self.ack(RouteNetlinkMessage::NewLink(m), 0, &op)
    }

    /// Deletes link `index` (a veth takes its peer with it).
    pub fn del_link(&mut self, index: u32, name: &str) -> Result<(), NetlinkError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        let op = format!("delete link `{name}`");
        self.ack(RouteNetlinkMessage::DelLink(m), 0, &op)
    }

    // ---- addresses ----

    fn addr_msg(index: u32, net: IpNet) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = family_of(net.addr);
        m.header.prefix_len = net.prefix;
        m.header.index = index;
        m.attributes.push(AddressAttribute::Local(net.addr));
        m.attributes.push(AddressAttribute::Address(net.addr));
        m
    }

    /// Adds `net` to link `index`.
    pub fn add_addr(&mut self, index: u32, net: IpNet) -> Result<(), NetlinkError> {
        let op = format!("add address {net} to link #{index}");
        self.ack(
            RouteNetlinkMessage::NewAddress(Self::addr_msg(index, net)),
            NLM_F_CREATE | NLM_F_EXCL,
            &op,
        )
    }

    /// Adds `net` to link `index` without duplicate address detection (IFA_F_NODAD): usable
    /// at once, for addresses whose uniqueness IPAM guarantees.
    pub fn add_addr_nodad(&mut self, index: u32, net: IpNet) -> Result<(), NetlinkError> {
        let op = format!("add address {net} (nodad) to link #{index}");
        let mut m = Self::addr_msg(index, net);
        m.attributes.push(AddressAttribute::Flags(
            netlink_packet_route::address::AddressFlags::Nodad,
        ));
        self.ack(
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &op,
        )
    }

    /// Removes `net` from link `index`.
    pub fn del_addr(&mut self, index: u32, net: IpNet) -> Result<(), NetlinkError> {
        let op = format!("delete address {net} from link #{index}");
        self.ack(
            RouteNetlinkMessage::DelAddress(Self::addr_msg(index, net)),
            0,
            &op,
        )
    }

    /// Every address of the namespace.
    pub fn addrs(&mut self) -> Result<Vec<Addr>, NetlinkError> {
        self.addrs_of(None)
    }

    /// The addresses of one family (IPv6 when `v6`), filtered by the kernel: a host with
    /// many veths has an IPv6 link-local address on each, which an IPv4 question skips.
    pub fn addrs_family(&mut self, v6: bool) -> Result<Vec<Addr>, NetlinkError> {
        self.addrs_of(Some(v6))
    }

    fn addrs_of(&mut self, v6: Option<bool>) -> Result<Vec<Addr>, NetlinkError> {
        let mut req = AddressMessage::default();
        if let Some(v6) = v6 {
            req.header.family = if v6 {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            };
        }
        let msgs = self.request(
            RouteNetlinkMessage::GetAddress(req),
            NLM_F_DUMP,
            "list addresses",
        )?;
        let mut out = Vec::new();
        for m in msgs {
            let RouteNetlinkMessage::NewAddress(a) = m else {
                continue;
            };
            let ip = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(addr) = ip {
                out.push(Addr {
                    index: a.header.index,
                    net: IpNet {
                        addr,
                        prefix: a.header.prefix_len,
                    },
                });
            }
        }
        Ok(out)
    }

    // ---- routes ----

    fn route_msg(r: &Route) -> RouteMessage {
        let mut m = RouteMessage::default();
        let fam_addr = r
            .dst
            .map(|d| d.addr)
            .or(r.gateway)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        m.header.address_family = family_of(fam_addr);
        m.header.destination_prefix_length = r.dst.map_or(0, |d| d.prefix);
        m.header.table = if r.table < 256 {
            r.table as u8
        } else {
            RouteHeader::RT_TABLE_UNSPEC
        };
        m.header.protocol = RouteProtocol::Static;
        m.header.kind = RouteType::Unicast;
        m.header.scope = if r.gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if let Some(d) = r.dst {
            m.attributes
                .push(RouteAttribute::Destination(d.network().addr.into()));
        }
        if let Some(g) = r.gateway {
            m.attributes.push(RouteAttribute::Gateway(g.into()));
        }
        if let Some(o) = r.oif {
            m.attributes.push(RouteAttribute::Oif(o));
        }
        if let Some(s) = r.src {
            m.attributes.push(RouteAttribute::PrefSource(s.into()));
        }
        if let Some(p) = r.metric {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        m.attributes.push(RouteAttribute::Table(r.table));
        m
    }

    /// Adds a unicast route.
    pub fn add_route(&mut self, r: &Route) -> Result<(), NetlinkError> {
        let op = format!("add route {}", describe_route(r));
        self.ack(
            RouteNetlinkMessage::NewRoute(Self::route_msg(r)),
            NLM_F_CREATE | NLM_F_EXCL,
            &op,
        )
    }

    /// Deletes a route.
    pub fn del_route(&mut self, r: &Route) -> Result<(), NetlinkError> {
        let op = format!("delete route {}", describe_route(r));
        let mut m = Self::route_msg(r);
        // Deleting matches on what is given: do not insist on a protocol or scope.
        m.header.protocol = RouteProtocol::Unspec;
        m.header.scope = RouteScope::NoWhere;
        self.ack(RouteNetlinkMessage::DelRoute(m), 0, &op)
    }

    /// Every route of one family (IPv4 when `v6` is false) in every table.
    pub fn routes(&mut self, v6: bool) -> Result<Vec<Route>, NetlinkError> {
        let mut m = RouteMessage::default();
        m.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let msgs = self.request(RouteNetlinkMessage::GetRoute(m), NLM_F_DUMP, "list routes")?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(route_from(r)),
                _ => None,
            })
            .collect())
    }

    /// The route the kernel picks for `dst` (RTM_GETROUTE), optionally as if sent from
    /// `src`, with firewall mark `mark`.
    pub fn route_get(
        &mut self,
        dst: IpAddr,
        src: Option<IpAddr>,
        mark: Option<u32>,
    ) -> Result<Route, NetlinkError> {
        let mut m = RouteMessage::default();
        m.header.address_family = family_of(dst);
        m.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
        // Ask for the table the route was found in, not the cached clone's.
        m.header.flags = RouteFlags::LookupTable;
        m.attributes.push(RouteAttribute::Destination(dst.into()));
        if let Some(s) = src {
            m.header.source_prefix_length = if s.is_ipv4() { 32 } else { 128 };
            m.attributes.push(RouteAttribute::Source(s.into()));
        }
        if let Some(k) = mark {
            m.attributes.push(RouteAttribute::Mark(k));
        }
        let op = format!("get route to {dst}");
        let msgs = self.request(RouteNetlinkMessage::GetRoute(m), NLM_F_ACK, &op)?;
        msgs.iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => Some(route_from(r)),
                _ => None,
            })
            .ok_or_else(|| NetlinkError::Decode {
                op,
                why: "no route in the reply".into(),
            })
    }

    // ---- rules ----

    fn rule_msg(r: &Rule, v6: bool) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        m.header.action = RuleAction::ToTable;
        m.header.table = if r.table < 256 { r.table as u8 } else { 0 };
        m.attributes.push(RuleAttribute::Table(r.table));
        if let Some(p) = r.priority {
            m.attributes.push(RuleAttribute::Priority(p));
        }
        if let Some(f) = r.from {
            m.header.src_len = f.prefix;
            m.attributes.push(RuleAttribute::Source(f.network().addr));
        }
        if let Some(t) = r.to {
            m.header.dst_len = t.prefix;
            m.attributes
                .push(RuleAttribute::Destination(t.network().addr));
        }
        if let Some(k) = r.fwmark {
            m.attributes.push(RuleAttribute::FwMark(k));
            m.attributes
                .push(RuleAttribute::FwMask(r.fwmask.unwrap_or(u32::MAX)));
        }
        if let Some(i) = &r.iif {
            m.attributes.push(RuleAttribute::Iifname(i.clone()));
        }
        m
    }

    fn rule_v6(r: &Rule) -> bool {
        r.from.or(r.to).is_some_and(|n| n.addr.is_ipv6())
    }

    /// Adds a policy-routing rule.
    pub fn add_rule(&mut self, r: &Rule) -> Result<(), NetlinkError> {
        let op = format!("add rule {}", describe_rule(r));
        let m = Self::rule_msg(r, Self::rule_v6(r));
        self.ack(
            RouteNetlinkMessage::NewRule(m),
            NLM_F_CREATE | NLM_F_EXCL,
            &op,
        )
    }

    /// Deletes the rule matching `r`.
    pub fn del_rule(&mut self, r: &Rule) -> Result<(), NetlinkError> {
        let op = format!("delete rule {}", describe_rule(r));
        let m = Self::rule_msg(r, Self::rule_v6(r));
        self.ack(RouteNetlinkMessage::DelRule(m), 0, &op)
    }

    /// Every rule of one family.
    pub fn rules(&mut self, v6: bool) -> Result<Vec<Rule>, NetlinkError> {
        let mut m = RuleMessage::default();
        m.header.family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let msgs = self.request(RouteNetlinkMessage::GetRule(m), NLM_F_DUMP, "list rules")?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRule(r) => Some(rule_from(r)),
                _ => None,
            })
            .collect())
    }
}

fn link_from(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        kind: String::new(),
        mtu: 0,
        up: l.header.flags.contains(LinkFlags::Up),
        mac: String::new(),
        master: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Address(b) => link.mac = format_mac(b),
            LinkAttribute::Controller(m) => link.master = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        link.kind = k.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn route_from(r: &RouteMessage) -> Route {
    let mut out = Route {
        table: u32::from(r.header.table),
        kind: route_type_name(r.header.kind),
        ..Route::default()
    };
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(d) => {
                out.dst = route_addr(d).map(|addr| IpNet {
                    addr,
                    prefix: r.header.destination_prefix_length,
                })
            }
            RouteAttribute::Gateway(g) => out.gateway = route_addr(g),
            RouteAttribute::Oif(o) => out.oif = Some(*o),
            RouteAttribute::PrefSource(s) => out.src = route_addr(s),
            RouteAttribute::Priority(p) => out.metric = Some(*p),
            RouteAttribute::Table(t) => out.table = *t,
            _ => {}
        }
    }
    out
}

fn rule_from(r: &RuleMessage) -> Rule {
    let mut out = Rule {
        table: u32::from(r.header.table),
        ..Rule::default()
    };
    for a in &r.attributes {
        match a {
            RuleAttribute::Source(s) => {
                out.from = Some(IpNet {
                    addr: *s,
                    prefix: r.header.src_len,
                })
            }
            RuleAttribute::Destination(d) => {
                out.to = Some(IpNet {
                    addr: *d,
                    prefix: r.header.dst_len,
                })
            }
            RuleAttribute::Priority(p) => out.priority = Some(*p),
            RuleAttribute::FwMark(k) => out.fwmark = Some(*k),
            RuleAttribute::FwMask(k) => out.fwmask = Some(*k),
            RuleAttribute::Iifname(i) => out.iif = Some(i.clone()),
            RuleAttribute::Table(t) => out.table = *t,
            _ => {}
        }
    }
    out
}

/// `10.0.0.0/8 via 10.0.0.1 table 254`-style text for messages.
pub fn describe_route(r: &Route) -> String {
    let mut s = r
        .dst
        .map_or_else(|| "default".to_string(), |d| d.network().to_string());
    if let Some(g) = r.gateway {
        s += &format!(" via {g}");
    }
    if let Some(o) = r.oif {
        s += &format!(" dev #{o}");
    }
    if r.table != TABLE_MAIN {
        s += &format!(" table {}", r.table);
    }
    s
}

/// `from 10.0.0.0/8 fwmark 0x1 lookup 100`-style text for messages.
pub fn describe_rule(r: &Rule) -> String {
    let mut parts = Vec::new();
    if let Some(p) = r.priority {
        parts.push(format!("pref {p}"));
    }
    parts.push(format!(
        "from {}",
        r.from.map_or("all".into(), |f| f.network().to_string())
    ));
    if let Some(t) = r.to {
        parts.push(format!("to {}", t.network()));
    }
    if let Some(k) = r.fwmark {
        match r.fwmask {
            Some(m) if m != u32::MAX => parts.push(format!("fwmark {k:#x}/{m:#x}")),
            _ => parts.push(format!("fwmark {k:#x}")),
        }
    }
    if let Some(i) = &r.iif {
        parts.push(format!("iif {i}"));
    }
    parts.push(format!("lookup {}", r.table));
    parts.join(" ")
}

// Additions for the CNI plugin (cella-cni): marking links cella made, so that a later,
// stateless call can tell them from links someone else made.
impl Netlink {
    /// Sets the alias (IFLA_IFALIAS) of link `index` (named `name` in messages).
    pub fn set_alias(&mut self, index: u32, name: &str, alias: &str) -> Result<(), NetlinkError> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfAlias(alias.into()));
        let op = format!("set alias of link `{name}`");
        self.ack(RouteNetlinkMessage::SetLink(m), 0, &op)
    }

    /// The alias (IFLA_IFALIAS) of link `name`; `None` when the link does not exist,
    /// an empty string when it has no alias.
    pub fn alias(&mut self, name: &str) -> Result<Option<String>, NetlinkError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.into()));
        let op = format!("get link `{name}`");
        match self.request(RouteNetlinkMessage::GetLink(m), NLM_F_ACK, &op) {
            Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(
                    l.attributes
                        .iter()
                        .find_map(|a| match a {
                            LinkAttribute::IfAlias(s) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default(),
                ),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
