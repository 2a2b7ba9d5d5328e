//! `cella update`: change a container's limits, from flags and/or `--resources` JSON
//! (flags win). Everything is validated before anything is written.

use super::{CmdResult, runtime};
use crate::Cli;
use cella_runtime::ops::{parse_resources, parse_size};
use serde_json::{Value, json};
use std::io::Read;
use std::path::PathBuf;

/// Arguments of `cella update`, as runc names them.
#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// linux.resources JSON file to apply ("-" reads stdin).
    #[arg(short, long, value_name = "FILE")]
    pub resources: Option<PathBuf>,
    /// Memory limit (bytes, or with k/m/g suffix; -1 unlimited).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<i64>,
    /// Memory soft limit.
    #[arg(long = "memory-reservation", value_name = "SIZE", value_parser = parse_size)]
    pub memory_reservation: Option<i64>,
    /// Memory plus swap limit (-1 unlimited).
    #[arg(long = "memory-swap", value_name = "SIZE", value_parser = parse_size)]
    pub memory_swap: Option<i64>,
    /// CPU shares (relative weight).
    #[arg(long = "cpu-shares", value_name = "N")]
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period.
    #[arg(long = "cpu-quota", value_name = "N", allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    #[arg(long = "cpu-period", value_name = "N")]
    pub cpu_period: Option<u64>,
    /// Realtime runtime in microseconds.
    #[arg(long = "cpu-rt-runtime", value_name = "N")]
    pub cpu_rt_runtime: Option<i64>,
    /// Realtime period in microseconds.
    #[arg(long = "cpu-rt-period", value_name = "N")]
    pub cpu_rt_period: Option<u64>,
    /// CPUs allowed (e.g. 0-1).
    #[arg(long = "cpuset-cpus", value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed (e.g. 0).
    #[arg(long = "cpuset-mems", value_name = "LIST")]
    pub cpuset_mems: Option<String>,
    /// Maximum number of processes (-1 unlimited).
    #[arg(long = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Block I/O weight (10-1000).
    #[arg(long = "blkio-weight", value_name = "N")]
    pub blkio_weight: Option<u16>,
    /// The container id.
    pub id: String,
}

/// Sets `v[section][key] = value`, making the section an object if needed.
fn set(v: &mut Value, section: &str, key: &str, value: Value) {
    if !v[section].is_object() {
        v[section] = json!({});
    }
    v[section][key] = value;
}

/// The resources JSON the flags and the file ask for, flags over the file.
fn merged(args: &UpdateArgs) -> Result<(Value, String), Box<dyn std::error::Error>> {
    let (text, name) = match &args.resources {
        Some(p) if p.as_os_str() == "-" => {
            let mut text = Vec::new();
            std::io::stdin().read_to_end(&mut text)?;
            (text, "stdin".to_owned())
        }
        Some(p) => {
            let text = std::fs::read(p).map_err(|e| format!("read `{}`: {e}", p.display()))?;
            (text, p.display().to_string())
        }
        None => (b"{}".to_vec(), "flags".to_owned()),
    };
    let mut v: Value = serde_json::from_slice(&text).map_err(|e| format!("{name}: {e}"))?;
    if !v.is_object() {
        return Err(format!("{name}: expected a JSON object (linux.resources)").into());
    }
    let flags: [(&str, &str, Option<Value>); 12] = [
        ("memory", "limit", args.memory.map(Value::from)),
        (
            "memory",
            "reservation",
            args.memory_reservation.map(Value::from),
        ),
        ("memory", "swap", args.memory_swap.map(Value::from)),
        ("cpu", "shares", args.cpu_shares.map(Value::from)),
        ("cpu", "quota", args.cpu_quota.map(Value::from)),
        ("cpu", "period", args.cpu_period.map(Value::from)),
        (
            "cpu",
            "realtimeRuntime",
            args.cpu_rt_runtime.map(Value::from),
        ),
        ("cpu", "realtimePeriod", args.cpu_rt_period.map(Value::from)),
        ("cpu", "cpus", args.cpuset_cpus.clone().map(Value::from)),
        ("cpu", "mems", args.cpuset_mems.clone().map(Value::from)),
        ("pids", "limit", args.pids_limit.map(Value::from)),
        ("blockIO", "weight", args.blkio_weight.map(Value::from)),
    ];
    for (section, key, value) in flags {
        if let Some(value) = value {
            set(&mut v, section, key, value);
        }
    }
    Ok((v, name))
}

/// Runs `cella update`.
pub fn run(args: &UpdateArgs, cli: &Cli) -> CmdResult {
    let (v, name) = merged(args)?;
    let text = serde_json::to_vec(&v)?;
    let res = parse_resources(&text, &name)?;
    runtime(cli)?.update(&args.id, &res)?;
    Ok(0)
}
