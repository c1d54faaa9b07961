//! [`QueueControl`] on SQLite: a row per paused queue; waiting jobs read
//! from the queue table (status 0: ready or delayed, by `run_at`).

use async_trait::async_trait;
use rusqlite::params;
use xylem_core::codec::sql_int;
use xylem_core::store::{QueueControl, StoreResult};
use xylem_core::time::now_ms;

use crate::{SqliteStore, backend, exec};

#[async_trait]
impl QueueControl for SqliteStore {
    async fn set_paused(&self, queue: &str, paused: bool) -> StoreResult<bool> {
        let queue = queue.to_owned();
        self.with_conn(move |conn| {
            let sql = if paused {
                "INSERT OR IGNORE INTO paused_queues (queue) VALUES (?1)"
            } else {
                "DELETE FROM paused_queues WHERE queue = ?1"
            };
            exec(conn, sql, [queue]).map(|n| n == 1).map_err(backend)
        })
        .await
    }

    async fn paused_queues(&self) -> StoreResult<Vec<String>> {
        self.with_read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT queue FROM paused_queues ORDER BY queue")
                .map_err(backend)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }

    async fn waiting_ids(
        &self,
        queue: &str,
        ready: bool,
        delayed: bool,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        let queue = queue.to_owned();
        self.with_read(move |conn| {
            let now = now_ms();
            // ?3/?4: whether ready (run_at <= now) / delayed ones count.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id FROM queue WHERE status = 0 AND queue = ?1
                       AND ((?3 AND run_at <= ?2) OR (?4 AND run_at > ?2))
                     ORDER BY run_at, id LIMIT ?5",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(
                    params![queue, now, ready, delayed, sql_int(limit as u64)],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            rows.collect::<Result<_, _>>().map_err(backend)
        })
        .await
    }
}
