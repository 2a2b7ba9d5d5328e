//! Kernel primitives for isolation.
pub mod rootfs;
