//! Usage statistics, shaped like runc's `types.Stats` so `events --stats` can print the
//! same JSON (field names and omitted zero values included).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Cgroup, CgroupError, Layout, fs, sys};

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// All statistics of a cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// CPU time and throttling.
    pub cpu: CpuStats,
    /// Memory usage and limits.
    pub memory: MemoryStats,
    /// Process counts.
    pub pids: PidsStats,
    /// Block I/O counters.
    pub blkio: BlkioStats,
    /// Huge page usage by page size ("2MB", "1GB").
    pub hugetlb: BTreeMap<String, HugetlbStats>,
}

/// CPU statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuStats {
    /// Time used.
    pub usage: CpuUsage,
    /// CFS bandwidth throttling.
    pub throttling: Throttling,
}

/// CPU time in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CpuUsage {
    /// Total time.
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
    /// Total time per CPU (v1 only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    /// Kernel-mode time per CPU (v1 only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    /// User-mode time per CPU (v1 only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    /// Kernel-mode time.
    pub kernel: u64,
    /// User-mode time.
    pub user: u64,
}

/// CFS throttling counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Throttling {
    /// Enforcement periods elapsed.
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    /// Periods in which the group was throttled.
    #[serde(rename = "throttledPeriods", skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    /// Total time throttled, nanoseconds.
    #[serde(rename = "throttledTime", skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

/// Usage and limit of one memory counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryEntry {
    /// The limit (`u64::MAX`-ish when unlimited, as the kernel reports it).
    pub limit: u64,
    /// Current usage.
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Peak usage.
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    /// Times the limit was hit.
    pub failcnt: u64,
}

/// Memory statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryStats {
    /// Page cache (v1 "cache", v2 "file").
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    /// Memory.
    pub usage: MemoryEntry,
    /// Memory+swap (v2 values are summed to match v1's meaning, as runc does).
    pub swap: MemoryEntry,
    /// Kernel memory (v1).
    pub kernel: MemoryEntry,
    /// Kernel TCP buffers (v1).
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    /// memory.stat as is.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub raw: BTreeMap<String, u64>,
}

/// Process counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PidsStats {
    /// Processes (tasks) now.
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    /// The limit; 0 when unlimited.
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

/// One per-device, per-operation counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlkioEntry {
    /// Device major number.
    #[serde(skip_serializing_if = "is_zero")]
    pub major: u64,
    /// Device minor number.
    #[serde(skip_serializing_if = "is_zero")]
    pub minor: u64,
    /// "Read", "Write", ...
    #[serde(skip_serializing_if = "String::is_empty")]
    pub op: String,
    /// The count.
    #[serde(skip_serializing_if = "is_zero")]
    pub value: u64,
}

/// Block I/O statistics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlkioStats {
    /// Bytes transferred.
    #[serde(
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    /// I/O operations.
    #[serde(rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// Huge page statistics of one page size.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HugetlbStats {
    /// Bytes in use.
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    /// Peak bytes (v1 only).
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    /// Allocations refused by the limit.
    pub failcnt: u64,
}

fn num(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    Ok(fs::read_u64_opt(&dir.join(file))?.unwrap_or(0))
}

fn keyed(dir: &Path, file: &str) -> Result<BTreeMap<String, u64>, CgroupError> {
    Ok(fs::read_opt(&dir.join(file))?
        .map(|t| fs::parse_flat_keyed(&t).into_iter().collect())
        .unwrap_or_default())
}

fn list(dir: &Path, file: &str) -> Result<Vec<u64>, CgroupError> {
    let path = dir.join(file);
    let Some(t) = fs::read_opt(&path)? else {
        return Ok(Vec::new());
    };
    t.split_whitespace()
        .map(|v| fs::parse_u64(&path, v))
        .collect()
}

fn entry(dir: &Path, prefix: &str) -> Result<MemoryEntry, CgroupError> {
    Ok(MemoryEntry {
        usage: num(dir, &format!("{prefix}.usage_in_bytes"))?,
        max: num(dir, &format!("{prefix}.max_usage_in_bytes"))?,
        limit: num(dir, &format!("{prefix}.limit_in_bytes"))?,
        failcnt: num(dir, &format!("{prefix}.failcnt"))?,
    })
}

/// Parse v1 blkio "maj:min Op value" lines (the "Total" line is dropped).
pub(crate) fn parse_blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let dev = it.next()?;
            let op = it.next()?;
            let value = it.next()?.parse().ok()?;
            let (ma, mi) = dev.split_once(':')?;
            Some(BlkioEntry {
                major: ma.parse().ok()?,
                minor: mi.parse().ok()?,
                op: op.to_owned(),
                value,
            })
        })
        .collect()
}

