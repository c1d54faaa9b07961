//! The worker: claims jobs from the broker, runs them through an
//! [`Executor`](crate::Executor), records results and decides retries and
//! dead letters.
//!
//! A job's path is three steps, one store call each: **claim** (lease the
//! job and mark its record `running`, in batches up to the free slots),
//! **run**, **complete** (record the outcome and ack, requeue or
//! dead-letter it, in one atomic step; the completions of jobs that finish
//! close together share one round trip, see [`completer`]). One timer
//! extends every running job's lease ([`lease_keeper`]).
//!
//! Guarantees: at most `concurrency` jobs run at once, and no more are
//! claimed than can run (a job gives its run slot back when its run ends;
//! at most `concurrency` more may be writing their outcomes meanwhile); a job's lease is extended while it runs; the
//! outcome is recorded in the same atomic step that acks the job, so a
//! crash before it redelivers the job instead of losing its result, and a
//! job whose record already succeeded is never run again; a finished
//! job's outcome is retried through a store outage for as long as its
//! lease can be held; on shutdown the worker stops claiming, lets running
//! jobs finish within the grace period, then cancels the rest and releases
//! them to their queue. While it runs, it keeps its record in the store
//! ([`heartbeat`], `xylem workers`).

mod callbacks;
mod cancel_watch;
mod completer;
mod heartbeat;
mod held;
mod job;
mod lease_keeper;
mod queues;
mod registry;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use job::{MAX_UNRESOLVED, unresolved_delay};
pub use queues::PAUSE_REFRESH;
pub use registry::{ResolveError, Resolved, TaskRegistry};

use crate::Stores;
use crate::executor::CancelToken;
use crate::outcome::Progress;
use crate::presence::WorkerState;

/// The shortest lease a worker accepts. A lease is extended every third of
/// its length; below a second, a scheduling hiccup or one slow store round
/// trip lets it lapse while the job still runs, and another worker (or
/// this one) runs the same job at the same time.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// How often a worker with running jobs asks the store whether any of
/// them is to be cancelled (`xylem task cancel`).
pub const CANCEL_POLL: Duration = Duration::from_millis(25);

/// How many finished jobs may wait on their writes (outcome, callbacks,
/// a workflow delivery) per run slot. A finished job gives its run slot
/// back at once, so the writes' latency does not hold the next job back;
/// this bounds how many wait at once (each holds only its outcome). With
/// one per slot, a store's round trips capped a worker's rate at
/// `concurrency / write latency`.
const FINISHING_PER_SLOT: usize = 4;

/// Under load, how long a worker waits for more slots to free up before
/// it claims for the ones it has (see the worker loop).
const CLAIM_BATCH_WAIT: Duration = Duration::from_millis(2);

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to consume; empty means every queue.
    pub queues: Vec<String>,
    /// Most jobs run at once.
    pub concurrency: usize,
    /// Lease (visibility timeout) of a claimed job; extended every third
    /// of it while the job runs. At least [`MIN_LEASE`].
    pub lease: Duration,
    /// On shutdown, how long running jobs may take to finish.
    pub grace: Duration,
    /// Longest idle wait between two claim attempts.
    pub poll_interval: Duration,
    /// How often to look for new plugin versions.
    pub refresh_interval: Duration,
    /// This worker's name, recorded in job histories.
    pub name: String,
    /// Keep the records of finished jobs (succeeded, dead, expired) this
    /// long; `None` keeps them until deleted.
    pub result_ttl: Option<Duration>,
    /// What a root job's runs may enqueue (a root job's own options may
    /// override it; children inherit their root's).
    pub child_quota: crate::lineage::ChildQuota,
    /// When a running job is cancelled: how long the task may take to
    /// wrap up after its `cancelled` host call turns true, before the
    /// sandbox stops it.
    pub cancel_grace: Duration,
    /// Read the queues' depths at each beat for the `xylem.queue.depth`
    /// gauge ([`crate::telemetry::metrics`]): on when something collects
    /// metrics, off by default (a store read every beat, per worker).
    pub queue_depth_metrics: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            queues: Vec::new(),
            concurrency: 8,
            lease: Duration::from_secs(30),
            grace: Duration::from_secs(30),
            poll_interval: Duration::from_millis(50),
            refresh_interval: Duration::from_millis(500),
            name: format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_owned()),
                std::process::id()
            ),
            result_ttl: None,
            child_quota: crate::lineage::ChildQuota::default(),
            cancel_grace: Duration::from_millis(50),
            queue_depth_metrics: false,
        }
    }
}

