//! `linux.resources` -> an ordered list of file writes. Building the plan reads (current
//! limits, which files exist) but never writes, so a bad value stops everything before
//! the first write.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources, LinuxThrottleDevice};
use serde::{Deserialize, Serialize};

use crate::validate::{MAX_SHARES, MIN_SHARES, hugepage_bytes, validate};
use crate::{Cgroup, CgroupError, Layout, fs};

/// One planned write of `value` to a cgroup file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The cgroup interface file.
    pub path: PathBuf,
    /// What to write (one write(2)).
    pub value: String,
}

/// cpu.shares (v1, 2..262144) to cpu.weight (v2, 1..10000), as runc does since 1.3: a
/// quadratic in log2 space that maps 2->1, 1024->100 (both defaults) and 262144->10000.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    if shares <= MIN_SHARES {
        return 1;
    }
    if shares >= MAX_SHARES {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    10f64.powf(exponent).ceil() as u64
}

/// blkio weight (v1, 10..1000) to io.weight (v2, 1..10000), runc's linear map.
pub fn blkio_weight_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    1 + (u64::from(w).saturating_sub(10)) * 9999 / 990
}

/// OCI memory.swap (memory+swap) to v2 memory.swap.max (swap alone); -1 is unlimited.
/// Returns `None` when nothing should be written.
pub fn swap_to_v2(swap: Option<i64>, limit: Option<i64>) -> Option<i64> {
    match (swap.unwrap_or(0), limit.unwrap_or(0)) {
        // Unlimited memory and no swap setting: unlimited swap too, as with v1.
        (0, -1) => Some(-1),
        (0, _) => None,
        (-1, _) => Some(-1),
        (s, -1) => Some(s),
        (s, l) => Some(s - l),
    }
}

fn num_v1(v: i64) -> String {
    v.to_string()
}

fn num_v2(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

fn field(f: &str) -> String {
    format!("linux.resources.{f}")
}

/// One v1 device-cgroup line per kernel rule. Type "a" with numbers is written as one
/// "b" and one "c" rule: the kernel reads any "a ..." as "all devices".
fn device_lines(r: &LinuxDeviceCgroup) -> Vec<String> {
    let num = |n: Option<i64>| {
        n.filter(|n| *n >= 0)
            .map_or("*".to_string(), |n| n.to_string())
    };
    let (maj, min) = (num(r.major()), num(r.minor()));
    let access = r
        .access()
        .clone()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "rwm".into());
    let full = ['r', 'w', 'm'].iter().all(|c| access.contains(*c));
    match r.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A if maj == "*" && min == "*" && full => vec!["a".into()],
        LinuxDeviceType::A => vec![
            format!("b {maj}:{min} {access}"),
            format!("c {maj}:{min} {access}"),
        ],
        LinuxDeviceType::B => vec![format!("b {maj}:{min} {access}")],
        // "u" (unbuffered) is a character device to the kernel; "p" is refused by validate.
        _ => vec![format!("c {maj}:{min} {access}")],
    }
}

/// Collects writes, checking each file exists so the error names the field.
struct Plan {
    writes: Vec<Write>,
}

impl Plan {
    fn push(&mut self, dir: &Path, file: &str, value: String) {
        self.writes.push(Write {
            path: dir.join(file),
            value,
        });
    }

    /// Like `push`, but the file must exist on this kernel (when the directory does).
    fn push_checked(
        &mut self,
        f: &str,
        dir: &Path,
        file: &str,
        value: String,
    ) -> Result<(), CgroupError> {
        let path = dir.join(file);
        if dir.exists() && !path.exists() {
            return Err(CgroupError::invalid(
                field(f),
                format!("this kernel has no `{}`", path.display()),
            ));
        }
        self.push(dir, file, value);
        Ok(())
    }
}

/// The first of `files` that exists in `dir` (for files that moved between kernels).
fn first_existing<'a>(dir: &Path, files: &[&'a str]) -> Option<&'a str> {
    if !dir.exists() {
        return files.first().copied();
    }
    files.iter().copied().find(|f| dir.join(f).exists())
}

impl Cgroup {
    fn need_v1(&self, ctrl: &str, f: &str) -> Result<&Path, CgroupError> {
        self.v1_dir(ctrl).ok_or_else(|| {
            CgroupError::invalid(
                field(f),
                format!("the {ctrl} cgroup controller is not mounted on this host"),
            )
        })
    }

