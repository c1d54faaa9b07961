//! Xylem's integration tests, in one binary (one link of wasmtime, sqlx and
//! redis instead of one per topic), a module per topic:
//!
//! - the store contract, written once and run on every store: `contract`
//!   (queues, records, plugins, the hot path), `coordination` (groups,
//!   locks, quotas), `worker` (the worker's job path, in process);
//! - what one adapter does beyond it: `sqlite`, `redis`, `postgres` (hot
//!   path details, schemas, and clusters of worker processes with
//!   `kill -9` and server restarts);
//! - the sandbox with the hostile plugins: `sandbox`;
//! - the `xylem` binary as a user drives it: `cli`, `worker_cli`, `health`.
//!
//! The hostile corpus runs in a binary of its own (`hostile_corpus`): it
//! measures other jobs' latency, which tests running beside it would skew.
//!
//! A contract case is written once, with [`contract_case!`],
//! [`coordination_case!`] or [`worker_case!`]: `contract_case!(name, |s| {
//! … })` makes a module `name` holding one test per store (`name::memory`,
//! `name::sqlite`, `name::redis`, `name::postgres`), each given a fresh
//! store of its own. Filter by store with e.g. `cargo test -p xylem-tests
//! --test all ::redis`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

/// One test per store, each running `$case` on a fresh store of that kind.
macro_rules! on_every_store {
    ($case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn memory() {
            $crate::stores::run($crate::stores::memory(), $case).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sqlite() {
            $crate::stores::run($crate::stores::sqlite(), $case).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis() {
            $crate::stores::run($crate::stores::redis(), $case).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres() {
            $crate::stores::run($crate::stores::postgres(), $case).await
        }
    };
}

/// A store-contract case, run on every store: `s` is the store, as a
/// `&dyn AdapterObj` (broker, results, plugins).
macro_rules! contract_case {
    ($name:ident, |$s:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn case(store: std::sync::Arc<dyn $crate::stores::AdapterObj>) {
                let $s: &dyn $crate::stores::AdapterObj = &*store;
                $body
            }
            on_every_store!(case);
        }
    };
}

/// A coordination case (groups, locks, quotas), run on every store: `s`
/// is an `Arc<dyn CoordinationObj>`, to share with spawned tasks.
macro_rules! coordination_case {
    ($name:ident, |$s:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn case($s: std::sync::Arc<dyn $crate::stores::CoordinationObj>) $body
            on_every_store!(case);
        }
    };
}

/// A worker case, run on every store: `stores` is the store as the
/// worker takes it (`xylem_core::Stores`).
macro_rules! worker_case {
    ($name:ident, |$s:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn case($s: xylem_core::Stores) $body
            on_every_store!(case);
        }
    };
}

mod stores;

mod beat;
mod contract;
mod coordination;
mod worker;
mod workflows;

mod postgres;
mod redis;
mod sqlite;

mod languages;
mod sandbox;
mod shared_code;

mod api;
mod cli;
mod dashboard;
mod health;
mod telemetry;
mod worker_cli;
