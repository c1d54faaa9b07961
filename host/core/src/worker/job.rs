//! One claimed job, from `running` to `succeeded`, `retrying`, `dead` or
//! back to `queued` — decided here, written by one [`Completion`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use tracing::Instrument;

use super::{ResolveError, Resolved, RunningJob, WorkerShared, callbacks};
use crate::client::{ClientError, EnqueueRequest};
use crate::concurrency::ConcurrencyLimit;
use crate::executor::{CancelToken, ChildEnqueued, ChildOptions, HostCalls, RunRequest, TaskInfo};
use crate::lineage::{ChildEnqueueError, Lineage, RunChildren, TREE_QUOTA_TTL, tree_quota_key};
use crate::rate_limit::RateLimit;
use crate::record::{TaskState, Transition};
use crate::retry::{DEFAULT_BACKOFF, DEFAULT_BACKOFF_MAX, backoff};
use crate::store::{Completed, Completion, Delivery, Nack, Settle, StoreError};
use crate::telemetry::metrics::Finished;
use crate::time::{format_ms, ms, now_ms};
use crate::{Envelope, Failure, FailureKind, Outcome, Progress, TaskOptions, Usage};

/// How many times a job whose task no plugin provides is put back to wait
/// before it is dead-lettered as `unknown-task`; with [`unresolved_delay`]
/// that is about three minutes — time for a push to reach every worker.
pub const MAX_UNRESOLVED: u32 = 12;

/// The wait before the `n`th (1-based) look for a task's plugin:
/// 250 ms doubling, at most 30 s.
pub fn unresolved_delay(n: u32) -> Duration {
    (Duration::from_millis(250) * 2u32.saturating_pow(n.saturating_sub(1).min(10)))
        .min(Duration::from_secs(30))
}

/// What a running job's host calls do inside a worker.
struct WorkerHostCalls {
    shared: Arc<WorkerShared>,
    job: Arc<RunningJob>,
    /// What this run's children inherit.
    lineage: Lineage,
    /// What this run has enqueued so far.
    children: std::sync::Mutex<RunChildren>,
    /// The trace context its children are made in (its `execute` span's,
    /// see [`crate::telemetry::trace`]).
    trace_headers: Vec<(String, String)>,
}

impl std::fmt::Debug for WorkerHostCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHostCalls")
            .field("lineage", &self.lineage)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl HostCalls for WorkerHostCalls {
    fn progress(&self, _job: &TaskInfo, progress: &Progress) {
        // Coalesced: the lease keeper writes the latest report every
        // 100 ms at most; a task reporting in a loop costs no store write.
        *self
            .job
            .pending_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(progress.clone());
    }

    fn heartbeat(&self, _job: &TaskInfo) {
        // The worker's lease keeper extends the lease of every running
        // job while it runs, so a heartbeat has nothing left to do: it
        // costs the task its call and the host nothing.
    }

    async fn enqueue(
        &self,
        parent: &TaskInfo,
        name: &str,
        args: &str,
        options: ChildOptions,
    ) -> Result<ChildEnqueued, ChildEnqueueError> {
        let span = crate::telemetry::trace::enqueue_span(name, &self.trace_headers);
        self.enqueue_child(parent, name, args, options)
            .instrument(span)
            .await
    }

    async fn submit_canvas(
        &self,
        parent: &TaskInfo,
        definition: &str,
    ) -> Result<String, ChildEnqueueError> {
        self.start_child_canvas(parent, definition).await
    }
}

