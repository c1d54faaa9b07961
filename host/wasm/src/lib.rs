//! Xylem's WebAssembly runtime.
//!
//! One [`Runtime`] per process owns the wasmtime engine (pooling allocator,
//! epoch interruption, fuel), the on-disk cache of precompiled components
//! and the linker that offers plugins the `xylem:task/host` imports and a
//! deny-all WASI. [`Runtime::load`] turns component bytes into a
//! [`Plugin`] ([`Runtime::load_stored`] for a component in the store, whose
//! compiled form may be shared through it: `shared.rs`): validated against the WIT world, described (its tasks and
//! their defaults) and prepared for instantiation once. [`Plugin::run`]
//! runs one job in a fresh `Store` and instance with the job's limits and
//! returns an [`xylem_core::Outcome`], whatever the guest does.

mod bindings;
pub mod build;
mod cache;
mod host;
mod kept;
mod limiter;
mod log;
mod plugin;
mod registry;
mod run;
mod runtime;
mod shared;
mod state;
mod workflow;
mod workflows;

pub use build::{BuildError, Language, build_plugin};
pub use cache::CacheStats;
pub use kept::{KeptLimits, KeptStats};
pub use plugin::Plugin;
pub use registry::{PluginRegistry, PushError, PushQuota, push_plugin, push_plugin_with_quota};
pub use runtime::{LoadError, Runtime, RuntimeConfig, WorkflowStepLimits};
pub use shared::WeakKey;
pub use workflow::{WORKFLOW_WORLD, WorkflowPlugin};
pub use workflows::{
    StoreWorkflows, WORKFLOW_ROUTE_PREFIX, current_version as current_workflow_version,
    is_workflow_component, push_workflow_plugin,
};

/// The WIT package (and version) this host speaks: `wit/task.wit`.
pub const WIT_PACKAGE: &str = "xylem:task@0.3.0";

/// The world a plugin must be a component of.
pub const WIT_WORLD: &str = "xylem:task/plugin@0.3.0";
