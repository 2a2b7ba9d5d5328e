//! The systemd cgroup driver (`--systemd-cgroup`), as runc and crun do it: the
//! container's cgroup is a transient unit (`prefix-name.scope` in a slice) that systemd
//! creates with init's pid in it, with `Delegate=true` so the subtree is ours to write.
//! We speak D-Bus to the manager's private socket ([`dbus`]), then use the cgroupfs code
//! for everything systemd does not do (the remaining limits, stats, freeze, kill).

pub mod dbus;

use std::path::PathBuf;
use std::time::Duration;

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use crate::CgroupError;
use crate::paths::SystemdPath;
use crate::plan::{blkio_weight_to_io_weight, cpu_shares_to_weight, swap_to_v2};
use dbus::{Connection, DbusError, Message, Value};

const FIELD: &str = "linux.cgroupsPath";
const DEST: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// Replies from the manager: it answers at once, even under qemu's TCG.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A job on a scope runs no code, but a loaded machine may be slow to dispatch it.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// systemd's USEC_INFINITY / "infinity" for the u64 limits.
const INFINITY: u64 = u64::MAX;

/// A container's systemd unit, recorded in the runtime's state before it is started so
/// `delete --force` finds it after a crash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemdUnit {
    /// The unit, `prefix-name.scope` (or `name` when it ends in `.slice`).
    pub unit: String,
    /// The slice the scope goes into (`Slice=`), or the slice a slice unit wants.
    pub slice: String,
    /// The cgroup systemd gives the unit, from the hierarchy root, e.g.
    /// `/system.slice/cella-abc.scope`; checked against its `ControlGroup` once started.
    pub cgroup: String,
    /// The unit's `Description=`.
    pub description: String,
}

/// The manager to talk to: the system instance for root, the user's own for others
/// (its private socket lives in `$XDG_RUNTIME_DIR`).
fn manager_socket() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/run/systemd/private");
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map_or_else(
        || {
            // SAFETY: as above.
            PathBuf::from(format!("/run/user/{}", unsafe { libc::geteuid() }))
        },
        PathBuf::from,
    );
    runtime.join("systemd/private")
}

/// systemd's slice name to cgroup path: `a-b-c.slice` is `/a.slice/a-b.slice/a-b-c.slice`,
/// `-.slice` is the root. Refuses what systemd would (as runc's ExpandSlice does).
pub(crate) fn expand_slice(slice: &str) -> Result<String, CgroupError> {
    let bad = |why: &str| CgroupError::invalid(FIELD, format!("slice {slice:?}: {why}"));
    let Some(name) = slice.strip_suffix(".slice") else {
        return Err(bad("a slice name ends in \".slice\""));
    };
    if name == "-" {
        return Ok("/".into());
    }
    if name.is_empty() || name.contains('/') || !valid_unit_chars(name) {
        return Err(bad("not a valid slice name"));
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return Err(bad("a dash may only separate two parts"));
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// The characters systemd allows in unit names (unit_name_is_valid), besides the
/// one `@` of a template instance, which scopes cannot be.
fn valid_unit_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b":-_.\\".contains(&b))
}

/// The unit for a parsed `slice:prefix:name`: runc's rules (an empty slice is
/// `system.slice`, `user.slice` when rootless; a name ending in `.slice` is a slice
/// unit, anything else the scope `prefix-name.scope`, or `name.scope` without prefix).
pub(crate) fn unit_for(
    p: &SystemdPath,
    container_id: &str,
    rootless: bool,
) -> Result<SystemdUnit, CgroupError> {
    let slice = match (p.slice.as_str(), rootless) {
        ("", false) => "system.slice".to_owned(),
        ("", true) => "user.slice".to_owned(),
        (s, _) => s.to_owned(),
    };
    let slice_path = expand_slice(&slice)?;
    let (unit, cgroup) = if p.name.ends_with(".slice") {
        // A slice unit sits where its name says, whatever it wants.
        let path = expand_slice(&p.name)?;
        (p.name.clone(), path)
    } else {
        let unit = if p.prefix.is_empty() {
            format!("{}.scope", p.name)
        } else {
            format!("{}-{}.scope", p.prefix, p.name)
        };
        // Anything systemd would refuse (an `@`, a space...) is left for it to say, so
        // its own words reach the user; a `/` would break the path computed here.
        if unit.contains('/') || unit.len() > 255 {
            return Err(CgroupError::invalid(
                FIELD,
                format!("{unit:?} cannot name a systemd unit"),
            ));
        }
        let cgroup = format!("{}/{unit}", slice_path.trim_end_matches('/'));
        (unit, cgroup)
    };
    Ok(SystemdUnit {
        unit,
        slice,
        cgroup,
        description: format!("cella container {container_id}"),
    })
}