impl WorkerHostCalls {
    /// A child job from task code, in this run's job tree and trace.
    async fn enqueue_child(
        &self,
        parent: &TaskInfo,
        name: &str,
        args: &str,
        options: ChildOptions,
    ) -> Result<ChildEnqueued, ChildEnqueueError> {
        // Charged before anything else, so refused calls count too: a
        // loop of bad enqueues ends at the quota like a loop of good ones.
        // Callbacks' arguments are stored with the child: they count too.
        let callback_bytes: usize = [&options.options.link, &options.options.link_error]
            .into_iter()
            .flatten()
            .map(|c| c.args.as_ref().map_or(0, String::len))
            .sum();
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .charge(
                &self.lineage.quota,
                self.lineage.depth,
                (args.len() + callback_bytes) as u64,
            )?;
        let mut req = EnqueueRequest::new(name, args);
        req.headers.clone_from(&self.trace_headers);
        req.queue = options.queue;
        req.priority = options.priority;
        req.max_retries = options.max_retries;
        req.parent = Some(parent.id.clone());
        req.unique = options.unique;
        if let Some(delay) = options.delay_ms {
            req = req.delay(Duration::from_millis(delay.min(MAX_CHILD_DELAY_MS)));
        }
        if let Some(expires) = options.expires_ms {
            req.expires_at = Some(now_ms().saturating_add(
                crate::time::Millis::try_from(expires.min(MAX_CHILD_DELAY_MS)).unwrap_or(0),
            ));
        }
        // A child's child quota is its tree's: it cannot set its own.
        req.options = crate::JobOptions {
            child_quota: Default::default(),
            ..options.options
        };
        let (mut envelope, unique) = self
            .shared
            .client
            .prepare_unique(req)
            .await
            .map_err(child_error)?;
        self.lineage.adopt(&mut envelope);
        let quotas = &self.shared.stores.quotas;
        let tree = tree_quota_key(&self.lineage.root);
        let per_tree = self.lineage.quota.per_tree;
        if !quotas
            .take_quota(&tree, 1, per_tree, TREE_QUOTA_TTL)
            .await
            .map_err(|e| ChildEnqueueError::Unavailable(e.to_string()))?
        {
            return Err(ChildEnqueueError::QuotaExceeded(format!(
                "the tree of jobs under root job {} already has {per_tree} descendants, its limit",
                self.lineage.root
            )));
        }
        let first = match unique {
            Some(unique) => match self
                .shared
                .client
                .enqueue_once(envelope.clone(), &unique)
                .await
                .map_err(child_error)?
            {
                crate::unique::UniqueOutcome::Enqueued(_) => None,
                crate::unique::UniqueOutcome::Duplicate(first) => Some(first),
            },
            None => {
                self.shared
                    .stores
                    .broker
                    .enqueue(std::slice::from_ref(&envelope))
                    .await
                    .map_err(|e| ChildEnqueueError::Unavailable(e.to_string()))?;
                None
            }
        };
        if let Some(first) = first {
            tracing::debug!(first = %first, task = %envelope.task, "unique child: an equal job exists");
            return Ok(ChildEnqueued {
                id: first,
                duplicate: true,
            });
        }
        crate::telemetry::trace::record_enqueued(&envelope);
        crate::telemetry::metrics::enqueued(&envelope.task, &envelope.queue, 1);
        tracing::debug!(child = %envelope.id, task = %envelope.task, depth = self.lineage.depth, "child enqueued");
        Ok(ChildEnqueued {
            id: envelope.id,
            duplicate: false,
        })
    }

