//! [`WorkerRegistry`] on Redis: each worker's latest beat in a string key
//! that expires when the record is to be dropped, and a set of the ids
//! written (an id whose key has expired is removed when listed).

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use xylem_core::codec::{from_json, to_json};
use xylem_core::presence::WorkerBeat;
use xylem_core::store::{StoreResult, WorkerRegistry};

use crate::{RedisStore, backend};

#[async_trait]
impl WorkerRegistry for RedisStore {
    async fn put_worker(&self, beat: &WorkerBeat, keep: Duration) -> StoreResult<()> {
        let keep_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX).max(1);
        redis::pipe()
            .atomic()
            .set_options(
                self.keys.worker(&beat.id),
                to_json(beat)?,
                redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(keep_ms)),
            )
            .ignore()
            .sadd(self.keys.workers(), &beat.id)
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(backend)
    }

    async fn list_workers(&self) -> StoreResult<Vec<WorkerBeat>> {
        let mut conn = self.conn();
        let ids: Vec<String> = conn.smembers(self.keys.workers()).await.map_err(backend)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.keys.worker(id)).collect();
        let docs: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        let lapsed: Vec<&String> = ids
            .iter()
            .zip(&docs)
            .filter_map(|(id, doc)| doc.is_none().then_some(id))
            .collect();
        if !lapsed.is_empty() {
            let () = conn
                .srem(self.keys.workers(), lapsed)
                .await
                .map_err(backend)?;
        }
        docs.iter().flatten().map(|d| from_json(d)).collect()
    }
}
