//! What one run of a task produced: a result or a typed failure, the
//! resources it used, its log and its last progress report.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Why a run failed. The kebab-case names are what users see
/// (`xylem run` output, job records) and what scripts match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The hard time limit passed; the run was stopped.
    TimeLimitExceeded,
    /// The fuel budget ran out.
    FuelExhausted,
    /// The run tried to grow its memory past its cap.
    MemoryLimitExceeded,
    /// The guest trapped (panic, unreachable, stack overflow, ...).
    Trap,
    /// The result was not JSON, or larger than the output limit.
    BadOutput,
    /// The task returned `fail`.
    PluginError,
    /// The task asked to be retried.
    RetryRequested,
    /// The task rejected the job as one that can never succeed.
    Rejected,
    /// The run was cancelled from outside.
    Cancelled,
    /// No plugin provides the task.
    UnknownTask,
    /// The arguments were not valid JSON.
    InvalidArgs,
    /// The component could not be loaded or instantiated.
    PluginLoad,
}

impl FailureKind {
    /// The kebab-case name, e.g. `time-limit-exceeded`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TimeLimitExceeded => "time-limit-exceeded",
            Self::FuelExhausted => "fuel-exhausted",
            Self::MemoryLimitExceeded => "memory-limit-exceeded",
            Self::Trap => "trap",
            Self::BadOutput => "bad-output",
            Self::PluginError => "plugin-error",
            Self::RetryRequested => "retry-requested",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::UnknownTask => "unknown-task",
            Self::InvalidArgs => "invalid-args",
            Self::PluginLoad => "plugin-load",
        }
    }

    /// Whether running the same job again could succeed. Fuel, memory and
    /// output failures are deterministic: a retry would fail the same way.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::TimeLimitExceeded
                | Self::Trap
                | Self::PluginError
                | Self::RetryRequested
                | Self::PluginLoad
        )
    }

    /// A distinct process exit code per kind, for scripts (`xylem run`).
    pub fn exit_code(self) -> i32 {
        match self {
            Self::PluginError => 10,
            Self::RetryRequested => 11,
            Self::Rejected => 12,
            Self::TimeLimitExceeded => 20,
            Self::FuelExhausted => 21,
            Self::MemoryLimitExceeded => 22,
            Self::Trap => 23,
            Self::BadOutput => 24,
            Self::Cancelled => 25,
            Self::UnknownTask => 30,
            Self::InvalidArgs => 31,
            Self::PluginLoad => 32,
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed run: what kind of failure, and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The failure's kind.
    pub kind: FailureKind,
    /// What happened, in words.
    pub message: String,
    /// For `retry-requested`: the delay the task asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay_ms: Option<u64>,
}

impl Failure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry_delay_ms: None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Resources one run used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Fuel consumed (deterministic for the same task and input).
    pub fuel: u64,
    /// Wall-clock time from instantiation to the end of the call, in µs.
    pub wall_time_us: u64,
    /// Peak linear memory, in bytes.
    pub peak_memory: u64,
}

impl Usage {
    /// The wall time as a [`Duration`].
    pub fn wall_time(&self) -> Duration {
        Duration::from_micros(self.wall_time_us)
    }
}

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very fine detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal information.
    Info,
    /// Something unexpected.
    Warn,
    /// Something failed.
    Error,
    /// A line the guest wrote to standard output.
    Stdout,
    /// A line the guest wrote to standard error.
    Stderr,
}

/// One line of a run's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// Severity or stream.
    pub level: LogLevel,
    /// The text.
    pub message: String,
}

/// A progress report from a running task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0.0 to 100.0.
    pub percent: f32,
    /// Optional words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Everything one run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The JSON result, when the run succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The failure, when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// Resources used.
    pub usage: Usage,
    /// Whether the soft time limit passed during the run.
    #[serde(default)]
    pub soft_limit_reached: bool,
    /// The last progress report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// The run's log: `log` calls, stdout and stderr, capped in size.
    #[serde(default)]
    pub log: Vec<LogLine>,
    /// Whether log output was dropped because of the cap.
    #[serde(default)]
    pub log_truncated: bool,
}

impl Outcome {
    /// A successful outcome.
    pub fn success(result: Value, usage: Usage) -> Self {
        Self {
            result: Some(result),
            error: None,
            usage,
            soft_limit_reached: false,
            progress: None,
            log: Vec::new(),
            log_truncated: false,
        }
    }

    /// A failed outcome.
    pub fn failure(failure: Failure, usage: Usage) -> Self {
        Self {
            result: None,
            error: Some(failure),
            usage,
            soft_limit_reached: false,
            progress: None,
            log: Vec::new(),
            log_truncated: false,
        }
    }

    /// Whether the run succeeded.
    pub fn is_success(&self) -> bool {
        self.error.is_none()
    }

    /// The failure kind, if the run failed.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        self.error.as_ref().map(|f| f.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialise_as_kebab_case() {
        let json = serde_json::to_string(&FailureKind::TimeLimitExceeded).unwrap();
        assert_eq!(json, "\"time-limit-exceeded\"");
        for kind in [
            FailureKind::FuelExhausted,
            FailureKind::MemoryLimitExceeded,
            FailureKind::BadOutput,
            FailureKind::PluginError,
        ] {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
    }

    #[test]
    fn deterministic_failures_are_not_retried() {
        assert!(!FailureKind::FuelExhausted.is_retryable());
        assert!(!FailureKind::MemoryLimitExceeded.is_retryable());
        assert!(!FailureKind::BadOutput.is_retryable());
        assert!(!FailureKind::Rejected.is_retryable());
        assert!(FailureKind::TimeLimitExceeded.is_retryable());
        assert!(FailureKind::PluginError.is_retryable());
    }
}
