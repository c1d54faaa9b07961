//! The running job as a task sees it, and what it may ask of the host.

use std::time::Duration;

use serde::Serialize;

use crate::bindings::xylem::task::host;
use crate::bindings::xylem::task::types as wit;

pub use wit::Level;

/// Options for a child task enqueued with [`Context::enqueue`].
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Queue to put the child on (default: the child task's own).
    pub queue: Option<String>,
    /// Priority 0–9.
    pub priority: Option<u8>,
    /// Run no sooner than this from now.
    pub delay: Option<Duration>,
    /// Retries the child may have.
    pub max_retries: Option<u32>,
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
        let args = serde_json::to_string(args)
            .map_err(|e| EnqueueError::InvalidArguments(format!("cannot encode args: {e}")))?;
        let options = options.map(|o| wit::EnqueueOptions {
            queue: o.queue,
            priority: o.priority,
            delay_ms: o
                .delay
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            max_retries: o.max_retries,
        });
        host::enqueue(task, &args, options.as_ref()).map_err(EnqueueError::from)
    }
}
