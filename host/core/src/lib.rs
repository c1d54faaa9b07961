//! Xylem's core: the task model and the contracts the rest of the system
//! plugs into.
//!
//! This crate is pure logic: it never imports wasmtime or a database
//! driver. The Wasm runtime (`xylem-wasm`) implements [`Executor`]; the
//! storage adapters implement the store traits.

pub mod args_schema;
pub mod callback;
pub mod cancel;
pub mod canvas;
pub mod client;
pub mod codec;
pub mod concurrency;
pub mod envelope;
pub mod executor;
mod keyed;
pub mod limits;
pub mod lineage;
pub mod memory;
pub mod outcome;
pub mod presence;
pub mod queue_control;
pub mod rate_limit;
pub mod record;
pub mod retry;
pub mod schedule;
pub mod spec;
pub mod store;
pub mod store_url;
pub mod telemetry;
pub mod time;
pub mod unique;
pub mod worker;
pub mod workflow;

pub use client::{Client, ClientError, EnqueueRequest};
pub use envelope::{Envelope, JobOptions};
pub use executor::{
    CancelToken, ChildEnqueued, ChildOptions, Executor, HostCalls, NoHostCalls, RunRequest,
    TaskInfo,
};
pub use limits::{Limits, LimitsError};
pub use lineage::{ChildEnqueueError, ChildQuota, ChildQuotaOverrides, Lineage};
pub use outcome::{Failure, FailureKind, LogLevel, LogLine, Outcome, Progress, Usage};
pub use record::{HistoryEntry, TaskFilter, TaskRecord, TaskState, Transition};
pub use spec::{TaskOptions, TaskSpec};
pub use store::{Broker, PluginStore, ResultBackend, StoreError, StoreResult, Stores};
pub use worker::{
    ConfigError, MIN_LEASE, ResolveError, Resolved, TaskRegistry, Worker, WorkerConfig, WorkerStats,
};