    /// A canvas from task code: every task in it a child of this run —
    /// charged to the run's quota (count, and the definition's bytes) and
    /// the tree's, all at once — in this run's job tree.
    async fn start_child_canvas(
        &self,
        parent: &TaskInfo,
        definition: &str,
    ) -> Result<String, ChildEnqueueError> {
        // Sized before it is parsed: a definition over the run's argument
        // quota is refused without the host reading it.
        if definition.len() as u64 > self.lineage.quota.per_run_args_bytes {
            return Err(ChildEnqueueError::QuotaExceeded(format!(
                "a canvas of {} bytes is over this run's child-argument quota of {} bytes",
                definition.len(),
                self.lineage.quota.per_run_args_bytes
            )));
        }
        let root: crate::canvas::Node = serde_json::from_str(definition).map_err(|e| {
            ChildEnqueueError::InvalidArguments(format!(
                "not a canvas (see docs/canvas.md for the format): {e}"
            ))
        })?;
        let mut canvas =
            crate::canvas::Canvas::new(root).map_err(ChildEnqueueError::InvalidArguments)?;
        let tasks = u32::try_from(canvas.root.tasks(&[]).len()).unwrap_or(u32::MAX);
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .charge_many(
                &self.lineage.quota,
                self.lineage.depth,
                tasks,
                definition.len() as u64,
            )?;
        let tree = tree_quota_key(&self.lineage.root);
        let per_tree = self.lineage.quota.per_tree;
        if !self
            .shared
            .stores
            .quotas
            .take_quota(&tree, u64::from(tasks), per_tree, TREE_QUOTA_TTL)
            .await
            .map_err(|e| ChildEnqueueError::Unavailable(e.to_string()))?
        {
            return Err(ChildEnqueueError::QuotaExceeded(format!(
                "the tree of jobs under root job {} cannot take {tasks} more descendants (its limit is {per_tree})",
                self.lineage.root
            )));
        }
        canvas.headers.clone_from(&parent.headers);
        // Its jobs are in this run's trace.
        canvas.headers.retain(|(k, _)| {
            !self
                .trace_headers
                .iter()
                .any(|(t, _)| t.eq_ignore_ascii_case(k))
        });
        canvas.headers.extend(self.trace_headers.iter().cloned());
        canvas.lineage = Some(self.lineage.clone());
        crate::canvas::start_canvas(&self.shared.client, &canvas)
            .await
            .map_err(child_error)?;
        tracing::debug!(canvas = %canvas.id, tasks, "canvas enqueued by a task");
        Ok(canvas.id)
    }
}

/// Longest delay a task may give a child: a year.
const MAX_CHILD_DELAY_MS: u64 = 365 * 24 * 3600 * 1000;

/// What a task is told when the client refuses its child.
fn child_error(e: ClientError) -> ChildEnqueueError {
    match e {
        ClientError::UnknownTask { .. } => ChildEnqueueError::UnknownTask(e.to_string()),
        ClientError::Store(_) | ClientError::PartlyEnqueued { .. } => {
            ChildEnqueueError::Unavailable(e.to_string())
        }
        _ => ChildEnqueueError::InvalidArguments(e.to_string()),
    }
}

/// Runs one claimed job to its completion. `slot` is its run slot, given
/// back as soon as the run ends: the outcome is written under a
/// `finishing` permit instead, so the next job runs meanwhile.
pub(super) async fn process(
    shared: Arc<WorkerShared>,
    delivery: Delivery,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let envelope = delivery.envelope;
    let lease = delivery.lease;
    let job = Arc::new(RunningJob::new(
        envelope.id.clone(),
        lease,
        CancelToken::new(),
        shared.now(),
        shared.config.lease,
    ));
    shared.running().insert(envelope.id.clone(), job.clone());
    let (completion, ran) = run(&shared, &envelope, lease, &job).await;
    // Bounded: at most `FINISHING_PER_SLOT` × `concurrency` jobs wait on
    // their writes at once.
    let finishing = shared.finishing.clone().acquire_owned().await;
    drop(slot);
    // What its end sets off — callbacks, its canvas's next step, its
    // workflow run's delivery — is written out of the run slot too.
    let completion = match &ran {
        Some(options) => ended(&shared, &job, &envelope, options, completion).await,
        None => Some(completion),
    };
    if let Some(completion) = completion {
        record_on_span(&completion);
        finish(&shared, &job, &envelope, completion).await;
    }
    drop(finishing);
    shared.running().remove(&envelope.id);
    // Only now — the outcome written, or left for the job to run again
    // once its lease lapses — may another job take the slot.
    let slot = job
        .concurrency_slot
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(slot) = slot
        && let Err(e) = shared.stores.locks.release(&slot, &envelope.id).await
    {
        tracing::warn!(id = %envelope.id, slot, error = %e, "cannot release a concurrency-limit slot (it lapses with the lease)");
    }
}

