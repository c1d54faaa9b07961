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
        let mut written = self.put_runs(std::slice::from_ref(run)).await?;
        Ok(written.pop().flatten())
    }

    async fn put_runs(&self, runs: &[Run]) -> StoreResult<Vec<Option<u64>>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let writes = runs
            .iter()
            .map(RunWrite::of)
            .collect::<StoreResult<Vec<_>>>()?;
        self.with_conn(move |conn| {
            // One transaction: a tick's leases (or its steps) cost one
            // commit, not one each.
            let tx = crate::begin(conn)?;
            let written = writes
                .iter()
                .map(|w| w.apply(&tx))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(written)
        })
        .await
    }

    async fn get_run(&self, id: &str) -> StoreResult<Option<Run>> {
        let mut found = self.get_runs(&[id.to_owned()]).await?;
        Ok(found.pop().flatten())
    }

    async fn get_runs(&self, ids: &[String]) -> StoreResult<Vec<Option<Run>>> {
        let ids = ids.to_vec();
        let docs = self
            .with_read(move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT doc FROM workflow_runs WHERE id = ?1")
                    .map_err(backend)?;
                ids.iter()
                    .map(|id| {
                        stmt.query_row(params![id], |r| r.get::<_, String>(0))
                            .optional()
                    })
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(backend)
            })
            .await?;
        docs.into_iter()
            .map(|d| d.map(|d| from_json(&d)).transpose())
            .collect()
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

/// One run's write, its document made off the store's thread.
struct RunWrite {
    id: String,
    workflow: String,
    state: &'static str,
    wake_at: Option<Millis>,
    created_at: Millis,
    read: i64,
    version: i64,
    /// `version` as the store answers it.
    next: u64,
    doc: String,
}

impl RunWrite {
    fn of(run: &Run) -> StoreResult<Self> {
        let mut written = run.clone();
        written.version = run.version + 1;
        Ok(Self {
            doc: to_json(&written)?,
            state: written.state.as_str(),
            wake_at: written.wake_at,
            created_at: written.created_at,
            read: sql_int(run.version),
            version: sql_int(written.version),
            next: written.version,
            id: written.id,
            workflow: written.workflow,
        })
    }

    /// Creates the run (version 0) unless its id exists, or replaces the
    /// version read; the new version, or `None` if nothing was written.
    fn apply(&self, conn: &rusqlite::Connection) -> rusqlite::Result<Option<u64>> {
        let changed = if self.read == 0 {
            exec(
                conn,
                "INSERT INTO workflow_runs (id, workflow, state, wake_at, created_at, version, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING",
                params![
                    self.id,
                    self.workflow,
                    self.state,
                    self.wake_at,
                    self.created_at,
                    self.version,
                    self.doc
                ],
            )?
        } else {
            exec(
                conn,
                "UPDATE workflow_runs SET state = ?2, wake_at = ?3, version = ?4, doc = ?5
                 WHERE id = ?1 AND version = ?6",
                params![
                    self.id,
                    self.state,
                    self.wake_at,
                    self.version,
                    self.doc,
                    self.read
                ],
            )?
        };
        Ok((changed == 1).then_some(self.next))
    }
}

impl SqliteStore {
    /// The runs whose documents `query` reads.
    async fn run_docs(
        &self,
        query: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<Vec<String>> + Send + 'static,
    ) -> StoreResult<Vec<Run>> {
        let docs = self
            .with_read(move |conn| query(conn).map_err(backend))
            .await?;
        docs.iter().map(|d| from_json(d)).collect()
    }
}
