//! [`ResultBackend`] on PostgreSQL: a `tasks` row per job and a
//! `task_history` row per transition, stamped with the server's clock.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;
use xylem_core::codec::to_json;
use xylem_core::record::{HistoryEntry, TaskFilter, TaskRecord, TaskState, Transition};
use xylem_core::store::{ResultBackend, StoreError, StoreResult, queued_detail};
use xylem_core::time::now_ms;
use xylem_core::{Envelope, Progress};

use crate::{PostgresStore, corrupt, db, sql_int, sql_u32};

fn parse<T: serde::de::DeserializeOwned>(text: Option<String>) -> StoreResult<Option<T>> {
    text.map(|t| serde_json::from_str(&t).map_err(corrupt))
        .transpose()
}

fn state(text: &str) -> StoreResult<TaskState> {
    text.parse().map_err(StoreError::Corrupt)
}

/// Decodes a `tasks` row selected with the columns in this order: id,
/// task, queue, state, args, attempt, max_retries, result, error, usage,
/// progress, log, plugin, enqueued_at, updated_at, headers (as text).
fn record(r: &PgRow) -> StoreResult<TaskRecord> {
    let text = |i: usize| r.try_get::<Option<String>, _>(i).map_err(db);
    Ok(TaskRecord {
        id: r.try_get(0).map_err(db)?,
        task: r.try_get(1).map_err(db)?,
        queue: r.try_get(2).map_err(db)?,
        state: state(r.try_get(3).map_err(db)?)?,
        args: r.try_get(4).map_err(db)?,
        attempt: sql_u32(r.try_get(5).map_err(db)?),
        max_retries: sql_u32(r.try_get(6).map_err(db)?),
        result: parse(text(7)?)?,
        error: parse(text(8)?)?,
        usage: parse(text(9)?)?,
        progress: parse(text(10)?)?,
        log: parse(text(11)?)?.unwrap_or_default(),
        plugin: text(12)?,
        enqueued_at: r.try_get(13).map_err(db)?,
        updated_at: r.try_get(14).map_err(db)?,
        headers: parse(text(15)?)?.unwrap_or_default(),
        history: Vec::new(),
    })
}

/// The columns of a listing: those [`record`] decodes, the log left out.
macro_rules! list_select {
    () => {
        "SELECT id, task, queue, state, args, attempt, max_retries, result, error, usage,
                progress, NULL::text, plugin, enqueued_at, updated_at, headers::text FROM tasks
         WHERE (expires_at IS NULL OR expires_at > (extract(epoch from clock_timestamp()) * 1000)::bigint)
           AND ($2::text IS NULL OR EXISTS (
                SELECT 1 FROM jsonb_array_elements(headers) h
                WHERE h ->> 0 = $2::text AND h ->> 1 = $3::text))"
    };
}

