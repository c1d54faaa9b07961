//! The storage contracts: [`Broker`] (the hot path: queues and leases,
//! written with the records) and its capabilities ([`DeadLetters`],
//! [`Statistics`]),
//! [`ResultBackend`] (job records and history) and [`PluginStore`]
//! (content-addressed plugin blobs and the task → version map). Every
//! adapter implements them with the same semantics; `tests/` holds the
//! contract suite each adapter runs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::record::{TaskFilter, TaskRecord, Transition};
use crate::time::Millis;
use crate::{Envelope, TaskSpec};

/// A store error's underlying cause (a driver error, an I/O error).
pub type ErrorSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
///
/// Every error says whether trying again can help
/// ([`StoreError::is_transient`]): the worker retries transient errors
/// (with backoff, while it can hold the job's lease) and gives up at once
/// on the others.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store cannot be reached or opened (transient).
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed, in words.
        message: String,
        /// The driver's error.
        #[source]
        source: Option<ErrorSource>,
    },
    /// The store answered with an error; `transient` when the same call
    /// may succeed later (a lock timeout, `SQLITE_BUSY`, a serialization
    /// failure).
    #[error("store error: {message}")]
    Backend {
        /// What failed, in words.
        message: String,
        /// Whether trying again may succeed.
        transient: bool,
        /// The driver's error.
        #[source]
        source: Option<ErrorSource>,
    },
    /// Stored data did not decode.
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    /// No such job / plugin.
    #[error("not found: {0}")]
    NotFound(String),
    /// An enqueue named a job id that is already in use (see
    /// [`Broker::enqueue`]).
    #[error("job id {0} is already in use: an enqueue names new jobs only")]
    Duplicate(String),
    /// A URL or option was invalid.
    #[error("{0}")]
    Invalid(String),
}

impl StoreError {
    /// The store cannot be reached, without a driver error to keep.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// The store cannot be reached, because of `source`.
    pub fn unavailable_from(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The store refused an operation for good (retrying cannot help).
    pub fn backend(message: impl Into<String>) -> Self {
        Self::Backend {
            message: message.into(),
            transient: false,
            source: None,
        }
    }

    /// The store refused an operation because of `source`; `transient`
    /// says whether the same call may succeed later.
    pub fn backend_from(
        message: impl Into<String>,
        transient: bool,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Backend {
            message: message.into(),
            transient,
            source: Some(Box::new(source)),
        }
    }

    /// A copy for each of many callers one batched call answered (errors
    /// are not `Clone`): the message, and whether it is transient.
    pub fn copy_for_each(&self) -> Self {
        if self.is_transient() {
            Self::unavailable(self.to_string())
        } else {
            Self::backend(self.to_string())
        }
    }

    /// Whether the same call may succeed if tried again later: an outage,
    /// a busy or locked database. Corrupt data, a missing job or an
    /// invalid option never get better by waiting.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Backend { transient, .. } => *transient,
            Self::Corrupt(_) | Self::NotFound(_) | Self::Invalid(_) | Self::Duplicate(_) => false,
        }
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

/// A job handed to a worker under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The job.
    pub envelope: Envelope,
    /// Identifies this lease: completing or extending must present it, so a
    /// worker whose lease ran out cannot touch a newer delivery.
    pub lease: u64,
    /// How many times the job has been handed out (redeliveries included).
    pub deliveries: u32,
}

/// What to do with a job whose run did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nack {
    /// Queue it again with this updated envelope (its next attempt) after
    /// a delay.
    Retry {
        /// The envelope to queue (attempt already incremented).
        envelope: Box<Envelope>,
        /// Delay before it may run.
        delay: Duration,
    },
    /// Put it back as it was, ready now (shutdown, lost lease).
    Release,
    /// Move it to the dead-letter queue.
    DeadLetter {
        /// Why.
        reason: String,
    },
}

