//! A workflow run as stored: what it runs, where it stands, and every call
//! it made (its history), with the outcomes of the steps that ended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::Millis;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Runnable, or being run by an engine (see its lease).
    Running,
    /// Waiting for a step to end, a timer or an event.
    Waiting,
    /// Ended with a result.
    Succeeded,
    /// Ended with an error (the workflow's, or `nondeterministic`).
    Failed,
    /// Ended after a cancel request.
    Cancelled,
}

impl RunState {
    /// True for the states a run never leaves (but by rewind or retry).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The state's name, as stored and listed.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// How an activity's job is enqueued (unset: the task's defaults).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityOptions {
    /// Queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Priority, 0-9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Retries before the activity fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// First retry delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_backoff_ms: Option<u64>,
    /// Hard time limit of a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_time_limit_ms: Option<u64>,
    /// Fuel of a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// One call a run made to the host, as recorded. The fields a replay must
/// repeat are the request; `until`, `deadline`, `value` and `got` are the
/// host's answer, recorded the first time and given back on replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub enum Call {
    /// Run a task and wait for it.
    Activity {
        /// The task.
        task: String,
        /// Its arguments (JSON text).
        args: String,
        /// How its job is enqueued.
        #[serde(default)]
        options: ActivityOptions,
    },
    /// Run a child workflow and wait for it.
    Child {
        /// The workflow.
        workflow: String,
        /// Its input (JSON text).
        input: String,
    },
    /// Start a workflow run that begins at a given time, independent of
    /// this one (this run does not wait for it); answered with its id
    /// once it exists.
    ScheduleAt {
        /// The workflow.
        workflow: String,
        /// Its input (JSON text).
        input: String,
        /// When it begins, in ms since the epoch (a time past: at once).
        at: Millis,
    },
    /// A step nothing runs: its result is given from outside
    /// (`engine::complete`).
    Stub {
        /// What it stands for, e.g. `approval`.
        name: String,
        /// What it was given (JSON text).
        args: String,
    },
    /// Open a join set (its id is this call's sequence number).
    JoinSet,
    /// Submit a step to a join set (its step id is this call's number).
    Submit {
        /// The set.
        set: u32,
        /// The step: an `activity` or a `child`.
        step: Box<Call>,
    },
    /// Wait for the next step of a set to end.
    AwaitNext {
        /// The set.
        set: u32,
        /// The step that ended (`None`: the set had none left).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        got: Option<u32>,
    },
    /// Close a set, cancelling what is pending in it.
    CloseSet {
        /// The set.
        set: u32,
    },
    /// Sleep.
    Sleep {
        /// For how long.
        ms: u64,
        /// Until when (the answer: now + ms when first made).
        until: Millis,
    },
    /// Wait for an event.
    AwaitEvent {
        /// Its topic.
        topic: String,
        /// How long at most.
        timeout_ms: u64,
        /// Until when (the answer: now + timeout when first made).
        deadline: Millis,
    },
    /// Read the time.
    Now {
        /// The answer.
        value: Millis,
    },
    /// Draw a random number.
    Random {
        /// The answer.
        value: u64,
    },
    /// Publish an event of the run's own.
    Emit {
        /// Topic.
        topic: String,
        /// Payload.
        payload: String,
    },
    /// Set the queryable state.
    SetState {
        /// The state (JSON text).
        state: String,
    },
    /// End the run and go on in a new one with this input.
    ContinueAsNew {
        /// The new run's input (JSON text).
        input: String,
    },
    /// Ask whether the run was asked to cancel.
    Cancelled {
        /// The answer.
        value: bool,
    },
}

impl Call {
    /// Whether `other` asks the same of the host as this recorded call
    /// (answers aside): what replay checks.
    pub fn same_request(&self, other: &Call) -> bool {
        match (self, other) {
            (Self::Sleep { ms: a, .. }, Self::Sleep { ms: b, .. }) => a == b,
            (
                Self::AwaitEvent {
                    topic: a,
                    timeout_ms: ta,
                    ..
                },
                Self::AwaitEvent {
                    topic: b,
                    timeout_ms: tb,
                    ..
                },
            ) => a == b && ta == tb,
            (Self::Now { .. }, Self::Now { .. })
            | (Self::Random { .. }, Self::Random { .. })
            | (Self::Cancelled { .. }, Self::Cancelled { .. }) => true,
            (Self::AwaitNext { set: a, .. }, Self::AwaitNext { set: b, .. }) => a == b,
            (a, b) => a == b,
        }
    }

