//! How a worker finds the code for a task.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{Executor, TaskSpec};

/// The code that runs a task, and its declaration.
#[derive(Clone)]
pub struct Resolved {
    /// Runs the task.
    pub executor: Arc<dyn Executor>,
    /// The task's declaration (default options).
    pub spec: TaskSpec,
    /// Which version of the code (a plugin's sha256).
    pub version: String,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("spec", &self.spec)
            .field("version", &self.version)
            .finish()
    }
}

/// Why a task could not be resolved to code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No loaded plugin provides the task (yet: it may be pushed, or be
    /// loading, moments from now).
    #[error("{0}")]
    UnknownTask(String),
    /// The code could not be fetched or loaded right now (the store is
    /// down, a plugin failed to load): trying again later may work.
    #[error("{0}")]
    Unavailable(String),
}

/// Maps task names to runnable code; `xylem-wasm` implements it over the
/// plugin store (hot-reloading new versions), tests with native code.
#[async_trait]
pub trait TaskRegistry: Send + Sync {
    /// Picks up new or removed versions. Called periodically by the
    /// worker, and at once when a job's task is unknown.
    async fn refresh(&self) -> Result<(), String>;

    /// The code for `task` (at version `pinned`, if given).
    async fn resolve(&self, task: &str, pinned: Option<&str>) -> Result<Resolved, ResolveError>;
}
