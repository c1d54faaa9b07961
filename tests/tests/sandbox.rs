//! The sandbox: every hostile plugin ends as its typed failure within its
//! limits, the host survives, and the next job runs fine — one after
//! another and all at once.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use xylem_core::{
    CancelToken, FailureKind, Limits, LogLevel, NoHostCalls, Outcome, RunRequest, TaskInfo,
};
use xylem_tests::{plugin, runtime};
use xylem_wasm::{LoadError, Plugin};

fn cache_dir() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sandbox-tests")
}

async fn load(name: &str) -> Plugin {
    runtime(&cache_dir())
        .load_file(&plugin(name))
        .await
        .unwrap_or_else(|e| panic!("plugin {name} loads: {e}"))
}

fn request(task: &str, args: serde_json::Value, limits: Limits) -> RunRequest {
    RunRequest {
        info: TaskInfo::new(format!("test-{task}"), task),
        args: args.to_string(),
        limits,
        cancel: CancelToken::new(),
    }
}

async fn run(plugin: &Plugin, task: &str, args: serde_json::Value, limits: Limits) -> Outcome {
    plugin
        .run(request(task, args, limits), Arc::new(NoHostCalls))
        .await
}

/// Tight limits so every fixture ends quickly.
fn tight() -> Limits {
    Limits {
        hard_time_limit: Duration::from_secs(1),
        max_memory: 32 * 1024 * 1024,
        // Enough that an infinite loop meets its 1 s time limit first even
        // on a fast, idle machine (20G ran out in 0.99 s here).
        fuel: 200_000_000_000,
        max_output: 64 * 1024,
        ..Limits::default()
    }
}

/// Each hostile task, its arguments, and the failure kind it must end in.
fn hostile_cases() -> Vec<(&'static str, serde_json::Value, FailureKind)> {
    vec![
        ("hostile.loop", json!({}), FailureKind::TimeLimitExceeded),
        (
            "hostile.memory-bomb",
            json!({}),
            FailureKind::MemoryLimitExceeded,
        ),
        ("hostile.stack-overflow", json!({}), FailureKind::Trap),
        ("hostile.panic", json!({}), FailureKind::Trap),
        (
            "hostile.huge-output",
            json!({"bytes": 1_000_000}),
            FailureKind::BadOutput,
        ),
        ("hostile.read-file", json!({}), FailureKind::PluginError),
        ("hostile.read-env", json!({}), FailureKind::PluginError),
        ("hostile.socket", json!({}), FailureKind::PluginError),
    ]
}

async fn assert_greet_works(hello: &Plugin) {
    let outcome = run(
        hello,
        "hello.greet",
        json!({"name": "Ada"}),
        Limits::default(),
    )
    .await;
    assert_eq!(outcome.result, Some(json!("Hello, Ada!")), "{outcome:?}");
}

#[tokio::test]
async fn greet_returns_the_greeting_with_usage_and_log() {
    let hello = load("hello").await;
    let outcome = run(
        &hello,
        "hello.greet",
        json!({"name": "Ada"}),
        Limits::default(),
    )
    .await;
    assert_eq!(outcome.result, Some(json!("Hello, Ada!")));
    assert!(outcome.usage.fuel > 0);
    assert!(outcome.usage.peak_memory > 0);
    assert!(outcome.usage.wall_time_us > 0);
    assert!(
        outcome
            .log
            .iter()
            .any(|l| l.level == LogLevel::Info && l.message == "greeting Ada"),
        "{:?}",
        outcome.log
    );
}

