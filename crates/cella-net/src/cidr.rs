//! IP prefixes (`10.88.0.0/16`, `fd00::1/64`): parsing, containment and overlap.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address with a prefix length; the host bits may be set (`10.88.0.1/16` is the
/// address 10.88.0.1 on the network 10.88.0.0/16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length (0-32 for IPv4, 0-128 for IPv6).
    pub prefix: u8,
}

/// A string that is not an address with an optional `/prefix`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid CIDR {text:?}: {why}")]
pub struct CidrError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl IpNet {
    /// An address with a prefix length, checked against the family's width.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        (prefix <= max_prefix(addr)).then_some(IpNet { addr, prefix })
    }

    /// The single address `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> IpNet {
        IpNet {
            addr,
            prefix: max_prefix(addr),
        }
    }

    /// The network: the address with its host bits cleared.
    pub fn network(&self) -> IpNet {
        let addr = match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask32(self.prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask128(self.prefix))),
        };
        IpNet {
            addr,
            prefix: self.prefix,
        }
    }

    /// True when the host bits are all zero.
    pub fn is_network(&self) -> bool {
        self.network().addr == self.addr
    }

    /// True when `ip` lies in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = mask32(self.prefix);
                u32::from(n) & m == u32::from(a) & m
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = mask128(self.prefix);
                u128::from(n) & m == u128::from(a) & m
            }
            _ => false,
        }
    }

    /// True when the two networks share an address.
    pub fn overlaps(&self, other: &IpNet) -> bool {
        let shorter = if self.prefix <= other.prefix {
            self
        } else {
            other
        };
        let longer = if self.prefix <= other.prefix {
            other
        } else {
            self
        };
        shorter.contains(longer.addr)
    }

    /// The `n`-th address of an IPv4 network (0 is the network address), if it lies in it.
    pub fn nth_v4(&self, n: u32) -> Option<Ipv4Addr> {
        let IpAddr::V4(base) = self.network().addr else {
            return None;
        };
        let size = 1u64 << (32 - u32::from(self.prefix));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(base) + n))
    }

    /// The `n`-th address of the network, either family (0 is the network address), if it
    /// lies in it.
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        match self.network().addr {
            IpAddr::V4(_) => u32::try_from(n)
                .ok()
                .and_then(|n| self.nth_v4(n))
                .map(IpAddr::V4),
            IpAddr::V6(base) => {
                let host_bits = 128 - u32::from(self.prefix);
                if host_bits < 128 && n >> host_bits != 0 {
                    return None;
                }
                Some(IpAddr::V6(Ipv6Addr::from(u128::from(base) | n)))
            }
        }
    }

    /// The number of addresses of the network (saturating at `u128::MAX` for an IPv6 /0).
    pub fn size(&self) -> u128 {
        let bits = u32::from(max_prefix(self.addr) - self.prefix);
        1u128.checked_shl(bits).unwrap_or(u128::MAX)
    }

    /// The number of addresses of an IPv4 network.
    pub fn size_v4(&self) -> u64 {
        match self.addr {
            IpAddr::V4(_) => 1u64 << (32 - u32::from(self.prefix)),
            IpAddr::V6(_) => 0,
        }
    }
}

fn max_prefix(a: IpAddr) -> u8 {
    if a.is_ipv4() { 32 } else { 128 }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl FromStr for IpNet {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<IpNet, CidrError> {
        let err = |why| CidrError {
            text: s.to_string(),
            why,
        };
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| err("not an IP address"))?;
        let prefix = match p {
            None => max_prefix(addr),
            Some(p) => {
                let n: u8 = p
                    .parse()
                    .map_err(|_| err("prefix length is not a number"))?;
                if n > max_prefix(addr) {
                    return Err(err("prefix length too long for the address family"));
                }
                n
            }
        };
        Ok(IpNet { addr, prefix })
    }
}

impl TryFrom<String> for IpNet {
    type Error = CidrError;
    fn try_from(s: String) -> Result<IpNet, CidrError> {
        s.parse()
    }
}

impl From<IpNet> for String {
    fn from(n: IpNet) -> String {
        n.to_string()
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let n: IpNet = "10.88.0.1/16".parse().unwrap();
        assert_eq!(n.network().to_string(), "10.88.0.0/16");
        assert!(!n.is_network());
        assert!(n.contains("10.88.255.3".parse().unwrap()));
        assert!(!n.contains("10.89.0.1".parse().unwrap()));
        assert_eq!("1.2.3.4".parse::<IpNet>().unwrap().prefix, 32);
        assert!("10.0.0.0/33".parse::<IpNet>().is_err());
        assert!("10.0.0/8".parse::<IpNet>().is_err());
        assert!(
            "fd00::/64"
                .parse::<IpNet>()
                .unwrap()
                .contains("fd00::5".parse().unwrap())
        );
    }

    #[test]
    fn overlap_is_symmetric() {
        let a: IpNet = "10.88.0.0/16".parse().unwrap();
        let b: IpNet = "10.88.4.0/24".parse().unwrap();
        let c: IpNet = "10.89.0.0/16".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !c.overlaps(&a));
        assert_eq!(a.nth_v4(1), Some("10.88.0.1".parse().unwrap()));
        assert_eq!(b.nth_v4(256), None);
        let v6: IpNet = "fd00:1::/64".parse().unwrap();
        assert_eq!(v6.nth(2), Some("fd00:1::2".parse().unwrap()));
        assert_eq!(v6.nth(1 << 64), None);
        assert_eq!(v6.size(), 1 << 64);
        assert_eq!(b.size(), 256);
    }
}
