//! Durable workflows (issue 14, first layer): a run as stored
//! (`model.rs` — its history of calls, the outcomes of its steps, events,
//! lease, timers) and the replay rule (`replay.rs` — a step runs the code
//! from the top; recorded calls are answered from the history, new ones
//! recorded; a call that differs from the history stops the run as
//! nondeterministic). The engine that leases runs and the Wasm side come
//! next.

pub mod engine;
pub mod model;
pub mod replay;

pub use engine::{
    CompleteError, Engine, StartError, StepEnd, UpgradeError, WorkflowCatalog, WorkflowCode,
    complete, deliver, request_cancel, rewind, signal, upgrade,
};
pub use model::{
    ActivityOptions, Call, Event, Lease, ParentStep, Run, RunError, RunState, StepOutcome,
};
pub use replay::{Effect, Interrupt, Replayer, StepResult, step_job_id};
