//! Activities' ends given to their runs in batches: a worker's jobs hand
//! [`Deliveries`] their outcomes, and one task reads every run that has
//! one waiting in one call, gives each its outcomes
//! ([`engine::give`](super::engine::give), the one rule), and writes them
//! back in one compare-and-set call — two store calls for a batch rather
//! than two per activity. A run whose write lost (its engine wrote
//! meanwhile) is read and given its outcomes again. While this process
//! runs an engine, a run no engine holds is not written here but handed
//! to it with its outcomes, and the step's own write records them
//! (`handoff.rs`); a delivery is answered only once its outcome is
//! written, either way.
//!
//! Nothing is delayed to make a batch: while one is in flight, the
//! deliveries that arrive meanwhile form the next.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::handoff::Taker;
use super::model::StepOutcome;
use crate::store::{StoreError, StoreResult, WorkflowStore};

/// Most deliveries in one batch.
const MAX_BATCH: usize = 256;
/// How long a delivery waits for the step of the run it handed over
/// before it writes the outcome itself. The step may still be written
/// after: both writes compare and set the version read, so one of them
/// stands, and the other finds the outcome there (or the step is taken
/// again).
const STEP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Rounds of read, give, write before a run that keeps changing under
/// the writes is given up on (its job is then delivered again).
const ROUNDS: usize = 64;

struct Request {
    run: String,
    seq: u32,
    outcome: StepOutcome,
    reply: oneshot::Sender<StoreResult<()>>,
}

/// The jobs' end: where a worker's activities' ends go.
#[derive(Debug, Clone)]
pub(crate) struct Deliveries {
    tx: mpsc::UnboundedSender<Request>,
}

/// The delivering task's end.
pub(crate) struct Receiver(mpsc::UnboundedReceiver<Request>);

pub(crate) fn channel() -> (Deliveries, Receiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Deliveries { tx }, Receiver(rx))
}

fn stopped() -> StoreError {
    StoreError::backend("the worker's workflow deliveries have stopped")
}

impl Deliveries {
    /// Gives call `seq` of run `run` its `outcome` (with whatever else is
    /// waiting), as [`deliver`](super::deliver) does; returns once written.
    pub(crate) async fn deliver(
        &self,
        run: &str,
        seq: u32,
        outcome: StepOutcome,
    ) -> StoreResult<()> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                run: run.to_owned(),
                seq,
                outcome,
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Runs until every [`Deliveries`] is dropped.
pub(crate) async fn run(store: Arc<dyn WorkflowStore>, mut rx: Receiver) {
    let mut batch = Vec::new();
    while let Some(first) = rx.0.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.0.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let taker = super::handoff::taker(&store);
        deliver_batch(&store, std::mem::take(&mut batch), taker).await;
    }
}

/// Gives each request's run its outcome and answers each request once
/// the outcome is written. With `taker` (this process's engine), a run no
/// engine holds is handed to it with its outcomes (`handoff.rs`); its
/// requests are answered when that engine's step is written, or written
/// here (with no taker) if it is not.
///
/// Boxed, because a batch's handed runs may come back to it (through
/// [`await_step`]) and an `async fn` cannot contain itself.
fn deliver_batch(
    store: &Arc<dyn WorkflowStore>,
    batch: Vec<Request>,
    taker: Option<Taker>,
) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
    Box::pin(deliver_each(store, batch, taker))
}

/// [`deliver_batch`]'s body.
async fn deliver_each(store: &Arc<dyn WorkflowStore>, batch: Vec<Request>, taker: Option<Taker>) {
    // The requests of each run, by run.
    let mut by_run: HashMap<String, Vec<Request>> = HashMap::new();
    for request in batch {
        by_run.entry(request.run.clone()).or_default().push(request);
    }
    let mut pending: Vec<String> = by_run.keys().cloned().collect();
    let mut failed: HashMap<String, StoreError> = HashMap::new();
    let mut woke = false;
    for _ in 0..ROUNDS {
        if pending.is_empty() {
            break;
        }
        let found = match store.get_runs(&pending).await {
            Ok(found) => found,
            Err(e) => {
                fail_all(&mut failed, &mut pending, &e);
                break;
            }
        };
        // Each run found, given its outcomes; handed over if it can be,
        // else written below. Unchanged ones are done.
        let now = crate::time::now_ms();
        let mut changed = Vec::new();
        for mut run in found.into_iter().flatten() {
            let mut any = false;
            for request in &by_run[run.id.as_str()] {
                any |= super::engine::give(&mut run, request.seq, &request.outcome);
            }
            if !any {
                continue;
            }
            let Some(taker) = &taker else {
                changed.push(run);
                continue;
            };
            let id = run.id.clone();
            match taker.hand(run, now) {
                Ok(answer) => {
                    let requests = by_run.remove(&id).unwrap_or_default();
                    tokio::spawn(await_step(store.clone(), requests, answer));
                }
                Err(run) => changed.push(*run),
            }
        }
        if changed.is_empty() {
            // Every run handed over, or given its outcomes already.
            pending.clear();
            break;
        }
        let written = match store.put_runs(&changed).await {
            Ok(written) => written,
            Err(e) => {
                fail_all(&mut failed, &mut pending, &e);
                break;
            }
        };
        // What is left: the runs whose write lost.
        pending.clear();
        for (run, version) in changed.into_iter().zip(written) {
            match version {
                None => pending.push(run.id),
                Some(_) => woke = true,
            }
        }
    }
    if woke {
        super::engine::made_due();
    }
    for id in pending {
        failed.insert(
            id.clone(),
            // Contention that may pass: the job tries again while its
            // lease holds, then runs again.
            StoreError::Backend {
                message: format!("run {id} keeps changing under this write; giving up for now"),
                transient: true,
                source: None,
            },
        );
    }
    for (id, requests) in by_run {
        for request in requests {
            let answer = match failed.get(&id) {
                Some(e) => Err(e.copy_for_each()),
                None => Ok(()),
            };
            let _ = request.reply.send(answer);
        }
    }
}

/// Answers `requests` once the engine their run was handed to says its
/// step was written; if it was not, or says nothing within
/// [`STEP_WAIT`], their outcomes are written here.
async fn await_step(
    store: Arc<dyn WorkflowStore>,
    requests: Vec<Request>,
    answer: oneshot::Receiver<bool>,
) {
    if matches!(tokio::time::timeout(STEP_WAIT, answer).await, Ok(Ok(true))) {
        for request in requests {
            let _ = request.reply.send(Ok(()));
        }
        return;
    }
    // Not handed again: the outcome is written here.
    deliver_batch(&store, requests, None).await;
}

fn fail_all(
    failed: &mut HashMap<String, StoreError>,
    pending: &mut Vec<String>,
    error: &StoreError,
) {
    tracing::warn!(%error, runs = pending.len(), "cannot give workflow runs their activities' ends");
    for id in pending.drain(..) {
        failed.insert(id, error.copy_for_each());
    }
}
