//! Activities' ends given to their runs in batches: a worker's jobs hand
//! [`Deliveries`] their outcomes, and one task reads every run that has
//! one waiting in one call, gives each its outcomes
//! ([`engine::give`](super::engine::give), the one rule), and writes them
//! back in one compare-and-set call — two store calls for a batch rather
//! than two per activity. A run whose write lost (its engine wrote
//! meanwhile) is read and given its outcomes again.
//!
//! Nothing is delayed to make a batch: while one is in flight, the
//! deliveries that arrive meanwhile form the next.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::model::{Run, StepOutcome};
use crate::store::{StoreError, StoreResult, WorkflowStore};

/// Most deliveries in one batch.
const MAX_BATCH: usize = 256;
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
        let answers = deliver_batch(&store, &batch).await;
        for (request, answer) in batch.drain(..).zip(answers) {
            let _ = request.reply.send(answer);
        }
    }
}

/// Gives each request's run its outcome; an answer per request, in order.
/// A run no engine holds is leased, in the same write, to this process's
/// engine if one runs, and handed to it (`handoff.rs`).
async fn deliver_batch(store: &Arc<dyn WorkflowStore>, batch: &[Request]) -> Vec<StoreResult<()>> {
    let taker = super::handoff::taker(store);
    // The requests of each run, by run.
    let mut by_run: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, request) in batch.iter().enumerate() {
        by_run.entry(request.run.as_str()).or_default().push(i);
    }
    let mut pending: Vec<String> = by_run.keys().map(|&id| id.to_owned()).collect();
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
        // Each run found, given its outcomes (and leased to the taker, if
        // it can be); unchanged ones are done.
        let now = crate::time::now_ms();
        let (changed, leased): (Vec<Run>, Vec<bool>) = found
            .into_iter()
            .flatten()
            .filter_map(|mut run| {
                let mut any = false;
                for &i in &by_run[run.id.as_str()] {
                    any |= super::engine::give(&mut run, batch[i].seq, &batch[i].outcome);
                }
                if !any {
                    return None;
                }
                Some(match taker.as_ref().and_then(|t| t.lease(&run, now)) {
                    Some(leased) => (leased, true),
                    None => (run, false),
                })
            })
            .unzip();
        let written = match store.put_runs(&changed).await {
            Ok(written) => written,
            Err(e) => {
                fail_all(&mut failed, &mut pending, &e);
                break;
            }
        };
        // What is left: the runs whose write lost.
        let mut handed = Vec::new();
        pending.clear();
        for ((mut run, leased), version) in changed.into_iter().zip(leased).zip(written) {
            match version {
                None => pending.push(run.id),
                Some(version) if leased => {
                    run.version = version;
                    handed.push(run);
                }
                Some(_) => woke = true,
            }
        }
        if let Some(taker) = &taker
            && !taker.hand(handed)
        {
            // The engine stopped meanwhile: the runs are stepped once
            // their leases lapse, by whichever engine looks then.
            tracing::debug!("a workflow engine stopped while runs were handed to it");
        }
    }
    if woke {
        super::engine::made_due();
    }
    for id in pending {
        failed.insert(
            id.clone(),
            StoreError::Invalid(format!(
                "run {id} keeps changing under this write; giving up"
            )),
        );
    }
    batch
        .iter()
        .map(|request| match failed.get(&request.run) {
            Some(e) => Err(e.copy_for_each()),
            None => Ok(()),
        })
        .collect()
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
