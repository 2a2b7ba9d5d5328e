//! The CNI protocol's data: network configuration, results, error codes (CNI spec 1.0.0).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fmt;

/// The versions this plugin speaks; results are written in the configuration's version.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The newest version, reported by VERSION.
pub const LATEST: &str = "1.0.0";

/// The error codes of the CNI spec, and this plugin's own (100 and up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// 1: the configuration's cniVersion is not supported.
    IncompatibleVersion,
    /// 2: a field of the configuration is not supported.
    UnsupportedField,
    /// 3: the container is unknown or does not exist.
    UnknownContainer,
    /// 4: an environment variable (CNI_COMMAND, CNI_CONTAINERID...) is missing or invalid.
    InvalidEnv,
    /// 5: an I/O failure (reading stdin...).
    Io,
    /// 6: the configuration is not valid JSON of the expected shape.
    Decode,
    /// 7: the configuration fails a check.
    InvalidConfig,
    /// 11: try again later.
    TryAgain,
    /// 100: a netlink request failed.
    Netlink,
    /// 101: an nftables transaction failed.
    Nftables,
    /// 102: no free address is left in the range.
    AddressesExhausted,
    /// 103: a host port is already mapped to another container.
    PortTaken,
    /// 104: the delegated IPAM plugin failed or could not be run.
    Ipam,
    /// 105: CHECK found the container's network not as ADD left it.
    CheckFailed,
    /// 106: the lease store failed.
    Store,
    /// 999: anything else.
    Internal,
}

impl Code {
    /// The number sent in the error JSON.
    pub fn number(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnv => 4,
            Code::Io => 5,
            Code::Decode => 6,
            Code::InvalidConfig => 7,
            Code::TryAgain => 11,
            Code::Netlink => 100,
            Code::Nftables => 101,
            Code::AddressesExhausted => 102,
            Code::PortTaken => 103,
            Code::Ipam => 104,
            Code::CheckFailed => 105,
            Code::Store => 106,
            Code::Internal => 999,
        }
    }
}

/// An error as the CNI spec shapes it: a code, a message, and details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    /// The spec's (or this plugin's) code.
    pub code: u32,
    /// One line saying what failed.
    pub msg: String,
    /// More: the cause chain.
    pub details: String,
}

impl CniError {
    /// An error with a code and a message.
    pub fn new(code: Code, msg: impl Into<String>) -> CniError {
        CniError {
            code: code.number(),
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// An error whose message is `what` and whose details are `err` and its sources.
    pub fn with_source(
        code: Code,
        what: impl Into<String>,
        err: &dyn std::error::Error,
    ) -> CniError {
        let mut details = err.to_string();
        let mut s = err.source();
        while let Some(c) = s {
            details += &format!(": {c}");
            s = c.source();
        }
        CniError {
            code: code.number(),
            msg: what.into(),
            details,
        }
    }

    /// The error JSON of the spec.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({ "cniVersion": cni_version, "code": self.code, "msg": self.msg });
        if !self.details.is_empty() {
            v["details"] = json!(self.details);
        }
        v
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl std::error::Error for CniError {}

/// One port mapping of `runtimeConfig.portMappings` (the portmap plugin's convention).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the host.
    pub host_port: u32,
    /// Port in the container.
    pub container_port: u32,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: String,
    /// Host address the mapping is limited to; empty or 0.0.0.0 for all.
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

/// What the runtime passes for the capabilities the plugin declares.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// Port mappings (`capabilities: {"portMappings": true}`).
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

/// DNS settings, passed through to the result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// The network configuration on stdin: the reference bridge plugin's keys plus
/// `antiSpoof`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The spec version of this configuration.
    pub cni_version: String,
    /// The network's name (host-local's lease directory is named after it).
    pub name: String,
    /// The plugin type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The bridge (default `cni0`).
    #[serde(default)]
    pub bridge: Option<String>,
    /// Put the gateway address on the bridge.
    #[serde(default)]
    pub is_gateway: bool,
    /// Route the container's default traffic through the bridge (implies isGateway).
    #[serde(default)]
    pub is_default_gateway: bool,
    /// Masquerade traffic from the container leaving its subnet.
    #[serde(default)]
    pub ip_masq: bool,
    /// MTU of the veth (and of the bridge when made here).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Let the bridge send a frame back out of the port it came in by.
    #[serde(default)]
    pub hairpin_mode: bool,
    /// Accepted for compatibility; the bridge is left as it is.
    #[serde(default)]
    pub promisc_mode: bool,
    /// VLAN tag: not supported (rejected when non-zero).
    #[serde(default)]
    pub vlan: u32,
    /// cella extension: drop frames from the container whose source MAC or IPv4 address
    /// is not its own.
    #[serde(default)]
    pub anti_spoof: bool,
    /// The IPAM section, kept as given: delegated plugins get the whole configuration.
    #[serde(default)]
    pub ipam: Option<Value>,
    /// DNS settings for the result.
    #[serde(default)]
    pub dns: Option<Dns>,
    /// Capability arguments from the runtime.
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// The result of ADD, given to CHECK and DEL.
    #[serde(default)]
    pub prev_result: Option<Value>,
}

/// An interface of a result.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its hardware address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The namespace file, for interfaces inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address of a result.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct IpConfig {
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// `4` or `6`, only in results before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix, `10.22.0.2/16`.
    pub address: String,
    /// The gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A route of a result or of the IPAM configuration.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct RouteConf {
    /// Destination prefix.
    pub dst: String,
    /// Next hop; the gateway of the address of the same family when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// A result of ADD (and of IPAM plugins).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The spec version of this result.
    pub cni_version: String,
    /// Interfaces made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    /// Routes added in the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConf>,
    /// DNS settings.
    #[serde(default)]
    pub dns: Dns,
}
