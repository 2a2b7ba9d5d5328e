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
use std::net::Ipv4Addr;
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
    let batch = json!({ "nftables": commands }).to_string();
    let spawn_err = |source| NftError::Spawn {
        op: op.into(),
        source,
    };
    let mut child = Command::new("nft")
        .args(["-j", "-f", "-"])
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

fn dnat_rule(chain: &str, p: Proto) -> Value {
    let key = json!({ "payload": { "protocol": p.name(), "field": "dport" } });
    rule(
        "ip",
        chain,
        json!([
            { "match": { "op": "==", "left": { "meta": { "key": "l4proto" } }, "right": p.name() } },
            { "match": { "op": "==", "left": { "fib": { "result": "type", "flags": ["daddr"] } }, "right": "local" } },
            { "dnat": {
                "family": "ip",
                "addr": { "map": { "key": key, "data": format!("@{}_addr", p.name()) } },
                "port": { "map": { "key": key, "data": format!("@{}_port", p.name()) } }
            } }
        ]),
    )
}

/// Commands that create cella's NAT table, sets, maps, chains and rules if missing and
/// reset the rules to the ones this version writes. Idempotent; elements are kept.
pub fn nat_base() -> Vec<Value> {
    let f = "ip";
    let mut c = vec![json!({ "add": { "table": { "family": f, "name": TABLE } } })];
    for p in ["tcp", "udp"] {
        c.push(obj(
            "map",
            f,
            json!({ "name": format!("{p}_addr"), "type": "inet_service", "map": "ipv4_addr" }),
        ));
        c.push(obj(
            "map",
            f,
            json!({ "name": format!("{p}_port"), "type": "inet_service", "map": "inet_service" }),
        ));
    }
    c.push(obj(
        "set",
        f,
        json!({ "name": "masq", "type": "ipv4_addr" }),
    ));
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
        c.push(dnat_rule(chain, Proto::Tcp));
        c.push(dnat_rule(chain, Proto::Udp));
    }
    let saddr = json!({ "payload": { "protocol": "ip", "field": "saddr" } });
    c.push(rule(
        f,
        "postrouting",
        json!([
            { "match": { "op": "==", "left": saddr, "right": "@masq" } },
            { "match": { "op": "!=", "left": { "payload": { "protocol": "ip", "field": "daddr" } }, "right": "@masq" } },
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
    c.push(rule(
        f,
        "postrouting",
        json!([
            { "match": { "op": "==", "left": saddr, "right": { "prefix": { "addr": "127.0.0.0", "len": 8 } } } },
            { "match": { "op": "in", "left": { "ct": { "key": "status" } }, "right": "dnat" } },
            { "masquerade": null }
        ]),
    ));
    c
}

/// The prerouting rules of a bridge-family anti-spoofing table named `table`: a frame
/// from a port in `@ports` is dropped unless its source MAC is the one in `@macs` for
/// that port and, for IPv4 and ARP, its source address the one in `@ips`. Shared by
/// `cella net` and cella-cni, so the rule set is written once.
pub fn anti_spoof_rules(table: &str) -> Vec<Value> {
    let iif = json!({ "meta": { "key": "iifname" } });
    let from_port = json!({ "match": { "op": "==", "left": iif, "right": "@ports" } });
    let pairs = [
        (
            json!({ "protocol": "ether", "field": "saddr" }),
            "@macs",
            None,
        ),
        (
            json!({ "protocol": "ip", "field": "saddr" }),
            "@ips",
            Some("ip"),
        ),
        (
            json!({ "protocol": "arp", "field": "saddr ip" }),
            "@ips",
            Some("arp"),
        ),
        (
            json!({ "protocol": "arp", "field": "saddr ether" }),
            "@macs",
            Some("arp"),
        ),
    ];
    pairs
        .into_iter()
        .map(|(field, set, ethertype)| {
            let mut expr = vec![from_port.clone()];
            if let Some(et) = ethertype {
                expr.push(json!({ "match": { "op": "==", "left": { "payload": { "protocol": "ether", "field": "type" } }, "right": et } }));
            }
            expr.push(json!({ "match": { "op": "!=", "left": { "concat": [iif, { "payload": field }] }, "right": set } }));
            expr.push(json!({ "drop": null }));
            json!({ "add": { "rule": { "family": "bridge", "table": table, "chain": "prerouting", "expr": expr } } })
        })
        .collect()
}

/// Commands that create cella's bridge-family anti-spoofing table if missing and reset its
/// rules. Idempotent; elements are kept.
pub fn bridge_base() -> Vec<Value> {
    let f = "bridge";
    let mut c = vec![json!({ "add": { "table": { "family": f, "name": TABLE } } })];
    c.push(obj("set", f, json!({ "name": "ports", "type": "ifname" })));
    c.push(obj(
        "set",
        f,
        json!({ "name": "macs", "type": ["ifname", "ether_addr"] }),
    ));
    c.push(obj(
        "set",
        f,
        json!({ "name": "ips", "type": ["ifname", "ipv4_addr"] }),
    ));
    c.push(obj("chain", f, json!({ "name": "prerouting", "type": "filter", "hook": "prerouting", "prio": -300, "policy": "accept" })));
    c.push(json!({ "flush": { "chain": { "family": f, "table": TABLE, "name": "prerouting" } } }));
    c.extend(anti_spoof_rules(TABLE));
    c
}

/// Commands deleting both cella tables, whether they exist or not (each is added, then
/// deleted, in the same transaction).
pub fn drop_tables() -> Vec<Value> {
    let mut c = Vec::new();
    for f in ["ip", "bridge"] {
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
    /// The container's address.
    pub ip: Ipv4Addr,
    /// Host port -> container port forwards.
    pub forwards: Vec<(Proto, u16, u16)>,
    /// Masquerade the container's traffic.
    pub masquerade: bool,
    /// Anti-spoofing: the bridge port (host end of the veth) and the container's MAC.
    pub anti_spoof: Option<(String, String)>,
}

impl ContainerRules {
    /// Commands adding this container's elements. `create` fails the whole batch when a
    /// host port is already forwarded.
    pub fn add(&self) -> Vec<Value> {
        let ip = self.ip.to_string();
        let mut c = Vec::new();
        for (p, host, cport) in &self.forwards {
            c.push(element(
                "create",
                "ip",
                &format!("{}_addr", p.name()),
                json!([host, ip]),
            ));
            c.push(element(
                "create",
                "ip",
                &format!("{}_port", p.name()),
                json!([host, cport]),
            ));
        }
        if self.masquerade {
            c.push(element("add", "ip", "masq", json!(ip)));
        }
        if let Some((port, mac)) = &self.anti_spoof {
            c.push(element("add", "bridge", "ports", json!(port)));
            c.push(element(
                "add",
                "bridge",
                "macs",
                json!({ "concat": [port, mac] }),
            ));
            c.push(element(
                "add",
                "bridge",
                "ips",
                json!({ "concat": [port, ip] }),
            ));
        }
        c
    }

    /// Commands deleting this container's elements. When `present` is given (listings of
    /// the ip and bridge tables), only elements found there, and for forwards only those
    /// still pointing at this container, are deleted; otherwise all are assumed present.
    pub fn delete(&self, present: Option<(&[Value], &[Value])>) -> Vec<Value> {
        let ip = self.ip.to_string();
        let has = |listing: &[Value], set: &str, want: &Value| -> bool {
            elements(listing, set).iter().any(|e| elem_matches(e, want))
        };
        let mut c = Vec::new();
        for (p, host, cport) in &self.forwards {
            let addr_set = format!("{}_addr", p.name());
            let port_set = format!("{}_port", p.name());
            let keep = match present {
                Some((nat, _)) => has(nat, &addr_set, &json!([host, ip])),
                None => true,
            };
            if keep {
                c.push(element("delete", "ip", &addr_set, json!(host)));
                if present.is_none_or(|(nat, _)| has(nat, &port_set, &json!([host, cport]))) {
                    c.push(element("delete", "ip", &port_set, json!(host)));
                }
            }
        }
        if self.masquerade && present.is_none_or(|(nat, _)| has(nat, "masq", &json!(ip))) {
            c.push(element("delete", "ip", "masq", json!(ip)));
        }
        if let Some((port, mac)) = &self.anti_spoof {
            let wanted = [
                ("ports", json!(port)),
                ("macs", json!({ "concat": [port, mac] })),
                ("ips", json!({ "concat": [port, ip] })),
            ];
            for (set, e) in wanted {
                if present.is_none_or(|(_, br)| has(br, set, &e)) {
                    c.push(element("delete", "bridge", set, e));
                }
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
            ip: "10.88.0.2".parse().unwrap(),
            forwards: vec![(Proto::Tcp, 8080, 80)],
            masquerade: true,
            anti_spoof: Some(("cv0".into(), "02:ce:0a:58:00:02".into())),
        }
    }

    #[test]
    fn delete_only_what_is_there_and_ours() {
        let nat = vec![json!({"map": {"name": "tcp_addr", "elem": [[8080, "10.88.0.9"]]}})];
        let br = vec![json!({"set": {"name": "ports", "elem": ["cv0"]}})];
        let cmds = rules().delete(Some((&nat, &br)));
        // The forward now points at another container: left alone. Only the port is ours.
        assert_eq!(cmds.len(), 1, "{cmds:?}");
        assert_eq!(cmds[0]["delete"]["element"]["name"], "ports");
        assert_eq!(rules().delete(None).len(), 6);
    }

    #[test]
    fn add_uses_create_for_forwards() {
        let cmds = rules().add();
        assert!(cmds[0].get("create").is_some());
        assert_eq!(cmds.len(), 6);
    }
}
