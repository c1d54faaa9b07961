//! Durable workflows (`docs/workflows.md`): a run as stored (`model.rs` —
//! its history of calls, the outcomes of its steps, events, lease,
//! timers), the replay rule (`replay.rs` — a step runs the code from the
//! top; recorded calls are answered from the history, new ones recorded; a
//! call that differs from the history stops the run as nondeterministic)
//! and the engine (`engine.rs` — runs leased to one engine at a time,
//! stepped, their effects carried out, outcomes delivered; `delivery.rs`
//! — a worker's activities' ends given to their runs in batches;
//! `handoff.rs` — a run given its outcome in memory and handed, unwritten,
//! to this process's engine, whose step's write records it; `tree.rs`
//! — the runs a tree of runs may start). The code a
//! step runs is a Wasm component (`xylem_wasm::WorkflowPlugin`) or, in
//! tests, Rust closures.

pub(crate) mod delivery;
pub mod engine;
pub(crate) mod handoff;
pub mod model;
pub mod replay;
pub mod tree;

pub use engine::{
    Background, CompleteError, Engine, StartError, StartOptions, StepEnd, UpgradeError,
    WorkflowCatalog, WorkflowCode, complete, deliver, request_cancel, request_cancel_within,
    rewind, signal, upgrade,
};
pub use model::{
    ActivityOptions, Call, Event, Lease, ParentStep, Run, RunError, RunState, StepOutcome,
};
pub use replay::{Effect, Interrupt, Replayer, StepResult, step_job_id};
pub use tree::RunTree;
