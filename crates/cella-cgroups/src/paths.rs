//! `linux.cgroupsPath` semantics (runc's cgroupfs driver) and the systemd form.

use std::path::Path;

use crate::CgroupError;

const FIELD: &str = "linux.cgroupsPath";

/// A parsed `linux.cgroupsPath` for the cgroupfs driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CgroupsPath {
    /// Relative to each hierarchy's root ("/a/b" stored as "a/b").
    Absolute(String),
    /// Relative to the runtime's own cgroup in each hierarchy.
    Relative(String),
}

/// Clean a path: drop empty and "." components; ".." is refused because it could leave
/// the hierarchy (runc resolves it lexically; refusing is clearer).
fn clean(p: &str) -> Result<String, CgroupError> {
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(CgroupError::invalid(
                    FIELD,
                    format!("{p:?}: \"..\" is not allowed"),
                ));
            }
            c if c.contains('\n') => {
                return Err(CgroupError::invalid(
                    FIELD,
                    format!("{p:?}: newline in a component"),
                ));
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// Parse the cgroupfs form; `None`/empty means `/cella/<container-id>`.
pub(crate) fn parse_cgroupfs(
    path: Option<&str>,
    container_id: &str,
) -> Result<CgroupsPath, CgroupError> {
    if container_id.is_empty()
        || container_id.contains('/')
        || container_id == "."
        || container_id == ".."
    {
        return Err(CgroupError::invalid(
            "container id",
            format!("{container_id:?} cannot name a cgroup directory"),
        ));
    }
    match path {
        None | Some("") => Ok(CgroupsPath::Absolute(format!("cella/{container_id}"))),
        Some(p) if p.starts_with('/') => {
            let c = clean(p)?;
            if c.is_empty() {
                return Err(CgroupError::invalid(
                    FIELD,
                    format!("{p:?} names the root cgroup"),
                ));
            }
            Ok(CgroupsPath::Absolute(c))
        }
        Some(p) => {
            let c = clean(p)?;
            if c.is_empty() {
                return Err(CgroupError::invalid(
                    FIELD,
                    format!("{p:?} names the runtime's own cgroup"),
                ));
            }
            Ok(CgroupsPath::Relative(c))
        }
    }
}

/// The three parts of the systemd driver's `slice:prefix:name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SystemdPath {
    pub slice: String,
    pub prefix: String,
    pub name: String,
}

/// Parse `slice:prefix:name`; an empty path means `:cella:<id>` (runc's default with
/// its own name). An empty slice is resolved by the driver (system.slice or, rootless,
/// user.slice).
pub(crate) fn parse_systemd(
    path: Option<&str>,
    container_id: &str,
) -> Result<SystemdPath, CgroupError> {
    let p = match path {
        None | Some("") => {
            return Ok(SystemdPath {
                slice: String::new(),
                prefix: "cella".into(),
                name: container_id.into(),
            });
        }
        Some(p) => p,
    };
    let parts: Vec<&str> = p.split(':').collect();
    if parts.len() != 3 {
        return Err(CgroupError::invalid(
            FIELD,
            format!("{p:?}: the systemd driver expects \"slice:prefix:name\""),
        ));
    }
    if !parts[0].is_empty() && !parts[0].ends_with(".slice") {
        return Err(CgroupError::invalid(
            FIELD,
            format!("{p:?}: {:?} is not a slice name", parts[0]),
        ));
    }
    if parts[2].is_empty() {
        return Err(CgroupError::invalid(
            FIELD,
            format!("{p:?}: the unit name is empty"),
        ));
    }
    Ok(SystemdPath {
        slice: parts[0].into(),
        prefix: parts[1].into(),
        name: parts[2].into(),
    })
}

/// Is systemd the running init system (the test runc and sd_booted use)?
pub(crate) fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_forms() {
        assert_eq!(
            parse_cgroupfs(None, "c1").unwrap(),
            CgroupsPath::Absolute("cella/c1".into())
        );
        assert_eq!(
            parse_cgroupfs(Some(""), "c1").unwrap(),
            CgroupsPath::Absolute("cella/c1".into())
        );
        assert_eq!(
            parse_cgroupfs(Some("/a//b/"), "c1").unwrap(),
            CgroupsPath::Absolute("a/b".into())
        );
        assert_eq!(
            parse_cgroupfs(Some("x/y"), "c1").unwrap(),
            CgroupsPath::Relative("x/y".into())
        );
        let e = parse_cgroupfs(Some("/a/../../etc"), "c1")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("linux.cgroupsPath: "), "{e}");
        assert!(parse_cgroupfs(Some("/"), "c1").is_err());
        assert!(parse_cgroupfs(None, "a/b").is_err());
    }

    #[test]
    fn systemd_forms() {
        let p = parse_systemd(Some("user.slice:libpod:abc"), "c").unwrap();
        assert_eq!(
            (p.slice.as_str(), p.prefix.as_str(), p.name.as_str()),
            ("user.slice", "libpod", "abc")
        );
        assert_eq!(parse_systemd(Some(":x:abc"), "c").unwrap().slice, "");
        assert_eq!(parse_systemd(None, "c").unwrap().name, "c");
        assert!(parse_systemd(Some("a.slice:x:"), "c").is_err());
        assert!(parse_systemd(Some("a.slice:x:y:z"), "c").is_err());
        assert!(
            parse_systemd(Some("/a/b"), "c")
                .unwrap_err()
                .to_string()
                .contains("slice:prefix:name")
        );
        assert!(parse_systemd(Some("foo:x:abc"), "c").is_err());
    }
}
