//! Enqueueing jobs and waiting for them: what the CLI, plugins (through
//! `host.enqueue`) and applications use.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::envelope::{DEFAULT_MAX_RETRIES, DEFAULT_QUEUE};
use crate::record::{TaskRecord, TaskState};
use crate::store::{StoreError, Stores, TaskRoute};
use crate::time::{Millis, ms, now_ms};
use crate::{Envelope, JobOptions};

/// Why a job could not be enqueued or waited for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No pushed plugin declares the task.
    #[error("unknown task `{task}`: no pushed plugin declares it{}", known_list(.known))]
    UnknownTask {
        /// The task asked for.
        task: String,
        /// Tasks that do exist.
        known: Vec<String>,
    },
    /// The arguments are not JSON.
    #[error("invalid JSON arguments: {0}")]
    InvalidArgs(String),
    /// An option is out of range.
    #[error("{0}")]
    InvalidOption(String),
    /// No such job.
    #[error("no job with id {0}")]
    NoSuchJob(String),
    /// The wait timed out.
    #[error("timed out after {waited:?}; the job is still {state}")]
    Timeout {
        /// How long we waited.
        waited: Duration,
        /// The job's state then.
        state: TaskState,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store failed partway through a batch: the first `enqueued`
    /// jobs (whole store calls of [`ENQUEUE_BATCH`]) are queued, the rest
    /// are not.
    #[error(
        "the store failed after {enqueued} of {total} jobs were enqueued (the rest were not): {source}"
    )]
    PartlyEnqueued {
        /// Jobs enqueued, from the start of the batch.
        enqueued: usize,
        /// Jobs in the batch.
        total: usize,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// One request of a batch was invalid (nothing was enqueued).
    #[error("job {} of the batch: {source}", .index + 1)]
    InBatch {
        /// Its 0-based position in the batch.
        index: usize,
        /// What was wrong with it.
        #[source]
        source: Box<ClientError>,
    },
}

/// How many jobs [`Client::enqueue_many`] writes per store call.
pub const ENQUEUE_BATCH: usize = 1000;

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        " (no plugins are pushed yet: `xylem plugin push FILE.wasm`)".to_owned()
    } else {
        format!(" (known tasks: {})", known.join(", "))
    }
}

/// What to enqueue.
#[derive(Debug, Clone, Default)]
pub struct EnqueueRequest {
    /// Task name.
    pub task: String,
    /// JSON arguments.
    pub args: String,
    /// Queue (default: the task's declared queue, else `default`).
    pub queue: Option<String>,
    /// Priority 0–9 (default: the task's, else 0).
    pub priority: Option<u8>,
    /// Run no sooner than this.
    pub not_before: Option<Millis>,
    /// Expire if not started by this time.
    pub expires_at: Option<Millis>,
    /// Retries (default: the task's, else 3).
    pub max_retries: Option<u32>,
    /// Limit and backoff overrides.
    pub options: JobOptions,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Parent job id, for a child task.
    pub parent: Option<String>,
}

impl EnqueueRequest {
    /// A request for `task` with `args`.
    pub fn new(task: impl Into<String>, args: impl Into<String>) -> Self {
        Self {
            task: task.into(),
            args: args.into(),
            ..Self::default()
        }
    }

    /// Delay the job by `delay` from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.not_before = Some(now_ms() + ms(delay));
        self
    }
}

/// How long a task's route (its declared defaults) is reused between
/// enqueues before it is read again. A task that is not in the cached
/// routes is always looked up afresh, so a just-pushed plugin is seen at once.
const ROUTE_CACHE_TTL: Duration = Duration::from_secs(2);

/// Routes as last read, and when.
type RouteCache = Arc<Mutex<Option<(Instant, Vec<TaskRoute>)>>>;

/// Enqueues jobs and reads their records.
#[derive(Debug, Clone)]
pub struct Client {
    stores: Stores,
    routes: RouteCache,
}

impl Client {
    /// A client over `stores`.
    pub fn new(stores: Stores) -> Self {
        Self {
            stores,
            routes: Arc::new(Mutex::new(None)),
        }
    }

