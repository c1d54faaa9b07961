//! Enqueueing jobs and waiting for them: what the CLI, plugins (through
//! `host.enqueue`) and applications use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::args_schema::ArgsSchema;
use crate::callback::Callback;
use crate::envelope::{DEFAULT_MAX_RETRIES, DEFAULT_QUEUE};
use crate::record::{TaskRecord, TaskState};
use crate::store::{StoreError, Stores, TaskRoute};
use crate::time::{Millis, ms, now_ms};
use crate::unique::{Unique, UniqueOutcome};
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
    /// The arguments do not match the schema the task declares.
    #[error("arguments of `{task}` do not match its schema: {reason}")]
    SchemaMismatch {
        /// The task.
        task: String,
        /// What is wrong, and where.
        reason: String,
    },
    /// An option is out of range.
    #[error("{0}")]
    InvalidOption(String),
    /// No such job.
    #[error("no job with id {0}")]
    NoSuchJob(String),
    /// The job is unique (its own option or its task's) and an equal job
    /// was enqueued within the TTL: nothing was enqueued. Only
    /// [`Client::enqueue`] says this; [`Client::submit`] returns the id.
    #[error("an equal unique job was enqueued already ({0}); nothing was enqueued")]
    Duplicate(String),
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

/// Longest queue or task name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Smallest memory cap a job may ask for: one WebAssembly page. No
/// component can run in less.
pub const MIN_MEMORY_BYTES: u64 = 64 * 1024;

/// The name rule, shared by queues and tasks: 1 to [`MAX_NAME_LEN`] bytes of
/// ASCII letters, digits, `-`, `_`, `.` and `:`.
fn check_name(kind: &str, name: &str) -> Result<(), ClientError> {
    let shown: String = name.chars().take(40).collect();
    let shown = if shown.len() < name.len() {
        format!("{shown}…")
    } else {
        shown
    };
    let why = if name.is_empty() {
        "it is empty".to_owned()
    } else if name.len() > MAX_NAME_LEN {
        format!("it is {} bytes long, over {MAX_NAME_LEN}", name.len())
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c)))
    {
        format!("{c:?} is not allowed")
    } else {
        return Ok(());
    };
    Err(ClientError::InvalidOption(format!(
        "invalid {kind} name `{shown}`: {why} (use 1-{MAX_NAME_LEN} letters, digits, '-', '_', '.' or ':')"
    )))
}

/// Checks a queue name: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters,
/// digits, `-`, `_`, `.` and `:`. [`Client::prepare`] applies it to every
/// job (a plugin's child jobs included); the CLI to `--queue`.
pub fn validate_queue_name(name: &str) -> Result<(), ClientError> {
    check_name("queue", name)
}

/// Checks a task name, by the same rule as [`validate_queue_name`].
pub fn validate_task_name(name: &str) -> Result<(), ClientError> {
    check_name("task", name)
}

/// Checks a job's limit overrides: a zero time limit, a zero fuel budget
/// or a memory cap under [`MIN_MEMORY_BYTES`] would make every run fail,
/// so they are refused at enqueue.
pub fn validate_options(options: &JobOptions) -> Result<(), ClientError> {
    let refuse = |msg: String| Err(ClientError::InvalidOption(msg));
    if options.hard_time_limit_ms == Some(0) {
        return refuse(
            "the hard time limit (timeout) cannot be 0: every run would be stopped at once".into(),
        );
    }
    if options.soft_time_limit_ms == Some(0) {
        return refuse(
            "the soft time limit (soft timeout) cannot be 0: every run would be told to stop at once"
                .into(),
        );
    }
    if options.fuel == Some(0) {
        return refuse("the fuel budget cannot be 0: every run would run out at once".into());
    }
    if let Some(bytes) = options.max_memory_bytes
        && bytes < MIN_MEMORY_BYTES
    {
        return refuse(format!(
            "a memory cap of {bytes} bytes is below one WebAssembly page (64 KiB): no task can run in it"
        ));
    }
    if let Some(ms) = options.visibility_timeout_ms
        && !(MIN_VISIBILITY_TIMEOUT_MS..=MAX_VISIBILITY_TIMEOUT_MS).contains(&ms)
    {
        return refuse(format!(
            "a visibility timeout of {ms} ms is out of range: 1 s to 24 h (a shorter lease cannot be renewed in time)"
        ));
    }
    for callback in [&options.link, &options.link_error].into_iter().flatten() {
        check_name("callback task", &callback.task)?;
        if let Some(queue) = &callback.queue {
            validate_queue_name(queue)?;
        }
        if let Some(p) = callback.priority
            && p > 9
        {
            return refuse(format!("callback priority must be 0-9, not {p}"));
        }
        callback.check_args().map_err(ClientError::InvalidOption)?;
    }
    Ok(())
}