/// Jobs per queue, by where they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Queue name.
    pub queue: String,
    /// Ready to run now.
    pub ready: u64,
    /// Waiting for their not-before time.
    pub delayed: u64,
    /// Leased to a worker.
    pub running: u64,
    /// In the dead-letter queue.
    pub dead: u64,
}

/// A job in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadJob {
    /// The job as last queued.
    pub envelope: Envelope,
    /// Why it was dead-lettered.
    pub reason: String,
    /// When.
    pub dead_at: Millis,
}

/// Which dead jobs to act on.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    /// These ids only (empty: all).
    pub ids: Vec<String>,
    /// This queue only.
    pub queue: Option<String>,
}

/// How a finished delivery leaves the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Done for good (succeeded, expired): remove it from the queue.
    Ack,
    /// Requeue, release or dead-letter it.
    Nack(Nack),
}

/// The end of one delivery: the record's transition and what becomes of
/// the job in the queue, applied by [`Broker::complete`] in one atomic
/// step, so a job is never acked without its result nor left with a result
/// and a live queue entry that runs it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Job id.
    pub id: String,
    /// The lease the worker holds.
    pub lease: u64,
    /// The record's new state (with the run's outcome).
    pub transition: Transition,
    /// What happens to the queue entry.
    pub settle: Settle,
    /// For a job that is done for good: drop its record this long after.
    pub result_ttl: Option<Duration>,
}

/// What [`Broker::complete`] did with one [`Completion`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completed {
    /// Recorded and settled.
    Applied,
    /// The record had already succeeded (another delivery finished it
    /// first): nothing was recorded, and the queue entry was removed.
    AlreadySucceeded,
    /// The lease was no longer held and the outcome was not a success:
    /// nothing was written (the worker that holds the job now decides).
    LeaseLost,
}

/// The one rule for completing a delivery, which every adapter applies
/// (Redis translates it to Lua in its `COMPLETE` script):
///
/// - a record that already **succeeded** is final: it is never written
///   again, and the job's queue entry is removed;
/// - a **success** is recorded and the queue entry removed even when the
///   lease was lost meanwhile: the work is done, and a success is final,
///   so the other delivery will find it and not record anything;
/// - anything else (retry, dead letter, release, expiry) is applied only
///   under the lease the worker holds: otherwise the job belongs to
///   another delivery, and nothing is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletionPlan {
    /// Write the transition to the record.
    pub record: bool,
    /// Apply the settle action to the queue entry (else: remove the entry
    /// if `remove_entry`, or leave it).
    pub settle: bool,
    /// Remove the queue entry whatever its lease.
    pub remove_entry: bool,
    /// What to report.
    pub result: Completed,
}

impl Completion {
    /// Applies [`CompletionPlan`]'s rule to what the adapter found: the
    /// record's current state (`None`: no record) and whether the lease is
    /// still held.
    pub fn plan(&self, record: Option<crate::TaskState>, lease_held: bool) -> CompletionPlan {
        use crate::TaskState;
        if record == Some(TaskState::Succeeded) {
            return CompletionPlan {
                record: false,
                settle: false,
                remove_entry: true,
                result: Completed::AlreadySucceeded,
            };
        }
        let success = self.transition.state == TaskState::Succeeded;
        if lease_held {
            CompletionPlan {
                record: true,
                settle: true,
                remove_entry: false,
                result: Completed::Applied,
            }
        } else if success {
            CompletionPlan {
                record: true,
                settle: false,
                remove_entry: true,
                result: Completed::Applied,
            }
        } else {
            CompletionPlan {
                record: false,
                settle: false,
                remove_entry: false,
                result: Completed::LeaseLost,
            }
        }
    }
}

/// What a claim does with a leased job, given its record (the rule every
/// adapter applies in `claim`; Redis in its `CLAIM` script).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimPlan {
    /// Mark the record `running` and hand the job out.
    Run,
    /// The record is missing (expired, or lost by the store): write a new
    /// one from the envelope, marked `running`, and hand the job out.
    Recreate,
    /// The record already succeeded (a redelivery after a lost ack):
    /// remove the job from the queue, never run it again.
    Drop,
}

