//! The store contract on the SQLite adapter, each test on its own file.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;

use xylem_sqlite::SqliteStore;

async fn fresh() -> Option<Arc<SqliteStore>> {
    let dir = tempfile::tempdir().unwrap().keep();
    Some(Arc::new(
        SqliteStore::open(&dir.join("contract.db")).unwrap(),
    ))
}

xylem_tests::store_contract!(fresh);
xylem_tests::coordination_contract!(fresh);
xylem_tests::worker_suite!(fresh);
