//! The container's root filesystem: a [`RootfsPlan`] computed from config.json in the
//! runtime before the fork (all validation, all strings converted), then executed in the
//! container's init inside its new mount namespace, in three steps:
//!
//! 1. [`RootfsPlan::mount_all`]: propagation of "/", the rootfs bound onto itself, every
//!    `mounts[]` entry in config order, then /dev (devices, symlinks, ptmx);
//! 2. [`RootfsPlan::pivot`]: pivot_root (or MS_MOVE + chroot) and chdir("/");
//! 3. [`RootfsPlan::finish`]: readonlyPaths, maskedPaths, then a read-only root.
//!
//! The init must already be in its cgroup when it calls `mount_all` (a `cgroup` mount on
//! a v1/hybrid host binds the init's own directory of each hierarchy, read from
//! /proc/self/cgroup), and /proc must be mounted in the container for `finish` to reach
//! paths through `/proc/self/fd` after the pivot (every runc-style config mounts it).
//!
//! `cgroup` mounts: on a pure cgroup v2 host, a cgroup2 mount (in a user namespace that
//! the kernel refuses it to, a read-only bind of the init's own cgroup directory); on a
//! v1 or hybrid host, a tmpfs holding, per host hierarchy, a read-only bind of the init's
//! own cgroup directory (or a fresh mount when the container has its own cgroup
//! namespace), plus symlinks for co-mounted controllers (`cpu` -> `cpu,cpuacct`).
//!
//! Every mount target is resolved inside the rootfs by `safepath` and mounted through
//! `/proc/self/fd/<n>` of an O_PATH fd, so no symlink can redirect a mount out of it.
//! The execution code is written against `apply::MountSys` so the order of kernel calls
//! is unit-tested with a recording double; the real implementation is in `apply`.

mod apply;
mod copyup;
mod plan;
mod safepath;
mod sys;

use std::ffi::CStr;
use std::io;
use std::path::{Path, PathBuf};

pub use plan::RootfsPlan;

/// How the container is set up around its rootfs, as decided by the runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct RootfsOptions {
    /// Use MS_MOVE + chroot instead of pivot_root (runc's `--no-pivot`).
    pub no_pivot: bool,
    /// The init runs in a new user namespace: mknod is impossible, so host device nodes
    /// are bind-mounted instead, and flags locked by the kernel are preserved on remounts.
    pub in_user_namespace: bool,
    /// The init runs in a new mount namespace. Without one, nothing may be mounted (it
    /// would land on the host) and only a chroot is done.
    pub new_mount_namespace: bool,
}

/// Errors of planning and setting up the rootfs. Display names the config field and, for
/// kernel calls, the operation and the path inside the container.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// `root.path` cannot be used.
    #[error("root.path: `{}`", path.display())]
    Root {
        /// The rootfs path as resolved against the bundle.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A config field is invalid (`field` is e.g. `mounts[2].options`).
    #[error("{field}: {message}")]
    Invalid {
        /// The config field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A bind mount's source does not exist or cannot be inspected.
    #[error("{field}.source: `{}`", path.display())]
    Source {
        /// The config field, e.g. `mounts[4]`.
        field: String,
        /// The source path on the host.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A path goes through a symlink that climbs out of the rootfs.
    #[error("{field}: {path:?} goes through symlink {link:?} which points outside the rootfs")]
    Escape {
        /// The config field, e.g. `mounts[3].destination`.
        field: String,
        /// The path from the config.
        path: String,
        /// The offending symlink, as a path inside the rootfs.
        link: String,
    },
    /// A kernel call failed while setting up the rootfs.
    #[error("{field}: {op} `{path}`")]
    Sys {
        /// The config field (or `root`, `linux.devices`...) the step comes from.
        field: String,
        /// The operation (mount, mknod, pivot_root...).
        op: &'static str,
        /// The path the operation was applied to.
        path: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

impl RootfsError {
    fn sys(field: &str, op: &'static str, path: &CStr, source: io::Error) -> RootfsError {
        RootfsError::Sys {
            field: field.to_string(),
            op,
            path: path.to_string_lossy().into_owned(),
            source,
        }
    }
}

impl RootfsPlan {
    /// Validates the config and plans the rootfs, in the runtime before the fork. Errors
    /// name the config field.
    pub fn from_spec(
        spec: &oci_spec::runtime::Spec,
        bundle: &Path,
        opts: RootfsOptions,
    ) -> Result<RootfsPlan, RootfsError> {
        plan::plan(spec, bundle, opts, &plan::HostFacts::probe())
    }

    /// Step 1, in the init (new mount namespace, before the createContainer hooks):
    /// propagation of "/", rootfs bound onto itself, every mount in config order, /dev.
    pub fn mount_all(&self) -> Result<(), RootfsError> {
        apply::mount_all(self, &mut apply::Kernel::new())
    }

    /// Optional, between [`mount_all`](Self::mount_all) and [`pivot`](Self::pivot):
    /// bind-mounts the pty slave at `slave` (a path valid in the init now) onto
    /// `<rootfs>/dev/console`.
    pub fn mount_console(&self, slave: &CStr) -> Result<(), RootfsError> {
        apply::mount_console(self, slave, &mut apply::Kernel::new())
    }

    /// Step 2: pivot_root into the rootfs and detach the old root (or, with `no_pivot`,
    /// MS_MOVE + chroot); then chdir("/").
    pub fn pivot(&self) -> Result<(), RootfsError> {
        apply::pivot(self, &mut apply::Kernel::new())
    }

    /// Step 3, after the runtime wrote sysctls: readonlyPaths, maskedPaths, then the
    /// read-only root when `root.readonly`.
    pub fn finish(&self) -> Result<(), RootfsError> {
        apply::finish(self, &mut apply::Kernel::new())
    }
}