impl ClaimPlan {
    /// The rule: see the variants.
    pub fn for_record(state: Option<crate::TaskState>) -> Self {
        match state {
            Some(crate::TaskState::Succeeded) => Self::Drop,
            Some(_) => Self::Run,
            None => Self::Recreate,
        }
    }
}

/// The history detail of the `running` entry a claim writes.
pub fn running_detail(worker: &str, deliveries: u32, attempt: u32) -> String {
    if deliveries > attempt {
        format!("worker {worker} (redelivered after a lost lease)")
    } else {
        format!("worker {worker}")
    }
}

/// The detail of the first history entry of a job: why it waits, if it
/// waits. Every adapter writes the same entry.
pub fn queued_detail(envelope: &Envelope, now: Millis) -> Option<String> {
    envelope
        .not_before
        .filter(|at| *at > now)
        .map(|at| format!("delayed until {}", crate::time::format_ms(at)))
}

/// Refuses a batch that names one job twice (see [`Broker::enqueue`]):
/// [`StoreError::Duplicate`] with the first id named again.
pub fn check_batch_ids(envelopes: &[Envelope]) -> StoreResult<()> {
    let mut seen = std::collections::HashSet::with_capacity(envelopes.len());
    match envelopes.iter().find(|e| !seen.insert(e.id.as_str())) {
        Some(again) => Err(StoreError::Duplicate(again.id.clone())),
        None => Ok(()),
    }
}

/// What an enqueue returns when the store refused an id as in use, yet no
/// id of the batch is in use when it looks again (freed meanwhile by
/// another process): transient, trying again may work.
pub fn conflict_cleared() -> StoreError {
    StoreError::Backend {
        message: "an enqueue met an id in use that is free now".to_owned(),
        transient: true,
        source: None,
    }
}

/// The detail of the history entry a DLQ replay writes.
pub const REPLAY_DETAIL: &str = "replayed from the dead-letter queue";

/// The envelope a dead job is replayed with: a fresh first attempt,
/// runnable at `run_at`, its `link_error` callback under a new id. The one replay reset: every adapter requeues this
/// envelope and writes [`replay_transition`] of it to the record.
pub fn replay_envelope(dead: &Envelope, run_at: Millis) -> Envelope {
    let mut envelope = dead.clone();
    envelope.attempt = 1;
    envelope.not_before = Some(run_at);
    envelope.unresolved = 0;
    envelope.rate_slot = None;
    // Its error callback fired when it died; a new failure is news again.
    if let Some(callback) = &mut envelope.options.link_error {
        callback.id = uuid::Uuid::now_v7().to_string();
    }
    envelope
}

/// What a replay writes to a live record: back to `queued` at the
/// replayed envelope's attempt, with the [`REPLAY_DETAIL`] history entry.
pub fn replay_transition(replayed: &Envelope) -> Transition {
    Transition::to(crate::TaskState::Queued, replayed.attempt).detail(REPLAY_DETAIL)
}

/// The hot path: what producers and workers call for every job — queues
/// with priorities, delays and leases, written together with the job
/// records. Administration lives in capability traits beside it
/// ([`DeadLetters`], [`Statistics`]).
#[async_trait]
pub trait Broker: Send + Sync {
    /// Records and queues jobs in one atomic step: when this returns,
    /// every job has a `queued` record and is in its queue; if it fails,
    /// none is. A record is never left without its queued job (or the
    /// other way round). Durable when this returns.
    ///
    /// An enqueue names new jobs: an id already in use — a job in a queue
    /// (dead ones included), or a record that has not expired, whatever
    /// its state — is refused with [`StoreError::Duplicate`], and so is an
    /// id named twice in one batch ([`check_batch_ids`]); the batch then
    /// enqueues nothing. So an enqueue can never reset a job, and a
    /// succeeded one never runs again. A record past its TTL is gone: its
    /// id may be used again.
    async fn enqueue(&self, envelopes: &[Envelope]) -> StoreResult<()>;

