//! The store contract on the in-memory adapter.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;

use xylem_core::memory::MemoryStore;

xylem_tests::store_contract!(|| Arc::new(MemoryStore::new()));