    /// The route of `task` (from the cache while fresh), and every known
    /// task name if there is none.
    async fn route(&self, task: &str) -> Result<TaskRoute, ClientError> {
        {
            let cached = self.routes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, routes)) = cached.as_ref()
                && at.elapsed() < ROUTE_CACHE_TTL
                && let Some(route) = routes.iter().find(|r| r.task == task)
            {
                return Ok(route.clone());
            }
        }
        let routes = self.stores.plugins.routes().await?;
        let found = routes.iter().find(|r| r.task == task).cloned();
        let known = routes.iter().map(|r| r.task.clone()).collect();
        *self.routes.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), routes));
        found.ok_or_else(|| ClientError::UnknownTask {
            task: task.to_owned(),
            known,
        })
    }

    /// The stores.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Validates a request and builds its envelope (the task's declared
    /// defaults filled in), without enqueueing it.
    pub async fn prepare(&self, req: EnqueueRequest) -> Result<Envelope, ClientError> {
        serde_json::from_str::<serde::de::IgnoredAny>(&req.args)
            .map_err(|e| ClientError::InvalidArgs(e.to_string()))?;
        if let Some(p) = req.priority
            && p > 9
        {
            return Err(ClientError::InvalidOption(format!(
                "priority must be 0-9, not {p}"
            )));
        }
        let route = self.route(&req.task).await?;
        let defaults = &route.spec.options;
        let mut envelope = Envelope::new(req.task, req.args);
        envelope.queue = req
            .queue
            .or_else(|| defaults.queue.clone())
            .unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
        envelope.priority = req.priority.or(defaults.priority).unwrap_or(0).min(9);
        envelope.max_retries = req
            .max_retries
            .or(defaults.max_retries)
            .unwrap_or(DEFAULT_MAX_RETRIES);
        envelope.not_before = req.not_before;
        envelope.expires_at = req.expires_at;
        envelope.options = req.options;
        envelope.headers = req.headers;
        envelope.parent = req.parent;
        Ok(envelope)
    }

    /// Validates and enqueues a job: its record and its queue entry are
    /// written in one atomic step ([`Broker::enqueue`](crate::Broker::enqueue)),
    /// so a job never has one without the other.
    pub async fn enqueue(&self, req: EnqueueRequest) -> Result<Envelope, ClientError> {
        let envelope = self.prepare(req).await?;
        self.stores
            .broker
            .enqueue(std::slice::from_ref(&envelope))
            .await?;
        tracing::debug!(id = %envelope.id, task = %envelope.task, queue = %envelope.queue, "enqueued");
        Ok(envelope)
    }

    /// Validates every request first, then enqueues them all in batches of
    /// [`ENQUEUE_BATCH`] jobs, each batch one atomic store call. If any
    /// request is invalid nothing is enqueued, and the error names it
    /// ([`ClientError::InBatch`]).
    pub async fn enqueue_many(
        &self,
        requests: Vec<EnqueueRequest>,
    ) -> Result<Vec<Envelope>, ClientError> {
        let mut envelopes = Vec::with_capacity(requests.len());
        for (index, req) in requests.into_iter().enumerate() {
            let envelope = self.prepare(req).await.map_err(|e| ClientError::InBatch {
                index,
                source: Box::new(e),
            })?;
            envelopes.push(envelope);
        }
        let mut enqueued = 0;
        for chunk in envelopes.chunks(ENQUEUE_BATCH) {
            match self.stores.broker.enqueue(chunk).await {
                Ok(()) => enqueued += chunk.len(),
                Err(source) if enqueued == 0 => return Err(source.into()),
                Err(source) => {
                    return Err(ClientError::PartlyEnqueued {
                        enqueued,
                        total: envelopes.len(),
                        source,
                    });
                }
            }
        }
        Ok(envelopes)
    }

    /// A job's record.
    pub async fn get(&self, id: &str) -> Result<TaskRecord, ClientError> {
        self.stores
            .results
            .get(id)
            .await?
            .ok_or_else(|| ClientError::NoSuchJob(id.to_owned()))
    }

    /// Waits until the job reaches a terminal state (succeeded, dead,
    /// cancelled, expired) or `timeout` passes.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<TaskRecord, ClientError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let record = self.get(id).await?;
            if record.state.is_terminal() {
                return Ok(record);
            }
            if started.elapsed() >= timeout {
                return Err(ClientError::Timeout {
                    waited: started.elapsed(),
                    state: record.state,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}
