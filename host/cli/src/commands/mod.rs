//! One module per `xylem` subcommand.

pub(crate) mod bench;
pub(crate) mod bench_workflow;
pub(crate) mod canvas;
pub(crate) mod demo;
pub(crate) mod dlq;
pub(crate) mod enqueue;
pub(crate) mod plugin;
pub(crate) mod queues;
pub(crate) mod run;
pub(crate) mod schedule;
pub(crate) mod task;
pub(crate) mod throughput;
pub(crate) mod worker;
pub(crate) mod workers;
pub(crate) mod workflow;

use xylem_wasm::{Runtime, RuntimeConfig};

/// The Wasm runtime with the default configuration.
pub(crate) fn wasm_runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig::default())?)
}
