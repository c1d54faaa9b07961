//! The hostile corpus (`plugins/hostile`) all at once inside one worker,
//! on SQLite and on Redis, beside a steady stream of normal jobs: every
//! hostile job ends as it must within its limits, the normal jobs keep
//! their pace, the worker's memory stays bounded, and a fork bomb makes
//! at most its quota of jobs. The two tests take turns (they measure
//! latency), and this binary has no other tests, so nothing else runs
//! beside them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::{Duration, Instant};

use xylem_core::{TaskFilter, TaskState};
use xylem_tests::cli_env::Env;
use xylem_tests::scenarios::terminate;

/// A worker process that a failing test does not leave running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One test at a time: each measures the other's absence.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One hostile job: its task, arguments, limit overrides, and the outcomes
/// it may end in (a failure kind, or `"succeeded"` for a capped success).
struct HostileCase {
    task: &'static str,
    args: serde_json::Value,
    timeout_ms: Option<u64>,
    soft_timeout_ms: Option<u64>,
    memory: Option<u64>,
    ends_as: &'static [&'static str],
    /// How it ends through `xylem run`, where there is no store, if not
    /// as in a worker.
    alone_ends_as: Option<&'static [&'static str]>,
}

fn hostile_corpus() -> Vec<HostileCase> {
    use serde_json::json;
    let case = |task, args, ends_as| HostileCase {
        task,
        args,
        timeout_ms: Some(3_000),
        soft_timeout_ms: None,
        memory: None,
        ends_as,
        alone_ends_as: None,
    };
    vec![
        // Fuel (50G by default) or time, whichever comes first.
        case(
            "hostile.loop",
            json!({}),
            &["time-limit-exceeded", "fuel-exhausted"],
        ),
        HostileCase {
            memory: Some(32 << 20),
            ..case("hostile.memory-bomb", json!({}), &["memory-limit-exceeded"])
        },
        case("hostile.stack-overflow", json!({}), &["trap"]),
        case("hostile.panic", json!({}), &["trap"]),
        case(
            "hostile.huge-output",
            json!({"bytes": 8 << 20}),
            &["bad-output"],
        ),
        case("hostile.read-file", json!({}), &["plugin-error"]),
        case("hostile.read-env", json!({}), &["plugin-error"]),
        case("hostile.socket", json!({}), &["plugin-error"]),
        case(
            "hostile.stdout-spam",
            json!({}),
            &["succeeded", "time-limit-exceeded"],
        ),
        // The issue's rows: 64 MiB of newlines, an empty-log loop, two
        // million heartbeats, a million progress reports, a fork bomb.
        case(
            "hostile.newline-flood",
            json!({"mib": 64}),
            &["succeeded", "time-limit-exceeded"],
        ),
        case(
            "hostile.empty-log-loop",
            json!({}),
            &["fuel-exhausted", "time-limit-exceeded"],
        ),
        case(
            "hostile.heartbeat-flood",
            json!({"calls": 2_000_000}),
            &["fuel-exhausted", "time-limit-exceeded"],
        ),
        case(
            "hostile.progress-flood",
            json!({"calls": 1_000_000}),
            &["fuel-exhausted", "time-limit-exceeded"],
        ),
        HostileCase {
            // No store under `xylem run`: the first enqueue is refused as
            // unavailable, which the bomb passes on as a failure.
            alone_ends_as: Some(&["plugin-error"]),
            ..case("hostile.enqueue-bomb", json!({}), &["succeeded"])
        },
        case("hostile.bad-enqueue", json!({}), &["succeeded"]),
        HostileCase {
            alone_ends_as: Some(&["plugin-error"]),
            ..case("hostile.callback-flood", json!({}), &["succeeded"])
        },
        HostileCase {
            alone_ends_as: Some(&["plugin-error"]),
            ..case("hostile.canvas-bomb", json!({}), &["succeeded"])
        },
        HostileCase {
            soft_timeout_ms: Some(300),
            ..case("hostile.polite-loop", json!({}), &["plugin-error"])
        },
    ]
}