/// Decides how the delivery ends; with the task's options if the code
/// ran (its end then sets off callbacks and deliveries: [`ended`]).
async fn run(
    shared: &Arc<WorkerShared>,
    envelope: &Envelope,
    lease: u64,
    job: &Arc<RunningJob>,
) -> (Completion, Option<TaskOptions>) {
    let id = envelope.id.clone();
    let ttl = shared.config.result_ttl;
    if let Some(at) = envelope.expires_at.filter(|at| now_ms() > *at) {
        let expired = Completion {
            id,
            lease,
            transition: Transition::to(TaskState::Expired, envelope.attempt)
                .detail(format!("expired at {} before it could run", format_ms(at))),
            settle: Settle::Ack,
            result_ttl: ttl,
        };
        return (expired, None);
    }

    let resolved = match reserve(shared, envelope, lease, job)
        .instrument(crate::telemetry::trace::reserve_span())
        .await
    {
        Ok(resolved) => resolved,
        Err(ends) => return *ends,
    };
    let span = tracing::Span::current();
    let could_start_at = envelope.not_before.unwrap_or(0).max(envelope.enqueued_at);
    crate::telemetry::metrics::started(
        &envelope.task,
        &envelope.queue,
        Duration::from_millis(u64::try_from(now_ms().saturating_sub(could_start_at)).unwrap_or(0)),
    );

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
        limits: envelope.limits(&resolved.spec.options),
        cancel: job.cancel.clone(),
    };
    // A root job's quota is the worker's, with the job's own overrides; a
    // child's is its tree's.
    let quota = match &envelope.lineage {
        Some(lineage) => lineage.quota,
        None => shared
            .config
            .child_quota
            .for_root(&resolved.spec.child_quota, &envelope.options),
    };
    let host = Arc::new(WorkerHostCalls {
        shared: shared.clone(),
        job: job.clone(),
        lineage: Lineage::child_of(envelope, quota, request.limits),
        children: std::sync::Mutex::new(RunChildren::default()),
        trace_headers: crate::telemetry::trace::headers_for_children(&span, envelope),
    });
    let mut outcome = resolved.executor.execute(request, host).await;
    // The last progress report goes with the outcome; nothing later may
    // overwrite it.
    if let Some(progress) = job
        .pending_progress
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        && outcome.progress.is_none()
    {
        outcome.progress = Some(progress);
    }
    let cancelled = job.cancel_requested.load(Ordering::Acquire);
    let completion = decide(shared, envelope, lease, &resolved, outcome, cancelled);
    (completion, Some(resolved.spec.options))
}

/// Takes what the run needs before it starts: the task's code, a slot of
/// its concurrency limit, a start under its rate limit. `Err` is how the
/// delivery ends without running (waiting again, or refused), with the
/// options its end goes by if that end sets off callbacks ([`ended`]).
async fn reserve(
    shared: &Arc<WorkerShared>,
    envelope: &Envelope,
    lease: u64,
    job: &Arc<RunningJob>,
) -> Result<Resolved, Box<(Completion, Option<TaskOptions>)>> {
    let resolved = match resolve(shared, envelope).await {
        Ok(resolved) => resolved,
        Err(ResolveError::Unavailable(reason)) => {
            // The code exists but cannot be had right now: wait, without
            // using up an attempt.
            let delay = Duration::from_secs(1);
            let waiting = wait_again(
                lease,
                envelope.clone(),
                delay,
                format!(
                    "cannot load the task's plugin ({reason}); trying again in {} ms",
                    delay.as_millis()
                ),
            );
            return Err(Box::new((waiting, None)));
        }
        Err(ResolveError::UnknownTask(reason)) => {
            // Its end (dead, or waiting for a plugin) sets off what any
            // end does, under the default options.
            return Err(Box::new((
                unresolved(shared, envelope, lease, reason),
                Some(TaskOptions::default()),
            )));
        }
    };
    if let Some(lease_for) = envelope.options.visibility_timeout(&resolved.spec.options) {
        job.set_lease_for(lease_for);
    }
    if let Some(waiting) = concurrency_limited(shared, envelope, lease, job, &resolved).await {
        return Err(Box::new((waiting, None)));
    }
    if let Some(waiting) = rate_limited(shared, envelope, lease, &resolved).await {
        return Err(Box::new((waiting, None)));
    }
    Ok(resolved)
}

