//! The worker: reserves jobs from the broker, runs them through an
//! [`Executor`](crate::Executor), records results and decides retries and
//! dead letters.
//!
//! Guarantees: at most `concurrency` jobs run at once, and no more are
//! reserved than can run; a job's lease is extended while it runs; the
//! result is written before the job is acked, so a crash between the two
//! redelivers the job instead of losing its result; on shutdown the worker
//! stops reserving, lets running jobs finish within the grace period, then
//! cancels the rest and releases them to their queue.

mod job;
mod registry;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use registry::{Resolved, TaskRegistry};

use crate::Stores;
use crate::executor::CancelToken;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to consume; empty means every queue.
    pub queues: Vec<String>,
    /// Most jobs run at once.
    pub concurrency: usize,
    /// Lease (visibility timeout) of a reserved job; extended while it runs.
    pub lease: Duration,
    /// On shutdown, how long running jobs may take to finish.
    pub grace: Duration,
    /// Longest idle wait between two reserve attempts.
    pub poll_interval: Duration,
    /// How often to look for new plugin versions.
    pub refresh_interval: Duration,
    /// This worker's name, recorded in job histories.
    pub name: String,
    /// Keep the records of finished jobs (succeeded, dead, expired) this
    /// long; `None` keeps them until deleted.
    pub result_ttl: Option<Duration>,
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
        }
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
}

/// Shared by the worker loop and its running jobs.
pub(crate) struct WorkerShared {
    pub(crate) stores: Stores,
    pub(crate) registry: Arc<dyn TaskRegistry>,
    pub(crate) config: WorkerConfig,
    pub(crate) stats: Arc<WorkerStats>,
    /// Set once the grace period is over: running jobs get cancelled and
    /// released rather than failed.
    pub(crate) shutting_down: AtomicBool,
    /// Cancel tokens of running jobs, by job id.
    pub(crate) running: std::sync::Mutex<std::collections::HashMap<String, CancelToken>>,
}

/// A worker over some stores and a task registry.
pub struct Worker {
    shared: Arc<WorkerShared>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Worker {
    /// A worker; call [`Worker::run`] to start it.
    pub fn new(stores: Stores, registry: Arc<dyn TaskRegistry>, config: WorkerConfig) -> Self {
        Self {
            shared: Arc::new(WorkerShared {
                stores,
                registry,
                config,
                stats: Arc::new(WorkerStats::default()),
                shutting_down: AtomicBool::new(false),
                running: std::sync::Mutex::new(Default::default()),
            }),
        }
    }

    /// The worker's counters (live while it runs).
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.shared.stats.clone()
    }

    /// Runs until `shutdown` resolves, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Arc<WorkerStats> {
        let shared = self.shared;
        let config = &shared.config;
        let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let mut jobs = JoinSet::new();
        let mut last_refresh: Option<Instant> = None;
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
            let free = slots.available_permits();
            if free == 0 {
                // Back-pressure: reserve nothing until a slot frees up.
                tokio::select! {
                    _ = jobs.join_next() => continue,
                    () = &mut shutdown => break,
                }
            }
            let reserved = tokio::select! {
                r = shared.stores.broker.reserve(&config.queues, free, config.lease) => r,
                () = &mut shutdown => break,
            };
            let deliveries = match reserved {
                Ok(d) => {
                    store_backoff = Duration::from_millis(100);
                    d
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?store_backoff, "cannot reserve jobs; retrying");
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
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    // Cannot happen (we reserved at most `free`), but never
                    // run past the limit: give the job back.
                    let _ = shared
                        .stores
                        .broker
                        .nack(
                            &delivery.envelope.id,
                            delivery.lease,
                            crate::store::Nack::Release,
                        )
                        .await;
                    continue;
                };
                let shared = shared.clone();
                jobs.spawn(async move {
                    job::process(&shared, delivery).await;
                    drop(permit);
                });
            }
        }

        tracing::info!(running = jobs.len(), grace = ?config.grace, "shutting down: no new jobs");
        let deadline = tokio::time::sleep(config.grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = jobs.join_next() => if next.is_none() { break },
                () = &mut deadline => {
                    shared.shutting_down.store(true, Ordering::Release);
                    let tokens: Vec<CancelToken> = shared
                        .running
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .values()
                        .cloned()
                        .collect();
                    tracing::warn!(jobs = tokens.len(), "grace period over: cancelling and releasing running jobs");
                    for token in tokens {
                        token.cancel();
                    }
                    while jobs.join_next().await.is_some() {}
                    break;
                }
            }
        }
        tracing::info!("worker stopped");
        shared.stats.clone()
    }
}
