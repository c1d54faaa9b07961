//! [`PluginStore`] on SQLite: blobs by digest, and the task → version routes.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use xylem_core::TaskSpec;
use xylem_core::codec::{sql_int, sql_u64};
use xylem_core::store::{PluginInfo, PluginStore, StoreResult, TaskRoute, fallback_route};
use xylem_core::time::now_ms;

use crate::{SqliteStore, backend, corrupt, exec};

fn bump_routes_version(tx: &rusqlite::Connection) -> StoreResult<()> {
    exec(
        tx,
        "UPDATE xylem_meta SET value = value + 1 WHERE key = 'routes_version'",
        [],
    )
    .map(|_| ())
    .map_err(backend)
}

#[async_trait]
impl PluginStore for SqliteStore {
    async fn put_plugin(&self, digest: &str, bytes: &[u8], tasks: &[TaskSpec]) -> StoreResult<()> {
        let (digest, bytes) = (digest.to_owned(), bytes.to_vec());
        let specs = tasks.to_vec();
        let tasks_json = serde_json::to_string(&specs).map_err(corrupt)?;
        self.with_conn(move |conn| {
            let tx = crate::begin(conn)?;
            exec(&tx,
                // `push_seq` orders versions by push (a re-push is a new
                // push): the order of the fallback rule.
                "INSERT INTO plugins (digest, bytes, size, tasks, pushed_at, push_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, (SELECT COALESCE(MAX(push_seq), 0) + 1 FROM plugins))
                 ON CONFLICT (digest) DO UPDATE
                     SET pushed_at = excluded.pushed_at, push_seq = excluded.push_seq",
                params![digest, bytes, sql_int(bytes.len()), tasks_json, now_ms()],
            )
            .map_err(backend)?;
            for spec in &specs {
                exec(&tx,
                    "INSERT INTO routes (task, digest, spec) VALUES (?1, ?2, ?3)
                     ON CONFLICT (task) DO UPDATE SET digest = excluded.digest, spec = excluded.spec",
                    params![spec.name, digest, serde_json::to_string(spec).map_err(corrupt)?],
                )
                .map_err(backend)?;
            }
            bump_routes_version(&tx)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn plugin_bytes(&self, digest: &str) -> StoreResult<Option<Vec<u8>>> {
        let digest = digest.to_owned();
        self.with_read(move |conn| {
            conn.query_row(
                "SELECT bytes FROM plugins WHERE digest = ?1",
                [digest],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn put_compiled(&self, digest: &str, engine: &str, artifact: &[u8]) -> StoreResult<()> {
        let (digest, engine, artifact) = (digest.to_owned(), engine.to_owned(), artifact.to_vec());
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO compiled (digest, engine, artifact)
                 SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM plugins WHERE digest = ?1)",
                rusqlite::params![digest, engine, artifact],
            )
            .map(|_| ())
            .map_err(backend)
        })
        .await
    }

    async fn compiled(&self, digest: &str, engine: &str) -> StoreResult<Option<Vec<u8>>> {
        let (digest, engine) = (digest.to_owned(), engine.to_owned());
        self.with_read(move |conn| {
            conn.query_row(
                "SELECT artifact FROM compiled WHERE digest = ?1 AND engine = ?2",
                [digest, engine],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn plugins(&self) -> StoreResult<Vec<PluginInfo>> {
        self.with_read(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT p.digest, p.size, p.tasks, p.pushed_at,
                            (SELECT group_concat(task, ' ') FROM routes r WHERE r.digest = p.digest)
                     FROM plugins p ORDER BY p.push_seq DESC",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })
                .map_err(backend)?;
            let mut plugins = Vec::new();
            for row in rows {
                let (digest, size, tasks, pushed_at, active) = row.map_err(backend)?;
                let mut active_tasks: Vec<String> = active
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                active_tasks.sort();
                plugins.push(PluginInfo {
                    digest,
                    size: sql_u64(size),
                    tasks: serde_json::from_str(&tasks).map_err(corrupt)?,
                    pushed_at,
                    active_tasks,
                });
            }
            Ok(plugins)
        })
        .await
    }

    async fn routes(&self) -> StoreResult<Vec<TaskRoute>> {
        self.with_read(|conn| {
            let mut stmt = conn
                .prepare("SELECT task, digest, spec FROM routes ORDER BY task")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(backend)?;
            let mut routes = Vec::new();
            for row in rows {
                let (task, digest, spec) = row.map_err(backend)?;
                routes.push(TaskRoute {
                    task,
                    digest,
                    spec: serde_json::from_str(&spec).map_err(corrupt)?,
                });
            }
            Ok(routes)
        })
        .await
    }

    async fn remove_plugin(&self, digest: &str) -> StoreResult<bool> {
        let digest = digest.to_owned();
        self.with_conn(move |conn| {
            let tx = crate::begin(conn)?;
            let existed = exec(&tx, "DELETE FROM plugins WHERE digest = ?1", [&digest])
                .map_err(backend)?
                == 1;
            let orphaned: Vec<String> = {
                let mut stmt = tx
                    .prepare("SELECT task FROM routes WHERE digest = ?1")
                    .map_err(backend)?;
                let rows = stmt.query_map([&digest], |r| r.get(0)).map_err(backend)?;
                rows.collect::<Result<_, _>>().map_err(backend)?
            };
            exec(&tx, "DELETE FROM routes WHERE digest = ?1", [&digest]).map_err(backend)?;
            exec(&tx, "DELETE FROM compiled WHERE digest = ?1", [&digest]).map_err(backend)?;
            // Each orphaned task falls back by the one rule
            // (`fallback_route`): latest push first.
            let versions: Vec<(String, Vec<TaskSpec>)> = {
                let mut stmt = tx
                    .prepare("SELECT digest, tasks FROM plugins ORDER BY push_seq DESC")
                    .map_err(backend)?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                    .map_err(backend)?;
                let mut versions = Vec::new();
                for row in rows {
                    let (d, tasks) = row.map_err(backend)?;
                    versions.push((d, serde_json::from_str(&tasks).map_err(corrupt)?));
                }
                versions
            };
            for task in orphaned {
                let newest_first = versions.iter().map(|(d, s)| (d.as_str(), s.as_slice()));
                if let Some(route) = fallback_route(&task, newest_first) {
                    exec(
                        &tx,
                        "INSERT INTO routes (task, digest, spec) VALUES (?1, ?2, ?3)",
                        params![
                            route.task,
                            route.digest,
                            serde_json::to_string(&route.spec).map_err(corrupt)?
                        ],
                    )
                    .map_err(backend)?;
                }
            }
            bump_routes_version(&tx)?;
            tx.commit().map_err(backend)?;
            Ok(existed)
        })
        .await
    }

    async fn routes_version(&self) -> StoreResult<u64> {
        self.with_read(|conn| {
            conn.query_row(
                "SELECT value FROM xylem_meta WHERE key = 'routes_version'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(sql_u64)
            .map_err(backend)
        })
        .await
    }
}