    /// Claims up to `max` jobs for worker `worker`, in one atomic step per
    /// job: leases it and marks its record `running` (see [`ClaimPlan`]:
    /// a job whose record already succeeded is removed, never handed out;
    /// a missing record is recreated). Jobs that may run now, from
    /// `queues` (all queues if empty), highest priority first, then
    /// oldest; a job whose lease expired is handed out again.
    async fn claim(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        worker: &str,
    ) -> StoreResult<Vec<Delivery>>;

    /// Applies finished deliveries, each atomically (record transition,
    /// queue settle, result TTL), all in as few round trips as the store
    /// allows; see [`Completion::plan`] for the rule. One result per
    /// completion, in order.
    async fn complete(&self, completions: &[Completion]) -> StoreResult<Vec<Completed>>;

    /// Extends many leases at once (the worker's one lease timer); one
    /// `held` flag per lease, in order.
    async fn extend_many(&self, leases: &[(String, u64)], by: Duration) -> StoreResult<Vec<bool>>;

    /// Waits until a job may be ready or `timeout` passes. Adapters that
    /// can be told (a notification) return early; the default sleeps.
    async fn wait_for_jobs(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }
}

/// The dead-letter queue's administration (`xylem dlq`).
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Dead jobs, newest first.
    async fn dead_jobs(&self, filter: &DeadFilter, limit: usize) -> StoreResult<Vec<DeadJob>>;

    /// Moves dead jobs back to their queues ([`replay_envelope`]: attempt
    /// reset to 1), runnable after `delay`, and sets their records back to
    /// `queued` (history: [`REPLAY_DETAIL`]; any expiry cleared; a record
    /// that has expired already is written anew); returns the ids moved.
    async fn replay_dead(&self, filter: &DeadFilter, delay: Duration) -> StoreResult<Vec<String>>;

    /// Deletes dead jobs; returns how many.
    async fn purge_dead(&self, filter: &DeadFilter) -> StoreResult<u64>;
}

/// Counts for operators (`xylem queues`).
#[async_trait]
pub trait Statistics: Send + Sync {
    /// Counts per queue.
    async fn queue_stats(&self) -> StoreResult<Vec<QueueStats>>;
}

/// What [`Cancellation::withdraw`] found for one job's queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Withdrawn {
    /// It was waiting (ready, delayed, or leased by a worker whose lease
    /// ran out): its entry is gone, it will never start.
    Removed,
    /// A worker holds it: it is running now.
    Running,
    /// It is in the dead-letter queue.
    Dead,
    /// No queue entry: finished (or never enqueued).
    Absent,
}

/// Stopping jobs (`xylem task cancel`). The rule — what a cancel does in
/// each case — lives once in [`crate::cancel`]; a store only withdraws
/// queue entries and keeps requests for the workers running the rest.
#[async_trait]
pub trait Cancellation: Send + Sync {
    /// Removes each job's queue entry if it is waiting — ready, delayed, or
    /// leased with its lease run out at `now` — atomically per job (a
    /// worker's claim never races it), and says what it found.
    async fn withdraw(&self, ids: &[String], now: Millis) -> StoreResult<Vec<Withdrawn>>;

    /// Asks whichever worker runs these jobs to stop them. Requests are
    /// kept for a day (a request for a job that finished meanwhile is
    /// simply never read).
    async fn request_cancel(&self, ids: &[String]) -> StoreResult<()>;

    /// Which of `ids` (jobs this worker runs) have a cancel request. Called
    /// often (every worker, every [`crate::worker::CANCEL_POLL`]): cheap.
    async fn cancel_requested(&self, ids: &[String]) -> StoreResult<Vec<String>>;
}

