//! cella-cni's nftables tables, `ip cella_cni` and `ip6 cella_cni` (NAT) and `bridge
//! cella_cni` (anti-spoofing),
//! separate from `cella net`'s tables so that neither removes the other's.
//!
//! As in cella-net, the rules never change per container; a container adds set and map
//! elements, each carrying a comment naming its owner (`CONTAINERID/IFNAME`). DEL and
//! CHECK find a container's elements by that comment, so they need no state file and
//! work after a crash at any point. The tables are created with the first element and
//! removed with the last.
//!
//! ```text
//! table ip cella_cni {
//!   map tcp_addr, tcp_port { inet_service : ... }                 # hostIP any: port -> ctr addr, port
//!   map tcp_haddr, tcp_hport { ipv4_addr . inet_service : ... }   # a given hostIP
//!   (udp_ the same)
//!   set masq { ipv4_addr }                                        # ipMasq containers
//!   set own { ipv4_addr . ipv4_addr; interval }                   # container . its subnet
//!   set hairpin { ipv4_addr . ipv4_addr; interval }               # its subnet . container
//!   prerouting/output: dnat ip daddr . dport via the h-maps, then fib daddr local via the others
//!   postrouting: ip saddr @masq ip saddr . ip daddr != @own ip daddr != 224.0.0.0/4 masquerade
//!                ct status dnat ip saddr . ip daddr @hairpin masquerade
//!                ct status dnat ip saddr 127.0.0.0/8 masquerade
//! }
//! table ip6 cella_cni { the same with IPv6 addresses; multicast is ff00::/8; no loopback rule }
//! table bridge cella_cni { cella_net::nft::bridge_base_text }
//! ```

use cella_net::cidr::IpNet;
use cella_net::nft::{NftError, Proto};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

/// The table name, in the `ip` and `bridge` families.
pub const TABLE: &str = "cella_cni";

/// The owner comment of a container's elements (at most 127 bytes, as nft allows).
pub fn tag(id: &str, ifname: &str) -> String {
    let t = format!("{id}/{ifname}");
    if t.len() <= 127 {
        return t;
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for b in t.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let head: String = id.chars().take(80).collect();
    format!("{head}~{h:016x}/{ifname}")
}

/// A port mapping, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// TCP or UDP.
    pub proto: Proto,
    /// Host address, `None` for all local addresses (of both families).
    pub host_ip: Option<IpAddr>,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
}

/// One container's elements.
#[derive(Clone, Debug, Default)]
pub struct Elements {
    /// Owner comment.
    pub tag: String,
    /// The container's IPv4 address and subnet.
    pub ip: Option<(Ipv4Addr, IpNet)>,
    /// Its IPv6 address and subnet.
    pub ip6: Option<(Ipv6Addr, IpNet)>,
    /// Masquerade its traffic leaving its subnet.
    pub masq: bool,
    /// Port mappings to it.
    pub mappings: Vec<Mapping>,
    /// Anti-spoofing: host end of its veth and its MAC.
    pub anti_spoof: Option<(String, String)>,
}

fn elem(verb: &str, family: &str, set: &str, e: Value) -> Value {
    json!({ verb: { "element": { "family": family, "table": TABLE, "name": set, "elem": [e] } } })
}

fn prefix(n: &IpNet) -> Value {
    json!({ "prefix": { "addr": n.network().addr.to_string(), "len": n.prefix } })
}

impl Elements {
    fn commented(&self, v: Value) -> Value {
        json!({ "elem": { "val": v, "comment": self.tag } })
    }

    /// True when there is nothing to add.
    pub fn is_empty(&self) -> bool {
        self.add().is_empty()
    }

    /// True when the bridge table is needed.
    pub fn needs_bridge_table(&self) -> bool {
        self.anti_spoof.is_some()
    }

    /// (nat family, address, subnet) for each of the container's addresses.
    fn families(&self) -> Vec<(&'static str, IpAddr, IpNet)> {
        let mut v = Vec::new();
        if let Some((a, n)) = self.ip {
            v.push(("ip", IpAddr::V4(a), n));
        }
        if let Some((a, n)) = self.ip6 {
            v.push(("ip6", IpAddr::V6(a), n));
        }
        v
    }

