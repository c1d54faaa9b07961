//! [`GroupStore`], [`LockStore`] and [`QuotaStore`] on PostgreSQL: group
//! counters with a row per finished member, a one-time chord claim, named
//! locks with an owner and an expiry, and counters with a ceiling.

use std::time::Duration;

use async_trait::async_trait;
use xylem_core::codec::sql_int;
use xylem_core::codec::{from_json, to_json};
use xylem_core::schedule::Schedule;
use xylem_core::store::{
    CanvasStore, GroupStatus, GroupStore, LockStore, QuotaStore, RateLimits, ScheduleStore,
    StoreResult,
};
use xylem_core::time::Millis;
use xylem_core::time::{ms, now_ms};

use crate::{PostgresStore, corrupt, db, sql_u32};

#[async_trait]
impl GroupStore for PostgresStore {
    async fn create_group(&self, id: &str, size: u32) -> StoreResult<()> {
        sqlx::query("INSERT INTO groups (id, size) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
            .bind(id)
            .bind(i64::from(size))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn complete_member(
        &self,
        id: &str,
        index: u32,
        result: &serde_json::Value,
    ) -> StoreResult<Option<GroupStatus>> {
        let result = serde_json::to_string(result).map_err(corrupt)?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The group's row lock serialises its members' completions, so the
        // count below sees every earlier one: exactly one completion sees
        // the group complete.
        let size: Option<i64> =
            sqlx::query_scalar("SELECT size FROM groups WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        let Some(size) = size else { return Ok(None) };
        sqlx::query(
            "INSERT INTO group_members (group_id, idx, result) VALUES ($1, $2, $3)
             ON CONFLICT (group_id, idx) DO NOTHING",
        )
        .bind(id)
        .bind(i64::from(index))
        .bind(result)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM group_members WHERE group_id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Some(GroupStatus {
            size: sql_u32(size),
            done: sql_u32(done),
        }))
    }

    async fn group_results(&self, id: &str) -> StoreResult<Option<Vec<serde_json::Value>>> {
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM groups WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(size) = size else { return Ok(None) };
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT result FROM group_members WHERE group_id = $1 ORDER BY idx")
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        if i64::try_from(rows.len()).unwrap_or(i64::MAX) < size {
            return Ok(None);
        }
        rows.iter()
            .map(|text| serde_json::from_str(text).map_err(corrupt))
            .collect::<StoreResult<Vec<_>>>()
            .map(Some)
    }

    async fn claim_chord(&self, id: &str) -> StoreResult<bool> {
        sqlx::query("UPDATE groups SET claimed = true WHERE id = $1 AND NOT claimed")
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(db)
    }
}

#[async_trait]
impl LockStore for PostgresStore {
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO locks (name, owner, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE locks.expires_at <= $4 OR locks.owner = excluded.owner",
        )
        .bind(name)
        .bind(owner)
        .bind(now.saturating_add(ms(ttl)))
        .bind(now)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() == 1)
        .map_err(db)
    }

    async fn renew(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let now = now_ms();
        sqlx::query(
            "UPDATE locks SET expires_at = $3 WHERE name = $1 AND owner = $2 AND expires_at > $4",
        )
        .bind(name)
        .bind(owner)
        .bind(now.saturating_add(ms(ttl)))
        .bind(now)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() == 1)
        .map_err(db)
    }

    async fn release(&self, name: &str, owner: &str) -> StoreResult<bool> {
        sqlx::query("DELETE FROM locks WHERE name = $1 AND owner = $2 AND expires_at > $3")
            .bind(name)
            .bind(owner)
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(db)
    }

    async fn lock_owner(&self, name: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT owner FROM locks WHERE name = $1 AND expires_at > $2")
            .bind(name)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }
}

