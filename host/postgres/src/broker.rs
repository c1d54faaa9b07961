//! [`Broker`] on PostgreSQL: a `queue` table claimed with
//! `FOR UPDATE SKIP LOCKED`, leases as (counter, expiry) pairs, and
//! `LISTEN`/`NOTIFY` to wake idle workers.
//!
//! `status` is 0 (ready), 1 (leased) or 2 (dead), spelled out in the SQL
//! so that every query stays a literal string.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgListener;
use xylem_core::Envelope;
use xylem_core::store::{Broker, DeadFilter, DeadJob, Delivery, Nack, QueueStats, StoreResult};
use xylem_core::time::{ms, now_ms};

use crate::{PostgresStore, big, corrupt, db, small, unsigned};

fn encode(envelope: &Envelope) -> StoreResult<String> {
    serde_json::to_string(envelope).map_err(corrupt)
}

fn decode(text: &str) -> StoreResult<Envelope> {
    serde_json::from_str(text).map_err(corrupt)
}

/// Claims from every queue: ready jobs that are due, and leased jobs whose
/// lease ran out. `$1` now, `$2` lease expiry, `$3` max. `MATERIALIZED`
/// makes the pick run exactly once (a locking CTE may otherwise be inlined
/// and rescanned), so `LIMIT` bounds what is leased; `SKIP LOCKED` lets
/// concurrent claimers pass each other's rows instead of waiting.
const RESERVE_ALL: &str = "
    WITH picked AS MATERIALIZED (
        SELECT id FROM queue
        WHERE (status = 0 AND run_at <= $1) OR (status = 1 AND lease_until <= $1)
        ORDER BY priority DESC, run_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED)
    UPDATE queue q SET status = 1, lease = q.lease + 1, lease_until = $2,
                       deliveries = q.deliveries + 1
    FROM picked WHERE q.id = picked.id
    RETURNING q.envelope, q.lease, q.deliveries";

/// [`RESERVE_ALL`] restricted to the queues in `$4`.
const RESERVE_QUEUES: &str = "
    WITH picked AS MATERIALIZED (
        SELECT id FROM queue
        WHERE ((status = 0 AND run_at <= $1) OR (status = 1 AND lease_until <= $1))
          AND queue = ANY($4)
        ORDER BY priority DESC, run_at, id
        LIMIT $3
        FOR UPDATE SKIP LOCKED)
    UPDATE queue q SET status = 1, lease = q.lease + 1, lease_until = $2,
                       deliveries = q.deliveries + 1
    FROM picked WHERE q.id = picked.id
    RETURNING q.envelope, q.lease, q.deliveries";

/// The dead jobs a [`DeadFilter`] selects: `$1` queue or NULL, `$2` ids
/// (empty: all). A macro, to build literal queries with `concat!`.
macro_rules! dead_where {
    () => {
        "status = 2
         AND ($1::text IS NULL OR queue = $1)
         AND (cardinality($2::text[]) = 0 OR id = ANY($2))"
    };
}

