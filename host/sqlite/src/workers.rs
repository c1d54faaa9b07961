//! [`WorkerRegistry`] on SQLite: table `workers`, each worker's latest
//! beat as JSON with when to drop it (migration 0012).

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;
use xylem_core::codec::{from_json, to_json};
use xylem_core::presence::WorkerBeat;
use xylem_core::store::{StoreResult, WorkerRegistry};
use xylem_core::time::{ms, now_ms};

use crate::{SqliteStore, backend, exec};

#[async_trait]
impl WorkerRegistry for SqliteStore {
    async fn put_worker(&self, beat: &WorkerBeat, keep: Duration) -> StoreResult<()> {
        let (id, doc) = (beat.id.clone(), to_json(beat)?);
        let now = now_ms();
        let drop_at = now + ms(keep);
        self.with_conn(move |conn| {
            exec(conn, "DELETE FROM workers WHERE drop_at <= ?1", params![now])
                .and_then(|_| {
                    exec(
                        conn,
                        "INSERT INTO workers (id, drop_at, doc) VALUES (?1, ?2, ?3)
                         ON CONFLICT (id) DO UPDATE SET drop_at = excluded.drop_at, doc = excluded.doc",
                        params![id, drop_at, doc],
                    )
                })
                .map(drop)
                .map_err(backend)
        })
        .await
    }

    async fn list_workers(&self) -> StoreResult<Vec<WorkerBeat>> {
        let now = now_ms();
        let docs: Vec<String> = self
            .with_read(move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT doc FROM workers WHERE drop_at > ?1")
                    .map_err(backend)?;
                stmt.query_map(params![now], |r| r.get(0))
                    .and_then(Iterator::collect)
                    .map_err(backend)
            })
            .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }
}
