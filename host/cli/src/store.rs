//! Opening the store named by `--store` / `XYLEM_STORE`.

use std::sync::Arc;

use anyhow::{Context, bail};
use xylem_core::memory::MemoryStore;
use xylem_core::store_url;
use xylem_core::{StoreError, Stores};
use xylem_postgres::PostgresStore;
use xylem_redis::RedisStore;
use xylem_sqlite::SqliteStore;

/// The default store: a SQLite file in the current directory.
pub(crate) const DEFAULT_STORE: &str = "sqlite://xylem.db";

/// An opened store: the three store traits, plus what `health` needs.
pub(crate) struct OpenStore {
    pub(crate) stores: Stores,
    pub(crate) describe: String,
    health: Health,
}

enum Health {
    Sqlite(SqliteStore),
    Redis(RedisStore),
    Postgres(PostgresStore),
    Memory,
}

impl OpenStore {
    /// A version string and a round trip to the store.
    pub(crate) async fn health(&self) -> anyhow::Result<String> {
        match &self.health {
            Health::Sqlite(s) => Ok(s.health().await?),
            Health::Redis(s) => Ok(s.health().await?),
            Health::Postgres(s) => Ok(s.health().await?),
            Health::Memory => Ok("in-memory store (this process only)".to_owned()),
        }
    }
}

/// `url` without its password, for logs and messages.
pub(crate) fn redact(url: &str) -> String {
    store_url::redact(url)
}

/// Opens the store at `url`, chosen by its scheme (in any case):
/// `sqlite://PATH` (or `sqlite:PATH`), `redis://HOST:PORT[?prefix=P]`,
/// `postgres://USER@HOST/DB[?schema=S]` (or `postgresql://`), or
/// `memory://` (this process only: for `demo` and `bench`). Each adapter
/// parses the rest with `xylem_core::store_url`.
pub(crate) async fn open(url: &str) -> anyhow::Result<OpenStore> {
    let scheme = store_url::scheme(url).unwrap_or_default();
    match scheme.as_str() {
        "sqlite" => {
            let url_owned = url.to_owned();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open_url(&url_owned))
                .await?
                .with_context(|| format!("cannot open store {}", redact(url)))?;
            Ok(OpenStore {
                stores: Stores::from_adapter(Arc::new(store.clone())),
                describe: format!("sqlite {}", store.path().display()),
                health: Health::Sqlite(store),
            })
        }
        "memory" => Ok(OpenStore {
            stores: Stores::from_adapter(Arc::new(MemoryStore::new())),
            describe: "memory".to_owned(),
            health: Health::Memory,
        }),
        "redis" => {
            let store = RedisStore::connect(url)
                .await
                .with_context(|| format!("cannot open store {}", redact(url)))?;
            Ok(OpenStore {
                stores: Stores::from_adapter(Arc::new(store.clone())),
                describe: format!("redis {} (prefix {})", redact(url), store.prefix()),
                health: Health::Redis(store),
            })
        }
        "postgres" | "postgresql" => {
            let store = PostgresStore::connect(url)
                .await
                .with_context(|| format!("cannot open store {}", redact(url)))?;
            Ok(OpenStore {
                stores: Stores::from_adapter(Arc::new(store.clone())),
                describe: format!("postgres {} (schema {})", redact(url), store.schema()),
                health: Health::Postgres(store),
            })
        }
        _ => bail!(
            "unsupported store URL `{}`: use sqlite://FILE (default {DEFAULT_STORE}), redis://HOST:PORT, postgres://USER@HOST/DB or memory://",
            redact(url)
        ),
    }
}

/// Opens the store at `url`, waiting for it while it is unreachable: a
/// worker started before its store (after a reboot, in whatever order)
/// says so and tries again with backoff (1 s doubling to 30 s), instead of
/// exiting. Errors that waiting cannot fix (a bad URL) are returned at once.
pub(crate) async fn open_when_up(url: &str) -> anyhow::Result<OpenStore> {
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        match open(url).await {
            Ok(store) => return Ok(store),
            Err(e)
                if e.chain().any(|cause| {
                    cause
                        .downcast_ref::<StoreError>()
                        .is_some_and(StoreError::is_transient)
                }) =>
            {
                tracing::warn!(
                    "store {} is not reachable ({e:#}); trying again in {pause:?}",
                    redact(url)
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
}
