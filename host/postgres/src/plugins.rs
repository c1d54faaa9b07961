//! [`PluginStore`] on PostgreSQL: blobs by digest, and the task → version
//! routes.
//!
//! Every change starts by bumping `routes_version`, which locks its row:
//! pushes and removals run one at a time, so they never deadlock on the
//! routes they both touch.

use async_trait::async_trait;
use sqlx::postgres::Postgres;
use sqlx::{Row, Transaction};
use xylem_core::TaskSpec;
use xylem_core::store::{PluginInfo, PluginStore, StoreResult, TaskRoute, fallback_route};
use xylem_core::time::now_ms;

use crate::{PostgresStore, corrupt, db, sql_int, sql_u64};

async fn bump_routes_version(tx: &mut Transaction<'_, Postgres>) -> StoreResult<()> {
    sqlx::query("UPDATE xylem_meta SET value = value + 1 WHERE key = 'routes_version'")
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

#[async_trait]
impl PluginStore for PostgresStore {
    async fn put_plugin(&self, digest: &str, bytes: &[u8], tasks: &[TaskSpec]) -> StoreResult<()> {
        let tasks_json = serde_json::to_string(tasks).map_err(corrupt)?;
        // One route per task name (the last declaration wins, as in a
        // loop of upserts), in name order.
        let mut specs: Vec<&TaskSpec> = Vec::with_capacity(tasks.len());
        for spec in tasks {
            specs.retain(|s| s.name != spec.name);
            specs.push(spec);
        }
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        let spec_json = specs
            .iter()
            .map(|s| serde_json::to_string(s).map_err(corrupt))
            .collect::<StoreResult<Vec<String>>>()?;

        let mut tx = self.pool.begin().await.map_err(db)?;
        bump_routes_version(&mut tx).await?;
        sqlx::query(
            "INSERT INTO plugins (digest, bytes, size, tasks, pushed_at, push_seq)
             VALUES ($1, $2, $3, $4, $5, nextval('plugin_push_seq'))
             ON CONFLICT (digest) DO UPDATE
                 SET pushed_at = excluded.pushed_at, push_seq = excluded.push_seq",
        )
        .bind(digest)
        .bind(bytes)
        .bind(sql_int(bytes.len()))
        .bind(tasks_json)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO routes (task, digest, spec)
             SELECT task, $1, spec FROM unnest($2::text[], $3::text[]) AS r(task, spec)
             ON CONFLICT (task) DO UPDATE SET digest = excluded.digest, spec = excluded.spec",
        )
        .bind(digest)
        .bind(&names)
        .bind(&spec_json)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn plugin_bytes(&self, digest: &str) -> StoreResult<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT bytes FROM plugins WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn put_compiled(&self, digest: &str, engine: &str, artifact: &[u8]) -> StoreResult<()> {
        // The compiled row goes when its plugin goes (ON DELETE CASCADE).
        sqlx::query(
            "INSERT INTO compiled (digest, engine, artifact)
             SELECT digest, $2, $3 FROM plugins WHERE digest = $1
             ON CONFLICT (digest, engine) DO UPDATE SET artifact = EXCLUDED.artifact",
        )
        .bind(digest)
        .bind(engine)
        .bind(artifact)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db)
    }

    async fn compiled(&self, digest: &str, engine: &str) -> StoreResult<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT artifact FROM compiled WHERE digest = $1 AND engine = $2")
            .bind(digest)
            .bind(engine)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)
    }

    async fn plugins(&self) -> StoreResult<Vec<PluginInfo>> {
        let rows = sqlx::query(
            "SELECT p.digest, p.size, p.tasks, p.pushed_at,
                    (SELECT array_agg(r.task) FROM routes r WHERE r.digest = p.digest)
             FROM plugins p ORDER BY p.push_seq DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut plugins = Vec::with_capacity(rows.len());
        for r in rows {
            let tasks: String = r.try_get(2).map_err(db)?;
            let mut active_tasks: Vec<String> = r
                .try_get::<Option<Vec<String>>, _>(4)
                .map_err(db)?
                .unwrap_or_default();
            active_tasks.sort();
            plugins.push(PluginInfo {
                digest: r.try_get(0).map_err(db)?,
                size: sql_u64(r.try_get(1).map_err(db)?),
                tasks: serde_json::from_str(&tasks).map_err(corrupt)?,
                pushed_at: r.try_get(3).map_err(db)?,
                active_tasks,
            });
        }
        Ok(plugins)
    }

    async fn routes(&self) -> StoreResult<Vec<TaskRoute>> {
        let rows = sqlx::query("SELECT task, digest, spec FROM routes ORDER BY task")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut routes = Vec::with_capacity(rows.len());
        for r in rows {
            let spec: String = r.try_get(2).map_err(db)?;
            routes.push(TaskRoute {
                task: r.try_get(0).map_err(db)?,
                digest: r.try_get(1).map_err(db)?,
                spec: serde_json::from_str(&spec).map_err(corrupt)?,
            });
        }
        Ok(routes)
    }

    async fn remove_plugin(&self, digest: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        bump_routes_version(&mut tx).await?;
        let existed = sqlx::query("DELETE FROM plugins WHERE digest = $1")
            .bind(digest)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected()
            == 1;
        let orphaned: Vec<String> =
            sqlx::query_scalar("DELETE FROM routes WHERE digest = $1 RETURNING task")
                .bind(digest)
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
        if !orphaned.is_empty() {
            // Each orphaned task falls back by the one rule
            // (`fallback_route`): latest push first.
            let rows = sqlx::query("SELECT digest, tasks FROM plugins ORDER BY push_seq DESC")
                .fetch_all(&mut *tx)
                .await
                .map_err(db)?;
            let mut versions = Vec::with_capacity(rows.len());
            for r in rows {
                let tasks: String = r.try_get(1).map_err(db)?;
                let specs: Vec<TaskSpec> = serde_json::from_str(&tasks).map_err(corrupt)?;
                versions.push((r.try_get::<String, _>(0).map_err(db)?, specs));
            }
            let (mut tasks, mut digests, mut specs) = (Vec::new(), Vec::new(), Vec::new());
            for task in orphaned {
                let newest_first = versions.iter().map(|(d, s)| (d.as_str(), s.as_slice()));
                if let Some(route) = fallback_route(&task, newest_first) {
                    specs.push(serde_json::to_string(&route.spec).map_err(corrupt)?);
                    digests.push(route.digest);
                    tasks.push(route.task);
                }
            }
            if !tasks.is_empty() {
                sqlx::query(
                    "INSERT INTO routes (task, digest, spec)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
                )
                .bind(&tasks)
                .bind(&digests)
                .bind(&specs)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(existed)
    }

    async fn routes_version(&self) -> StoreResult<u64> {
        sqlx::query_scalar("SELECT value FROM xylem_meta WHERE key = 'routes_version'")
            .fetch_one(&self.pool)
            .await
            .map(sql_u64)
            .map_err(db)
    }
}
