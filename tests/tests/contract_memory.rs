//! The store contract on the in-memory adapter.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;

use xylem_core::memory::MemoryStore;

async fn fresh() -> Option<Arc<MemoryStore>> {
    Some(Arc::new(MemoryStore::new()))
}

xylem_tests::store_contract!(fresh);
xylem_tests::coordination_contract!(fresh);
xylem_tests::worker_suite!(fresh);
