//! [`Cancellation`] on SQLite: a waiting job's queue row is deleted in one
//! `BEGIN IMMEDIATE` transaction with the check of its status (a claim
//! cannot slip in between); requests for running jobs are rows that
//! workers poll.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use xylem_core::store::{CANCEL_REQUEST_TTL, Cancellation, StoreResult, Withdrawn};
use xylem_core::time::{Millis, ms, now_ms};

use crate::{SqliteStore, backend, exec};

#[async_trait]
impl Cancellation for SqliteStore {
    async fn withdraw(&self, ids: &[String], now: Millis) -> StoreResult<Vec<Withdrawn>> {
        let ids = ids.to_vec();
        self.with_conn(move |conn| {
            let tx = crate::begin(conn)?;
            let mut found = Vec::with_capacity(ids.len());
            for id in &ids {
                // status: 0 waiting (ready or delayed), 1 leased, 2 dead.
                let row: Option<(i64, i64)> = tx
                    .query_row(
                        "SELECT status, lease_until FROM queue WHERE id = ?1",
                        [id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(backend)?;
                let withdrawn = match row {
                    None => Withdrawn::Absent,
                    Some((2, _)) => Withdrawn::Dead,
                    Some((1, until)) if until > now => Withdrawn::Running,
                    Some(_) => {
                        exec(&tx, "DELETE FROM queue WHERE id = ?1", [id]).map_err(backend)?;
                        Withdrawn::Removed
                    }
                };
                found.push(withdrawn);
            }
            tx.commit().map_err(backend)?;
            Ok(found)
        })
        .await
    }

    async fn request_cancel(&self, ids: &[String]) -> StoreResult<()> {
        let ids = ids.to_vec();
        self.with_conn(move |conn| {
            let now = now_ms();
            let tx = crate::begin(conn)?;
            exec(
                &tx,
                "DELETE FROM cancel_requests WHERE lapses_at <= ?1",
                [now],
            )
            .map_err(backend)?;
            for id in &ids {
                exec(
                    &tx,
                    "INSERT OR REPLACE INTO cancel_requests (id, lapses_at) VALUES (?1, ?2)",
                    params![id, now + ms(CANCEL_REQUEST_TTL)],
                )
                .map_err(backend)?;
            }
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn cancel_requested(&self, ids: &[String]) -> StoreResult<Vec<String>> {
        let ids = ids.to_vec();
        self.with_read(move |conn| {
            let now = now_ms();
            let mut stmt = conn
                .prepare_cached("SELECT 1 FROM cancel_requests WHERE id = ?1 AND lapses_at > ?2")
                .map_err(backend)?;
            let mut requested = Vec::new();
            for id in ids {
                if stmt
                    .query_row(params![id, now], |_| Ok(()))
                    .optional()
                    .map_err(backend)?
                    .is_some()
                {
                    requested.push(id);
                }
            }
            Ok(requested)
        })
        .await
    }
}