/// A worker configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The lease is below [`MIN_LEASE`].
    #[error(
        "lease {0:?} is too short: a worker needs at least {MIN_LEASE:?} to extend a lease before it runs out (try --lease 30s)"
    )]
    LeaseTooShort(Duration),
    /// Concurrency 0.
    #[error("concurrency must be at least 1")]
    NoConcurrency,
}

impl WorkerConfig {
    /// Checks that the configuration can work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.lease < MIN_LEASE {
            return Err(ConfigError::LeaseTooShort(self.lease));
        }
        if self.concurrency == 0 {
            return Err(ConfigError::NoConcurrency);
        }
        Ok(())
    }
}

/// Counts of what a worker did, returned when it stops.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Jobs that succeeded.
    pub succeeded: AtomicU64,
    /// Jobs requeued for a retry.
    pub retried: AtomicU64,
    /// Jobs dead-lettered.
    pub dead: AtomicU64,
    /// Jobs released back to their queue at shutdown.
    pub released: AtomicU64,
    /// Jobs put back to wait for a plugin that provides their task.
    pub deferred: AtomicU64,
    /// Jobs stopped by a cancel request.
    pub cancelled: AtomicU64,
}

/// A job this worker is running: what the lease keeper and the host calls
/// need to reach it.
#[derive(Debug)]
pub(crate) struct RunningJob {
    /// The job's id (for the logs).
    pub(crate) id: String,
    /// The lease it holds.
    pub(crate) lease: u64,
    /// Stops the run.
    pub(crate) cancel: CancelToken,
    /// Set when the job's cancel was requested through the store (not by
    /// this worker's shutdown).
    pub(crate) cancel_requested: AtomicBool,
    /// Until when the lease is known to be held (the keeper moves it on
    /// each successful extension), in ms since `WorkerShared::epoch`.
    held_until_ms: AtomicU64,
    /// The latest progress report not yet written (the latest wins).
    pub(crate) pending_progress: Mutex<Option<Progress>>,
    /// The concurrency-limit slot (a lock) it holds, if its task has a
    /// limit: renewed with the lease, released once its outcome is written.
    pub(crate) concurrency_slot: Mutex<Option<String>>,
    /// The length of its lease, in ms: the worker's, or the job's
    /// visibility timeout once its task is known.
    lease_for_ms: AtomicU64,
    /// When the lease was last extended (or taken), in ms since
    /// `WorkerShared::epoch`; 0: extend at the next tick.
    extended_at_ms: AtomicU64,
}

impl RunningJob {
    /// A job claimed at `now` for `lease_for`.
    pub(crate) fn new(
        id: String,
        lease: u64,
        cancel: CancelToken,
        now: Duration,
        lease_for: Duration,
    ) -> Self {
        Self {
            id,
            lease,
            cancel,
            cancel_requested: AtomicBool::new(false),
            held_until_ms: AtomicU64::new((now + lease_for).as_millis() as u64),
            pending_progress: Mutex::new(None),
            concurrency_slot: Mutex::new(None),
            lease_for_ms: AtomicU64::new(lease_for.as_millis() as u64),
            extended_at_ms: AtomicU64::new(now.as_millis() as u64),
        }
    }

    /// The length of the job's lease.
    pub(crate) fn lease_for(&self) -> Duration {
        Duration::from_millis(self.lease_for_ms.load(Ordering::Acquire))
    }

    /// Gives the job a lease of its own length (its visibility timeout),
    /// taken at the lease keeper's next tick.
    pub(crate) fn set_lease_for(&self, lease_for: Duration) {
        if lease_for != self.lease_for() {
            self.lease_for_ms
                .store(lease_for.as_millis() as u64, Ordering::Release);
            self.extended_at_ms.store(0, Ordering::Release);
        }
    }

    /// Whether the lease is due for extension at `now`: a third of it has
    /// passed since the last one.
    pub(crate) fn lease_due(&self, now: Duration) -> bool {
        let last = Duration::from_millis(self.extended_at_ms.load(Ordering::Acquire));
        last.is_zero() || now.saturating_sub(last) >= self.lease_for() / 3
    }

