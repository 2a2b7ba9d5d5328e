//! Kernel primitives for isolation: namespaces and id maps, capabilities, credentials and
//! limits, the root filesystem, the runtime/init channel, and protection of the runtime
//! binary.
//!
//! Most of this runs in the container's init between clone and exec, single-threaded:
//! plans are built beforehand and the code here allocates as little as it can.

pub mod caps;
pub mod channel;
pub mod console;
pub mod coresched;
pub mod creds;
pub mod exe;
pub mod idmap;
pub mod landlock;
pub mod namespaces;
pub mod rootfs;
pub mod sys;
