//! Opening the store named by `--store` / `XYLEM_STORE`.

use std::sync::Arc;

use anyhow::{Context, bail};
use xylem_core::Stores;
use xylem_core::memory::MemoryStore;
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
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.split('?').next().unwrap_or(url).to_owned(),
    }
}

/// Opens the store at `url`: `sqlite://PATH`, `redis://HOST:PORT[?prefix=P]`,
/// `postgres://USER@HOST/DB[?schema=S]`, or `memory://` (this process only:
/// for `demo` and `bench`).
pub(crate) async fn open(url: &str) -> anyhow::Result<OpenStore> {
    let scheme = url.split("://").next().unwrap_or_default();
    match scheme {
        "sqlite" => {
            let url_owned = url.to_owned();
            let store = tokio::task::spawn_blocking(move || SqliteStore::open_url(&url_owned))
                .await?
                .with_context(|| format!("cannot open store {url}"))?;
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
                .with_context(|| format!("cannot open store {url}"))?;
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
            "unsupported store URL `{url}`: use sqlite://FILE (default {DEFAULT_STORE}), redis://HOST:PORT, postgres://USER@HOST/DB or memory://"
        ),
    }
}
