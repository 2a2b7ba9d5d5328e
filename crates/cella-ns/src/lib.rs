//! Namespace tools: list, enter, unshare, and name Linux namespaces.
//!
//! Each verb of `cella ns` has a module here; the binary only parses arguments and prints.
//! The kernel calls live in the private `sys` module, the only one with `unsafe`.

pub mod container;
pub mod enter;
pub mod exec;
pub mod kind;
pub mod list;
pub mod named;
mod sys;
pub mod unshare;

pub use container::{ContainerError, ContainerInfo};
pub use enter::{DirChoice, EnterError, EnterOptions, enter, resolve_target};
pub use kind::{NsSet, NsType};
pub use list::{ListError, ListOptions, Namespace, list};
pub use named::{NamedDirs, NamedError, create, remove};
pub use unshare::{Propagation, UnshareError, UnshareOptions, unshare};
