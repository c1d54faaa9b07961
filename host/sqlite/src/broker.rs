//! [`Broker`] on SQLite: a `queue` table claimed in `BEGIN IMMEDIATE`
//! transactions, leases as (counter, expiry) pairs.
//!
//! The hot path, each call one transaction:
//! - `enqueue`: the records, their first history entries and the queue
//!   entries as multi-row INSERTs (three statements per 64 jobs);
//! - `claim`: one `UPDATE ... RETURNING` leases the jobs, then per job one
//!   `UPDATE tasks` and one history INSERT;
//! - `complete`: per job one lookup (record state and lease), one record
//!   UPDATE, one history INSERT and one queue statement;
//! - `extend_many`: one UPDATE per lease.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::ToSql;
use rusqlite::{Connection, ErrorCode, params, params_from_iter};
use xylem_core::Envelope;
use xylem_core::codec::{from_json, sql_int, sql_u32, sql_u64, to_json};
use xylem_core::record::TaskState;
use xylem_core::store::{
    Broker, ClaimPlan, Completed, Completion, DeadFilter, DeadJob, DeadLetters, Delivery, Nack,
    QueueStats, REPLAY_DETAIL, Settle, Statistics, StoreError, StoreResult, check_batch_ids,
    conflict_cleared, queued_detail, replay_envelope, replay_transition, running_detail,
};
use xylem_core::time::{Millis, ms, now_ms};

use crate::results::{
    insert_history, live_state, reclaim_expired, state, write_new, write_transition,
};
use crate::{SqliteStore, backend, begin, exec};

// Queue entry statuses. The per-job statements spell them as literals
// (0, 1, 2) so their SQL is a constant the statement cache finds without
// formatting a string per job.
const READY: i64 = 0;
const LEASED: i64 = 1;
const DEAD: i64 = 2;

/// Most rows per multi-row INSERT. A batch is written in chunks of 64,
/// then 32, 16, ... 1 rows for the rest, so only a few statement shapes
/// per table ever enter the statement cache.
const MAX_ROWS: usize = 64;

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

/// Inserts `rows` (`W` values each, bound in order to the `?`s of `row`)
/// with `head` (`INSERT INTO t (cols) VALUES `), in as few statements as
/// [`MAX_ROWS`] allows.
fn insert_rows<const W: usize>(
    conn: &Connection,
    head: &str,
    row: &str,
    rows: &[[&dyn ToSql; W]],
) -> StoreResult<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        // The largest power of two that fits, up to MAX_ROWS.
        let n = if rest.len() >= MAX_ROWS {
            MAX_ROWS
        } else {
            1 << rest.len().ilog2()
        };
        let (chunk, tail) = rest.split_at(n);
        let mut sql = String::with_capacity(head.len() + n * (row.len() + 2));
        sql.push_str(head);
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(row);
        }
        let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
        for (r, values) in chunk.iter().enumerate() {
            for (k, value) in values.iter().enumerate() {
                stmt.raw_bind_parameter(r * W + k + 1, *value)
                    .map_err(backend)?;
            }
        }
        stmt.raw_execute().map_err(backend)?;
        rest = tail;
    }
    Ok(())
}

