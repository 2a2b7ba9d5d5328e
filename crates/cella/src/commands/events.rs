//! `cella events`: a container's resource usage as runc's JSON events, once
//! (`--stats`) or every `--interval` until the container stops.

use super::{CmdResult, runtime};
use crate::Cli;
use std::io::Write;
use std::time::Duration;

/// Arguments of `cella events`.
#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Print one stats event and exit.
    #[arg(long)]
    pub stats: bool,
    /// Time between stats events (Go duration: 100ms, 5s, 1m).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub interval: Duration,
    /// The container id.
    pub id: String,
}

/// A Go-style duration: a number (decimals allowed) and a unit (ns, us, ms, s, m, h),
/// possibly repeated ("1m30s").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (use e.g. 100ms, 5s, 1m)");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = &rest[u_end..];
    }
    if total <= 0.0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// Runs `cella events`.
pub fn run(args: &EventsArgs, cli: &Cli) -> CmdResult {
    let rt = runtime(cli)?;
    if args.stats {
        let ev = rt.stats_event(&args.id)?;
        println!("{ev}");
        return Ok(0);
    }
    let stdout = std::io::stdout();
    rt.watch_stats(&args.id, args.interval, |ev| {
        let mut out = stdout.lock();
        // A closed stdout (the reader went away) ends the stream.
        writeln!(out, "{ev}").and_then(|()| out.flush()).is_ok()
    })?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
