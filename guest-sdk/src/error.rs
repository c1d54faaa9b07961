//! How a task reports failure: fail (retried), retry (on request), reject (never retried).

use std::fmt;
use std::time::Duration;

use crate::bindings::xylem::task::types as wit;

/// The result type of a task function.
pub type TaskResult<T> = Result<T, TaskError>;

/// Why a task run did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskError {
    /// The run failed; the job is retried while it has retries left.
    Fail(String),
    /// Run again, after `delay` if given (else the task's backoff).
    Retry {
        /// Why, for the job's history.
        reason: String,
        /// Delay before the next attempt.
        delay: Option<Duration>,
    },
    /// The job can never succeed (bad arguments, say): no retry.
    Reject(String),
}

impl TaskError {
    /// A failure that is retried while retries remain.
    pub fn fail(reason: impl Into<String>) -> Self {
        Self::Fail(reason.into())
    }

    /// Asks to be run again after the task's backoff.
    pub fn retry(reason: impl Into<String>) -> Self {
        Self::Retry {
            reason: reason.into(),
            delay: None,
        }
    }

    /// Asks to be run again after `delay`.
    pub fn retry_after(reason: impl Into<String>, delay: Duration) -> Self {
        Self::Retry {
            reason: reason.into(),
            delay: Some(delay),
        }
    }

    /// A permanent failure: the job is not retried.
    pub fn reject(reason: impl Into<String>) -> Self {
        Self::Reject(reason.into())
    }
}

impl fmt::Display for TaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fail(reason) => write!(f, "failed: {reason}"),
            Self::Retry { reason, .. } => write!(f, "retry requested: {reason}"),
            Self::Reject(reason) => write!(f, "rejected: {reason}"),
        }
    }
}

impl std::error::Error for TaskError {}

impl From<TaskError> for wit::TaskError {
    fn from(err: TaskError) -> Self {
        match err {
            TaskError::Fail(reason) => wit::TaskError::Fail(reason),
            TaskError::Retry { reason, delay } => wit::TaskError::Retry(wit::RetryRequest {
                reason,
                delay_ms: delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            }),
            TaskError::Reject(reason) => wit::TaskError::Reject(reason),
        }
    }
}

/// Lets a task write `ctx.enqueue(...)?`: a store outage fails the run (it
/// is retried); anything else rejects it, since running it again would be
/// refused the same way.
impl From<crate::EnqueueError> for TaskError {
    fn from(e: crate::EnqueueError) -> Self {
        match e {
            crate::EnqueueError::Unavailable(_) => Self::Fail(e.to_string()),
            _ => Self::Reject(e.to_string()),
        }
    }
}
