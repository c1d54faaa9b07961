//! One delivered job, from `running` to `succeeded`, `retrying` or `dead`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;

use super::WorkerShared;
use crate::client::{Client, EnqueueRequest};
use crate::executor::{CancelToken, ChildOptions, HostCalls, RunRequest, TaskInfo};
use crate::record::{TaskState, Transition};
use crate::retry::{DEFAULT_BACKOFF, DEFAULT_BACKOFF_MAX, backoff};
use crate::store::{Delivery, Nack, StoreResult};
use crate::time::{format_ms, now_ms};
use crate::{Failure, FailureKind, Outcome, Progress, Stores, Usage};

/// What a running job's host calls do inside a worker.
#[derive(Debug)]
struct WorkerHostCalls {
    stores: Stores,
    lease: u64,
    lease_duration: Duration,
}

#[async_trait]
impl HostCalls for WorkerHostCalls {
    fn progress(&self, job: &TaskInfo, progress: &Progress) {
        let (results, id, progress) = (
            self.stores.results.clone(),
            job.id.clone(),
            progress.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = results.set_progress(&id, &progress).await {
                tracing::debug!(error = %e, "cannot record progress");
            }
        });
    }

    fn heartbeat(&self, job: &TaskInfo) {
        let (broker, id, lease, by) = (
            self.stores.broker.clone(),
            job.id.clone(),
            self.lease,
            self.lease_duration,
        );
        tokio::spawn(async move {
            let _ = broker.extend(&id, lease, by).await;
        });
    }

    async fn enqueue(
        &self,
        parent: &TaskInfo,
        name: &str,
        args: &str,
        options: ChildOptions,
    ) -> Result<String, String> {
        let mut req = EnqueueRequest::new(name, args);
        req.queue = options.queue;
        req.priority = options.priority;
        req.max_retries = options.max_retries;
        req.parent = Some(parent.id.clone());
        if let Some(delay) = options.delay_ms {
            req = req.delay(Duration::from_millis(delay));
        }
        Client::new(self.stores.clone())
            .enqueue(req)
            .await
            .map(|e| e.id)
            .map_err(|e| e.to_string())
    }
}