/// Longest unique key, in bytes (it names a lock in the store).
pub const MAX_UNIQUE_KEY_LEN: usize = 256;

/// Shortest visibility timeout (lease) a job may ask for: the worker's own
/// lease has the same floor.
pub const MIN_VISIBILITY_TIMEOUT_MS: u64 = 1000;
/// Longest visibility timeout: a day.
pub const MAX_VISIBILITY_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

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
    /// Not enqueued while an equal job was enqueued within the TTL
    /// (default: the task's `unique_for_ms`, keyed by task, queue, args).
    pub unique: Option<Unique>,
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

/// Compiled argument schemas by (plugin digest, task): a plugin version
/// never changes, so an entry never goes stale.
type SchemaCache = Arc<Mutex<HashMap<(String, String), Arc<ArgsSchema>>>>;

/// Most compiled schemas a client keeps; past it the cache starts over.
const SCHEMA_CACHE_MAX: usize = 1024;

/// Enqueues jobs and reads their records.
#[derive(Debug, Clone)]
pub struct Client {
    stores: Stores,
    routes: RouteCache,
    schemas: SchemaCache,
}

impl Client {
    /// A client over `stores`.
    pub fn new(stores: Stores) -> Self {
        Self {
            stores,
            routes: Arc::new(Mutex::new(None)),
            schemas: Arc::default(),
        }
    }

    /// Checks `args` against the schema `route`'s task declares, if any.
    fn check_schema(&self, route: &TaskRoute, args: &str) -> Result<(), ClientError> {
        let Some(text) = &route.spec.args_schema else {
            return Ok(());
        };
        let key = (route.digest.clone(), route.task.clone());
        let cached = self
            .schemas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let schema = match cached {
            Some(schema) => schema,
            None => {
                // Checked when the plugin was loaded; a store holding a bad
                // one was written by something else.
                let schema = Arc::new(ArgsSchema::compile(text).map_err(|e| {
                    ClientError::InvalidOption(format!(
                        "task `{}` cannot be enqueued: {e}",
                        route.task
                    ))
                })?);
                let mut schemas = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
                if schemas.len() >= SCHEMA_CACHE_MAX {
                    schemas.clear();
                }
                schemas.insert(key, schema.clone());
                schema
            }
        };
        let value: serde_json::Value =
            serde_json::from_str(args).map_err(|e| ClientError::InvalidArgs(e.to_string()))?;
        schema
            .check(&value)
            .map_err(|reason| ClientError::SchemaMismatch {
                task: route.task.clone(),
                reason,
            })
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
        Ok(self.prepare_unique(req).await?.0)
    }

    /// [`prepare`](Self::prepare), and the uniqueness the job is enqueued
    /// under (its own, else its task's default), if any.
    pub(crate) async fn prepare_unique(
        &self,
        req: EnqueueRequest,
    ) -> Result<(Envelope, Option<Unique>), ClientError> {
        validate_task_name(&req.task)?;
        if let Some(queue) = &req.queue {
            validate_queue_name(queue)?;
        }
        validate_options(&req.options)?;
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
        self.check_schema(&route, &req.args)?;
        let defaults = &route.spec.options;
        let mut envelope = Envelope::new(req.task, req.args);
        envelope.queue = req
            .queue
            .or_else(|| defaults.queue.clone())
            .unwrap_or_else(|| DEFAULT_QUEUE.to_owned());
        // A plugin's declared queue goes by the same rule.
        validate_queue_name(&envelope.queue)?;
        envelope.priority = req.priority.or(defaults.priority).unwrap_or(0).min(9);
        envelope.max_retries = req
            .max_retries
            .or(defaults.max_retries)
            .unwrap_or(DEFAULT_MAX_RETRIES);
        envelope.not_before = req.not_before;
        envelope.expires_at = req.expires_at.or_else(|| {
            defaults.expires_ms.map(|ms| {
                envelope
                    .enqueued_at
                    .saturating_add(Millis::try_from(ms).unwrap_or(Millis::MAX))
            })
        });
        envelope.options = req.options;
        envelope.headers = req.headers;
        if let Some(parent) = &req.parent {
            crate::envelope::set_header(
                &mut envelope.headers,
                crate::envelope::PARENT_HEADER,
                parent,
            );
        }
        // The job's trace context is the span it is made in (see
        // `telemetry::trace`).
        crate::telemetry::trace::inject_current(&mut envelope.headers);
        envelope.parent = req.parent;
        for callback in [&mut envelope.options.link, &mut envelope.options.link_error]
            .into_iter()
            .flatten()
        {
            self.prepare_callback(callback).await?;
        }
        let unique = req.unique.or_else(|| {
            defaults.unique_for_ms.map(|ms| Unique {
                key: None,
                ttl: Duration::from_millis(ms),
            })
        });
        if let Some(unique) = &unique {
            if unique.ttl.is_zero() {
                return Err(ClientError::InvalidOption(
                    "a unique job needs a TTL above zero".to_owned(),
                ));
            }
            if let Some(key) = &unique.key
                && (key.is_empty() || key.len() > MAX_UNIQUE_KEY_LEN)
            {
                return Err(ClientError::InvalidOption(format!(
                    "a unique key must be 1 to {MAX_UNIQUE_KEY_LEN} bytes, not {}",
                    key.len()
                )));
            }
        }
        Ok((envelope, unique))
    }