/// What every ended run goes through before its completion is written:
/// its callback fired (`link` or `link_error`), its workflow run given its
/// end, and a succeeded job's result dropped if it ignores results (after
/// its `link` had it). `None` if its workflow run could not be given its
/// end for now: the completion is then not written, and the job runs
/// again once its lease lapses — marked done, its end would be lost.
async fn ended(
    shared: &WorkerShared,
    job: &RunningJob,
    envelope: &Envelope,
    task: &TaskOptions,
    mut completion: Completion,
) -> Option<Completion> {
    callbacks::fire(shared, job, envelope, task, &mut completion).await;
    callbacks::advance_canvas(shared, job, envelope, &mut completion).await;
    if !callbacks::deliver_to_workflow(shared, job, envelope, &mut completion).await {
        return None;
    }
    if completion.transition.state == TaskState::Succeeded
        && envelope.options.ignores_result(task)
        && let Some(outcome) = &mut completion.transition.outcome
        && outcome.result.take().is_some()
    {
        completion
            .transition
            .add_note("result not kept (ignore_result)");
    }
    Some(completion)
}

/// Resolves the task; if no plugin provides it, refreshes the registry
/// at once (a plugin pushed a moment ago) and looks again.
async fn resolve(shared: &WorkerShared, envelope: &Envelope) -> Result<Resolved, ResolveError> {
    let pinned = envelope.plugin.as_deref();
    match shared.registry.resolve(&envelope.task, pinned).await {
        Err(ResolveError::UnknownTask(_)) => {
            if let Err(e) = shared.registry.refresh().await {
                return Err(ResolveError::Unavailable(e));
            }
            shared.registry.resolve(&envelope.task, pinned).await
        }
        other => other,
    }
}

/// No plugin provides the task: wait for one a while, then dead-letter.
/// Takes a slot of the task's concurrency limit (`crate::concurrency`) for
/// the job, if the task has one: `None` to run now (the slot is noted in
/// `job`), else the completion that puts the job back to look again soon
/// — same attempt, no retry used.
async fn concurrency_limited(
    shared: &WorkerShared,
    envelope: &Envelope,
    lease: u64,
    job: &RunningJob,
    resolved: &Resolved,
) -> Option<Completion> {
    let text = resolved.spec.concurrency.as_deref()?;
    let limit: ConcurrencyLimit = match text.parse() {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(task = %envelope.task, error = %e, "ignoring a concurrency limit that does not parse");
            return None;
        }
    };
    let mut why = format!("concurrency limit ({text}): every slot is taken");
    for slot in limit.slots(&envelope.task, &envelope.headers) {
        match shared
            .stores
            .locks
            .acquire(&slot, &envelope.id, job.lease_for())
            .await
        {
            Ok(true) => {
                *job.concurrency_slot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(slot);
                return None;
            }
            Ok(false) => {}
            Err(e) => {
                why = format!("cannot take a slot of the concurrency limit ({text}): {e}");
                break;
            }
        }
    }
    // A moment, spread so that waiting jobs do not all look at once.
    let delay = CONCURRENCY_RETRY.mul_f64(1.0 + rand::random::<f64>());
    let detail = format!("{why}; looking again in {} ms", delay.as_millis());
    Some(wait_again(lease, envelope.clone(), delay, detail))
}

