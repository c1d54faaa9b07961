//! The hot path on PostgreSQL: enqueue, claim, complete and extend a
//! whole batch in a constant number of statements (array binds spread
//! with `unnest`, data-modifying CTEs), whatever the batch's size.
//!
//! Locking: a claim locks queue rows with `SKIP LOCKED` (it never waits
//! for one) and only then writes their records; a batch of completions
//! locks its queue rows, then its records, each in id order; lease
//! extensions and the reclaiming of expired records skip what is locked.
//! A record is thus only ever waited for by a holder of its queue row, so
//! none of them can deadlock with another.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::Row;
use sqlx::postgres::PgConnection;
use xylem_core::Envelope;
use xylem_core::codec::to_json;
use xylem_core::record::TaskState;
use xylem_core::store::{
    Completed, Completion, Delivery, Nack, Settle, StoreError, StoreResult, check_batch_ids,
    conflict_cleared, queued_detail, running_detail,
};
use xylem_core::time::{ms, now_ms};

use crate::{PostgresStore, corrupt, db, sql_int, sql_u32, sql_u64};

/// Writes a batch of new jobs: records, their first history entries and
/// queue entries, then wakes idle workers — one statement, so all or
/// nothing (a duplicate id fails the whole batch).
const ENQUEUE: &str = concat!(
    "WITH now AS (SELECT ",
    now_ms!(),
    " AS t),
    input AS MATERIALIZED (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                             $6::bigint[], $7::bigint[], $8::text[], $9::int[], $10::bigint[],
                             $11::text[], $13::text[])
            AS i(id, task, queue, args, attempt, max_retries, enqueued_at, detail, priority,
                 run_at, envelope, headers)),
    records AS (
        INSERT INTO tasks (id, task, queue, state, args, attempt, max_retries, enqueued_at,
                           updated_at, headers)
        SELECT id, task, queue, 'queued', args, attempt, max_retries, enqueued_at, now.t,
               headers::jsonb
        FROM input, now),
    history AS (
        INSERT INTO task_history (id, at, state, attempt, detail)
        SELECT id, now.t, 'queued', attempt, detail FROM input, now),
    queued AS (
        INSERT INTO queue (id, queue, priority, run_at, envelope)
        SELECT id, queue, priority, run_at, envelope FROM input)
    SELECT pg_notify($12, '')"
);