impl PostgresStore {
    /// Waits for a notification on the schema's channel; `Err` when the
    /// listener cannot be set up or failed (it is then dropped, to be
    /// recreated next time).
    async fn next_notification(&self) -> Result<(), sqlx::Error> {
        let mut slot = self.listener.lock().await;
        let listener = match slot.as_mut() {
            Some(listener) => listener,
            None => {
                let mut listener = PgListener::connect_with(&self.pool).await?;
                listener.listen(&self.channel).await?;
                slot.insert(listener)
            }
        };
        match listener.recv().await {
            Ok(_) => Ok(()),
            Err(e) => {
                *slot = None;
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Broker for PostgresStore {
    async fn publish(&self, envelope: &Envelope) -> StoreResult<()> {
        // One statement, so the job and its notification commit together.
        sqlx::query(
            "WITH added AS (
                 INSERT INTO queue (id, queue, priority, run_at, envelope)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id)
             SELECT pg_notify($6, '') FROM added",
        )
        .bind(&envelope.id)
        .bind(&envelope.queue)
        .bind(i32::from(envelope.priority))
        .bind(envelope.run_at())
        .bind(encode(envelope)?)
        .bind(&self.channel)
        .execute(&self.pool)
        .await
        .map_err(db)?;
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
        let now = now_ms();
        let until = now.saturating_add(ms(lease));
        let query = if queues.is_empty() {
            sqlx::query(RESERVE_ALL)
                .bind(now)
                .bind(until)
                .bind(big(max))
        } else {
            sqlx::query(RESERVE_QUEUES)
                .bind(now)
                .bind(until)
                .bind(big(max))
                .bind(queues)
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db)?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in rows {
            let envelope: String = row.try_get(0).map_err(db)?;
            deliveries.push(Delivery {
                envelope: decode(&envelope)?,
                lease: unsigned(row.try_get(1).map_err(db)?),
                deliveries: small(row.try_get(2).map_err(db)?),
            });
        }
        // RETURNING has no order: hand them out as they were chosen.
        deliveries.sort_by(|a, b| a.envelope.claim_order(&b.envelope));
        Ok(deliveries)
    }

    async fn extend(&self, id: &str, lease: u64, by: Duration) -> StoreResult<bool> {
        sqlx::query("UPDATE queue SET lease_until = $1 WHERE id = $2 AND lease = $3 AND status = 1")
            .bind(now_ms().saturating_add(ms(by)))
            .bind(id)
            .bind(big(lease))
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(db)
    }

    async fn ack(&self, id: &str, lease: u64) -> StoreResult<bool> {
        sqlx::query("DELETE FROM queue WHERE id = $1 AND lease = $2 AND status = 1")
            .bind(id)
            .bind(big(lease))
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(db)
    }

    async fn nack(&self, id: &str, lease: u64, action: Nack) -> StoreResult<bool> {
        // Each is one statement; retries and releases notify in it, so the
        // wake-up commits with the job.
        let query = match action {
            Nack::Retry { envelope, delay } => sqlx::query(
                "WITH changed AS (
                     UPDATE queue SET status = 0, envelope = $3, run_at = $4, lease_until = 0
                     WHERE id = $1 AND lease = $2 AND status = 1 RETURNING id)
                 SELECT pg_notify($5, '') FROM changed",
            )
            .bind(id)
            .bind(big(lease))
            .bind(encode(&envelope)?)
            .bind(now_ms().saturating_add(ms(delay)))
            .bind(&self.channel),
            Nack::Release => sqlx::query(
                "WITH changed AS (
                     UPDATE queue SET status = 0, lease_until = 0
                     WHERE id = $1 AND lease = $2 AND status = 1 RETURNING id)
                 SELECT pg_notify($3, '') FROM changed",
            )
            .bind(id)
            .bind(big(lease))
            .bind(&self.channel),
            Nack::DeadLetter { reason } => sqlx::query(
                "UPDATE queue SET status = 2, dead_reason = $3, dead_at = $4, lease_until = 0
                 WHERE id = $1 AND lease = $2 AND status = 1 RETURNING id",
            )
            .bind(id)
            .bind(big(lease))
            .bind(reason)
            .bind(now_ms()),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db)?;
        Ok(rows.len() == 1)
    }

    async fn queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        let rows = sqlx::query(
            "SELECT queue,
                    count(*) FILTER (WHERE status = 0 AND run_at <= $1),
                    count(*) FILTER (WHERE status = 0 AND run_at > $1),
                    count(*) FILTER (WHERE status = 1),
                    count(*) FILTER (WHERE status = 2)
             FROM queue GROUP BY queue ORDER BY queue",
        )
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(QueueStats {
                    queue: r.try_get(0)?,
                    ready: unsigned(r.try_get(1)?),
                    delayed: unsigned(r.try_get(2)?),
                    running: unsigned(r.try_get(3)?),
                    dead: unsigned(r.try_get(4)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }

    async fn dead_jobs(&self, filter: &DeadFilter, limit: usize) -> StoreResult<Vec<DeadJob>> {
        let rows = sqlx::query(concat!(
            "SELECT envelope, dead_reason, dead_at FROM queue WHERE ",
            dead_where!(),
            " ORDER BY dead_at DESC, id DESC LIMIT $3"
        ))
        .bind(filter.queue.as_deref())
        .bind(&filter.ids)
        .bind(big(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let envelope: String = row.try_get(0).map_err(db)?;
            jobs.push(DeadJob {
                envelope: decode(&envelope)?,
                reason: row
                    .try_get::<Option<String>, _>(1)
                    .map_err(db)?
                    .unwrap_or_default(),
                dead_at: row.try_get::<Option<i64>, _>(2).map_err(db)?.unwrap_or(0),
            });
        }
        Ok(jobs)
    }

    async fn replay_dead(&self, filter: &DeadFilter, delay: Duration) -> StoreResult<Vec<String>> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let rows = sqlx::query(concat!(
            "SELECT id, envelope FROM queue WHERE ",
            dead_where!(),
            " ORDER BY id FOR UPDATE"
        ))
        .bind(filter.queue.as_deref())
        .bind(&filter.ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let run_at = now_ms().saturating_add(ms(delay));
        let mut ids = Vec::with_capacity(rows.len());
        let mut envelopes = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0).map_err(db)?;
            let text: String = row.try_get(1).map_err(db)?;
            let mut envelope = decode(&text)?;
            envelope.attempt = 1;
            envelope.not_before = Some(run_at);
            envelopes.push(encode(&envelope)?);
            ids.push(id);
        }
        if !ids.is_empty() {
            sqlx::query(
                "UPDATE queue q SET status = 0, envelope = r.envelope, run_at = $3,
                        lease_until = 0, dead_reason = NULL, dead_at = NULL
                 FROM unnest($1::text[], $2::text[]) AS r(id, envelope)
                 WHERE q.id = r.id",
            )
            .bind(&ids)
            .bind(&envelopes)
            .bind(run_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(&self.channel)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(ids)
    }

    async fn purge_dead(&self, filter: &DeadFilter) -> StoreResult<u64> {
        sqlx::query(concat!("DELETE FROM queue WHERE ", dead_where!()))
            .bind(filter.queue.as_deref())
            .bind(&filter.ids)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(db)
    }

    async fn wait_for_jobs(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        match tokio::time::timeout(timeout, self.next_notification()).await {
            // Notified, or the timeout (the poll period) passed.
            Ok(Ok(())) | Err(_) => {}
            // No listener: poll at the timeout.
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot listen for PostgreSQL notifications; polling");
                tokio::time::sleep_until(deadline).await;
            }
        }
    }
}
