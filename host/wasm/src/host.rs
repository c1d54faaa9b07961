//! The `xylem:task/host` imports: what a running task may ask of the host.

use std::time::Instant;

use xylem_core::callback::Callback;
use xylem_core::unique::Unique;
use xylem_core::{ChildEnqueueError, ChildOptions, JobOptions, LogLevel, Progress};

use crate::bindings::xylem::task::{host, types};
use crate::bindings::{WitCallback, WitEnqueueError, WitEnqueueOptions, WitEnqueued, WitLevel};
use crate::state::JobState;

/// Longest single log message kept; longer ones are cut.
const MAX_LOG_MESSAGE: usize = 8 * 1024;

/// What a host call costs the guest in fuel, on top of the instructions it
/// runs: roughly what the host spends on it, so a loop of calls ends at
/// the run's fuel budget like any other loop (see `docs/sandbox.md`).
/// `log`, `progress` and `heartbeat` cost this much per call...
pub(crate) const CALL_FUEL: u64 = 50_000;
/// ...plus this much per byte of text handed over.
pub(crate) const BYTE_FUEL: u64 = 10;
/// `cancelled` is meant to be polled in a loop: it costs little.
pub(crate) const CANCELLED_FUEL: u64 = 1_000;
/// `enqueue` writes to the job store.
pub(crate) const ENQUEUE_FUEL: u64 = 5_000_000;

fn text_fuel(text: &str) -> u64 {
    (text.len() as u64).saturating_mul(BYTE_FUEL)
}

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
        self.charge_fuel(CALL_FUEL + text_fuel(&message));
        // Cut to the longest line and charged to the run's log budget in
        // log.rs; past the budget it is only counted.
        self.log.push(level(lvl), message);
    }

    async fn progress(&mut self, percent: f32, message: Option<String>) {
        self.charge_fuel(CALL_FUEL + message.as_deref().map_or(0, text_fuel));
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
        self.charge_fuel(CALL_FUEL);
        self.host.heartbeat(&self.info);
    }

    async fn cancelled(&mut self) -> bool {
        self.charge_fuel(CANCELLED_FUEL);
        self.note_soft_deadline(Instant::now());
        self.soft_limit_reached || self.cancel.is_requested()
    }

    async fn enqueue(
        &mut self,
        name: String,
        args: String,
        options: Option<WitEnqueueOptions>,
    ) -> Result<WitEnqueued, WitEnqueueError> {
        let option_bytes = options.as_ref().map_or(0, option_text_fuel);
        self.charge_fuel(ENQUEUE_FUEL + text_fuel(&args) + text_fuel(&name) + option_bytes);
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&args) {
            return Err(WitEnqueueError::InvalidArguments(format!(
                "args for `{name}` are not valid JSON: {e}"
            )));
        }
        let options = options.map(child_options).unwrap_or_default();
        let host = self.host.clone();
        let parent = self.info.clone();
        host.enqueue(&parent, &name, &args, options)
            .await
            .map(|done| WitEnqueued {
                id: done.id,
                duplicate: done.duplicate,
            })
            .map_err(wit_enqueue_error)
    }

    async fn submit_canvas(&mut self, definition: String) -> Result<String, WitEnqueueError> {
        // Each of its tasks is then charged to the run's child quota.
        self.charge_fuel(ENQUEUE_FUEL + text_fuel(&definition));
        let host = self.host.clone();
        let parent = self.info.clone();
        host.submit_canvas(&parent, &definition)
            .await
            .map_err(wit_enqueue_error)
    }
}

/// A refused child enqueue, as the WIT says it.
fn wit_enqueue_error(e: ChildEnqueueError) -> WitEnqueueError {
    match e {
        ChildEnqueueError::QuotaExceeded(m) => WitEnqueueError::QuotaExceeded(m),
        ChildEnqueueError::UnknownTask(m) => WitEnqueueError::UnknownTask(m),
        ChildEnqueueError::InvalidArguments(m) => WitEnqueueError::InvalidArguments(m),
        ChildEnqueueError::Unavailable(m) => WitEnqueueError::Unavailable(m),
    }
}

/// Fuel for the text an enqueue's options carry (queue, unique key,
/// callbacks' task, arguments and queue).
fn option_text_fuel(o: &WitEnqueueOptions) -> u64 {
    let callback = |c: &Option<WitCallback>| {
        c.as_ref().map_or(0, |c| {
            text_fuel(&c.task)
                + c.args.as_deref().map_or(0, text_fuel)
                + c.queue.as_deref().map_or(0, text_fuel)
        })
    };
    o.queue.as_deref().map_or(0, text_fuel)
        + o.unique
            .as_ref()
            .and_then(|u| u.key.as_deref())
            .map_or(0, text_fuel)
        + callback(&o.link)
        + callback(&o.link_error)
}

/// The options of a child job, as the job system takes them.
fn child_options(o: WitEnqueueOptions) -> ChildOptions {
    let callback = |c: WitCallback| Callback {
        id: String::new(),
        task: c.task,
        args: c.args,
        queue: c.queue,
        priority: c.priority,
    };
    ChildOptions {
        queue: o.queue,
        priority: o.priority,
        delay_ms: o.delay_ms,
        max_retries: o.max_retries,
        expires_ms: o.expires_ms,
        options: JobOptions {
            retry_backoff_ms: o.retry_backoff_ms,
            retry_backoff_max_ms: o.retry_backoff_max_ms,
            retry_jitter: o.retry_jitter,
            soft_time_limit_ms: o.soft_time_limit_ms,
            hard_time_limit_ms: o.hard_time_limit_ms,
            fuel: o.fuel,
            max_memory_bytes: o.max_memory_bytes,
            visibility_timeout_ms: o.visibility_timeout_ms,
            ignore_result: o.ignore_result,
            link: o.link.map(callback),
            link_error: o.link_error.map(callback),
            child_quota: Default::default(),
        },
        unique: o.unique.map(|u| Unique {
            key: u.key,
            ttl: std::time::Duration::from_millis(u.ttl_ms),
        }),
    }
}
