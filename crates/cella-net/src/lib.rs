//! Container networking: named network namespaces, links (veth, bridge), addresses,
//! routes and policy rules over rtnetlink, IPAM with leases on disk, and nftables NAT,
//! port forwards and L2 anti-spoofing in tables cella owns. Synchronous throughout: the
//! runtime path has no async runtime.

pub mod bridge;
pub mod cidr;
pub mod container;
pub mod doctor;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod network;
pub mod nft;
pub mod p2p;
pub mod resolv;
mod sys;