    fn need_v2(&self, ctrl: &str, f: &str) -> Result<&Path, CgroupError> {
        let u = self.unified.as_ref().ok_or_else(|| {
            CgroupError::invalid(field(f), "cgroup v2 is not mounted on this host")
        })?;
        if ctrl != "cgroup" && !u.controllers.iter().any(|c| c == ctrl) {
            let why = if self.layout == Layout::Hybrid {
                "it is not in cgroup v2 on this hybrid host"
            } else {
                "it is not available"
            };
            return Err(CgroupError::invalid(
                field(f),
                format!(
                    "the {ctrl} controller is needed but {why} (`{}` lists: {:?})",
                    u.base.join("cgroup.controllers").display(),
                    u.controllers.join(" ")
                ),
            ));
        }
        // Once created, the leaf shows what its parent really enabled (enabling fails
        // silently-but-recorded when the parent holds processes).
        if ctrl != "cgroup" {
            if let Some(leaf) = fs::read_opt(&u.dir.join("cgroup.controllers"))? {
                if !leaf.split_whitespace().any(|c| c == ctrl) {
                    return Err(CgroupError::invalid(
                        field(f),
                        format!(
                            "the {ctrl} controller is not enabled for `{}` (its parent's cgroup.subtree_control lacks it; a parent that holds processes cannot enable controllers)",
                            u.dir.display()
                        ),
                    ));
                }
            }
        }
        Ok(&u.dir)
    }

    /// Validate `res` for this host and return the writes [`apply`](Self::apply) would do.
    pub fn plan(&self, res: &LinuxResources) -> Result<Vec<Write>, CgroupError> {
        validate(res, self.layout)?;
        let mut p = Plan { writes: Vec::new() };
        if self.layout == Layout::Unified {
            self.plan_v2(res, &mut p)?;
        } else {
            self.plan_v1(res, &mut p)?;
        }
        if let Some(u) = res.unified() {
            let mut keys: Vec<&String> = u.keys().collect();
            keys.sort();
            for k in keys {
                let ctrl = k.split_once('.').map_or(k.as_str(), |(c, _)| c);
                let dir = self.need_v2(ctrl, &format!("unified.{k}"))?.to_owned();
                p.push_checked(&format!("unified.{k}"), &dir, k, u[k].clone())?;
            }
        }
        Ok(p.writes)
    }

    fn hugetlb(&self, res: &LinuxResources, p: &mut Plan, v2: bool) -> Result<(), CgroupError> {
        for (i, h) in res.hugepage_limits().iter().flatten().enumerate() {
            let f = format!("hugepageLimits[{i}]");
            // Validation guarantees the size parses.
            let size = h.page_size();
            let _ = hugepage_bytes(size);
            if !v2 {
                if let Some(d) = self.v1_dir("hugetlb") {
                    let d = d.to_owned();
                    p.push_checked(
                        &f,
                        &d,
                        &format!("hugetlb.{size}.limit_in_bytes"),
                        num_v1(h.limit()),
                    )?;
                    continue;
                }
            }
            let d = self.need_v2("hugetlb", &f)?.to_owned();
            p.push_checked(&f, &d, &format!("hugetlb.{size}.max"), num_v2(h.limit()))?;
        }
        Ok(())
    }

