//! The seam between the job system and whatever runs task code.
//!
//! `xylem-wasm` implements [`Executor`] with a fresh WebAssembly sandbox per
//! run; tests of the job logic can implement it natively.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::lineage::ChildEnqueueError;
use crate::{Limits, Outcome, Progress};

/// What a task is told about the job it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Job id.
    pub id: String,
    /// Task name.
    pub name: String,
    /// Queue the job came from.
    pub queue: String,
    /// 1 on the first run.
    pub attempt: u32,
    /// Retries the job may have in all.
    pub max_retries: u32,
    /// Job headers.
    pub headers: Vec<(String, String)>,
}

impl TaskInfo {
    /// A first attempt of `name` with a given id, on queue `default`.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            queue: "default".to_owned(),
            attempt: 1,
            max_retries: 0,
            headers: Vec::new(),
        }
    }
}

/// A flag that stops a running task: set it and the run ends with
/// `cancelled` within milliseconds. [`request`](Self::request) first lets
/// the task see the request (the `cancelled` host call) and end cleanly
/// within a grace period, then stops it.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    /// Stop now.
    stop: AtomicBool,
    /// A stop was asked for: the task may see it.
    requested: AtomicBool,
    /// With `requested`: stop once this instant has passed.
    stop_at: std::sync::Mutex<Option<std::time::Instant>>,
}

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the run now.
    pub fn cancel(&self) {
        self.0.requested.store(true, Ordering::Release);
        self.0.stop.store(true, Ordering::Release);
    }

    /// Tells the task to stop (it sees it through `cancelled`), and stops
    /// the run after `grace` if it has not ended by then.
    pub fn request(&self, grace: std::time::Duration) {
        if grace.is_zero() {
            return self.cancel();
        }
        let mut stop_at = self.0.stop_at.lock().unwrap_or_else(|e| e.into_inner());
        if stop_at.is_none() {
            *stop_at = Some(std::time::Instant::now() + grace);
        }
        self.0.requested.store(true, Ordering::Release);
    }

    /// Whether the run must stop now (cancelled, or the grace of a request
    /// is over).
    pub fn is_cancelled(&self) -> bool {
        if self.0.stop.load(Ordering::Acquire) {
            return true;
        }
        if !self.0.requested.load(Ordering::Acquire) {
            return false;
        }
        let over = self
            .0
            .stop_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| std::time::Instant::now() >= at);
        if over {
            self.0.stop.store(true, Ordering::Release);
        }
        over
    }

    /// Whether a stop was asked for (the task should wrap up).
    pub fn is_requested(&self) -> bool {
        self.0.requested.load(Ordering::Acquire)
    }
}

/// One run of one task.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The job as the task sees it (`info.name` is the task to run).
    pub info: TaskInfo,
    /// JSON arguments.
    pub args: String,
    /// Limits for this run.
    pub limits: Limits,
    /// Set to stop the run.
    pub cancel: CancelToken,
}

/// Options a running task gave for a child task it enqueues: every
/// option an enqueue takes (limits are capped by the parent's own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildOptions {
    /// Queue for the child.
    pub queue: Option<String>,
    /// Priority 0–9.
    pub priority: Option<u8>,
    /// Delay before the child may run, in ms.
    pub delay_ms: Option<u64>,
    /// Retries for the child.
    pub max_retries: Option<u32>,
    /// Expire if not started this long after enqueue, in ms.
    pub expires_ms: Option<u64>,
    /// Backoff, limits, visibility timeout, ignore-result, callbacks.
    pub options: crate::JobOptions,
    /// Not enqueued again while an equal job was, within the TTL.
    pub unique: Option<crate::unique::Unique>,
}

/// What an enqueue from a task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildEnqueued {
    /// The child's id — or, for a duplicate unique job, the first job's.
    pub id: String,
    /// True when nothing was enqueued because of a unique equal job.
    pub duplicate: bool,
}

/// What the job system does when a running task calls the host. The
/// default methods do nothing (and refuse child tasks), which is what a
/// one-off `xylem run` needs.
#[async_trait]
pub trait HostCalls: Send + Sync + fmt::Debug {
    /// The task reported progress.
    fn progress(&self, _job: &TaskInfo, _progress: &Progress) {}

    /// The task says it is alive: extend its lease.
    fn heartbeat(&self, _job: &TaskInfo) {}

    /// The task enqueues a child task; returns the child's id.
    async fn enqueue(
        &self,
        _parent: &TaskInfo,
        name: &str,
        _args: &str,
        _options: ChildOptions,
    ) -> Result<ChildEnqueued, ChildEnqueueError> {
        Err(ChildEnqueueError::Unavailable(format!(
            "cannot enqueue `{name}`: child tasks need a job store (run this task through a worker)"
        )))
    }

    /// The task enqueues a canvas (`crate::canvas`, as JSON); returns its id.
    async fn submit_canvas(
        &self,
        _parent: &TaskInfo,
        _definition: &str,
    ) -> Result<String, ChildEnqueueError> {
        Err(ChildEnqueueError::Unavailable(
            "cannot enqueue a canvas: child tasks need a job store (run this task through a worker)"
                .to_owned(),
        ))
    }
}

/// Host calls that do nothing: for one-off runs and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHostCalls;

impl HostCalls for NoHostCalls {}

/// Runs task code.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Runs `request` to an outcome. Never panics on bad task code: every
    /// failure of the task is an [`Outcome`] with an error.
    async fn execute(&self, request: RunRequest, host: Arc<dyn HostCalls>) -> Outcome;
}
