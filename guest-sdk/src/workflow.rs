//! Write Xylem workflows in Rust (feature `workflow`).
//!
//! A workflow is a plain function over serde types; each step goes
//! through the [`Ctx`] and is recorded by the host, so the function is
//! replayed from the top whenever the run resumes — after an activity,
//! a durable sleep, an event, a restart of any process. Keep it a pure
//! function of its input and of what `Ctx` returns: read the time with
//! [`Ctx::now`] and draw numbers with [`Ctx::random`] (WASI's clock and
//! random give the same value on every replay; the host refuses nothing,
//! it just does not let them vary).
//!
//! ```ignore
//! use std::time::Duration;
//! use xylem_guest::workflow::{Ctx, Workflow, WorkflowResult};
//!
//! fn process(ctx: &Ctx, order: serde_json::Value) -> WorkflowResult<serde_json::Value> {
//!     let valid: serde_json::Value = ctx.activity("order.validate", &order)?;
//!     let charged: serde_json::Value = ctx.activity("order.charge", &valid)?;
//!     ctx.sleep(Duration::from_secs(86_400));
//!     Ok(ctx.activity("order.ship", &charged)?)
//! }
//!
//! fn workflows() -> Vec<Workflow> {
//!     vec![Workflow::new("order.process", process)]
//! }
//!
//! xylem_guest::export_workflows!(workflows);
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::workflow_bindings::xylem::workflow::types as wit;
use crate::workflow_bindings::xylem::workflow::workflow_host as host;

/// How a step failed: its kind (`rejected`, `dead`, `cancelled`,
/// `refused`, `timeout`, `failed`, ...) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// The kind.
    pub kind: String,
    /// What was said.
    pub message: String,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl From<wit::Failure> for StepError {
    fn from(f: wit::Failure) -> Self {
        Self {
            kind: f.kind,
            message: f.message,
        }
    }
}

/// Why a workflow failed: the run ends `failed` with this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowError(pub String);

impl<E: std::fmt::Display> From<E> for WorkflowError {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// What a workflow function returns.
pub type WorkflowResult<T> = Result<T, WorkflowError>;

/// How an activity's job is enqueued (unset: the task's defaults).
#[derive(Debug, Clone, Default)]
pub struct ActivityOptions {
    /// Queue.
    pub queue: Option<String>,
    /// Priority 0-9.
    pub priority: Option<u8>,
    /// Retries before the activity fails.
    pub max_retries: Option<u32>,
    /// First retry delay.
    pub retry_backoff: Option<Duration>,
    /// Hard time limit of a run.
    pub timeout: Option<Duration>,
    /// Fuel of a run.
    pub fuel: Option<u64>,
    /// Headers.
    pub headers: Vec<(String, String)>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<ActivityOptions> for wit::ActivityOptions {
    fn from(o: ActivityOptions) -> Self {
        Self {
            queue: o.queue,
            priority: o.priority,
            max_retries: o.max_retries,
            retry_backoff_ms: o.retry_backoff.map(ms),
            hard_time_limit_ms: o.timeout.map(ms),
            fuel: o.fuel,
            headers: o.headers,
        }
    }
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T, StepError> {
    serde_json::from_str(text).map_err(|e| StepError {
        kind: "decode".to_owned(),
        message: format!("cannot read the step's result: {e}"),
    })
}

/// What a workflow asks of the host. Every call is recorded.
#[derive(Debug, Default)]
pub struct Ctx {
    _private: (),
}

impl Ctx {
    /// Runs task `task` with `args` and waits for its result.
    pub fn activity<T: DeserializeOwned>(
        &self,
        task: &str,
        args: &impl Serialize,
    ) -> Result<T, StepError> {
        self.activity_with(task, args, ActivityOptions::default())
    }

    /// [`activity`](Self::activity) with options.
    pub fn activity_with<T: DeserializeOwned>(
        &self,
        task: &str,
        args: &impl Serialize,
        options: ActivityOptions,
    ) -> Result<T, StepError> {
        let text = host::activity(task, &to_json(args), &options.into())?;
        from_json(&text)
    }

    /// Runs workflow `name` with `input` as a child run and waits for it
    /// (a child counts against this run's tree's quota of runs, as
    /// [`Self::schedule_at`] does).
    pub fn child<T: DeserializeOwned>(
        &self,
        name: &str,
        input: &impl Serialize,
    ) -> Result<T, StepError> {
        let text = host::child_workflow(name, &to_json(input))?;
        from_json(&text)
    }

    /// Starts workflow `name` with `input` as a run of its own that
    /// begins at `at` (a time past: at once). This run does not wait for
    /// it. Returns the new run's id; fails (kind `refused`) if it cannot be
    /// made — an unknown workflow, say — or (kind `quota-exceeded`) if this
    /// run's tree has started all the runs it may (docs/workflows.md,
    /// *Trees of runs*).
    pub fn schedule_at(
        &self,
        name: &str,
        input: &impl Serialize,
        at: SystemTime,
    ) -> Result<String, StepError> {
        let at_ms = at.duration_since(UNIX_EPOCH).map(ms).unwrap_or(0);
        Ok(host::schedule_at(name, &to_json(input), at_ms)?)
    }

    /// [`Self::schedule_at`] `after` from now (the recorded [`Self::now`],
    /// so a replay schedules the same time).
    pub fn schedule_in(
        &self,
        name: &str,
        input: &impl Serialize,
        after: Duration,
    ) -> Result<String, StepError> {
        self.schedule_at(name, input, self.now() + after)
    }

    /// A stub step: nothing runs it; its result is given from outside
    /// (`xylem workflow complete RUN STEP --result JSON`) — a person's
    /// approval, an outside system's answer. Waits for it.
    pub fn stub<T: DeserializeOwned>(
        &self,
        name: &str,
        args: &impl Serialize,
    ) -> Result<T, StepError> {
        let text = host::stub(name, &to_json(args))?;
        from_json(&text)
    }

    /// A join set: steps submitted to it run in parallel.
    pub fn join_set(&self) -> JoinSet {
        JoinSet(host::join_set())
    }

    /// Sleeps, durably.
    pub fn sleep(&self, duration: Duration) {
        host::sleep(ms(duration));
    }

    /// Waits for an event on `topic` at most `timeout`; `None` on timeout
    /// (or a payload that is not a `T`).
    pub fn await_event<T: DeserializeOwned>(&self, topic: &str, timeout: Duration) -> Option<T> {
        host::await_event(topic, ms(timeout)).and_then(|text| serde_json::from_str(&text).ok())
    }

    /// The time (recorded: the same on replay).
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(host::now())
    }

    /// A random number (recorded).
    pub fn random(&self) -> u64 {
        host::random()
    }

    /// Publishes `payload` on `topic`.
    pub fn emit(&self, topic: &str, payload: &impl Serialize) {
        host::emit(topic, &to_json(payload));
    }

    /// Sets the run's queryable state.
    pub fn set_state(&self, state: &impl Serialize) {
        host::set_state(&to_json(state));
    }

    /// True once the run was asked to cancel: compensate, then return.
    pub fn cancelled(&self) -> bool {
        host::cancelled()
    }

    /// Ends this run and goes on in a new run of the same workflow with
    /// `input`, on the latest version — how a long-lived workflow keeps its
    /// history short (a run holds at most 10,000 calls). Use it as
    /// `return ctx.continue_as_new(&next);`: the host stops the run here.
    pub fn continue_as_new<T>(&self, input: &impl Serialize) -> WorkflowResult<T> {
        host::continue_as_new(&to_json(input));
        Err(WorkflowError(
            "continue-as-new did not stop the run".to_owned(),
        ))
    }

    /// Logs a line (not on replay).
    pub fn log_info(&self, message: &str) {
        host::log(wit::Level::Info, message);
    }
}

/// Steps run in parallel; [`JoinSet::next`] returns them as they end.
#[derive(Debug)]
pub struct JoinSet(u32);

impl JoinSet {
    /// Submits an activity; returns its step id.
    pub fn submit(&self, task: &str, args: &impl Serialize) -> u32 {
        host::submit_activity(
            self.0,
            task,
            &to_json(args),
            &ActivityOptions::default().into(),
        )
    }

