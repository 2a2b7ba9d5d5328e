//! Operations on a live container through its cgroup: pause/resume (the freezer),
//! stats and stats events (runc's `events` JSON), and `update` of its limits.
//!
//! Every operation locks the container's state directory, reads the status from the
//! kernel and refuses what does not fit it, as runc does ("container not running").

use crate::container::{Runtime, load};
use crate::error::{Error, Result};
use crate::state::{ContainerState, Locked, Status};
use oci_spec::runtime::LinuxResources;
use serde_json::Value;
use std::time::Duration;

/// The cgroup of a container, or an error saying why there is none.
fn cgroup_of<'a>(
    st: &'a ContainerState,
    status: Status,
    what: &'static str,
) -> Result<&'a cella_cgroups::Cgroup> {
    st.cgroup.as_ref().ok_or_else(|| Error::BadStatus {
        id: st.id.clone(),
        status: status.as_str(),
        what,
    })
}

impl Runtime {
    fn open_loaded(&self, id: &str, exclusive: bool) -> Result<(Locked, ContainerState, Status)> {
        let locked = self.store.open(id, exclusive)?;
        let st = load(&locked)?;
        let status = st.status(&locked);
        Ok((locked, st, status))
    }

    /// Freezes every process of a running container and waits until the kernel says
    /// FROZEN (v1 freezer.state or v2 cgroup.freeze + cgroup.events).
    pub fn pause(&self, id: &str) -> Result<()> {
        let (_locked, st, status) = self.open_loaded(id, true)?;
        if status != Status::Running {
            return Err(Error::BadStatus {
                id: id.to_owned(),
                status: status.as_str(),
                what: "container not running",
            });
        }
        let cg = cgroup_of(
            &st,
            status,
            "cannot pause a container without a cgroup (the hierarchy was not delegated)",
        )?;
        cg.freeze()?;
        Ok(())
    }

    /// Thaws a paused container.
    pub fn resume(&self, id: &str) -> Result<()> {
        let (_locked, st, status) = self.open_loaded(id, true)?;
        if status != Status::Paused {
            return Err(Error::BadStatus {
                id: id.to_owned(),
                status: status.as_str(),
                what: "container not paused",
            });
        }
        let cg = cgroup_of(&st, status, "has no cgroup to thaw")?;
        cg.thaw()?;
        Ok(())
    }

    /// The container's resource usage, read from its cgroup (runc's `types.Stats`
    /// field names).
    pub fn stats(&self, id: &str) -> Result<cella_cgroups::Stats> {
        let (_locked, st, status) = self.open_loaded(id, false)?;
        if status == Status::Stopped {
            return Err(Error::BadStatus {
                id: id.to_owned(),
                status: status.as_str(),
                what: "container not running",
            });
        }
        let cg = cgroup_of(
            &st,
            status,
            "has no cgroup (the hierarchy was not delegated), so no statistics",
        )?;
        Ok(cg.stats()?)
    }

    /// One stats event as `runc events` prints it:
    /// `{"type":"stats","id":ID,"data":{cpu,memory,pids,blkio,hugetlb}}`.
    pub fn stats_event(&self, id: &str) -> Result<Value> {
        let stats = self.stats(id)?;
        Ok(stats_event(id, &stats))
    }

    /// Calls `emit` with a stats event every `interval` until the container stops or
    /// is deleted (then returns Ok) or `emit` returns false. The first event comes at
    /// once. An OOM kill seen since the last sample comes first as runc's
    /// `{"type":"oom","id":ID}`.
    pub fn watch_stats(
        &self,
        id: &str,
        interval: Duration,
        mut emit: impl FnMut(Value) -> bool,
    ) -> Result<()> {
        // The container must exist when the stream starts.
        let (_, st, _) = self.open_loaded(id, false)?;
        let mut ooms = st.cgroup.as_ref().map_or(0, oom_kills);
        loop {
            let sample = self.stats_event(id);
            // Checked on the last round too: an OOM kill of init ends the container.
            let now = st.cgroup.as_ref().map_or(0, oom_kills);
            if now > ooms && !emit(serde_json::json!({"type": "oom", "id": id})) {
                return Ok(());
            }
            ooms = now;
            match sample {
                Ok(ev) => {
                    if !emit(ev) {
                        return Ok(());
                    }
                }
                // Stopped, deleted, or its cgroup went away with it: the stream ends.
                Err(Error::NotFound(_)) => return Ok(()),
                Err(Error::BadStatus {
                    status: "stopped", ..
                }) => return Ok(()),
                Err(e) => {
                    if self.is_gone(id) {
                        return Ok(());
                    }
                    return Err(e);
                }
            }
            std::thread::sleep(interval);
        }
    }