/// How long a job that found its concurrency limit full waits (up to
/// twice this, at random) before it looks again.
const CONCURRENCY_RETRY: Duration = Duration::from_millis(200);

/// How late after its reserved start slot a rate-limited job may still
/// start on that slot (it comes back by a timer and a claim, so a little
/// late); later than this, it reserves a new one.
const RATE_SLOT_GRACE: Duration = Duration::from_secs(1);

/// Reserves the job a start slot under its task's rate limit
/// (`crate::rate_limit`), if it has one and no slot yet (or one more
/// than [`RATE_SLOT_GRACE`] past): `None` to run now,
/// else the completion that puts the job back to wait for its slot — same
/// attempt, no retry used.
async fn rate_limited(
    shared: &WorkerShared,
    envelope: &Envelope,
    lease: u64,
    resolved: &Resolved,
) -> Option<Completion> {
    let text = resolved.spec.effective_rate_limit()?;
    let limit: RateLimit = match text.parse() {
        Ok(limit) => limit,
        Err(e) => {
            // Refused at push; a store written by something else may
            // still hold one.
            tracing::warn!(task = %envelope.task, error = %e, "ignoring a rate limit that does not parse");
            return None;
        }
    };
    let now = now_ms();
    if let Some(slot) = envelope.rate_slot
        && now.saturating_sub(slot) <= ms(RATE_SLOT_GRACE)
    {
        // Its slot was reserved when it was sent to wait for it.
        return None;
    }
    // No slot yet — or one long past: the job comes back this late only
    // if workers were stalled or down, and every job whose slot passed
    // meanwhile would start at once, a burst the limit is there to
    // prevent. It takes a new slot, in line with the others.
    let mut next = envelope.clone();
    let interval = limit.interval();
    let key = limit.key(&envelope.task, &envelope.headers);
    let forget = (interval * 2).max(Duration::from_secs(60));
    let (delay, why) = match shared
        .stores
        .rate_limits
        .reserve_slot(&key, interval, now, forget)
        .await
    {
        Ok(slot) if slot <= now => return None,
        Ok(slot) => {
            next.rate_slot = Some(slot);
            (
                Duration::from_millis(u64::try_from(slot - now).unwrap_or(0)),
                format!(
                    "rate limited ({text}): its turn comes at {}",
                    format_ms(slot)
                ),
            )
        }
        Err(e) => (
            Duration::from_secs(1),
            format!(
                "cannot reserve a start under the rate limit ({text}): {e}; trying again in 1 s"
            ),
        ),
    };
    Some(wait_again(lease, next, delay, why))
}

/// Puts a job back in its queue to run `delay` from now as `next` (the
/// same attempt: waiting is not a retry), its record `queued` with
/// `detail` saying why.
fn wait_again(lease: u64, next: Envelope, delay: Duration, detail: String) -> Completion {
    Completion {
        id: next.id.clone(),
        lease,
        transition: Transition::to(TaskState::Queued, next.attempt).detail(detail),
        settle: Settle::Nack(Nack::Retry {
            envelope: Box::new(next),
            delay,
        }),
        result_ttl: None,
    }
}