/// Leases up to `max` jobs of `queues` (all if empty) that may run at
/// `now`, until `lease_until`: ready jobs that are due and jobs whose
/// lease expired, highest priority first, then oldest. Each kind is taken
/// in claim order from its own index and stops at the limit, so the cost
/// does not grow with the number of jobs waiting.
fn lease_due(
    tx: &Connection,
    queues: &[String],
    max: usize,
    lease_until: Millis,
    now: Millis,
) -> StoreResult<Vec<Delivery>> {
    let mut queues = queues.to_vec();
    queues.sort();
    queues.dedup();
    // Ready jobs, each source walked in claim order along an index and
    // cut at the limit. All queues: queue_due (the planner, without
    // statistics, would rather take queue_ready for its equality on
    // `status` and sort every ready job). Named queues: queue_ready, one
    // walk per queue (`status`, `queue` fixed, then claim order).
    let ready = |filter: &str, index: &str| {
        format!(
            "SELECT * FROM (SELECT id, priority, run_at FROM queue{index}
                            WHERE status = {READY} AND run_at <= ?2{filter}
                            ORDER BY priority DESC, run_at, id LIMIT ?3)"
        )
    };
    let mut sources: Vec<String> = if queues.is_empty() {
        vec![ready("", " INDEXED BY queue_due")]
    } else {
        (0..queues.len())
            .map(|i| ready(&format!(" AND queue = ?{}", i + 4), ""))
            .collect()
    };
    // Expired leases: few, found by queue_leases.
    let filter = numbered_in_clause("queue", queues.len(), 4);
    sources.push(format!(
        "SELECT * FROM (SELECT id, priority, run_at FROM queue
                        WHERE status = {LEASED} AND lease_until <= ?2{filter}
                        ORDER BY priority DESC, run_at, id LIMIT ?3)"
    ));
    let sql = format!(
        "UPDATE queue SET status = {LEASED}, lease = lease + 1, lease_until = ?1,
                deliveries = deliveries + 1
         WHERE id IN (
             SELECT id FROM ({})
             ORDER BY priority DESC, run_at, id LIMIT ?3)
         RETURNING envelope, lease, deliveries",
        sources.join(" UNION ALL ")
    );
    let mut values: Vec<rusqlite::types::Value> = vec![
        lease_until.into(),
        now.into(),
        i64::try_from(max).unwrap_or(i64::MAX).into(),
    ];
    values.extend(queues.into_iter().map(Into::into));
    let mut stmt = tx.prepare_cached(&sql).map_err(backend)?;
    let mut rows = stmt.query(params_from_iter(values)).map_err(backend)?;
    let mut deliveries = Vec::new();
    while let Some(row) = rows.next().map_err(backend)? {
        let envelope: String = row.get(0).map_err(backend)?;
        deliveries.push(Delivery {
            envelope: from_json::<Envelope>(&envelope)?,
            lease: sql_u64(row.get(1).map_err(backend)?),
            deliveries: sql_u32(row.get(2).map_err(backend)?),
        });
    }
    Ok(deliveries)
}

/// Applies [`ClaimPlan`] to a job just leased: marks its record running
/// (or writes it anew); false if the job must not run (its record already
/// succeeded), and then its queue entry is gone.
fn start_run(tx: &Connection, delivery: &Delivery, worker: &str, now: Millis) -> StoreResult<bool> {
    let envelope = &delivery.envelope;
    let detail = running_detail(worker, delivery.deliveries, envelope.attempt);
    // The common case in one statement: its WHERE is `ClaimPlan::Run`'s
    // condition (a live record that has not succeeded).
    let updated = exec(
        tx,
        "UPDATE tasks SET state = 'running', attempt = ?2, updated_at = ?3
         WHERE id = ?1 AND state <> 'succeeded' AND (expires_at IS NULL OR expires_at > ?3)",
        params![envelope.id, envelope.attempt, now],
    )
    .map_err(backend)?;
    let plan = if updated == 1 {
        ClaimPlan::Run
    } else {
        ClaimPlan::for_record(live_state(tx, &envelope.id, now)?)
    };
    match plan {
        ClaimPlan::Run if updated == 1 => {
            insert_history(
                tx,
                &envelope.id,
                now,
                TaskState::Running,
                envelope.attempt,
                Some(&detail),
            )?;
            Ok(true)
        }
        // (`Run` without the update cannot happen inside the transaction;
        // writing the record anew is the safe answer if it did.)
        ClaimPlan::Run | ClaimPlan::Recreate => {
            write_new(tx, envelope, TaskState::Running, Some(&detail), now)?;
            Ok(true)
        }
        ClaimPlan::Drop => {
            exec(tx, "DELETE FROM queue WHERE id = ?1", [&envelope.id]).map_err(backend)?;
            Ok(false)
        }
    }
}

