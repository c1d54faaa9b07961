//! One timer for every running job: extends all their leases in one store
//! call every third of the lease, and writes the latest progress report of
//! each job at most every [`PROGRESS_PERIOD`] (a task may report progress
//! a million times; the store sees one write per period).

use std::sync::Arc;
use std::time::Duration;

use super::WorkerShared;

/// How often pending progress reports are written.
pub(crate) const PROGRESS_PERIOD: Duration = Duration::from_millis(100);

/// Runs until aborted by the worker.
pub(crate) async fn run(shared: Arc<WorkerShared>) {
    let lease = shared.config.lease;
    let extend_every = lease / 3;
    let mut ticker = tokio::time::interval(PROGRESS_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_extend = shared.now();
    loop {
        ticker.tick().await;
        flush_progress(&shared).await;
        if shared.now().saturating_sub(last_extend) >= extend_every {
            last_extend = shared.now();
            extend_leases(&shared, lease).await;
        }
    }
}

async fn flush_progress(shared: &WorkerShared) {
    let pending: Vec<(String, crate::Progress)> = shared
        .running()
        .iter()
        .filter_map(|(id, job)| {
            job.pending_progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .map(|p| (id.clone(), p))
        })
        .collect();
    for (id, progress) in pending {
        if let Err(e) = shared.stores.results.set_progress(&id, &progress).await {
            tracing::debug!(id, error = %e, "cannot record progress");
        }
    }
}

async fn extend_leases(shared: &WorkerShared, lease: Duration) {
    let running: Vec<(String, Arc<super::RunningJob>)> = shared
        .running()
        .iter()
        .map(|(id, job)| (id.clone(), job.clone()))
        .collect();
    if running.is_empty() {
        return;
    }
    let leases: Vec<(String, u64)> = running
        .iter()
        .map(|(id, job)| (id.clone(), job.lease))
        .collect();
    let asked_at = shared.now();
    match shared.stores.broker.extend_many(&leases, lease).await {
        Ok(held) => {
            for ((id, job), held) in running.iter().zip(held) {
                if held {
                    job.set_held_until(asked_at + lease);
                    renew_concurrency_slot(shared, id, job, lease).await;
                } else if job.held_until() > Duration::ZERO {
                    // Often not a loss at all: the job's completion may have
                    // been written while this extension was on its way. A
                    // real loss shows when the completion is refused.
                    job.set_held_until(Duration::ZERO);
                    tracing::debug!(id, "lease not held (completed, or lost)");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, jobs = running.len(), "cannot extend leases"),
    }
}

/// Keeps a job's concurrency-limit slot for as long as its lease.
async fn renew_concurrency_slot(
    shared: &WorkerShared,
    id: &str,
    job: &super::RunningJob,
    lease: Duration,
) {
    let slot = job
        .concurrency_slot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(slot) = slot
        && let Err(e) = shared.stores.locks.renew(&slot, id, lease).await
    {
        tracing::warn!(id, slot, error = %e, "cannot renew a concurrency-limit slot");
    }
}