/// Retries a store write a few times: a brief outage should not turn into
/// a redelivery. If it still fails, the job stays leased and is delivered
/// again when the lease runs out — never lost.
async fn persist<F, Fut, T>(what: &str, mut op: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut pause = Duration::from_millis(50);
    let mut tries = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if tries < 5 => {
                tracing::warn!(error = %e, what, "store write failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

pub(super) async fn process(shared: &Arc<WorkerShared>, delivery: Delivery) {
    let envelope = delivery.envelope;
    let (id, lease) = (envelope.id.clone(), delivery.lease);
    let stores = &shared.stores;
    let span =
        tracing::info_span!("job", id = %id, task = %envelope.task, attempt = envelope.attempt);
    let _enter = span.enter();

    if envelope.expires_at.is_some_and(|at| now_ms() > at) {
        let detail = format!(
            "expired at {} before it could run",
            format_ms(envelope.expires_at.unwrap_or_default())
        );
        if persist("expire", || {
            stores.results.transition(
                &id,
                Transition::to(TaskState::Expired, envelope.attempt).detail(detail.clone()),
            )
        })
        .await
        .is_ok()
        {
            let _ = stores.broker.ack(&id, lease).await;
            expire_later(shared, &id).await;
        }
        return;
    }

    let running = Transition::to(TaskState::Running, envelope.attempt).detail(format!(
        "worker {}{}",
        shared.config.name,
        if delivery.deliveries > envelope.attempt {
            " (redelivered after a lost lease)"
        } else {
            ""
        }
    ));
    if let Err(e) = persist("running", || {
        stores.results.transition(&id, running.clone())
    })
    .await
    {
        tracing::error!(error = %e, "cannot record the job as running; leaving it for redelivery");
        return;
    }

    let (outcome, version) = match shared
        .registry
        .resolve(&envelope.task, envelope.plugin.as_deref())
        .await
    {
        Err(reason) => (
            Outcome::failure(
                Failure::new(FailureKind::UnknownTask, reason),
                Usage::default(),
            ),
            None,
        ),
        Ok(resolved) => {
            let cancel = CancelToken::new();
            shared
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id.clone(), cancel.clone());
            let request = RunRequest {
                info: TaskInfo {
                    id: id.clone(),
                    name: envelope.task.clone(),
                    queue: envelope.queue.clone(),
                    attempt: envelope.attempt,
                    max_retries: envelope.max_retries,
                    headers: envelope.headers.clone(),
                },
                args: envelope.args.clone(),
                limits: envelope.options.limits(&resolved.spec.options),
                cancel,
            };
            let host = Arc::new(WorkerHostCalls {
                stores: stores.clone(),
                lease,
                lease_duration: shared.config.lease,
            });
            let keeper = tokio::spawn(keep_lease(
                stores.clone(),
                id.clone(),
                lease,
                shared.config.lease,
            ));
            let outcome = resolved.executor.execute(request, host).await;
            keeper.abort();
            shared
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            (outcome, Some(resolved))
        }
    };
    let plugin = version.as_ref().map(|r| r.version.clone());

    // Cancelled because the worker is going away: give the job back as it was.
    if shared.shutting_down.load(Ordering::Acquire)
        && outcome.failure_kind() == Some(FailureKind::Cancelled)
    {
        let requeued = Transition::to(TaskState::Queued, envelope.attempt)
            .detail("released: the worker shut down while it ran");
        let _ = stores.results.transition(&id, requeued).await;
        let _ = stores.broker.nack(&id, lease, Nack::Release).await;
        shared.stats.released.fetch_add(1, Ordering::Relaxed);
        return;
    }

    let Some(failure) = outcome.error.clone() else {
        let done = Transition {
            plugin,
            outcome: Some(outcome),
            ..Transition::to(TaskState::Succeeded, envelope.attempt)
        };
        // Result first, then ack: a crash in between redelivers the job,
        // and the second success is ignored by the result backend.
        if persist("result", || stores.results.transition(&id, done.clone()))
            .await
            .is_ok()
        {
            if let Ok(false) = stores.broker.ack(&id, lease).await {
                tracing::warn!("lease lost before ack: the job may run again");
            }
            shared.stats.succeeded.fetch_add(1, Ordering::Relaxed);
            expire_later(shared, &id).await;
        }
        return;
    };

    let retryable = failure.kind.is_retryable() && envelope.attempt <= envelope.max_retries;
    if retryable {
        let defaults = version.as_ref().map(|r| &r.spec.options);
        let base = envelope
            .options
            .retry_backoff_ms
            .or(defaults.and_then(|d| d.retry_backoff_ms))
            .map_or(DEFAULT_BACKOFF, Duration::from_millis);
        let max = envelope
            .options
            .retry_backoff_max_ms
            .or(defaults.and_then(|d| d.retry_backoff_max_ms))
            .map_or(DEFAULT_BACKOFF_MAX, Duration::from_millis);
        let delay = failure.retry_delay_ms.map_or_else(
            || backoff(envelope.attempt, base, max),
            Duration::from_millis,
        );
        let mut next = envelope.clone();
        next.attempt += 1;
        next.not_before = Some(now_ms() + crate::time::ms(delay));
        let retrying = Transition {
            plugin,
            outcome: Some(outcome),
            detail: Some(format!(
                "{failure}; attempt {} of {} in {} ms",
                next.attempt,
                envelope.max_retries + 1,
                delay.as_millis()
            )),
            ..Transition::to(TaskState::Retrying, envelope.attempt)
        };
        if persist("retry", || stores.results.transition(&id, retrying.clone()))
            .await
            .is_ok()
        {
            let _ = stores
                .broker
                .nack(
                    &id,
                    lease,
                    Nack::Retry {
                        envelope: Box::new(next),
                        delay,
                    },
                )
                .await;
            shared.stats.retried.fetch_add(1, Ordering::Relaxed);
        }
        return;
    }

    let reason = if failure.kind.is_retryable() {
        format!(
            "{failure} (no retries left after {} attempts)",
            envelope.attempt
        )
    } else {
        format!("{failure} (not retryable)")
    };
    let dead = Transition {
        plugin,
        outcome: Some(outcome),
        detail: Some(reason.clone()),
        ..Transition::to(TaskState::Dead, envelope.attempt)
    };
    if persist("dead letter", || {
        stores.results.transition(&id, dead.clone())
    })
    .await
    .is_ok()
    {
        let _ = stores
            .broker
            .nack(&id, lease, Nack::DeadLetter { reason })
            .await;
        shared.stats.dead.fetch_add(1, Ordering::Relaxed);
        expire_later(shared, &id).await;
    }
}

/// Applies the worker's result TTL to a job that has finished for good.
async fn expire_later(shared: &WorkerShared, id: &str) {
    if let Some(ttl) = shared.config.result_ttl
        && let Err(e) = shared.stores.results.expire(id, ttl).await
    {
        tracing::warn!(id, error = %e, "cannot set the result's expiry");
    }
}

/// Extends the job's lease every third of its length while it runs.
async fn keep_lease(stores: Stores, id: String, lease: u64, duration: Duration) {
    let period = (duration / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(period).await;
        match stores.broker.extend(&id, lease, duration).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(id, "lease lost: another worker may run this job");
                return;
            }
            Err(e) => tracing::warn!(id, error = %e, "cannot extend lease"),
        }
    }
}