/// Start slots for rate-limited tasks ([`crate::rate_limit`]): one atomic
/// step per job, the same on every store.
#[async_trait]
pub trait RateLimits: Send + Sync {
    /// Reserves the next start slot of limiter `key`, whose slots are
    /// `interval` apart: the slot is `max(now, the slot after the last one
    /// reserved)`, and the next one `interval` after it. Returns the
    /// reserved slot (ms since the epoch). The limiter is forgotten `ttl`
    /// after its last slot.
    async fn reserve_slot(
        &self,
        key: &str,
        interval: Duration,
        now: Millis,
        ttl: Duration,
    ) -> StoreResult<Millis>;
}

/// Operating queues (`xylem queues pause|resume|purge`): which queues are
/// paused, and which jobs wait in one. What pausing and purging mean is in
/// [`crate::queue_control`].
#[async_trait]
pub trait QueueControl: Send + Sync {
    /// Pauses (`true`) or resumes a queue; whether that changed anything.
    async fn set_paused(&self, queue: &str, paused: bool) -> StoreResult<bool>;

    /// The paused queues, by name.
    async fn paused_queues(&self) -> StoreResult<Vec<String>>;

    /// Up to `limit` ids of jobs waiting in `queue` — ready ones if `ready`,
    /// delayed ones if `delayed` — oldest first.
    async fn waiting_ids(
        &self,
        queue: &str,
        ready: bool,
        delayed: bool,
        limit: usize,
    ) -> StoreResult<Vec<String>>;
}

/// How long a cancel request is kept.
pub const CANCEL_REQUEST_TTL: Duration = Duration::from_secs(24 * 3600);

/// Job records: states, history, results.
#[async_trait]
pub trait ResultBackend: Send + Sync {
    /// Records a new job (state `queued`).
    async fn create(&self, envelope: &Envelope) -> StoreResult<()>;

    /// Records a transition. Once a job has succeeded its record is final:
    /// any later transition is ignored and returns false. So a job is never
    /// marked succeeded twice, and a worker handed a redelivered job that
    /// already succeeded (its ack was lost) learns it and just acks it.
    async fn transition(&self, id: &str, transition: Transition) -> StoreResult<bool>;

    /// Records a progress report.
    async fn set_progress(&self, id: &str, progress: &crate::Progress) -> StoreResult<()>;

    /// One job, with its history.
    async fn get(&self, id: &str) -> StoreResult<Option<TaskRecord>>;

    /// Jobs, newest first (without logs and history).
    async fn list(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskRecord>>;

    /// Makes job `id`'s record (and history) disappear `ttl` from now:
    /// after that `get` and `list` no longer see it, and its storage is
    /// reclaimed. False if there is no such record.
    async fn expire(&self, id: &str, ttl: Duration) -> StoreResult<bool>;
}

/// A stored plugin version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginInfo {
    /// sha256 of the component.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The tasks it declares.
    pub tasks: Vec<TaskSpec>,
    /// When it was pushed.
    pub pushed_at: Millis,
    /// The tasks currently routed to this version.
    pub active_tasks: Vec<String>,
}

/// Which plugin version runs a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRoute {
    /// Task name.
    pub task: String,
    /// Plugin version.
    pub digest: String,
    /// The task's declaration in that version.
    pub spec: TaskSpec,
}

/// The plugin fallback rule, the same on every store. When the version a
/// task is routed to is removed, the task goes to the most recently pushed
/// remaining version that declares it — most recent by the store's push
/// order (a re-push of a version counts as a new push), never by a clock,
/// so workers with skewed clocks and pushes in the same millisecond agree —
/// and has no route if none does. `newest_first` lists the remaining
/// versions, `(digest, declared tasks)`, latest push first.
pub fn fallback_route<'a>(
    task: &str,
    newest_first: impl IntoIterator<Item = (&'a str, &'a [TaskSpec])>,
) -> Option<TaskRoute> {
    newest_first.into_iter().find_map(|(digest, specs)| {
        specs.iter().find(|s| s.name == task).map(|spec| TaskRoute {
            task: task.to_owned(),
            digest: digest.to_owned(),
            spec: spec.clone(),
        })
    })
}

