//! [`Broker`] on Redis: sorted sets per queue, one Lua script per operation.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use xylem_core::Envelope;
use xylem_core::store::{
    Broker, DeadFilter, DeadJob, Delivery, Nack, QueueStats, StoreError, StoreResult,
};
use xylem_core::time::{ms, now_ms};

use crate::scripts::{ACK, EXTEND, NACK, PUBLISH, PURGE, REPLAY, RESERVE, STATS};
use crate::{RedisStore, backend, corrupt, value};

fn decode(text: &str) -> StoreResult<Envelope> {
    serde_json::from_str(text).map_err(corrupt)
}

impl RedisStore {
    /// Dead job ids matching `filter`, newest first, with their scores.
    async fn dead_ids(&self, filter: &DeadFilter) -> StoreResult<Vec<(String, f64)>> {
        let mut conn = self.conn();
        let queues: Vec<String> = match &filter.queue {
            Some(q) => vec![q.clone()],
            None => conn.smembers(self.keys.queues()).await.map_err(backend)?,
        };
        let mut ids = Vec::new();
        for q in queues {
            let found: Vec<(String, f64)> = conn
                .zrevrange_withscores(self.keys.queue(&q, "dead"), 0, -1)
                .await
                .map_err(backend)?;
            ids.extend(
                found
                    .into_iter()
                    .filter(|(id, _)| filter.ids.is_empty() || filter.ids.contains(id)),
            );
        }
        ids.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        Ok(ids)
    }
}

#[async_trait]
impl Broker for RedisStore {
    async fn publish(&self, envelope: &Envelope) -> StoreResult<()> {
        let json = serde_json::to_string(envelope).map_err(corrupt)?;
        let _: i64 = PUBLISH
            .arg(self.keys.prefix())
            .arg(&envelope.id)
            .arg(&envelope.queue)
            .arg(envelope.priority)
            .arg(envelope.run_at())
            .arg(json)
            .arg(now_ms())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn reserve(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
    ) -> StoreResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut invocation = RESERVE.prepare_invoke();
        invocation
            .arg(self.keys.prefix())
            .arg(now_ms())
            .arg(ms(lease))
            .arg(max);
        for q in queues {
            invocation.arg(q);
        }
        let flat: Vec<redis::Value> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let mut deliveries = Vec::new();
        for chunk in flat.chunks(3) {
            let [env, lease, deliveries_n] = chunk else {
                return Err(StoreError::Corrupt("short reserve reply".to_owned()));
            };
            deliveries.push(Delivery {
                envelope: decode(&value::<String>(env)?)?,
                lease: value(lease)?,
                deliveries: value(deliveries_n)?,
            });
        }
        Ok(deliveries)
    }

    async fn extend(&self, id: &str, lease: u64, by: Duration) -> StoreResult<bool> {
        let done: i64 = EXTEND
            .arg(self.keys.prefix())
            .arg(id)
            .arg(lease)
            .arg(now_ms() + ms(by))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(done == 1)
    }

    async fn ack(&self, id: &str, lease: u64) -> StoreResult<bool> {
        let done: i64 = ACK
            .arg(self.keys.prefix())
            .arg(id)
            .arg(lease)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(done == 1)
    }

    async fn nack(&self, id: &str, lease: u64, action: Nack) -> StoreResult<bool> {
        let now = now_ms();
        let (kind, payload, run_at) = match action {
            Nack::Retry { envelope, delay } => (
                "retry",
                serde_json::to_string(&envelope).map_err(corrupt)?,
                now + ms(delay),
            ),
            Nack::Release => ("release", String::new(), 0),
            Nack::DeadLetter { reason } => ("dead", reason, 0),
        };
        let done: i64 = NACK
            .arg(self.keys.prefix())
            .arg(id)
            .arg(lease)
            .arg(kind)
            .arg(now)
            .arg(payload)
            .arg(run_at)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(done == 1)
    }

    async fn queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        let flat: Vec<redis::Value> = STATS
            .arg(self.keys.prefix())
            .arg(now_ms())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let mut stats = Vec::new();
        for chunk in flat.chunks(5) {
            let [q, ready, delayed, running, dead] = chunk else {
                return Err(StoreError::Corrupt("short stats reply".to_owned()));
            };
            let count =
                |v: &redis::Value| -> StoreResult<u64> { Ok(value::<i64>(v)?.max(0) as u64) };
            stats.push(QueueStats {
                queue: value(q)?,
                ready: count(ready)?,
                delayed: count(delayed)?,
                running: count(running)?,
                dead: count(dead)?,
            });
        }
        stats.retain(|s| s.ready + s.delayed + s.running + s.dead > 0);
        stats.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(stats)
    }

    async fn dead_jobs(&self, filter: &DeadFilter, limit: usize) -> StoreResult<Vec<DeadJob>> {
        let mut conn = self.conn();
        let mut jobs = Vec::new();
        for (id, _) in self.dead_ids(filter).await?.into_iter().take(limit) {
            let (env, reason, dead_at): (Option<String>, Option<String>, Option<i64>) =
                redis::cmd("HMGET")
                    .arg(self.keys.job(&id))
                    .arg("env")
                    .arg("reason")
                    .arg("dead_at")
                    .query_async(&mut conn)
                    .await
                    .map_err(backend)?;
            let Some(env) = env else { continue };
            jobs.push(DeadJob {
                envelope: decode(&env)?,
                reason: reason.unwrap_or_default(),
                dead_at: dead_at.unwrap_or(0),
            });
        }
        Ok(jobs)
    }

    async fn replay_dead(&self, filter: &DeadFilter, delay: Duration) -> StoreResult<Vec<String>> {
        let mut conn = self.conn();
        let now = now_ms();
        let run_at = now + ms(delay);
        let mut replayed = Vec::new();
        for (id, _) in self.dead_ids(filter).await? {
            let env: Option<String> = conn
                .hget(self.keys.job(&id), "env")
                .await
                .map_err(backend)?;
            let Some(env) = env else { continue };
            let mut envelope = decode(&env)?;
            envelope.attempt = 1;
            envelope.not_before = Some(run_at);
            let done: i64 = REPLAY
                .arg(self.keys.prefix())
                .arg(&id)
                .arg(serde_json::to_string(&envelope).map_err(corrupt)?)
                .arg(run_at)
                .arg(now)
                .invoke_async(&mut conn)
                .await
                .map_err(backend)?;
            if done == 1 {
                replayed.push(id);
            }
        }
        Ok(replayed)
    }

    async fn purge_dead(&self, filter: &DeadFilter) -> StoreResult<u64> {
        let mut conn = self.conn();
        let mut purged = 0;
        for (id, _) in self.dead_ids(filter).await? {
            let done: i64 = PURGE
                .arg(self.keys.prefix())
                .arg(&id)
                .invoke_async(&mut conn)
                .await
                .map_err(backend)?;
            purged += done.max(0) as u64;
        }
        Ok(purged)
    }

    async fn wait_for_jobs(&self, timeout: Duration) {
        self.wait_for_wake(timeout).await;
    }
}
