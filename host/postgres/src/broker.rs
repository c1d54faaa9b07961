//! [`Broker`] on PostgreSQL: a `queue` table claimed with
//! `FOR UPDATE SKIP LOCKED`, leases as (counter, expiry) pairs, and
//! `LISTEN`/`NOTIFY` to wake idle workers.
//!
//! `status` is 0 (ready), 1 (leased) or 2 (dead), spelled out in the SQL
//! so that every query stays a literal string. Times compared with or
//! handed out are the server's (`now_ms!`); the hot-path methods live in
//! `hot.rs`.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgListener;
use xylem_core::Envelope;
use xylem_core::codec::{from_json, to_json};
use xylem_core::store::{
    Broker, Completed, Completion, DeadFilter, DeadJob, DeadLetters, Delivery, QueueStats,
    REPLAY_DETAIL, Statistics, StoreResult, replay_envelope,
};
use xylem_core::time::ms;

use crate::{PostgresStore, db, sql_int, sql_u64};

/// The dead jobs a [`DeadFilter`] selects: `$1` queue or NULL, `$2` ids
/// (empty: all). A macro, to build literal queries with `concat!`.
macro_rules! dead_where {
    () => {
        "status = 2
         AND ($1::text IS NULL OR queue = $1)
         AND (cardinality($2::text[]) = 0 OR id = ANY($2))"
    };
}

/// Requeues replayed dead jobs (`$1` ids, `$2` their new envelopes from
/// [`replay_envelope`], due at `$3`) and sets their records back to
/// `queued` (the envelope's attempt, a `$4` history entry, expiry
/// cleared); a record that expired or vanished is written anew from the envelope, its old history forgotten.
/// Then wakes idle workers.
const REPLAY: &str = concat!(
    "WITH now AS (SELECT ",
    now_ms!(),
    " AS t),
    r AS MATERIALIZED (
        SELECT r.id, r.envelope, r.envelope::json AS e, t.id IS NOT NULL AS present,
               (t.id IS NOT NULL AND (t.expires_at IS NULL OR t.expires_at > now.t)) AS live
        FROM unnest($1::text[], $2::text[]) AS r(id, envelope) CROSS JOIN now
        LEFT JOIN tasks t ON t.id = r.id),
    requeued AS (
        UPDATE queue q SET status = 0, envelope = r.envelope, run_at = $3,
                           lease_until = 0, dead_reason = NULL, dead_at = NULL
        FROM r, now WHERE q.id = r.id),
    reset AS (
        UPDATE tasks t SET state = 'queued', attempt = (r.e ->> 'attempt')::bigint,
                           updated_at = now.t, expires_at = NULL
        FROM r, now WHERE t.id = r.id AND r.live),
    recreated AS (
        INSERT INTO tasks (id, task, queue, state, args, attempt, max_retries, enqueued_at,
                           updated_at, headers)
        SELECT r.id, r.e ->> 'task', r.e ->> 'queue', 'queued', r.e ->> 'args',
               (r.e ->> 'attempt')::bigint,
               (r.e ->> 'max_retries')::bigint, (r.e ->> 'enqueued_at')::bigint, now.t,
               NULLIF((r.e -> 'headers')::jsonb, '[]'::jsonb)
        FROM r, now WHERE NOT r.live
        ON CONFLICT (id) DO UPDATE SET
            task = excluded.task, queue = excluded.queue, state = excluded.state,
            args = excluded.args, attempt = excluded.attempt,
            max_retries = excluded.max_retries, result = NULL, error = NULL, usage = NULL,
            progress = NULL, log = NULL, plugin = NULL, enqueued_at = excluded.enqueued_at,
            updated_at = excluded.updated_at, expires_at = NULL, headers = excluded.headers),
    forgotten AS (
        DELETE FROM task_history h USING r WHERE h.id = r.id AND r.present AND NOT r.live),
    history AS (
        INSERT INTO task_history (id, at, state, attempt, detail)
        SELECT r.id, now.t, 'queued', (r.e ->> 'attempt')::bigint, $4 FROM r, now)
    SELECT pg_notify($5, '')"
);

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
    async fn enqueue(&self, envelopes: &[Envelope]) -> StoreResult<()> {
        self.enqueue_batch(envelopes).await
    }

    async fn claim(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        worker: &str,
    ) -> StoreResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.claim_batch(queues, max, lease, worker).await
    }

    async fn complete(&self, completions: &[Completion]) -> StoreResult<Vec<Completed>> {
        self.complete_batch(completions).await
    }

    async fn extend_many(&self, leases: &[(String, u64)], by: Duration) -> StoreResult<Vec<bool>> {
        self.extend_batch(leases, by).await
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

#[async_trait]
impl DeadLetters for PostgresStore {
    async fn dead_jobs(&self, filter: &DeadFilter, limit: usize) -> StoreResult<Vec<DeadJob>> {
        let rows = sqlx::query(concat!(
            "SELECT envelope, dead_reason, dead_at FROM queue WHERE ",
            dead_where!(),
            " ORDER BY dead_at DESC, id DESC LIMIT $3"
        ))
        .bind(filter.queue.as_deref())
        .bind(&filter.ids)
        .bind(sql_int(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let envelope: String = row.try_get(0).map_err(db)?;
            jobs.push(DeadJob {
                envelope: from_json::<Envelope>(&envelope)?,
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
        // The server's clock decides when they are due (see the crate docs).
        let rows = sqlx::query(concat!(
            "SELECT id, envelope, ",
            now_ms!(),
            " FROM queue WHERE ",
            dead_where!(),
            " ORDER BY id FOR UPDATE"
        ))
        .bind(filter.queue.as_deref())
        .bind(&filter.ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut ids = Vec::with_capacity(rows.len());
        let mut envelopes = Vec::with_capacity(rows.len());
        let mut run_at = 0;
        for row in &rows {
            let id: String = row.try_get(0).map_err(db)?;
            let text: String = row.try_get(1).map_err(db)?;
            let now: i64 = row.try_get(2).map_err(db)?;
            run_at = now.saturating_add(ms(delay));
            let envelope = replay_envelope(&from_json::<Envelope>(&text)?, run_at);
            envelopes.push(to_json(&envelope)?);
            ids.push(id);
        }
        if !ids.is_empty() {
            sqlx::query(REPLAY)
                .bind(&ids)
                .bind(&envelopes)
                .bind(run_at)
                .bind(REPLAY_DETAIL)
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
}

#[async_trait]
impl Statistics for PostgresStore {
    async fn queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        let rows = sqlx::query(concat!(
            "WITH now AS (SELECT ",
            now_ms!(),
            " AS t)
             SELECT queue,
                    count(*) FILTER (WHERE status = 0 AND run_at <= now.t),
                    count(*) FILTER (WHERE status = 0 AND run_at > now.t),
                    count(*) FILTER (WHERE status = 1),
                    count(*) FILTER (WHERE status = 2)
             FROM queue, now GROUP BY queue ORDER BY queue"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(QueueStats {
                    queue: r.try_get(0)?,
                    ready: sql_u64(r.try_get(1)?),
                    delayed: sql_u64(r.try_get(2)?),
                    running: sql_u64(r.try_get(3)?),
                    dead: sql_u64(r.try_get(4)?),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(db)
    }
}