/// The jobs a claim takes (`picked`: id, priority, run_at, envelope,
/// deliveries), up to `$1`: ready jobs that are due and leased jobs whose
/// lease ran out, in claim order, from every queue (`pick!(all)`) or from
/// the queues named in `$3` (`pick!(named)`). Each kind is read from its
/// own partial index in claim order, so a claim reads a few rows whatever
/// the backlog; `SKIP LOCKED` lets concurrent claimers pass each other's
/// rows, and `MATERIALIZED` makes each pick run exactly once (`LIMIT`
/// bounds what is locked). The rows come from the locking reads
/// themselves, so they are the latest versions even if they changed after
/// the statement began. The statement commits asynchronously (see
/// "Durability" in the crate docs).
macro_rules! pick {
    (all) => {
        pick!(
            // `-priority`: the order of `queue_ready_any` (migration 0005),
            // the one index that gives it.
            "SELECT id, priority, run_at, envelope, deliveries FROM queue
             WHERE status = 0 AND run_at <= (SELECT t FROM now)
             ORDER BY -priority, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
            ""
        )
    };
    (named) => {
        // One range of `queue_ready_by_queue` per queue (an `= ANY` over
        // the index's first column would not come out in claim order).
        pick!(
            "SELECT r.* FROM (SELECT DISTINCT unnest($3::text[]) AS name) n
             CROSS JOIN LATERAL (
                 SELECT id, priority, run_at, envelope, deliveries FROM queue
                 WHERE status = 0 AND queue = n.name AND run_at <= (SELECT t FROM now)
                 ORDER BY priority DESC, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) r",
            " AND queue = ANY($3::text[])"
        )
    };
    ($ready:literal, $filter:literal) => {
        concat!(
            "now AS (SELECT ",
            now_ms!(),
            " AS t, ",
            async_commit!(),
            "),
            ready AS MATERIALIZED (",
            $ready,
            "),
            expired AS MATERIALIZED (
                SELECT id, priority, run_at, envelope, deliveries FROM queue
                WHERE status = 1 AND lease_until <= (SELECT t FROM now)",
            $filter,
            "
                ORDER BY priority DESC, run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED),
            picked AS MATERIALIZED (
                SELECT * FROM (SELECT * FROM ready UNION ALL SELECT * FROM expired) c
                ORDER BY priority DESC, run_at, id LIMIT $1)"
        )
    };
}

/// `Broker::claim`: the picked jobs, each by its record (see
/// `ClaimPlan::for_record`): a live record that succeeded drops the queue
/// entry (`done`); any other is marked `running`; a missing or expired
/// one is written anew from the envelope (its old history forgotten).
/// `$2` lease in ms, `$4`/`$5` the history detail of a first delivery /
/// of a redelivery (`running_detail`, chosen by `deliveries > attempt`).
/// Returns the leased jobs, and one row with a NULL envelope per dropped
/// job.
macro_rules! claim_sql {
    ($queues:tt) => {
        concat!(
            "WITH ",
            pick!($queues),
            ",
            cur AS MATERIALIZED (
                SELECT p.id, p.envelope, p.deliveries + 1 AS deliveries,
                       (p.envelope::json ->> 'attempt')::bigint AS attempt,
                       t.id IS NOT NULL AS present,
                       (t.id IS NOT NULL AND (t.expires_at IS NULL OR t.expires_at > now.t)) AS live,
                       (t.id IS NOT NULL AND (t.expires_at IS NULL OR t.expires_at > now.t)
                        AND t.state = 'succeeded') AS done
                FROM picked p CROSS JOIN now LEFT JOIN tasks t ON t.id = p.id),
            dropped AS (
                DELETE FROM queue q USING cur WHERE q.id = cur.id AND cur.done RETURNING q.id),
            leased AS (
                UPDATE queue q SET status = 1, lease = q.lease + 1, lease_until = now.t + $2,
                                   deliveries = q.deliveries + 1
                FROM cur, now WHERE q.id = cur.id AND NOT cur.done
                RETURNING q.envelope, q.lease, q.deliveries),
            ran AS (
                UPDATE tasks t SET state = 'running', attempt = cur.attempt, updated_at = now.t
                FROM cur, now WHERE t.id = cur.id AND cur.live AND NOT cur.done),
            recreated AS (
                INSERT INTO tasks (id, task, queue, state, args, attempt, max_retries,
                                   enqueued_at, updated_at, headers)
                SELECT cur.id, j.e ->> 'task', j.e ->> 'queue', 'running', j.e ->> 'args',
                       cur.attempt, (j.e ->> 'max_retries')::bigint,
                       (j.e ->> 'enqueued_at')::bigint, now.t,
                       NULLIF((j.e -> 'headers')::jsonb, '[]'::jsonb)
                FROM cur CROSS JOIN now CROSS JOIN LATERAL (SELECT cur.envelope::json AS e) j
                WHERE NOT cur.live
                ON CONFLICT (id) DO UPDATE SET
                    task = excluded.task, queue = excluded.queue, state = excluded.state,
                    args = excluded.args, attempt = excluded.attempt,
                    max_retries = excluded.max_retries, result = NULL, error = NULL,
                    usage = NULL, progress = NULL, log = NULL, plugin = NULL,
                    enqueued_at = excluded.enqueued_at, updated_at = excluded.updated_at,
                    expires_at = NULL, headers = excluded.headers),
            forgotten AS (
                DELETE FROM task_history h USING cur
                WHERE h.id = cur.id AND cur.present AND NOT cur.live),
            history AS (
                INSERT INTO task_history (id, at, state, attempt, detail)
                SELECT cur.id, now.t, 'running', cur.attempt,
                       CASE WHEN cur.deliveries > cur.attempt THEN $5 ELSE $4 END
                FROM cur, now WHERE NOT cur.done)
            SELECT envelope, lease, deliveries FROM leased
            UNION ALL SELECT NULL, 0, 0 FROM dropped"
        )
    };
}

const CLAIM_ALL: &str = claim_sql!(all);
const CLAIM_NAMED: &str = claim_sql!(named);

/// Locks and reads what a batch of completions decides on: the queue
/// entries first, then the records, each in id order (see the module
/// docs); `UNION ALL` runs its branches in order. Rows: (true, id, lease,
/// status, NULL, NULL) per queue entry, (false, id, NULL, NULL, state,
/// live) per record.
const COMPLETE_READ: &str = concat!(
    "WITH q AS MATERIALIZED (
        SELECT id, lease, status FROM queue WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE),
    t AS MATERIALIZED (
        SELECT id, state, expires_at IS NULL OR expires_at > ",
    now_ms!(),
    " AS live
        FROM tasks WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE)
    SELECT true, id, lease, status, NULL::text, NULL::bool FROM q
    UNION ALL SELECT false, id, NULL::bigint, NULL::smallint, state, live FROM t"
);

