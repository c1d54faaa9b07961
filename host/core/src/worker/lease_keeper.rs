//! One timer for every running job: extends their leases a third of the
//! way through (one store call for all the leases of one length), and writes the latest progress report of
//! each job at most every [`PROGRESS_PERIOD`] (a task may report progress
//! a million times; the store sees one write per period).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::WorkerShared;

/// How often pending progress reports are written.
pub(crate) const PROGRESS_PERIOD: Duration = Duration::from_millis(100);

/// Runs until aborted by the worker.
pub(crate) async fn run(shared: Arc<WorkerShared>) {
    let mut ticker = tokio::time::interval(PROGRESS_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        flush_progress(&shared).await;
        extend_leases(&shared).await;
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

/// Extends the leases that are a third through, one store call per lease
/// length (the worker's, and each visibility timeout jobs ask for).
async fn extend_leases(shared: &WorkerShared) {
    let now = shared.now();
    let mut due: BTreeMap<Duration, Vec<(String, Arc<super::RunningJob>)>> = BTreeMap::new();
    for (id, job) in shared.running().iter() {
        if job.lease_due(now) {
            due.entry(job.lease_for())
                .or_default()
                .push((id.clone(), job.clone()));
        }
    }
    for (lease, running) in due {
        let leases: Vec<(String, u64)> = running
            .iter()
            .map(|(id, job)| (id.clone(), job.lease))
            .collect();
        let asked_at = shared.now();
        match shared.stores.broker.extend_many(&leases, lease).await {
            Ok(held) => {
                for ((id, job), held) in running.iter().zip(held) {
                    job.extended(asked_at);
                    if held {
                        job.set_held_until(asked_at + lease);
                        renew_concurrency_slot(shared, id, job, lease).await;
                    } else if job.held_until() > Duration::ZERO {
                        // Often not a loss at all: the job's completion may
                        // have been written while this extension was on its
                        // way. A real loss shows when the completion is
                        // refused.
                        job.set_held_until(Duration::ZERO);
                        tracing::debug!(id, "lease not held (completed, or lost)");
                    }
                }
            }
            Err(e) => {
                // Tried again a third of a lease on, as a success would be.
                for (_, job) in &running {
                    job.extended(asked_at);
                }
                tracing::warn!(error = %e, jobs = running.len(), "cannot extend leases");
            }
        }
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
