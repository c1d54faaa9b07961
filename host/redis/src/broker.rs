//! [`Broker`] on Redis: sorted sets per queue, one Lua script per
//! operation, and one script per batch on the hot path: `enqueue` (all
//! envelopes), `claim`, `complete` (all completions) and `extend_many`
//! are one round trip each.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;
use xylem_core::codec::{from_json, to_json};
use xylem_core::store::{
    Broker, Completed, Completion, DeadFilter, DeadJob, DeadLetters, Delivery, Nack, QueueStats,
    Settle, Statistics, StoreError, StoreResult, check_batch_ids, queued_detail, replay_envelope,
    replay_transition, running_detail,
};
use xylem_core::time::{ms, now_ms};
use xylem_core::{Envelope, TaskState};

use crate::results::{entry_tail, transition_fields};
use crate::scripts::{CLAIM, COMPLETE, ENQUEUE, EXTEND, PURGE, REPLAY, STATS};
use crate::{RedisStore, backend, corrupt, value};

/// A `Nack`'s arguments to the scripts: action, payload, delay (ms) and
/// the requeued envelope's attempt.
fn nack_args(action: &Nack) -> StoreResult<(&'static str, String, i64, u32)> {
    Ok(match action {
        Nack::Retry { envelope, delay } => {
            ("retry", to_json(envelope)?, ms(*delay), envelope.attempt)
        }
        Nack::Release => ("release", String::new(), 0, 0),
        Nack::DeadLetter { reason } => ("dead", reason.clone(), 0, 0),
    })
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
    async fn enqueue(&self, envelopes: &[Envelope]) -> StoreResult<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        check_batch_ids(envelopes)?;
        let now = now_ms();
        let mut invocation = ENQUEUE.prepare_invoke();
        invocation.arg(self.keys.prefix());
        for e in envelopes {
            let entry = entry_tail(
                TaskState::Queued,
                e.attempt,
                queued_detail(e, now).as_deref(),
            )?;
            invocation
                .arg(&e.id)
                .arg(&e.queue)
                .arg(e.priority)
                .arg(e.run_at())
                .arg(e.attempt)
                .arg(to_json(e)?)
                .arg(&e.task)
                .arg(&e.args)
                .arg(e.max_retries)
                .arg(e.enqueued_at)
                .arg(entry)
                .arg(e.headers_json().unwrap_or_default());
        }
        let reply: redis::Value = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        match reply {
            redis::Value::Int(_) => Ok(()),
            in_use => Err(StoreError::Duplicate(value::<String>(&in_use)?)),
        }
    }

    async fn claim(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        worker: &str,
    ) -> StoreResult<Vec<Delivery>> {
        // The `CLAIM` script leases the jobs and marks their records running.
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut invocation = CLAIM.prepare_invoke();
        // The two possible details of the `running` entry: the script picks
        // one by deliveries and attempt, as `running_detail` does.
        invocation
            .arg(self.keys.prefix())
            .arg(ms(lease))
            .arg(max)
            .arg(serde_json::to_string(&running_detail(worker, 1, 1)).map_err(corrupt)?)
            .arg(serde_json::to_string(&running_detail(worker, 2, 1)).map_err(corrupt)?);
        for q in queues {
            invocation.arg(q);
        }
        let flat: Vec<redis::Value> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        let mut deliveries = Vec::with_capacity(flat.len() / 3);
        for chunk in flat.chunks(3) {
            let [env, lease, deliveries_n] = chunk else {
                return Err(StoreError::Corrupt("short claim reply".to_owned()));
            };
            deliveries.push(Delivery {
                envelope: from_json::<Envelope>(&value::<String>(env)?)?,
                lease: value(lease)?,
                deliveries: value(deliveries_n)?,
            });
        }
        Ok(deliveries)
    }

    async fn complete(&self, completions: &[Completion]) -> StoreResult<Vec<Completed>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = COMPLETE.prepare_invoke();
        invocation.arg(self.keys.prefix());
        for c in completions {
            let t = &c.transition;
            let (settle, payload, delay, attempt) = match &c.settle {
                Settle::Ack => ("ack", String::new(), 0, 0),
                Settle::Nack(action) => nack_args(action)?,
            };
            let fields = transition_fields(t)?;
            invocation
                .arg(&c.id)
                .arg(c.lease)
                .arg(t.state.as_str())
                .arg(entry_tail(t.state, t.attempt, t.detail.as_deref())?)
                .arg(settle)
                .arg(payload)
                .arg(delay)
                .arg(attempt)
                .arg(c.result_ttl.map_or(0, |ttl| ms(ttl).max(1)))
                .arg(fields.len());
            for (name, value) in fields {
                invocation.arg(name).arg(value);
            }
        }
        let codes: Vec<i64> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        codes
            .into_iter()
            .map(|code| match code {
                0 => Ok(Completed::Applied),
                1 => Ok(Completed::AlreadySucceeded),
                2 => Ok(Completed::LeaseLost),
                other => Err(StoreError::Corrupt(format!("complete answered {other}"))),
            })
            .collect()
    }

    async fn extend_many(&self, leases: &[(String, u64)], by: Duration) -> StoreResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = EXTEND.prepare_invoke();
        invocation.arg(self.keys.prefix()).arg(ms(by));
        for (id, lease) in leases {
            invocation.arg(id).arg(*lease);
        }
        let held: Vec<i64> = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(held.into_iter().map(|h| h == 1).collect())
    }

    async fn wait_for_jobs(&self, timeout: Duration) {
        self.wait_for_wake(timeout).await;
    }
}

