//! `cella-cni`, a CNI plugin (spec 1.0.0): a bridge network with built-in host-local IPAM
//! (the reference plugin's on-disk format), masquerade, port mappings and L2
//! anti-spoofing, built on cella-net's netlink and nftables blocks. It takes the
//! reference bridge plugin's configuration keys, so a conflist changes only its `type`.

pub mod hostlocal;
pub mod nft;
pub mod plugin;
mod sys;
pub mod types;
