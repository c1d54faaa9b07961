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
        }
    }
}