    /// A callback's task must exist now (a typo is better refused at
    /// enqueue than found when the job ends); its id is chosen here.
    async fn prepare_callback(&self, callback: &mut Callback) -> Result<(), ClientError> {
        self.route(&callback.task).await?;
        if callback.id.is_empty() {
            callback.id = uuid::Uuid::now_v7().to_string();
        }
        Ok(())
    }

    /// Validates and enqueues a job: its record and its queue entry are
    /// written in one atomic step ([`Broker::enqueue`](crate::Broker::enqueue)),
    /// so a job never has one without the other. A unique job (its own
    /// option or its task's) with an equal one within the TTL is refused
    /// with [`ClientError::Duplicate`]; [`submit`](Self::submit) returns
    /// that as a value instead.
    pub async fn enqueue(&self, req: EnqueueRequest) -> Result<Envelope, ClientError> {
        match self.submit(req).await? {
            UniqueOutcome::Enqueued(envelope) => Ok(*envelope),
            UniqueOutcome::Duplicate(first) => Err(ClientError::Duplicate(first)),
        }
    }

    /// Validates and enqueues a job, unless it is unique (its own option or
    /// its task's) and an equal job was enqueued within the TTL (see
    /// [`crate::unique`]): then nothing is enqueued and the first job's id
    /// comes back as [`UniqueOutcome::Duplicate`].
    pub async fn submit(&self, req: EnqueueRequest) -> Result<UniqueOutcome, ClientError> {
        let span = crate::telemetry::trace::enqueue_span(&req.task, &req.headers);
        async move {
            let (envelope, unique) = self.prepare_unique(req).await?;
            crate::telemetry::trace::record_enqueued(&envelope);
            let outcome = match unique {
                Some(unique) => self.enqueue_once(envelope, &unique).await?,
                None => {
                    self.stores
                        .broker
                        .enqueue(std::slice::from_ref(&envelope))
                        .await?;
                    tracing::debug!(id = %envelope.id, task = %envelope.task, queue = %envelope.queue, "enqueued");
                    UniqueOutcome::Enqueued(Box::new(envelope))
                }
            };
            if let UniqueOutcome::Enqueued(envelope) = &outcome {
                crate::telemetry::metrics::enqueued(&envelope.task, &envelope.queue, 1);
            }
            Ok(outcome)
        }
        .instrument(span)
        .await
    }