/// Applies a nack under lease `lease` (Retry requeues after its delay,
/// Release puts the job back as it was, DeadLetter moves it to the DLQ);
/// false if the lease is no longer held.
fn settle_nack(
    conn: &Connection,
    id: &str,
    lease: u64,
    action: &Nack,
    now: Millis,
) -> StoreResult<bool> {
    let lease = sql_int(lease);
    let n = match action {
        Nack::Retry { envelope, delay } => exec(
            conn,
            "UPDATE queue SET status = 0, envelope = ?3, run_at = ?4, lease_until = 0
             WHERE id = ?1 AND lease = ?2 AND status = 1",
            params![id, lease, to_json(envelope)?, now + ms(*delay)],
        ),
        Nack::Release => exec(
            conn,
            "UPDATE queue SET status = 0, lease_until = 0
             WHERE id = ?1 AND lease = ?2 AND status = 1",
            params![id, lease],
        ),
        Nack::DeadLetter { reason } => exec(
            conn,
            "UPDATE queue SET status = 2, dead_reason = ?3, dead_at = ?4, lease_until = 0
             WHERE id = ?1 AND lease = ?2 AND status = 1",
            params![id, lease, reason, now],
        ),
    }
    .map_err(backend)?;
    Ok(n == 1)
}

/// Removes a job under lease `lease`; false if the lease is no longer held.
fn settle_ack(conn: &Connection, id: &str, lease: u64) -> StoreResult<bool> {
    exec(
        conn,
        "DELETE FROM queue WHERE id = ?1 AND lease = ?2 AND status = 1",
        params![id, sql_int(lease)],
    )
    .map(|n| n == 1)
    .map_err(backend)
}

/// Applies one completion (see [`Completion::plan`]); true if the job
/// went back to its queue (workers may be waiting for it).
fn apply_completion(
    tx: &Connection,
    c: &Completion,
    now: Millis,
) -> StoreResult<(Completed, bool)> {
    // The record's state and whether the lease is held, in one lookup.
    let (current, held): (Option<String>, bool) = tx
        .prepare_cached(
            "SELECT (SELECT state FROM tasks
                     WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?3)),
                    EXISTS (SELECT 1 FROM queue WHERE id = ?1 AND lease = ?2 AND status = 1)",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![c.id, sql_int(c.lease), now], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
        })
        .map_err(backend)?;
    let current = current.as_deref().map(state).transpose()?;
    let plan = c.plan(current, held);
    // Claims write a missing record anew, so there is one; if it expired
    // meanwhile there is nothing to write to, and the queue is still settled.
    if plan.record && current.is_some() {
        let expires_at = c.result_ttl.map(|ttl| now + ms(ttl));
        write_transition(tx, &c.id, &c.transition, now, expires_at)?;
    }
    let mut requeued = false;
    if plan.settle {
        match &c.settle {
            Settle::Ack => {
                settle_ack(tx, &c.id, c.lease)?;
            }
            Settle::Nack(action) => {
                requeued = settle_nack(tx, &c.id, c.lease, action, now)?
                    && !matches!(action, Nack::DeadLetter { .. });
            }
        }
    } else if plan.remove_entry {
        exec(tx, "DELETE FROM queue WHERE id = ?1", [&c.id]).map_err(backend)?;
    }
    Ok((plan.result, requeued))
}

/// Writes a batch of new jobs, records and queue entries, in one
/// transaction; an id in use fails it (see [`is_conflict`]).
fn insert_new(conn: &mut Connection, envelopes: &[Envelope]) -> StoreResult<()> {
    let jobs = envelopes
        .iter()
        .map(|e| Ok((to_json(e)?, e.run_at())))
        .collect::<StoreResult<Vec<_>>>()?;
    let tx = begin(conn)?;
    let now = now_ms();
    let details: Vec<Option<String>> = envelopes.iter().map(|e| queued_detail(e, now)).collect();
    let headers: Vec<Option<String>> = envelopes.iter().map(Envelope::headers_json).collect();
    let tasks: Vec<[&dyn ToSql; 9]> = envelopes
        .iter()
        .zip(&headers)
        .map(|(e, headers)| {
            [
                &e.id as &dyn ToSql,
                &e.task,
                &e.queue,
                &e.args,
                &e.attempt,
                &e.max_retries,
                &e.enqueued_at,
                &now,
                headers,
            ]
        })
        .collect();
    insert_rows(
        &tx,
        "INSERT INTO tasks
             (id, task, queue, state, args, attempt, max_retries, enqueued_at, updated_at, headers)
         VALUES ",
        "(?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)",
        &tasks,
    )?;
    let history: Vec<[&dyn ToSql; 4]> = envelopes
        .iter()
        .zip(&details)
        .map(|(e, detail)| [&e.id as &dyn ToSql, &now, &e.attempt, detail])
        .collect();
    insert_rows(
        &tx,
        "INSERT INTO task_history (id, at, state, attempt, detail) VALUES ",
        "(?, ?, 'queued', ?, ?)",
        &history,
    )?;
    let queue: Vec<[&dyn ToSql; 5]> = envelopes
        .iter()
        .zip(&jobs)
        .map(|(e, (json, run_at))| [&e.id as &dyn ToSql, &e.queue, &e.priority, run_at, json])
        .collect();
    insert_rows(
        &tx,
        "INSERT INTO queue (id, queue, priority, run_at, envelope) VALUES ",
        "(?, ?, ?, ?, ?)",
        &queue,
    )?;
    drop((tasks, history, queue));
    tx.commit().map_err(backend)
}