fn unresolved(
    shared: &WorkerShared,
    envelope: &Envelope,
    lease: u64,
    reason: String,
) -> Completion {
    let id = envelope.id.clone();
    if envelope.unresolved < MAX_UNRESOLVED {
        let mut next = envelope.clone();
        next.unresolved += 1;
        let delay = unresolved_delay(next.unresolved);
        let detail = format!(
            "{reason}; looking again in {} ms ({} of {MAX_UNRESOLVED})",
            delay.as_millis(),
            next.unresolved
        );
        return wait_again(lease, next, delay, detail);
    }
    let failure = Failure::new(FailureKind::UnknownTask, reason);
    let reason = format!(
        "{failure} (no plugin provided it after {MAX_UNRESOLVED} looks over {} s)",
        (1..=MAX_UNRESOLVED)
            .map(unresolved_delay)
            .sum::<Duration>()
            .as_secs()
    );
    Completion {
        id,
        lease,
        transition: Transition {
            outcome: Some(Outcome::failure(failure, Usage::default())),
            detail: Some(reason.clone()),
            ..Transition::to(TaskState::Dead, envelope.attempt)
        },
        settle: Settle::Nack(Nack::DeadLetter { reason }),
        result_ttl: shared.config.result_ttl,
    }
}

/// Turns a run's outcome into the delivery's completion.
fn decide(
    shared: &WorkerShared,
    envelope: &Envelope,
    lease: u64,
    resolved: &Resolved,
    outcome: Outcome,
    cancel_requested: bool,
) -> Completion {
    let id = envelope.id.clone();
    let plugin = Some(resolved.version.clone());

    // Cancelled through the store (`crate::cancel`): a success stays one;
    // anything else ends the job as `cancelled`, never retried.
    if cancel_requested && !outcome.is_success() {
        return Completion {
            id,
            lease,
            transition: Transition {
                plugin,
                outcome: Some(outcome),
                detail: Some(crate::cancel::CANCELLED_RUNNING.to_owned()),
                ..Transition::to(TaskState::Cancelled, envelope.attempt)
            },
            settle: Settle::Ack,
            result_ttl: shared.config.result_ttl,
        };
    }

    // Cancelled because the worker is going away: give the job back as it was.
    if shared.shutting_down.load(Ordering::Acquire)
        && outcome.failure_kind() == Some(FailureKind::Cancelled)
    {
        return Completion {
            id,
            lease,
            transition: Transition::to(TaskState::Queued, envelope.attempt)
                .detail("released: the worker shut down while it ran"),
            settle: Settle::Nack(Nack::Release),
            result_ttl: None,
        };
    }

    let Some(failure) = outcome.error.clone() else {
        return Completion {
            id,
            lease,
            transition: Transition {
                plugin,
                outcome: Some(outcome),
                ..Transition::to(TaskState::Succeeded, envelope.attempt)
            },
            settle: Settle::Ack,
            result_ttl: shared.config.result_ttl,
        };
    };

    let retryable = failure.kind.is_retryable() && envelope.attempt <= envelope.max_retries;
    if retryable {
        let defaults = &resolved.spec.options;
        let base = envelope
            .options
            .retry_backoff_ms
            .or(defaults.retry_backoff_ms)
            .map_or(DEFAULT_BACKOFF, Duration::from_millis);
        let max = envelope
            .options
            .retry_backoff_max_ms
            .or(defaults.retry_backoff_max_ms)
            .map_or(DEFAULT_BACKOFF_MAX, Duration::from_millis);
        let jitter = envelope.options.retry_jitter(defaults);
        let delay = failure.retry_delay_ms.map_or_else(
            || backoff(envelope.attempt, base, max, jitter),
            Duration::from_millis,
        );
        let mut next = envelope.clone();
        next.attempt += 1;
        // A new attempt waits for a start slot of its own.
        next.rate_slot = None;
        next.not_before = Some(now_ms() + crate::time::ms(delay));
        let detail = format!(
            "{failure}; attempt {} of {} in {} ms",
            next.attempt,
            envelope.max_retries + 1,
            delay.as_millis()
        );
        return Completion {
            id,
            lease,
            transition: Transition {
                plugin,
                outcome: Some(outcome),
                detail: Some(detail),
                ..Transition::to(TaskState::Retrying, envelope.attempt)
            },
            settle: Settle::Nack(Nack::Retry {
                envelope: Box::new(next),
                delay,
            }),
            result_ttl: None,
        };
    }

    let reason = if failure.kind.is_retryable() {
        format!(
            "{failure} (no retries left after {} attempts)",
            envelope.attempt
        )
    } else {
        format!("{failure} (not retryable)")
    };
    Completion {
        id,
        lease,
        transition: Transition {
            plugin,
            outcome: Some(outcome),
            detail: Some(reason.clone()),
            ..Transition::to(TaskState::Dead, envelope.attempt)
        },
        settle: Settle::Nack(Nack::DeadLetter { reason }),
        result_ttl: shared.config.result_ttl,
    }
}