#[async_trait]
impl QuotaStore for PostgresStore {
    async fn take_quota(&self, key: &str, n: u64, limit: u64, ttl: Duration) -> StoreResult<bool> {
        if n > limit {
            return Ok(false);
        }
        let now = now_ms();
        // One statement, atomic under concurrent takers: a new or expired
        // counter starts at `n`, a live one grows by `n` only while it
        // stays within `limit`.
        sqlx::query(
            "INSERT INTO quotas (key, used, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET
                 used = CASE WHEN quotas.expires_at <= $5 THEN excluded.used
                             ELSE quotas.used + excluded.used END,
                 expires_at = excluded.expires_at
             WHERE quotas.expires_at <= $5 OR quotas.used + excluded.used <= $4",
        )
        .bind(key)
        .bind(sql_int(n))
        .bind(now.saturating_add(ms(ttl)))
        .bind(sql_int(limit))
        .bind(now)
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() == 1)
        .map_err(db)
    }

    async fn quota_used(&self, key: &str) -> StoreResult<u64> {
        let used: Option<i64> =
            sqlx::query_scalar("SELECT used FROM quotas WHERE key = $1 AND expires_at > $2")
                .bind(key)
                .bind(now_ms())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(used.map_or(0, |u| u64::try_from(u).unwrap_or(0)))
    }
}

#[async_trait]
impl RateLimits for PostgresStore {
    async fn reserve_slot(
        &self,
        key: &str,
        interval: Duration,
        now: Millis,
        ttl: Duration,
    ) -> StoreResult<Millis> {
        // One statement: the slot is greatest(now, next) — `next` only
        // while the limiter is remembered — and next moves one interval on.
        sqlx::query_scalar(
            "INSERT INTO rate_slots AS r (key, next_at, forget_at) VALUES ($1, $2 + $3, $2 + $3 + $4)
             ON CONFLICT (key) DO UPDATE SET
                 next_at = GREATEST($2, CASE WHEN r.forget_at > $2 THEN r.next_at ELSE $2 END) + $3,
                 forget_at = GREATEST($2, CASE WHEN r.forget_at > $2 THEN r.next_at ELSE $2 END) + $3 + $4
             RETURNING next_at - $3",
        )
        .bind(key)
        .bind(now)
        .bind(ms(interval))
        .bind(ms(ttl))
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }
}

#[async_trait]
impl CanvasStore for PostgresStore {
    async fn put_canvas(&self, id: &str, definition: &str) -> StoreResult<bool> {
        sqlx::query(
            "INSERT INTO canvases (id, definition, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(definition)
        .bind(now_ms())
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected() == 1)
        .map_err(db)
    }

    async fn get_canvas(&self, id: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT definition FROM canvases WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }
}

#[async_trait]
impl ScheduleStore for PostgresStore {
    async fn put_schedule(&self, schedule: &Schedule) -> StoreResult<Option<u64>> {
        let mut written = schedule.clone();
        written.version = schedule.version + 1;
        let doc = to_json(&written)?;
        // A new schedule is an insert that loses to an existing name; an
        // edit, an update of the version it read (`$6`).
        let shared = |sql: &'static str| {
            sqlx::query(sql)
                .bind(written.name.clone())
                .bind(written.enabled)
                .bind(written.next_run)
                .bind(sql_int(written.version))
                .bind(doc.clone())
        };
        let query = if schedule.version == 0 {
            shared(
                "INSERT INTO schedules (name, enabled, next_run, version, doc)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
            )
        } else {
            shared(
                "UPDATE schedules SET enabled = $2, next_run = $3, version = $4, doc = $5
                 WHERE name = $1 AND version = $6",
            )
            .bind(sql_int(schedule.version))
        };
        let done = query.execute(&self.pool).await.map_err(db)?;
        Ok((done.rows_affected() == 1).then_some(written.version))
    }

    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        let doc: Option<String> = sqlx::query_scalar("SELECT doc FROM schedules WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        doc.map(|d| from_json(&d)).transpose()
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        let docs: Vec<String> = sqlx::query_scalar("SELECT doc FROM schedules ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    async fn remove_schedule(&self, name: &str) -> StoreResult<bool> {
        sqlx::query("DELETE FROM schedules WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected() == 1)
            .map_err(db)
    }

    async fn due_schedules(&self, now: Millis, limit: usize) -> StoreResult<Vec<Schedule>> {
        let docs: Vec<String> = sqlx::query_scalar(
            "SELECT doc FROM schedules WHERE enabled AND next_run <= $1
             ORDER BY next_run, name LIMIT $2",
        )
        .bind(now)
        .bind(sql_int(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        docs.iter().map(|d| from_json(d)).collect()
    }
}
