//! The running job as a task sees it, and what it may ask of the host.

use std::time::Duration;

use serde::Serialize;

use crate::bindings::xylem::task::host;
use crate::bindings::xylem::task::types as wit;

pub use wit::Level;

/// Options for a child task enqueued with [`Context::enqueue`]: every
/// option an enqueue takes. Unset fields take the child task's defaults;
/// limits are capped by this run's own.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Queue to put the child on (default: the child task's own).
    pub queue: Option<String>,
    /// Priority 0–9 (at most this job's).
    pub priority: Option<u8>,
    /// Run no sooner than this from now.
    pub delay: Option<Duration>,
    /// Retries the child may have.
    pub max_retries: Option<u32>,
    /// First retry delay (doubled each attempt).
    pub retry_backoff: Option<Duration>,
    /// Longest retry delay.
    pub retry_backoff_max: Option<Duration>,
    /// Spread retry delays over ±25 % (default yes).
    pub retry_jitter: Option<bool>,
    /// After this the child's `cancelled()` turns true.
    pub soft_time_limit: Option<Duration>,
    /// After this the child is stopped.
    pub hard_time_limit: Option<Duration>,
    /// The child's fuel budget.
    pub fuel: Option<u64>,
    /// The child's memory cap, in bytes.
    pub max_memory_bytes: Option<u64>,
    /// The child's lease (1 s to 24 h).
    pub visibility_timeout: Option<Duration>,
    /// Expire the child if not started within this.
    pub expires: Option<Duration>,
    /// Not enqueued while an equal job was, within the TTL: then
    /// [`Enqueued::duplicate`] is true and the id is the first job's.
    pub unique: Option<Unique>,
    /// Keep the child's state but not its result.
    pub ignore_result: Option<bool>,
    /// A task enqueued with the child's result when it succeeds.
    pub link: Option<Callback>,
    /// A task enqueued with the child's error when it fails for good.
    pub link_error: Option<Callback>,
}

/// A unique job's key and TTL (see [`EnqueueOptions::unique`]).
#[derive(Debug, Clone)]
pub struct Unique {
    /// Equal means the same key; `None`: the same task, queue and
    /// arguments.
    pub key: Option<String>,
    /// How long after the first enqueue an equal one is not enqueued.
    pub ttl: Duration,
}

/// A task enqueued when a job ends. Without `args` it receives the
/// job's result (or error object) whole; with `args` (a JSON object),
/// those plus `"result"` (or `"error"`).
#[derive(Debug, Clone)]
pub struct Callback {
    /// The callback's task.
    pub task: String,
    /// Its own arguments, a JSON object.
    pub args: Option<serde_json::Value>,
    /// Its queue (default: the task's).
    pub queue: Option<String>,
    /// Its priority.
    pub priority: Option<u8>,
}

impl Callback {
    /// A callback of `task` with no arguments of its own.
    pub fn new(task: &str) -> Self {
        Self {
            task: task.to_owned(),
            args: None,
            queue: None,
            priority: None,
        }
    }
}

/// What [`Context::enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The child's id — for a duplicate unique job, the first job's.
    pub id: String,
    /// True when nothing was enqueued: an equal unique job exists.
    pub duplicate: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<Callback> for wit::Callback {
    fn from(c: Callback) -> Self {
        Self {
            task: c.task,
            args: c.args.map(|a| a.to_string()),
            queue: c.queue,
            priority: c.priority,
        }
    }
}

impl From<EnqueueOptions> for wit::EnqueueOptions {
    fn from(o: EnqueueOptions) -> Self {
        Self {
            queue: o.queue,
            priority: o.priority,
            delay_ms: o.delay.map(millis),
            max_retries: o.max_retries,
            retry_backoff_ms: o.retry_backoff.map(millis),
            retry_backoff_max_ms: o.retry_backoff_max.map(millis),
            retry_jitter: o.retry_jitter,
            soft_time_limit_ms: o.soft_time_limit.map(millis),
            hard_time_limit_ms: o.hard_time_limit.map(millis),
            fuel: o.fuel,
            max_memory_bytes: o.max_memory_bytes,
            visibility_timeout_ms: o.visibility_timeout.map(millis),
            expires_ms: o.expires.map(millis),
            unique: o.unique.map(|u| wit::Unique {
                key: u.key,
                ttl_ms: millis(u.ttl),
            }),
            ignore_result: o.ignore_result,
            link: o.link.map(Into::into),
            link_error: o.link_error.map(Into::into),
        }
    }
}