    /// Commands adding the elements; `create` for mappings, so a port mapped already
    /// fails the whole batch. A mapping without a host address goes to each family the
    /// container has an address of; one with a host address only to that family.
    pub fn add(&self) -> Vec<Value> {
        let mut c = Vec::new();
        for (f, ip, subnet) in self.families() {
            let ips = ip.to_string();
            let mut mapped = false;
            for m in &self.mappings {
                let p = m.proto.name();
                match m.host_ip {
                    None => {
                        let k = json!(m.host_port);
                        c.push(elem(
                            "create",
                            f,
                            &format!("{p}_addr"),
                            json!([self.commented(k.clone()), ips]),
                        ));
                        c.push(elem(
                            "create",
                            f,
                            &format!("{p}_port"),
                            json!([self.commented(k), m.container_port]),
                        ));
                    }
                    Some(h) if h.is_ipv4() == ip.is_ipv4() => {
                        let k = json!({ "concat": [h.to_string(), m.host_port] });
                        c.push(elem(
                            "create",
                            f,
                            &format!("{p}_haddr"),
                            json!([self.commented(k.clone()), ips]),
                        ));
                        c.push(elem(
                            "create",
                            f,
                            &format!("{p}_hport"),
                            json!([self.commented(k), m.container_port]),
                        ));
                    }
                    Some(_) => continue,
                }
                mapped = true;
            }
            if mapped {
                c.push(elem(
                    "add",
                    f,
                    "hairpin",
                    self.commented(json!({ "concat": [prefix(&subnet), ips] })),
                ));
            }
            if self.masq {
                c.push(elem("add", f, "masq", self.commented(json!(ips))));
                c.push(elem(
                    "add",
                    f,
                    "own",
                    self.commented(json!({ "concat": [ips, prefix(&subnet)] })),
                ));
            }
        }
        if let Some((port, mac)) = &self.anti_spoof {
            c.push(elem("add", "bridge", "ports", self.commented(json!(port))));
            c.push(elem(
                "add",
                "bridge",
                "macs",
                self.commented(json!({ "concat": [port, mac] })),
            ));
            if let Some((ip, _)) = self.ip {
                c.push(elem(
                    "add",
                    "bridge",
                    "ips",
                    self.commented(json!({ "concat": [port, ip.to_string()] })),
                ));
            }
            // IPv6: its link-local address (neighbour discovery, MLD) and its address.
            let mut v6: Vec<Ipv6Addr> = cella_net::netlink::parse_mac(mac)
                .map(cella_net::nft::link_local)
                .into_iter()
                .collect();
            v6.extend(self.ip6.map(|(a, _)| a));
            for a in v6 {
                c.push(elem(
                    "add",
                    "bridge",
                    "ips6",
                    self.commented(json!({ "concat": [port, a.to_string()] })),
                ));
                c.push(elem(
                    "add",
                    "bridge",
                    "nd6",
                    self.commented(json!({ "concat": [port, cella_net::nft::nd6_key(a)] })),
                ));
            }
        }
        c
    }
}

fn rule(family: &str, chain: &str, expr: Value) -> Value {
    json!({ "add": { "rule": { "family": family, "table": TABLE, "chain": chain, "expr": expr } } })
}

fn chain(family: &str, name: &str, kind: &str, hook: &str, prio: i32) -> [Value; 2] {
    [
        json!({ "add": { "chain": { "family": family, "table": TABLE, "name": name, "type": kind, "hook": hook, "prio": prio, "policy": "accept" } } }),
        json!({ "flush": { "chain": { "family": family, "table": TABLE, "name": name } } }),
    ]
}

fn set(family: &str, name: &str, kind: Value, map: Option<&str>, interval: bool) -> Value {
    let mut s = json!({ "family": family, "table": TABLE, "name": name, "type": kind });
    if let Some(m) = map {
        s["map"] = json!(m);
    }
    if interval {
        s["flags"] = json!(["interval"]);
    }
    let kind = if map.is_some() { "map" } else { "set" };
    json!({ "add": { kind: s } })
}

/// Commands creating the NAT tables a container with these address families needs
/// (`ip`, `ip6`) if missing and resetting their rules (idempotent). A table is made only
/// when needed, since DEL removes a table holding no element.
pub fn nat_base(v4: bool, v6: bool) -> Vec<Value> {
    let mut c = Vec::new();
    if v4 {
        c.extend(nat_table("ip"));
    }
    if v6 {
        c.extend(nat_table("ip6"));
    }
    c
}

