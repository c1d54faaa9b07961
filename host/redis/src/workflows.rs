//! [`WorkflowStore`] on Redis: each run's document in a hash, its version
//! beside it, sorted sets by wake time and by start; a write — or a batch
//! of them — is one script (`RUN_PUT`) that compares each version and
//! updates all four.

use async_trait::async_trait;
use redis::AsyncCommands;
use xylem_core::codec::{from_json, to_json};
use xylem_core::store::{RunFilter, StoreResult, WorkflowStore};
use xylem_core::time::Millis;
use xylem_core::workflow::Run;

use crate::scripts::RUN_PUT;
use crate::{RedisStore, backend};

/// Ids read per page when a listing filters (newest first).
const LIST_PAGE: isize = 500;

#[async_trait]
impl WorkflowStore for RedisStore {
    async fn put_run(&self, run: &Run) -> StoreResult<Option<u64>> {
        let mut written = self.put_runs(std::slice::from_ref(run)).await?;
        Ok(written.pop().flatten())
    }

    async fn put_runs(&self, runs: &[Run]) -> StoreResult<Vec<Option<u64>>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        // One script for the lot: one round trip per tick's leases, or its
        // steps.
        let mut invocation = RUN_PUT.prepare_invoke();
        invocation.arg(self.keys.prefix());
        for run in runs {
            let mut written = run.clone();
            written.version = run.version + 1;
            invocation
                .arg(&written.id)
                .arg(run.version)
                .arg(to_json(&written)?)
                .arg(written.wake_at.map(|at| at.to_string()).unwrap_or_default())
                .arg(written.created_at);
        }
        let versions: Vec<u64> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(versions
            .into_iter()
            .map(|v| (v != 0).then_some(v))
            .collect())
    }

    async fn get_run(&self, id: &str) -> StoreResult<Option<Run>> {
        let doc: Option<String> = self
            .conn()
            .hget(format!("{}:runs", self.keys.prefix()), id)
            .await
            .map_err(backend)?;
        doc.map(|d| from_json(&d)).transpose()
    }

    async fn get_runs(&self, ids: &[String]) -> StoreResult<Vec<Option<Run>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let docs: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(format!("{}:runs", self.keys.prefix()))
            .arg(ids)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        docs.into_iter()
            .map(|d| d.map(|d| from_json(&d)).transpose())
            .collect()
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let prefix = self.keys.prefix();
        let limit = filter.effective_limit();
        let mut runs = Vec::new();
        let mut start = 0isize;
        // Newest first, a page at a time, until the filter has its fill.
        while runs.len() < limit {
            let ids: Vec<String> = self
                .conn()
                .zrevrange(
                    format!("{prefix}:runs:newest"),
                    start,
                    start + LIST_PAGE - 1,
                )
                .await
                .map_err(backend)?;
            if ids.is_empty() {
                break;
            }
            start += LIST_PAGE;
            for run in self.runs(&ids).await? {
                let wanted = filter.workflow.as_ref().is_none_or(|w| *w == run.workflow)
                    && filter.state.is_none_or(|s| s == run.state);
                if wanted && runs.len() < limit {
                    runs.push(run);
                }
            }
        }
        Ok(runs)
    }

    async fn due_runs(&self, now: Millis, limit: usize) -> StoreResult<Vec<Run>> {
        let ids: Vec<String> = self
            .conn()
            .zrangebyscore_limit(
                format!("{}:runs:due", self.keys.prefix()),
                "-inf",
                now,
                0,
                isize::try_from(limit).unwrap_or(isize::MAX),
            )
            .await
            .map_err(backend)?;
        self.runs(&ids).await
    }
}

impl RedisStore {
    /// The documents of runs `ids`, in that order (a run removed meanwhile
    /// is left out).
    async fn runs(&self, ids: &[String]) -> StoreResult<Vec<Run>> {
        Ok(self.get_runs(ids).await?.into_iter().flatten().collect())
    }
}
