//! [`ResultBackend`] on SQLite: a `tasks` row per job and a `task_history`
//! row per transition. The record writes the broker's hot path shares
//! (a transition, a record written anew, expiry) live here too.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use xylem_core::codec::{sql_u32, to_json};
use xylem_core::record::{HistoryEntry, TaskFilter, TaskRecord, TaskState, Transition};
use xylem_core::store::{ResultBackend, StoreError, StoreResult};
use xylem_core::time::{Millis, now_ms};
use xylem_core::{Envelope, Progress};

use crate::{SqliteStore, backend, corrupt, exec};

const COLUMNS: &str = "id, task, queue, state, args, attempt, max_retries, result, error, usage,
                       progress, log, plugin, enqueued_at, updated_at, headers";

fn parse<T: serde::de::DeserializeOwned>(text: Option<String>) -> StoreResult<Option<T>> {
    text.map(|t| serde_json::from_str(&t).map_err(corrupt))
        .transpose()
}

pub(crate) fn state(text: &str) -> StoreResult<TaskState> {
    text.parse().map_err(StoreError::Corrupt)
}

/// Appends a history entry.
pub(crate) fn insert_history(
    conn: &Connection,
    id: &str,
    at: Millis,
    state: TaskState,
    attempt: u32,
    detail: Option<&str>,
) -> StoreResult<()> {
    exec(
        conn,
        "INSERT INTO task_history (id, at, state, attempt, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, at, state.as_str(), attempt, detail],
    )
    .map(drop)
    .map_err(backend)
}

/// The state of `id`'s record, unless it has expired (an expired row
/// may linger until [`reclaim_expired`] deletes it: it counts as gone).
pub(crate) fn live_state(
    conn: &Connection,
    id: &str,
    now: Millis,
) -> StoreResult<Option<TaskState>> {
    let text: Option<String> = conn
        .prepare_cached(
            "SELECT state FROM tasks WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
        )
        .and_then(|mut stmt| stmt.query_row(params![id, now], |r| r.get(0)).optional())
        .map_err(backend)?;
    text.as_deref().map(state).transpose()
}

/// Writes `envelope`'s record anew in `state` with one history entry
/// (as `TaskRecord::from_envelope`), replacing an expired row and its
/// history if one lingers; no expiry.
pub(crate) fn write_new(
    conn: &Connection,
    envelope: &Envelope,
    state: TaskState,
    detail: Option<&str>,
    now: Millis,
) -> StoreResult<()> {
    exec(
        conn,
        "DELETE FROM task_history WHERE id = ?1",
        [&envelope.id],
    )
    .map_err(backend)?;
    exec(
        conn,
        "INSERT OR REPLACE INTO tasks
             (id, task, queue, state, args, attempt, max_retries, enqueued_at, updated_at, headers)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            envelope.id,
            envelope.task,
            envelope.queue,
            state.as_str(),
            envelope.args,
            envelope.attempt,
            envelope.max_retries,
            envelope.enqueued_at,
            now,
            envelope.headers_json()
        ],
    )
    .map_err(backend)?;
    insert_history(conn, &envelope.id, now, state, envelope.attempt, detail)
}

/// Writes transition `t` to `id`'s record (the caller has checked that
/// the record exists and is not final): state, attempt, the outcome,
/// progress and plugin if given, a history entry, and the expiry
/// `expires_at` if given. Two statements.
pub(crate) fn write_transition(
    conn: &Connection,
    id: &str,
    t: &Transition,
    now: Millis,
    expires_at: Option<Millis>,
) -> StoreResult<()> {
    match &t.outcome {
        Some(outcome) => exec(
            conn,
            "UPDATE tasks SET state = ?2, attempt = ?3, updated_at = ?4, result = ?5, error = ?6,
                    usage = ?7, log = ?8, progress = COALESCE(?9, progress),
                    plugin = COALESCE(?10, plugin), expires_at = COALESCE(?11, expires_at)
             WHERE id = ?1",
            params![
                id,
                t.state.as_str(),
                t.attempt,
                now,
                outcome.result.as_ref().map(to_json).transpose()?,
                outcome.error.as_ref().map(to_json).transpose()?,
                to_json(&outcome.usage)?,
                to_json(&outcome.log)?,
                outcome.progress.as_ref().map(to_json).transpose()?,
                t.plugin,
                expires_at,
            ],
        ),
        None => exec(
            conn,
            "UPDATE tasks SET state = ?2, attempt = ?3, updated_at = ?4,
                    plugin = COALESCE(?5, plugin), expires_at = COALESCE(?6, expires_at)
             WHERE id = ?1",
            params![id, t.state.as_str(), t.attempt, now, t.plugin, expires_at],
        ),
    }
    .map_err(backend)?;
    insert_history(conn, id, now, t.state, t.attempt, t.detail.as_deref())
}

