//! What changes when cella runs without privileges over the host: as an unprivileged
//! user, or as root of a user namespace other than the host's. Such a runtime cannot
//! create cgroups unless a hierarchy was delegated to it, and runs without one then,
//! saying so once.

use oci_spec::runtime::LinuxResources;

/// True when the runtime has no privileges over the host.
pub(crate) fn rootless() -> bool {
    cella_isolate::sys::geteuid() != 0 || !cella_isolate::idmap::in_initial_user_namespace()
}

/// The resources a runtime can apply: all of them as root of the host; without device
/// rules when rootless, since only CAP_SYS_ADMIN over the host may change a devices
/// cgroup or attach a device program (runc ignores those errors for the same reason),
/// and a rootless container reaches only host device nodes its user may open anyway.
pub(crate) fn applicable(
    res: &LinuxResources,
    rootless: bool,
) -> std::borrow::Cow<'_, LinuxResources> {
    if !rootless {
        return std::borrow::Cow::Borrowed(res);
    }
    let mut res = res.clone();
    res.set_devices(None);
    std::borrow::Cow::Owned(res)
}

/// The `linux.resources` limits the config asks for, by their config names. Device
/// rules are left out: a rootless container reaches only the host's device nodes that
/// its user may open anyway.
pub(crate) fn requested_limits(res: &LinuxResources) -> Vec<String> {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(res) else {
        return Vec::new();
    };
    map.into_iter()
        .filter(|(k, v)| {
            k != "devices"
                && !v.is_null()
                && v.as_object().is_none_or(|o| !o.is_empty())
                && v.as_array().is_none_or(|a| !a.is_empty())
        })
        .map(|(k, _)| format!("linux.resources.{k}"))
        .collect()
}

/// The one warning for a container that runs without a cgroup: why, and which of the
/// requested limits are therefore not applied.
pub(crate) fn no_cgroup_warning(why: &str, res: &LinuxResources) -> String {
    let limits = requested_limits(res);
    let effect = if limits.is_empty() {
        "no resource limits were requested".to_owned()
    } else {
        format!("{} not applied", limits.join(", "))
    };
    format!(
        "running without a cgroup: the cgroup hierarchy is not delegated to this user ({why}); {effect}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_limits_leave_devices_out() {
        let res: LinuxResources = serde_json::from_value(serde_json::json!({
            "devices": [{"allow": false, "access": "rwm"}],
            "memory": {"limit": 1048576},
            "pids": {"limit": 10},
            "hugepageLimits": []
        }))
        .unwrap();
        assert_eq!(
            requested_limits(&res),
            vec!["linux.resources.memory", "linux.resources.pids"]
        );
        let w = no_cgroup_warning("mkdir `/x`: Permission denied", &res);
        assert!(
            w.ends_with("linux.resources.memory, linux.resources.pids not applied"),
            "{w}"
        );
        let none = no_cgroup_warning("e", &LinuxResources::default());
        assert!(
            none.ends_with("no resource limits were requested"),
            "{none}"
        );
    }
}
