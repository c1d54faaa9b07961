//! [`WorkerRegistry`] on PostgreSQL: table `workers`, each worker's latest
//! beat as JSON with when to drop it (migration 0012).

use std::time::Duration;

use async_trait::async_trait;
use xylem_core::codec::{from_json, to_json};
use xylem_core::presence::WorkerBeat;
use xylem_core::store::{StoreResult, WorkerRegistry};
use xylem_core::time::{ms, now_ms};

use crate::{PostgresStore, db};

#[async_trait]
impl WorkerRegistry for PostgresStore {
    async fn put_worker(&self, beat: &WorkerBeat, keep: Duration) -> StoreResult<()> {
        let now = now_ms();
        // One statement: drop the lapsed records, write this one.
        sqlx::query(
            "WITH lapsed AS (DELETE FROM workers WHERE drop_at <= $4)
             INSERT INTO workers (id, drop_at, doc) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET drop_at = excluded.drop_at, doc = excluded.doc",
        )
        .bind(&beat.id)
        .bind(now + ms(keep))
        .bind(to_json(beat)?)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list_workers(&self) -> StoreResult<Vec<WorkerBeat>> {
        let docs: Vec<String> = sqlx::query_scalar("SELECT doc FROM workers WHERE drop_at > $1")
            .bind(now_ms())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        docs.iter().map(|d| from_json(d)).collect()
    }
}
