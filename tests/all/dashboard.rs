//! The web dashboard in a real headless Chromium (Debian's `chromium`,
//! driven by puppeteer-core from `tests/browser/`): over a real server,
//! worker and store holding a job of each kind, every view loads with its
//! data and nothing on the console, a dead job replayed by a click runs
//! again, and a new job appears without a reload. Screenshots of each view
//! go to `XYLEM_DASHBOARD_SHOTS` (docs/screenshots/ was made so) or a
//! temporary folder.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xylem_tests::cli_env::Env;
use xylem_tests::scenarios::{Cluster, terminate};
use xylem_tests::{in_ci, repo_root};

use crate::api::{ADMIN, WorkerGuard, serve};

/// Chromium's path, or `None` (the test skips; under CI=true it fails).
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("CHROMIUM").map(PathBuf::from).or_else(|| {
        ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|name| {
                let out = Command::new("sh")
                    .args(["-c", &format!("command -v {name}")])
                    .output()
                    .ok()?;
                let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
            })
    });
    if found.is_none() {
        assert!(
            !in_ci(),
            "no Chromium: install Debian's `chromium` (apt-get install chromium), as .ci/run does"
        );
        eprintln!("skipping the dashboard test: no Chromium (apt-get install chromium)");
    }
    found
}

/// `tests/browser` with its packages installed (`npm ci`).
fn browser_driver() -> PathBuf {
    let dir = repo_root().join("tests/browser");
    if !dir.join("node_modules/puppeteer-core").is_dir() {
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .expect("npm is needed for the dashboard test (apt-get install nodejs npm)");
        assert!(
            out.status.success(),
            "npm ci in tests/browser failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

fn xylem_ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster.command().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "xylem {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn record(base: &str, id: &str) -> Value {
    reqwest::Client::new()
        .get(format!("{base}/api/jobs/{id}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn until_state(base: &str, id: &str, state: &str) -> Value {
    let started = Instant::now();
    loop {
        let r = record(base, id).await;
        if r["state"] == state {
            return r;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "job {id} never {state}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_view_replays_a_dead_job_and_updates_live() {
    let Some(chromium) = chromium() else { return };
    let driver = browser_driver();
    let env = Env::new();
    let cluster = Cluster::new(&env.url).await;
    for name in ["order", "order-workflow"] {
        xylem_ok(
            &cluster,
            &[
                "plugin",
                "push",
                xylem_tests::plugin(name).to_str().unwrap(),
            ],
        );
    }
    let server = serve(&cluster);
    let base = server.base.clone();
    let mut worker = WorkerGuard(cluster.worker("dash-worker", &["--grace", "1s"]));

    // Something of each kind to show.
    let greeting = xylem_ok(
        &cluster,
        &[
            "enqueue",
            "hello.greet",
            "--args",
            r#"{"name":"Ada"}"#,
            "--header",
            "tenant=acme",
        ],
    );
    let flaky = xylem_ok(
        &cluster,
        &[
            "enqueue",
            "hello.flaky",
            "--args",
            r#"{"fail_times":1}"#,
            "--max-retries",
            "0",
        ],
    );
    xylem_ok(
        &cluster,
        &[
            "schedule",
            "add",
            "nightly",
            "--task",
            "hello.greet",
            "--cron",
            "30 2 * * *",
            "--tz",
            "Europe/Paris",
        ],
    );
    let run = xylem_ok(
        &cluster,
        &[
            "workflow",
            "start",
            "order.process",
            "--id",
            "dash-order",
            "--input",
            r#"{"id":"A-1","amount_cents":1250,"ship_after_ms":3600000}"#,
        ],
    );
    let chain = xylem_ok(
        &cluster,
        &["chain", r#"hello.greet:{"name":"Grace"}"#, "hello.echo"],
    );
    until_state(&base, &greeting, "succeeded").await;
    until_state(&base, &flaky, "dead").await;

    // The replayed job waits in its paused queue (it would die again at
    // once, and its row come back before the page could show it gone).
    let http = reqwest::Client::new();
    let pause = |act: &'static str| {
        http.post(format!("{base}/api/queues/default/{act}"))
            .bearer_auth(ADMIN)
            .send()
    };
    assert!(pause("pause").await.unwrap().status().is_success());

    let shots = std::env::var_os("XYLEM_DASHBOARD_SHOTS")
        .map_or_else(|| env.dir.join("shots"), PathBuf::from);
    let plan = json!({
        "base": base,
        "token": ADMIN,
        "shots": shots,
        "views": {
            "#/": "workers running",
            "#/queues": "default",
            "#/jobs": "hello.greet",
            (format!("#/job/{greeting}")): "Hello, Ada!",
            "#/dlq": "hello.flaky",
            "#/workers": "dash-worker",
            "#/schedules": "nightly",
            "#/workflows": "order.process",
            (format!("#/workflow/{run}")): "order.validate",
            (format!("#/canvas/{chain}")): "hello.echo",
            "#/plugins": "order.validate",
        },
        "replay": flaky,
        "live_job": {"task": "hello.greet", "args": {"name": "Live"}},
    });
    let plan_file = env.dir.join("plan.json");
    std::fs::write(&plan_file, plan.to_string()).unwrap();
    let out = Command::new("node")
        .arg(driver.join("dashboard.mjs"))
        .arg(&plan_file)
        .current_dir(&driver)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser driver failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    for (route, view) in report["views"].as_object().unwrap() {
        assert_eq!(view["ok"], true, "{route}: {}", view["why"]);
    }
    assert_eq!(
        report["views"].as_object().unwrap().len(),
        plan["views"].as_object().unwrap().len(),
        "{report}"
    );
    assert_eq!(
        report["errors"],
        json!([]),
        "nothing on the console: {report}"
    );
    assert_eq!(report["replayed"], true, "{report}");
    assert_eq!(
        report["live"], true,
        "the new job appeared without a reload: {report}"
    );
    assert_eq!(
        report["streaming"], true,
        "the page listened to the server's event stream: {report}"
    );
    // The selected job was cancelled by the bulk action.
    let bulk = report["bulk"].as_str().expect("the bulk action ran");
    assert_eq!(record(&base, bulk).await["state"], "cancelled");
    // The click put the dead job back: queued now, and once its queue runs
    // again it runs a second time (and, set to fail, dies again).
    assert_eq!(record(&base, &flaky).await["state"], "queued");
    assert!(pause("resume").await.unwrap().status().is_success());
    let started = Instant::now();
    loop {
        let r = record(&base, &flaky).await;
        let runs = r["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["state"] == "running")
            .count();
        if runs == 2 && r["state"] == "dead" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for view in [
        "overview",
        "queues",
        "jobs",
        "job-detail",
        "dlq",
        "workers",
        "schedules",
        "workflows",
        "workflow-detail",
    ] {
        assert!(
            shots.join(format!("{view}.png")).is_file(),
            "no screenshot of {view}"
        );
    }
    terminate(&mut worker.0);
}
