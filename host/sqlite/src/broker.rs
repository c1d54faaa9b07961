//! [`Broker`] on SQLite: a `queue` table claimed in `BEGIN IMMEDIATE`
//! transactions, leases as (counter, expiry) pairs.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{TransactionBehavior, params, params_from_iter};
use xylem_core::Envelope;
use xylem_core::store::{Broker, DeadFilter, DeadJob, Delivery, Nack, QueueStats, StoreResult};
use xylem_core::time::{ms, now_ms};

use crate::{SqliteStore, backend, corrupt, exec};

const READY: i64 = 0;
const LEASED: i64 = 1;
const DEAD: i64 = 2;

fn encode(envelope: &Envelope) -> StoreResult<String> {
    serde_json::to_string(envelope).map_err(corrupt)
}

fn decode(text: &str) -> StoreResult<Envelope> {
    serde_json::from_str(text).map_err(corrupt)
}

/// `AND col IN (?, ?, ...)` for a non-empty list, else nothing.
fn in_clause(column: &str, values: &[String]) -> String {
    if values.is_empty() {
        String::new()
    } else {
        let marks = vec!["?"; values.len()].join(", ");
        format!(" AND {column} IN ({marks})")
    }
}

/// `AND col IN (?N, ?N+1, ...)` with numbered placeholders from `first`.
fn numbered_in_clause(column: &str, count: usize, first: usize) -> String {
    if count == 0 {
        return String::new();
    }
    let marks: Vec<String> = (first..first + count).map(|i| format!("?{i}")).collect();
    format!(" AND {column} IN ({})", marks.join(", "))
}

fn dead_where(filter: &DeadFilter) -> (String, Vec<String>) {
    let mut sql = format!("status = {DEAD}");
    let mut args = Vec::new();
    if let Some(queue) = &filter.queue {
        sql.push_str(" AND queue = ?");
        args.push(queue.clone());
    }
    sql.push_str(&in_clause("id", &filter.ids));
    args.extend(filter.ids.iter().cloned());
    (sql, args)
}

#[async_trait]
impl Broker for SqliteStore {
    async fn publish(&self, envelope: &Envelope) -> StoreResult<()> {
        let json = encode(envelope)?;
        let (id, queue, priority, run_at) = (
            envelope.id.clone(),
            envelope.queue.clone(),
            i64::from(envelope.priority),
            envelope.run_at(),
        );
        self.with_conn(move |conn| {
            exec(conn,
                "INSERT INTO queue (id, queue, priority, run_at, envelope) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, queue, priority, run_at, json],
            )
            .map_err(backend)
        })
        .await?;
        self.published.notify_one();
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
        let queues = queues.to_vec();
        let lease_ms = ms(lease);
        self.with_conn(move |conn| {
            let now = now_ms();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let sql = format!(
                "UPDATE queue SET status = {LEASED}, lease = lease + 1, lease_until = ?1,
                        deliveries = deliveries + 1
                 WHERE id IN (
                     SELECT id FROM queue
                     WHERE ((status = {READY} AND run_at <= ?2) OR (status = {LEASED} AND lease_until <= ?2))
                     {}
                     ORDER BY priority DESC, run_at, id LIMIT ?3)
                 RETURNING envelope, lease, deliveries",
                numbered_in_clause("queue", queues.len(), 4)
            );
            let mut values: Vec<rusqlite::types::Value> = vec![
                (now + lease_ms).into(),
                now.into(),
                i64::try_from(max).unwrap_or(i64::MAX).into(),
            ];
            values.extend(queues.iter().map(|q| q.clone().into()));
            let mut deliveries = Vec::new();
            {
                let mut stmt = tx.prepare_cached(&sql).map_err(backend)?;
                let mut rows = stmt.query(params_from_iter(values)).map_err(backend)?;
                while let Some(row) = rows.next().map_err(backend)? {
                    let envelope: String = row.get(0).map_err(backend)?;
                    deliveries.push(Delivery {
                        envelope: decode(&envelope)?,
                        lease: row.get::<_, i64>(1).map_err(backend)? as u64,
                        deliveries: row.get::<_, i64>(2).map_err(backend)? as u32,
                    });
                }
            }
            tx.commit().map_err(backend)?;
            deliveries.sort_by(|a, b| a.envelope.claim_order(&b.envelope));
            Ok(deliveries)
        })
        .await
    }