/// Applies a batch of completions' plans: record transitions as
/// `ResultBackend::transition` writes them (the outcome's columns only
/// when there is one; progress and plugin kept when not given) with their
/// expiry, history entries, queue entries removed, and nacks (status 0 or
/// 2; a retry's envelope and delay; a dead letter's reason); then the
/// wake-up when a job became ready again.
const COMPLETE_WRITE: &str = concat!(
    "WITH now AS (SELECT ",
    now_ms!(),
    " AS t),
    records AS (
        UPDATE tasks t SET state = u.state, attempt = u.attempt, updated_at = now.t,
            result = CASE WHEN u.outcome THEN u.result ELSE t.result END,
            error = CASE WHEN u.outcome THEN u.error ELSE t.error END,
            usage = CASE WHEN u.outcome THEN u.usage ELSE t.usage END,
            log = CASE WHEN u.outcome THEN u.log ELSE t.log END,
            progress = COALESCE(u.progress, t.progress),
            plugin = COALESCE(u.plugin, t.plugin),
            expires_at = CASE WHEN u.ttl IS NULL THEN t.expires_at ELSE now.t + u.ttl END
        FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bool[], $5::text[], $6::text[],
                    $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[])
            AS u(id, state, attempt, outcome, result, error, usage, log, progress, plugin, ttl),
            now
        WHERE t.id = u.id),
    history AS (
        INSERT INTO task_history (id, at, state, attempt, detail)
        SELECT u.id, now.t, u.state, u.attempt, u.detail
        FROM unnest($1::text[], $2::text[], $3::bigint[], $12::text[])
            WITH ORDINALITY AS u(id, state, attempt, detail, n), now
        ORDER BY u.n),
    removed AS (
        DELETE FROM queue WHERE id = ANY($13::text[])),
    settled AS (
        UPDATE queue q SET status = u.status, envelope = COALESCE(u.envelope, q.envelope),
            run_at = CASE WHEN u.delay IS NULL THEN q.run_at ELSE now.t + u.delay END,
            lease_until = 0,
            dead_reason = CASE WHEN u.status = 2 THEN u.reason ELSE q.dead_reason END,
            dead_at = CASE WHEN u.status = 2 THEN now.t ELSE q.dead_at END
        FROM unnest($14::text[], $15::smallint[], $16::text[], $17::bigint[], $18::text[])
            AS u(id, status, envelope, delay, reason), now
        WHERE q.id = u.id)
    SELECT pg_notify($19, '') WHERE $20"
);

