//! A loaded plugin version: validated, described, ready to instantiate.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use xylem_core::args_schema::ArgsSchema;
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
    /// The compiled argument schemas of the tasks that declare one.
    pub(crate) schemas: HashMap<String, ArgsSchema>,
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
        let mut schemas = HashMap::new();
        for spec in &tasks {
            // Defaults no job could run under (a rate limit the workers
            // could not apply, a zero time limit, ...) are refused now.
            spec.options
                .check()
                .map_err(|e| LoadError::Describe(format!("task `{}`: {e}", spec.name)))?;
            if let Some(schema) = &spec.args_schema {
                // A schema no argument could be checked against is refused
                // now, at push, rather than at every enqueue.
                let compiled = ArgsSchema::compile(schema)
                    .map_err(|e| LoadError::Describe(format!("task `{}`: {e}", spec.name)))?;
                schemas.insert(spec.name.clone(), compiled);
            }
        }
        Ok(Self {
            inner: Arc::new(PluginInner {
                runtime,
                digest,
                size,
                pre,
                tasks,
                schemas,
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

    /// The names of the tasks it declares, comma-separated: what an
    /// "unknown task" message lists.
    pub fn task_names(&self) -> String {
        let names: Vec<&str> = self.inner.tasks.iter().map(|t| t.name.as_str()).collect();
        names.join(", ")
    }

    /// The declaration of one task, if the plugin has it.
    pub fn task(&self, name: &str) -> Option<&TaskSpec> {
        self.inner.tasks.iter().find(|t| t.name == name)
    }

    /// Checks arguments (JSON text) against the schema task `name`
    /// declares; `Ok` if it declares none.
    pub fn check_args(&self, name: &str, args: &str) -> Result<(), String> {
        let Some(schema) = self.inner.schemas.get(name) else {
            return Ok(());
        };
        let value: serde_json::Value =
            serde_json::from_str(args).map_err(|e| format!("arguments are not valid JSON: {e}"))?;
        schema
            .check(&value)
            .map_err(|why| format!("arguments do not match the task's schema: {why}"))
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
