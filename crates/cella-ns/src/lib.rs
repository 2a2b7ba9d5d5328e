//! Namespace tools: list, enter, unshare, and name Linux namespaces.
//!
//! Each verb of `cella ns` has a module here; the binary only parses arguments and prints.
//! The kernel calls live in [`sys`], the only module with `unsafe`.

pub mod container;
pub mod enter;
pub mod exec;
pub mod kind;
pub mod list;
mod sys;

pub use container::{ContainerError, ContainerInfo};
pub use enter::{DirChoice, EnterError, EnterOptions, enter, resolve_target};
pub use kind::{NsSet, NsType};
pub use list::{ListError, ListOptions, Namespace, list};