/// Deletes a batch of records (with their history) whose expiry passed:
/// bounded, so a caller never pays for a large backlog at once.
pub(crate) fn reclaim_expired(conn: &Connection, now: Millis) -> StoreResult<()> {
    exec(
        conn,
        "DELETE FROM task_history WHERE id IN
           (SELECT id FROM tasks WHERE expires_at <= ?1 LIMIT 500)",
        [now],
    )
    .map_err(backend)?;
    exec(
        conn,
        "DELETE FROM tasks WHERE id IN
           (SELECT id FROM tasks WHERE expires_at <= ?1 LIMIT 500)",
        [now],
    )
    .map_err(backend)?;
    Ok(())
}

/// The raw columns of a `tasks` row; decoded outside rusqlite's closure.
struct RawRecord {
    id: String,
    task: String,
    queue: String,
    state: String,
    args: String,
    attempt: i64,
    max_retries: i64,
    result: Option<String>,
    error: Option<String>,
    usage: Option<String>,
    progress: Option<String>,
    log: Option<String>,
    plugin: Option<String>,
    enqueued_at: i64,
    updated_at: i64,
    headers: Option<String>,
}

impl RawRecord {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(0)?,
            task: r.get(1)?,
            queue: r.get(2)?,
            state: r.get(3)?,
            args: r.get(4)?,
            attempt: r.get(5)?,
            max_retries: r.get(6)?,
            result: r.get(7)?,
            error: r.get(8)?,
            usage: r.get(9)?,
            progress: r.get(10)?,
            log: r.get(11)?,
            plugin: r.get(12)?,
            enqueued_at: r.get(13)?,
            updated_at: r.get(14)?,
            headers: r.get(15)?,
        })
    }

    fn decode(self) -> StoreResult<TaskRecord> {
        Ok(TaskRecord {
            state: state(&self.state)?,
            id: self.id,
            task: self.task,
            queue: self.queue,
            args: self.args,
            attempt: sql_u32(self.attempt),
            max_retries: sql_u32(self.max_retries),
            result: parse(self.result)?,
            error: parse(self.error)?,
            usage: parse(self.usage)?,
            progress: parse(self.progress)?,
            log: parse(self.log)?.unwrap_or_default(),
            plugin: self.plugin,
            headers: parse(self.headers)?.unwrap_or_default(),
            enqueued_at: self.enqueued_at,
            updated_at: self.updated_at,
            history: Vec::new(),
        })
    }
}

