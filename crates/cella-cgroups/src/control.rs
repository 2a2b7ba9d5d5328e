//! Processes of a cgroup: listing, freezing, signalling.

use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Cgroup, CgroupError, fs, sys, tree};

/// How long freezing may take before we give up and thaw.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long SIGKILLed processes may take to leave the cgroup.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// The freezer state of a cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FreezerState {
    /// Running normally.
    Thawed,
    /// Freezing requested, not all tasks stopped yet.
    Freezing,
    /// All tasks stopped.
    Frozen,
}

/// Which freezer interface a cgroup uses.
enum Freezer<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

/// Poll with a short, growing delay (freezing usually completes in microseconds).
fn backoff(delay: &mut Duration) {
    sleep(*delay);
    *delay = (*delay * 2).min(Duration::from_millis(20));
}

fn events_field(dir: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
    let path = dir.join("cgroup.events");
    let text = fs::read(&path)?;
    Ok(fs::parse_flat_keyed(&text)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v))
}

impl Cgroup {
    fn freezer(&self) -> Option<Freezer<'_>> {
        if let Some(d) = self.v1_dir("freezer") {
            return Some(Freezer::V1(d));
        }
        self.unified_dir().map(Freezer::V2)
    }

    /// Every pid in the cgroup and its sub-cgroups, in all hierarchies (a process
    /// could have been moved in one hierarchy only), sorted and deduplicated.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut out = Vec::new();
        for dir in self.dirs() {
            let mut dirs = Vec::new();
            tree::walk_post_order(dir, &mut dirs);
            for d in dirs {
                let path = d.join("cgroup.procs");
                let Some(text) = fs::read_opt(&path)? else {
                    continue;
                };
                for l in text.lines() {
                    let pid = l.trim().parse::<i32>().map_err(|_| CgroupError::Parse {
                        path: path.clone(),
                        reason: format!("{l:?} is not a pid"),
                    })?;
                    out.push(pid);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Freeze every process and wait until the kernel reports FROZEN; on timeout, thaw
    /// again and fail.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        let start = Instant::now();
        let mut delay = Duration::from_micros(50);
        match self.freezer() {
            None => Err(CgroupError::invalid(
                "freeze",
                "no freezer (v1 freezer or cgroup2) is mounted",
            )),
            Some(Freezer::V1(d)) => {
                let state = d.join("freezer.state");
                let mut n = 0u32;
                loop {
                    // Rewriting FROZEN retries tasks that were busy (in a vfork, say) last time.
                    if n % 8 == 0 {
                        fs::write(&state, "FROZEN")?;
                    }
                    n += 1;
                    if fs::read(&state)?.trim() == "FROZEN" {
                        return Ok(());
                    }
                    if start.elapsed() > FREEZE_TIMEOUT {
                        let _ = fs::write(&state, "THAWED");
                        return Err(CgroupError::FreezeTimeout {
                            path: d.to_owned(),
                            millis: FREEZE_TIMEOUT.as_millis() as u64,
                        });
                    }
                    backoff(&mut delay);
                }
            }
            Some(Freezer::V2(d)) => {
                fs::write(&d.join("cgroup.freeze"), "1")?;
                loop {
                    if events_field(d, "frozen")? == Some(1) {
                        return Ok(());
                    }
                    if start.elapsed() > FREEZE_TIMEOUT {
                        let _ = fs::write(&d.join("cgroup.freeze"), "0");
                        return Err(CgroupError::FreezeTimeout {
                            path: d.to_owned(),
                            millis: FREEZE_TIMEOUT.as_millis() as u64,
                        });
                    }
                    backoff(&mut delay);
                }
            }
        }
    }

    /// Let frozen processes run again.
    pub fn thaw(&self) -> Result<(), CgroupError> {
        match self.freezer() {
            None => Err(CgroupError::invalid(
                "thaw",
                "no freezer (v1 freezer or cgroup2) is mounted",
            )),
            Some(Freezer::V1(d)) => fs::write(&d.join("freezer.state"), "THAWED"),
            Some(Freezer::V2(d)) => fs::write(&d.join("cgroup.freeze"), "0"),
        }
    }

    /// The current freezer state.
    pub fn freezer_state(&self) -> Result<FreezerState, CgroupError> {
        match self.freezer() {
            None => Ok(FreezerState::Thawed),
            Some(Freezer::V1(d)) => {
                let path = d.join("freezer.state");
                match fs::read(&path)?.trim() {
                    "THAWED" => Ok(FreezerState::Thawed),
                    "FREEZING" => Ok(FreezerState::Freezing),
                    "FROZEN" => Ok(FreezerState::Frozen),
                    other => Err(CgroupError::Parse {
                        path,
                        reason: format!("unknown freezer state {other:?}"),
                    }),
                }
            }
            Some(Freezer::V2(d)) => {
                let path = d.join("cgroup.freeze");
                let want = fs::read(&path)?.trim() == "1";
                let frozen = events_field(d, "frozen")? == Some(1);
                Ok(match (want, frozen) {
                    (true, true) => FreezerState::Frozen,
                    (true, false) => FreezerState::Freezing,
                    (false, _) => FreezerState::Thawed,
                })
            }
        }
    }

    /// Send `signal` to every process of the cgroup. SIGKILL uses cgroup.kill where the
    /// kernel has it; otherwise the cgroup is frozen first so no process can fork past
    /// the signal, and for SIGKILL this repeats until the cgroup is empty.
    pub fn kill_all(&self, signal: i32) -> Result<(), CgroupError> {
        // A paused container stays paused for other signals; SIGKILL must be able to land.
        let was_frozen = self
            .freezer_state()
            .is_ok_and(|s| s != FreezerState::Thawed);
        if signal == libc::SIGKILL {
            if let Some(u) = self.unified_dir() {
                let kill = u.join("cgroup.kill");
                if kill.exists() {
                    fs::write(&kill, "1")?;
                    // Tasks stopped by a v1 freezer die only once thawed; the SIGKILL is
                    // already pending, so they run no user code on the way out.
                    if was_frozen && self.v1_dir("freezer").is_some() {
                        self.thaw()?;
                    }
                    self.wait_empty(u)?;
                    if self.layout == crate::Layout::Unified {
                        return Ok(());
                    }
                    // Hybrid: sweep the v1 hierarchies too, in case a process left v2.
                }
            }
        }
        let start = Instant::now();
        loop {
            let froze = self.freezer().is_some() && (was_frozen || self.freeze().is_ok());
            let pids = self.pids()?;
            let mut result = Ok(());
            for &pid in &pids {
                if let Err(source) = sys::kill(pid, signal) {
                    if source.raw_os_error() != Some(libc::ESRCH) && result.is_ok() {
                        result = Err(CgroupError::Kill {
                            pid,
                            signal,
                            source,
                        });
                    }
                }
            }
            if froze && (signal == libc::SIGKILL || !was_frozen) {
                self.thaw()?;
            }
            result?;
            if signal != libc::SIGKILL || pids.is_empty() {
                return Ok(());
            }
            if start.elapsed() > KILL_TIMEOUT {
                return Err(CgroupError::KillTimeout {
                    path: self
                        .dirs()
                        .first()
                        .map(|p| p.to_path_buf())
                        .unwrap_or_default(),
                    millis: KILL_TIMEOUT.as_millis() as u64,
                });
            }
            sleep(Duration::from_millis(1));
        }
    }

    /// Wait until a cgroup2 directory reports no processes (cgroup.events populated 0).
    fn wait_empty(&self, dir: &Path) -> Result<(), CgroupError> {
        let start = Instant::now();
        let mut delay = Duration::from_micros(50);
        loop {
            match events_field(dir, "populated") {
                Ok(Some(0)) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(e),
            }
            if start.elapsed() > KILL_TIMEOUT {
                return Err(CgroupError::KillTimeout {
                    path: PathBuf::from(dir),
                    millis: KILL_TIMEOUT.as_millis() as u64,
                });
            }
            backoff(&mut delay);
        }
    }
}
