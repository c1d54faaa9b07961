//! Workflow plugins in the store: [`push_workflow_plugin`] validates one
//! and routes each of its workflows to it (as `workflow:NAME`, beside the
//! task routes, so hot deploys and the fallback rule work the same);
//! [`StoreWorkflows`] is the engine's catalog over the store — the
//! version a workflow's new runs are pinned to, and the code of any
//! version a run is pinned to, loaded once per process.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Mutex;
use xylem_core::TaskSpec;
use xylem_core::store::PluginStore;
use xylem_core::workflow::{WorkflowCatalog, WorkflowCode};

use crate::registry::PushError;
use crate::{Runtime, WorkflowPlugin};

/// The prefix of a workflow's route in the plugin store: `workflow:NAME`
/// (a colon no task name may have, so no job can be routed there).
pub const WORKFLOW_ROUTE_PREFIX: &str = "workflow:";

/// Whether `bytes` is a workflow plugin: a component exporting
/// `xylem:workflow/workflow` (read from its export section, not run).
pub fn is_workflow_component(bytes: &[u8]) -> bool {
    let mut depth = 0_usize;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else { return false };
        match payload {
            wasmparser::Payload::ModuleSection { .. }
            | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports.into_iter().flatten() {
                    if export.name.name.starts_with("xylem:workflow/workflow@") {
                        return true;
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// Validates `bytes` as a workflow plugin (compiles, links, describes) and
/// stores it; new runs of each workflow it declares are pinned to it.
pub async fn push_workflow_plugin(
    runtime: &Runtime,
    store: &dyn PluginStore,
    bytes: &[u8],
) -> Result<WorkflowPlugin, PushError> {
    let plugin = runtime.load_workflow(bytes).await?;
    let routes: Vec<TaskSpec> = plugin
        .workflows()
        .iter()
        .map(|(name, description)| TaskSpec {
            description: description.clone(),
            ..TaskSpec::new(format!("{WORKFLOW_ROUTE_PREFIX}{name}"))
        })
        .collect();
    store.put_plugin(plugin.digest(), bytes, &routes).await?;
    Ok(plugin)
}

/// The plugin version `workflow`'s new runs are pinned to: where its
/// route points (`None`: no pushed plugin declares it).
pub async fn current_version(
    store: &dyn PluginStore,
    workflow: &str,
) -> Result<Option<String>, xylem_core::store::StoreError> {
    let route = format!("{WORKFLOW_ROUTE_PREFIX}{workflow}");
    Ok(store
        .routes()
        .await?
        .into_iter()
        .find(|r| r.task == route)
        .map(|r| r.digest))
}

/// The engine's catalog over a plugin store.
pub struct StoreWorkflows {
    runtime: Runtime,
    store: Arc<dyn PluginStore>,
    loaded: Mutex<HashMap<String, WorkflowPlugin>>,
}

impl std::fmt::Debug for StoreWorkflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWorkflows").finish_non_exhaustive()
    }
}

impl StoreWorkflows {
    /// A catalog of the workflows in `store`, run by `runtime`.
    pub fn new(runtime: Runtime, store: Arc<dyn PluginStore>) -> Self {
        Self {
            runtime,
            store,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    async fn plugin(&self, digest: &str) -> Result<WorkflowPlugin, String> {
        if let Some(plugin) = self.loaded.lock().await.get(digest) {
            return Ok(plugin.clone());
        }
        let bytes = crate::registry::stored_bytes(self.store.as_ref(), digest).await?;
        let plugin = self
            .runtime
            .load_workflow(&bytes)
            .await
            .map_err(|e| format!("plugin version {digest}: {e}"))?;
        self.loaded
            .lock()
            .await
            .insert(digest.to_owned(), plugin.clone());
        Ok(plugin)
    }
}

#[async_trait]
impl WorkflowCatalog for StoreWorkflows {
    async fn current(&self, workflow: &str) -> Result<Option<String>, String> {
        current_version(self.store.as_ref(), workflow)
            .await
            .map_err(|e| e.to_string())
    }

    async fn code(&self, workflow: &str, plugin: &str) -> Result<Arc<dyn WorkflowCode>, String> {
        self.plugin(plugin)
            .await?
            .code(workflow)
            .ok_or_else(|| format!("plugin version {plugin} has no workflow `{workflow}`"))
    }
}