#[async_trait]
impl ResultBackend for PostgresStore {
    async fn create(&self, e: &Envelope) -> StoreResult<()> {
        // One statement: the row and its first history entry commit together.
        sqlx::query(concat!(
            "WITH now AS (SELECT ",
            now_ms!(),
            " AS t),
             created AS (
                 INSERT INTO tasks (id, task, queue, state, args, attempt, max_retries,
                                    enqueued_at, updated_at, headers)
                 SELECT $1, $2, $3, 'queued', $4, $5, $6, $7, now.t, $9::jsonb FROM now RETURNING id)
             INSERT INTO task_history (id, at, state, attempt, detail)
             SELECT id, now.t, 'queued', $5, $8 FROM created, now"
        ))
        .bind(&e.id)
        .bind(&e.task)
        .bind(&e.queue)
        .bind(&e.args)
        .bind(i64::from(e.attempt))
        .bind(i64::from(e.max_retries))
        .bind(e.enqueued_at)
        .bind(queued_detail(e, now_ms()))
        .bind(e.headers_json())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn transition(&self, id: &str, t: Transition) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The row lock serialises transitions of one job, so two workers
        // cannot both mark it succeeded.
        let current: Option<String> =
            // A record past its TTL is gone, even before it is reclaimed.
            sqlx::query_scalar(concat!(
                "SELECT state FROM tasks WHERE id = $1 AND (expires_at IS NULL OR expires_at > ",
                now_ms!(),
                ") FOR UPDATE"
            ))
            .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let Some(current) = current else {
            return Err(StoreError::NotFound(format!("job {id}")));
        };
        // A succeeded record is final (see the trait).
        if state(&current)? == TaskState::Succeeded {
            return Ok(false);
        }
        let attempt = i64::from(t.attempt);
        if let Some(outcome) = &t.outcome {
            sqlx::query(concat!(
                "UPDATE tasks SET state = $2, attempt = $3, updated_at = ",
                now_ms!(),
                ", result = $4, error = $5, usage = $6, log = $7,
                        progress = COALESCE($8, progress), plugin = COALESCE($9, plugin)
                 WHERE id = $1"
            ))
            .bind(id)
            .bind(t.state.as_str())
            .bind(attempt)
            .bind(outcome.result.as_ref().map(to_json).transpose()?)
            .bind(outcome.error.as_ref().map(to_json).transpose()?)
            .bind(to_json(&outcome.usage)?)
            .bind(to_json(&outcome.log)?)
            .bind(outcome.progress.as_ref().map(to_json).transpose()?)
            .bind(t.plugin.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        } else {
            sqlx::query(concat!(
                "UPDATE tasks SET state = $2, attempt = $3, updated_at = ",
                now_ms!(),
                ", plugin = COALESCE($4, plugin)
                 WHERE id = $1"
            ))
            .bind(id)
            .bind(t.state.as_str())
            .bind(attempt)
            .bind(t.plugin.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        sqlx::query(concat!(
            "INSERT INTO task_history (id, at, state, attempt, detail) VALUES ($1, ",
            now_ms!(),
            ", $2, $3, $4)"
        ))
        .bind(id)
        .bind(t.state.as_str())
        .bind(attempt)
        .bind(t.detail.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn set_progress(&self, id: &str, progress: &Progress) -> StoreResult<()> {
        sqlx::query(concat!(
            "UPDATE tasks SET progress = $2, updated_at = ",
            now_ms!(),
            " WHERE id = $1"
        ))
        .bind(id)
        .bind(to_json(progress)?)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<TaskRecord>> {
        let row = sqlx::query(
            "SELECT id, task, queue, state, args, attempt, max_retries, result, error, usage,
                    progress, log, plugin, enqueued_at, updated_at, headers::text
             FROM tasks WHERE id = $1
               AND (expires_at IS NULL OR expires_at > (extract(epoch from clock_timestamp()) * 1000)::bigint)",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let mut record = record(&row)?;
        let rows = sqlx::query(
            "SELECT at, state, attempt, detail FROM task_history WHERE id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        for r in rows {
            record.history.push(HistoryEntry {
                at: r.try_get(0).map_err(db)?,
                state: state(r.try_get(1).map_err(db)?)?,
                attempt: sql_u32(r.try_get(2).map_err(db)?),
                detail: r.try_get(3).map_err(db)?,
            });
        }
        Ok(Some(record))
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskRecord>> {
        let limit = filter.effective_limit();
        // Listings leave out logs and history.
        let (name, value) = filter
            .header
            .as_ref()
            .map(|(n, v)| (Some(n.as_str()), Some(v.as_str())))
            .unwrap_or_default();
        let query = match (&filter.state, &filter.task) {
            (None, None) => sqlx::query(concat!(
                list_select!(),
                " ORDER BY enqueued_at DESC, id DESC LIMIT $1"
            ))
            .bind(sql_int(limit))
            .bind(name)
            .bind(value),
            (Some(state), None) => sqlx::query(concat!(
                list_select!(),
                " AND state = $4 ORDER BY enqueued_at DESC, id DESC LIMIT $1"
            ))
            .bind(sql_int(limit))
            .bind(name)
            .bind(value)
            .bind(state.as_str()),
            (None, Some(task)) => sqlx::query(concat!(
                list_select!(),
                " AND task = $4 ORDER BY enqueued_at DESC, id DESC LIMIT $1"
            ))
            .bind(sql_int(limit))
            .bind(name)
            .bind(value)
            .bind(task),
            (Some(state), Some(task)) => sqlx::query(concat!(
                list_select!(),
                " AND state = $4 AND task = $5 ORDER BY enqueued_at DESC, id DESC LIMIT $1"
            ))
            .bind(sql_int(limit))
            .bind(name)
            .bind(value)
            .bind(state.as_str())
            .bind(task),
        };
        let rows = query.fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(record).collect()
    }

    async fn expire(&self, id: &str, ttl: std::time::Duration) -> StoreResult<bool> {
        // Server time on both sides, so client clock skew cannot matter.
        // Rows another transaction holds are left for a later call (waiting
        // for them, in no set order, could deadlock).
        sqlx::query(
            "WITH gone AS (
                 DELETE FROM tasks WHERE id IN (
                     SELECT id FROM tasks
                     WHERE expires_at <= (extract(epoch from clock_timestamp()) * 1000)::bigint
                     LIMIT 500 FOR UPDATE SKIP LOCKED)
                 RETURNING id)
             DELETE FROM task_history WHERE id IN (SELECT id FROM gone)",
        )
        .execute(&self.pool)
        .await
        .map_err(db)?;
        let updated = sqlx::query(
            "UPDATE tasks SET expires_at = (extract(epoch from clock_timestamp()) * 1000)::bigint + $2
             WHERE id = $1",
        )
        .bind(id)
        .bind(xylem_core::time::ms(ttl))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(updated.rows_affected() == 1)
    }
}