/// Extends every lease still held, by `$3` ms of server time (committed
/// asynchronously, as claims are). Entries another transaction holds are
/// skipped, not waited for (they answer "not held"): that is a claim
/// taking over an expired lease or a completion finishing the job — and
/// waiting could deadlock with a batch of completions, which locks in id
/// order while an `UPDATE … FROM unnest` locks in no set order.
const EXTEND_MANY: &str = concat!(
    "WITH now AS (SELECT ",
    now_ms!(),
    " AS t, ",
    async_commit!(),
    "),
    free AS MATERIALIZED (
        SELECT id FROM queue WHERE id = ANY($1::text[]) AND status = 1
        FOR UPDATE SKIP LOCKED)
    UPDATE queue q SET lease_until = now.t + $3
    FROM unnest($1::text[], $2::bigint[]) AS u(id, lease), now
    WHERE q.id = u.id AND q.id IN (SELECT id FROM free) AND q.lease = u.lease
      AND q.status = 1
    RETURNING u.id, u.lease"
);

/// Deletes records whose expiry passed, and their history, a bounded
/// number at a time; rows another transaction holds are left for later.
const RECLAIM: &str = concat!(
    "WITH gone AS (
        DELETE FROM tasks WHERE id IN (
            SELECT id FROM tasks WHERE expires_at <= ",
    now_ms!(),
    "
            ORDER BY expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
        RETURNING id)
    DELETE FROM task_history WHERE id IN (SELECT id FROM gone)"
);

/// Whether `e` is PostgreSQL refusing a row whose key is taken
/// (`unique_violation`).
fn is_conflict(e: &StoreError) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<sqlx::Error>())
        .is_some_and(
            |e| matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505")),
        )
}

/// How often `complete` reclaims expired records (they are invisible as
/// soon as they expire; this only frees their storage).
const RECLAIM_EVERY_MS: i64 = 1_000;

/// The columns of the record transitions a batch writes.
#[derive(Default)]
struct Records {
    id: Vec<String>,
    state: Vec<&'static str>,
    attempt: Vec<i64>,
    outcome: Vec<bool>,
    result: Vec<Option<String>>,
    error: Vec<Option<String>>,
    usage: Vec<Option<String>>,
    log: Vec<Option<String>>,
    progress: Vec<Option<String>>,
    plugin: Vec<Option<String>>,
    ttl: Vec<Option<i64>>,
    detail: Vec<Option<String>>,
}

impl Records {
    fn push(&mut self, c: &Completion) -> StoreResult<()> {
        let t = &c.transition;
        self.id.push(c.id.clone());
        self.state.push(t.state.as_str());
        self.attempt.push(i64::from(t.attempt));
        self.outcome.push(t.outcome.is_some());
        let outcome = t.outcome.as_ref();
        self.result.push(
            outcome
                .and_then(|o| o.result.as_ref())
                .map(to_json)
                .transpose()?,
        );
        self.error.push(
            outcome
                .and_then(|o| o.error.as_ref())
                .map(to_json)
                .transpose()?,
        );
        self.usage
            .push(outcome.map(|o| to_json(&o.usage)).transpose()?);
        self.log.push(outcome.map(|o| to_json(&o.log)).transpose()?);
        self.progress.push(
            outcome
                .and_then(|o| o.progress.as_ref())
                .map(to_json)
                .transpose()?,
        );
        self.plugin.push(t.plugin.clone());
        self.ttl.push(c.result_ttl.map(ms));
        self.detail.push(t.detail.clone());
        Ok(())
    }
}

/// The queue entries a batch nacks.
#[derive(Default)]
struct Nacks {
    id: Vec<String>,
    status: Vec<i16>,
    envelope: Vec<Option<String>>,
    delay: Vec<Option<i64>>,
    reason: Vec<Option<String>>,
}

