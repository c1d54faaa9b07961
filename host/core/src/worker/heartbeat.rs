//! The worker's record in the store (`crate::presence`): written at start,
//! every [`BEAT_INTERVAL`] while it runs, as `stopping` when shutdown
//! begins and `stopped` when it ends. A failed write is logged and tried
//! at the next beat: the record is for operators, never in a job's way.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::WorkerShared;
use crate::presence::{BEAT_INTERVAL, KEEP_FOR, Processed, WorkerBeat, WorkerState};
use crate::time::{Millis, ms, now_ms};

/// Who this worker is, for its record.
#[derive(Debug)]
pub(crate) struct Presence {
    id: String,
    host: String,
    started_at: Millis,
}

impl Presence {
    pub(crate) fn new() -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            host: crate::presence::host_name(),
            started_at: now_ms(),
        }
    }

    fn beat(&self, shared: &WorkerShared, state: WorkerState) -> WorkerBeat {
        let stats = &shared.stats;
        let mut running: Vec<String> = shared.running().keys().cloned().collect();
        running.sort();
        WorkerBeat {
            id: self.id.clone(),
            name: shared.config.name.clone(),
            host: self.host.clone(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            queues: shared.config.queues.clone(),
            concurrency: u32::try_from(shared.config.concurrency).unwrap_or(u32::MAX),
            running,
            processed: Processed {
                succeeded: stats.succeeded.load(Ordering::Relaxed),
                retried: stats.retried.load(Ordering::Relaxed),
                dead: stats.dead.load(Ordering::Relaxed),
                cancelled: stats.cancelled.load(Ordering::Relaxed),
            },
            started_at: self.started_at,
            last_seen: now_ms(),
            interval_ms: u64::try_from(ms(BEAT_INTERVAL)).unwrap_or(u64::MAX),
            state,
        }
    }

    /// Writes the record as `state` now.
    pub(crate) async fn write(&self, shared: &WorkerShared, state: WorkerState) {
        let beat = self.beat(shared, state);
        if let Err(e) = shared.stores.workers.put_worker(&beat, KEEP_FOR).await {
            tracing::warn!(error = %e, "cannot write this worker's record; trying at the next beat");
        }
    }

    /// Writes the record every [`BEAT_INTERVAL`] (until aborted).
    pub(crate) async fn run(self: Arc<Self>, shared: Arc<WorkerShared>) {
        loop {
            self.write(&shared, WorkerState::Running).await;
            if shared.config.queue_depth_metrics {
                read_queue_depths(&shared).await;
            }
            tokio::time::sleep(BEAT_INTERVAL).await;
        }
    }
}

/// Reads the depths of the queues this worker serves (all, if it serves
/// every queue) for the `xylem.queue.depth` gauge. A queue it was told
/// to serve is reported even with nothing in it (at 0).
async fn read_queue_depths(shared: &WorkerShared) {
    match shared.stores.statistics.queue_stats().await {
        Ok(mut stats) => {
            let served = &shared.config.queues;
            if !served.is_empty() {
                stats.retain(|q| served.contains(&q.queue));
                for queue in served {
                    if !stats.iter().any(|q| &q.queue == queue) {
                        stats.push(crate::store::QueueStats {
                            queue: queue.clone(),
                            ..Default::default()
                        });
                    }
                }
            }
            crate::telemetry::metrics::set_queue_depths(stats);
        }
        Err(e) => tracing::debug!(error = %e, "cannot read the queues' depths"),
    }
}
