//! Workers seen from outside: each running worker writes a [`WorkerBeat`]
//! to the store every [`BEAT_INTERVAL`] — who it is, where it runs, what
//! it serves, what it is running and what it has done — so `xylem
//! workers` (and the HTTP API) can list a fleet from any machine. A beat
//! older than [`STALE_AFTER_BEATS`] intervals marks its worker stale (it
//! was killed, or cannot reach the store); records are dropped by the
//! store [`KEEP_FOR`] after their last beat.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// How often a running worker writes its beat.
pub const BEAT_INTERVAL: Duration = Duration::from_secs(5);
/// A worker whose last beat is older than this many intervals is stale.
pub const STALE_AFTER_BEATS: u32 = 3;
/// How long a record stays in the store after its last beat (a stopped
/// or vanished worker stays listed, as such, for a day).
pub const KEEP_FOR: Duration = Duration::from_secs(24 * 3600);

/// What a worker says it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Claiming and running jobs.
    Running,
    /// Shutting down: claims nothing new, finishes what it runs.
    Stopping,
    /// Stopped cleanly.
    Stopped,
}

impl WorkerState {
    /// The state's name, as listed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }
}

/// Counts of what a worker has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processed {
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Attempts that failed and were requeued for a retry.
    pub retried: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Jobs stopped by a cancel request.
    pub cancelled: u64,
}

/// One worker's record, as last written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerBeat {
    /// Unique per worker process (a v7 UUID chosen at start).
    pub id: String,
    /// The worker's name (`--name`; recorded in job histories).
    pub name: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// The Xylem version it runs.
    pub version: String,
    /// Queues it consumes (empty: every queue).
    pub queues: Vec<String>,
    /// Most jobs it runs at once.
    pub concurrency: u32,
    /// Ids of the jobs it is running.
    pub running: Vec<String>,
    /// What it has done.
    pub processed: Processed,
    /// When it started.
    pub started_at: Millis,
    /// When it wrote this record.
    pub last_seen: Millis,
    /// How often it writes (a record older than [`STALE_AFTER_BEATS`] of
    /// these is stale).
    pub interval_ms: u64,
    /// What it says it is doing.
    pub state: WorkerState,
}

impl WorkerBeat {
    /// Whether, at `now`, the worker has missed its beats: it claims to run
    /// but has not written for [`STALE_AFTER_BEATS`] intervals (killed, hung,
    /// or cut off from the store). A stopped worker is never stale.
    pub fn is_stale(&self, now: Millis) -> bool {
        self.state != WorkerState::Stopped
            && now.saturating_sub(self.last_seen)
                > i64::try_from(self.interval_ms)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(i64::from(STALE_AFTER_BEATS))
    }

    /// The state to show at `now`: `stale` for a stale worker, else what
    /// it says.
    pub fn shown_state(&self, now: Millis) -> &'static str {
        if self.is_stale(now) {
            "stale"
        } else {
            self.state.as_str()
        }
    }
}

/// Every worker's record in the store, by name then id.
pub async fn list(stores: &crate::Stores) -> crate::StoreResult<Vec<WorkerBeat>> {
    let mut beats = stores.workers.list_workers().await?;
    beats.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Ok(beats)
}

/// The machine's name, for a worker's record: `HOSTNAME`, else
/// `/etc/hostname`, else `unknown`.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(state: WorkerState, last_seen: Millis) -> WorkerBeat {
        WorkerBeat {
            id: "w".into(),
            name: "w".into(),
            host: "h".into(),
            pid: 1,
            version: "0".into(),
            queues: vec![],
            concurrency: 1,
            running: vec![],
            processed: Processed::default(),
            started_at: 0,
            last_seen,
            interval_ms: 5_000,
            state,
        }
    }

    #[test]
    fn a_worker_is_stale_after_three_missed_beats_unless_it_stopped() {
        let running = beat(WorkerState::Running, 100_000);
        assert!(!running.is_stale(115_000));
        assert!(running.is_stale(115_001));
        assert_eq!(running.shown_state(115_001), "stale");
        assert_eq!(running.shown_state(101_000), "running");
        let stopped = beat(WorkerState::Stopped, 100_000);
        assert!(!stopped.is_stale(1_000_000));
        assert_eq!(stopped.shown_state(1_000_000), "stopped");
    }
}