#[async_trait]
impl DeadLetters for RedisStore {
    async fn dead_jobs(&self, filter: &DeadFilter, limit: usize) -> StoreResult<Vec<DeadJob>> {
        let ids: Vec<String> = self
            .dead_ids(filter)
            .await?
            .into_iter()
            .take(limit)
            .map(|(id, _)| id)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HMGET")
                .arg(self.keys.job(id))
                .arg("env")
                .arg("reason")
                .arg("dead_at");
        }
        type Row = (Option<String>, Option<String>, Option<i64>);
        let rows: Vec<Row> = pipe.query_async(&mut self.conn()).await.map_err(backend)?;
        let mut jobs = Vec::with_capacity(rows.len());
        for (env, reason, dead_at) in rows {
            let Some(env) = env else { continue };
            jobs.push(DeadJob {
                envelope: from_json::<Envelope>(&env)?,
                reason: reason.unwrap_or_default(),
                dead_at: dead_at.unwrap_or(0),
            });
        }
        Ok(jobs)
    }

    async fn replay_dead(&self, filter: &DeadFilter, delay: Duration) -> StoreResult<Vec<String>> {
        let ids: Vec<String> = self
            .dead_ids(filter)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hget(self.keys.job(id), "env");
        }
        let envs: Vec<Option<String>> = pipe.query_async(&mut conn).await.map_err(backend)?;
        // The envelope's `not_before` and the queue's run_at agree: both
        // from this clock, like any envelope's times.
        let run_at = now_ms() + ms(delay);
        let mut invocation = REPLAY.prepare_invoke();
        invocation.arg(self.keys.prefix());
        for env in envs.iter().flatten() {
            let envelope = replay_envelope(&from_json::<Envelope>(env)?, run_at);
            let queued = replay_transition(&envelope);
            let entry = entry_tail(queued.state, queued.attempt, queued.detail.as_deref())?;
            invocation
                .arg(&envelope.id)
                .arg(to_json(&envelope)?)
                .arg(run_at)
                .arg(envelope.attempt)
                .arg(&entry)
                .arg(&envelope.task)
                .arg(&envelope.args)
                .arg(envelope.max_retries)
                .arg(envelope.enqueued_at);
        }
        invocation.invoke_async(&mut conn).await.map_err(backend)
    }

    async fn purge_dead(&self, filter: &DeadFilter) -> StoreResult<u64> {
        let ids = self.dead_ids(filter).await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let mut invocation = PURGE.prepare_invoke();
        invocation.arg(self.keys.prefix());
        for (id, _) in &ids {
            invocation.arg(id);
        }
        let purged: i64 = invocation
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend)?;
        Ok(purged.max(0) as u64)
    }
}

#[async_trait]
impl Statistics for RedisStore {
    async fn queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        let flat: Vec<redis::Value> = STATS
            .arg(self.keys.prefix())
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
}