    /// Submits a child workflow; returns its step id.
    pub fn submit_child(&self, name: &str, input: &impl Serialize) -> u32 {
        host::submit_child(self.0, name, &to_json(input))
    }

    /// The next step to end, with its result; `None` when all returned.
    pub fn next<T: DeserializeOwned>(&self) -> Option<(u32, Result<T, StepError>)> {
        host::await_next(self.0).map(|r| {
            let result = r
                .outcome
                .map_err(StepError::from)
                .and_then(|text| from_json(&text));
            (r.step, result)
        })
    }

    /// Closes the set: what is still pending in it is cancelled.
    pub fn close(self) {
        host::close_set(self.0);
    }
}

type Handler = Box<dyn Fn(&Ctx, &str) -> Result<String, String>>;

/// One workflow of a plugin.
pub struct Workflow {
    name: String,
    description: Option<String>,
    handler: Handler,
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("name", &self.name)
            .finish()
    }
}

impl Workflow {
    /// A workflow named `name` run by `f` over its input `I`.
    pub fn new<I, O, F>(name: &str, f: F) -> Self
    where
        I: DeserializeOwned,
        O: Serialize,
        F: Fn(&Ctx, I) -> WorkflowResult<O> + 'static,
    {
        let workflow = name.to_owned();
        let handler = move |ctx: &Ctx, input: &str| {
            let input: I = serde_json::from_str(input)
                .map_err(|e| format!("invalid input for `{workflow}`: {e}"))?;
            let output = f(ctx, input).map_err(|e| e.0)?;
            serde_json::to_string(&output).map_err(|e| format!("cannot encode the result: {e}"))
        };
        Self {
            name: name.to_owned(),
            description: None,
            handler: Box::new(handler),
        }
    }

    /// Sets its description.
    pub fn description(mut self, text: &str) -> Self {
        self.description = Some(text.to_owned());
        self
    }
}

/// What [`export_workflows!`](crate::export_workflows) expands to call.
#[doc(hidden)]
pub mod __private {
    use super::{Ctx, Workflow};
    use crate::workflow_bindings::xylem::workflow::types as wit;

    pub fn describe(workflows: &[Workflow]) -> Vec<wit::WorkflowSpec> {
        workflows
            .iter()
            .map(|w| wit::WorkflowSpec {
                name: w.name.clone(),
                description: w.description.clone(),
            })
            .collect()
    }

    pub fn run(workflows: &[Workflow], name: &str, input: &str) -> Result<String, String> {
        match workflows.iter().find(|w| w.name == name) {
            Some(w) => (w.handler)(&Ctx::default(), input),
            None => Err(format!("this plugin has no workflow named `{name}`")),
        }
    }
}