/// Splits a batch into rounds in which each id appears once (usually one
/// round): a round is decided on what the rounds before it wrote, as if
/// the completions were applied one by one.
fn rounds(completions: &[Completion]) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, c) in completions.iter().enumerate() {
        let round = seen.entry(c.id.as_str()).or_insert(0);
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(i);
        *round += 1;
    }
    rounds
}

impl PostgresStore {
    /// `Broker::enqueue`: one statement writes the batch; an id in use
    /// (a unique violation) takes the slow path.
    pub(crate) async fn enqueue_batch(&self, envelopes: &[Envelope]) -> StoreResult<()> {
        if envelopes.is_empty() {
            return Ok(());
        }
        check_batch_ids(envelopes)?;
        match self.insert_new(envelopes).await {
            Err(e) if is_conflict(&e) => self.enqueue_after_conflict(envelopes).await,
            done => done,
        }
    }

    /// After an enqueue hit an id in use: a record past its TTL that
    /// nothing has reclaimed yet is gone, its id free again (see
    /// `Broker::enqueue`), so such records are forgotten and the batch
    /// tried once more; otherwise the batch is refused, naming the id.
    async fn enqueue_after_conflict(&self, envelopes: &[Envelope]) -> StoreResult<()> {
        let ids: Vec<&str> = envelopes.iter().map(|e| e.id.as_str()).collect();
        let freed: i64 = sqlx::query_scalar(concat!(
            "WITH gone AS (
                DELETE FROM tasks WHERE id = ANY($1) AND expires_at <= ",
            now_ms!(),
            " RETURNING id),
            history AS (DELETE FROM task_history WHERE id IN (SELECT id FROM gone))
            SELECT count(*) FROM gone"
        ))
        .bind(&ids)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        if freed > 0 {
            match self.insert_new(envelopes).await {
                Err(e) if is_conflict(&e) => {}
                done => return done,
            }
        }
        let in_use: Option<String> = sqlx::query_scalar(
            "SELECT u.id FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n)
             WHERE EXISTS (SELECT 1 FROM queue q WHERE q.id = u.id)
                OR EXISTS (SELECT 1 FROM tasks t WHERE t.id = u.id)
             ORDER BY u.n LIMIT 1",
        )
        .bind(&ids)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Err(match in_use {
            Some(id) => StoreError::Duplicate(id),
            // Freed meanwhile by another transaction: trying again may work.
            None => conflict_cleared(),
        })
    }