    /// Notes an extension asked for at `asked_at`.
    pub(crate) fn extended(&self, asked_at: Duration) {
        self.extended_at_ms
            .store(asked_at.as_millis().max(1) as u64, Ordering::Release);
    }

    pub(crate) fn held_until(&self) -> Duration {
        Duration::from_millis(self.held_until_ms.load(Ordering::Acquire))
    }

    pub(crate) fn set_held_until(&self, at: Duration) {
        self.held_until_ms
            .store(at.as_millis() as u64, Ordering::Release);
    }
}

/// Shared by the worker loop and its running jobs.
pub(crate) struct WorkerShared {
    /// Jobs that have run and are writing their outcome, at most
    /// `concurrency`: a job gives its run slot back as soon as its run
    /// ends, so the next job starts while the outcome is written.
    pub(crate) finishing: Arc<Semaphore>,
    pub(crate) stores: Stores,
    /// Enqueues running tasks' child jobs (its route cache is shared).
    pub(crate) client: crate::Client,
    pub(crate) registry: Arc<dyn TaskRegistry>,
    pub(crate) config: WorkerConfig,
    pub(crate) stats: Arc<WorkerStats>,
    /// Set once the grace period is over: running jobs get cancelled and
    /// released rather than failed.
    pub(crate) shutting_down: AtomicBool,
    /// Jobs running now, by id.
    pub(crate) running: Mutex<HashMap<String, Arc<RunningJob>>>,
    /// Where completions go to be written in batches.
    pub(crate) completer: completer::Completer,
    /// Where workflow activities' ends go to be given to their runs in
    /// batches.
    pub(crate) deliveries: crate::workflow::delivery::Deliveries,
    /// The worker's time origin (for `RunningJob::held_until`).
    pub(crate) epoch: Instant,
}

