//! Checks on `linux.resources` that need no cgroup directory: ranges, syntax, and what a
//! layout cannot express. Host-specific checks (is the controller mounted, does the file
//! exist) happen when the write plan is built, still before anything is written.

use oci_spec::runtime::LinuxResources;

use crate::{CgroupError, Layout, sys};

/// Largest cpu.shares the kernel accepts (`MAX_SHARES`).
pub(crate) const MAX_SHARES: u64 = 262_144;
/// Smallest cpu.shares the kernel accepts (`MIN_SHARES`).
pub(crate) const MIN_SHARES: u64 = 2;

fn bad(field: &str, reason: String) -> CgroupError {
    CgroupError::invalid(format!("linux.resources.{field}"), reason)
}

/// Check a cpuset list such as `0-3,5,7-8`.
pub(crate) fn check_list(field: &str, s: &str) -> Result<(), CgroupError> {
    for item in s.split(',') {
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (a, b),
            None => (item, item),
        };
        let parse = |x: &str| {
            x.parse::<u32>()
                .ok()
                .filter(|_| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit()))
        };
        match (parse(a), parse(b)) {
            (Some(lo), Some(hi)) if lo <= hi => {}
            _ => {
                return Err(bad(
                    field,
                    format!(
                        "{s:?} is not a list like \"0-3,5\" ({item:?} is not a number or a rising range)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Parse an OCI hugepage size ("2MB", "1GB", "64KB") into bytes.
pub(crate) fn hugepage_bytes(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "KB" | "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Validate `res` for a host of the given layout. Writes nothing.
pub fn validate(res: &LinuxResources, layout: Layout) -> Result<(), CgroupError> {
    let v2 = layout == Layout::Unified;
    if let Some(m) = res.memory() {
        let page = sys::page_size() as i64;
        if let Some(l) = m.limit() {
            if l < -1 {
                return Err(bad(
                    "memory.limit",
                    format!("{l} is negative (use -1 for unlimited)"),
                ));
            }
            if l > 0 && l < page {
                return Err(bad(
                    "memory.limit",
                    format!(
                        "{l} is below one page ({page} bytes): the kernel rounds limits down to whole pages, so no process could run"
                    ),
                ));
            }
        }
        if let Some(r) = m.reservation() {
            if r < -1 {
                return Err(bad(
                    "memory.reservation",
                    format!("{r} is negative (use -1 for unlimited)"),
                ));
            }
        }
        if let Some(s) = m.swap() {
            if s < -1 {
                return Err(bad(
                    "memory.swap",
                    format!("{s} is negative (use -1 for unlimited)"),
                ));
            }
            if s > 0 {
                match m.limit() {
                    None | Some(0) | Some(-1) => {
                        return Err(bad(
                            "memory.swap",
                            format!(
                                "{s} is set without memory.limit (swap is the memory+swap limit)"
                            ),
                        ));
                    }
                    Some(l) if s < l => {
                        return Err(bad(
                            "memory.swap",
                            format!(
                                "{s} is below memory.limit {l} (swap is the memory+swap limit, so it must be >= the limit)"
                            ),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        if let Some(k) = m.kernel_tcp() {
            if k < -1 {
                return Err(bad(
                    "memory.kernelTCP",
                    format!("{k} is negative (use -1 for unlimited)"),
                ));
            }
            if v2 && k != 0 {
                return Err(bad("memory.kernelTCP", "not supported on cgroup v2".into()));
            }
        }
        if let Some(s) = m.swappiness() {
            if s > 100 {
                return Err(bad(
                    "memory.swappiness",
                    format!("{s} is out of range 0-100"),
                ));
            }
            if v2 {
                return Err(bad(
                    "memory.swappiness",
                    "not supported on cgroup v2".into(),
                ));
            }
        }
        if m.disable_oom_killer() == Some(true) && v2 {
            return Err(bad(
                "memory.disableOOMKiller",
                "not supported on cgroup v2".into(),
            ));
        }
    }
    if let Some(c) = res.cpu() {
        if let Some(s) = c.shares() {
            if s != 0 && !(MIN_SHARES..=MAX_SHARES).contains(&s) {
                return Err(bad(
                    "cpu.shares",
                    format!("{s} is out of range {MIN_SHARES}-{MAX_SHARES}"),
                ));
            }
        }
        if let Some(q) = c.quota() {
            if q != 0 && q != -1 && q < 1000 {
                return Err(bad(
                    "cpu.quota",
                    format!(
                        "{q} is below the kernel's minimum of 1000 microseconds (use -1 for unlimited)"
                    ),
                ));
            }
        }
        if let Some(p) = c.period() {
            if p != 0 && !(1000..=1_000_000).contains(&p) {
                return Err(bad(
                    "cpu.period",
                    format!("{p} is out of the kernel's range 1000-1000000 microseconds"),
                ));
            }
        }
        if let Some(r) = c.realtime_runtime() {
            if r < -1 {
                return Err(bad(
                    "cpu.realtimeRuntime",
                    format!("{r} is negative (use -1 for unlimited)"),
                ));
            }
            if let Some(p) = c.realtime_period() {
                if r > 0 && p > 0 && r as u64 > p {
                    return Err(bad(
                        "cpu.realtimeRuntime",
                        format!("{r} exceeds realtimePeriod {p}"),
                    ));
                }
            }
        }
        if v2
            && (c.realtime_runtime().is_some_and(|r| r != 0)
                || c.realtime_period().is_some_and(|p| p != 0))
        {
            return Err(bad(
                "cpu.realtimeRuntime",
                "realtime limits are not supported on cgroup v2".into(),
            ));
        }
        if let Some(i) = c.idle() {
            if i != 0 && i != 1 {
                return Err(bad("cpu.idle", format!("{i} must be 0 or 1")));
            }
        }
        if let (Some(b), Some(q)) = (c.burst(), c.quota()) {
            if q > 0 && b > q as u64 {
                return Err(bad("cpu.burst", format!("{b} exceeds quota {q}")));
            }
        }
        if let Some(s) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            check_list("cpu.cpus", s)?;
        }
        if let Some(s) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            check_list("cpu.mems", s)?;
        }
    }
    if let Some(b) = res.block_io() {
        if let Some(w) = b.weight() {
            if w != 0 && !(10..=1000).contains(&w) {
                return Err(bad(
                    "blockIO.weight",
                    format!("{w} is out of range 10-1000"),
                ));
            }
        }
        if let Some(w) = b.leaf_weight() {
            if w != 0 && !(10..=1000).contains(&w) {
                return Err(bad(
                    "blockIO.leafWeight",
                    format!("{w} is out of range 10-1000"),
                ));
            }
            if v2 && w != 0 {
                return Err(bad(
                    "blockIO.leafWeight",
                    "not supported on cgroup v2".into(),
                ));
            }
        }
        for (i, d) in b.weight_device().iter().flatten().enumerate() {
            let f = format!("blockIO.weightDevice[{i}]");
            if d.major() < 0 || d.minor() < 0 {
                return Err(bad(
                    &f,
                    format!(
                        "device {}:{} is not a valid device number",
                        d.major(),
                        d.minor()
                    ),
                ));
            }
            if let Some(w) = d.weight() {
                if !(10..=1000).contains(&w) {
                    return Err(bad(
                        &format!("{f}.weight"),
                        format!("{w} is out of range 10-1000"),
                    ));
                }
            }
            if d.leaf_weight().is_some() && v2 {
                return Err(bad(
                    &format!("{f}.leafWeight"),
                    "not supported on cgroup v2".into(),
                ));
            }
        }
        for (name, list) in [
            ("throttleReadBpsDevice", b.throttle_read_bps_device()),
            ("throttleWriteBpsDevice", b.throttle_write_bps_device()),
            ("throttleReadIOPSDevice", b.throttle_read_iops_device()),
            ("throttleWriteIOPSDevice", b.throttle_write_iops_device()),
        ] {
            for (i, d) in list.iter().flatten().enumerate() {
                if d.major() < 0 || d.minor() < 0 {
                    return Err(bad(
                        &format!("blockIO.{name}[{i}]"),
                        format!(
                            "device {}:{} is not a valid device number",
                            d.major(),
                            d.minor()
                        ),
                    ));
                }
            }
        }
    }
    for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
        let f = format!("hugepageLimits[{i}].pageSize");
        let Some(bytes) = hugepage_bytes(h.page_size()) else {
            return Err(bad(
                &f,
                format!("{:?} is not a size like \"2MB\" or \"1GB\"", h.page_size()),
            ));
        };
        let dir = format!("/sys/kernel/mm/hugepages/hugepages-{}kB", bytes >> 10);
        if !std::path::Path::new(&dir).exists() {
            return Err(bad(
                &f,
                format!(
                    "{:?} is not a huge page size of this machine (no {dir})",
                    h.page_size()
                ),
            ));
        }
        if h.limit() < -1 {
            return Err(bad(
                &format!("hugepageLimits[{i}].limit"),
                format!("{} is negative", h.limit()),
            ));
        }
    }
    for (i, d) in res.devices().iter().flatten().enumerate() {
        let f = format!("devices[{i}]");
        if let Some(a) = d.access() {
            if a.is_empty() || !a.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
                return Err(bad(
                    &format!("{f}.access"),
                    format!("{a:?} must be made of the letters r, w, m"),
                ));
            }
        }
        if d.typ() == Some(oci_spec::runtime::LinuxDeviceType::P) {
            return Err(bad(
                &format!("{f}.type"),
                "FIFO (\"p\") rules are not supported by the devices cgroup".into(),
            ));
        }
        for (n, v) in [("major", d.major()), ("minor", d.minor())] {
            if v.is_some_and(|v| v < -1) {
                return Err(bad(
                    &format!("{f}.{n}"),
                    format!("{} is not a device number", v.unwrap_or(0)),
                ));
            }
        }
    }
    if let Some(n) = res.network() {
        if v2 && (n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty()))
        {
            return Err(bad(
                "network",
                "net_cls/net_prio do not exist on cgroup v2".into(),
            ));
        }
        for (i, p) in n.priorities().iter().flatten().enumerate() {
            let name = p.name();
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\n']) {
                return Err(bad(
                    &format!("network.priorities[{i}].name"),
                    format!("{name:?} is not an interface name"),
                ));
            }
        }
    }
    if res.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(bad("rdma", "rdma limits are not supported by cella".into()));
    }
    if let Some(u) = res.unified() {
        if layout == Layout::V1 {
            if let Some(k) = u.keys().next() {
                return Err(bad(
                    &format!("unified.{k}"),
                    "cgroup v2 is not mounted on this host".into(),
                ));
            }
        }
        let mut keys: Vec<&String> = u.keys().collect();
        keys.sort();
        for k in keys {
            check_unified_key(k, &u[k])?;
        }
    }
    Ok(())
}

/// The interface files of the core that make sense to set from a config.
const CORE_WRITABLE: &[&str] = &["cgroup.max.depth", "cgroup.max.descendants"];

/// A unified key must name one file of a controller (or an allowed core file).
pub(crate) fn check_unified_key(k: &str, v: &str) -> Result<(), CgroupError> {
    let f = format!("unified.{k}");
    let Some((ctrl, rest)) = k.split_once('.') else {
        return Err(bad(
            &f,
            "is not a cgroup v2 interface file (\"<controller>.<name>\")".into(),
        ));
    };
    if ctrl.is_empty() || rest.is_empty() || k.contains('/') || k.contains("..") {
        return Err(bad(
            &f,
            "is not a cgroup v2 interface file (\"<controller>.<name>\")".into(),
        ));
    }
    if ctrl == "cgroup" && !CORE_WRITABLE.contains(&k) {
        return Err(bad(
            &f,
            format!(
                "may not be set from a config (only {})",
                CORE_WRITABLE.join(", ")
            ),
        ));
    }
    if v.contains('\n') && !v.trim_end().lines().all(|l| !l.is_empty()) {
        return Err(bad(&f, format!("value {v:?} has empty lines")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(json: &str) -> LinuxResources {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn lists() {
        check_list("cpu.cpus", "0-3,5,7-8").unwrap();
        check_list("cpu.cpus", "0").unwrap();
        for bad in ["3-1", "a", "1,,2", "-1", "1-", " 1"] {
            let e = check_list("cpu.cpus", bad).unwrap_err().to_string();
            assert!(e.starts_with("linux.resources.cpu.cpus: "), "{e}");
        }
    }

    #[test]
    fn hugepage_sizes() {
        assert_eq!(hugepage_bytes("2MB"), Some(2 << 20));
        assert_eq!(hugepage_bytes("1GB"), Some(1 << 30));
        assert_eq!(hugepage_bytes("64KB"), Some(64 << 10));
        assert_eq!(hugepage_bytes("2M"), None);
        assert_eq!(hugepage_bytes("MB"), None);
    }

    #[test]
    fn memory_errors_name_the_field() {
        let e = validate(&res(r#"{"memory":{"limit":1000}}"#), Layout::V1)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("linux.resources.memory.limit: 1000 is below one page"),
            "{e}"
        );
        let e = validate(
            &res(r#"{"memory":{"limit":8388608,"swap":4194304}}"#),
            Layout::V1,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("linux.resources.memory.swap: 4194304 is below memory.limit"),
            "{e}"
        );
        let e = validate(&res(r#"{"memory":{"swap":4194304}}"#), Layout::Unified)
            .unwrap_err()
            .to_string();
        assert!(e.contains("without memory.limit"), "{e}");
        validate(
            &res(r#"{"memory":{"limit":-1,"swap":-1}}"#),
            Layout::Unified,
        )
        .unwrap();
        let e = validate(&res(r#"{"memory":{"swappiness":101}}"#), Layout::V1)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("linux.resources.memory.swappiness: "), "{e}");
    }

    #[test]
    fn cpu_and_unified_errors() {
        let e = validate(&res(r#"{"cpu":{"shares":1}}"#), Layout::V1)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("linux.resources.cpu.shares: 1 is out of range"),
            "{e}"
        );
        let e = validate(&res(r#"{"cpu":{"quota":500}}"#), Layout::V1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cpu.quota: 500 is below the kernel's minimum"),
            "{e}"
        );
        let e = validate(&res(r#"{"cpu":{"cpus":"0-x"}}"#), Layout::V1)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("linux.resources.cpu.cpus: "), "{e}");
        let e = validate(&res(r#"{"unified":{"memory.max":"1M"}}"#), Layout::V1)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "linux.resources.unified.memory.max: cgroup v2 is not mounted on this host"
        );
        let e = validate(&res(r#"{"unified":{"nodot":"1"}}"#), Layout::Unified)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("linux.resources.unified.nodot: "), "{e}");
        let e = validate(&res(r#"{"unified":{"cgroup.procs":"1"}}"#), Layout::Unified)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("linux.resources.unified.cgroup.procs: "),
            "{e}"
        );
        let e = validate(
            &res(r#"{"devices":[{"allow":true,"access":"rwx"}]}"#),
            Layout::V1,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("linux.resources.devices[0].access: "), "{e}");
    }
}