/// A `cpuset` list ("0-3,8") as systemd's AllowedCPUs bitmask: bit n of byte n/8.
pub(crate) fn cpuset_bits(field: &str, list: &str) -> Result<Vec<u8>, CgroupError> {
    let bad = || CgroupError::invalid(field, format!("{list:?} is not a list of cpus or nodes"));
    let mut bits: Vec<u8> = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.trim().is_empty()) {
        let (lo, hi) = match part.trim().split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part.trim(), part.trim()),
        };
        let (lo, hi): (usize, usize) = (
            lo.parse().map_err(|_| bad())?,
            hi.parse().map_err(|_| bad())?,
        );
        if lo > hi || hi >= 1 << 16 {
            return Err(bad());
        }
        for n in lo..=hi {
            if bits.len() <= n / 8 {
                bits.resize(n / 8 + 1, 0);
            }
            bits[n / 8] |= 1 << (n % 8);
        }
    }
    Ok(bits)
}

fn limit(v: i64) -> u64 {
    if v < 0 { INFINITY } else { v as u64 }
}

/// The unit's properties for `StartTransientUnit`: its place, delegation, init's pid and,
/// on cgroup v2, the limits systemd knows, converted as runc does (the same values are
/// then written to the cgroup files; systemd holding them too means a reload of the unit
/// does not undo them). On v1 the limits are left to the cgroup files.
pub(crate) fn properties(
    u: &SystemdUnit,
    pid: Option<i32>,
    res: &LinuxResources,
    v2: bool,
) -> Result<Vec<Value>, CgroupError> {
    let mut props = vec![Value::property(
        "Description",
        Value::Str(u.description.clone()),
    )];
    if u.unit.ends_with(".slice") {
        // A slice's parent comes from its name; the named slice is wanted, as runc does.
        props.push(Value::property(
            "Wants",
            Value::Array("s".into(), vec![Value::Str(u.slice.clone())]),
        ));
    } else {
        props.push(Value::property("Slice", Value::Str(u.slice.clone())));
        props.push(Value::property("Delegate", Value::Bool(true)));
        if let Some(pid) = pid {
            let pid = u32::try_from(pid).map_err(|_| {
                CgroupError::invalid("pid", format!("{pid} cannot join a systemd unit"))
            })?;
            props.push(Value::property(
                "PIDs",
                Value::Array("u".into(), vec![Value::U32(pid)]),
            ));
        }
    }
    // Not ordered after sysinit/basic nor stopped at shutdown by conflicts: a container
    // starts whenever asked, as runc's scopes do.
    props.push(Value::property("DefaultDependencies", Value::Bool(false)));
    if !v2 {
        return Ok(props);
    }
    let t = |name: &str, v: u64| Value::property(name, Value::U64(v));
    if let Some(m) = res.memory() {
        if let Some(l) = m.limit().filter(|l| *l != 0) {
            props.push(t("MemoryMax", limit(l)));
        }
        if let Some(r) = m.reservation().filter(|r| *r != 0) {
            props.push(t("MemoryLow", limit(r)));
        }
        if let Some(s) = swap_to_v2(m.swap(), m.limit()) {
            props.push(t("MemorySwapMax", limit(s)));
        }
    }
    if let Some(c) = res.cpu() {
        if let Some(s) = c.shares().filter(|s| *s != 0) {
            props.push(t("CPUWeight", cpu_shares_to_weight(s)));
        }
        let (quota, mut period) = (c.quota().unwrap_or(0), c.period().unwrap_or(0));
        if period != 0 {
            props.push(t("CPUQuotaPeriodUSec", period));
        }
        if quota != 0 || period != 0 {
            let mut per_sec = INFINITY;
            if quota > 0 {
                if period == 0 {
                    period = 100_000;
                }
                // systemd keeps CPUQuota as whole percents: round up to 10 ms per
                // second so the kernel's cpu.max is at least what was asked.
                per_sec = (quota as u64).saturating_mul(1_000_000) / period;
                if per_sec % 10_000 != 0 {
                    per_sec = (per_sec / 10_000 + 1) * 10_000;
                }
            }
            props.push(t("CPUQuotaPerSecUSec", per_sec));
        }
        for (name, field, list) in [
            ("AllowedCPUs", "linux.resources.cpu.cpus", c.cpus()),
            ("AllowedMemoryNodes", "linux.resources.cpu.mems", c.mems()),
        ] {
            if let Some(list) = list.as_deref().filter(|l| !l.trim().is_empty()) {
                let bits = cpuset_bits(field, list)?;
                props.push(Value::property(
                    name,
                    Value::Array("y".into(), bits.into_iter().map(Value::Byte).collect()),
                ));
            }
        }
    }
    if let Some(l) = res.pids().map(|p| p.limit()).filter(|l| *l > 0 || *l == -1) {
        props.push(t("TasksMax", limit(l)));
    }
    if let Some(w) = res
        .block_io()
        .as_ref()
        .and_then(|b| b.weight())
        .filter(|w| *w != 0)
    {
        props.push(t("IOWeight", blkio_weight_to_io_weight(w)));
    }
    Ok(props)
}