impl WorkerShared {
    /// Time since the worker's epoch.
    pub(crate) fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub(crate) fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunningJob>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A worker over some stores and a task registry.
pub struct Worker {
    shared: Arc<WorkerShared>,
    completions: completer::Receiver,
    deliveries: crate::workflow::delivery::Receiver,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Worker {
    /// A worker; call [`Worker::run`] to start it. Fails if the
    /// configuration cannot work ([`WorkerConfig::validate`]).
    pub fn new(
        stores: Stores,
        registry: Arc<dyn TaskRegistry>,
        config: WorkerConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let (completer, completions) = completer::channel();
        let (deliveries, delivered) = crate::workflow::delivery::channel();
        Ok(Self {
            shared: Arc::new(WorkerShared {
                finishing: Arc::new(Semaphore::new(config.concurrency * FINISHING_PER_SLOT)),
                client: crate::Client::new(stores.clone()),
                stores,
                registry,
                config,
                stats: Arc::new(WorkerStats::default()),
                shutting_down: AtomicBool::new(false),
                running: Mutex::new(HashMap::new()),
                completer,
                deliveries,
                epoch: Instant::now(),
            }),
            completions,
            deliveries: delivered,
        })
    }

    /// The worker's counters (live while it runs).
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.shared.stats.clone()
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Arc<WorkerStats> {
        let Self {
            shared,
            completions,
            deliveries,
        } = self;
        let config = &shared.config;
        let slots = Arc::new(Semaphore::new(config.concurrency));
        let mut jobs = JoinSet::new();
        let completer = tokio::spawn(
            completer::run(shared.stores.broker.clone(), completions)
                .instrument(tracing::info_span!("completer")),
        );
        let delivering = tokio::spawn(
            crate::workflow::delivery::run(shared.stores.workflows.clone(), deliveries)
                .instrument(tracing::info_span!("workflow_deliveries")),
        );
        let keeper = tokio::spawn(
            lease_keeper::run(shared.clone()).instrument(tracing::info_span!("lease_keeper")),
        );
        let cancel_watch = tokio::spawn(
            cancel_watch::run(shared.clone()).instrument(tracing::info_span!("cancel_watch")),
        );
        let presence = Arc::new(heartbeat::Presence::new());
        let beating = tokio::spawn(
            presence
                .clone()
                .run(shared.clone())
                .instrument(tracing::info_span!("heartbeat")),
        );
        let mut last_refresh: Option<Instant> = None;
        let mut claim_queues = queues::ClaimQueues::new(config.queues.clone());
        let mut store_backoff = Duration::from_millis(100);
        tracing::info!(
            worker = %config.name,
            queues = %if config.queues.is_empty() { "*".to_owned() } else { config.queues.join(",") },
            concurrency = config.concurrency,
            "worker started"
        );
        tokio::pin!(shutdown);

        loop {
            while jobs.try_join_next().is_some() {}
            if last_refresh.is_none_or(|t| t.elapsed() >= config.refresh_interval) {
                if let Err(e) = shared.registry.refresh().await {
                    tracing::warn!(error = %e, "cannot refresh plugins");
                }
                last_refresh = Some(Instant::now());
            }
            // Back-pressure: claim nothing until a slot frees up. Under
            // load, claim in batches: a claim is a store round trip (a
            // transaction), so one per freed slot would cost as much as the
            // jobs themselves; wait — at most CLAIM_BATCH_WAIT — for a
            // quarter of the slots. An idle worker claims at once.
            let batch = (config.concurrency / 4).max(1);
            if slots.available_permits() < batch {
                let first = slots.available_permits() == 0;
                let wait = async {
                    if first {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(CLAIM_BATCH_WAIT).await;
                };
                tokio::select! {
                    // Acquired only to learn they are free: given back at once.
                    _ = slots.acquire_many(batch as u32) => {},
                    () = wait => {},
                    () = &mut shutdown => break,
                }
                if slots.available_permits() == 0 {
                    continue;
                }
            }
            let Some(queues) = claim_queues.current(&shared.stores).await else {
                // Every queue this worker serves is paused.
                tokio::select! {
                    () = tokio::time::sleep(config.poll_interval.max(Duration::from_millis(100))) => {},
                    () = &mut shutdown => break,
                }
                continue;
            };
            let free = slots.available_permits();
            let claimed = tokio::select! {
                r = shared
                    .stores
                    .broker
                    .claim(queues, free, config.lease, &config.name)
                    .instrument(crate::telemetry::trace::store_span("store.claim", free)) => r,
                () = &mut shutdown => break,
            };
            let deliveries = match claimed {
                Ok(d) => {
                    store_backoff = Duration::from_millis(100);
                    d
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?store_backoff, "cannot claim jobs; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(store_backoff) => {},
                        () = &mut shutdown => break,
                    }
                    store_backoff = (store_backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if deliveries.is_empty() {
                tokio::select! {
                    () = shared.stores.broker.wait_for_jobs(config.poll_interval) => {},
                    () = &mut shutdown => break,
                }
                continue;
            }
            for delivery in deliveries {
                // We claimed at most `free`, and only this loop takes
                // permits: one is always there.
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    tracing::error!("claimed more jobs than free slots");
                    break;
                };
                let shared = shared.clone();
                let span = crate::telemetry::trace::execute_span(&delivery.envelope);
                jobs.spawn(job::process(shared, delivery, permit).instrument(span));
            }
        }

        tracing::info!(running = jobs.len(), grace = ?config.grace, "shutting down: no new jobs");
        beating.abort();
        let _ = beating.await;
        presence.write(&shared, WorkerState::Stopping).await;
        let deadline = tokio::time::sleep(config.grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = jobs.join_next() => if next.is_none() { break },
                () = &mut deadline => {
                    shared.shutting_down.store(true, Ordering::Release);
                    let tokens: Vec<CancelToken> =
                        shared.running().values().map(|job| job.cancel.clone()).collect();
                    tracing::warn!(jobs = tokens.len(), "grace period over: cancelling and releasing running jobs");
                    for token in tokens {
                        token.cancel();
                    }
                    while jobs.join_next().await.is_some() {}
                    break;
                }
            }
        }
        keeper.abort();
        let _ = keeper.await;
        cancel_watch.abort();
        let _ = cancel_watch.await;
        presence.write(&shared, WorkerState::Stopped).await;
        let stats = shared.stats.clone();
        // The completer and the deliveries end once the last sender (in
        // `shared`) is gone.
        drop(shared);
        let _ = completer.await;
        let _ = delivering.await;
        tracing::info!("worker stopped");
        stats
    }
}