    /// The call in a line, for errors and timelines.
    pub fn describe(&self) -> String {
        match self {
            Self::Activity { task, args, .. } => format!("activity {task}({args})"),
            Self::Child { workflow, input } => format!("child workflow {workflow}({input})"),
            Self::Stub { name, args } => format!("stub {name}({args})"),
            Self::ScheduleAt {
                workflow,
                input,
                at,
            } => format!(
                "schedule workflow {workflow}({input}) at {}",
                crate::time::format_ms(*at)
            ),
            Self::JoinSet => "join-set".to_owned(),
            Self::Submit { set, step } => format!("submit to set {set}: {}", step.describe()),
            Self::AwaitNext { set, .. } => format!("await-next of set {set}"),
            Self::CloseSet { set } => format!("close set {set}"),
            Self::Sleep { ms, .. } => format!("sleep {ms} ms"),
            Self::AwaitEvent {
                topic, timeout_ms, ..
            } => format!("await-event {topic} (timeout {timeout_ms} ms)"),
            Self::Now { .. } => "now".to_owned(),
            Self::Random { .. } => "random".to_owned(),
            Self::Emit { topic, .. } => format!("emit {topic}"),
            Self::SetState { .. } => "set-state".to_owned(),
            Self::Cancelled { .. } => "cancelled".to_owned(),
            Self::ContinueAsNew { input } => format!("continue-as-new({input})"),
        }
    }
}

/// How a step (an activity, a child run, a timer, an event wait) ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum StepOutcome {
    /// With a value (JSON text; an event's payload; `null` for a timer).
    Ok {
        /// The value.
        value: String,
        /// When it ended.
        at: Millis,
    },
    /// With a failure.
    Err {
        /// `rejected`, `dead`, `cancelled`, `failed`, `timeout`, ...
        kind: String,
        /// What was said.
        message: String,
        /// When it ended.
        at: Millis,
    },
}

/// An event sent to a run (`xylem workflow signal`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Topic.
    pub topic: String,
    /// Payload (JSON text).
    pub payload: String,
    /// When it arrived.
    pub at: Millis,
    /// The `await-event` call that took it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<u32>,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunError {
    /// `failed` (the workflow returned an error), `nondeterministic`,
    /// `trap`, `unknown-workflow`, ...
    pub kind: String,
    /// In words.
    pub message: String,
}

/// Which engine holds a run, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The engine (worker name).
    pub owner: String,
    /// When it lapses.
    pub until: Millis,
}

/// The step of a parent run a child run answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentStep {
    /// The parent's id.
    pub run: String,
    /// The call of the parent that started this run.
    pub seq: u32,
}

/// A workflow run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Its id (a UUIDv7 unless given).
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The plugin version it runs on, pinned at start (sha256).
    pub plugin: String,
    /// Its input (JSON text).
    pub input: String,
    /// Where it stands.
    pub state: RunState,
    /// Its result, once succeeded (JSON text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// Every call it made, in order.
    #[serde(default)]
    pub history: Vec<Call>,
    /// How the steps that ended ended, by call number.
    #[serde(default)]
    pub outcomes: BTreeMap<u32, StepOutcome>,
    /// Events sent to it.
    #[serde(default)]
    pub events: Vec<Event>,
    /// Its queryable state (`set-state`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_state: Option<String>,
    /// The parent step it answers, for a child run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentStep>,
    /// The tree it belongs to, if a run started it (`None`: a root, under
    /// the engine's limit of runs per tree; see `tree.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<super::tree::RunTree>,
    /// The run's own clock for WASI: its start, the same on every replay.
    pub clock: Millis,
    /// When it was started.
    pub created_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
    /// When an engine should look at it next (`None`: only when something
    /// happens to it). A leased run's is its lease's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<Millis>,
    /// The engine running it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Why it was asked to cancel, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<String>,
    /// Until when a cancelled run may compensate: past it the run ends
    /// `cancelled` without its code running again, what it waits for
    /// cancelled (`None`: as long as its code takes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_deadline: Option<Millis>,
    /// The run this one went on in (`continue-as-new`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continued_as: Option<String>,
    /// The trace context it was started in (W3C `traceparent`,
    /// `tracestate`): its steps, activities and children are in that
    /// trace (see `telemetry::trace`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<(String, String)>,
    /// Bumped by every rewind: a step made again after a rewind is a new
    /// job (see `replay::step_job_id`).
    #[serde(default)]
    pub epoch: u32,
    /// Bumped by every write (compare-and-set, as schedules).
    #[serde(default)]
    pub version: u64,
    /// A fresh mark written by every step of its code (see
    /// [`super::Replayer::mark`]): an instance kept from the step that
    /// wrote it may go on where it stopped; any other mark means another
    /// step (or none) was written since, and the code is replayed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step_mark: String,
}

impl Run {
    /// A new run of `workflow` on plugin version `plugin`, due at once.
    pub fn new(
        id: impl Into<String>,
        workflow: impl Into<String>,
        plugin: impl Into<String>,
        input: impl Into<String>,
        now: Millis,
    ) -> Self {
        Self {
            id: id.into(),
            workflow: workflow.into(),
            plugin: plugin.into(),
            input: input.into(),
            state: RunState::Running,
            result: None,
            error: None,
            history: Vec::new(),
            outcomes: BTreeMap::new(),
            events: Vec::new(),
            query_state: None,
            parent: None,
            tree: None,
            clock: now,
            created_at: now,
            updated_at: now,
            wake_at: Some(now),
            lease: None,
            cancel_requested: None,
            cancel_deadline: None,
            continued_as: None,
            trace: Vec::new(),
            epoch: 0,
            version: 0,
            step_mark: String::new(),
        }
    }
}
