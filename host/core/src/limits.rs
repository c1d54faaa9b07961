//! Per-run resource limits: time, fuel, memory and output size.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a limit given as text could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// A size such as `64MiB` did not parse.
    #[error("invalid size `{input}`: {reason} (try e.g. 64MiB or 1048576)")]
    Size {
        /// What was given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// A duration such as `5s` did not parse.
    #[error("invalid duration `{input}`: {reason} (try e.g. 500ms, 5s or 2m)")]
    Duration {
        /// What was given.
        input: String,
        /// Why it was refused.
        reason: String,
    },
}

/// The limits one run of a task is held to. Every run gets all of them:
/// an unset option takes the default of [`Limits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock time after which the run is stopped.
    #[serde(with = "humantime_serde_compat")]
    pub hard_time_limit: Duration,
    /// Wall-clock time after which `cancelled()` returns true.
    #[serde(with = "humantime_serde_compat::option")]
    pub soft_time_limit: Option<Duration>,
    /// Fuel budget (about one unit per Wasm instruction).
    pub fuel: u64,
    /// Most linear memory the run may grow to, in bytes.
    pub max_memory: u64,
    /// Largest result, in bytes of JSON.
    pub max_output: u64,
    /// Most bytes of log (stdout, stderr and `log` calls together) kept
    /// per run. Each entry is charged its text plus a fixed overhead (64
    /// bytes), so empty lines are not free.
    pub max_log: u64,
    /// Most log entries (lines of stdout/stderr and `log` calls together,
    /// the closing "more lines dropped" summary included) kept per run.
    #[serde(default = "default_max_log_entries")]
    pub max_log_entries: u64,
}

fn default_max_log_entries() -> u64 {
    Limits::DEFAULT_MAX_LOG_ENTRIES
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hard_time_limit: Duration::from_secs(300),
            soft_time_limit: None,
            fuel: 50_000_000_000,
            max_memory: 128 * 1024 * 1024,
            max_output: 1024 * 1024,
            max_log: 64 * 1024,
            max_log_entries: Self::DEFAULT_MAX_LOG_ENTRIES,
        }
    }
}

impl Limits {
    /// The default of [`Limits::max_log_entries`].
    pub const DEFAULT_MAX_LOG_ENTRIES: u64 = 10_000;

    /// Applies a task's declared defaults over these limits.
    pub fn with_options(mut self, options: &crate::TaskOptions) -> Self {
        if let Some(ms) = options.hard_time_limit_ms {
            self.hard_time_limit = Duration::from_millis(ms);
        }
        if let Some(ms) = options.soft_time_limit_ms {
            self.soft_time_limit = Some(Duration::from_millis(ms));
        }
        if let Some(fuel) = options.fuel {
            self.fuel = fuel;
        }
        if let Some(bytes) = options.max_memory_bytes {
            self.max_memory = bytes;
        }
        self
    }
}

/// Parses a byte size: `1048576`, `64MiB`, `512 KB`, `1g`.
pub fn parse_size(input: &str) -> Result<u64, LimitsError> {
    input
        .trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|reason| LimitsError::Size {
            input: input.to_owned(),
            reason,
        })
}

/// Parses a duration: `500ms`, `5s`, `2m`, `1h 30m`.
pub fn parse_duration(input: &str) -> Result<Duration, LimitsError> {
    humantime::parse_duration(input.trim()).map_err(|e| LimitsError::Duration {
        input: input.to_owned(),
        reason: e.to_string(),
    })
}

/// Durations as human text (`"5s"`) in JSON.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    pub(super) mod option {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 * 1024 * 1024);
        assert_eq!(parse_size("1048576").unwrap(), 1024 * 1024);
        assert_eq!(parse_size("2 KiB").unwrap(), 2048);
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        let err = parse_duration("soon").unwrap_err().to_string();
        assert!(err.contains("soon"), "{err}");
    }

    #[test]
    fn task_options_override_defaults() {
        let opts = crate::TaskOptions {
            hard_time_limit_ms: Some(1500),
            fuel: Some(42),
            ..Default::default()
        };
        let limits = Limits::default().with_options(&opts);
        assert_eq!(limits.hard_time_limit, Duration::from_millis(1500));
        assert_eq!(limits.fuel, 42);
        assert_eq!(limits.max_memory, Limits::default().max_memory);
    }

    #[test]
    fn limits_round_trip_as_json() {
        let limits = Limits {
            soft_time_limit: Some(Duration::from_secs(2)),
            ..Limits::default()
        };
        let json = serde_json::to_string(&limits).unwrap();
        assert!(json.contains("\"2s\""), "{json}");
        assert_eq!(serde_json::from_str::<Limits>(&json).unwrap(), limits);
    }
}