/// Writes the completion. A transient store error is retried with backoff
/// for as long as the job's lease is known to be held (the lease keeper
/// goes on extending it meanwhile): a store outage delays a finished job's
/// result, it does not throw it away. Past that, or on an error that
/// cannot pass, the job is left to be delivered again when its lease runs
/// out — never lost.
async fn finish(
    shared: &WorkerShared,
    job: &RunningJob,
    envelope: &Envelope,
    completion: Completion,
) {
    let to_write = &completion;
    let written = super::held::while_lease_holds(
        shared,
        job,
        "record the job's outcome",
        StoreError::is_transient,
        move || shared.completer.complete(to_write.clone()),
    )
    .await;
    match written {
        Ok(done) => count(shared, envelope, &completion, done),
        Err(e) => tracing::error!(
            id = %envelope.id,
            error = %e,
            "cannot record the job's outcome; it will be delivered again when its lease runs out"
        ),
    }
}

/// Counts a written outcome: the worker's own counts (its record) and
/// the job metrics.
fn count(shared: &WorkerShared, envelope: &Envelope, completion: &Completion, done: Completed) {
    let state = completion.transition.state;
    let settle = &completion.settle;
    let stats = &shared.stats;
    match done {
        Completed::Applied => {}
        Completed::AlreadySucceeded => {
            tracing::info!(id = %envelope.id, "the job had already succeeded (another delivery finished it)");
            return;
        }
        Completed::LeaseLost => {
            tracing::warn!(
                id = %envelope.id,
                "lease lost before the outcome was recorded: another worker has the job"
            );
            return;
        }
    }
    let finished = match state {
        TaskState::Succeeded => Some(Finished::Succeeded),
        TaskState::Retrying => Some(Finished::Retried),
        TaskState::Dead => Some(Finished::Dead),
        TaskState::Cancelled => Some(Finished::Cancelled),
        _ => None,
    };
    if let Some(finished) = finished {
        let usage = completion.transition.outcome.as_ref().map(|o| &o.usage);
        crate::telemetry::metrics::finished(&envelope.task, &envelope.queue, finished, usage);
    }
    let counter = match (state, settle) {
        (TaskState::Succeeded, _) => &stats.succeeded,
        (TaskState::Retrying, _) => &stats.retried,
        (TaskState::Dead, _) => &stats.dead,
        (TaskState::Cancelled, _) => &stats.cancelled,
        (TaskState::Queued, Settle::Nack(Nack::Release)) => &stats.released,
        (TaskState::Queued, _) => &stats.deferred,
        _ => return,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Records how the delivery ended on its `execute` span (the current
/// span of [`process`]).
fn record_on_span(completion: &Completion) {
    let transition = &completion.transition;
    let outcome = transition.outcome.as_ref();
    let error = outcome
        .and_then(|o| o.error.as_ref())
        .map(ToString::to_string)
        .or_else(|| {
            matches!(transition.state, TaskState::Dead | TaskState::Expired)
                .then(|| transition.detail.clone())
                .flatten()
        });
    crate::telemetry::trace::record_outcome(
        &tracing::Span::current(),
        transition.plugin.as_deref(),
        outcome.map(|o| &o.usage),
        transition.state.as_str(),
        error.as_deref(),
    );
}