/// Whether `e` is SQLite refusing a row whose key is taken.
fn is_conflict(e: &StoreError) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<rusqlite::Error>())
        .is_some_and(|e| e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation))
}

/// After an enqueue hit an id in use: a record past its TTL that nothing
/// has reclaimed yet is gone, its id free again (see `Broker::enqueue`),
/// so such records are forgotten and the batch tried once more; otherwise
/// the batch is refused, naming the id.
fn enqueue_after_conflict(conn: &mut Connection, envelopes: &[Envelope]) -> StoreResult<()> {
    let now = now_ms();
    let tx = begin(conn)?;
    let mut freed = 0;
    for e in envelopes {
        let gone = exec(
            &tx,
            "DELETE FROM tasks WHERE id = ?1 AND expires_at <= ?2",
            params![e.id, now],
        )
        .map_err(backend)?;
        if gone > 0 {
            exec(&tx, "DELETE FROM task_history WHERE id = ?1", [&e.id]).map_err(backend)?;
            freed += gone;
        }
    }
    tx.commit().map_err(backend)?;
    if freed > 0 {
        match insert_new(conn, envelopes) {
            Err(e) if is_conflict(&e) => {}
            done => return done,
        }
    }
    for e in envelopes {
        let in_use: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM queue WHERE id = ?1)
                     OR EXISTS (SELECT 1 FROM tasks WHERE id = ?1)",
                [&e.id],
                |row| row.get(0),
            )
            .map_err(backend)?;
        if in_use {
            return Err(StoreError::Duplicate(e.id.clone()));
        }
    }
    // Freed meanwhile by another process: trying again may work.
    Err(conflict_cleared())
}

#[async_trait]
impl Broker for SqliteStore {
    async fn enqueue(&self, envelopes: &[Envelope]) -> StoreResult<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        check_batch_ids(envelopes)?;
        let envelopes = envelopes.to_vec();
        self.with_conn(move |conn| match insert_new(conn, &envelopes) {
            Err(e) if is_conflict(&e) => enqueue_after_conflict(conn, &envelopes),
            done => done,
        })
        .await?;
        // Once per batch: every worker of this process waiting now, or the
        // next one to wait.
        self.published.notify_waiters();
        self.published.notify_one();
        Ok(())
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
        let queues = queues.to_vec();
        let worker = worker.to_owned();
        // At least 1 ms: a job leased in this call must not count as
        // expired when the loop below looks again at the same `now`.
        let lease_ms = ms(lease).max(1);
        self.with_conn(move |conn| {
            let tx = begin(conn)?;
            let now = now_ms();
            let mut claimed = Vec::new();
            // Jobs dropped (already succeeded) free their places: look again.
            while claimed.len() < max {
                let batch = lease_due(&tx, &queues, max - claimed.len(), now + lease_ms, now)?;
                let leased = batch.len();
                let mut dropped = false;
                for delivery in batch {
                    if start_run(&tx, &delivery, &worker, now)? {
                        claimed.push(delivery);
                    } else {
                        dropped = true;
                    }
                }
                if leased == 0 || !dropped {
                    break;
                }
            }
            tx.commit().map_err(backend)?;
            claimed.sort_by(|a, b| a.envelope.claim_order(&b.envelope));
            Ok(claimed)
        })
        .await
    }

    async fn complete(&self, completions: &[Completion]) -> StoreResult<Vec<Completed>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let completions = completions.to_vec();
        let (results, wake) = self
            .with_conn(move |conn| {
                let tx = begin(conn)?;
                let now = now_ms();
                let mut results = Vec::with_capacity(completions.len());
                let mut wake = false;
                for c in &completions {
                    let (result, requeued) = apply_completion(&tx, c, now)?;
                    results.push(result);
                    wake |= requeued;
                }
                // Records given an expiry now: reclaim a batch of those
                // whose expiry passed, as `expire` does.
                if completions.iter().any(|c| c.result_ttl.is_some()) {
                    reclaim_expired(&tx, now)?;
                }
                tx.commit().map_err(backend)?;
                Ok((results, wake))
            })
            .await?;
        if wake {
            self.published.notify_one();
        }
        Ok(results)
    }

    async fn extend_many(&self, leases: &[(String, u64)], by: Duration) -> StoreResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let leases = leases.to_vec();
        self.with_conn(move |conn| {
            let tx = begin(conn)?;
            let until = now_ms() + ms(by);
            let mut held = Vec::with_capacity(leases.len());
            {
                let mut stmt = tx
                    .prepare_cached(
                        "UPDATE queue SET lease_until = ?1 WHERE id = ?2 AND lease = ?3 AND status = 1",
                    )
                    .map_err(backend)?;
                for (id, lease) in &leases {
                    held.push(stmt.execute(params![until, id, sql_int(*lease)]).map_err(backend)? == 1);
                }
            }
            tx.commit().map_err(backend)?;
            Ok(held)
        })
        .await
    }

    async fn wait_for_jobs(&self, timeout: Duration) {
        // Other processes cannot notify us: the timeout is the poll period.
        let _ = tokio::time::timeout(timeout, self.published.notified()).await;
    }
}

