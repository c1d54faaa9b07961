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
        let mut written = self.put_runs(std::slice::from_ref(run)).await?;
        Ok(written.pop().flatten())
    }

    async fn put_runs(&self, runs: &[Run]) -> StoreResult<Vec<Option<u64>>> {
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let mut columns = RunColumns::default();
        for run in runs {
            columns.push(run)?;
        }
        // Two statements for the lot, each over the batch's columns: new
        // runs are inserts that lose to an existing id; steps' writes,
        // updates of the version each read.
        let inserted: Vec<String> = columns
            .bind(sqlx::query_scalar(
                "INSERT INTO workflow_runs (id, workflow, state, wake_at, created_at, version, doc)
                 SELECT id, workflow, state, wake_at, created_at, version, doc
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                             $6::bigint[], $7::text[], $8::bigint[])
                      AS w (id, workflow, state, wake_at, created_at, version, doc, read)
                 WHERE read = 0
                 ON CONFLICT (id) DO NOTHING RETURNING id",
            ))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let updated: Vec<String> = if runs.iter().any(|r| r.version != 0) {
            columns
                .bind(sqlx::query_scalar(
                    "UPDATE workflow_runs r
                     SET state = w.state, wake_at = w.wake_at, version = w.version, doc = w.doc
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                                 $6::bigint[], $7::text[], $8::bigint[])
                          AS w (id, workflow, state, wake_at, created_at, version, doc, read)
                     WHERE w.read <> 0 AND r.id = w.id AND r.workflow = w.workflow
                       AND r.created_at = w.created_at AND r.version = w.read
                     RETURNING r.id",
                ))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?
        } else {
            Vec::new()
        };
        let written: std::collections::HashSet<String> =
            inserted.into_iter().chain(updated).collect();
        Ok(runs
            .iter()
            .map(|r| written.contains(&r.id).then_some(r.version + 1))
            .collect())
    }

    async fn get_run(&self, id: &str) -> StoreResult<Option<Run>> {
        let doc: Option<String> = sqlx::query_scalar("SELECT doc FROM workflow_runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        doc.map(|d| from_json(&d)).transpose()
    }

    async fn get_runs(&self, ids: &[String]) -> StoreResult<Vec<Option<Run>>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT id, doc FROM workflow_runs WHERE id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        let mut docs: std::collections::HashMap<String, String> = rows.into_iter().collect();
        ids.iter()
            .map(|id| docs.remove(id).map(|d| from_json(&d)).transpose())
            .collect()
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

/// A batch of runs' writes as columns, for `unnest`.
#[derive(Default)]
struct RunColumns {
    id: Vec<String>,
    workflow: Vec<String>,
    state: Vec<&'static str>,
    wake_at: Vec<Option<Millis>>,
    created_at: Vec<Millis>,
    version: Vec<i64>,
    doc: Vec<String>,
    read: Vec<i64>,
}

impl RunColumns {
    /// `query` with the columns bound as `$1`–`$8`.
    fn bind<'q, O>(
        &'q self,
        query: sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(&self.id)
            .bind(&self.workflow)
            .bind(&self.state)
            .bind(&self.wake_at)
            .bind(&self.created_at)
            .bind(&self.version)
            .bind(&self.doc)
            .bind(&self.read)
    }

    fn push(&mut self, run: &Run) -> StoreResult<()> {
        let mut written = run.clone();
        written.version = run.version + 1;
        self.doc.push(to_json(&written)?);
        self.state.push(written.state.as_str());
        self.wake_at.push(written.wake_at);
        self.created_at.push(written.created_at);
        self.version.push(sql_int(written.version));
        self.read.push(sql_int(run.version));
        self.id.push(written.id);
        self.workflow.push(written.workflow);
        Ok(())
    }
}
