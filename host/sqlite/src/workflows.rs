//! [`WorkflowStore`] on SQLite: table `workflow_runs`, each run whole as
//! JSON beside the columns the engines query (migration 0011).

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use xylem_core::codec::{from_json, sql_int, to_json};
use xylem_core::store::{RunFilter, StoreResult, WorkflowStore};
use xylem_core::time::Millis;
use xylem_core::workflow::Run;

use crate::{SqliteStore, backend, exec};

#[async_trait]
impl WorkflowStore for SqliteStore {
    async fn put_run(&self, run: &Run) -> StoreResult<Option<u64>> {
        let mut written = run.clone();
        written.version = run.version + 1;
        let doc = to_json(&written)?;
        let (id, workflow, state) = (
            written.id.clone(),
            written.workflow.clone(),
            written.state.as_str(),
        );
        let (wake_at, created_at) = (written.wake_at, written.created_at);
        let (read, version) = (sql_int(run.version), sql_int(written.version));
        self.with_conn(move |conn| {
            let changed = if read == 0 {
                exec(
                    conn,
                    "INSERT INTO workflow_runs (id, workflow, state, wake_at, created_at, version, doc)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                    params![id, workflow, state, wake_at, created_at, version, doc],
                )
            } else {
                exec(
                    conn,
                    "UPDATE workflow_runs SET state = ?2, wake_at = ?3, version = ?4, doc = ?5
                     WHERE id = ?1 AND version = ?6",
                    params![id, state, wake_at, version, doc, read],
                )
            };
            changed.map_err(backend)
        })
        .await
        .map(|changed| (changed == 1).then_some(written.version))
    }

    async fn get_run(&self, id: &str) -> StoreResult<Option<Run>> {
        let id = id.to_owned();
        let doc = self
            .with_conn(move |conn| {
                conn.query_row(
                    "SELECT doc FROM workflow_runs WHERE id = ?1",
                    params![id],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .map_err(backend)
            })
            .await?;
        doc.map(|d| from_json(&d)).transpose()
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let workflow = filter.workflow.clone();
        let state = filter.state.map(|s| s.as_str());
        let limit = sql_int(filter.effective_limit());
        self.run_docs(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT doc FROM workflow_runs
                 WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR state = ?2)
                 ORDER BY created_at DESC, id DESC LIMIT ?3",
            )?;
            stmt.query_map(params![workflow, state, limit], |r| r.get(0))?
                .collect()
        })
        .await
    }

    async fn due_runs(&self, now: Millis, limit: usize) -> StoreResult<Vec<Run>> {
        let limit = sql_int(limit);
        self.run_docs(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT doc FROM workflow_runs WHERE wake_at IS NOT NULL AND wake_at <= ?1
                 ORDER BY wake_at, id LIMIT ?2",
            )?;
            stmt.query_map(params![now, limit], |r| r.get(0))?.collect()
        })
        .await
    }
}

impl SqliteStore {
    /// The runs whose documents `query` reads.
    async fn run_docs(
        &self,
        query: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<Vec<String>> + Send + 'static,
    ) -> StoreResult<Vec<Run>> {
        let docs = self
            .with_conn(move |conn| query(conn).map_err(backend))
            .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }
}
