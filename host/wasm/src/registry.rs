//! The worker's view of the plugin store: task → loaded plugin version,
//! refreshed when the store's routes change (hot deploy), and
//! [`push_plugin`], which validates a component and stores it.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::RwLock;
use xylem_core::store::{PluginStore, StoreError, TaskRoute};
use xylem_core::{ChildQuotaOverrides, Executor, ResolveError, Resolved, TaskRegistry, TaskSpec};

use crate::{LoadError, Plugin, Runtime};

/// Why a push was refused.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The component is not a valid plugin.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A quota was given for a task the plugin does not declare.
    #[error("the plugin has no task `{task}` (it declares: {known})")]
    NoSuchTask {
        /// The task named.
        task: String,
        /// The tasks it does declare.
        known: String,
    },
    /// A concurrency limit that does not parse.
    #[error(transparent)]
    Concurrency(#[from] xylem_core::concurrency::ConcurrencyLimitError),
    /// A rate limit that does not parse.
    #[error(transparent)]
    RateLimit(#[from] xylem_core::rate_limit::RateLimitError),
}

/// The operator's child-job quota for some tasks of a plugin being pushed.
#[derive(Debug, Clone, Default)]
pub struct PushQuota {
    /// The overrides.
    pub quota: ChildQuotaOverrides,
    /// The tasks they apply to; empty: every task of the plugin.
    pub tasks: Vec<String>,
    /// Concurrency limits (`xylem_core::concurrency`) by task: at most
    /// this many of its jobs running at once across the workers.
    pub concurrency: Vec<(String, String)>,
    /// Rate limits (`xylem_core::rate_limit`) by task, replacing what the
    /// plugin declares.
    pub rate_limits: Vec<(String, String)>,
}

/// Validates `bytes` as a plugin (compiles it, checks the WIT world, calls
/// `describe`) and stores it, routing each declared task to this version.
pub async fn push_plugin(
    runtime: &Runtime,
    store: &dyn PluginStore,
    bytes: &[u8],
) -> Result<Plugin, PushError> {
    push_plugin_with_quota(runtime, store, bytes, &PushQuota::default()).await
}

/// [`push_plugin`], recording the operator's child-job quota with the
/// tasks it names (it becomes their root jobs' quota on every worker).
pub async fn push_plugin_with_quota(
    runtime: &Runtime,
    store: &dyn PluginStore,
    bytes: &[u8],
    quota: &PushQuota,
) -> Result<Plugin, PushError> {
    let plugin = runtime.load(bytes).await?;
    for (_, limit) in &quota.concurrency {
        limit.parse::<xylem_core::concurrency::ConcurrencyLimit>()?;
    }
    for (_, limit) in &quota.rate_limits {
        limit.parse::<xylem_core::rate_limit::RateLimit>()?;
    }
    for task in quota
        .tasks
        .iter()
        .chain(quota.concurrency.iter().map(|(t, _)| t))
        .chain(quota.rate_limits.iter().map(|(t, _)| t))
    {
        if plugin.task(task).is_none() {
            return Err(PushError::NoSuchTask {
                task: task.clone(),
                known: plugin.task_names(),
            });
        }
    }
    let mut specs = plugin.tasks().to_vec();
    for spec in &mut specs {
        if quota.tasks.is_empty() || quota.tasks.contains(&spec.name) {
            spec.child_quota = quota.quota;
        }
        if let Some((_, limit)) = quota.concurrency.iter().find(|(t, _)| *t == spec.name) {
            spec.concurrency = Some(limit.clone());
        }
        if let Some((_, limit)) = quota.rate_limits.iter().find(|(t, _)| *t == spec.name) {
            spec.rate_limit = Some(limit.clone());
        }
    }
    store.put_plugin(plugin.digest(), bytes, &specs).await?;
    runtime.share_compiled(&plugin, store).await;
    tracing::info!(digest = %plugin.digest(), tasks = plugin.tasks().len(), "plugin pushed");
    Ok(plugin)
}

#[derive(Default)]
struct Loaded {
    version: Option<u64>,
    routes: HashMap<String, TaskRoute>,
    plugins: HashMap<String, Plugin>,
}

/// Resolves tasks to plugin versions from a [`PluginStore`], loading new
/// versions as they are pushed. Jobs already running keep the version they
/// started with (they hold their own handle to it).
pub struct PluginRegistry {
    runtime: Runtime,
    store: Arc<dyn PluginStore>,
    loaded: RwLock<Loaded>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry").finish_non_exhaustive()
    }
}