/// Plugin blobs, content-addressed, and the task → version routes.
#[async_trait]
pub trait PluginStore: Send + Sync {
    /// Stores a component and routes each of its tasks to it.
    async fn put_plugin(&self, digest: &str, bytes: &[u8], tasks: &[TaskSpec]) -> StoreResult<()>;

    /// A component's bytes.
    async fn plugin_bytes(&self, digest: &str) -> StoreResult<Option<Vec<u8>>>;

    /// Stored versions, latest push first (the order of
    /// [`fallback_route`]).
    async fn plugins(&self) -> StoreResult<Vec<PluginInfo>>;

    /// Where each task is routed.
    async fn routes(&self) -> StoreResult<Vec<TaskRoute>>;

    /// Deletes a version; each task routed to it falls back by
    /// [`fallback_route`], atomically with the removal. Returns whether it
    /// existed.
    async fn remove_plugin(&self, digest: &str) -> StoreResult<bool>;

    /// A number that changes whenever routes change: workers poll it to
    /// pick up new versions cheaply.
    async fn routes_version(&self) -> StoreResult<u64>;

    /// Keeps a stored component's compiled form for one engine (`engine`:
    /// the runtime's compatibility id), so the other workers of the store
    /// load it instead of compiling it again. Opaque bytes to the store —
    /// the runtime signs them, and checks the signature before it uses
    /// them. Replaces what was kept for that pair; ignored if `digest` is
    /// not stored; removed with the component.
    async fn put_compiled(&self, digest: &str, engine: &str, artifact: &[u8]) -> StoreResult<()>;

    /// What [`put_compiled`](Self::put_compiled) kept for `digest` and
    /// `engine`, if anything.
    async fn compiled(&self, digest: &str, engine: &str) -> StoreResult<Option<Vec<u8>>>;
}

/// The stores a deployment uses, usually one adapter behind all.
#[derive(Clone)]
pub struct Stores {
    /// Queues and records: the hot path.
    pub broker: Arc<dyn Broker>,
    /// The dead-letter queue's administration.
    pub dead_letters: Arc<dyn DeadLetters>,
    /// Queue counts.
    pub statistics: Arc<dyn Statistics>,
    /// Job records.
    pub results: Arc<dyn ResultBackend>,
    /// Plugins.
    pub plugins: Arc<dyn PluginStore>,
    /// Group counters (canvas).
    pub groups: Arc<dyn GroupStore>,
    /// Canvas definitions.
    pub canvases: Arc<dyn CanvasStore>,
    /// Schedules (beat).
    pub schedules: Arc<dyn ScheduleStore>,
    /// Workflow runs.
    pub workflows: Arc<dyn WorkflowStore>,
    /// Workers' records (`crate::presence`).
    pub workers: Arc<dyn WorkerRegistry>,
    /// Locks.
    pub locks: Arc<dyn LockStore>,
    /// Quota counters (child jobs of a tree).
    pub quotas: Arc<dyn QuotaStore>,
    /// Stopping jobs.
    pub cancellation: Arc<dyn Cancellation>,
    /// Pausing and purging queues.
    pub queue_control: Arc<dyn QueueControl>,
    /// Start slots of rate-limited tasks.
    pub rate_limits: Arc<dyn RateLimits>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    /// One adapter that implements every store.
    pub fn from_adapter<A>(adapter: Arc<A>) -> Self
    where
        A: Broker
            + DeadLetters
            + Statistics
            + ResultBackend
            + PluginStore
            + GroupStore
            + CanvasStore
            + ScheduleStore
            + WorkflowStore
            + WorkerRegistry
            + LockStore
            + QuotaStore
            + Cancellation
            + QueueControl
            + RateLimits
            + 'static,
    {
        Self {
            broker: adapter.clone(),
            dead_letters: adapter.clone(),
            statistics: adapter.clone(),
            results: adapter.clone(),
            plugins: adapter.clone(),
            groups: adapter.clone(),
            canvases: adapter.clone(),
            schedules: adapter.clone(),
            workflows: adapter.clone(),
            workers: adapter.clone(),
            locks: adapter.clone(),
            quotas: adapter.clone(),
            cancellation: adapter.clone(),
            queue_control: adapter.clone(),
            rate_limits: adapter,
        }
    }
}

