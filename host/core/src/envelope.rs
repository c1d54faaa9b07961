//! The job envelope: everything a broker carries about one job.

use serde::{Deserialize, Serialize};

use crate::callback::Callback;
use crate::lineage::{ChildQuotaOverrides, Lineage};
use crate::time::{Millis, now_ms};
use crate::{Limits, TaskOptions};

/// Envelope format version; bumped on incompatible changes.
pub const ENVELOPE_VERSION: u32 = 1;

/// Per-job overrides of a task's options, given at enqueue time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobOptions {
    /// Retry backoff base in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_backoff_ms: Option<u64>,
    /// Retry backoff cap in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_backoff_max_ms: Option<u64>,
    /// Whether retry delays are jittered (±25 %).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_jitter: Option<bool>,
    /// Soft time limit in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soft_time_limit_ms: Option<u64>,
    /// Hard time limit in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard_time_limit_ms: Option<u64>,
    /// Fuel budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Memory cap in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    /// The job's lease, in ms (see [`TaskOptions::visibility_timeout_ms`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility_timeout_ms: Option<u64>,
    /// Keep the job's state but not its result value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_result: Option<bool>,
    /// Enqueued with the result when the job succeeds ([`Callback`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<Callback>,
    /// Enqueued with the error when the job fails for good (dead).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_error: Option<Callback>,
    /// Overrides of the child-job quota (root jobs; children keep their
    /// root's). Nested rather than flattened: serde's flatten decodes
    /// through a buffer, which every store call would pay for.
    #[serde(default, skip_serializing_if = "ChildQuotaOverrides::is_empty")]
    pub child_quota: ChildQuotaOverrides,
}

impl JobOptions {
    /// The limits of a run: host defaults, then the task's declared
    /// options, then this job's overrides.
    pub fn limits(&self, task: &TaskOptions) -> Limits {
        let limits = Limits::default().with_options(task);
        let own = TaskOptions {
            soft_time_limit_ms: self.soft_time_limit_ms,
            hard_time_limit_ms: self.hard_time_limit_ms,
            fuel: self.fuel,
            max_memory_bytes: self.max_memory_bytes,
            ..TaskOptions::default()
        };
        limits.with_options(&own)
    }

    /// Whether the result value is dropped: this job's choice, else its
    /// task's, else no.
    pub fn ignores_result(&self, task: &TaskOptions) -> bool {
        self.ignore_result.or(task.ignore_result).unwrap_or(false)
    }

    /// Whether retry delays are jittered: this job's choice, else its
    /// task's, else yes.
    pub fn retry_jitter(&self, task: &TaskOptions) -> bool {
        self.retry_jitter.or(task.retry_jitter).unwrap_or(true)
    }

    /// The job's lease, if it or its task sets one (else the worker's).
    pub fn visibility_timeout(&self, task: &TaskOptions) -> Option<std::time::Duration> {
        self.visibility_timeout_ms
            .or(task.visibility_timeout_ms)
            .map(std::time::Duration::from_millis)
    }
}

/// One job, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version ([`ENVELOPE_VERSION`]).
    pub v: u32,
    /// Job id: a UUIDv7, so ids sort by creation time.
    pub id: String,
    /// Task name.
    pub task: String,
    /// Queue.
    pub queue: String,
    /// JSON arguments, as text.
    pub args: String,
    /// Headers (tenant, trace context, ...).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// 0 (lowest) to 9 (highest).
    pub priority: u8,
    /// Not to run before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Millis>,
    /// Not to run after this time (expires instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Millis>,
    /// 1 on the first run; incremented on each retry.
    pub attempt: u32,
    /// Retries allowed.
    pub max_retries: u32,
    /// Per-job overrides of the task's options.
    #[serde(default)]
    pub options: JobOptions,
    /// The job that enqueued this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Plugin version (sha256) this job must run on, if pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// When it was enqueued.
    pub enqueued_at: Millis,
    /// How many times a worker found no plugin providing the task (a
    /// plugin pushed moments ago may not be loaded yet): such a job waits
    /// and tries again, up to a limit, without using up its retries.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unresolved: u32,
    /// The start slot its task's rate limit reserved for this attempt
    /// (`crate::rate_limit`): the job waits until then, then runs without
    /// reserving again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_slot: Option<Millis>,
    /// For the job of a canvas's task node: which canvas and node
    /// (`crate::canvas`); its end moves the canvas on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canvas: Option<crate::canvas::CanvasRef>,
    /// For a job enqueued by a running task: its root, depth, the tree's
    /// child quota and the limits it may not exceed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<Lineage>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Default queue name.
pub const DEFAULT_QUEUE: &str = "default";

/// Default number of retries when neither the task nor the job says.
pub const DEFAULT_MAX_RETRIES: u32 = 3;

/// The header a job made by another carries: its parent's id (a child a
/// task enqueued, a callback, a canvas step started by a job's end).
pub const PARENT_HEADER: &str = "xylem-parent";

/// Sets header `name` to `value`, replacing the one there (a job's own
/// headers are copied from what made it, and must not repeat a name).
pub fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    headers.retain(|(k, _)| k != name);
    headers.push((name.to_owned(), value.to_owned()));
}

impl Envelope {
    /// Its headers as a job's record keeps them: JSON
    /// (`[["name", "value"], …]`), or `None` when it has none.
    pub fn headers_json(&self) -> Option<String> {
        (!self.headers.is_empty()).then(|| serde_json::to_string(&self.headers).unwrap_or_default())
    }

    /// The limits this job runs under: host defaults, the task's declared
    /// options, the job's overrides — then, for a child job, capped by the
    /// limits its parent ran under.
    pub fn limits(&self, task: &TaskOptions) -> Limits {
        let limits = self.options.limits(task);
        match &self.lineage {
            Some(lineage) => limits.capped_by(&lineage.ceiling),
            None => limits,
        }
    }

    /// A new first-attempt job of `task` with `args`, on the default queue.
    pub fn new(task: impl Into<String>, args: impl Into<String>) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            id: uuid::Uuid::now_v7().to_string(),
            task: task.into(),
            queue: DEFAULT_QUEUE.to_owned(),
            args: args.into(),
            headers: Vec::new(),
            priority: 0,
            not_before: None,
            expires_at: None,
            attempt: 1,
            max_retries: DEFAULT_MAX_RETRIES,
            options: JobOptions::default(),
            parent: None,
            plugin: None,
            enqueued_at: now_ms(),
            unresolved: 0,
            rate_slot: None,
            canvas: None,
            lineage: None,
        }
    }

    /// When the job may run: its not-before time or its enqueue time.
    pub fn run_at(&self) -> Millis {
        self.not_before.unwrap_or(self.enqueued_at)
    }

    /// The order in which brokers hand jobs out: higher priority first,
    /// then the earliest `run_at`, then the oldest id.
    pub fn claim_order(&self, other: &Self) -> std::cmp::Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then(self.run_at().cmp(&other.run_at()))
            .then(self.id.cmp(&other.id))
    }
}
