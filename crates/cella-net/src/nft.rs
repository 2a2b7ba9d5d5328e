//! nftables through `nft -j -f -`: every change is one JSON batch, which nft applies as one
//! transaction (all of it or nothing).
//!
//! cella owns two tables and changes nothing else:
//!
//! - `ip cella`: NAT. Port forwards are elements of the maps `tcp_addr`/`tcp_port` and
//!   `udp_addr`/`udp_port` (host port -> container address, host port -> container port),
//!   used by DNAT rules in `prerouting` (traffic arriving at the host) and `output`
//!   (traffic from the host itself). Container addresses in the set `masq` are
//!   masqueraded when they leave, and when they reach a forwarded port through the host's
//!   address (hairpin); so is loopback-sourced traffic that was DNATed to a container (a
//!   forward used through 127.0.0.1).
//! - `bridge cella`: L2 anti-spoofing. A frame entering the bridge from a port in `ports`
//!   is dropped unless its source MAC (and for IPv4 and ARP its source address) is the
//!   pair recorded for that port in `macs` / `ips`.
//!
//! The rules never change per container: containers only add and remove set and map
//! elements, so adding or removing one never rewrites a rule.

use serde_json::{Value, json};
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Child, Command, Stdio};

/// The table name cella owns in the `ip` and `bridge` families.
pub const TABLE: &str = "cella";

