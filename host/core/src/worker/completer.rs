//! Writes finished jobs' completions in batches: each job hands its
//! [`Completion`] to one task, which sends everything that is waiting in
//! one [`Broker::complete`] call — one transaction on SQLite and
//! PostgreSQL, one pipeline on Redis — and answers each job.
//!
//! Nothing is delayed to make a batch: while one call is in flight, the
//! completions that arrive meanwhile form the next.

use std::sync::Arc;
use tracing::Instrument;

use tokio::sync::{mpsc, oneshot};

use crate::store::{Broker, Completed, Completion, StoreError, StoreResult};

/// Most completions in one store call.
const MAX_BATCH: usize = 256;

type Request = (Completion, oneshot::Sender<StoreResult<Completed>>);

/// The jobs' end of the channel.
#[derive(Debug, Clone)]
pub(crate) struct Completer {
    tx: mpsc::UnboundedSender<Request>,
}

/// The completer task's end.
pub(crate) type Receiver = mpsc::UnboundedReceiver<Request>;

pub(crate) fn channel() -> (Completer, Receiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Completer { tx }, rx)
}

impl Completer {
    /// Writes `completion` (with whatever else is waiting).
    pub(crate) async fn complete(&self, completion: Completion) -> StoreResult<Completed> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((completion, reply))
            .map_err(|_| StoreError::backend("the worker's completer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::backend("the worker's completer has stopped"))?
    }
}

/// Runs until every [`Completer`] is dropped.
pub(crate) async fn run(broker: Arc<dyn Broker>, mut rx: Receiver) {
    let mut batch: Vec<Request> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let completions: Vec<Completion> = batch.iter().map(|(c, _)| c.clone()).collect();
        let written = broker
            .complete(&completions)
            .instrument(crate::telemetry::trace::store_span(
                "store.complete",
                completions.len(),
            ))
            .await;
        match written {
            Ok(results) if results.len() == batch.len() => {
                for ((_, reply), result) in batch.drain(..).zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Ok(results) => {
                let error = StoreError::backend(format!(
                    "the store answered {} completions with {} results",
                    batch.len(),
                    results.len()
                ));
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(error.copy_for_each()));
                }
            }
            Err(error) => {
                tracing::warn!(%error, jobs = batch.len(), "cannot record finished jobs");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(error.copy_for_each()));
                }
            }
        }
    }
}
