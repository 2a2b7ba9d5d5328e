//! The runtime's errors. Display names the operation and the object; the cause is the
//! `source`, never repeated in the message.

use std::io;
use std::path::PathBuf;

/// Everything a runtime operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// config.json is malformed or asks for something invalid; `field` is its JSON path.
    #[error("{file}: {field}: {msg}")]
    Config {
        /// The file (usually `config.json`).
        file: String,
        /// The JSON path of the offending value, e.g. `linux.namespaces[2].type`.
        field: String,
        /// What is wrong with it.
        msg: String,
    },
    /// A file or directory operation failed.
    #[error("{op} `{path}`")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A system call not tied to a path failed.
    #[error("{0}")]
    Sys(&'static str, #[source] io::Error),
    /// The container id is not usable as a directory name.
    #[error(
        "invalid container id {0:?}: use letters, digits, '.', '_', '-' and '+' (at most 1024)"
    )]
    InvalidId(String),
    /// `create` of an id that exists.
    #[error("container \"{0}\" already exists")]
    Exists(String),
    /// Any operation on an id that does not exist.
    #[error("container \"{0}\" does not exist")]
    NotFound(String),
    /// The container is not in a state that allows the operation.
    #[error("container \"{id}\" is {status}: {what}")]
    BadStatus {
        /// The container.
        id: String,
        /// Its status.
        status: &'static str,
        /// What could not be done.
        what: &'static str,
    },
    /// The state file exists but cannot be understood.
    #[error("state of container \"{id}\" in `{path}` is corrupt")]
    CorruptState {
        /// The container.
        id: String,
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A step in the container's init failed; `detail` is init's own description.
    #[error("container init: {detail}")]
    Init {
        /// Which step failed, and on what.
        detail: String,
        /// The errno it failed with.
        #[source]
        source: io::Error,
    },
    /// A hook failed.
    #[error("{kind} hook #{index} `{path}`")]
    Hook {
        /// prestart, createRuntime, ...
        kind: &'static str,
        /// Its index in the list.
        index: usize,
        /// Its path.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: crate::hooks::HookError,
    },
    /// Namespace handling failed.
    #[error(transparent)]
    Namespace(#[from] cella_isolate::namespaces::NsError),
    /// Reading /etc/subuid or writing the id maps of the user namespace failed.
    #[error(transparent)]
    IdMap(#[from] cella_isolate::idmap::IdMapError),
    /// Planning the rootfs failed.
    #[error(transparent)]
    Rootfs(#[from] cella_isolate::rootfs::RootfsError),
    /// A cgroup operation failed; invalid resources name their `linux.resources` field.
    #[error("cgroup")]
    Cgroup(#[from] cella_cgroups::CgroupError),
    /// The seccomp profile cannot be compiled or loaded.
    #[error("seccomp")]
    Seccomp(#[from] cella_seccomp::SeccompError),
    /// Protecting the runtime binary failed.
    #[error(transparent)]
    Exe(#[from] cella_isolate::exe::ExeError),
    /// The container's bridge network failed (see [`crate::network`]).
    #[error("container network")]
    Network(#[source] cella_net::container::ContainerNetError),
    /// A failure (with its causes: it has no `source` of its own), and the failures of
    /// cleaning up after it.
    #[error("{}{}", crate::error_chain(.error.as_ref()), cleanup_text(.cleanup))]
    WithCleanup {
        /// What failed first.
        error: Box<Error>,
        /// What failed while undoing.
        cleanup: Vec<Error>,
    },
}

fn cleanup_text(cleanup: &[Error]) -> String {
    let mut s = String::new();
    for e in cleanup {
        s.push_str("; cleanup also failed: ");
        s.push_str(&crate::error_chain(e));
    }
    s
}

impl Error {
    /// A config error for `field` of config.json.
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Config {
            file: "config.json".into(),
            field: field.into(),
            msg: msg.into(),
        }
    }

    /// Wraps an io error with the operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

/// Result of runtime operations.
pub type Result<T> = std::result::Result<T, Error>;
