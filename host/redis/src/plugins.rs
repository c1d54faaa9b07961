//! [`PluginStore`] on Redis: a hash per version, a routes hash, counters.

use std::collections::HashMap;

use async_trait::async_trait;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use xylem_core::TaskSpec;
use xylem_core::store::{
    PluginInfo, PluginStore, StoreError, StoreResult, TaskRoute, fallback_route,
};
use xylem_core::time::now_ms;

use crate::scripts::{PUT_COMPILED, PUT_PLUGIN, REMOVE_PLUGIN};
use crate::{RedisStore, backend, corrupt};

/// How many times a removal reads the routes again when they changed
/// under it (a push or removal elsewhere) before it gives up.
const REMOVE_ATTEMPTS: usize = 10;

/// A route as stored in the routes hash.
#[derive(Serialize, Deserialize)]
struct StoredRoute {
    digest: String,
    spec: TaskSpec,
}

fn route_json(digest: &str, spec: &TaskSpec) -> StoreResult<String> {
    serde_json::to_string(&StoredRoute {
        digest: digest.to_owned(),
        spec: spec.clone(),
    })
    .map_err(corrupt)
}

#[async_trait]
impl PluginStore for RedisStore {
    async fn put_plugin(&self, digest: &str, bytes: &[u8], tasks: &[TaskSpec]) -> StoreResult<()> {
        let mut invocation = PUT_PLUGIN.prepare_invoke();
        invocation
            .arg(self.keys.prefix())
            .arg(digest)
            .arg(bytes)
            .arg(bytes.len())
            .arg(serde_json::to_string(tasks).map_err(corrupt)?)
            .arg(now_ms());
        for spec in tasks {
            invocation.arg(&spec.name).arg(route_json(digest, spec)?);
        }
        let _: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn plugin_bytes(&self, digest: &str) -> StoreResult<Option<Vec<u8>>> {
        self.conn()
            .hget(self.keys.plugin(digest), "bytes")
            .await
            .map_err(backend)
    }

    async fn put_compiled(&self, digest: &str, engine: &str, artifact: &[u8]) -> StoreResult<()> {
        let _: i64 = PUT_COMPILED
            .prepare_invoke()
            .arg(self.keys.prefix())
            .arg(digest)
            .arg(engine)
            .arg(artifact)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn compiled(&self, digest: &str, engine: &str) -> StoreResult<Option<Vec<u8>>> {
        self.conn()
            .hget(self.keys.plugin(digest), format!("compiled:{engine}"))
            .await
            .map_err(backend)
    }

    async fn plugins(&self) -> StoreResult<Vec<PluginInfo>> {
        let mut conn = self.conn();
        let digests: Vec<String> = conn
            .zrevrange(self.keys.plugins(), 0, -1)
            .await
            .map_err(backend)?;
        let routes = self.routes().await?;
        let mut plugins = Vec::new();
        for digest in digests {
            let (size, tasks, pushed_at): (Option<u64>, Option<String>, Option<i64>) =
                redis::cmd("HMGET")
                    .arg(self.keys.plugin(&digest))
                    .arg("size")
                    .arg("tasks")
                    .arg("pushed_at")
                    .query_async(&mut conn)
                    .await
                    .map_err(backend)?;
            let Some(tasks) = tasks else { continue };
            let mut active_tasks: Vec<String> = routes
                .iter()
                .filter(|r| r.digest == digest)
                .map(|r| r.task.clone())
                .collect();
            active_tasks.sort();
            plugins.push(PluginInfo {
                size: size.unwrap_or(0),
                tasks: serde_json::from_str(&tasks).map_err(corrupt)?,
                pushed_at: pushed_at.unwrap_or(0),
                active_tasks,
                digest,
            });
        }
        Ok(plugins)
    }

    async fn routes(&self) -> StoreResult<Vec<TaskRoute>> {
        let stored: HashMap<String, String> = self
            .conn()
            .hgetall(self.keys.routes())
            .await
            .map_err(backend)?;
        let mut routes = Vec::new();
        for (task, text) in stored {
            let route: StoredRoute = serde_json::from_str(&text).map_err(corrupt)?;
            routes.push(TaskRoute {
                task,
                digest: route.digest,
                spec: route.spec,
            });
        }
        routes.sort_by(|a, b| a.task.cmp(&b.task));
        Ok(routes)
    }

    async fn remove_plugin(&self, digest: &str) -> StoreResult<bool> {
        // The fallbacks are worked out here (the one rule, in Rust, where
        // the specs' JSON is built), then applied by one script that first
        // checks nothing was pushed or removed meanwhile: every change
        // bumps `routes_version`, so a different one means read again.
        for _ in 0..REMOVE_ATTEMPTS {
            let version = self.routes_version().await?;
            let orphaned: Vec<String> = self
                .routes()
                .await?
                .into_iter()
                .filter(|r| r.digest == digest)
                .map(|r| r.task)
                .collect();
            let others: Vec<PluginInfo> = self
                .plugins()
                .await?
                .into_iter()
                .filter(|p| p.digest != digest)
                .collect();
            let mut invocation = REMOVE_PLUGIN.prepare_invoke();
            invocation.arg(self.keys.prefix()).arg(digest).arg(version);
            for task in orphaned {
                // `plugins()` is latest push first.
                let newest_first = others
                    .iter()
                    .map(|p| (p.digest.as_str(), p.tasks.as_slice()));
                let route = match fallback_route(&task, newest_first) {
                    Some(route) => route_json(&route.digest, &route.spec)?,
                    None => String::new(),
                };
                invocation.arg(task).arg(route);
            }
            let existed: i64 = invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend)?;
            if existed >= 0 {
                return Ok(existed == 1);
            }
        }
        Err(StoreError::unavailable(format!(
            "plugin routes kept changing while removing {digest}; try again"
        )))
    }

    async fn routes_version(&self) -> StoreResult<u64> {
        let version: Option<u64> = self
            .conn()
            .get(self.keys.routes_version())
            .await
            .map_err(backend)?;
        Ok(version.unwrap_or(0))
    }
}