/// Parse v2 io.stat ("maj:min rbytes=.. wbytes=.. rios=.. wios=..") into bytes and ios.
pub(crate) fn parse_io_stat(text: &str) -> (Vec<BlkioEntry>, Vec<BlkioEntry>) {
    let (mut bytes, mut ios) = (Vec::new(), Vec::new());
    for l in text.lines() {
        let mut it = l.split_whitespace();
        let Some((ma, mi)) = it.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (ma.parse::<u64>(), mi.parse::<u64>()) else {
            continue;
        };
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse::<u64>() else {
                continue;
            };
            let (target, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "dbytes" => (&mut bytes, "Discard"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                "dios" => (&mut ios, "Discard"),
                _ => continue,
            };
            target.push(BlkioEntry {
                major,
                minor,
                op: op.into(),
                value,
            });
        }
    }
    (bytes, ios)
}

/// Huge page sizes of this machine in the kernel's cgroup naming ("2MB", "1GB").
pub(crate) fn hugepage_sizes() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/kernel/mm/hugepages") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(kb) = name
                .strip_prefix("hugepages-")
                .and_then(|s| s.strip_suffix("kB"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            out.push(if kb >= 1 << 20 {
                format!("{}GB", kb >> 20)
            } else if kb >= 1 << 10 {
                format!("{}MB", kb >> 10)
            } else {
                format!("{kb}KB")
            });
        }
    }
    out.sort();
    out
}

impl Cgroup {
    /// Read the statistics of every controller this cgroup has.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        if let Some(first) = self.dirs().first() {
            if !first.is_dir() {
                return Err(CgroupError::Open {
                    path: first.to_path_buf(),
                    source: std::io::Error::from_raw_os_error(libc::ENOENT),
                });
            }
        }
        let mut s = Stats::default();
        if self.layout == Layout::Unified {
            if let Some(d) = self.unified_dir() {
                v2_stats(d, &mut s)?;
            }
            return Ok(s);
        }
        if let Some(d) = self.v1_dir("cpuacct") {
            let u = &mut s.cpu.usage;
            u.total = num(d, "cpuacct.usage")?;
            u.percpu = list(d, "cpuacct.usage_percpu")?;
            u.percpu_user = list(d, "cpuacct.usage_percpu_user")?;
            u.percpu_kernel = list(d, "cpuacct.usage_percpu_sys")?;
            if d.join("cpuacct.usage_user").exists() {
                u.user = num(d, "cpuacct.usage_user")?;
                u.kernel = num(d, "cpuacct.usage_sys")?;
            } else {
                let st = keyed(d, "cpuacct.stat")?;
                let ns = 1_000_000_000 / sys::clock_ticks();
                u.user = st.get("user").copied().unwrap_or(0) * ns;
                u.kernel = st.get("system").copied().unwrap_or(0) * ns;
            }
        }
        if let Some(d) = self.v1_dir("cpu") {
            let st = keyed(d, "cpu.stat")?;
            let t = &mut s.cpu.throttling;
            t.periods = st.get("nr_periods").copied().unwrap_or(0);
            t.throttled_periods = st.get("nr_throttled").copied().unwrap_or(0);
            t.throttled_time = st.get("throttled_time").copied().unwrap_or(0);
        }
        if let Some(d) = self.v1_dir("memory") {
            let m = &mut s.memory;
            m.usage = entry(d, "memory")?;
            m.swap = entry(d, "memory.memsw")?;
            m.kernel = entry(d, "memory.kmem")?;
            m.kernel_tcp = entry(d, "memory.kmem.tcp")?;
            m.raw = keyed(d, "memory.stat")?;
            m.cache = m.raw.get("cache").copied().unwrap_or(0);
        }
        if let Some(d) = self.v1_dir("pids") {
            s.pids.current = num(d, "pids.current")?;
            s.pids.limit = num(d, "pids.max")?;
            if s.pids.limit == u64::MAX {
                s.pids.limit = 0;
            }
        }
        if let Some(d) = self.v1_dir("blkio") {
            // CFQ's files are gone since Linux 5.0; BFQ's count only BFQ-scheduled disks,
            // the throttle layer's count every disk.
            let pairs = [
                (
                    "blkio.io_service_bytes_recursive",
                    "blkio.io_serviced_recursive",
                ),
                (
                    "blkio.bfq.io_service_bytes_recursive",
                    "blkio.bfq.io_serviced_recursive",
                ),
                (
                    "blkio.throttle.io_service_bytes_recursive",
                    "blkio.throttle.io_serviced_recursive",
                ),
            ];
            for (bytes, ios) in pairs {
                let b = parse_blkio_v1(&fs::read_opt(&d.join(bytes))?.unwrap_or_default());
                if !b.is_empty() {
                    s.blkio.io_service_bytes_recursive = b;
                    s.blkio.io_serviced_recursive =
                        parse_blkio_v1(&fs::read_opt(&d.join(ios))?.unwrap_or_default());
                    break;
                }
            }
        }
        if let Some(d) = self.v1_dir("hugetlb") {
            for size in hugepage_sizes() {
                s.hugetlb.insert(
                    size.clone(),
                    HugetlbStats {
                        usage: num(d, &format!("hugetlb.{size}.usage_in_bytes"))?,
                        max: num(d, &format!("hugetlb.{size}.max_usage_in_bytes"))?,
                        failcnt: num(d, &format!("hugetlb.{size}.failcnt"))?,
                    },
                );
            }
        } else if let Some(d) = self.unified_dir() {
            v2_hugetlb(d, &mut s)?;
        }
        Ok(s)
    }
}