fn manager_call(member: &str, body: Vec<Value>) -> Message {
    Message::method_call(DEST, MANAGER_PATH, MANAGER, member, body)
}

fn dbus_err<'a>(op: &'static str, unit: &'a str) -> impl FnOnce(DbusError) -> CgroupError + 'a {
    move |source| CgroupError::Systemd {
        op,
        unit: unit.to_owned(),
        source,
    }
}

fn connect(unit: &str) -> Result<Connection, CgroupError> {
    Connection::connect(&manager_socket(), CALL_TIMEOUT).map_err(dbus_err("connect for", unit))
}

/// The job path a manager call returned.
fn job_path(body: &[Value]) -> Option<String> {
    match body.first() {
        Some(Value::Path(p)) => Some(p.clone()),
        _ => None,
    }
}

/// Wait for the manager's JobRemoved(u id, o job, s unit, s result) of `job`: its result.
fn wait_job(c: &mut Connection, job: &str) -> Result<String, DbusError> {
    let m = c.wait_signal(JOB_TIMEOUT, |m| {
        m.member.as_deref() == Some("JobRemoved")
            && m.interface.as_deref() == Some(MANAGER)
            && m.body.get(1).and_then(Value::as_str) == Some(job)
    })?;
    Ok(m.body
        .get(3)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned())
}

/// Start the transient unit with `props` and wait for its job; returns the unit's
/// `ControlGroup`.
pub(crate) fn start(u: &SystemdUnit, props: Vec<Value>) -> Result<String, CgroupError> {
    let mut c = connect(&u.unit)?;
    let body = c
        .call(manager_call(
            "StartTransientUnit",
            vec![
                Value::Str(u.unit.clone()),
                Value::str("replace"),
                Value::Array("(sv)".into(), props),
                Value::Array("(sa(sv))".into(), Vec::new()),
            ],
        ))
        .map_err(dbus_err("start transient unit", &u.unit))?;
    let job = job_path(&body).ok_or_else(|| CgroupError::Systemd {
        op: "start transient unit",
        unit: u.unit.clone(),
        source: DbusError::Protocol("StartTransientUnit returned no job".into()),
    })?;
    let result = wait_job(&mut c, &job).map_err(dbus_err("wait for the start job of", &u.unit))?;
    if result != "done" {
        return Err(CgroupError::SystemdJob {
            op: "start",
            unit: u.unit.clone(),
            result,
        });
    }
    control_group(&mut c, u)
}

/// The unit's ControlGroup property.
fn control_group(c: &mut Connection, u: &SystemdUnit) -> Result<String, CgroupError> {
    let body = c
        .call(manager_call("GetUnit", vec![Value::Str(u.unit.clone())]))
        .map_err(dbus_err("look up", &u.unit))?;
    let path = job_path(&body).ok_or_else(|| CgroupError::Systemd {
        op: "look up",
        unit: u.unit.clone(),
        source: DbusError::Protocol("GetUnit returned no object path".into()),
    })?;
    let iface = if u.unit.ends_with(".slice") {
        "org.freedesktop.systemd1.Slice"
    } else {
        "org.freedesktop.systemd1.Scope"
    };
    let body = c
        .call(Message::method_call(
            DEST,
            &path,
            "org.freedesktop.DBus.Properties",
            "Get",
            vec![Value::str(iface), Value::str("ControlGroup")],
        ))
        .map_err(dbus_err("read ControlGroup of", &u.unit))?;
    match body.first() {
        Some(Value::Variant(v)) if v.as_str().is_some() => {
            Ok(v.as_str().unwrap_or_default().to_owned())
        }
        other => Err(CgroupError::Systemd {
            op: "read ControlGroup of",
            unit: u.unit.clone(),
            source: DbusError::Protocol(format!("unexpected reply {other:?}")),
        }),
    }
}

/// Whether a manager error means the unit is not there (never started, or gone).
fn unit_absent(e: &DbusError) -> bool {
    matches!(e, DbusError::Remote { name, .. } if name == "org.freedesktop.systemd1.NoSuchUnit"
        // A name systemd refused at start is refused again here: nothing was made.
        || name == "org.freedesktop.DBus.Error.InvalidArgs")
}