/// Why [`Context::enqueue`] refused a child task. Nothing was enqueued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueError {
    /// This run, or the tree of jobs it belongs to, used up its quota of
    /// children (count, argument bytes or depth). Retrying will not help.
    QuotaExceeded(String),
    /// No pushed plugin provides the task.
    UnknownTask(String),
    /// The arguments or options are not valid (not matching the task's
    /// schema, a bad queue name, ...).
    InvalidArguments(String),
    /// The job store could not be reached; a retry of this job may work.
    Unavailable(String),
}

impl EnqueueError {
    /// The host's message.
    pub fn message(&self) -> &str {
        match self {
            Self::QuotaExceeded(m)
            | Self::UnknownTask(m)
            | Self::InvalidArguments(m)
            | Self::Unavailable(m) => m,
        }
    }
}

impl std::fmt::Display for EnqueueError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Self::QuotaExceeded(_) => "child quota exceeded",
            Self::UnknownTask(_) => "unknown task",
            Self::InvalidArguments(_) => "invalid arguments",
            Self::Unavailable(_) => "job store unavailable",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

impl std::error::Error for EnqueueError {}

impl From<wit::EnqueueError> for EnqueueError {
    fn from(e: wit::EnqueueError) -> Self {
        match e {
            wit::EnqueueError::QuotaExceeded(m) => Self::QuotaExceeded(m),
            wit::EnqueueError::UnknownTask(m) => Self::UnknownTask(m),
            wit::EnqueueError::InvalidArguments(m) => Self::InvalidArguments(m),
            wit::EnqueueError::Unavailable(m) => Self::Unavailable(m),
        }
    }
}

/// The job being run: its identity, and the host calls a task may make.
#[derive(Debug)]
pub struct Context {
    info: wit::TaskInfo,
}

impl Context {
    pub(crate) fn new(info: wit::TaskInfo) -> Self {
        Self { info }
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// The task name the job was enqueued under.
    pub fn task_name(&self) -> &str {
        &self.info.name
    }

    /// The queue the job came from.
    pub fn queue(&self) -> &str {
        &self.info.queue
    }

    /// 1 on the first run, 2 on the first retry, ...
    pub fn attempt(&self) -> u32 {
        self.info.attempt
    }

    /// Retries this job may have in all.
    pub fn max_retries(&self) -> u32 {
        self.info.max_retries
    }

    /// A header of the job, if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.info
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Appends a line to the job's log.
    pub fn log(&self, level: Level, message: &str) {
        host::log(level, message);
    }

    /// Appends an info line to the job's log.
    pub fn log_info(&self, message: &str) {
        host::log(Level::Info, message);
    }

    /// Records progress, 0.0 to 100.0, with an optional message.
    pub fn progress(&self, percent: f32, message: Option<&str>) {
        host::progress(percent, message);
    }

    /// Tells the host the task is alive (extends the job's lease).
    pub fn heartbeat(&self) {
        host::heartbeat();
    }

    /// True once the soft time limit passed or a cancel was requested.
    pub fn cancelled(&self) -> bool {
        host::cancelled()
    }

    /// Enqueues a child task; returns its job id. The child inherits this
    /// run's limits, and each call is charged to this run's (and its job
    /// tree's) quota of children: past it, [`EnqueueError::QuotaExceeded`].
    pub fn enqueue<A: Serialize>(
        &self,
        task: &str,
        args: &A,
        options: Option<EnqueueOptions>,
    ) -> Result<String, EnqueueError> {
        Ok(self.enqueue_with(task, args, options)?.id)
    }

    /// [`enqueue`](Self::enqueue), saying whether a unique child was a
    /// duplicate (then nothing was enqueued and the id is the first job's).
    pub fn enqueue_with<A: Serialize>(
        &self,
        task: &str,
        args: &A,
        options: Option<EnqueueOptions>,
    ) -> Result<Enqueued, EnqueueError> {
        let args = serde_json::to_string(args)
            .map_err(|e| EnqueueError::InvalidArguments(format!("cannot encode args: {e}")))?;
        let options = options.map(wit::EnqueueOptions::from);
        host::enqueue(task, &args, options.as_ref())
            .map(|done| Enqueued {
                id: done.id,
                duplicate: done.duplicate,
            })
            .map_err(EnqueueError::from)
    }
}