fn v2_hugetlb(d: &Path, s: &mut Stats) -> Result<(), CgroupError> {
    for size in hugepage_sizes() {
        if !d.join(format!("hugetlb.{size}.current")).exists() {
            continue;
        }
        let events = keyed(d, &format!("hugetlb.{size}.events"))?;
        s.hugetlb.insert(
            size.clone(),
            HugetlbStats {
                usage: num(d, &format!("hugetlb.{size}.current"))?,
                max: 0,
                failcnt: events.get("max").copied().unwrap_or(0),
            },
        );
    }
    Ok(())
}

fn v2_stats(d: &Path, s: &mut Stats) -> Result<(), CgroupError> {
    let cpu = keyed(d, "cpu.stat")?;
    let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
    s.cpu.usage.total = get(&cpu, "usage_usec") * 1000;
    s.cpu.usage.user = get(&cpu, "user_usec") * 1000;
    s.cpu.usage.kernel = get(&cpu, "system_usec") * 1000;
    s.cpu.throttling.periods = get(&cpu, "nr_periods");
    s.cpu.throttling.throttled_periods = get(&cpu, "nr_throttled");
    s.cpu.throttling.throttled_time = get(&cpu, "throttled_usec") * 1000;
    if d.join("memory.current").exists() {
        let m = &mut s.memory;
        let events = keyed(d, "memory.events")?;
        m.usage = MemoryEntry {
            usage: num(d, "memory.current")?,
            max: num(d, "memory.peak")?,
            limit: num(d, "memory.max")?,
            failcnt: events.get("max").copied().unwrap_or(0),
        };
        if d.join("memory.swap.current").exists() {
            // v1's memsw is memory+swap; report the same sums, as runc does.
            let swap_max = num(d, "memory.swap.max")?;
            m.swap = MemoryEntry {
                usage: num(d, "memory.swap.current")?.saturating_add(m.usage.usage),
                max: num(d, "memory.swap.peak")?.saturating_add(m.usage.max),
                limit: swap_max.saturating_add(m.usage.limit),
                failcnt: keyed(d, "memory.swap.events")?
                    .get("max")
                    .copied()
                    .unwrap_or(0),
            };
        }
        m.raw = keyed(d, "memory.stat")?;
        m.cache = m.raw.get("file").copied().unwrap_or(0);
    }
    if d.join("pids.current").exists() {
        s.pids.current = num(d, "pids.current")?;
        s.pids.limit = num(d, "pids.max")?;
        if s.pids.limit == u64::MAX {
            s.pids.limit = 0;
        }
    }
    if let Some(t) = fs::read_opt(&d.join("io.stat"))? {
        let (bytes, ios) = parse_io_stat(&t);
        s.blkio.io_service_bytes_recursive = bytes;
        s.blkio.io_serviced_recursive = ios;
    }
    v2_hugetlb(d, s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_v1_lines() {
        let e = parse_blkio_v1("254:0 Read 4096\n254:0 Write 0\nTotal 4096\n");
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].major, e[0].minor, e[0].op.as_str(), e[0].value),
            (254, 0, "Read", 4096)
        );
    }

    #[test]
    fn io_stat_lines() {
        let (b, i) = parse_io_stat("254:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(
            b.iter().map(|e| e.value).collect::<Vec<_>>(),
            vec![10, 20, 0]
        );
        assert_eq!(i[1].op, "Write");
    }

    #[test]
    fn json_matches_runc_names() {
        let mut s = Stats::default();
        s.cpu.throttling.throttled_periods = 3;
        s.memory.kernel_tcp.limit = 5;
        s.blkio.io_service_bytes_recursive.push(BlkioEntry {
            major: 8,
            minor: 0,
            op: "Read".into(),
            value: 1,
        });
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["cpu"]["throttling"]["throttledPeriods"], 3);
        assert_eq!(v["memory"]["kernelTCP"]["limit"], 5);
        assert_eq!(v["blkio"]["ioServiceBytesRecursive"][0]["op"], "Read");
        // omitempty like Go: zero totals vanish, kernel/user/failcnt/limit stay.
        assert!(v["cpu"]["usage"].get("total").is_none());
        assert_eq!(v["cpu"]["usage"]["kernel"], 0);
        assert_eq!(v["memory"]["usage"]["failcnt"], 0);
    }
}
