//! `xylem health` against every kind of store: version and round trip when
//! it is up, exit code 1 and the reason when it is not.

use std::process::{Command, Output};

use xylem_tests::{service_url, unique_name, xylem_bin};

fn health(url: &str) -> Output {
    Command::new(xylem_bin())
        .args(["--store", url, "health", "--json"])
        .output()
        .unwrap()
}

fn assert_healthy(url: &str, version_prefix: &str) {
    let out = health(url);
    assert!(
        out.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    let version = doc["version"].as_str().unwrap();
    assert!(version.starts_with(version_prefix), "{version}");
    assert!(doc["latency_ms"].as_f64().unwrap() >= 0.0);
}

fn assert_unreachable(url: &str) {
    let out = health(url);
    assert_eq!(out.status.code(), Some(1), "{url}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot"), "{url}: {stderr}");
}

#[test]
fn health_reports_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    assert_healthy(
        &format!("sqlite://{}", dir.path().join("h.db").display()),
        "SQLite",
    );
    assert_unreachable("sqlite:///no/such/dir/h.db");
}

#[test]
fn health_reports_redis() {
    let Some(url) = service_url("XYLEM_TEST_REDIS_URL", "redis://127.0.0.1:6379") else {
        return;
    };
    assert_healthy(&format!("{url}?prefix={}", unique_name("h")), "Redis");
    assert_unreachable("redis://127.0.0.1:1");
}

#[test]
fn health_reports_postgres() {
    let Some(url) = service_url(
        "XYLEM_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    assert_healthy(
        &format!("{url}{sep}schema={}", unique_name("h")),
        "PostgreSQL",
    );
    assert_unreachable("postgres://postgres@127.0.0.1:1/test");
}

#[test]
fn a_password_never_reaches_the_output() {
    // Issue 8, item 5: an unreachable store's error names the URL, but
    // never its password — on stdout (`--json`) or stderr.
    for url in [
        "redis://:hunter2secret@127.0.0.1:1",
        "redis://user:hunter2secret@127.0.0.1:1/0?prefix=p",
        "postgres://xylem:hunter2secret@127.0.0.1:1/db",
        "postgres://xylem@127.0.0.1:1/db?password=hunter2secret",
    ] {
        let out = health(url);
        assert_eq!(out.status.code(), Some(1), "{url}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains("hunter2secret"), "{url} leaked: {all}");
        assert!(all.contains("***"), "{url}: {all}");
    }
}
