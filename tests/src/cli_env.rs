//! `xylem` processes on a store of their own: what the end-to-end tests
//! drive (`worker_cli.rs`, `hostile_corpus.rs`).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use xylem_core::store::ResultBackend;
use xylem_core::{TaskFilter, TaskRecord, TaskState};
use xylem_sqlite::SqliteStore;

use crate::{plugin, xylem_bin};

/// The compiled-component cache the `xylem` processes share:
/// `target/tmp/worker-cli-cache` (cargo's `CARGO_TARGET_TMPDIR`).
fn cache_dir() -> PathBuf {
    let bin = xylem_bin();
    let target = bin
        .parent()
        .and_then(Path::parent)
        .expect("xylem lives in target/<profile>");
    target.join("tmp").join("worker-cli-cache")
}

/// A fresh SQLite store in a temp dir, and helpers to run `xylem` on it.
#[derive(Debug)]
pub struct Env {
    /// Its folder (the SQLite file, worker logs).
    pub dir: PathBuf,
    /// Its store URL.
    pub url: String,
}

/// A passing test's folder is removed; a failing one's is kept to look at.
impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    /// A fresh SQLite store in a temp folder of its own.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        let url = format!("sqlite://{}", dir.join("xylem.db").display());
        Self { dir, url }
    }

    /// Runs `xylem` on another store (the folder keeps worker logs).
    pub fn with_url(url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap().keep();
        Self {
            dir,
            url: url.to_owned(),
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(xylem_bin());
        cmd.arg("--store")
            .arg(&self.url)
            .env("XYLEM_CACHE_DIR", cache_dir())
            .env("XYLEM_LOG", "info");
        cmd
    }

    pub fn xylem(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    /// Runs `xylem`, asserts success, returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.xylem(args);
        assert!(
            out.status.success(),
            "xylem {args:?} failed ({:?}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn push(&self, name: &str) {
        self.ok(&["plugin", "push", plugin(name).to_str().unwrap()]);
    }

    pub fn enqueue(&self, args: &[&str]) -> String {
        let mut argv = vec!["enqueue"];
        argv.extend_from_slice(args);
        self.ok(&argv).trim().to_owned()
    }

    pub fn worker(&self, name: &str, extra: &[&str]) -> Child {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        self.command()
            .args(["worker", "--name", name])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub async fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.dir.join("xylem.db")).unwrap()
    }

    /// Waits until `n` jobs have succeeded (or panics after `timeout`).
    pub async fn wait_succeeded(&self, n: usize, timeout: Duration) -> Vec<TaskRecord> {
        let store = self.store().await;
        let started = Instant::now();
        loop {
            let filter = TaskFilter {
                state: Some(TaskState::Succeeded),
                limit: 100_000,
                ..Default::default()
            };
            let done = store.list(&filter).await.unwrap();
            if done.len() >= n {
                return done;
            }
            assert!(
                started.elapsed() < timeout,
                "only {} of {n} jobs succeeded in {timeout:?}",
                done.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
