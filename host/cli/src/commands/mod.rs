//! One module per `xylem` subcommand.

pub(crate) mod bench;
pub(crate) mod plugin;
pub(crate) mod run;

use xylem_wasm::{Runtime, RuntimeConfig};

/// The Wasm runtime with the default configuration.
pub(crate) fn wasm_runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig::default())?)
}