/// Where a group stands after a member finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Members in the group.
    pub size: u32,
    /// Distinct members finished so far.
    pub done: u32,
}

impl GroupStatus {
    /// Whether every member has finished.
    pub fn is_complete(&self) -> bool {
        self.done >= self.size
    }
}

/// Counters for groups and chords: which members of a group finished,
/// with what, and a one-time claim of the chord callback. Completion is
/// idempotent per member, so a redelivered member is not counted twice.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// Creates group `id` of `size` members (no-op if it exists).
    async fn create_group(&self, id: &str, size: u32) -> StoreResult<()>;

    /// Records member `index` (0-based) as finished with `result`.
    /// `None` if the group does not exist.
    async fn complete_member(
        &self,
        id: &str,
        index: u32,
        result: &serde_json::Value,
    ) -> StoreResult<Option<GroupStatus>>;

    /// The members' results in index order, once the group is complete.
    async fn group_results(&self, id: &str) -> StoreResult<Option<Vec<serde_json::Value>>>;

    /// True for exactly one caller per group: who runs the chord callback.
    async fn claim_chord(&self, id: &str) -> StoreResult<bool>;
}

/// Canvas definitions (`crate::canvas`): written once when a canvas is
/// enqueued, read by the workers that move it on and by `xylem canvas
/// show`. Opaque JSON text, as every store keeps it.
#[async_trait]
pub trait CanvasStore: Send + Sync {
    /// Writes canvas `id`'s definition unless one exists; true if written.
    async fn put_canvas(&self, id: &str, definition: &str) -> StoreResult<bool>;

    /// Canvas `id`'s definition.
    async fn get_canvas(&self, id: &str) -> StoreResult<Option<String>>;
}

/// Schedules (`crate::schedule`), as data: every beat process reads the
/// due ones and moves each on with a compare-and-set on its version, so
/// two beats never both advance one tick.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Writes `schedule`: creates it when its `version` is 0 and no
    /// schedule has its name; else replaces it if the stored version is
    /// `schedule.version`. Returns the new version, or `None` (nothing
    /// written) when the name exists (creating) or the version moved on
    /// (someone else wrote it since it was read).
    async fn put_schedule(&self, schedule: &crate::schedule::Schedule) -> StoreResult<Option<u64>>;

    /// Schedule `name`.
    async fn get_schedule(&self, name: &str) -> StoreResult<Option<crate::schedule::Schedule>>;

    /// Every schedule, by name.
    async fn list_schedules(&self) -> StoreResult<Vec<crate::schedule::Schedule>>;

    /// Deletes schedule `name`; true if it existed.
    async fn remove_schedule(&self, name: &str) -> StoreResult<bool>;

    /// Enabled schedules whose next run is at or before `now`, earliest
    /// first, at most `limit`.
    async fn due_schedules(
        &self,
        now: Millis,
        limit: usize,
    ) -> StoreResult<Vec<crate::schedule::Schedule>>;
}

/// Which runs `WorkflowStore::list_runs` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs in this state.
    pub state: Option<crate::workflow::RunState>,
    /// At most this many, newest first (0: [`crate::record::DEFAULT_LIST_LIMIT`]).
    pub limit: usize,
}

impl RunFilter {
    /// The limit to apply: `limit`, or the listing default.
    pub fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            crate::record::DEFAULT_LIST_LIMIT
        } else {
            self.limit
        }
    }
}

