//! A bundle's bridge network, asked for in config.json's annotations:
//!
//! - `org.cella.net.network`: the name of a network defined with `cella net network
//!   create` (the container needs a new network namespace);
//! - `org.cella.net.publish`: `HOSTPORT:CTRPORT[/tcp|/udp]`, comma-separated;
//! - `org.cella.net.dns`: nameserver addresses, comma-separated (default: the host's).
//!
//! The work is in [`cella_net::container`]; this module maps annotations to its request,
//! its refusals to errors naming the annotation, and calls its steps at the right points
//! of `create` (check before the state exists, plan before init is cloned, attach once
//! init's pid is known and before the createRuntime hooks) and of `delete` (detach).
//! The record lives in the container's state directory (`net.json`).

use crate::config::InitPlan;
use crate::error::{Error, Result};
use crate::state::{ContainerState, Locked};
use cella_isolate::namespaces::NsKind;
use cella_isolate::rootfs::{RootfsOptions, RootfsPlan};
use cella_net::bridge::{Paths, PortForward};
use cella_net::container::{self, ContainerRequest, Input};
use oci_spec::runtime::Spec;
use std::net::IpAddr;
use std::path::Path;

/// The annotation naming the network.
pub const NETWORK: &str = "org.cella.net.network";
/// The annotation listing port forwards.
pub const PUBLISH: &str = "org.cella.net.publish";
/// The annotation listing nameservers.
pub const DNS: &str = "org.cella.net.dns";

fn field(name: &str) -> String {
    format!("annotations[\"{name}\"]")
}

/// Reads the annotations and checks the request against the host's networks; makes
/// nothing. `None` when the bundle asks for no network.
pub(crate) fn check(spec: &Spec, id: &str, paths: &Paths) -> Result<Option<ContainerRequest>> {
    let ann = spec.annotations().as_ref();
    let get = |k: &str| ann.and_then(|a| a.get(k)).map(|v| v.trim());
    let Some(network) = get(NETWORK) else {
        for k in [PUBLISH, DNS] {
            if get(k).is_some() {
                return Err(Error::config(field(k), format!("needs `{NETWORK}` too")));
            }
        }
        return Ok(None);
    };
    let new_netns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .any(|ns| {
            serde_json::to_value(ns.typ())
                .ok()
                .as_ref()
                .and_then(|v| v.as_str())
                == Some("network")
                && ns.path().as_ref().is_none_or(|p| p.as_os_str().is_empty())
        });
    if !new_netns {
        return Err(Error::config(
            field(NETWORK),
            "needs a new network namespace: add {\"type\": \"network\"} (without a path) to linux.namespaces",
        ));
    }
    let publish = get(PUBLISH)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.split(',')
                .map(|p| p.trim().parse::<PortForward>())
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|e| Error::config(field(PUBLISH), e.to_string()))?
        .unwrap_or_default();
    let nameservers = get(DNS)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.split(',')
                .map(|a| {
                    a.trim()
                        .parse::<IpAddr>()
                        .map_err(|_| format!("{:?} is not an IP address", a.trim()))
                })
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|e| Error::config(field(DNS), e))?
        .unwrap_or_default();
    // /etc/hosts names the container as its UTS namespace does; without a host name of
    // its own, by a prefix of its id when that is a valid name.
    let hostname = spec
        .hostname()
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            let h: String = id
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(63)
                .collect();
            if h.is_empty() || h.starts_with('-') {
                "container".into()
            } else {
                h
            }
        });
    let req = ContainerRequest {
        id: id.into(),
        network: network.into(),
        publish,
        nameservers,
        hostname,
        ifname: "eth0".into(),
    };
    container::check(paths, &req).map_err(refusal)?;
    Ok(Some(req))
}

fn refusal(e: container::ContainerNetError) -> Error {
    match e.input() {
        Some(i) => {
            let k = match i {
                Input::Network => NETWORK,
                Input::Publish => PUBLISH,
                Input::Dns => DNS,
            };
            Error::config(field(k), crate::error_chain(&e))
        }
        None => Error::Network(e),
    }
}

/// Before init is cloned: leases the address, writes hosts and resolv.conf into the
/// state directory and adds their read-only bind mounts to the mount plan (unless
/// config.json mounts something there itself). Returns a note for the user, if any.
pub(crate) fn prepare(
    locked: &Locked,
    req: &ContainerRequest,
    paths: &Paths,
    spec: &Spec,
    bundle: &Path,
    no_pivot: bool,
    plan: &mut InitPlan,
) -> Result<Option<String>> {
    let planned = container::plan(paths, req, &locked.dir).map_err(refusal)?;
    let mut spec = spec.clone();
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for m in planned.mounts {
        if mounts
            .iter()
            .any(|x| x.destination().as_os_str() == m.destination.as_str())
        {
            continue;
        }
        let m = serde_json::to_value(&m)
            .and_then(serde_json::from_value)
            .map_err(|e| Error::Sys("container network mounts", e.into()))?;
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
    let user =
        plan.new_ns & libc::CLONE_NEWUSER != 0 || plan.joins.iter().any(|j| j.kind == NsKind::User);
    plan.rootfs = RootfsPlan::from_spec(
        &spec,
        bundle,
        RootfsOptions {
            no_pivot,
            in_user_namespace: user,
            new_mount_namespace: plan.new_ns & libc::CLONE_NEWNS != 0,
        },
    )?;
    Ok(planned.note)
}

/// The network steps `create` would take, for `--debug` (after the same checks).
pub(crate) fn explain(
    spec: &Spec,
    id: &str,
    paths: &Paths,
    state_root: &Path,
) -> Result<Vec<String>> {
    let Some(req) = check(spec, id, paths)? else {
        return Ok(Vec::new());
    };
    let publish: Vec<String> = req.publish.iter().map(ToString::to_string).collect();
    Ok(vec![
        format!(
            "network {:?}: record {}, lease, hosts and resolv.conf bound read-only at /etc/hosts and /etc/resolv.conf",
            req.network,
            state_root.join(id).join(container::RECORD_FILE).display()
        ),
        format!(
            "network {:?}: veth into /proc/PID/ns/net before the createRuntime hooks; forwards [{}]",
            req.network,
            publish.join(", ")
        ),
    ])
}

/// Once init exists (and waits): connects its network namespace.
pub(crate) fn attach(locked: &Locked, st: &ContainerState, pid: i32) -> Result<()> {
    if !st.annotations.contains_key(NETWORK) {
        return Ok(());
    }
    let netns = format!("/proc/{pid}/ns/net");
    container::attach(&locked.dir, Path::new(&netns)).map_err(refusal)?;
    Ok(())
}

/// On delete (and after a failed create): removes what the record names.
pub(crate) fn teardown(locked: &Locked, st: &ContainerState) -> Result<()> {
    if !st.annotations.contains_key(NETWORK) {
        return Ok(());
    }
    container::detach(&locked.dir).map_err(Error::Network)
}