    /// Enqueues a prepared job under the id it was given, once: `true` if
    /// enqueued now, `false` if the id is in use already (an earlier
    /// delivery, worker or beat enqueued it). The rule callbacks, canvases
    /// and schedules fire exactly once by.
    pub async fn enqueue_by_id(&self, envelope: &Envelope) -> Result<bool, StoreError> {
        match self
            .stores
            .broker
            .enqueue(std::slice::from_ref(envelope))
            .await
        {
            Ok(()) => {
                crate::telemetry::metrics::enqueued(&envelope.task, &envelope.queue, 1);
                Ok(true)
            }
            Err(StoreError::Duplicate(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`enqueue_by_id`](Self::enqueue_by_id) for each of `envelopes` (ids
    /// distinct), in one store call while none is in use; else one at a
    /// time, skipping those that are. Returns how many were enqueued now.
    pub async fn enqueue_all_by_id(&self, envelopes: &[Envelope]) -> Result<usize, StoreError> {
        if envelopes.is_empty() {
            return Ok(0);
        }
        match self.stores.broker.enqueue(envelopes).await {
            Ok(()) => {
                for envelope in envelopes {
                    crate::telemetry::metrics::enqueued(&envelope.task, &envelope.queue, 1);
                }
                Ok(envelopes.len())
            }
            // Some were enqueued before (a step taken again): the batch is
            // refused whole, so each goes on its own.
            Err(StoreError::Duplicate(_)) => {
                let mut enqueued = 0;
                for envelope in envelopes {
                    enqueued += usize::from(self.enqueue_by_id(envelope).await?);
                }
                Ok(enqueued)
            }
            Err(e) => Err(e),
        }
    }

    /// [`submit`](Self::submit) with `unique` as the request's uniqueness.
    pub async fn enqueue_unique(
        &self,
        mut req: EnqueueRequest,
        unique: &Unique,
    ) -> Result<UniqueOutcome, ClientError> {
        req.unique = Some(unique.clone());
        self.submit(req).await
    }

    /// Enqueues a prepared unique job if it takes its key's lock.
    pub(crate) async fn enqueue_once(
        &self,
        envelope: Envelope,
        unique: &Unique,
    ) -> Result<UniqueOutcome, ClientError> {
        let lock = crate::unique::lock_name(
            unique.key.as_deref(),
            &envelope.task,
            &envelope.queue,
            &envelope.args,
        );
        let locks = &self.stores.locks;
        // Twice at most: the first holder's lock may lapse between our
        // failed take and the look at its owner.
        for _ in 0..2 {
            if locks.acquire(&lock, &envelope.id, unique.ttl).await? {
                if let Err(e) = self
                    .stores
                    .broker
                    .enqueue(std::slice::from_ref(&envelope))
                    .await
                {
                    // Not enqueued: let the next try be the first.
                    let _ = locks.release(&lock, &envelope.id).await;
                    return Err(e.into());
                }
                return Ok(UniqueOutcome::Enqueued(Box::new(envelope)));
            }
            if let Some(first) = locks.lock_owner(&lock).await? {
                return Ok(UniqueOutcome::Duplicate(first));
            }
        }
        Err(ClientError::InvalidOption(format!(
            "the unique key `{lock}` is contended: try again"
        )))
    }

    /// Validates every request first, then enqueues them all in batches of
    /// [`ENQUEUE_BATCH`] jobs, each batch one atomic store call. If any
    /// request is invalid nothing is enqueued, and the error names it
    /// ([`ClientError::InBatch`]).
    pub async fn enqueue_many(
        &self,
        requests: Vec<EnqueueRequest>,
    ) -> Result<Vec<Envelope>, ClientError> {
        let Some(first) = requests.first() else {
            return Ok(Vec::new());
        };
        let span = crate::telemetry::trace::enqueue_span(&first.task, &first.headers);
        span.record("messaging.batch.message_count", requests.len());
        self.enqueue_many_in_span(requests).instrument(span).await
    }

    async fn enqueue_many_in_span(
        &self,
        requests: Vec<EnqueueRequest>,
    ) -> Result<Vec<Envelope>, ClientError> {
        let mut envelopes = Vec::with_capacity(requests.len());
        for (index, req) in requests.into_iter().enumerate() {
            let in_batch = |e| ClientError::InBatch {
                index,
                source: Box::new(e),
            };
            let (envelope, unique) = self.prepare_unique(req).await.map_err(in_batch)?;
            if unique.is_some() {
                return Err(in_batch(ClientError::InvalidOption(format!(
                    "`{}` is a unique job: enqueue it on its own (a batch is written whole, a unique job only if no equal one exists)",
                    envelope.task
                ))));
            }
            envelopes.push(envelope);
        }
        let mut enqueued = 0;
        for chunk in envelopes.chunks(ENQUEUE_BATCH) {
            match self.stores.broker.enqueue(chunk).await {
                Ok(()) => {
                    enqueued += chunk.len();
                    for envelope in chunk {
                        crate::telemetry::metrics::enqueued(&envelope.task, &envelope.queue, 1);
                    }
                }
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

    /// Enqueues a canvas (`crate::canvas`): writes its definition, creates
    /// its groups and enqueues its first jobs; returns their ids. Every
    /// task it names must exist. The workers take it from there.
    pub async fn enqueue_canvas(
        &self,
        canvas: &crate::canvas::Canvas,
    ) -> Result<Vec<String>, ClientError> {
        // Every job of it, whichever worker starts it, in this trace.
        let span = crate::telemetry::trace::enqueue_span("canvas", &canvas.headers);
        let mut canvas = canvas.clone();
        crate::telemetry::trace::inject(&span, &mut canvas.headers);
        crate::canvas::start_canvas(self, &canvas)
            .instrument(span)
            .await
    }

    /// A canvas's definition.
    pub async fn canvas(&self, id: &str) -> Result<crate::canvas::Canvas, ClientError> {
        let text = self
            .stores
            .canvases
            .get_canvas(id)
            .await?
            .ok_or_else(|| ClientError::NoSuchJob(format!("{id} (no such canvas)")))?;
        serde_json::from_str(&text)
            .map_err(|e| ClientError::Store(StoreError::Corrupt(format!("canvas {id}: {e}"))))
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
        self.wait_watching(id, timeout, |_| {}).await
    }

    /// [`wait`](Self::wait), showing `watch` each look at the job before
    /// it finishes (its state and progress, for a live display).
    pub async fn wait_watching(
        &self,
        id: &str,
        timeout: Duration,
        mut watch: impl FnMut(&TaskRecord),
    ) -> Result<TaskRecord, ClientError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let record = self.get(id).await?;
            watch(&record);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_1_to_128_bytes_of_a_small_alphabet() {
        for good in [
            "default",
            "emails",
            "a",
            "hello.greet",
            "t-1_x:y.z",
            &"q".repeat(128),
        ] {
            assert!(validate_queue_name(good).is_ok(), "{good}");
            assert!(validate_task_name(good).is_ok(), "{good}");
        }
        let cases = [
            ("", "empty"),
            ("bad queue!", "' ' is not allowed"),
            ("tab\there", "'\\t' is not allowed"),
            ("é", "'é' is not allowed"),
            ("a/b", "'/' is not allowed"),
        ];
        for (bad, why) in cases {
            let err = validate_queue_name(bad).unwrap_err().to_string();
            assert!(
                err.contains("invalid queue name") && err.contains(why),
                "{bad}: {err}"
            );
            let err = validate_task_name(bad).unwrap_err().to_string();
            assert!(err.contains("invalid task name"), "{bad}: {err}");
        }
        let long = "q".repeat(129);
        let err = validate_queue_name(&long).unwrap_err().to_string();
        assert!(err.contains("129 bytes long, over 128"), "{err}");
        assert!(err.len() < 200, "the name is clipped: {err}");
    }

    #[test]
    fn options_that_no_run_could_meet_are_refused() {
        assert!(validate_options(&JobOptions::default()).is_ok());
        let ok = JobOptions {
            hard_time_limit_ms: Some(1),
            soft_time_limit_ms: Some(1),
            fuel: Some(1),
            max_memory_bytes: Some(MIN_MEMORY_BYTES),
            ..JobOptions::default()
        };
        assert!(validate_options(&ok).is_ok());
        let cases = [
            (
                JobOptions {
                    hard_time_limit_ms: Some(0),
                    ..ok.clone()
                },
                "hard time limit (timeout) cannot be 0",
            ),
            (
                JobOptions {
                    soft_time_limit_ms: Some(0),
                    ..ok.clone()
                },
                "soft time limit",
            ),
            (
                JobOptions {
                    fuel: Some(0),
                    ..ok.clone()
                },
                "fuel budget cannot be 0",
            ),
            (
                JobOptions {
                    max_memory_bytes: Some(0),
                    ..ok.clone()
                },
                "memory cap of 0 bytes",
            ),
            (
                JobOptions {
                    max_memory_bytes: Some(65535),
                    ..ok.clone()
                },
                "memory cap of 65535 bytes",
            ),
        ];
        for (options, needle) in cases {
            let err = validate_options(&options).unwrap_err().to_string();
            assert!(err.contains(needle), "{options:?}: {err}");
        }
    }

    #[tokio::test]
    async fn prepare_refuses_bad_names_and_options_before_anything_else() {
        let client = Client::new(Stores::from_adapter(Arc::new(
            crate::memory::MemoryStore::new(),
        )));
        let refused = |req: EnqueueRequest| {
            let client = client.clone();
            async move {
                match client.prepare(req).await {
                    Err(ClientError::InvalidOption(msg)) => msg,
                    other => panic!("expected InvalidOption, got {other:?}"),
                }
            }
        };
        let msg = refused(EnqueueRequest::new("no such task", "{}")).await;
        assert!(msg.contains("invalid task name"), "{msg}");
        let mut req = EnqueueRequest::new("hello.greet", "{}");
        req.queue = Some("x".repeat(1000));
        assert!(refused(req).await.contains("invalid queue name"));
        let mut req = EnqueueRequest::new("hello.greet", "{}");
        req.options.fuel = Some(0);
        assert!(refused(req).await.contains("fuel"));
        // A valid request gets as far as the task lookup.
        let err = client
            .prepare(EnqueueRequest::new("hello.greet", "{}"))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::UnknownTask { .. }), "{err:?}");
    }
}
