//! Watches the store for cancel requests for the jobs this worker runs
//! (`xylem task cancel`, from any machine): every [`CANCEL_POLL`], one
//! store call for all of them, and only while some run. A requested job's
//! task is told (`cancelled` turns true) and its sandbox stopped after the
//! worker's `cancel_grace`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{CANCEL_POLL, WorkerShared};

/// Runs until aborted by the worker.
pub(crate) async fn run(shared: Arc<WorkerShared>) {
    let mut ticker = tokio::time::interval(CANCEL_POLL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let ids: Vec<String> = shared
            .running()
            .iter()
            .filter(|(_, job)| !job.cancel_requested.load(Ordering::Acquire))
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() {
            continue;
        }
        let requested = match shared.stores.cancellation.cancel_requested(&ids).await {
            Ok(requested) => requested,
            Err(e) => {
                tracing::debug!(error = %e, "cannot look for cancel requests");
                continue;
            }
        };
        let running = shared.running();
        for id in requested {
            if let Some(job) = running.get(&id) {
                tracing::info!(id, "cancel requested: stopping the job");
                job.cancel_requested.store(true, Ordering::Release);
                job.cancel.request(shared.config.cancel_grace);
            }
        }
    }
}