impl PluginRegistry {
    /// A registry over `store`; nothing is loaded until the first refresh.
    pub fn new(runtime: Runtime, store: Arc<dyn PluginStore>) -> Self {
        Self {
            runtime,
            store,
            loaded: RwLock::new(Loaded::default()),
        }
    }

    async fn load_version(&self, digest: &str) -> Result<Plugin, String> {
        let bytes = stored_bytes(self.store.as_ref(), digest).await?;
        self.runtime
            .load_stored(&bytes, self.store.as_ref())
            .await
            .map_err(|e| format!("plugin version {digest}: {e}"))
    }
}

/// The bytes of plugin version `digest` in `store`, or why not.
pub(crate) async fn stored_bytes(store: &dyn PluginStore, digest: &str) -> Result<Vec<u8>, String> {
    store
        .plugin_bytes(digest)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("plugin version {digest} is not in the store"))
}

#[async_trait]
impl TaskRegistry for PluginRegistry {
    async fn refresh(&self) -> Result<(), String> {
        let version = self
            .store
            .routes_version()
            .await
            .map_err(|e| e.to_string())?;
        if self.loaded.read().await.version == Some(version) {
            return Ok(());
        }
        let mut routes = self.store.routes().await.map_err(|e| e.to_string())?;
        // Workflows are the engine's (`StoreWorkflows`), not tasks.
        routes.retain(|r| !r.task.starts_with(crate::WORKFLOW_ROUTE_PREFIX));
        let mut plugins = self.loaded.read().await.plugins.clone();
        let mut failed = None;
        for route in &routes {
            if !plugins.contains_key(&route.digest) {
                match self.load_version(&route.digest).await {
                    Ok(plugin) => {
                        tracing::info!(digest = %route.digest, "loaded plugin version");
                        plugins.insert(route.digest.clone(), plugin);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot load plugin version");
                        failed = Some(e);
                    }
                }
            }
        }
        // Drop versions no task routes to any more (running jobs keep theirs).
        plugins.retain(|digest, _| routes.iter().any(|r| &r.digest == digest));
        let mut loaded = self.loaded.write().await;
        loaded.routes = routes.into_iter().map(|r| (r.task.clone(), r)).collect();
        loaded.plugins = plugins;
        // A version that failed to load is tried again on the next
        // refresh: only a complete load marks the routes as seen.
        match failed {
            None => {
                loaded.version = Some(version);
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    async fn resolve(&self, task: &str, pinned: Option<&str>) -> Result<Resolved, ResolveError> {
        // The plugin, and what the operator added to the task's route at
        // push (its child-job quota and concurrency limit), read under one
        // lock.
        let (found, route) = {
            let loaded = self.loaded.read().await;
            let route = loaded.routes.get(task);
            let found = match pinned {
                Some(digest) => loaded.plugins.get(digest).cloned(),
                None => route.and_then(|r| loaded.plugins.get(&r.digest).cloned()),
            };
            let operator = route.map(|r| {
                (
                    r.digest.clone(),
                    r.spec.child_quota,
                    r.spec.concurrency.clone(),
                    r.spec.rate_limit.clone(),
                )
            });
            (found, operator)
        };
        let plugin = match (found, pinned) {
            (Some(plugin), _) => plugin,
            (None, Some(digest)) => self
                .load_version(digest)
                .await
                .map_err(ResolveError::Unavailable)?,
            (None, None) => {
                return Err(ResolveError::UnknownTask(format!(
                    "no plugin provides task `{task}` (push one with `xylem plugin push`)"
                )));
            }
        };
        let declared = plugin.task(task).cloned().ok_or_else(|| {
            ResolveError::UnknownTask(format!(
                "plugin {} does not provide task `{task}`",
                plugin.digest()
            ))
        })?;
        let spec = match route {
            Some((digest, child_quota, concurrency, rate_limit)) if digest == plugin.digest() => {
                TaskSpec {
                    child_quota,
                    concurrency,
                    rate_limit,
                    ..declared
                }
            }
            _ => declared,
        };
        Ok(Resolved {
            version: plugin.digest().to_owned(),
            spec,
            executor: Arc::new(plugin) as Arc<dyn Executor>,
        })
    }
}