#[tokio::test]
async fn hostile_plugins_fail_typed_one_after_another_and_the_next_job_succeeds() {
    let hostile = load("hostile").await;
    let hello = load("hello").await;
    for (task, args, kind) in hostile_cases() {
        let started = Instant::now();
        let outcome = run(&hostile, task, args, tight()).await;
        let elapsed = started.elapsed();
        assert_eq!(outcome.failure_kind(), Some(kind), "{task}: {outcome:?}");
        assert!(
            elapsed < Duration::from_secs(2),
            "{task} took {elapsed:?}, over its 1 s limit"
        );
        assert!(!outcome.error.as_ref().unwrap().message.is_empty());
        // The very next run in the same process succeeds.
        assert_greet_works(&hello).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_fail_typed_when_run_all_at_once() {
    let hostile = load("hostile").await;
    let hello = load("hello").await;
    let mut handles = Vec::new();
    for (task, args, kind) in hostile_cases() {
        let hostile = hostile.clone();
        handles.push(tokio::spawn(async move {
            (task, kind, run(&hostile, task, args, tight()).await)
        }));
    }
    // Good jobs run alongside the bad ones and are not disturbed.
    let mut greets = Vec::new();
    for i in 0..8 {
        let hello = hello.clone();
        greets.push(tokio::spawn(async move {
            run(
                &hello,
                "hello.greet",
                json!({"name": format!("n{i}")}),
                Limits::default(),
            )
            .await
        }));
    }
    let started = Instant::now();
    for handle in handles {
        let (task, kind, outcome) = handle.await.expect("no run panics");
        assert_eq!(outcome.failure_kind(), Some(kind), "{task}: {outcome:?}");
    }
    for (i, greet) in greets.into_iter().enumerate() {
        let outcome = greet.await.expect("no run panics");
        assert_eq!(outcome.result, Some(json!(format!("Hello, n{i}!"))));
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_greet_works(&hello).await;
}

#[tokio::test]
async fn an_infinite_loop_with_a_one_second_limit_returns_well_under_two_seconds() {
    let hostile = load("hostile").await;
    let limits = Limits {
        hard_time_limit: Duration::from_secs(1),
        ..Limits::default()
    };
    let started = Instant::now();
    let outcome = run(&hostile, "hostile.loop", json!({}), limits).await;
    let elapsed = started.elapsed();
    assert_eq!(outcome.failure_kind(), Some(FailureKind::TimeLimitExceeded));
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_survives_from_one_job_to_the_next() {
    let hostile = load("hostile").await;
    for _ in 0..50 {
        let outcome = run(&hostile, "hostile.remember", json!({}), Limits::default()).await;
        // First call of a fresh instance, on zeroed memory, every time.
        assert_eq!(outcome.result, Some(json!([1, 0])), "{outcome:?}");
    }
}

#[tokio::test]
async fn the_guest_sees_no_host_file() {
    let hostile = load("hostile").await;
    let outcome = run(&hostile, "hostile.read-file", json!({}), tight()).await;
    assert_eq!(outcome.failure_kind(), Some(FailureKind::PluginError));
    assert!(outcome.result.is_none(), "a host file leaked: {outcome:?}");
    assert_eq!(
        outcome.error.unwrap().message,
        "no host file or directory is visible"
    );
}

#[tokio::test]
async fn the_guest_sees_no_environment_variable() {
    // The test process has plenty of variables (PATH, HOME, CARGO_*...).
    assert!(std::env::vars().count() > 0);
    let hostile = load("hostile").await;
    let outcome = run(&hostile, "hostile.read-env", json!({}), tight()).await;
    assert!(
        outcome.result.is_none(),
        "the environment leaked: {outcome:?}"
    );
    assert_eq!(outcome.failure_kind(), Some(FailureKind::PluginError));
}

#[tokio::test]
async fn the_guest_can_open_no_socket() {
    // A port that is really listening on this machine, so a refusal can
    // only come from the sandbox.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let hostile = load("hostile").await;
    let outcome = run(&hostile, "hostile.socket", json!({ "addr": addr }), tight()).await;
    assert!(outcome.result.is_none(), "a socket opened: {outcome:?}");
    let message = outcome.error.unwrap().message;
    assert!(message.starts_with("network denied"), "{message}");
    for what in ["connect:", "listen:", "udp:", "dns:"] {
        assert!(message.contains(what), "{what} missing in {message}");
    }
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_err(), "the guest reached the listener");
}

#[tokio::test]
async fn stdout_floods_are_captured_up_to_the_cap() {
    let hostile = load("hostile").await;
    let limits = Limits {
        max_log: 4096,
        ..tight()
    };
    let outcome = run(
        &hostile,
        "hostile.stdout-spam",
        json!({"lines": 5000}),
        limits,
    )
    .await;
    assert_eq!(outcome.result, Some(json!(5000)), "{outcome:?}");
    assert!(outcome.log_truncated);
    let kept: usize = outcome.log.iter().map(|l| l.message.len()).sum();
    assert!(kept <= 4096, "{kept} bytes of log kept");
    assert!(outcome.log.iter().any(|l| l.level == LogLevel::Stdout));
    assert!(outcome.log.iter().any(|l| l.level == LogLevel::Stderr));
}

#[tokio::test]
async fn fuel_use_is_identical_across_runs() {
    let hostile = load("hostile").await;
    let text = load("textstats").await;
    let doc = "The quick brown fox. The lazy dog!\nAnd the fox again?\n".repeat(300);
    let mut burn = Vec::new();
    let mut stats = Vec::new();
    for _ in 0..3 {
        let outcome = run(
            &hostile,
            "hostile.burn",
            json!({"rounds": 200_000}),
            Limits::default(),
        )
        .await;
        assert!(outcome.is_success(), "{outcome:?}");
        burn.push(outcome.usage.fuel);
        let outcome = run(&text, "text.stats", json!({"text": doc}), Limits::default()).await;
        assert!(outcome.is_success(), "{outcome:?}");
        stats.push(outcome.usage.fuel);
    }
    assert!(burn[0] > 200_000, "{burn:?}");
    assert!(burn.iter().all(|f| *f == burn[0]), "{burn:?}");
    assert!(stats.iter().all(|f| *f == stats[0]), "{stats:?}");
}

#[tokio::test]
async fn a_fuel_budget_stops_a_loop() {
    let hostile = load("hostile").await;
    let limits = Limits {
        fuel: 10_000_000,
        ..tight()
    };
    let outcome = run(&hostile, "hostile.loop", json!({}), limits).await;
    assert_eq!(outcome.failure_kind(), Some(FailureKind::FuelExhausted));
    assert_eq!(outcome.usage.fuel, 10_000_000);
}

#[tokio::test]
async fn the_soft_time_limit_turns_cancelled_true() {
    let hostile = load("hostile").await;
    let limits = Limits {
        soft_time_limit: Some(Duration::from_millis(200)),
        hard_time_limit: Duration::from_secs(5),
        ..Limits::default()
    };
    let started = Instant::now();
    let outcome = run(&hostile, "hostile.polite-loop", json!({}), limits).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        outcome.failure_kind(),
        Some(FailureKind::PluginError),
        "{outcome:?}"
    );
    assert!(outcome.soft_limit_reached);
}

#[tokio::test]
async fn cancel_stops_a_running_job_within_milliseconds() {
    let hostile = load("hostile").await;
    let req = request("hostile.loop", json!({}), Limits::default());
    let cancel = req.cancel.clone();
    let running = tokio::spawn({
        let hostile = hostile.clone();
        async move { hostile.run(req, Arc::new(NoHostCalls)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cancelled_at = Instant::now();
    cancel.cancel();
    let outcome = running.await.unwrap();
    assert_eq!(outcome.failure_kind(), Some(FailureKind::Cancelled));
    assert!(
        cancelled_at.elapsed() < Duration::from_millis(200),
        "{:?}",
        cancelled_at.elapsed()
    );
}

#[tokio::test]
async fn bad_requests_fail_clearly_before_running() {
    let hello = load("hello").await;
    let outcome = run(&hello, "hello.nope", json!({}), Limits::default()).await;
    assert_eq!(outcome.failure_kind(), Some(FailureKind::UnknownTask));
    assert!(outcome.error.unwrap().message.contains("hello.greet"));

    let mut req = request("hello.greet", json!({}), Limits::default());
    req.args = "{not json".to_owned();
    let outcome = hello.run(req, Arc::new(NoHostCalls)).await;
    assert_eq!(outcome.failure_kind(), Some(FailureKind::InvalidArgs));

    let outcome = run(
        &hello,
        "hello.greet",
        json!({"nom": "x"}),
        Limits::default(),
    )
    .await;
    assert_eq!(outcome.failure_kind(), Some(FailureKind::Rejected));
    assert!(
        outcome
            .error
            .unwrap()
            .message
            .contains("missing field `name`")
    );
}

#[tokio::test]
async fn task_errors_map_to_fail_and_reject() {
    let hello = load("hello").await;
    let outcome = run(
        &hello,
        "hello.flaky",
        json!({"fail_times": 1}),
        Limits::default(),
    )
    .await;
    assert_eq!(outcome.failure_kind(), Some(FailureKind::PluginError));
    let outcome = run(
        &hello,
        "hello.greet",
        json!({"name": " "}),
        Limits::default(),
    )
    .await;
    assert_eq!(outcome.failure_kind(), Some(FailureKind::Rejected));
}

#[tokio::test]
async fn text_stats_counts_and_reports_progress() {
    let text = load("textstats").await;
    let doc = "One fish. Two fish!\nRed fish, blue fish?\n".repeat(500);
    let outcome = run(
        &text,
        "text.stats",
        json!({"text": doc, "top": 2}),
        Limits::default(),
    )
    .await;
    let stats = outcome.result.clone().expect("text.stats succeeds");
    assert_eq!(stats["words"], json!(4000));
    assert_eq!(stats["lines"], json!(1000));
    assert_eq!(stats["sentences"], json!(1500));
    assert_eq!(
        stats["top_words"][0],
        json!({"word": "fish", "count": 2000})
    );
    assert_eq!(outcome.progress.as_ref().map(|p| p.percent), Some(100.0));
}

#[tokio::test]
async fn plugins_declare_their_tasks_and_defaults() {
    let text = load("textstats").await;
    let spec = text.task("text.stats").expect("declared");
    assert_eq!(spec.options.max_retries, Some(2));
    assert_eq!(spec.options.hard_time_limit_ms, Some(30_000));
    let hostile = load("hostile").await;
    assert!(hostile.tasks().len() >= 10);
}

#[tokio::test]
async fn files_that_are_not_plugins_are_refused_with_a_reason() {
    let rt = runtime(&cache_dir());
    match rt.load(b"definitely not wasm").await {
        Err(LoadError::Invalid(_)) => {}
        other => panic!("expected Invalid, got {other:?}"),
    }
    // A core module (not a component).
    let core = b"\0asm\x01\0\0\0";
    let err = rt.load(core).await.unwrap_err().to_string();
    assert!(err.contains("core WebAssembly module"), "{err}");
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = xylem_wasm::RuntimeConfig {
        cache_dir: Some(dir.path().to_owned()),
        max_instances: 4,
        ..Default::default()
    };
    let bytes = std::fs::read(plugin("hello")).unwrap();
    let first = xylem_wasm::Runtime::new(config.clone())
        .unwrap()
        .load(&bytes)
        .await
        .unwrap();
    assert!(!first.load_stats().hit);
    let second = xylem_wasm::Runtime::new(config)
        .unwrap()
        .load(&bytes)
        .await
        .unwrap();
    assert!(second.load_stats().hit);
    assert_eq!(first.digest(), second.digest());
    assert_greet_works(&second).await;
}
