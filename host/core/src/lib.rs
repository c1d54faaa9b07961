//! Xylem's core: the task model and the contracts the rest of the system
//! plugs into.
//!
//! This crate is pure logic: it never imports wasmtime or a database
//! driver. The Wasm runtime (`xylem-wasm`) implements [`Executor`]; the
//! storage adapters implement the store traits.

pub mod executor;
pub mod limits;
pub mod outcome;
pub mod spec;

pub use executor::{
    CancelToken, ChildOptions, Executor, HostCalls, NoHostCalls, RunRequest, TaskInfo,
};
pub use limits::{Limits, LimitsError};
pub use outcome::{Failure, FailureKind, LogLevel, LogLine, Outcome, Progress, Usage};
pub use spec::{TaskOptions, TaskSpec};
