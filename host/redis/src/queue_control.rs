//! [`QueueControl`] on Redis: the set `P:paused`; waiting jobs read from a
//! queue's ready and delayed sets (a delayed job that fell due stays in the
//! delayed set until a claim moves it).

use async_trait::async_trait;
use redis::AsyncCommands;
use xylem_core::store::{QueueControl, StoreResult};

use crate::{RedisStore, backend};

impl RedisStore {
    fn paused_key(&self) -> String {
        format!("{}:paused", self.keys.prefix())
    }
}

#[async_trait]
impl QueueControl for RedisStore {
    async fn set_paused(&self, queue: &str, paused: bool) -> StoreResult<bool> {
        let mut conn = self.conn();
        let changed: i64 = if paused {
            conn.sadd(self.paused_key(), queue).await
        } else {
            conn.srem(self.paused_key(), queue).await
        }
        .map_err(backend)?;
        Ok(changed == 1)
    }

    async fn paused_queues(&self) -> StoreResult<Vec<String>> {
        let mut queues: Vec<String> = self
            .conn()
            .smembers(self.paused_key())
            .await
            .map_err(backend)?;
        queues.sort();
        Ok(queues)
    }

    async fn waiting_ids(
        &self,
        queue: &str,
        ready: bool,
        delayed: bool,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let mut ids = Vec::new();
        let mut conn = self.conn();
        for (wanted, part) in [(ready, "ready"), (delayed, "delayed")] {
            if !wanted || ids.len() >= limit {
                continue;
            }
            let key = format!("{}:q:{queue}:{part}", self.keys.prefix());
            let stop = (limit - ids.len()) as isize - 1;
            let found: Vec<String> = conn.zrange(key, 0, stop).await.map_err(backend)?;
            ids.extend(found);
        }
        Ok(ids)
    }
}