#[async_trait]
impl DeadLetters for SqliteStore {
    async fn dead_jobs(&self, filter: &DeadFilter, limit: usize) -> StoreResult<Vec<DeadJob>> {
        let (where_sql, args) = dead_where(filter);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_read(move |conn| {
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
                    envelope: from_json::<Envelope>(&envelope)?,
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
                let tx = begin(conn)?;
                let dead: Vec<(String, String)> = {
                    let mut stmt = tx
                        .prepare(&format!("SELECT id, envelope FROM queue WHERE {where_sql}"))
                        .map_err(backend)?;
                    let rows = stmt
                        .query_map(params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(backend)?;
                    rows.collect::<Result<_, _>>().map_err(backend)?
                };
                let now = now_ms();
                let run_at = now + ms(delay);
                let mut ids = Vec::new();
                for (id, text) in dead {
                    let envelope = replay_envelope(&from_json::<Envelope>(&text)?, run_at);
                    exec(
                        &tx,
                        &format!(
                            "UPDATE queue SET status = {READY}, envelope = ?2, run_at = ?3,
                                    dead_reason = NULL, dead_at = NULL WHERE id = ?1"
                        ),
                        params![id, to_json(&envelope)?, run_at],
                    )
                    .map_err(backend)?;
                    // The record goes back to `queued`, its expiry cleared;
                    // written anew from the envelope if it expired.
                    let queued = replay_transition(&envelope);
                    let updated = exec(
                        &tx,
                        "UPDATE tasks SET state = ?2, attempt = ?3, updated_at = ?4, expires_at = NULL
                         WHERE id = ?1 AND (expires_at IS NULL OR expires_at > ?4)",
                        params![id, queued.state.as_str(), queued.attempt, now],
                    )
                    .map_err(backend)?;
                    if updated == 1 {
                        insert_history(&tx, &id, now, queued.state, queued.attempt, queued.detail.as_deref())?;
                    } else {
                        write_new(&tx, &envelope, TaskState::Queued, Some(REPLAY_DETAIL), now)?;
                    }
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
            .map(|n| u64::try_from(n).unwrap_or(u64::MAX))
            .map_err(backend)
        })
        .await
    }
}

#[async_trait]
impl Statistics for SqliteStore {
    async fn queue_stats(&self) -> StoreResult<Vec<QueueStats>> {
        self.with_read(|conn| {
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
                        ready: sql_u64(r.get(1)?),
                        delayed: sql_u64(r.get(2)?),
                        running: sql_u64(r.get(3)?),
                        dead: sql_u64(r.get(4)?),
                    })
                })
                .map_err(backend)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(backend)
        })
        .await
    }
}
