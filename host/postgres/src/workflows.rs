//! [`WorkflowStore`] on PostgreSQL: table `workflow_runs`, each run whole
//! as JSON beside the columns the engines query (migration 0011).

use async_trait::async_trait;
use xylem_core::codec::{from_json, sql_int, to_json};
use xylem_core::store::{RunFilter, StoreResult, WorkflowStore};
use xylem_core::time::Millis;
use xylem_core::workflow::Run;

use crate::{PostgresStore, db};

#[async_trait]
impl WorkflowStore for PostgresStore {
    async fn put_run(&self, run: &Run) -> StoreResult<Option<u64>> {
        let mut written = run.clone();
        written.version = run.version + 1;
        let doc = to_json(&written)?;
        // A new run is an insert that loses to an existing id; a step's
        // write, an update of the version it read (`$8`).
        let shared = |sql: &'static str| {
            sqlx::query(sql)
                .bind(written.id.clone())
                .bind(written.workflow.clone())
                .bind(written.state.as_str())
                .bind(written.wake_at)
                .bind(written.created_at)
                .bind(sql_int(written.version))
                .bind(doc.clone())
        };
        let query = if run.version == 0 {
            shared(
                "INSERT INTO workflow_runs (id, workflow, state, wake_at, created_at, version, doc)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            )
        } else {
            shared(
                "UPDATE workflow_runs SET state = $3, wake_at = $4, version = $6, doc = $7
                 WHERE id = $1 AND workflow = $2 AND created_at = $5 AND version = $8",
            )
            .bind(sql_int(run.version))
        };
        let done = query.execute(&self.pool).await.map_err(db)?;
        Ok((done.rows_affected() == 1).then_some(written.version))
    }

    async fn get_run(&self, id: &str) -> StoreResult<Option<Run>> {
        let doc: Option<String> = sqlx::query_scalar("SELECT doc FROM workflow_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        doc.map(|d| from_json(&d)).transpose()
    }

    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        let docs: Vec<String> = sqlx::query_scalar(
            "SELECT doc FROM workflow_runs
             WHERE ($1::text IS NULL OR workflow = $1) AND ($2::text IS NULL OR state = $2)
             ORDER BY created_at DESC, id DESC LIMIT $3",
        )
        .bind(filter.workflow.clone())
        .bind(filter.state.map(|s| s.as_str()))
        .bind(sql_int(filter.effective_limit()))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        docs.iter().map(|d| from_json(d)).collect()
    }

    async fn due_runs(&self, now: Millis, limit: usize) -> StoreResult<Vec<Run>> {
        let docs: Vec<String> = sqlx::query_scalar(
            "SELECT doc FROM workflow_runs WHERE wake_at IS NOT NULL AND wake_at <= $1
             ORDER BY wake_at, id LIMIT $2",
        )
        .bind(now)
        .bind(sql_int(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        docs.iter().map(|d| from_json(d)).collect()
    }
}