/// Stop the unit and forget a failed state, so the name can be used again. A unit that
/// does not exist (never started, or gone with its last process) is fine.
pub(crate) fn stop(u: &SystemdUnit) -> Result<(), CgroupError> {
    if !manager_socket().exists() {
        // No manager (systemd stopped, or the state came from another boot): no unit
        // can exist, and `delete` must still be able to remove the rest.
        return Ok(());
    }
    let mut c = connect(&u.unit)?;
    match c.call(manager_call(
        "StopUnit",
        vec![Value::Str(u.unit.clone()), Value::str("replace")],
    )) {
        Ok(body) => {
            if let Some(job) = job_path(&body) {
                let result = wait_job(&mut c, &job)
                    .map_err(dbus_err("wait for the stop job of", &u.unit))?;
                // "done"; a unit that went away meanwhile ends the job as "canceled".
                if result != "done" && result != "canceled" {
                    return Err(CgroupError::SystemdJob {
                        op: "stop",
                        unit: u.unit.clone(),
                        result,
                    });
                }
            }
        }
        Err(e) if unit_absent(&e) => return Ok(()),
        Err(e) => return Err(dbus_err("stop", &u.unit)(e)),
    }
    match c.call(manager_call(
        "ResetFailedUnit",
        vec![Value::Str(u.unit.clone())],
    )) {
        Ok(_) => Ok(()),
        Err(e) if unit_absent(&e) => Ok(()),
        // Only a failed unit can be reset; one that ended cleanly says so.
        Err(DbusError::Remote { name, .. }) if name.ends_with(".UnitNotFailed") => Ok(()),
        Err(e) => Err(dbus_err("reset the failed state of", &u.unit)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(slice: &str, prefix: &str, name: &str) -> SystemdPath {
        SystemdPath {
            slice: slice.into(),
            prefix: prefix.into(),
            name: name.into(),
        }
    }

    #[test]
    fn slices_expand_as_systemd_nests_them() {
        assert_eq!(expand_slice("system.slice").unwrap(), "/system.slice");
        assert_eq!(
            expand_slice("a-b-c.slice").unwrap(),
            "/a.slice/a-b.slice/a-b-c.slice"
        );
        assert_eq!(expand_slice("-.slice").unwrap(), "/");
        for bad in [
            "a--b.slice",
            "-a.slice",
            "a-.slice",
            "a/b.slice",
            "x",
            ".slice",
        ] {
            let e = expand_slice(bad).unwrap_err().to_string();
            assert!(e.starts_with("linux.cgroupsPath: slice"), "{bad}: {e}");
        }
    }

    #[test]
    fn unit_names_follow_runc() {
        let u = unit_for(&sp("", "cella", "abc"), "abc", false).unwrap();
        assert_eq!(u.unit, "cella-abc.scope");
        assert_eq!(u.slice, "system.slice");
        assert_eq!(u.cgroup, "/system.slice/cella-abc.scope");
        assert_eq!(u.description, "cella container abc");
        let u = unit_for(&sp("", "cella", "abc"), "abc", true).unwrap();
        assert_eq!(u.cgroup, "/user.slice/cella-abc.scope");
        let u = unit_for(&sp("machine-pod.slice", "", "c1"), "c1", false).unwrap();
        assert_eq!(u.unit, "c1.scope");
        assert_eq!(u.cgroup, "/machine.slice/machine-pod.slice/c1.scope");
        let u = unit_for(&sp("-.slice", "p", "c1"), "c1", false).unwrap();
        assert_eq!(u.cgroup, "/p-c1.scope");
        let u = unit_for(&sp("system.slice", "x", "kube-pod.slice"), "c", false).unwrap();
        assert_eq!(u.unit, "kube-pod.slice");
        assert_eq!(u.cgroup, "/kube.slice/kube-pod.slice");
        assert!(unit_for(&sp("", "a", "b/c"), "c", false).is_err());
    }

    #[test]
    fn cpu_lists_become_bitmasks() {
        assert_eq!(cpuset_bits("f", "0").unwrap(), [1]);
        assert_eq!(cpuset_bits("f", "0-2,9").unwrap(), [0b111, 0b10]);
        assert_eq!(cpuset_bits("f", " 8 ").unwrap(), [0, 1]);
        assert!(cpuset_bits("f", "").unwrap().is_empty());
        assert!(cpuset_bits("f", "3-1").is_err());
        assert!(cpuset_bits("f", "x").is_err());
    }

    fn props(json: &str, v2: bool) -> Vec<(String, Value)> {
        let res: LinuxResources = serde_json::from_str(json).unwrap();
        let u = unit_for(&sp("", "cella", "t"), "t", false).unwrap();
        properties(&u, Some(42), &res, v2)
            .unwrap()
            .into_iter()
            .map(|p| match p {
                Value::Struct(mut f) => {
                    let Value::Variant(v) = f.pop().unwrap() else {
                        panic!()
                    };
                    (f[0].as_str().unwrap().to_owned(), *v)
                }
                _ => panic!("{p:?}"),
            })
            .collect()
    }

    fn get<'a>(p: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
        p.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    #[test]
    fn properties_convert_like_runc() {
        let p = props(
            r#"{"memory": {"limit": 67108864, "reservation": 33554432, "swap": 100663296},
                "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
                "pids": {"limit": 64}, "blockIO": {"weight": 500}}"#,
            true,
        );
        assert_eq!(get(&p, "Slice"), Some(&Value::str("system.slice")));
        assert_eq!(get(&p, "Delegate"), Some(&Value::Bool(true)));
        assert_eq!(get(&p, "DefaultDependencies"), Some(&Value::Bool(false)));
        assert_eq!(
            get(&p, "PIDs"),
            Some(&Value::Array("u".into(), vec![Value::U32(42)]))
        );
        assert_eq!(get(&p, "MemoryMax"), Some(&Value::U64(64 << 20)));
        assert_eq!(get(&p, "MemoryLow"), Some(&Value::U64(32 << 20)));
        assert_eq!(get(&p, "MemorySwapMax"), Some(&Value::U64(32 << 20)));
        assert_eq!(get(&p, "CPUWeight"), Some(&Value::U64(59)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), Some(&Value::U64(100_000)));
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(500_000)));
        assert_eq!(
            get(&p, "AllowedCPUs"),
            Some(&Value::Array("y".into(), vec![Value::Byte(3)]))
        );
        assert_eq!(get(&p, "TasksMax"), Some(&Value::U64(64)));
        assert_eq!(get(&p, "IOWeight"), Some(&Value::U64(4950)));
        // On v1 the limits go to the cgroup files only.
        let p = props(r#"{"memory": {"limit": 67108864}}"#, false);
        assert_eq!(get(&p, "MemoryMax"), None);
        assert_eq!(get(&p, "Delegate"), Some(&Value::Bool(true)));
    }

    #[test]
    fn quota_edge_cases() {
        // 1/3 of a cpu: 333333 us per second rounds up to whole percents.
        let p = props(r#"{"cpu": {"quota": 33333, "period": 100000}}"#, true);
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(340_000)));
        // Unlimited quota with a period: infinity, and the period still set.
        let p = props(r#"{"cpu": {"quota": -1, "period": 200000}}"#, true);
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(INFINITY)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), Some(&Value::U64(200_000)));
        // A quota without period assumes the kernel's 100 ms.
        let p = props(r#"{"cpu": {"quota": 25000}}"#, true);
        assert_eq!(get(&p, "CPUQuotaPerSecUSec"), Some(&Value::U64(250_000)));
        assert_eq!(get(&p, "CPUQuotaPeriodUSec"), None);
        // Unlimited memory and pids.
        let p = props(
            r#"{"memory": {"limit": -1, "swap": -1}, "pids": {"limit": -1}}"#,
            true,
        );
        assert_eq!(get(&p, "MemoryMax"), Some(&Value::U64(INFINITY)));
        assert_eq!(get(&p, "MemorySwapMax"), Some(&Value::U64(INFINITY)));
        assert_eq!(get(&p, "TasksMax"), Some(&Value::U64(INFINITY)));
        // Nothing set: no limit properties.
        let p = props("{}", true);
        assert!(get(&p, "MemoryMax").is_none() && get(&p, "TasksMax").is_none());
    }

    #[test]
    fn the_properties_marshal() {
        let res: LinuxResources =
            serde_json::from_str(r#"{"memory": {"limit": 1048576}, "cpu": {"cpus": "0"}}"#)
                .unwrap();
        let u = unit_for(&sp("", "cella", "t"), "t", false).unwrap();
        let m = manager_call(
            "StartTransientUnit",
            vec![
                Value::Str(u.unit.clone()),
                Value::str("replace"),
                Value::Array("(sv)".into(), properties(&u, Some(1), &res, true).unwrap()),
                Value::Array("(sa(sv))".into(), Vec::new()),
            ],
        );
        let bytes = m.encode().unwrap();
        let back = Message::decode(&bytes).unwrap();
        assert_eq!(back, m);
    }
}
