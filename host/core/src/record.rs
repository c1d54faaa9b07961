//! What the result backend keeps about each job: its state, the history of
//! every transition, and the outcome of its last run.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::time::Millis;
use crate::{Failure, LogLine, Progress, Usage};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting in its queue (possibly delayed).
    Queued,
    /// A worker is running it.
    Running,
    /// Finished with a result.
    Succeeded,
    /// A run failed (a history entry; the job then retries or goes dead).
    Failed,
    /// Failed and waiting for its next attempt.
    Retrying,
    /// Cancelled.
    Cancelled,
    /// Its expiry passed before it ran.
    Expired,
    /// In the dead-letter queue.
    Dead,
}

impl TaskState {
    /// Every state, in life order.
    pub const ALL: [TaskState; 8] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Retrying,
        Self::Cancelled,
        Self::Expired,
        Self::Dead,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Retrying => "retrying",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::Dead => "dead",
        }
    }

    /// Whether the job is done for good (until a DLQ replay).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Cancelled | Self::Expired | Self::Dead
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state `{s}` (one of: {})", names.join(", "))
            })
    }
}

/// One transition in a job's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When.
    pub at: Millis,
    /// The state entered.
    pub state: TaskState,
    /// The attempt it concerns.
    pub attempt: u32,
    /// Why, or with what (worker id, error, delay ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Everything known about one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Job id.
    pub id: String,
    /// Task name.
    pub task: String,
    /// Queue.
    pub queue: String,
    /// Current state.
    pub state: TaskState,
    /// JSON arguments, as text.
    pub args: String,
    /// Current (or last) attempt.
    pub attempt: u32,
    /// Retries allowed.
    pub max_retries: u32,
    /// The result, once succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// Resources used by the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Last progress report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Log of the last run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub log: Vec<LogLine>,
    /// Plugin version (sha256) of the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The headers it was enqueued with (tenant, trace context, a
    /// workflow step's run, …), as its envelope had them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// When it was enqueued.
    pub enqueued_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
    /// Every transition, oldest first.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
}

impl TaskRecord {
    /// The record of a job just enqueued (or recreated from its envelope
    /// in state `state`), with its first history entry.
    pub fn from_envelope(
        envelope: &crate::Envelope,
        state: TaskState,
        detail: Option<String>,
        now: Millis,
    ) -> Self {
        Self {
            id: envelope.id.clone(),
            task: envelope.task.clone(),
            queue: envelope.queue.clone(),
            state,
            args: envelope.args.clone(),
            attempt: envelope.attempt,
            max_retries: envelope.max_retries,
            result: None,
            error: None,
            usage: None,
            progress: None,
            log: Vec::new(),
            plugin: None,
            headers: envelope.headers.clone(),
            enqueued_at: envelope.enqueued_at,
            updated_at: now,
            history: vec![HistoryEntry {
                at: now,
                state,
                attempt: envelope.attempt,
                detail,
            }],
        }
    }

    /// Applies a transition (the caller has checked that the record is
    /// not final): state, attempt, outcome, plugin, and a history entry.
    pub fn apply(&mut self, t: Transition, now: Millis) {
        self.state = t.state;
        self.attempt = t.attempt;
        self.updated_at = now;
        if t.plugin.is_some() {
            self.plugin = t.plugin;
        }
        if let Some(outcome) = t.outcome {
            self.result = outcome.result;
            self.error = outcome.error;
            self.usage = Some(outcome.usage);
            self.log = outcome.log;
            if outcome.progress.is_some() {
                self.progress = outcome.progress;
            }
        }
        self.history.push(HistoryEntry {
            at: now,
            state: t.state,
            attempt: t.attempt,
            detail: t.detail,
        });
    }
}

/// A state change to record, optionally with the outcome of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The state entered.
    pub state: TaskState,
    /// The attempt it concerns.
    pub attempt: u32,
    /// Why, or with what.
    pub detail: Option<String>,
    /// The run's outcome, for `succeeded` / `failed` / `retrying` / `dead`.
    pub outcome: Option<crate::Outcome>,
    /// Plugin version that ran.
    pub plugin: Option<String>,
}

impl Transition {
    /// A bare state change.
    pub fn to(state: TaskState, attempt: u32) -> Self {
        Self {
            state,
            attempt,
            detail: None,
            outcome: None,
            plugin: None,
        }
    }

    /// Adds `note` to the detail, after what it says already.
    pub fn add_note(&mut self, note: &str) {
        self.detail = Some(match self.detail.take() {
            Some(before) => format!("{before}; {note}"),
            None => note.to_owned(),
        });
    }

    /// With a detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// Filter of a job listing.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only jobs in this state.
    pub state: Option<TaskState>,
    /// Only jobs of this task.
    pub task: Option<String>,
    /// Only jobs enqueued with this header: name and value, exact.
    pub header: Option<(String, String)>,
    /// At most this many (newest first); 0 means [`DEFAULT_LIST_LIMIT`].
    pub limit: usize,
}

/// How many jobs a listing returns when its filter sets no limit.
pub const DEFAULT_LIST_LIMIT: usize = 100;

impl TaskFilter {
    /// Whether `record` passes the filter's state, task and header (the
    /// rule stores that filter in memory apply; the SQL stores say the
    /// same in SQL).
    pub fn matches(&self, record: &TaskRecord) -> bool {
        self.state.is_none_or(|s| record.state == s)
            && self.task.as_ref().is_none_or(|t| &record.task == t)
            && self.header.as_ref().is_none_or(|(name, value)| {
                record.headers.iter().any(|(n, v)| n == name && v == value)
            })
    }

    /// The most jobs this listing returns: its limit, or
    /// [`DEFAULT_LIST_LIMIT`] when it sets none.
    pub fn effective_limit(&self) -> usize {
        if self.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            self.limit
        }
    }
}