    fn is_gone(&self, id: &str) -> bool {
        match self.open_loaded(id, false) {
            Ok((_, _, status)) => status == Status::Stopped,
            Err(_) => true,
        }
    }

    /// Changes the limits of a created, running or paused container. Every value is
    /// validated against the host before the first write, so a bad one changes
    /// nothing. Only the fields set in `res` are written. Device rules are ignored, as
    /// runc's update does: engines send the whole `linux.resources`, and a rule list
    /// without cella's default devices would cut the container off /dev/null.
    pub fn update(&self, id: &str, res: &LinuxResources) -> Result<()> {
        let (_locked, st, status) = self.open_loaded(id, true)?;
        if matches!(status, Status::Stopped | Status::Creating) {
            return Err(Error::BadStatus {
                id: id.to_owned(),
                status: status.as_str(),
                what: "container not running",
            });
        }
        let cg = cgroup_of(
            &st,
            status,
            "cannot update a container without a cgroup (the hierarchy was not delegated)",
        )?;
        let mut res = with_current_limit(cg, res);
        res.set_devices(None);
        cg.apply(&res)?;
        Ok(())
    }
}

/// `memory.swap` is memory+swap and must be checked against a limit: when the update
/// sets swap alone, the current memory limit is added so validation and write order
/// see both (runc merges the update into the recorded config for the same reason).
fn with_current_limit(cg: &cella_cgroups::Cgroup, res: &LinuxResources) -> LinuxResources {
    let mut res = res.clone();
    let Some(mut m) = *res.memory() else {
        return res;
    };
    if m.swap().is_some_and(|s| s > 0) && m.limit().is_none_or(|l| l == 0) {
        let current = match (cg.v1_dir("memory"), cg.unified_dir()) {
            (Some(d), _) => std::fs::read_to_string(d.join("memory.limit_in_bytes")).ok(),
            (None, Some(d)) => std::fs::read_to_string(d.join("memory.max")).ok(),
            _ => None,
        };
        if let Some(l) = current.and_then(|t| t.trim().parse::<i64>().ok()) {
            m.set_limit(Some(l));
            res.set_memory(Some(m));
        }
    }
    res
}

/// How many processes the OOM killer has killed in the cgroup (v1 memory.oom_control
/// or v2 memory.events `oom_kill`); 0 when unknown.
pub(crate) fn oom_kills(cg: &cella_cgroups::Cgroup) -> u64 {
    let file = match (cg.v1_dir("memory"), cg.unified_dir()) {
        (Some(d), _) => d.join("memory.oom_control"),
        (None, Some(d)) => d.join("memory.events"),
        _ => return 0,
    };
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// The `runc events` JSON of one stats sample.
pub fn stats_event(id: &str, stats: &cella_cgroups::Stats) -> Value {
    serde_json::json!({
        "type": "stats",
        "id": id,
        "data": stats,
    })
}

/// Parses `linux.resources` JSON (`update --resources`). Errors name the JSON path of
/// the bad value, and keys cella does not know are refused rather than ignored, so a
/// misspelt limit is never silently dropped. `file` names the source in errors.
pub fn parse_resources(text: &[u8], file: &str) -> Result<LinuxResources> {
    let err = |field: String, msg: String| Error::Config {
        file: file.to_owned(),
        field,
        msg,
    };
    let value: Value =
        serde_json::from_slice(text).map_err(|e| err("(document)".into(), e.to_string()))?;
    let res: LinuxResources = serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path().to_string();
        err(path, e.into_inner().to_string())
    })?;
    let back = serde_json::to_value(&res).expect("resources serialize");
    if let Some(path) = unknown_key(&value, &back, String::new()) {
        return Err(err(path, "unknown field".into()));
    }
    Ok(res)
}

