//! Cancelling jobs: the one rule, whatever the store.
//!
//! - A job that waits (queued, delayed, or leased by a worker that died)
//!   loses its queue entry and is marked `cancelled`: it never starts.
//! - A running job gets a cancel request in the store; the worker that runs
//!   it sees the request within [`crate::worker::CANCEL_POLL`], tells the
//!   task (its `cancelled` host call turns true), stops the sandbox after
//!   the worker's grace ([`crate::WorkerConfig::cancel_grace`]) if the task
//!   has not ended, and marks the job `cancelled`. A task that ends within
//!   the grace keeps its outcome: a success stays a success; a failure is
//!   not retried.
//! - A finished job is left as it is; a dead one stays in the dead-letter
//!   queue (`xylem dlq purge` removes it).

use serde::{Deserialize, Serialize};

use crate::TaskState;
use crate::record::Transition;
use crate::store::{StoreResult, Stores, Withdrawn};
use crate::time::now_ms;

/// What cancelling one job did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "result", content = "state")]
pub enum CancelResult {
    /// It was waiting: it will never run, and is marked `cancelled`.
    Cancelled,
    /// It is running: its worker has been asked to stop it.
    Requested,
    /// It had already finished, in this state.
    Finished(TaskState),
    /// It is in the dead-letter queue.
    Dead,
    /// No such job.
    NotFound,
}

impl std::fmt::Display for CancelResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cancelled => f.write_str("cancelled: it will never run"),
            Self::Requested => f.write_str("running: its worker stops it"),
            Self::Finished(state) => write!(f, "already {state}: nothing to cancel"),
            Self::Dead => f.write_str(
                "in the dead-letter queue: nothing runs it (`xylem dlq purge` removes it)",
            ),
            Self::NotFound => f.write_str("no such job"),
        }
    }
}

/// The history detail of a job cancelled before it started.
pub const CANCELLED_WAITING: &str = "cancelled before it started";
/// The history detail of a job stopped while it ran.
pub const CANCELLED_RUNNING: &str = "cancelled while it ran";

/// Cancels `ids` (see the module docs), in order.
pub async fn cancel(stores: &Stores, ids: &[String]) -> StoreResult<Vec<CancelResult>> {
    let found = stores.cancellation.withdraw(ids, now_ms()).await?;
    let mut results = Vec::with_capacity(ids.len());
    let mut running = Vec::new();
    for (id, withdrawn) in ids.iter().zip(found) {
        let result = match withdrawn {
            Withdrawn::Removed => {
                mark_cancelled(stores, id, CANCELLED_WAITING).await?;
                CancelResult::Cancelled
            }
            Withdrawn::Running => {
                running.push(id.clone());
                CancelResult::Requested
            }
            Withdrawn::Dead => CancelResult::Dead,
            Withdrawn::Absent => match stores.results.get(id).await? {
                Some(record) => CancelResult::Finished(record.state),
                None => CancelResult::NotFound,
            },
        };
        results.push(result);
    }
    if !running.is_empty() {
        stores.cancellation.request_cancel(&running).await?;
    }
    Ok(results)
}

/// Marks a job whose queue entry was withdrawn `cancelled`, at the attempt
/// its record stands at, with `detail` saying why. A workflow activity's
/// run hears it as the step's failure (`cancelled`), as it would from a
/// worker: else the run would wait for a job that will never run.
pub(crate) async fn mark_cancelled(stores: &Stores, id: &str, detail: &str) -> StoreResult<()> {
    let record = stores.results.get(id).await?;
    let attempt = record.as_ref().map_or(1, |r| r.attempt);
    stores
        .results
        .transition(
            id,
            Transition::to(TaskState::Cancelled, attempt).detail(detail),
        )
        .await?;
    if let Some((run, seq)) = record
        .as_ref()
        .and_then(|r| crate::workflow::engine::activity_of(&r.headers))
    {
        let outcome = crate::workflow::StepOutcome::Err {
            kind: TaskState::Cancelled.as_str().to_owned(),
            message: detail.to_owned(),
            at: now_ms(),
        };
        let client = crate::Client::new(stores.clone());
        crate::workflow::deliver(&client, &run, seq, outcome).await?;
    }
    Ok(())
}
