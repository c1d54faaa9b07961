//! [`QueueControl`] on PostgreSQL: a row per paused queue; waiting jobs read
//! from the queue table (status 0: ready or delayed by the server's clock).

use async_trait::async_trait;
use xylem_core::codec::sql_int;
use xylem_core::store::{QueueControl, StoreResult};

use crate::{PostgresStore, db};

#[async_trait]
impl QueueControl for PostgresStore {
    async fn set_paused(&self, queue: &str, paused: bool) -> StoreResult<bool> {
        let sql = if paused {
            "INSERT INTO paused_queues (queue) VALUES ($1) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM paused_queues WHERE queue = $1"
        };
        let done = sqlx::query(sql)
            .bind(queue)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn paused_queues(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar("SELECT queue FROM paused_queues ORDER BY queue")
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }

    async fn waiting_ids(
        &self,
        queue: &str,
        ready: bool,
        delayed: bool,
        limit: usize,
    ) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(concat!(
            "SELECT id FROM queue WHERE status = 0 AND queue = $1
               AND (($2 AND run_at <= ",
            now_ms!(),
            ") OR ($3 AND run_at > ",
            now_ms!(),
            "))
             ORDER BY run_at, id LIMIT $4"
        ))
        .bind(queue)
        .bind(ready)
        .bind(delayed)
        .bind(sql_int(limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(db)
    }
}