/// The result of the corpus job of `task`, if it ran and succeeded.
async fn hostile_result(
    client: &xylem_core::Client,
    corpus: &[HostileCase],
    ids: &[String],
    task: &str,
) -> Option<serde_json::Value> {
    let pos = corpus.iter().position(|c| c.task == task)?;
    let record = client
        .wait(&ids[pos], Duration::from_secs(60))
        .await
        .unwrap();
    record.result
}

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// The whole hostile corpus at once in one worker, beside a steady stream
/// of normal jobs: each hostile job ends as it must within its limit, the
/// normal jobs keep their pace (enqueue → finish p99 under 250 ms), the
/// worker's memory stays bounded, and the fork bomb makes at most its
/// quota of jobs in all.
async fn hostile_corpus_in_one_worker(env: &Env, stores: xylem_core::Stores) {
    use xylem_core::{Client, EnqueueRequest};
    const MAX_DESCENDANTS: usize = 200;
    env.push("hello");
    env.push("hostile");
    let mut worker = KillOnDrop(env.worker(
        "corpus",
        &[
            "--concurrency",
            "32",
            "--max-descendants",
            &MAX_DESCENDANTS.to_string(),
        ],
    ));
    let client = Client::new(stores.clone());
    // Warm up: the plugins compiled and loaded, the worker at its resting size.
    let warm: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..20 {
            let e = client
                .enqueue(EnqueueRequest::new("hello.echo", "{}"))
                .await
                .unwrap();
            ids.push(e.id);
        }
        ids
    };
    for id in &warm {
        client.wait(id, Duration::from_secs(120)).await.unwrap();
    }
    let rss_before = rss_mib(worker.0.id());

    // `XYLEM_CORPUS_ONLY=hostile.loop,hostile.panic` runs only those.
    let only = std::env::var("XYLEM_CORPUS_ONLY").unwrap_or_default();
    let corpus: Vec<HostileCase> = hostile_corpus()
        .into_iter()
        .filter(|c| only.is_empty() || only.split(',').any(|t| t == c.task))
        .collect();
    let mut hostile = Vec::new();
    for case in &corpus {
        let mut req = EnqueueRequest::new(case.task, case.args.to_string());
        req.max_retries = Some(0);
        req.options.hard_time_limit_ms = case.timeout_ms;
        req.options.soft_time_limit_ms = case.soft_timeout_ms;
        req.options.max_memory_bytes = case.memory;
        hostile.push(client.enqueue(req).await.unwrap().id);
    }
    // A normal job every 20 ms while the corpus runs, watching memory. As
    // an operator would, the untrusted work runs at a lower priority than
    // the work it must not delay (0 against 5): the fork bomb asks for 9
    // for its children, and must not get it.
    let mut normal = Vec::new();
    let mut rss_peak = rss_before;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        let mut req = EnqueueRequest::new("hello.greet", r#"{"name":"Ada"}"#);
        req.priority = Some(5);
        let e = client.enqueue(req).await.unwrap();
        normal.push(e.id);
        rss_peak = rss_peak.max(rss_mib(worker.0.id()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut latencies = Vec::new();
    for id in &normal {
        let r = client.wait(id, Duration::from_secs(60)).await.unwrap();
        assert_eq!(r.state, TaskState::Succeeded, "{r:?}");
        latencies.push(r.updated_at.saturating_sub(r.enqueued_at));
        if std::env::var_os("XYLEM_CORPUS_TRACE").is_some() {
            eprintln!(
                "{} {}",
                r.enqueued_at,
                r.updated_at.saturating_sub(r.enqueued_at)
            );
        }
    }
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for (case, id) in corpus.iter().zip(&hostile) {
        let r = client.wait(id, Duration::from_secs(60)).await.unwrap();
        let ended = match &r.error {
            None => "succeeded".to_owned(),
            Some(f) => f.kind.as_str().to_owned(),
        };
        let took = r.updated_at.saturating_sub(r.enqueued_at);
        report.push(format!("{:<26} {ended:<22} {took} ms", case.task));
        if !case.ends_as.contains(&ended.as_str()) || took > 20_000 {
            wrong.push(format!(
                "{} ended as {ended} after {took} ms, expected one of {:?} within 20 s: {:?}",
                case.task, case.ends_as, r.error
            ));
        }
    }
    // Callbacks' arguments count against the run's child-argument quota
    // (1 MiB by default: at most 16 children with 64 KiB links), and a
    // unique key of 100 KB is refused.
    if let Some(result) = hostile_result(&client, &corpus, &hostile, "hostile.callback-flood").await
    {
        let made = result[0].as_u64().unwrap_or(u64::MAX);
        assert!(
            made <= 16,
            "{made} children with 64 KiB callbacks: {result}"
        );
        assert!(
            result[1].as_str().unwrap_or_default().contains("quota"),
            "{result}"
        );
        assert!(
            result[2]
                .as_str()
                .unwrap_or_default()
                .contains("unique key"),
            "{result}"
        );
    }
    // Canvases count every task against the tree's quota up front: with
    // 200 descendants allowed, two canvases of 100, then a refusal.
    if let Some(result) = hostile_result(&client, &corpus, &hostile, "hostile.canvas-bomb").await {
        let made = result[0].as_u64().unwrap_or(u64::MAX);
        assert!(
            made <= 2,
            "{made} canvases of 100 under a tree quota of 200: {result}"
        );
        assert!(
            result[1].as_str().unwrap_or_default().contains("quota"),
            "{result}"
        );
    }
    // The bomb and its descendants, however deep, stay within the quota.
    let deadline = Instant::now() + Duration::from_secs(60);
    let bombs = loop {
        let all = stores
            .results
            .list(&TaskFilter {
                task: Some("hostile.enqueue-bomb".to_owned()),
                limit: 100_000,
                ..Default::default()
            })
            .await
            .unwrap();
        if all.iter().all(|r| r.state.is_terminal()) || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    rss_peak = rss_peak.max(rss_mib(worker.0.id()));
    let rss_after = rss_mib(worker.0.id());
    terminate(&mut worker.0);

    latencies.sort_unstable();
    let p99 = latencies[(latencies.len() * 99 / 100).min(latencies.len() - 1)];
    let p50 = latencies[latencies.len() / 2];
    eprintln!(
        "{}\nnormal jobs: {} p50 {p50} ms p99 {p99} ms; worker RSS {rss_before} → peak {rss_peak} → {rss_after} MiB; bomb jobs {}",
        report.join("\n"),
        latencies.len(),
        bombs.len()
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert!(
        bombs.len() <= MAX_DESCENDANTS + 1,
        "{} bomb jobs for a quota of {MAX_DESCENDANTS}",
        bombs.len()
    );
    assert!(
        bombs.iter().all(|r| r.state.is_terminal()),
        "the bomb tree did not settle"
    );
    assert!(p99 < 250, "normal jobs' p99 was {p99} ms");
    assert!(
        rss_peak.saturating_sub(rss_before) <= 100,
        "worker RSS grew from {rss_before} to {rss_peak} MiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_in_one_worker_on_sqlite() {
    let _turn = SERIAL.lock().await;
    let env = Env::new();
    let store = std::sync::Arc::new(env.store().await);
    hostile_corpus_in_one_worker(&env, xylem_core::Stores::from_adapter(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_in_one_worker_on_redis() {
    let _turn = SERIAL.lock().await;
    let Some(url) = xylem_tests::service_url("XYLEM_TEST_REDIS_URL", "redis://127.0.0.1:6379")
    else {
        return;
    };
    let url = format!("{url}?prefix={}", xylem_tests::unique_name("xylem-corpus"));
    let env = Env::with_url(&url);
    let store = std::sync::Arc::new(xylem_redis::RedisStore::connect(&url).await.unwrap());
    let cleanup = xylem_tests::cleanup::Cleanup::cleanup_later(&*store);
    hostile_corpus_in_one_worker(&env, xylem_core::Stores::from_adapter(store)).await;
    cleanup.await;
}

/// The exit code of `xylem run` for an outcome (see `xylem run --help`).
fn exit_code(ended: &str) -> i32 {
    match ended {
        "succeeded" => 0,
        "plugin-error" => 10,
        "time-limit-exceeded" => 20,
        "fuel-exhausted" => 21,
        "memory-limit-exceeded" => 22,
        "trap" => 23,
        "bad-output" => 24,
        other => panic!("no exit code for {other}"),
    }
}

/// The same corpus one job after another through `xylem run`: each ends as
/// it must, within its limit, and prints a bounded report (a flood of
/// output once took 530 s to print).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_one_by_one_through_xylem_run() {
    let _turn = SERIAL.lock().await;
    let plugin = xylem_tests::plugin("hostile");
    let mut wrong = Vec::new();
    for case in hostile_corpus() {
        let mut cmd = std::process::Command::new(xylem_tests::xylem_bin());
        cmd.args(["run", plugin.to_str().unwrap(), case.task])
            .args(["--args", &case.args.to_string()]);
        if let Some(ms) = case.timeout_ms {
            cmd.args(["--timeout", &format!("{ms}ms")]);
        }
        if let Some(ms) = case.soft_timeout_ms {
            cmd.args(["--soft-timeout", &format!("{ms}ms")]);
        }
        if let Some(bytes) = case.memory {
            cmd.args(["--memory", &bytes.to_string()]);
        }
        let started = Instant::now();
        let out = cmd.output().unwrap();
        let took = started.elapsed();
        let code = out.status.code().unwrap_or(-1);
        let expected: Vec<i32> = case
            .alone_ends_as
            .unwrap_or(case.ends_as)
            .iter()
            .map(|e| exit_code(e))
            .collect();
        eprintln!(
            "{:<26} exit {code:<3} {took:>8.2?} stdout {} B stderr {} B",
            case.task,
            out.stdout.len(),
            out.stderr.len()
        );
        if !expected.contains(&code) || took > Duration::from_secs(15) {
            wrong.push(format!(
                "{}: exit {code} after {took:?}, expected one of {expected:?}: {}",
                case.task,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
        if out.stderr.len() > 2 << 20 || out.stdout.len() > 2 << 20 {
            wrong.push(format!("{}: printed too much", case.task));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
