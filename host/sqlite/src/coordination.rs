//! [`GroupStore`], [`LockStore`], [`QuotaStore`] and [`RateLimits`] on
//! SQLite.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use xylem_core::codec::sql_int;
use xylem_core::codec::{from_json, to_json};
use xylem_core::schedule::Schedule;
use xylem_core::store::{
    CanvasStore, GroupStatus, GroupStore, LockStore, QuotaStore, RateLimits, ScheduleStore,
    StoreResult,
};
use xylem_core::time::Millis;
use xylem_core::time::{ms, now_ms};

use crate::{SqliteStore, backend, corrupt, exec};

#[async_trait]
impl GroupStore for SqliteStore {
    async fn create_group(&self, id: &str, size: u32) -> StoreResult<()> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            exec(
                conn,
                "INSERT OR IGNORE INTO groups (id, size) VALUES (?1, ?2)",
                params![id, size],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn complete_member(
        &self,
        id: &str,
        index: u32,
        result: &serde_json::Value,
    ) -> StoreResult<Option<GroupStatus>> {
        let (id, result) = (
            id.to_owned(),
            serde_json::to_string(result).map_err(corrupt)?,
        );
        self.with_conn(move |conn| {
            let tx = crate::begin(conn)?;
            let size: Option<u32> = tx
                .query_row("SELECT size FROM groups WHERE id = ?1", [&id], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            let Some(size) = size else { return Ok(None) };
            exec(
                &tx,
                "INSERT OR IGNORE INTO group_members (group_id, idx, result) VALUES (?1, ?2, ?3)",
                params![id, index, result],
            )
            .map_err(backend)?;
            let done: u32 = tx
                .query_row(
                    "SELECT COUNT(*) FROM group_members WHERE group_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(Some(GroupStatus { size, done }))
        })
        .await
    }

    async fn group_results(&self, id: &str) -> StoreResult<Option<Vec<serde_json::Value>>> {
        let id = id.to_owned();
        self.with_read(move |conn| {
            let size: Option<u32> = conn
                .query_row("SELECT size FROM groups WHERE id = ?1", [&id], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            let Some(size) = size else { return Ok(None) };
            let mut stmt = conn
                .prepare("SELECT result FROM group_members WHERE group_id = ?1 ORDER BY idx")
                .map_err(backend)?;
            let rows = stmt
                .query_map([&id], |r| r.get::<_, String>(0))
                .map_err(backend)?;
            let mut results = Vec::new();
            for row in rows {
                results.push(serde_json::from_str(&row.map_err(backend)?).map_err(corrupt)?);
            }
            Ok((results.len() as u32 >= size).then_some(results))
        })
        .await
    }

    async fn claim_chord(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            exec(
                conn,
                "UPDATE groups SET claimed = 1 WHERE id = ?1 AND claimed = 0",
                [id],
            )
            .map(|n| n == 1)
            .map_err(backend)
        })
        .await
    }
}

#[async_trait]
impl LockStore for SqliteStore {
    async fn acquire(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.with_conn(move |conn| {
            let now = now_ms();
            exec(conn,
                "INSERT INTO locks (name, owner, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
                 WHERE locks.expires_at <= ?4 OR locks.owner = excluded.owner",
                params![name, owner, now + ms(ttl), now],
            )
            .map(|n| n == 1)
            .map_err(backend)
        })
        .await
    }

    async fn renew(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.with_conn(move |conn| {
            let now = now_ms();
            exec(conn,
                "UPDATE locks SET expires_at = ?3 WHERE name = ?1 AND owner = ?2 AND expires_at > ?4",
                params![name, owner, now + ms(ttl), now],
            )
            .map(|n| n == 1)
            .map_err(backend)
        })
        .await
    }

    async fn release(&self, name: &str, owner: &str) -> StoreResult<bool> {
        let (name, owner) = (name.to_owned(), owner.to_owned());
        self.with_conn(move |conn| {
            exec(
                conn,
                "DELETE FROM locks WHERE name = ?1 AND owner = ?2 AND expires_at > ?3",
                params![name, owner, now_ms()],
            )
            .map(|n| n == 1)
            .map_err(backend)
        })
        .await
    }

    async fn lock_owner(&self, name: &str) -> StoreResult<Option<String>> {
        let name = name.to_owned();
        self.with_read(move |conn| {
            conn.query_row(
                "SELECT owner FROM locks WHERE name = ?1 AND expires_at > ?2",
                params![name, now_ms()],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }
}

#[async_trait]
impl QuotaStore for SqliteStore {
    async fn take_quota(&self, key: &str, n: u64, limit: u64, ttl: Duration) -> StoreResult<bool> {
        if n > limit {
            return Ok(false);
        }
        let key = key.to_owned();
        self.with_conn(move |conn| {
            let now = now_ms();
            // One statement: a new or expired counter starts at `n`, a live
            // one grows by `n` only while it stays within `limit`.
            exec(
                conn,
                "INSERT INTO quotas (key, used, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET
                     used = CASE WHEN quotas.expires_at <= ?5 THEN excluded.used
                                 ELSE quotas.used + excluded.used END,
                     expires_at = excluded.expires_at
                 WHERE quotas.expires_at <= ?5 OR quotas.used + excluded.used <= ?4",
                params![key, sql_int(n), now + ms(ttl), sql_int(limit), now],
            )
            .map(|changed| changed == 1)
            .map_err(backend)
        })
        .await
    }

    async fn quota_used(&self, key: &str) -> StoreResult<u64> {
        let key = key.to_owned();
        self.with_read(move |conn| {
            conn.query_row(
                "SELECT used FROM quotas WHERE key = ?1 AND expires_at > ?2",
                params![key, now_ms()],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|used| used.map_or(0, |u| u64::try_from(u).unwrap_or(0)))
            .map_err(backend)
        })
        .await
    }
}

#[async_trait]
impl RateLimits for SqliteStore {
    async fn reserve_slot(
        &self,
        key: &str,
        interval: Duration,
        now: Millis,
        ttl: Duration,
    ) -> StoreResult<Millis> {
        let key = key.to_owned();
        self.with_conn(move |conn| {
            // One statement: the slot is max(now, next) — `next` only while
            // the limiter is remembered — and next moves one interval on.
            conn.query_row(
                "INSERT INTO rate_slots (key, next_at, forget_at) VALUES (?1, ?2 + ?3, ?2 + ?3 + ?4)
                 ON CONFLICT (key) DO UPDATE SET
                     next_at = MAX(?2, CASE WHEN forget_at > ?2 THEN next_at ELSE ?2 END) + ?3,
                     forget_at = MAX(?2, CASE WHEN forget_at > ?2 THEN next_at ELSE ?2 END) + ?3 + ?4
                 RETURNING next_at - ?3",
                params![key, now, ms(interval), ms(ttl)],
                |r| r.get(0),
            )
            .map_err(backend)
        })
        .await
    }
}

#[async_trait]
impl CanvasStore for SqliteStore {
    async fn put_canvas(&self, id: &str, definition: &str) -> StoreResult<bool> {
        let (id, definition) = (id.to_owned(), definition.to_owned());
        self.with_conn(move |conn| {
            exec(
                conn,
                "INSERT INTO canvases (id, definition, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO NOTHING",
                params![id, definition, now_ms()],
            )
            .map(|changed| changed == 1)
            .map_err(backend)
        })
        .await
    }

    async fn get_canvas(&self, id: &str) -> StoreResult<Option<String>> {
        let id = id.to_owned();
        self.with_read(move |conn| {
            conn.query_row(
                "SELECT definition FROM canvases WHERE id = ?1",
                params![id],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }
}

#[async_trait]
impl ScheduleStore for SqliteStore {
    async fn put_schedule(&self, schedule: &Schedule) -> StoreResult<Option<u64>> {
        let mut written = schedule.clone();
        written.version = schedule.version + 1;
        let doc = to_json(&written)?;
        let (name, enabled, next_run) = (written.name.clone(), written.enabled, written.next_run);
        let (read, version) = (sql_int(schedule.version), sql_int(written.version));
        self.with_conn(move |conn| {
            let changed = if read == 0 {
                exec(
                    conn,
                    "INSERT INTO schedules (name, enabled, next_run, version, doc)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (name) DO NOTHING",
                    params![name, enabled, next_run, version, doc],
                )
            } else {
                exec(
                    conn,
                    "UPDATE schedules SET enabled = ?2, next_run = ?3, version = ?4, doc = ?5
                     WHERE name = ?1 AND version = ?6",
                    params![name, enabled, next_run, version, doc, read],
                )
            };
            changed.map_err(backend)
        })
        .await
        .map(|changed| (changed == 1).then_some(written.version))
    }

    async fn get_schedule(&self, name: &str) -> StoreResult<Option<Schedule>> {
        let name = name.to_owned();
        let doc = self
            .with_read(move |conn| {
                conn.query_row(
                    "SELECT doc FROM schedules WHERE name = ?1",
                    params![name],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .map_err(backend)
            })
            .await?;
        doc.map(|d| from_json(&d)).transpose()
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        self.schedule_docs("SELECT doc FROM schedules ORDER BY name", None)
            .await
    }

    async fn remove_schedule(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            exec(conn, "DELETE FROM schedules WHERE name = ?1", params![name])
                .map(|n| n == 1)
                .map_err(backend)
        })
        .await
    }

    async fn due_schedules(&self, now: Millis, limit: usize) -> StoreResult<Vec<Schedule>> {
        self.schedule_docs(
            "SELECT doc FROM schedules WHERE enabled = 1 AND next_run <= ?1
             ORDER BY next_run, name LIMIT ?2",
            Some((now, sql_int(limit))),
        )
        .await
    }
}

impl SqliteStore {
    /// Schedules read by `sql` (bound to `due`: now and a limit, if given).
    async fn schedule_docs(
        &self,
        sql: &'static str,
        due: Option<(Millis, i64)>,
    ) -> StoreResult<Vec<Schedule>> {
        let docs: Vec<String> = self
            .with_read(move |conn| {
                let mut stmt = conn.prepare_cached(sql).map_err(backend)?;
                let text = |r: &rusqlite::Row<'_>| r.get::<_, String>(0);
                let rows: Result<Vec<String>, _> = match due {
                    Some((now, limit)) => stmt
                        .query_map(params![now, limit], text)
                        .and_then(Iterator::collect),
                    None => stmt.query_map([], text).and_then(Iterator::collect),
                };
                rows.map_err(backend)
            })
            .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }
}
