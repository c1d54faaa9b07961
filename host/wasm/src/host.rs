//! The `xylem:task/host` imports: what a running task may ask of the host.

use std::time::Instant;

use xylem_core::{ChildOptions, LogLevel, Progress};

use crate::bindings::xylem::task::{host, types};
use crate::bindings::{WitEnqueueOptions, WitLevel};
use crate::state::JobState;

/// Longest single log message kept; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 8 * 1024;

fn level(level: WitLevel) -> LogLevel {
    match level {
        WitLevel::Trace => LogLevel::Trace,
        WitLevel::Debug => LogLevel::Debug,
        WitLevel::Info => LogLevel::Info,
        WitLevel::Warn => LogLevel::Warn,
        WitLevel::Error => LogLevel::Error,
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

impl types::Host for JobState {}

impl host::Host for JobState {
    async fn log(&mut self, lvl: WitLevel, message: String) {
        // Cut to the longest line and charged to the run's log budget in
        // log.rs; past the budget it is only counted.
        self.log.push(level(lvl), message);
    }

    async fn progress(&mut self, percent: f32, message: Option<String>) {
        let percent = if percent.is_finite() {
            percent.clamp(0.0, 100.0)
        } else {
            0.0
        };
        let progress = Progress {
            percent,
            message: message.map(|m| truncate(m, MAX_LOG_MESSAGE)),
        };
        self.host.progress(&self.info, &progress);
        self.progress = Some(progress);
    }

    async fn heartbeat(&mut self) {
        self.host.heartbeat(&self.info);
    }

    async fn cancelled(&mut self) -> bool {
        self.note_soft_deadline(Instant::now());
        self.soft_limit_reached || self.cancel.is_cancelled()
    }

    async fn enqueue(
        &mut self,
        name: String,
        args: String,
        options: Option<WitEnqueueOptions>,
    ) -> Result<String, String> {
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&args) {
            return Err(format!("args for `{name}` are not valid JSON: {e}"));
        }
        let options = options
            .map(|o| ChildOptions {
                queue: o.queue,
                priority: o.priority,
                delay_ms: o.delay_ms,
                max_retries: o.max_retries,
            })
            .unwrap_or_default();
        let host = self.host.clone();
        let parent = self.info.clone();
        host.enqueue(&parent, &name, &args, options).await
    }
}