    fn plan_v1(&self, res: &LinuxResources, p: &mut Plan) -> Result<(), CgroupError> {
        if let Some(m) = res.memory() {
            let touched = [m.limit(), m.swap(), m.reservation(), m.kernel_tcp()]
                .iter()
                .any(|v| v.is_some_and(|v| v != 0))
                || m.swappiness().is_some()
                || m.disable_oom_killer() == Some(true);
            if touched {
                let d = self.need_v1("memory", "memory")?.to_owned();
                let limit = m.limit().unwrap_or(0);
                let mut swap = m.swap().unwrap_or(0);
                if limit == -1 && swap == 0 {
                    swap = -1;
                }
                // The hierarchy root has the file too, so this works before create.
                let root = self
                    .v1
                    .iter()
                    .find(|h| h.dir == d)
                    .map_or(d.clone(), |h| h.mount_point.clone());
                let have_memsw = root.join("memory.memsw.limit_in_bytes").exists();
                if swap > 0 && !have_memsw {
                    return Err(CgroupError::invalid(
                        field("memory.swap"),
                        "swap accounting is off in this kernel (no memory.memsw.limit_in_bytes)",
                    ));
                }
                if !have_memsw {
                    // Without swap accounting there is no memsw limit to lift.
                    swap = 0;
                }
                let lim = |p: &mut Plan| p.push(&d, "memory.limit_in_bytes", num_v1(limit));
                let sw = |p: &mut Plan| p.push(&d, "memory.memsw.limit_in_bytes", num_v1(swap));
                if limit != 0 && swap != 0 {
                    // The kernel wants limit <= memsw at every step: raise memsw first
                    // when the new memsw is above the current limit.
                    let cur =
                        fs::read_u64_opt(&d.join("memory.limit_in_bytes"))?.unwrap_or(u64::MAX);
                    if swap == -1 || (cur as i128) < i128::from(swap) {
                        sw(p);
                        lim(p);
                    } else {
                        lim(p);
                        sw(p);
                    }
                } else {
                    if limit != 0 {
                        lim(p);
                    }
                    if swap != 0 {
                        sw(p);
                    }
                }
                if let Some(r) = m.reservation().filter(|r| *r != 0) {
                    p.push(&d, "memory.soft_limit_in_bytes", num_v1(r));
                }
                if let Some(k) = m.kernel_tcp().filter(|k| *k != 0) {
                    p.push_checked(
                        "memory.kernelTCP",
                        &d,
                        "memory.kmem.tcp.limit_in_bytes",
                        num_v1(k),
                    )?;
                }
                if let Some(s) = m.swappiness() {
                    p.push_checked("memory.swappiness", &d, "memory.swappiness", s.to_string())?;
                }
                if m.disable_oom_killer() == Some(true) {
                    p.push(&d, "memory.oom_control", "1".into());
                }
            }
        }
        if let Some(c) = res.cpu() {
            let cpu_set = c.shares().is_some_and(|v| v != 0)
                || c.quota().is_some_and(|v| v != 0)
                || c.period().is_some_and(|v| v != 0)
                || c.burst().is_some()
                || c.realtime_runtime().is_some_and(|v| v != 0)
                || c.realtime_period().is_some_and(|v| v != 0)
                || c.idle().is_some();
            if cpu_set {
                let d = self.need_v1("cpu", "cpu")?.to_owned();
                if let Some(s) = c.shares().filter(|s| *s != 0) {
                    p.push(&d, "cpu.shares", s.to_string());
                }
                if let Some(v) = c.period().filter(|v| *v != 0) {
                    p.push(&d, "cpu.cfs_period_us", v.to_string());
                }
                if let Some(v) = c.quota().filter(|v| *v != 0) {
                    p.push(&d, "cpu.cfs_quota_us", v.to_string());
                }
                if let Some(v) = c.burst() {
                    p.push_checked("cpu.burst", &d, "cpu.cfs_burst_us", v.to_string())?;
                }
                if let Some(v) = c.realtime_period().filter(|v| *v != 0) {
                    p.push_checked("cpu.realtimePeriod", &d, "cpu.rt_period_us", v.to_string())?;
                }
                if let Some(v) = c.realtime_runtime().filter(|v| *v != 0) {
                    p.push_checked(
                        "cpu.realtimeRuntime",
                        &d,
                        "cpu.rt_runtime_us",
                        v.to_string(),
                    )?;
                }
                if let Some(v) = c.idle() {
                    p.push_checked("cpu.idle", &d, "cpu.idle", v.to_string())?;
                }
            }
            for (f, file, v) in [
                ("cpu.cpus", "cpuset.cpus", c.cpus()),
                ("cpu.mems", "cpuset.mems", c.mems()),
            ] {
                if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                    let d = self.need_v1("cpuset", f)?.to_owned();
                    p.push(&d, file, v.to_string());
                }
            }
        }
        if let Some(l) = res.pids().map(|p| p.limit()).filter(|l| *l != 0) {
            let d = self.need_v1("pids", "pids.limit")?.to_owned();
            p.push(&d, "pids.max", num_v2(l));
        }
        if let Some(b) = res.block_io() {
            let any = b.weight().is_some_and(|w| w != 0)
                || b.leaf_weight().is_some_and(|w| w != 0)
                || [
                    b.throttle_read_bps_device(),
                    b.throttle_write_bps_device(),
                    b.throttle_read_iops_device(),
                    b.throttle_write_iops_device(),
                ]
                .iter()
                .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()))
                || b.weight_device().as_ref().is_some_and(|l| !l.is_empty());
            if any {
                let d = self.need_v1("blkio", "blockIO")?.to_owned();
                // CFQ had blkio.weight; since Linux 5.0 only BFQ's blkio.bfq.weight exists.
                let wfile = first_existing(&d, &["blkio.weight", "blkio.bfq.weight"]);
                let wdfile =
                    first_existing(&d, &["blkio.weight_device", "blkio.bfq.weight_device"]);
                if let Some(w) = b.weight().filter(|w| *w != 0) {
                    let file = wfile.ok_or_else(|| {
                        CgroupError::invalid(
                            field("blockIO.weight"),
                            "this kernel has no blkio.weight or blkio.bfq.weight",
                        )
                    })?;
                    p.push(&d, file, w.to_string());
                }
                if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
                    p.push_checked("blockIO.leafWeight", &d, "blkio.leaf_weight", w.to_string())?;
                }
                for (i, wd) in b.weight_device().iter().flatten().enumerate() {
                    let f = format!("blockIO.weightDevice[{i}]");
                    if let Some(w) = wd.weight() {
                        let file = wdfile.ok_or_else(|| {
                            CgroupError::invalid(
                                field(&f),
                                "this kernel has no blkio.weight_device or blkio.bfq.weight_device",
                            )
                        })?;
                        p.push(&d, file, format!("{}:{} {w}", wd.major(), wd.minor()));
                    }
                    if let Some(w) = wd.leaf_weight() {
                        p.push_checked(
                            &f,
                            &d,
                            "blkio.leaf_weight_device",
                            format!("{}:{} {w}", wd.major(), wd.minor()),
                        )?;
                    }
                }
                let throttles: [(&str, &Option<Vec<LinuxThrottleDevice>>, &str); 4] = [
                    (
                        "throttleReadBpsDevice",
                        b.throttle_read_bps_device(),
                        "blkio.throttle.read_bps_device",
                    ),
                    (
                        "throttleWriteBpsDevice",
                        b.throttle_write_bps_device(),
                        "blkio.throttle.write_bps_device",
                    ),
                    (
                        "throttleReadIOPSDevice",
                        b.throttle_read_iops_device(),
                        "blkio.throttle.read_iops_device",
                    ),
                    (
                        "throttleWriteIOPSDevice",
                        b.throttle_write_iops_device(),
                        "blkio.throttle.write_iops_device",
                    ),
                ];
                for (name, list, file) in throttles {
                    for (i, t) in list.iter().flatten().enumerate() {
                        p.push_checked(
                            &format!("blockIO.{name}[{i}]"),
                            &d,
                            file,
                            format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                        )?;
                    }
                }
            }
        }
        self.hugetlb(res, p, false)?;
        if let Some(devs) = res.devices().as_ref().filter(|d| !d.is_empty()) {
            let d = self.need_v1("devices", "devices")?.to_owned();
            for r in devs {
                let file = if r.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                for line in device_lines(r) {
                    p.push(&d, file, line);
                }
            }
        }
        if let Some(n) = res.network() {
            if let Some(id) = n.class_id() {
                let d = self.need_v1("net_cls", "network.classID")?.to_owned();
                p.push(&d, "net_cls.classid", id.to_string());
            }
            for (i, pr) in n.priorities().iter().flatten().enumerate() {
                let d = self
                    .need_v1("net_prio", &format!("network.priorities[{i}]"))?
                    .to_owned();
                p.push(
                    &d,
                    "net_prio.ifpriomap",
                    format!("{} {}", pr.name(), pr.priority()),
                );
            }
        }
        Ok(())
    }

    fn plan_v2(&self, res: &LinuxResources, p: &mut Plan) -> Result<(), CgroupError> {
        if let Some(m) = res.memory() {
            let swap = swap_to_v2(m.swap(), m.limit());
            let any = m.limit().is_some_and(|v| v != 0)
                || swap.is_some()
                || m.reservation().is_some_and(|v| v != 0);
            if any {
                let d = self.need_v2("memory", "memory")?.to_owned();
                if let Some(s) = swap {
                    p.push_checked("memory.swap", &d, "memory.swap.max", num_v2(s))?;
                }
                if let Some(l) = m.limit().filter(|l| *l != 0) {
                    p.push(&d, "memory.max", num_v2(l));
                }
                if let Some(r) = m.reservation().filter(|r| *r != 0) {
                    p.push(&d, "memory.low", num_v2(r));
                }
            }
        }
        if let Some(c) = res.cpu() {
            let (quota, period) = (c.quota().unwrap_or(0), c.period().unwrap_or(0));
            let any = c.shares().is_some_and(|v| v != 0)
                || quota != 0
                || period != 0
                || c.burst().is_some()
                || c.idle().is_some();
            if any {
                let d = self.need_v2("cpu", "cpu")?.to_owned();
                if let Some(s) = c.shares().filter(|s| *s != 0) {
                    p.push(&d, "cpu.weight", cpu_shares_to_weight(s).to_string());
                }
                if quota != 0 || period != 0 {
                    let mut v = if quota > 0 {
                        quota.to_string()
                    } else {
                        "max".to_string()
                    };
                    if period != 0 {
                        v = format!("{v} {period}");
                    }
                    p.push(&d, "cpu.max", v);
                }
                if let Some(b) = c.burst() {
                    p.push_checked("cpu.burst", &d, "cpu.max.burst", b.to_string())?;
                }
                if let Some(i) = c.idle() {
                    p.push_checked("cpu.idle", &d, "cpu.idle", i.to_string())?;
                }
            }
            for (f, file, v) in [
                ("cpu.cpus", "cpuset.cpus", c.cpus()),
                ("cpu.mems", "cpuset.mems", c.mems()),
            ] {
                if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                    let d = self.need_v2("cpuset", f)?.to_owned();
                    p.push(&d, file, v.to_string());
                }
            }
        }
        if let Some(l) = res.pids().map(|p| p.limit()).filter(|l| *l != 0) {
            let d = self.need_v2("pids", "pids.limit")?.to_owned();
            p.push(&d, "pids.max", num_v2(l));
        }
        if let Some(b) = res.block_io() {
            let throttles = [
                (b.throttle_read_bps_device(), "rbps"),
                (b.throttle_write_bps_device(), "wbps"),
                (b.throttle_read_iops_device(), "riops"),
                (b.throttle_write_iops_device(), "wiops"),
            ];
            let any = b.weight().is_some_and(|w| w != 0)
                || b.weight_device().as_ref().is_some_and(|l| !l.is_empty())
                || throttles
                    .iter()
                    .any(|(l, _)| l.as_ref().is_some_and(|l| !l.is_empty()));
            if any {
                let d = self.need_v2("io", "blockIO")?.to_owned();
                // BFQ takes the v1 weight range as is; io.weight needs the conversion.
                let bfq = d.join("io.bfq.weight").exists();
                if let Some(w) = b.weight().filter(|w| *w != 0) {
                    if bfq {
                        p.push(&d, "io.bfq.weight", w.to_string());
                    } else {
                        p.push_checked(
                            "blockIO.weight",
                            &d,
                            "io.weight",
                            blkio_weight_to_io_weight(w).to_string(),
                        )?;
                    }
                }
                for wd in b.weight_device().iter().flatten() {
                    if let Some(w) = wd.weight() {
                        if bfq {
                            p.push(
                                &d,
                                "io.bfq.weight",
                                format!("{}:{} {w}", wd.major(), wd.minor()),
                            );
                        } else {
                            p.push(
                                &d,
                                "io.weight",
                                format!(
                                    "{}:{} {}",
                                    wd.major(),
                                    wd.minor(),
                                    blkio_weight_to_io_weight(w)
                                ),
                            );
                        }
                    }
                }
                for (list, key) in throttles {
                    for t in list.iter().flatten() {
                        p.push(
                            &d,
                            "io.max",
                            format!("{}:{} {key}={}", t.major(), t.minor(), t.rate()),
                        );
                    }
                }
            }
        }
        self.hugetlb(res, p, true)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight_matches_runc() {
        assert_eq!(cpu_shares_to_weight(0), 0);
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 100);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
        assert!(cpu_shares_to_weight(512) < 100 && cpu_shares_to_weight(2048) > 100);
    }

    #[test]
    fn blkio_and_swap_conversions() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(500), 1 + 490 * 9999 / 990);
        assert_eq!(swap_to_v2(Some(200), Some(100)), Some(100));
        assert_eq!(swap_to_v2(None, Some(-1)), Some(-1));
        assert_eq!(swap_to_v2(Some(-1), Some(100)), Some(-1));
        assert_eq!(swap_to_v2(None, Some(100)), None);
    }

    /// A pure-v2 cgroup whose directory does not exist: planning reads nothing from it.
    fn v2_double() -> Cgroup {
        Cgroup {
            layout: Layout::Unified,
            v1: Vec::new(),
            unified: Some(crate::UnifiedDir {
                mount_point: "/nonexistent".into(),
                base: "/nonexistent".into(),
                dir: "/nonexistent/c".into(),
                controllers: ["cpuset", "cpu", "io", "memory", "hugetlb", "pids"]
                    .map(String::from)
                    .to_vec(),
            }),
            systemd: None,
        }
    }

    fn writes(cg: &Cgroup, json: &str) -> Vec<(String, String)> {
        let res: LinuxResources = serde_json::from_str(json).unwrap();
        cg.plan(&res)
            .unwrap()
            .into_iter()
            .map(|w| {
                (
                    w.path.file_name().unwrap().to_string_lossy().into_owned(),
                    w.value,
                )
            })
            .collect()
    }

    #[test]
    fn v2_plan_converts_v1_values() {
        let got = writes(
            &v2_double(),
            r#"{"memory":{"limit":67108864,"swap":134217728,"reservation":33554432},
                "cpu":{"shares":1024,"quota":50000,"period":100000,"burst":1000,"cpus":"0-1","mems":"0"},
                "pids":{"limit":-1},
                "blockIO":{"weight":500,"weightDevice":[{"major":8,"minor":0,"weight":1000}],
                           "throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1048576}],
                           "throttleWriteIOPSDevice":[{"major":8,"minor":0,"rate":100}]},
                "hugepageLimits":[{"pageSize":"2MB","limit":-1}],
                "unified":{"cpu.weight":"7"}}"#,
        );
        let want: Vec<(String, String)> = [
            ("memory.swap.max", "67108864"),
            ("memory.max", "67108864"),
            ("memory.low", "33554432"),
            ("cpu.weight", "100"),
            ("cpu.max", "50000 100000"),
            ("cpu.max.burst", "1000"),
            ("cpuset.cpus", "0-1"),
            ("cpuset.mems", "0"),
            ("pids.max", "max"),
            ("io.weight", "4950"),
            ("io.weight", "8:0 10000"),
            ("io.max", "8:0 rbps=1048576"),
            ("io.max", "8:0 wiops=100"),
            ("hugetlb.2MB.max", "max"),
            // unified keys come last, so they override converted values
            ("cpu.weight", "7"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn v2_plan_edge_cases() {
        let cg = v2_double();
        assert_eq!(
            writes(&cg, r#"{"cpu":{"period":50000}}"#),
            vec![("cpu.max".into(), "max 50000".into())]
        );
        assert_eq!(
            writes(&cg, r#"{"memory":{"limit":-1}}"#),
            vec![
                ("memory.swap.max".into(), "max".into()),
                ("memory.max".into(), "max".into())
            ]
        );
        let mut no_mem = v2_double();
        no_mem
            .unified
            .as_mut()
            .unwrap()
            .controllers
            .retain(|c| c != "memory");
        let res: LinuxResources = serde_json::from_str(r#"{"memory":{"limit":67108864}}"#).unwrap();
        let e = no_mem.plan(&res).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "linux.resources.memory: the memory controller is needed but it is not available"
            ),
            "{e}"
        );
        let res: LinuxResources =
            serde_json::from_str(r#"{"devices":[{"allow":false,"access":"rwm"}]}"#).unwrap();
        assert!(cg.plan(&res).unwrap().is_empty());
        let res: LinuxResources =
            serde_json::from_str(r#"{"memory":{"kernelTCP":1048576}}"#).unwrap();
        assert_eq!(
            cg.plan(&res).unwrap_err().to_string(),
            "linux.resources.memory.kernelTCP: not supported on cgroup v2"
        );
    }

    #[test]
    fn device_rule_lines() {
        let r: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow":false,"access":"rwm"}"#).unwrap();
        assert_eq!(device_lines(&r), vec!["a"]);
        let r: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}"#)
                .unwrap();
        assert_eq!(device_lines(&r), vec!["c 1:3 rwm"]);
        let r: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow":true,"type":"a","major":136,"access":"rw"}"#).unwrap();
        assert_eq!(device_lines(&r), vec!["b 136:* rw", "c 136:* rw"]);
        let r: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow":true,"type":"u","major":5,"minor":2}"#).unwrap();
        assert_eq!(device_lines(&r), vec!["c 5:2 rwm"]);
    }
}