/// Workflow runs, each kept whole as a versioned document: written by
/// compare-and-set on the version read (as schedules are), found by id,
/// listed, and found when due. Every rule about what a run's document
/// holds — history, outcomes, leases, timers — lives in
/// `crate::workflow`, once.
#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Writes `run`: creates it when its `version` is 0 and no run has its
    /// id; else replaces it if the stored version is `run.version`.
    /// Returns the new version, or `None` (nothing written) when the id
    /// exists (creating) or the version moved on.
    async fn put_run(&self, run: &crate::workflow::Run) -> StoreResult<Option<u64>>;

    /// Writes each of `runs` as [`put_run`](Self::put_run) would, in one
    /// transaction or round trip where the store can (an engine leases a
    /// tick's runs, and writes their steps, in one call); answers in
    /// order. Each write stands or falls alone: a lost compare-and-set
    /// leaves the others written. The ids are distinct.
    async fn put_runs(&self, runs: &[crate::workflow::Run]) -> StoreResult<Vec<Option<u64>>> {
        let mut written = Vec::with_capacity(runs.len());
        for run in runs {
            written.push(self.put_run(run).await?);
        }
        Ok(written)
    }

    /// Run `id`.
    async fn get_run(&self, id: &str) -> StoreResult<Option<crate::workflow::Run>>;

    /// Runs `ids`, in order (`None` where there is none), in one round
    /// trip where the store can.
    async fn get_runs(&self, ids: &[String]) -> StoreResult<Vec<Option<crate::workflow::Run>>> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.push(self.get_run(id).await?);
        }
        Ok(found)
    }

    /// Runs by `filter`, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<crate::workflow::Run>>;

    /// Runs whose `wake_at` is at or before `now`, earliest first, at most
    /// `limit`.
    async fn due_runs(&self, now: Millis, limit: usize) -> StoreResult<Vec<crate::workflow::Run>>;
}

/// Workers' records (`crate::presence`): each worker replaces its own
/// every few seconds; a record not replaced for `keep` is dropped.
#[async_trait]
pub trait WorkerRegistry: Send + Sync {
    /// Writes `beat` under its id, replacing the last one, and keeps it
    /// `keep` from now.
    async fn put_worker(
        &self,
        beat: &crate::presence::WorkerBeat,
        keep: Duration,
    ) -> StoreResult<()>;

    /// Every record not yet dropped, in any order (`crate::presence::list`
    /// sorts them).
    async fn list_workers(&self) -> StoreResult<Vec<crate::presence::WorkerBeat>>;
}

/// Counters with a ceiling, shared by every worker: quotas that span many
/// jobs, such as how many descendants one root job may have in all.
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Adds `n` to counter `key` if the total stays at most `limit`, and
    /// keeps the counter `ttl` from now; an expired counter starts again at
    /// 0. True if taken, false (and nothing changed) if it would pass
    /// `limit`.
    async fn take_quota(&self, key: &str, n: u64, limit: u64, ttl: Duration) -> StoreResult<bool>;

    /// What counter `key` stands at (0 if it does not exist or expired).
    async fn quota_used(&self, key: &str) -> StoreResult<u64>;
}

/// Named locks with an owner and an expiry (beat leadership, unique jobs).
#[async_trait]
pub trait LockStore: Send + Sync {
    /// Takes `name` for `owner` for `ttl` if it is free, expired, or
    /// already `owner`'s (then its expiry is extended). True if taken.
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool>;

    /// Extends the lock if `owner` holds it; false otherwise.
    async fn renew(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool>;

    /// Releases the lock if `owner` holds it; false otherwise.
    async fn release(&self, name: &str, owner: &str) -> StoreResult<bool>;

    /// The current (unexpired) owner.
    async fn lock_owner(&self, name: &str) -> StoreResult<Option<String>>;
}
