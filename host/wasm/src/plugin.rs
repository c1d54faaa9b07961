//! A loaded plugin version: validated, described, ready to instantiate.

use std::sync::Arc;

use async_trait::async_trait;
use xylem_core::{Executor, HostCalls, Outcome, RunRequest, TaskSpec};

use crate::bindings::PluginPre;
use crate::cache::CacheStats;
use crate::run;
use crate::runtime::{LoadError, Runtime};
use crate::state::JobState;

pub(crate) struct PluginInner {
    pub(crate) runtime: Runtime,
    pub(crate) digest: String,
    pub(crate) size: usize,
    pub(crate) pre: PluginPre<JobState>,
    pub(crate) tasks: Vec<TaskSpec>,
    pub(crate) load_stats: CacheStats,
}

/// One version of a plugin, identified by the sha256 of its component.
/// Cheap to clone; every [`Plugin::run`] gets a fresh store and instance.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) inner: Arc<PluginInner>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("digest", &self.inner.digest)
            .field("tasks", &self.inner.tasks)
            .finish()
    }
}

impl Plugin {
    pub(crate) async fn new(
        runtime: Runtime,
        digest: String,
        size: usize,
        pre: PluginPre<JobState>,
        load_stats: CacheStats,
    ) -> Result<Self, LoadError> {
        let tasks = run::describe(&runtime, &pre).await?;
        Ok(Self {
            inner: Arc::new(PluginInner {
                runtime,
                digest,
                size,
                pre,
                tasks,
                load_stats,
            }),
        })
    }

    /// The sha256 of the component, in hex.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// The tasks the plugin declares, with their default options.
    pub fn tasks(&self) -> &[TaskSpec] {
        &self.inner.tasks
    }

    /// The declaration of one task, if the plugin has it.
    pub fn task(&self, name: &str) -> Option<&TaskSpec> {
        self.inner.tasks.iter().find(|t| t.name == name)
    }

    /// Whether the compiled code came from the cache, and what it cost.
    pub fn load_stats(&self) -> CacheStats {
        self.inner.load_stats
    }

    /// Runs one job in a fresh sandbox. Never fails: whatever the guest
    /// does ends as an [`Outcome`].
    pub async fn run(&self, request: RunRequest, host: Arc<dyn HostCalls>) -> Outcome {
        run::run_task(self, request, host).await
    }
}

#[async_trait]
impl Executor for Plugin {
    async fn execute(&self, request: RunRequest, host: Arc<dyn HostCalls>) -> Outcome {
        self.run(request, host).await
    }
}
