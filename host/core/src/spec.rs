//! What a plugin declares about its tasks: names, descriptions, default options.

use serde::{Deserialize, Serialize};

use crate::lineage::ChildQuotaOverrides;

/// Default options of a task, as its plugin declares them. Unset fields take
/// the host's defaults; each may be overridden when a job is enqueued.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskOptions {
    /// Queue jobs go to when none is named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// 0 (lowest) to 9 (highest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Retries before the job is dead-lettered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// First retry delay in milliseconds; doubled per attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_backoff_ms: Option<u64>,
    /// Upper bound of the retry delay in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_backoff_max_ms: Option<u64>,
    /// Whether each retry delay is spread at random over ±25 % (default
    /// true), so jobs that fail together do not retry together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_jitter: Option<bool>,
    /// Soft time limit in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soft_time_limit_ms: Option<u64>,
    /// Hard time limit in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hard_time_limit_ms: Option<u64>,
    /// Fuel budget per run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Memory cap per run, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory_bytes: Option<u64>,
    /// Rate limit such as `100/s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// How long a claimed job stays with a worker that stops answering
    /// before another may take it (the lease), in milliseconds; the worker
    /// renews it while the job runs. Default: the worker's `--lease`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub visibility_timeout_ms: Option<u64>,
    /// A job not started this long after it was enqueued is `expired`,
    /// never run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
    /// Every job of the task is unique for this long (`crate::unique`):
    /// an equal job enqueued meanwhile is not enqueued again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_for_ms: Option<u64>,
    /// Keep the job's state but not its result value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_result: Option<bool>,
}

/// A task's options with every gap filled by the host's default: what a
/// job of the task gets when its enqueue sets nothing (`xylem tasks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveOptions {
    /// Queue.
    pub queue: String,
    /// Priority 0–9.
    pub priority: u8,
    /// Retries before the job is dead-lettered.
    pub max_retries: u32,
    /// First retry delay, ms.
    pub retry_backoff_ms: u64,
    /// Largest retry delay, ms.
    pub retry_backoff_max_ms: u64,
    /// Retry delays spread over ±25 %.
    pub retry_jitter: bool,
    /// Soft time limit, ms (none by default).
    pub soft_time_limit_ms: Option<u64>,
    /// Hard time limit, ms.
    pub hard_time_limit_ms: u64,
    /// Fuel per run.
    pub fuel: u64,
    /// Memory cap per run, bytes.
    pub max_memory_bytes: u64,
    /// Rate limit (none by default).
    pub rate_limit: Option<String>,
    /// Concurrency limit, set by the operator at push (none by default).
    pub concurrency: Option<String>,
    /// Lease, ms; `None`: the worker's `--lease`.
    pub visibility_timeout_ms: Option<u64>,
    /// Expiry after enqueue, ms (none by default).
    pub expires_ms: Option<u64>,
    /// Unique for, ms (not unique by default).
    pub unique_for_ms: Option<u64>,
    /// Result value dropped.
    pub ignore_result: bool,
}

impl TaskSpec {
    /// The rate limit that applies: the operator's, else the plugin's.
    pub fn effective_rate_limit(&self) -> Option<&str> {
        self.rate_limit
            .as_deref()
            .or(self.options.rate_limit.as_deref())
    }

    /// The task's effective defaults: its declared options over the
    /// host's, plus the operator's concurrency limit.
    pub fn effective(&self) -> EffectiveOptions {
        let o = &self.options;
        let limits = crate::Limits::default().with_options(o);
        let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        EffectiveOptions {
            queue: o
                .queue
                .clone()
                .unwrap_or_else(|| crate::envelope::DEFAULT_QUEUE.to_owned()),
            priority: o.priority.unwrap_or(0),
            max_retries: o
                .max_retries
                .unwrap_or(crate::envelope::DEFAULT_MAX_RETRIES),
            retry_backoff_ms: o
                .retry_backoff_ms
                .unwrap_or(ms(crate::retry::DEFAULT_BACKOFF)),
            retry_backoff_max_ms: o
                .retry_backoff_max_ms
                .unwrap_or(ms(crate::retry::DEFAULT_BACKOFF_MAX)),
            retry_jitter: o.retry_jitter.unwrap_or(true),
            soft_time_limit_ms: limits.soft_time_limit.map(ms),
            hard_time_limit_ms: ms(limits.hard_time_limit),
            fuel: limits.fuel,
            max_memory_bytes: limits.max_memory,
            rate_limit: self.effective_rate_limit().map(str::to_owned),
            concurrency: self.concurrency.clone(),
            visibility_timeout_ms: o.visibility_timeout_ms,
            expires_ms: o.expires_ms,
            unique_for_ms: o.unique_for_ms,
            ignore_result: o.ignore_result.unwrap_or(false),
        }
    }
}

impl TaskOptions {
    /// Checks declared defaults the way an enqueue checks its own options:
    /// a plugin declaring one no job could run under is refused at push,
    /// not found out at every enqueue.
    pub fn check(&self) -> Result<(), String> {
        if let Some(queue) = &self.queue {
            crate::client::validate_queue_name(queue).map_err(|e| e.to_string())?;
        }
        if let Some(p) = self.priority
            && p > 9
        {
            return Err(format!("priority must be 0-9, not {p}"));
        }
        if let Some(limit) = &self.rate_limit {
            limit
                .parse::<crate::rate_limit::RateLimit>()
                .map_err(|e| e.to_string())?;
        }
        for (name, value) in [
            ("expires-ms", self.expires_ms),
            ("unique-for-ms", self.unique_for_ms),
        ] {
            if value == Some(0) {
                return Err(format!("{name} cannot be 0"));
            }
        }
        let as_job = crate::JobOptions {
            soft_time_limit_ms: self.soft_time_limit_ms,
            hard_time_limit_ms: self.hard_time_limit_ms,
            fuel: self.fuel,
            max_memory_bytes: self.max_memory_bytes,
            visibility_timeout_ms: self.visibility_timeout_ms,
            ..crate::JobOptions::default()
        };
        crate::client::validate_options(&as_job).map_err(|e| e.to_string())
    }
}

/// One task a plugin implements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Dotted task name, e.g. `hello.greet`.
    pub name: String,
    /// One line of description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Default options.
    #[serde(default)]
    pub options: TaskOptions,
    /// A JSON Schema (JSON text) every job's arguments must match; checked
    /// at enqueue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_schema: Option<String>,
    /// The child-job quota of this task's root jobs, as the operator set it
    /// at push (`xylem plugin push --max-children ...`); plugin code
    /// cannot set it.
    #[serde(default, skip_serializing_if = "ChildQuotaOverrides::is_empty")]
    pub child_quota: ChildQuotaOverrides,
    /// At most this many of its jobs running at once (`2`, `2 by tenant`:
    /// `crate::concurrency`), as the operator set it at push (`xylem
    /// plugin push --concurrency TASK=LIMIT`); plugin code cannot set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<String>,
    /// A rate limit set by the operator at push (`xylem plugin push
    /// --rate-limit TASK=LIMIT`): replaces the one the plugin declares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
}

impl TaskSpec {
    /// A task with no description, default options and no schema.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: None,
            options: TaskOptions::default(),
            args_schema: None,
            child_quota: ChildQuotaOverrides::default(),
            concurrency: None,
            rate_limit: None,
        }
    }
}
