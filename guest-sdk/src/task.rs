//! A task: its name, default options and the typed function that runs it.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::xylem::task::types as wit;
use crate::{Context, TaskError};

type Handler = Box<dyn Fn(&Context, &str) -> Result<String, TaskError>>;

/// One task of a plugin. Build it with [`Task::new`] and the option setters.
pub struct Task {
    spec: wit::TaskSpec,
    handler: Handler,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("name", &self.spec.name)
            .finish()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Task {
    /// A task named `name` run by `f`, which takes the job's JSON arguments
    /// as `A` and returns a result serialised to JSON. Arguments that do not
    /// parse as `A` reject the job with the parse error.
    pub fn new<A, R, F>(name: &str, f: F) -> Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(&Context, A) -> Result<R, TaskError> + 'static,
    {
        let task_name = name.to_owned();
        let handler = move |ctx: &Context, args: &str| {
            let args: A = serde_json::from_str(args).map_err(|e| {
                TaskError::reject(format!("invalid arguments for `{task_name}`: {e}"))
            })?;
            let result = f(ctx, args)?;
            serde_json::to_string(&result)
                .map_err(|e| TaskError::reject(format!("cannot encode the result: {e}")))
        };
        Self {
            spec: wit::TaskSpec {
                name: name.to_owned(),
                description: None,
                options: wit::TaskOptions {
                    queue: None,
                    priority: None,
                    max_retries: None,
                    retry_backoff_ms: None,
                    retry_backoff_max_ms: None,
                    soft_time_limit_ms: None,
                    hard_time_limit_ms: None,
                    fuel: None,
                    max_memory_bytes: None,
                    rate_limit: None,
                    retry_jitter: None,
                    visibility_timeout_ms: None,
                    expires_ms: None,
                    unique_for_ms: None,
                    ignore_result: None,
                },
                args_schema: None,
            },
            handler: Box::new(handler),
        }
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// One line shown by `xylem tasks` and `xylem plugin inspect`.
    pub fn description(mut self, text: &str) -> Self {
        self.spec.description = Some(text.to_owned());
        self
    }

    /// Default queue.
    pub fn queue(mut self, queue: &str) -> Self {
        self.spec.options.queue = Some(queue.to_owned());
        self
    }

    /// Default priority, 0 (lowest) to 9 (highest).
    pub fn priority(mut self, priority: u8) -> Self {
        self.spec.options.priority = Some(priority.min(9));
        self
    }

    /// Default number of retries.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.spec.options.max_retries = Some(retries);
        self
    }

    /// Retry delay: `base` doubled each attempt, never more than `max`.
    pub fn retry_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.spec.options.retry_backoff_ms = Some(millis(base));
        self.spec.options.retry_backoff_max_ms = Some(millis(max));
        self
    }

    /// After this, [`Context::cancelled`] returns true.
    pub fn soft_time_limit(mut self, limit: Duration) -> Self {
        self.spec.options.soft_time_limit_ms = Some(millis(limit));
        self
    }

    /// After this, the run is stopped.
    pub fn hard_time_limit(mut self, limit: Duration) -> Self {
        self.spec.options.hard_time_limit_ms = Some(millis(limit));
        self
    }

    /// Fuel budget of one run.
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.spec.options.fuel = Some(fuel);
        self
    }

    /// Most memory one run may use, in bytes.
    pub fn max_memory(mut self, bytes: u64) -> Self {
        self.spec.options.max_memory_bytes = Some(bytes);
        self
    }

    /// Rate limit: at most N starts per second, minute or hour across every
    /// worker (`20/s`, `100/m`, `5/h`), optionally per value of a job
    /// header (`10/s by tenant`). Jobs over it wait their turn; they do
    /// not fail. A limit that does not parse is refused at push.
    pub fn rate_limit(mut self, limit: &str) -> Self {
        self.spec.options.rate_limit = Some(limit.to_owned());
        self
    }

    /// Whether retry delays are spread at random over ±25 % (default:
    /// yes; no gives exact delays).
    pub fn retry_jitter(mut self, jitter: bool) -> Self {
        self.spec.options.retry_jitter = Some(jitter);
        self
    }

    /// How long a job stays with a worker that stops answering before
    /// another worker may take it (its lease, renewed while it runs; 1 s
    /// to 24 h). Default: the worker's `--lease`.
    pub fn visibility_timeout(mut self, timeout: Duration) -> Self {
        self.spec.options.visibility_timeout_ms = Some(millis(timeout));
        self
    }

    /// A job not started within this of its enqueue is `expired`, never
    /// run.
    pub fn expires(mut self, after: Duration) -> Self {
        self.spec.options.expires_ms = Some(millis(after));
        self
    }

    /// Every job is unique for `ttl`: enqueueing an equal one (same task,
    /// queue and arguments) meanwhile returns the first job's id instead.
    pub fn unique_for(mut self, ttl: Duration) -> Self {
        self.spec.options.unique_for_ms = Some(millis(ttl));
        self
    }

    /// Keep each job's state but not its result value.
    pub fn ignore_result(mut self) -> Self {
        self.spec.options.ignore_result = Some(true);
        self
    }

    /// A JSON Schema the job's arguments must match, as a JSON value
    /// (e.g. built with `serde_json::json!`). Enqueue then refuses
    /// arguments that do not match, with the schema's message, instead of
    /// creating a job that can only be rejected here.
    pub fn args_schema(mut self, schema: serde_json::Value) -> Self {
        self.spec.args_schema = Some(schema.to_string());
        self
    }

    pub(crate) fn to_spec(&self) -> wit::TaskSpec {
        self.spec.clone()
    }

    pub(crate) fn call(&self, ctx: &Context, args: &str) -> Result<String, TaskError> {
        (self.handler)(ctx, args)
    }
}