/// A failed nft run.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// nft could not be started.
    #[error("nftables: run `nft` to {op}")]
    Spawn {
        /// What the batch was for.
        op: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// nft rejected the batch; nothing of it was applied.
    #[error("nftables: {op}: {stderr}")]
    Rejected {
        /// What the batch was for.
        op: String,
        /// nft's own message.
        stderr: String,
    },
    /// nft printed something that is not the JSON asked for.
    #[error("nftables: {op}: unreadable output")]
    Output {
        /// What was listed.
        op: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl NftError {
    /// True when nft said an object did not exist (ENOENT).
    pub fn is_not_found(&self) -> bool {
        matches!(self, NftError::Rejected { stderr, .. } if stderr.contains("No such file or directory"))
    }

    /// True when nft said an object existed already (EEXIST).
    pub fn is_exists(&self) -> bool {
        matches!(self, NftError::Rejected { stderr, .. } if stderr.contains("File exists"))
    }
}

/// Transport protocol of a port forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Applies `commands` (nft JSON commands such as `{"add": {...}}`) as one transaction.
pub fn apply(commands: Vec<Value>, op: &str) -> Result<(), NftError> {
    spawn(commands, op)?.wait()
}

/// Starts applying `commands` as one transaction in an nft process and returns at once,
/// so the caller can do netlink work (which waits on the kernel too) meanwhile.
pub fn spawn(commands: Vec<Value>, op: &str) -> Result<Pending, NftError> {
    spawn_batch(json!({ "nftables": commands }).to_string(), true, op)
}

/// Applies a batch in nft's own syntax (one transaction). For what nft 1.0's JSON
/// cannot say: a set keyed by a raw payload (`typeof ... @th,64,128`).
pub fn apply_text(text: String, op: &str) -> Result<(), NftError> {
    spawn_batch(text, false, op)?.wait()
}

fn spawn_batch(batch: String, json: bool, op: &str) -> Result<Pending, NftError> {
    let spawn_err = |source| NftError::Spawn {
        op: op.into(),
        source,
    };
    let args: &[&str] = if json {
        &["-j", "-f", "-"]
    } else {
        &["-f", "-"]
    };
    let mut cmd = Command::new("nft");
    crate::sys::kill_with_parent(&mut cmd);
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    // nft reads all of its input before it answers, so this never waits on nft's output.
    let write = child
        .stdin
        .take()
        .map(|mut s| s.write_all(batch.as_bytes()));
    Ok(Pending {
        child: Some(child),
        op: op.into(),
        write: write.and_then(Result::err),
    })
}

/// An nft transaction still running; [`Pending::wait`] gives its outcome. Dropping it
/// waits for the process too, so no nft outlives the operation that started it.
#[must_use = "the outcome of the transaction is only known after wait()"]
#[derive(Debug)]
pub struct Pending {
    child: Option<Child>,
    op: String,
    write: Option<io::Error>,
}

impl Pending {
    /// Waits for nft and reports whether the transaction was applied.
    pub fn wait(mut self) -> Result<(), NftError> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let op = std::mem::take(&mut self.op);
        let out = child.wait_with_output().map_err(|source| NftError::Spawn {
            op: op.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(NftError::Rejected {
                op,
                stderr: String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', " "),
            });
        }
        if let Some(source) = self.write.take() {
            return Err(NftError::Spawn { op, source });
        }
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

/// Lists table `family cella` as nft's JSON objects; `None` when the table does not exist.
pub fn list_table(family: &str) -> Result<Option<Vec<Value>>, NftError> {
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

/// The elements of set or map `name` in a listing from [`list_table`].
pub fn elements<'a>(listing: &'a [Value], name: &str) -> &'a [Value] {
    listing
        .iter()
        .find_map(|o| {
            let s = o.get("set").or_else(|| o.get("map"))?;
            (s.get("name")? == name).then(|| s.get("elem").and_then(Value::as_array))?
        })
        .map_or(&[], Vec::as_slice)
}

fn t(family: &str) -> Value {
    json!({ "family": family, "table": TABLE })
}

fn obj(kind: &str, family: &str, extra: Value) -> Value {
    let mut o = t(family);
    if let (Some(o), Some(e)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    json!({ "add": { kind: o } })
}

fn rule(family: &str, chain: &str, expr: Value) -> Value {
    json!({ "add": { "rule": { "family": family, "table": TABLE, "chain": chain, "expr": expr } } })
}

fn dnat_rule(family: &str, chain: &str, p: Proto) -> Value {
    let key = json!({ "payload": { "protocol": p.name(), "field": "dport" } });
    rule(
        family,
        chain,
        json!([
            { "match": { "op": "==", "left": { "meta": { "key": "l4proto" } }, "right": p.name() } },
            { "match": { "op": "==", "left": { "fib": { "result": "type", "flags": ["daddr"] } }, "right": "local" } },
            { "dnat": {
                "family": family,
                "addr": { "map": { "key": key, "data": format!("@{}_addr", p.name()) } },
                "port": { "map": { "key": key, "data": format!("@{}_port", p.name()) } }
            } }
        ]),
    )
}

/// Commands that create the NAT tables a container with these address families needs
/// (`ip cella`, `ip6 cella`), their sets, maps, chains and rules if missing and reset the
/// rules to the ones this version writes. Idempotent; elements are kept.
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
    let (addr_type, l3) = if f == "ip6" {
        ("ipv6_addr", "ip6")
    } else {
        ("ipv4_addr", "ip")
    };
    let mut c = vec![json!({ "add": { "table": { "family": f, "name": TABLE } } })];
    for p in ["tcp", "udp"] {
        c.push(obj(
            "map",
            f,
            json!({ "name": format!("{p}_addr"), "type": "inet_service", "map": addr_type }),
        ));
        c.push(obj(
            "map",
            f,
            json!({ "name": format!("{p}_port"), "type": "inet_service", "map": "inet_service" }),
        ));
    }
    c.push(obj("set", f, json!({ "name": "masq", "type": addr_type })));
    for (name, hook, prio) in [
        ("prerouting", "prerouting", -100),
        ("output", "output", -100),
        ("postrouting", "postrouting", 100),
    ] {
        c.push(obj(
            "chain",
            f,
            json!({ "name": name, "type": "nat", "hook": hook, "prio": prio, "policy": "accept" }),
        ));
        c.push(json!({ "flush": { "chain": { "family": f, "table": TABLE, "name": name } } }));
    }
    for chain in ["prerouting", "output"] {
        c.push(dnat_rule(f, chain, Proto::Tcp));
        c.push(dnat_rule(f, chain, Proto::Udp));
    }
    let saddr = json!({ "payload": { "protocol": l3, "field": "saddr" } });
    c.push(rule(
        f,
        "postrouting",
        json!([
            { "match": { "op": "==", "left": saddr, "right": "@masq" } },
            { "match": { "op": "!=", "left": { "payload": { "protocol": l3, "field": "daddr" } }, "right": "@masq" } },
            { "masquerade": null }
        ]),
    ));
    // Hairpin: a container reaching a forwarded port (its own or a neighbour's on the same
    // bridge) through the host's address. Without this the answer would go straight back
    // over the bridge, from an address the client never talked to.
    c.push(rule(
        f,
        "postrouting",
        json!([
            { "match": { "op": "==", "left": saddr, "right": "@masq" } },
            { "match": { "op": "in", "left": { "ct": { "key": "status" } }, "right": "dnat" } },
            { "masquerade": null }
        ]),
    ));
    // Forwards used through 127.0.0.1 (IPv4 only: the kernel never routes ::1 off the
    // host, so there is no IPv6 counterpart of route_localnet).
    if f == "ip" {
        c.push(rule(
            f,
            "postrouting",
            json!([
                { "match": { "op": "==", "left": saddr, "right": { "prefix": { "addr": "127.0.0.0", "len": 8 } } } },
                { "match": { "op": "in", "left": { "ct": { "key": "status" } }, "right": "dnat" } },
                { "masquerade": null }
            ]),
        ));
    }
    c
}

/// The bridge-family anti-spoofing table `table`, in nft's own syntax: created if missing,
/// its rules reset; elements are kept. A frame from a port in `ports` is dropped unless:
///
/// - its source MAC is the port's (`macs`); for IPv4 and ARP, its sender address is the
///   port's (`ips`);
/// - for IPv6, its source address is one of the port's (`ips6`: its address and its
///   link-local address), or `::` for duplicate address detection and MLD reports only;
/// - a neighbour advertisement names as target one of the port's addresses (`nd6`: the
///   same addresses, keyed by the raw target field, which nft 1.0 has no name for);
/// - it is not a router advertisement or a redirect (a container is no router).
///
/// Shared by `cella net` and cella-cni, so the rule set is written once.
pub fn bridge_base_text(table: &str) -> String {
    let t = format!("bridge {table}");
    let r = format!("add rule {t} prerouting iifname @ports");
    format!(
        "add table {t}
add set {t} ports {{ type ifname; }}
add set {t} macs {{ type ifname . ether_addr; }}
add set {t} ips {{ type ifname . ipv4_addr; }}
add set {t} ips6 {{ type ifname . ipv6_addr; }}
add set {t} nd6 {{ typeof iifname . @th,64,128; }}
add chain {t} prerouting {{ type filter hook prerouting priority -300; policy accept; }}
flush chain {t} prerouting
{r} iifname . ether saddr != @macs drop
{r} ether type ip iifname . ip saddr != @ips drop
{r} ether type arp iifname . arp saddr ip != @ips drop
{r} ether type arp iifname . arp saddr ether != @macs drop
{r} ether type ip6 ip6 saddr :: meta l4proto != ipv6-icmp drop
{r} ether type ip6 ip6 saddr :: icmpv6 type != {{ nd-neighbor-solicit, mld-listener-report, mld2-listener-report }} drop
{r} ether type ip6 ip6 saddr != :: iifname . ip6 saddr != @ips6 drop
{r} icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @nd6 drop
{r} icmpv6 type {{ nd-router-advert, nd-redirect }} drop
"
    )
}

/// The key of an `nd6` element for `ip`: the 128-bit target field as nft reads it.
pub fn nd6_key(ip: Ipv6Addr) -> String {
    format!("0x{:032x}", u128::from(ip))
}

/// The IPv6 link-local address the kernel gives a link with MAC `mac` (modified EUI-64),
/// which a container's IPv6 traffic on its bridge starts from (neighbour discovery, MLD).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 0x02, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}

/// Commands deleting cella's tables, whether they exist or not (each is added, then
/// deleted, in the same transaction).
pub fn drop_tables() -> Vec<Value> {
    let mut c = Vec::new();
    for f in ["ip", "ip6", "bridge"] {
        c.push(json!({ "add": { "table": { "family": f, "name": TABLE } } }));
        c.push(json!({ "delete": { "table": { "family": f, "name": TABLE } } }));
    }
    c
}

fn element(verb: &str, family: &str, set: &str, elem: Value) -> Value {
    json!({ verb: { "element": { "family": family, "table": TABLE, "name": set, "elem": [elem] } } })
}

/// One container's share of the tables: its port forwards, masquerade and anti-spoofing
/// entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRules {
    /// The container's IPv4 address, if it has one.
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address, if it has one.
    pub ip6: Option<Ipv6Addr>,
    /// Host port -> container port forwards (for each of its addresses).
    pub forwards: Vec<(Proto, u16, u16)>,
    /// Masquerade the container's traffic.
    pub masquerade: bool,
    /// Anti-spoofing: the bridge port (host end of the veth) and the container's MAC.
    pub anti_spoof: Option<(String, String)>,
}

/// Listings of cella's tables (see [`list_table`]), for [`ContainerRules::delete`].
#[derive(Clone, Copy, Debug)]
pub struct Listings<'a> {
    /// `ip cella`.
    pub ip: &'a [Value],
    /// `ip6 cella`.
    pub ip6: &'a [Value],
    /// `bridge cella`.
    pub bridge: &'a [Value],
}

impl ContainerRules {
    /// (nat family, address) for each of the container's addresses.
    fn families(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(ip) = self.ip {
            v.push(("ip", ip.to_string()));
        }
        if let Some(ip6) = self.ip6 {
            v.push(("ip6", ip6.to_string()));
        }
        v
    }

    /// (set, element) pairs of the bridge table.
    fn bridge_elements(&self) -> Vec<(&'static str, Value)> {
        let Some((port, mac)) = &self.anti_spoof else {
            return Vec::new();
        };
        let mut v = vec![
            ("ports", json!(port)),
            ("macs", json!({ "concat": [port, mac] })),
        ];
        if let Some(ip) = self.ip {
            v.push(("ips", json!({ "concat": [port, ip.to_string()] })));
        }
        let mut v6: Vec<Ipv6Addr> = crate::netlink::parse_mac(mac)
            .map(link_local)
            .into_iter()
            .collect();
        v6.extend(self.ip6);
        for a in v6 {
            v.push(("ips6", json!({ "concat": [port, a.to_string()] })));
            v.push(("nd6", json!({ "concat": [port, nd6_key(a)] })));
        }
        v
    }

    /// Commands adding this container's elements. `create` fails the whole batch when a
    /// host port is already forwarded.
    pub fn add(&self) -> Vec<Value> {
        let mut c = Vec::new();
        for (f, ip) in self.families() {
            for (p, host, cport) in &self.forwards {
                c.push(element(
                    "create",
                    f,
                    &format!("{}_addr", p.name()),
                    json!([host, ip]),
                ));
                c.push(element(
                    "create",
                    f,
                    &format!("{}_port", p.name()),
                    json!([host, cport]),
                ));
            }
            if self.masquerade {
                c.push(element("add", f, "masq", json!(ip)));
            }
        }
        for (set, e) in self.bridge_elements() {
            c.push(element("add", "bridge", set, e));
        }
        c
    }

    /// Commands deleting this container's elements. When `present` is given, only
    /// elements found there, and for forwards only those still pointing at this
    /// container, are deleted; otherwise all are assumed present.
    pub fn delete(&self, present: Option<Listings<'_>>) -> Vec<Value> {
        let has = |listing: &[Value], set: &str, want: &Value| -> bool {
            elements(listing, set).iter().any(|e| elem_matches(e, want))
        };
        let mut c = Vec::new();
        for (f, ip) in self.families() {
            let nat = present.map(|l| if f == "ip6" { l.ip6 } else { l.ip });
            for (p, host, cport) in &self.forwards {
                let addr_set = format!("{}_addr", p.name());
                let port_set = format!("{}_port", p.name());
                if nat.is_none_or(|nat| has(nat, &addr_set, &json!([host, ip]))) {
                    c.push(element("delete", f, &addr_set, json!(host)));
                    if nat.is_none_or(|nat| has(nat, &port_set, &json!([host, cport]))) {
                        c.push(element("delete", f, &port_set, json!(host)));
                    }
                }
            }
            if self.masquerade && nat.is_none_or(|nat| has(nat, "masq", &json!(ip))) {
                c.push(element("delete", f, "masq", json!(ip)));
            }
        }
        for (set, e) in self.bridge_elements() {
            if present.is_none_or(|l| has(l.bridge, set, &e)) {
                c.push(element("delete", "bridge", set, e));
            }
        }
        c
    }
}

/// Compares an element as listed by nft with one as cella writes it (nft may list a
/// single element wrapped in `{"elem": {"val": ...}}`).
fn elem_matches(listed: &Value, want: &Value) -> bool {
    let listed = listed
        .get("elem")
        .and_then(|e| e.get("val"))
        .unwrap_or(listed);
    listed == want
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> ContainerRules {
        ContainerRules {
            ip: Some("10.88.0.2".parse().unwrap()),
            ip6: None,
            forwards: vec![(Proto::Tcp, 8080, 80)],
            masquerade: true,
            anti_spoof: Some(("cv0".into(), "02:ce:0a:58:00:02".into())),
        }
    }

    #[test]
    fn delete_only_what_is_there_and_ours() {
        let nat = vec![json!({"map": {"name": "tcp_addr", "elem": [[8080, "10.88.0.9"]]}})];
        let br = vec![json!({"set": {"name": "ports", "elem": ["cv0"]}})];
        let cmds = rules().delete(Some(Listings {
            ip: &nat,
            ip6: &[],
            bridge: &br,
        }));
        // The forward now points at another container: left alone. Only the port is ours.
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        assert_eq!(cmds[0]["delete"]["element"]["name"], "ports");
        // ports, macs, ips, and the link-local address in ips6 and nd6.
        assert_eq!(rules().delete(None).len(), 8);
    }

    #[test]
    fn dual_stack_elements_and_link_local() {
        let mut r = rules();
        r.ip6 = Some("fd00:88::2".parse().unwrap());
        let cmds = r.add();
        let fams: Vec<_> = cmds
            .iter()
            .filter_map(|c| c.get("create").or_else(|| c.get("add")))
            .map(|e| e["element"]["family"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(fams.iter().filter(|f| *f == "ip6").count(), 3, "{cmds:?}");
        assert_eq!(
            link_local([0x02, 0xce, 0x0a, 0x58, 0x00, 0x02]).to_string(),
            "fe80::ce:aff:fe58:2"
        );
        assert_eq!(
            nd6_key("fd00::2".parse().unwrap()),
            "0xfd000000000000000000000000000002"
        );
    }

    #[test]
    fn add_uses_create_for_forwards() {
        let cmds = rules().add();
        assert!(cmds[0].get("create").is_some());
        assert_eq!(cmds.len(), 8);
    }
}