fn nat_table(f: &str) -> Vec<Value> {
    let (addr, l3, mcast, mcast_len) = if f == "ip6" {
        ("ipv6_addr", "ip6", "ff00::", 8)
    } else {
        ("ipv4_addr", "ip", "224.0.0.0", 4)
    };
    let mut c = vec![json!({ "add": { "table": { "family": f, "name": TABLE } } })];
    for p in ["tcp", "udp"] {
        c.push(set(
            f,
            &format!("{p}_addr"),
            json!("inet_service"),
            Some(addr),
            false,
        ));
        c.push(set(
            f,
            &format!("{p}_port"),
            json!("inet_service"),
            Some("inet_service"),
            false,
        ));
        let k = json!([addr, "inet_service"]);
        c.push(set(f, &format!("{p}_haddr"), k.clone(), Some(addr), false));
        c.push(set(
            f,
            &format!("{p}_hport"),
            k,
            Some("inet_service"),
            false,
        ));
    }
    c.push(set(f, "masq", json!(addr), None, false));
    c.push(set(f, "own", json!([addr, addr]), None, true));
    c.push(set(f, "hairpin", json!([addr, addr]), None, true));
    c.extend(chain(f, "prerouting", "nat", "prerouting", -100));
    c.extend(chain(f, "output", "nat", "output", -100));
    c.extend(chain(f, "postrouting", "nat", "postrouting", 100));
    let saddr = json!({ "payload": { "protocol": l3, "field": "saddr" } });
    let daddr = json!({ "payload": { "protocol": l3, "field": "daddr" } });
    for ch in ["prerouting", "output"] {
        for p in ["tcp", "udp"] {
            let l4 = json!({ "match": { "op": "==", "left": { "meta": { "key": "l4proto" } }, "right": p } });
            let dport = json!({ "payload": { "protocol": p, "field": "dport" } });
            let hk = json!({ "concat": [daddr, dport] });
            c.push(rule(
                f,
                ch,
                json!([l4, { "dnat": {
                "family": f,
                "addr": { "map": { "key": hk, "data": format!("@{p}_haddr") } },
                "port": { "map": { "key": hk, "data": format!("@{p}_hport") } }
            } }]),
            ));
            c.push(rule(f, ch, json!([
                l4,
                { "match": { "op": "==", "left": { "fib": { "result": "type", "flags": ["daddr"] } }, "right": "local" } },
                { "dnat": {
                    "family": f,
                    "addr": { "map": { "key": dport, "data": format!("@{p}_addr") } },
                    "port": { "map": { "key": dport, "data": format!("@{p}_port") } }
                } }
            ])));
        }
    }
    let pair = json!({ "concat": [saddr, daddr] });
    let dnatted =
        json!({ "match": { "op": "in", "left": { "ct": { "key": "status" } }, "right": "dnat" } });
    c.push(rule(f, "postrouting", json!([
        { "match": { "op": "==", "left": saddr, "right": "@masq" } },
        { "match": { "op": "!=", "left": pair, "right": "@own" } },
        { "match": { "op": "!=", "left": daddr, "right": { "prefix": { "addr": mcast, "len": mcast_len } } } },
        { "masquerade": null }
    ])));
    // A container reaching a mapped port (its own or a neighbour's) through a host
    // address: without masquerade the answer would go straight over the bridge.
    c.push(rule(
        f,
        "postrouting",
        json!([
            dnatted,
            { "match": { "op": "==", "left": pair, "right": "@hairpin" } },
            { "masquerade": null }
        ]),
    ));
    // Mappings used through 127.0.0.1 (no IPv6 counterpart: ::1 is never routed).
    if f == "ip" {
        c.push(rule(f, "postrouting", json!([
            dnatted,
            { "match": { "op": "==", "left": saddr, "right": { "prefix": { "addr": "127.0.0.0", "len": 8 } } } },
            { "masquerade": null }
        ])));
    }
    c
}

/// The anti-spoofing table if missing, its rules reset: cella net's rule set (in nft's
/// own syntax, see [`cella_net::nft::bridge_base_text`]).
pub fn bridge_base_text() -> String {
    cella_net::nft::bridge_base_text(TABLE)
}