/// The first key holding a non-null value in `given` that the parsed-and-serialized
/// `known` lacks: a field the schema does not have.
fn unknown_key(given: &Value, known: &Value, at: String) -> Option<String> {
    let join = |k: &str| {
        if at.is_empty() {
            k.to_owned()
        } else {
            format!("{at}.{k}")
        }
    };
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => g.iter().find_map(|(key, v)| {
            if v.is_null() {
                return None;
            }
            match k.get(key) {
                None => Some(join(key)),
                Some(kv) => unknown_key(v, kv, join(key)),
            }
        }),
        (Value::Array(g), Value::Array(k)) => g
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(i, (gv, kv))| unknown_key(gv, kv, format!("{at}[{i}]"))),
        _ => None,
    }
}

/// A size as runc's `update --memory` takes it: bytes, or a number with a k, m, g, t
/// or p suffix (powers of 1024, optionally followed by "b" or "ib", any case); "-1" is
/// unlimited.
pub fn parse_size(s: &str) -> std::result::Result<i64, String> {
    let t = s.trim();
    if t == "-1" {
        return Ok(-1);
    }
    let lower = t.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits_end);
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(format!("invalid size {s:?}: unknown unit")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: not a number"))?;
    let bytes = n * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(format!("invalid size {s:?}: too large"));
    }
    Ok(bytes as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("1.5k"), Ok(1536));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("-1"), Ok(-1));
        assert!(parse_size("12x").is_err());
        assert!(parse_size("m").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn resources_json_errors_name_the_field() {
        let r = parse_resources(br#"{"cpu":{"shares":512},"pids":{"limit":7}}"#, "r.json").unwrap();
        assert_eq!(r.cpu().as_ref().unwrap().shares(), Some(512));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 7);

        let e = parse_resources(br#"{"memory":{"limit":"lots"}}"#, "r.json").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("r.json: memory.limit: "), "{msg}");

        let e = parse_resources(br#"{"memory":{"limt":5}}"#, "-").unwrap_err();
        assert_eq!(e.to_string(), "-: memory.limt: unknown field");
        let e = parse_resources(br#"{"cpus":{}}"#, "-").unwrap_err();
        assert_eq!(e.to_string(), "-: cpus: unknown field");
        // Nulls are "not set", not unknown.
        parse_resources(br#"{"memory":{"limit":null}}"#, "-").unwrap();
    }

    #[test]
    fn every_runtime_spec_resource_key_is_known() {
        // What engines send: the whole runtime-spec LinuxResources.
        let full = br#"{
            "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
            "memory": {"limit": 67108864, "reservation": 1, "swap": 67108864, "kernel": 0,
                       "kernelTCP": 0, "swappiness": 60, "disableOOMKiller": false,
                       "useHierarchy": true, "checkBeforeUpdate": true},
            "cpu": {"shares": 1024, "quota": 100000, "burst": 0, "period": 100000,
                    "realtimeRuntime": 0, "realtimePeriod": 0, "cpus": "0-1", "mems": "0", "idle": 0},
            "pids": {"limit": 100},
            "blockIO": {"weight": 500, "leafWeight": 500,
                        "weightDevice": [{"major": 8, "minor": 0, "weight": 500, "leafWeight": 500}],
                        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1}],
                        "throttleWriteBpsDevice": [], "throttleReadIOPSDevice": [],
                        "throttleWriteIOPSDevice": []},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
            "network": {"classID": 1, "priorities": [{"name": "eth0", "priority": 1}]},
            "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
            "unified": {"memory.high": "max"}
        }"#;
        parse_resources(full, "-").unwrap();
    }

    #[test]
    fn event_shape() {
        let mut s = cella_cgroups::Stats::default();
        s.pids.current = 3;
        let v = stats_event("c1", &s);
        assert_eq!(v["type"], "stats");
        assert_eq!(v["id"], "c1");
        assert_eq!(v["data"]["pids"]["current"], 3);
    }
}