    /// Writes a batch of new jobs, records and queue entries, in one
    /// statement; an id in use fails it with a unique violation.
    async fn insert_new(&self, envelopes: &[Envelope]) -> StoreResult<()> {
        let now = now_ms();
        let n = envelopes.len();
        let mut id = Vec::with_capacity(n);
        let mut task = Vec::with_capacity(n);
        let mut queue = Vec::with_capacity(n);
        let mut args = Vec::with_capacity(n);
        let mut attempt = Vec::with_capacity(n);
        let mut max_retries = Vec::with_capacity(n);
        let mut enqueued_at = Vec::with_capacity(n);
        let mut detail = Vec::with_capacity(n);
        let mut priority = Vec::with_capacity(n);
        let mut run_at = Vec::with_capacity(n);
        let mut envelope = Vec::with_capacity(n);
        let mut headers = Vec::with_capacity(n);
        for e in envelopes {
            headers.push(e.headers_json());
            id.push(e.id.as_str());
            task.push(e.task.as_str());
            queue.push(e.queue.as_str());
            args.push(e.args.as_str());
            attempt.push(i64::from(e.attempt));
            max_retries.push(i64::from(e.max_retries));
            enqueued_at.push(e.enqueued_at);
            detail.push(queued_detail(e, now));
            priority.push(i32::from(e.priority));
            run_at.push(e.run_at());
            envelope.push(to_json(e)?);
        }
        sqlx::query(ENQUEUE)
            .bind(id)
            .bind(task)
            .bind(queue)
            .bind(args)
            .bind(attempt)
            .bind(max_retries)
            .bind(enqueued_at)
            .bind(detail)
            .bind(priority)
            .bind(run_at)
            .bind(envelope)
            .bind(&self.channel)
            .bind(headers)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    pub(crate) async fn claim_batch(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        worker: &str,
    ) -> StoreResult<Vec<Delivery>> {
        let first = running_detail(worker, 1, 1);
        let again = running_detail(worker, 2, 1);
        let mut deliveries = Vec::new();
        // Jobs that already succeeded are dropped, not handed out: fill
        // their places with the next ones.
        while deliveries.len() < max {
            let want = sql_int(max - deliveries.len());
            let query = if queues.is_empty() {
                sqlx::query(CLAIM_ALL)
            } else {
                sqlx::query(CLAIM_NAMED)
            };
            let rows = query
                .bind(want)
                .bind(ms(lease))
                .bind(queues)
                .bind(&first)
                .bind(&again)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            let mut dropped = 0;
            for row in rows {
                let Some(envelope) = row.try_get::<Option<String>, _>(0).map_err(db)? else {
                    dropped += 1;
                    continue;
                };
                deliveries.push(Delivery {
                    envelope: serde_json::from_str(&envelope).map_err(corrupt)?,
                    lease: sql_u64(row.try_get(1).map_err(db)?),
                    deliveries: sql_u32(row.try_get(2).map_err(db)?),
                });
            }
            if dropped == 0 {
                break;
            }
        }
        // RETURNING has no order: hand them out as they were chosen.
        deliveries.sort_by(|a, b| a.envelope.claim_order(&b.envelope));
        Ok(deliveries)
    }

    pub(crate) async fn complete_batch(
        &self,
        completions: &[Completion],
    ) -> StoreResult<Vec<Completed>> {
        if completions.is_empty() {
            return Ok(Vec::new());
        }
        let mut results = vec![Completed::LeaseLost; completions.len()];
        let mut tx = self.pool.begin().await.map_err(db)?;
        for round in rounds(completions) {
            self.complete_round(&mut tx, completions, &round, &mut results)
                .await?;
        }
        tx.commit().await.map_err(db)?;
        if completions.iter().any(|c| c.result_ttl.is_some()) {
            self.reclaim_now_and_then();
        }
        Ok(results)
    }

    /// Decides and applies completions whose ids are distinct.
    async fn complete_round(
        &self,
        conn: &mut PgConnection,
        completions: &[Completion],
        round: &[usize],
        results: &mut [Completed],
    ) -> StoreResult<()> {
        let ids: Vec<&str> = round.iter().map(|&i| completions[i].id.as_str()).collect();
        let rows = sqlx::query(COMPLETE_READ)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        // id -> (lease, status) of the queue entry; id -> state of a live
        // record (an expired record counts as none).
        let mut entries: HashMap<String, (i64, i16)> = HashMap::new();
        let mut records: HashMap<String, TaskState> = HashMap::new();
        for row in rows {
            let id: String = row.try_get(1).map_err(db)?;
            if row.try_get::<bool, _>(0).map_err(db)? {
                let lease: i64 = row.try_get(2).map_err(db)?;
                let status: i16 = row.try_get(3).map_err(db)?;
                entries.insert(id, (lease, status));
            } else if row.try_get::<Option<bool>, _>(5).map_err(db)? == Some(true) {
                let state: String = row.try_get(4).map_err(db)?;
                records.insert(id, state.parse().map_err(StoreError::Corrupt)?);
            }
        }

        let mut write = Records::default();
        let mut removed: Vec<&str> = Vec::new();
        let mut nacks = Nacks::default();
        let mut wake = false;
        for &i in round {
            let c = &completions[i];
            let current = records.get(&c.id).copied();
            let held = entries
                .get(&c.id)
                .is_some_and(|&(lease, status)| status == 1 && lease == sql_int(c.lease));
            let plan = c.plan(current, held);
            // A record that vanished (expired) is not written; the queue
            // is settled all the same.
            if plan.record && current.is_some() {
                write.push(c)?;
            }
            if plan.settle {
                match &c.settle {
                    Settle::Ack => removed.push(&c.id),
                    Settle::Nack(action) => {
                        nacks.id.push(c.id.clone());
                        match action {
                            Nack::Retry { envelope, delay } => {
                                wake = true;
                                nacks.status.push(0);
                                nacks.envelope.push(Some(to_json(envelope)?));
                                nacks.delay.push(Some(ms(*delay)));
                                nacks.reason.push(None);
                            }
                            Nack::Release => {
                                wake = true;
                                nacks.status.push(0);
                                nacks.envelope.push(None);
                                nacks.delay.push(None);
                                nacks.reason.push(None);
                            }
                            Nack::DeadLetter { reason } => {
                                nacks.status.push(2);
                                nacks.envelope.push(None);
                                nacks.delay.push(None);
                                nacks.reason.push(Some(reason.clone()));
                            }
                        }
                    }
                }
            } else if plan.remove_entry {
                removed.push(&c.id);
            }
            results[i] = plan.result;
        }
        if write.id.is_empty() && removed.is_empty() && nacks.id.is_empty() {
            return Ok(());
        }
        sqlx::query(COMPLETE_WRITE)
            .bind(write.id)
            .bind(write.state)
            .bind(write.attempt)
            .bind(write.outcome)
            .bind(write.result)
            .bind(write.error)
            .bind(write.usage)
            .bind(write.log)
            .bind(write.progress)
            .bind(write.plugin)
            .bind(write.ttl)
            .bind(write.detail)
            .bind(removed)
            .bind(nacks.id)
            .bind(nacks.status)
            .bind(nacks.envelope)
            .bind(nacks.delay)
            .bind(nacks.reason)
            .bind(&self.channel)
            .bind(wake)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        Ok(())
    }

    /// Reclaims expired records in the background, at most once per
    /// [`RECLAIM_EVERY_MS`] per store, off the completion's path.
    fn reclaim_now_and_then(&self) {
        let now = now_ms();
        let last = self.last_reclaim.load(Ordering::Relaxed);
        if now - last < RECLAIM_EVERY_MS
            || self
                .last_reclaim
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let pool = self.pool.clone();
        tokio::spawn(async move {
            if let Err(e) = sqlx::query(RECLAIM).execute(&pool).await {
                tracing::debug!(error = %e, "cannot reclaim expired records");
            }
        });
    }

    pub(crate) async fn extend_batch(
        &self,
        leases: &[(String, u64)],
        by: Duration,
    ) -> StoreResult<Vec<bool>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = leases.iter().map(|(id, _)| id.as_str()).collect();
        let numbers: Vec<i64> = leases.iter().map(|(_, lease)| sql_int(*lease)).collect();
        let rows = sqlx::query(EXTEND_MANY)
            .bind(ids)
            .bind(numbers)
            .bind(ms(by))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut held: HashSet<(String, i64)> = HashSet::with_capacity(rows.len());
        for row in rows {
            held.insert((row.try_get(0).map_err(db)?, row.try_get(1).map_err(db)?));
        }
        Ok(leases
            .iter()
            .map(|(id, lease)| held.contains(&(id.clone(), sql_int(*lease))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ids_go_to_later_rounds() {
        let c = |id: &str| Completion {
            id: id.to_owned(),
            lease: 1,
            transition: xylem_core::record::Transition::to(TaskState::Succeeded, 1),
            settle: Settle::Ack,
            result_ttl: None,
        };
        let batch = [c("a"), c("b"), c("a"), c("a"), c("c")];
        assert_eq!(rounds(&batch), vec![vec![0, 1, 4], vec![2], vec![3]]);
    }
}
