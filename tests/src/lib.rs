//! Shared helpers of Xylem's integration tests: building the example and
//! hostile plugins once per test process, a shared Wasm runtime, and the
//! path of the `xylem` binary.

#![allow(clippy::unwrap_used, missing_docs)] // test support: a failed unwrap is a failed test

pub mod cleanup;
pub mod cli_env;
pub mod scenarios;
pub mod servers;
pub mod span_check;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use xylem_wasm::{Runtime, RuntimeConfig};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The component built from `plugins/<name>` (built on first use, once per
/// test process; cargo's own lock serialises builds across processes).
pub fn plugin(name: &str) -> PathBuf {
    try_plugin(name).unwrap_or_else(|e| panic!("cannot build plugin {name}: {e}"))
}

/// [`plugin`], with the build's error: a plugin in any language. Builds
/// take turns within the process (two `npm ci` in one directory at once
/// would trip over each other).
pub fn try_plugin(name: &str) -> Result<PathBuf, xylem_wasm::BuildError> {
    static BUILT: OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.get(name) {
        return Ok(path.clone());
    }
    let path = xylem_wasm::build_plugin(&repo_root().join("plugins").join(name))?;
    built.insert(name.to_owned(), path.clone());
    Ok(path)
}

/// One Wasm runtime for the whole test process, caching compiled
/// components under `cache_dir`.
pub fn runtime(cache_dir: &Path) -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Runtime::new(RuntimeConfig {
                cache_dir: Some(cache_dir.join("components")),
                ..RuntimeConfig::default()
            })
            .expect("the Wasm runtime starts")
        })
        .clone()
}

/// The `xylem` binary `cargo test --workspace` built next to the tests.
pub fn xylem_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test> → target/<profile>/xylem
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let bin = dir.join(format!("xylem{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` (or `cargo build -p xylem-cli` first)",
        bin.display()
    );
    bin
}

/// Whether this is a CI run (`CI=true`): there a test never passes by
/// skipping what it needs.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The URL of a server the tests need (Redis, Postgres), from `env_var` or
/// `default`, if it answers a TCP connect. When it does not: with
/// `CI=true` the test fails (CI must never pass by skipping); otherwise
/// it prints why and returns `None`, and the test skips.
pub fn service_url(env_var: &str, default: &str) -> Option<String> {
    let url = std::env::var(env_var).unwrap_or_else(|_| default.to_owned());
    let authority = url
        .split("://")
        .nth(1)
        .unwrap_or(&url)
        .split(['/', '?'])
        .next()
        .unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or(authority).to_owned();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| {
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
        });
    if reachable {
        return Some(url);
    }
    let message = format!("{url} ({env_var}) is not reachable");
    if in_ci() {
        panic!("{message}: CI must not skip this test");
    }
    eprintln!("skipping: {message}");
    None
}

/// A name unique to this test run: for a schema, key prefix or database.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// When a finished job's last run started (its last `running` history
/// entry) and ended (its last entry), in ms since the epoch.
pub fn last_run(record: &xylem_core::TaskRecord) -> (i64, i64) {
    let start = record
        .history
        .iter()
        .rev()
        .find(|h| h.state == xylem_core::TaskState::Running)
        .map_or(0, |h| h.at);
    (start, record.history.last().map_or(0, |h| h.at))
}

/// Enqueues one job of `task` for the value `tenant` of header `tenant`,
/// with no retries; its id.
pub async fn enqueue_for_tenant(stores: &xylem_core::Stores, task: &str, tenant: &str) -> String {
    let mut e = xylem_core::Envelope::new(task, "{}");
    e.max_retries = 0;
    e.headers.push(("tenant".to_owned(), tenant.to_owned()));
    stores
        .broker
        .enqueue(std::slice::from_ref(&e))
        .await
        .expect("enqueue");
    e.id
}