#[async_trait]
impl ResultBackend for SqliteStore {
    async fn create(&self, envelope: &Envelope) -> StoreResult<()> {
        let e = envelope.clone();
        self.with_conn(move |conn| {
            let tx = crate::begin(conn)?;
            let now = now_ms();
            exec(&tx,
                "INSERT INTO tasks (id, task, queue, state, args, attempt, max_retries, enqueued_at, updated_at, headers)
                 VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9)",
                params![e.id, e.task, e.queue, e.args, e.attempt, e.max_retries, e.enqueued_at, now, e.headers_json()],
            )
            .map_err(backend)?;
            let detail = xylem_core::store::queued_detail(&e, now);
            exec(&tx,
                "INSERT INTO task_history (id, at, state, attempt, detail) VALUES (?1, ?2, 'queued', ?3, ?4)",
                params![e.id, now, e.attempt, detail],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn transition(&self, id: &str, t: Transition) -> StoreResult<bool> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            let tx = crate::begin(conn)?;
            let current: Option<String> = tx
                // A record past its TTL is gone, even before it is reclaimed.
                .prepare_cached(
                    "SELECT state FROM tasks
                     WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![&id, now_ms()], |r| r.get(0))
                        .optional()
                })
                .map_err(backend)?;
            let Some(current) = current else {
                return Err(StoreError::NotFound(format!("job {id}")));
            };
            // A succeeded record is final (see the trait).
            if state(&current)? == TaskState::Succeeded {
                return Ok(false);
            }
            write_transition(&tx, &id, &t, now_ms(), None)?;
            tx.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn set_progress(&self, id: &str, progress: &Progress) -> StoreResult<()> {
        let (id, progress) = (id.to_owned(), to_json(progress)?);
        self.with_conn(move |conn| {
            exec(
                conn,
                "UPDATE tasks SET progress = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, progress, now_ms()],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn get(&self, id: &str) -> StoreResult<Option<TaskRecord>> {
        let id = id.to_owned();
        self.with_read(move |conn| {
            let raw = conn
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM tasks
                         WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?2)"
                    ),
                    params![&id, now_ms()],
                    RawRecord::from_row,
                )
                .optional()
                .map_err(backend)?;
            let Some(raw) = raw else { return Ok(None) };
            let mut record = raw.decode()?;
            let mut stmt = conn
                .prepare("SELECT at, state, attempt, detail FROM task_history WHERE id = ?1 ORDER BY seq")
                .map_err(backend)?;
            let rows = stmt
                .query_map([&id], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get(3)?))
                })
                .map_err(backend)?;
            for row in rows {
                let (at, st, attempt, detail) = row.map_err(backend)?;
                record.history.push(HistoryEntry {
                    at,
                    state: state(&st)?,
                    attempt: sql_u32(attempt),
                    detail,
                });
            }
            Ok(Some(record))
        })
        .await
    }

    async fn list(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskRecord>> {
        let filter = filter.clone();
        self.with_read(move |conn| {
            let mut sql = String::from(
                "SELECT id, task, queue, state, args, attempt, max_retries, result, error, usage,
                        progress, NULL, plugin, enqueued_at, updated_at, headers FROM tasks
                 WHERE (expires_at IS NULL OR expires_at > ?)",
            );
            let mut args: Vec<String> = vec![now_ms().to_string()];
            if let Some(state) = filter.state {
                sql.push_str(" AND state = ?");
                args.push(state.as_str().to_owned());
            }
            if let Some(task) = &filter.task {
                sql.push_str(" AND task = ?");
                args.push(task.clone());
            }
            if let Some((name, value)) = &filter.header {
                sql.push_str(
                    " AND EXISTS (SELECT 1 FROM json_each(tasks.headers)
                                  WHERE json_extract(value, '$[0]') = ?
                                    AND json_extract(value, '$[1]') = ?)",
                );
                args.push(name.clone());
                args.push(value.clone());
            }
            let limit = filter.effective_limit();
            sql.push_str(&format!(
                " ORDER BY enqueued_at DESC, id DESC LIMIT {limit}"
            ));
            let mut stmt = conn.prepare(&sql).map_err(backend)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), RawRecord::from_row)
                .map_err(backend)?;
            let mut records = Vec::new();
            for row in rows {
                records.push(row.map_err(backend)?.decode()?);
            }
            Ok(records)
        })
        .await
    }

    async fn expire(&self, id: &str, ttl: std::time::Duration) -> StoreResult<bool> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            let now = now_ms();
            let tx = crate::begin(conn)?;
            // Reclaim a batch of what has already expired.
            reclaim_expired(&tx, now)?;
            let n = exec(
                &tx,
                "UPDATE tasks SET expires_at = ?2 WHERE id = ?1",
                params![id, now + xylem_core::time::ms(ttl)],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }
}