    async fn extend(&self, id: &str, lease: u64, by: Duration) -> StoreResult<bool> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            exec(conn,
                &format!("UPDATE queue SET lease_until = ?1 WHERE id = ?2 AND lease = ?3 AND status = {LEASED}"),
                params![now_ms() + ms(by), id, lease as i64],
            )
            .map(|n| n == 1)
            .map_err(backend)
        })
        .await
    }

    async fn ack(&self, id: &str, lease: u64) -> StoreResult<bool> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            exec(
                conn,
                &format!("DELETE FROM queue WHERE id = ?1 AND lease = ?2 AND status = {LEASED}"),
                params![id, lease as i64],
            )
            .map(|n| n == 1)
            .map_err(backend)
        })
        .await
    }

    async fn nack(&self, id: &str, lease: u64, action: Nack) -> StoreResult<bool> {
        let id = id.to_owned();
        let wake = !matches!(action, Nack::DeadLetter { .. });
        let changed = self
            .with_conn(move |conn| {
                let lease = lease as i64;
                let guard = format!("WHERE id = ?1 AND lease = ?2 AND status = {LEASED}");
                let n = match action {
                    Nack::Retry { envelope, delay } => exec(conn,
                        &format!(
                            "UPDATE queue SET status = {READY}, envelope = ?3, run_at = ?4, lease_until = 0 {guard}"
                        ),
                        params![id, lease, encode(&envelope)?, now_ms() + ms(delay)],
                    ),
                    Nack::Release => exec(conn,
                        &format!("UPDATE queue SET status = {READY}, lease_until = 0 {guard}"),
                        params![id, lease],
                    ),
                    Nack::DeadLetter { reason } => exec(conn,
                        &format!(
                            "UPDATE queue SET status = {DEAD}, dead_reason = ?3, dead_at = ?4, lease_until = 0 {guard}"
                        ),
                        params![id, lease, reason, now_ms()],
                    ),
                }
                .map_err(backend)?;
                Ok(n == 1)
            })
            .await?;
        if changed && wake {
            self.published.notify_one();
        }
        Ok(changed)
    }

    async fn queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        self.with_conn(|conn| {
            let now = now_ms();
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT queue,
                            SUM(status = {READY} AND run_at <= ?1),
                            SUM(status = {READY} AND run_at > ?1),
                            SUM(status = {LEASED}),
                            SUM(status = {DEAD})
                     FROM queue GROUP BY queue ORDER BY queue"
                ))
                .map_err(backend)?;
            let rows = stmt
                .query_map([now], |r| {
                    Ok(QueueStats {
                        queue: r.get(0)?,
                        ready: r.get::<_, i64>(1)? as u64,
                        delayed: r.get::<_, i64>(2)? as u64,
                        running: r.get::<_, i64>(3)? as u64,
                        dead: r.get::<_, i64>(4)? as u64,
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }

    async fn dead_jobs(&self, filter: &DeadFilter, limit: usize) -> StoreResult<Vec<DeadJob>> {
        let (where_sql, args) = dead_where(filter);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT envelope, dead_reason, dead_at FROM queue WHERE {where_sql}
                     ORDER BY dead_at DESC, id DESC LIMIT {limit}"
                ))
                .map_err(backend)?;
            let rows = stmt
                .query_map(params_from_iter(args), |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                })
                .map_err(backend)?;
            let mut jobs = Vec::new();
            for row in rows {
                let (envelope, reason, dead_at) = row.map_err(backend)?;
                jobs.push(DeadJob {
                    envelope: decode(&envelope)?,
                    reason: reason.unwrap_or_default(),
                    dead_at: dead_at.unwrap_or(0),
                });
            }
            Ok(jobs)
        })
        .await
    }

    async fn replay_dead(&self, filter: &DeadFilter, delay: Duration) -> StoreResult<Vec<String>> {
        let (where_sql, args) = dead_where(filter);
        let replayed = self
            .with_conn(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(backend)?;
                let dead: Vec<(String, String)> = {
                    let mut stmt = tx
                        .prepare(&format!("SELECT id, envelope FROM queue WHERE {where_sql}"))
                        .map_err(backend)?;
                    let rows = stmt
                        .query_map(params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(backend)?;
                    rows.collect::<Result<_, _>>().map_err(backend)?
                };
                let run_at = now_ms() + ms(delay);
                let mut ids = Vec::new();
                for (id, text) in dead {
                    let mut envelope = decode(&text)?;
                    envelope.attempt = 1;
                    envelope.not_before = Some(run_at);
                    exec(
                        &tx,
                        &format!(
                            "UPDATE queue SET status = {READY}, envelope = ?2, run_at = ?3,
                                    dead_reason = NULL, dead_at = NULL WHERE id = ?1"
                        ),
                        params![id, encode(&envelope)?, run_at],
                    )
                    .map_err(backend)?;
                    ids.push(id);
                }
                tx.commit().map_err(backend)?;
                Ok(ids)
            })
            .await?;
        if !replayed.is_empty() {
            self.published.notify_one();
        }
        Ok(replayed)
    }

    async fn purge_dead(&self, filter: &DeadFilter) -> StoreResult<u64> {
        let (where_sql, args) = dead_where(filter);
        self.with_conn(move |conn| {
            exec(
                conn,
                &format!("DELETE FROM queue WHERE {where_sql}"),
                params_from_iter(args),
            )
            .map(|n| n as u64)
            .map_err(backend)
        })
        .await
    }

    async fn wait_for_jobs(&self, timeout: Duration) {
        // Other processes cannot notify us: the timeout is the poll period.
        let _ = tokio::time::timeout(timeout, self.published.notified()).await;
    }
}