/// Lists table `family cella_cni`; `None` when it does not exist.
pub fn list(family: &str) -> Result<Option<Vec<Value>>, NftError> {
    let op = format!("list table {family} {TABLE}");
    let out = Command::new("nft")
        .args(["-j", "list", "table", family, TABLE])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NftError::Spawn {
            op: op.clone(),
            source,
        })?;
    if !out.status.success() {
        let e = NftError::Rejected {
            op,
            stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
        };
        return if e.is_not_found() { Ok(None) } else { Err(e) };
    }
    let v: Value =
        serde_json::from_slice(&out.stdout).map_err(|source| NftError::Output { op, source })?;
    Ok(v.get("nftables").and_then(Value::as_array).cloned())
}

/// The elements of one set or map: (key, owner comment).
type Elems = Vec<(Value, Option<String>)>;

/// Per set or map of a listing: (kind, name, elements).
fn sets(listing: &[Value]) -> Vec<(&'static str, String, Elems)> {
    let mut out = Vec::new();
    for o in listing {
        let (kind, s) = match (o.get("set"), o.get("map")) {
            (Some(s), _) => ("set", s),
            (_, Some(m)) => ("map", m),
            _ => continue,
        };
        let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
        let mut elems = Vec::new();
        for e in s
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // A map element is [key, data]; a key with a comment is {"elem": {...}}.
            let key = if kind == "map" {
                e.get(0).cloned().unwrap_or(Value::Null)
            } else {
                e.clone()
            };
            let (val, comment) = match key.get("elem") {
                Some(inner) => (
                    inner.get("val").cloned().unwrap_or(Value::Null),
                    inner
                        .get("comment")
                        .and_then(Value::as_str)
                        .map(String::from),
                ),
                None => (key, None),
            };
            elems.push((val, comment));
        }
        out.push((kind, name.to_string(), elems));
    }
    out
}

/// The number of elements owned by `tag` in both tables.
pub fn count_tagged(tag: &str) -> Result<usize, NftError> {
    let mut n = 0;
    for family in ["ip", "ip6", "bridge"] {
        if let Some(l) = list(family)? {
            n += sets(&l)
                .iter()
                .flat_map(|(_, _, e)| e.iter())
                .filter(|(_, c)| c.as_deref() == Some(tag))
                .count();
        }
    }
    Ok(n)
}

/// Deletes every element owned by `tag`, and a table left with no element at all, in
/// one transaction. Nothing to delete is no error.
pub fn delete_tagged(tag: &str) -> Result<(), NftError> {
    let mut cmds = Vec::new();
    for family in ["ip", "ip6", "bridge"] {
        let Some(l) = list(family)? else {
            continue;
        };
        let mut others = 0;
        let mut mine = Vec::new();
        for (_, name, elems) in sets(&l) {
            for (val, comment) in elems {
                if comment.as_deref() == Some(tag) {
                    mine.push(elem("delete", family, &name, val));
                } else {
                    others += 1;
                }
            }
        }
        if others == 0 {
            cmds.push(json!({ "delete": { "table": { "family": family, "name": TABLE } } }));
        } else {
            cmds.extend(mine);
        }
    }
    if cmds.is_empty() {
        return Ok(());
    }
    cella_net::nft::apply(cmds, &format!("delete the elements of {tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_map_and_set_elements_with_comments() {
        let l = vec![
            json!({"map": {"name": "tcp_addr", "elem": [[{"elem": {"val": 8080, "comment": "a/eth0"}}, "10.1.0.2"]]}}),
            json!({"set": {"name": "masq", "elem": [{"elem": {"val": "10.1.0.2", "comment": "a/eth0"}}, "10.1.0.3"]}}),
        ];
        let s = sets(&l);
        assert_eq!(s[0].2, vec![(json!(8080), Some("a/eth0".into()))]);
        assert_eq!(s[1].2[1], (json!("10.1.0.3"), None));
    }

    #[test]
    fn long_tags_fit() {
        let id = "x".repeat(200);
        assert!(tag(&id, "eth0").len() <= 127);
        assert_ne!(tag(&id, "eth0"), tag(&id, "eth1"));
    }
}
