//! What a test leaves behind on the shared servers and disk, removed when
//! it passes: a Redis key prefix, a PostgreSQL schema, a SQLite file's
//! folder. (A failing test keeps its data, to look at.)

use std::future::Future;
use std::pin::Pin;

use xylem_core::memory::MemoryStore;
use xylem_postgres::PostgresStore;
use xylem_redis::RedisStore;
use xylem_sqlite::SqliteStore;

/// Removal of a test store's data, made ready before the test runs (the
/// test takes the store) and awaited after it.
pub trait Cleanup {
    /// A future that removes this store's data.
    fn cleanup_later(&self) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

impl Cleanup for MemoryStore {
    fn cleanup_later(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
}

impl Cleanup for SqliteStore {
    fn cleanup_later(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let dir = self.path().parent().map(ToOwned::to_owned);
        Box::pin(async move {
            // The tests give each store a temp folder of its own.
            if let Some(dir) = dir.filter(|d| d.starts_with(std::env::temp_dir())) {
                let _ = std::fs::remove_dir_all(dir);
            }
        })
    }
}

impl Cleanup for RedisStore {
    fn cleanup_later(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let store = self.clone();
        Box::pin(async move {
            if let Err(e) = store.clear().await {
                eprintln!("cannot clear the test's Redis prefix: {e}");
            }
        })
    }
}

impl Cleanup for PostgresStore {
    fn cleanup_later(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let store = self.clone();
        Box::pin(async move {
            if let Err(e) = store.drop_schema().await {
                eprintln!("cannot drop the test's PostgreSQL schema: {e}");
            }
        })
    }
}
