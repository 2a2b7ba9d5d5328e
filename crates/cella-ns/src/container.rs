//! The cella containers under a state root: `<root>/<id>/state.json` (OCI state).

use std::path::{Path, PathBuf};

/// A container could not be found or read.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// No state file for the id.
    #[error("no container `{id}` under `{}`: check the id with `cella list`, or pass the right --root", root.display())]
    NotFound {
        /// The id asked for.
        id: String,
        /// The state root searched.
        root: PathBuf,
    },
    /// The state file could not be read.
    #[error("read `{}`", path.display())]
    Read {
        /// Path of state.json.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not OCI state JSON.
    #[error("parse `{}`: not OCI state JSON with \"id\" and \"pid\"", path.display())]
    Parse {
        /// Path of state.json.
        path: PathBuf,
    },
    /// The container has no running init.
    #[error(
        "container `{id}` is {status}: it has no process whose namespaces to use; start it first"
    )]
    NotRunning {
        /// The container.
        id: String,
        /// Its OCI status.
        status: String,
    },
}

/// What the namespace tools need from a container's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    /// Container id.
    pub id: String,
    /// Pid of its init process (0 when it has none).
    pub pid: i32,
    /// OCI status: creating, created, running, paused or stopped.
    pub status: String,
}

fn read_state(path: &Path) -> Result<ContainerInfo, ContainerError> {
    let text = std::fs::read_to_string(path).map_err(|source| ContainerError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| ContainerError::Parse {
        path: path.to_path_buf(),
    })?;
    let id = v["id"].as_str().ok_or_else(|| ContainerError::Parse {
        path: path.to_path_buf(),
    })?;
    let pid = v["pid"].as_i64().unwrap_or(0) as i32;
    let status = v["status"].as_str().unwrap_or("unknown").to_string();
    Ok(ContainerInfo {
        id: id.to_string(),
        pid,
        status,
    })
}

/// Every container under `root` with a readable state; unreadable entries are skipped
/// (a container being created or deleted races with us).
pub fn containers(root: &Path) -> Vec<ContainerInfo> {
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| read_state(&e.path().join("state.json")).ok())
        .collect()
}

/// The container `id` under `root`, which must have a live init process.
pub fn running(root: &Path, id: &str) -> Result<ContainerInfo, ContainerError> {
    let path = root.join(id).join("state.json");
    if id.is_empty() || id.contains('/') || !path.exists() {
        return Err(ContainerError::NotFound {
            id: id.to_string(),
            root: root.to_path_buf(),
        });
    }
    let c = read_state(&path)?;
    let alive = c.pid > 0 && Path::new(&format!("/proc/{}", c.pid)).exists();
    if c.status == "stopped" || !alive {
        let status = if c.status == "stopped" || c.pid <= 0 {
            c.status
        } else {
            "stopped".into()
        };
        return Err(ContainerError::NotRunning { id: c.id, status });
    }
    Ok(c)
}
