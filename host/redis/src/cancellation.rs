//! [`Cancellation`] on Redis: one script withdraws the waiting jobs
//! (atomic with claims, which are scripts too); a request for a running
//! job is a key `P:cancel:{id}` that lapses after a day, and workers poll
//! theirs with one `MGET`.

use async_trait::async_trait;
use xylem_core::store::{CANCEL_REQUEST_TTL, Cancellation, StoreError, StoreResult, Withdrawn};
use xylem_core::time::Millis;

use crate::scripts::WITHDRAW;
use crate::{RedisStore, backend};

impl RedisStore {
    fn cancel_key(&self, id: &str) -> String {
        format!("{}:cancel:{id}", self.keys.prefix())
    }
}

#[async_trait]
impl Cancellation for RedisStore {
    async fn withdraw(&self, ids: &[String], _now: Millis) -> StoreResult<Vec<Withdrawn>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = WITHDRAW.prepare_invoke();
        invocation.arg(self.keys.prefix());
        for id in ids {
            invocation.arg(id);
        }
        let found: Vec<String> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        found
            .iter()
            .map(|f| match f.as_str() {
                "removed" => Ok(Withdrawn::Removed),
                "running" => Ok(Withdrawn::Running),
                "dead" => Ok(Withdrawn::Dead),
                "absent" => Ok(Withdrawn::Absent),
                other => Err(StoreError::backend(format!(
                    "the withdraw script answered `{other}`"
                ))),
            })
            .collect()
    }

    async fn request_cancel(&self, ids: &[String]) -> StoreResult<()> {
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("SET")
                .arg(self.cancel_key(id))
                .arg(1)
                .arg("PX")
                .arg(CANCEL_REQUEST_TTL.as_millis() as u64)
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(backend)
    }

    async fn cancel_requested(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.cancel_key(id)).collect();
        let found: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(ids
            .iter()
            .zip(found)
            .filter(|(_, f)| f.is_some())
            .map(|(id, _)| id.clone())
            .collect())
    }
}
