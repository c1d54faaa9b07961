//! The job platform end to end, through real `xylem` processes on a SQLite
//! file: enqueue → worker → results, retries and the dead-letter queue,
//! `kill -9` in the middle of jobs, two workers on one file, hot plugin
//! pushes, and bad input.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xylem_core::store::{PluginStore, ResultBackend};
use xylem_core::{TaskFilter, TaskRecord, TaskState};
use xylem_sqlite::SqliteStore;
use xylem_tests::cli_env::Env;
use xylem_tests::scenarios::{count, kill9, terminate, workers_that_ran_each_once};
use xylem_tests::{plugin, xylem_bin};

async fn full_records(store: &SqliteStore, records: &[TaskRecord]) -> Vec<TaskRecord> {
    let mut full = Vec::new();
    for r in records {
        full.push(store.get(&r.id).await.unwrap().unwrap());
    }
    full
}

#[tokio::test]
async fn enqueue_worker_and_task_wait_return_the_result() {
    let env = Env::new();
    env.push("hello");
    let mut worker = env.worker("w", &[]);
    let id = env.enqueue(&["hello.greet", "--args", r#"{"name":"Ada"}"#]);
    let shown = env.ok(&["task", "wait", &id, "--timeout", "30s", "--json"]);
    let record: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(record["state"], "succeeded");
    assert_eq!(record["result"], "Hello, Ada!");
    assert!(record["usage"]["fuel"].as_u64().unwrap() > 0);

    // --wait prints the result; its exit code tells how the job ended.
    let out = env.xylem(&[
        "enqueue",
        "hello.greet",
        "--args",
        r#"{"name":"Bob"}"#,
        "--wait",
    ]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hello, Bob!"));
    let out = env.xylem(&[
        "enqueue",
        "hello.greet",
        "--args",
        r#"{"nom":"x"}"#,
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(12), "rejected");

    let human = env.ok(&["task", "show", &id]);
    assert!(
        human.contains("succeeded") && human.contains("history"),
        "{human}"
    );
    let listed = env.ok(&["task", "ls", "--state", "succeeded", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&listed)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(env.ok(&["tasks"]).contains("hello.greet"));
    assert!(env.ok(&["queues", "--json"]).contains("default"));
    terminate(&mut worker);
}

#[tokio::test]
async fn failing_task_retries_with_growing_delays_then_dead_letters_and_replays() {
    let env = Env::new();
    env.push("hello");
    let mut worker = env.worker("w", &[]);
    let id = env.enqueue(&[
        "hello.flaky",
        "--args",
        r#"{"fail_times":99}"#,
        "--max-retries",
        "3",
        "--backoff",
        "150ms",
    ]);
    let out = env.xylem(&["task", "wait", &id, "--timeout", "60s"]);
    assert_eq!(
        out.status.code(),
        Some(10),
        "plugin-error: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let store = env.store().await;
    let record = store.get(&id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Dead);
    assert_eq!(count(&record, TaskState::Running), 4, "1 run + 3 retries");
    assert_eq!(count(&record, TaskState::Retrying), 3);
    let runs: Vec<i64> = record
        .history
        .iter()
        .filter(|h| h.state == TaskState::Running)
        .map(|h| h.at)
        .collect();
    let gaps: Vec<i64> = runs.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.windows(2).all(|g| g[1] > g[0]),
        "delays grow: {gaps:?}"
    );
    assert!(gaps[0] >= 100, "{gaps:?}");

    let dlq = env.ok(&["dlq", "ls", "--json"]);
    let dead: serde_json::Value = serde_json::from_str(&dlq).unwrap();
    assert_eq!(dead[0]["envelope"]["id"], id.as_str());
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no retries left"),
        "{dead}"
    );

    // A dry run changes nothing.
    assert!(
        env.ok(&["dlq", "replay", &id, "--dry-run"])
            .contains("would replay 1")
    );
    assert_eq!(
        store.get(&id).await.unwrap().unwrap().state,
        TaskState::Dead
    );
    // A replay runs it again (and it fails again, all its attempts anew).
    assert!(env.ok(&["dlq", "replay", &id]).contains("replayed 1"));
    let out = env.xylem(&["task", "wait", &id, "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(10));
    let record = store.get(&id).await.unwrap().unwrap();
    assert_eq!(
        count(&record, TaskState::Running),
        8,
        "{:#?}",
        record.history
    );
    assert!(
        record
            .history
            .iter()
            .any(|h| h.detail.as_deref().is_some_and(|d| d.contains("replayed")))
    );
    assert!(env.ok(&["dlq", "purge"]).contains("purged 1"));
    assert!(env.ok(&["dlq", "ls"]).contains("empty"));
    terminate(&mut worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_job_loses_nothing_and_never_succeeds_twice() {
    const JOBS: usize = 200;
    let env = Env::new();
    env.push("hello");
    for _ in 0..JOBS {
        env.enqueue(&["hello.sleep", "--args", r#"{"ms":100}"#]);
    }
    // Kill the worker several times while it is in the middle of jobs
    // (4 at a time, 100 ms each: about 5 s of work in all).
    for round in 0..4 {
        let mut worker = env.worker(
            &format!("victim{round}"),
            &["--lease", "1s", "--concurrency", "4"],
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
        kill9(&mut worker);
    }
    let mut last = env.worker("survivor", &["--lease", "1s", "--concurrency", "4"]);
    let done = env.wait_succeeded(JOBS, Duration::from_secs(120)).await;
    terminate(&mut last);

    let store = env.store().await;
    let all = store
        .list(&TaskFilter {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), JOBS);
    assert_eq!(done.len(), JOBS, "every job succeeded: none lost");
    let full = full_records(&store, &all).await;
    for r in &full {
        assert_eq!(
            count(r, TaskState::Succeeded),
            1,
            "succeeded exactly once: {:#?}",
            r.history
        );
    }
    let redelivered = full
        .iter()
        .filter(|r| count(r, TaskState::Running) > 1)
        .count();
    assert!(
        redelivered > 0,
        "no job was caught mid-run by a kill: the test proved nothing"
    );
    let stats = env.ok(&["queues", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(
        stats
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["ready"] == 0 && q["running"] == 0),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_sqlite_file_without_running_a_job_twice() {
    const JOBS: usize = 100;
    let env = Env::new();
    env.push("hello");
    let mut w1 = env.worker("w1", &["--concurrency", "4"]);
    let mut w2 = env.worker("w2", &["--concurrency", "4"]);
    for _ in 0..JOBS {
        env.enqueue(&["hello.sleep", "--args", r#"{"ms":20}"#]);
    }
    let done = env.wait_succeeded(JOBS, Duration::from_secs(120)).await;
    terminate(&mut w1);
    terminate(&mut w2);
    let full = full_records(&env.store().await, &done).await;
    let workers = workers_that_ran_each_once(&full);
    assert_eq!(
        workers,
        HashSet::from(["worker w1".to_owned(), "worker w2".to_owned()]),
        "both shared the work"
    );
}

/// The same component with an extra custom section: a new version (new
/// digest) with the same behaviour.
fn new_version(original: &Path, dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(original).unwrap();
    let name = b"xylem-test-version";
    let payload = b"2";
    let size = 1 + name.len() + payload.len();
    bytes.push(0); // custom section id
    bytes.push(u8::try_from(size).unwrap()); // LEB128, < 128
    bytes.push(u8::try_from(name.len()).unwrap());
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    let path = dir.join("hello-v2.wasm");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushing_a_new_version_reaches_a_running_worker_without_restart() {
    let env = Env::new();
    env.push("hello");
    let store = env.store().await;
    let v1 = store
        .routes()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.task == "hello.sleep")
        .unwrap()
        .digest;
    let mut worker = env.worker("w", &[]);
    // A job that is running while the new version arrives.
    let long = env.enqueue(&["hello.sleep", "--args", r#"{"ms":2000}"#]);
    let before: Vec<String> = (0..5)
        .map(|_| env.enqueue(&["hello.greet", "--args", r#"{"name":"v1"}"#]))
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;

    let v2_file = new_version(&plugin("hello"), &env.dir);
    env.ok(&["plugin", "push", v2_file.to_str().unwrap()]);
    let v2 = store
        .routes()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.task == "hello.sleep")
        .unwrap()
        .digest;
    assert_ne!(v1, v2);
    tokio::time::sleep(Duration::from_millis(1200)).await; // the worker polls for new versions
    let after: Vec<String> = (0..5)
        .map(|_| env.enqueue(&["hello.greet", "--args", r#"{"name":"v2"}"#]))
        .collect();

    for id in before.iter().chain(&after).chain(std::iter::once(&long)) {
        let out = env.xylem(&["task", "wait", id, "--timeout", "30s"]);
        assert!(
            out.status.success(),
            "job {id} failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let version = |id: &String| {
        let store = store.clone();
        let id = id.clone();
        async move { store.get(&id).await.unwrap().unwrap().plugin.unwrap() }
    };
    assert_eq!(
        version(&long).await,
        v1,
        "a running job finishes on the version it started with"
    );
    for id in &after {
        assert_eq!(version(id).await, v2, "new jobs use the new version");
    }
    let listing = env.ok(&["plugin", "ls", "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&listing)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    terminate(&mut worker);
}

#[test]
fn bad_input_gets_a_clear_message_and_a_nonzero_exit() {
    let env = Env::new();
    env.push("hello");
    let check = |args: &[&str], code: i32, needle: &str| {
        let out = env.xylem(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected `{needle}` in: {stderr}"
        );
    };
    check(&["enqueue", "nope.task"], 1, "unknown task `nope.task`");
    check(&["enqueue", "nope.task"], 1, "hello.greet");
    check(
        &["enqueue", "hello.greet", "--args", "{name:"],
        1,
        "invalid JSON arguments",
    );
    check(
        &["enqueue", "hello.greet", "--priority", "12"],
        2,
        "priority",
    );
    check(
        &["enqueue", "hello.greet", "--queue", "bad queue!"],
        1,
        "invalid queue name",
    );
    check(
        &["enqueue", "hello.greet", "--delay", "soon"],
        1,
        "invalid duration",
    );
    check(
        &["worker", "--queue", "ok,bad queue"],
        1,
        "invalid queue name",
    );
    check(&["worker", "--bogus"], 2, "--bogus");
    check(&["task", "show", "no-such-id"], 1, "no job with id");
    check(&["task", "ls", "--state", "sleeping"], 2, "unknown state");
    let junk = env.dir.join("junk.wasm");
    std::fs::write(&junk, b"not a component").unwrap();
    check(
        &["plugin", "push", junk.to_str().unwrap()],
        1,
        "not a valid WebAssembly component",
    );
    check(&["plugin", "push", "/no/such/file.wasm"], 1, "cannot read");

    let out = Command::new(xylem_bin())
        .args(["--store", "sqlite:///no/such/dir/x.db", "queues"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let out = Command::new(xylem_bin())
        .args(["--store", "ftp://x", "health"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported store URL"));
    assert!(env.ok(&["health"]).contains("ok"));
}

#[test]
fn the_demo_runs_to_its_table() {
    use std::io::{BufRead, Read, Write};
    let dir = tempfile::tempdir().unwrap();
    // With --serve, the dashboard over the demo's store once the table is
    // printed (any free port here).
    let mut demo = Command::new(xylem_bin())
        .args([
            "demo",
            "--dir",
            dir.path().to_str().unwrap(),
            "--serve",
            "127.0.0.1:0",
        ])
        .current_dir(xylem_tests::repo_root())
        .env(
            "XYLEM_CACHE_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("worker-cli-cache"),
        )
        .env_remove("XYLEM_API_TOKEN")
        .env_remove("XYLEM_API_READ_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    let address = loop {
        let Some(Ok(line)) = lines.next() else {
            let mut err = String::new();
            let _ = demo.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the demo ended before serving:\n{stdout}\n{err}");
        };
        stdout.push_str(&line);
        stdout.push('\n');
        if let Some(rest) = line.strip_prefix("listening on http://") {
            break rest.split('/').next().unwrap().to_owned();
        }
    };
    assert!(stdout.contains("The dashboard: http://"), "{stdout}");
    let get = |path: &str| {
        let mut conn = std::net::TcpStream::connect(&address).unwrap();
        write!(conn, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        response
    };
    assert!(get("/").contains("<title>Xylem</title>"));
    let jobs = get("/api/jobs?limit=1000");
    assert!(
        jobs.starts_with("HTTP/1.0 200") && jobs.contains("hello.greet"),
        "{jobs}"
    );
    terminate(&mut demo);
    for needle in [
        "Hello, Ada!",
        "succeeded on attempt 3",
        "time-limit-exceeded",
        "memory-limit-exceeded",
        "rejected",
        "dead",
        // The chord's callback echoes both greetings; the schedule fired.
        r#"["Hello, Ada!","Hello, Grace!"]"#,
        r#"{"from":"a schedule"}"#,
        // The durable workflow ran to its end.
        "a durable workflow: 3 activities and a sleep",
        r#""shipped":true"#,
    ] {
        assert!(
            stdout.contains(needle),
            "`{needle}` missing from the demo table:\n{stdout}"
        );
    }
    // A greeting in each other language: run where its toolchain is
    // installed (always in CI), else a row saying what to install.
    for task in ["c.greet", "py.greet", "js.greet"] {
        let row = stdout
            .lines()
            .find(|line| line.contains(&format!(" {task} ")))
            .unwrap_or_else(|| panic!("no {task} row in the demo table:\n{stdout}"));
        let ran = row.contains("succeeded") && row.contains("Hello, Ada!");
        let skipped = row.contains("skipped") && row.contains("needs ");
        assert!(ran || skipped, "{task}: {row}");
        assert!(ran || !xylem_tests::in_ci(), "{task} must run in CI: {row}");
    }
}

#[tokio::test]
async fn a_worker_watching_a_plugins_folder_pushes_what_appears_there() {
    let env = Env::new();
    let folder = env.dir.join("plugins");
    std::fs::create_dir_all(&folder).unwrap();
    let mut worker = env.worker("w", &["--plugins", folder.to_str().unwrap()]);
    std::fs::copy(plugin("hello"), folder.join("hello.wasm")).unwrap();
    // The watcher pushes it within a second or so; then enqueue works.
    let started = Instant::now();
    let id = loop {
        let out = env.xylem(&["enqueue", "hello.greet", "--args", r#"{"name":"dev"}"#]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the folder's plugin was never pushed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let shown = env.ok(&["task", "wait", &id, "--timeout", "30s", "--json"]);
    assert!(shown.contains("Hello, dev!"), "{shown}");
    terminate(&mut worker);
}

#[tokio::test]
async fn shutdown_lets_jobs_finish_within_grace_then_releases_the_rest() {
    let env = Env::new();
    env.push("hello");
    let short = env.enqueue(&["hello.sleep", "--args", r#"{"ms":300}"#]);
    let long = env.enqueue(&["hello.sleep", "--args", r#"{"ms":20000}"#]);
    let mut worker = env.worker("w", &["--grace", "1s"]);
    let store = env.store().await;
    let started = Instant::now();
    while store.get(&long).await.unwrap().unwrap().state != TaskState::Running {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopping = Instant::now();
    terminate(&mut worker);
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );

    let short = store.get(&short).await.unwrap().unwrap();
    assert_eq!(
        short.state,
        TaskState::Succeeded,
        "finished within the grace period"
    );
    let long_record = store.get(&long).await.unwrap().unwrap();
    assert_eq!(
        long_record.state,
        TaskState::Queued,
        "{:#?}",
        long_record.history
    );
    assert!(
        long_record
            .history
            .last()
            .unwrap()
            .detail
            .as_deref()
            .unwrap()
            .contains("released")
    );
    let stats = env.ok(&["queues", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats[0]["ready"], 1, "back in its queue: {stats}");
}

#[test]
fn enqueue_batch_queues_every_line_or_none() {
    let env = Env::new();
    env.push("hello");
    let good = env.dir.join("jobs.ndjson");
    let mut lines = String::new();
    for i in 0..250 {
        lines.push_str(&format!(
            "{{\"task\":\"hello.greet\",\"args\":{{\"name\":\"n{i}\"}},\"priority\":{}}}\n",
            i % 10
        ));
    }
    lines.push('\n'); // blank lines are skipped
    lines.push_str("{\"task\":\"hello.echo\",\"delay\":\"1h\",\"headers\":[\"tenant=acme\"]}\n");
    std::fs::write(&good, &lines).unwrap();
    let out = env.ok(&["enqueue", "--batch", good.to_str().unwrap()]);
    let ids: Vec<&str> = out.lines().collect();
    assert_eq!(ids.len(), 251);
    let queues = env.ok(&["queues", "--json"]);
    let stats: serde_json::Value = serde_json::from_str(&queues).unwrap();
    assert_eq!(stats[0]["ready"], 250, "{stats}");
    assert_eq!(stats[0]["delayed"], 1, "{stats}");

    // One bad line: the error names it, and nothing is enqueued.
    let bad = env.dir.join("bad.ndjson");
    std::fs::write(
        &bad,
        "{\"task\":\"hello.greet\"}\n{\"task\":\"hello.greet\",\"prority\":3}\n",
    )
    .unwrap();
    let out = env.xylem(&["enqueue", "--batch", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(stderr.contains("unknown key `prority`"), "{stderr}");
    std::fs::write(
        &bad,
        "{\"task\":\"hello.greet\"}\n{\"task\":\"hello.greet\"}\n{\"task\":\"no.such.task\"}\n",
    )
    .unwrap();
    let out = env.xylem(&["enqueue", "--batch", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("unknown task `no.such.task`"), "{stderr}");
    std::fs::write(&bad, "{\"task\":\"hello.greet\"}\nnot json\n").unwrap();
    let out = env.xylem(&["enqueue", "--batch", bad.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    let after: serde_json::Value = serde_json::from_str(&env.ok(&["queues", "--json"])).unwrap();
    assert_eq!(after, stats, "a failed batch enqueued something");

    // Standard input.
    let mut child = env
        .command()
        .args(["enqueue", "--batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        b"{\"task\":\"hello.echo\",\"args\":[1,2]}\n",
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn a_worker_refuses_a_lease_it_cannot_keep() {
    let env = Env::new();
    for lease in ["0s", "1ms", "500ms"] {
        let out = env.xylem(&["worker", "--lease", lease]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--lease {lease}: {stderr}");
        assert!(stderr.contains("too short"), "--lease {lease}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_right_after_its_push_runs() {
    // Hole 3 of issue 7: `plugin push` then `enqueue` at once, to a
    // worker that is already running, used to dead-letter the job as an
    // unknown task.
    let env = Env::new();
    env.push("hello");
    let mut worker = env.worker("w-push", &["--concurrency", "2"]);
    std::thread::sleep(Duration::from_secs(1));
    let mut ids = Vec::new();
    for _ in 0..3 {
        env.push("textstats");
        ids.push(env.enqueue(&["text.stats", "--args", "{\"text\":\"a b. c\"}"]));
    }
    let done = env.wait_succeeded(3, Duration::from_secs(60)).await;
    terminate(&mut worker);
    for id in &ids {
        assert!(done.iter().any(|r| &r.id == id), "{id} did not succeed");
    }
}

#[test]
fn a_worker_started_before_its_store_waits_for_it() {
    // Hole 8: a worker whose store is down at start says so and waits,
    // instead of exiting; it stops cleanly when told to.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(xylem_bin())
        .args(["--store", &format!("redis://127.0.0.1:{port}"), "worker"])
        .env("XYLEM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the worker exited: {}",
        std::fs::read_to_string(log.path()).unwrap()
    );
    let said = std::fs::read_to_string(log.path()).unwrap();
    assert!(said.contains("not reachable"), "{said}");
    assert!(said.contains("trying again"), "{said}");
    terminate(&mut child);
}

// Issue 8, items 5 and 6: bad input refused at the door, by the real binary.

/// Runs `xylem args`; asserts its exit code and that its stderr holds
/// every needle. Returns its stdout.
fn refused(env: &Env, args: &[&str], code: i32, needles: &[&str]) -> String {
    let out = env.xylem(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{args:?}: expected `{needle}` in: {stderr}"
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn enqueue_refuses_bad_names_zero_limits_and_negative_values_clearly() {
    let env = Env::new();
    env.push("hello");
    let long = "q".repeat(129);
    fn enqueue<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["enqueue", "hello.greet"];
        args.extend_from_slice(extra);
        args
    }
    // Names: one rule, in core.
    refused(&env, &["enqueue", "bad task!"], 1, &["invalid task name"]);
    refused(
        &env,
        &enqueue(&["--queue", "a/b"]),
        1,
        &["invalid queue name"],
    );
    refused(
        &env,
        &enqueue(&["--queue", &long]),
        1,
        &["129 bytes long, over 128"],
    );
    refused(
        &env,
        &["worker", "--queue", &long],
        1,
        &["invalid queue name"],
    );
    // Limits no run could meet.
    refused(
        &env,
        &enqueue(&["--memory", "0"]),
        1,
        &["memory cap of 0 bytes"],
    );
    refused(
        &env,
        &enqueue(&["--fuel", "0"]),
        1,
        &["fuel budget cannot be 0"],
    );
    refused(
        &env,
        &enqueue(&["--timeout", "0s"]),
        1,
        &["time limit (timeout) cannot be 0"],
    );
    // Negative values: named, not "unexpected argument".
    for (flag, value, needle) in [
        ("--priority", "-1", "priority must be 0-9, not -1"),
        ("--priority", "12", "priority must be 0-9, not 12"),
        ("--delay", "-5s", "a delay cannot be negative"),
        ("--timeout", "-1s", "a timeout cannot be negative"),
        ("--fuel", "-1", "fuel cannot be negative"),
        ("--max-retries", "-1", "max retries cannot be negative"),
        ("--memory", "-1MiB", "a memory cap cannot be negative"),
    ] {
        let stdout = refused(&env, &enqueue(&[flag, value]), 2, &[needle]);
        assert!(stdout.is_empty(), "{flag} {value}: {stdout}");
        let out = env.xylem(&enqueue(&[flag, value]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("unexpected argument"), "{stderr}");
    }
    // The same rules for a --batch line.
    let batch = env.dir.join("bad.ndjson");
    for (line, needle) in [
        (
            r#"{"task":"hello.greet","fuel":0}"#,
            "fuel budget cannot be 0",
        ),
        (
            r#"{"task":"hello.greet","delay":"-5s"}"#,
            "a delay cannot be negative",
        ),
        (
            r#"{"task":"hello.greet","queue":"x y"}"#,
            "invalid queue name",
        ),
    ] {
        std::fs::write(&batch, format!("{{\"task\":\"hello.greet\"}}\n{line}\n")).unwrap();
        refused(
            &env,
            &["enqueue", "--batch", batch.to_str().unwrap()],
            1,
            &["line 2", needle],
        );
    }
    let listed = env.ok(&["task", "ls", "--json"]);
    assert_eq!(listed.trim(), "[]", "a refused job was enqueued: {listed}");
    // Good values still go in.
    env.enqueue(&[
        "hello.greet",
        "--priority",
        "0",
        "--fuel",
        "1000000",
        "--memory",
        "64KiB",
        "--delay",
        "0s",
    ]);
}

#[test]
fn plugin_push_refuses_a_file_over_its_size_limit_before_reading_it() {
    let env = Env::new();
    // 200 MiB, sparse: were it read, it would be refused as not a component.
    let big = env.dir.join("big.wasm");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(200 * 1024 * 1024)
        .unwrap();
    refused(
        &env,
        &["plugin", "push", big.to_str().unwrap()],
        1,
        &[
            "200.0 MiB (209715200 bytes)",
            "over the 64.0 MiB limit",
            "--max-size",
        ],
    );
    let hello = plugin("hello");
    refused(
        &env,
        &[
            "plugin",
            "push",
            hello.to_str().unwrap(),
            "--max-size",
            "1KiB",
        ],
        1,
        &["over the 1.0 KiB limit"],
    );
    refused(
        &env,
        &["plugin", "push", hello.to_str().unwrap(), "--max-size", "0"],
        2,
        &["more than 0"],
    );
    let listed = env.ok(&["plugin", "ls", "--json"]);
    assert_eq!(listed.trim(), "[]", "{listed}");
    env.ok(&[
        "plugin",
        "push",
        hello.to_str().unwrap(),
        "--max-size",
        "300MiB",
    ]);
}

#[test]
fn plugin_rm_of_the_only_version_of_a_task_is_refused_unless_forced() {
    let env = Env::new();
    env.push("hello");
    for _ in 0..2 {
        env.enqueue(&["hello.greet", "--args", r#"{"name":"x"}"#]);
    }
    let digests = |env: &Env| -> Vec<String> {
        let listed: serde_json::Value =
            serde_json::from_str(&env.ok(&["plugin", "ls", "--json"])).unwrap();
        listed
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    let v1 = digests(&env).pop().unwrap();
    refused(
        &env,
        &["plugin", "rm", &v1[..12]],
        1,
        &[
            "only version",
            "hello.greet  (2 job(s) waiting)",
            "hello.echo",
            "--force",
        ],
    );
    assert_eq!(digests(&env), vec![v1.clone()], "nothing was removed");
    // With another version providing every task, removing one is fine.
    let v2_file = new_version(&plugin("hello"), &env.dir);
    env.ok(&["plugin", "push", v2_file.to_str().unwrap()]);
    assert!(env.ok(&["plugin", "rm", &v1]).contains("removed"));
    let v2 = digests(&env).pop().unwrap();
    assert_ne!(v1, v2);
    refused(&env, &["plugin", "rm", &v2], 1, &["hello.greet"]);
    let out = env.xylem(&["plugin", "rm", &v2, "--force"]);
    assert!(out.status.success(), "{out:?}");
    assert!(digests(&env).is_empty());
}

#[test]
fn dlq_replay_of_an_id_that_is_not_dead_says_so_and_fails() {
    let env = Env::new();
    env.push("hello");
    let mut worker = env.worker("w-dlq", &[]);
    // Rejected by the task: dead at once.
    let out = env.xylem(&[
        "enqueue",
        "hello.greet",
        "--args",
        r#"{"nom":"x"}"#,
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(12));
    terminate(&mut worker);
    let dead: serde_json::Value = serde_json::from_str(&env.ok(&["dlq", "ls", "--json"])).unwrap();
    let id = dead[0]["envelope"]["id"].as_str().unwrap().to_owned();

    refused(
        &env,
        &["dlq", "replay", "no-such-id", "--dry-run"],
        1,
        &["not in the dead-letter queue: no-such-id"],
    );
    // The dead one is replayed all the same; the other is named.
    let stdout = refused(
        &env,
        &["dlq", "replay", &id, "no-such-id"],
        1,
        &["1 of the 2 id(s) given is not in the dead-letter queue: no-such-id"],
    );
    assert!(
        stdout.contains("replayed 1 job(s)") && stdout.contains(&id),
        "{stdout}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["task", "show", &id, "--json"])).unwrap();
    assert_eq!(shown["state"], "queued", "{shown}");
    // Now queued, not dead: replaying it again is a mistake worth saying.
    refused(&env, &["dlq", "replay", &id], 1, &[id.as_str()]);
    // Replaying whatever is dead (nothing) is not.
    assert!(env.ok(&["dlq", "replay"]).contains("replayed 0 job(s)"));
    // One history entry for the replay (the store writes it; the CLI
    // used to add a second).
    let replays = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| {
            h["detail"]
                .as_str()
                .is_some_and(|d| d.contains("dead-letter queue"))
        })
        .count();
    assert_eq!(replays, 1, "{shown}");
    // Purging an id that is not dead says so too.
    let stdout = refused(
        &env,
        &["dlq", "purge", &id],
        1,
        &["not in the dead-letter queue", id.as_str()],
    );
    assert!(stdout.contains("purged 0 job(s)"), "{stdout}");
}

#[test]
fn enqueue_checks_arguments_against_the_tasks_schema() {
    let env = Env::new();
    env.push("hostile");
    let bad = [
        (r#"{"count":"three"}"#, "/count"),
        (r#"{"count":11}"#, "maximum"),
        (r#"{}"#, "required"),
    ];
    for (args, why) in bad {
        refused(
            &env,
            &["enqueue", "hostile.schema", "--args", args],
            1,
            &["arguments of `hostile.schema` do not match its schema", why],
        );
    }
    // A batch with one bad line enqueues nothing and names the line.
    let file = env.dir.join("jobs.ndjson");
    std::fs::write(
        &file,
        "{\"task\":\"hostile.schema\",\"args\":{\"count\":1}}\n{\"task\":\"hostile.schema\",\"args\":{\"count\":0}}\n",
    )
    .unwrap();
    refused(
        &env,
        &["enqueue", "--batch", file.to_str().unwrap()],
        1,
        &["line 2", "minimum"],
    );
    let id = env.enqueue(&["hostile.schema", "--args", r#"{"count":3}"#]);
    assert_eq!(id.len(), 36, "{id}");
}

/// The child-job quota set at push applies to the task's root jobs on the
/// worker; a root job's own option overrides it; a quota for a task the
/// plugin does not have is refused.
#[tokio::test]
async fn a_quota_set_at_push_bounds_the_tasks_job_trees() {
    let env = Env::new();
    env.push("hello");
    let hostile = plugin("hostile");
    refused(
        &env,
        &[
            "plugin",
            "push",
            hostile.to_str().unwrap(),
            "--max-descendants",
            "7",
            "--quota-task",
            "hostile.nope",
        ],
        1,
        &["no task `hostile.nope`"],
    );
    env.ok(&[
        "plugin",
        "push",
        hostile.to_str().unwrap(),
        "--max-descendants",
        "7",
        "--quota-task",
        "hostile.enqueue-bomb",
    ]);
    let mut worker = env.worker("quota", &["--concurrency", "4"]);
    let store = env.store().await;
    let count_bombs = || async {
        let filter = TaskFilter {
            task: Some("hostile.enqueue-bomb".to_owned()),
            limit: 100_000,
            ..Default::default()
        };
        // Settled: nothing of the tree still queued or running.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let all = store.list(&filter).await.unwrap();
            if !all.is_empty() && all.iter().all(|r| r.state.is_terminal()) {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let again = store.list(&filter).await.unwrap();
                if again.len() == all.len() {
                    return all.len();
                }
            }
            assert!(Instant::now() < deadline, "the bomb did not settle");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    env.enqueue(&["hostile.enqueue-bomb", "--max-retries", "0"]);
    assert_eq!(
        count_bombs().await,
        8,
        "the root and the 7 descendants set at push"
    );
    env.enqueue(&[
        "hostile.enqueue-bomb",
        "--max-retries",
        "0",
        "--max-descendants",
        "3",
    ]);
    assert_eq!(count_bombs().await, 8 + 4, "a root job's own quota wins");
    terminate(&mut worker);
}

/// `xylem task cancel`, from another process than the worker's: a running
/// infinite loop (a Wasm plugin that never calls the host) is stopped and
/// its slot serves the next job; a queued job never runs.
#[tokio::test]
async fn task_cancel_stops_a_loop_in_another_process_and_a_queued_job() {
    let env = Env::new();
    env.push("hostile");
    env.push("hello");
    let mut worker = env.worker("w", &["--concurrency", "1"]);
    let looping = env.enqueue(&["hostile.loop", "--timeout", "5m"]);
    let store = env.store().await;
    let started = Instant::now();
    while store.get(&looping).await.unwrap().map(|r| r.state) != Some(TaskState::Running) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the loop never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued = env.enqueue(&["hello.greet", "--args", r#"{"name":"never"}"#]);

    let out = env.ok(&["task", "cancel", &queued, &looping, "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc[0]["outcome"]["result"], "cancelled", "{doc}");
    assert_eq!(doc[1]["outcome"]["result"], "requested", "{doc}");
    let asked = Instant::now();
    let record = loop {
        let record = store.get(&looping).await.unwrap().unwrap();
        if record.state.is_terminal() {
            break record;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "still {}",
            record.state
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!(
        "cancelled a running loop in another process in {:?}",
        asked.elapsed()
    );
    assert_eq!(record.state, TaskState::Cancelled, "{record:?}");
    let queued_record = store.get(&queued).await.unwrap().unwrap();
    assert_eq!(queued_record.state, TaskState::Cancelled);
    assert!(
        !queued_record
            .history
            .iter()
            .any(|h| h.state == TaskState::Running),
        "the queued job never ran"
    );
    // The worker's one slot serves the next job.
    let next = env.enqueue(&["hello.greet", "--args", r#"{"name":"next"}"#, "--wait"]);
    assert!(next.contains("Hello, next!"), "{next}");
    // Bulk, dry run: lists, changes nothing.
    let later = env.enqueue(&["hello.greet", "--args", r#"{"name":"x"}"#, "--delay", "1h"]);
    let listed = env.ok(&["task", "cancel", "--task", "hello.greet", "--dry-run"]);
    assert_eq!(listed.trim(), later);
    assert_eq!(
        store.get(&later).await.unwrap().unwrap().state,
        TaskState::Queued
    );
    let out = env.xylem(&["task", "cancel", "no-such-id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no such job"));
    worker.kill().unwrap();
    let _ = worker.wait();
}

/// Four worker processes on one SQLite file hold a 20/s rate limit
/// together (as on Redis and PostgreSQL: `redis/cluster.rs`,
/// `postgres/cluster.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_hold_a_rate_limit_on_sqlite() {
    xylem_tests::scenarios::four_workers_hold_a_rate_limit(&Env::new().url).await;
}

/// The order workflow through `kill -9` of every worker, twice, on one
/// SQLite file (as on Redis and PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_workflow_survives_kill_9_on_sqlite() {
    xylem_tests::scenarios::order_workflow_survives_kill_9(&Env::new().url).await;
}

/// Event waits (signalled by another process, through `kill -9`) and
/// child runs across processes, on one SQLite file (as on Redis and
/// PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_and_child_runs_work_across_processes_on_sqlite() {
    xylem_tests::scenarios::approval_and_child_runs_across_processes(&Env::new().url).await;
}

/// Three beat processes on one SQLite file fire each second once, with no
/// gap through a `kill -9` of one (as on Redis and PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_beats_fire_each_tick_once_on_sqlite() {
    xylem_tests::scenarios::three_beats_fire_each_tick_once(&Env::new().url).await;
}

/// A 100-member chord and a 10-step chain outlive their client and a
/// `kill -9` of a worker on one SQLite file (as on Redis and PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canvases_survive_their_client_and_kill_9_on_sqlite() {
    xylem_tests::scenarios::canvases_survive_their_client_and_kill_9(&Env::new().url).await;
}

/// `xylem queues pause|resume|purge` against a worker process.
#[tokio::test]
async fn queues_pause_resume_and_purge_from_the_cli() {
    let env = Env::new();
    env.push("hello");
    env.ok(&["queues", "pause", "mail"]);
    let mut worker = env.worker("w", &[]);
    let held = env.enqueue(&[
        "hello.greet",
        "--args",
        r#"{"name":"held"}"#,
        "--queue",
        "mail",
    ]);
    let free = env.enqueue(&["hello.greet", "--args", r#"{"name":"free"}"#, "--wait"]);
    assert!(free.contains("Hello, free!"), "{free}");
    let store = env.store().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        store.get(&held).await.unwrap().unwrap().state,
        TaskState::Queued
    );
    let listed: serde_json::Value = serde_json::from_str(&env.ok(&["queues", "--json"])).unwrap();
    let mail = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "mail")
        .unwrap();
    assert_eq!(mail["paused"], true, "{listed}");
    assert_eq!(mail["ready"], 1, "{listed}");

    env.ok(&["queues", "resume", "mail"]);
    let out = env.ok(&["task", "wait", &held, "--timeout", "30s"]);
    assert!(out.contains("Hello, held!"), "{out}");

    env.ok(&["queues", "pause", "mail"]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ids: Vec<String> = (0..3)
        .map(|i| {
            env.enqueue(&[
                "hello.greet",
                "--args",
                &format!(r#"{{"name":"p{i}"}}"#),
                "--queue",
                "mail",
            ])
        })
        .collect();
    assert!(
        env.ok(&["queues", "purge", "mail", "--dry-run"])
            .contains("3 waiting")
    );
    assert!(
        env.ok(&["queues", "purge", "mail"])
            .contains("3 waiting job(s) purged")
    );
    for id in &ids {
        assert_eq!(
            store.get(id).await.unwrap().unwrap().state,
            TaskState::Cancelled
        );
    }
    worker.kill().unwrap();
    let _ = worker.wait();
}

/// `xylem plugin push --concurrency TASK=LIMIT`: the operator's limit is
/// stored with the task, shown by `xylem tasks`, held by a worker process,
/// and a malformed one is refused.
#[tokio::test]
async fn push_sets_a_concurrency_limit_that_workers_hold() {
    let env = Env::new();
    let hello = plugin("hello");
    let out = env.xylem(&[
        "plugin",
        "push",
        hello.to_str().unwrap(),
        "--concurrency",
        "hello.sleep=two",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("whole number"));
    let out = env.xylem(&[
        "plugin",
        "push",
        hello.to_str().unwrap(),
        "--concurrency",
        "no.such=1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task `no.such`"));
    env.ok(&[
        "plugin",
        "push",
        hello.to_str().unwrap(),
        "--concurrency",
        "hello.sleep=1",
    ]);
    assert!(env.ok(&["tasks"]).contains("concurrency 1"));

    let mut worker = env.worker("w", &["--concurrency", "4"]);
    let ids: Vec<String> = (0..3)
        .map(|_| env.enqueue(&["hello.sleep", "--args", r#"{"ms":200}"#]))
        .collect();
    let store = env.store().await;
    let mut runs = Vec::new();
    for id in &ids {
        let out = env.ok(&["task", "wait", id, "--timeout", "60s"]);
        assert!(!out.is_empty());
        let record = store.get(id).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Succeeded);
        runs.push(xylem_tests::last_run(&record));
    }
    runs.sort_unstable();
    // A history's `running` entry marks the claim, taken a moment before
    // the slot: two 200 ms runs may touch by that moment, never more.
    for pair in runs.windows(2) {
        assert!(pair[0].1 - pair[1].0 < 50, "two ran at once: {runs:?}");
    }
    worker.kill().unwrap();
    let _ = worker.wait();
}

/// `xylem enqueue --wait` (and `task wait`) show a running job's progress:
/// plain lines when stderr is not a terminal, as here.
#[test]
fn waiting_shows_progress_lines_when_not_on_a_terminal() {
    let env = Env::new();
    env.push("hello");
    let mut worker = env.worker("w", &[]);
    let out = env.xylem(&[
        "enqueue",
        "hello.sleep",
        "--args",
        r#"{"ms":1500}"#,
        "--wait",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("%  running — slept")),
        "no progress line: {stderr}"
    );
    worker.kill().unwrap();
    let _ = worker.wait();
}

/// `xylem enqueue --unique-for`: the second equal enqueue prints the first
/// job's id and says so.
#[test]
fn enqueue_unique_for_prints_the_first_id() {
    let env = Env::new();
    env.push("hello");
    let args = [
        "enqueue",
        "hello.greet",
        "--args",
        r#"{"name":"u"}"#,
        "--unique-for",
        "1m",
    ];
    let first = env.ok(&args);
    let out = env.xylem(&args);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), first.trim());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not enqueued"));
    let other = env.ok(&[
        "enqueue",
        "hello.greet",
        "--args",
        r#"{"name":"v"}"#,
        "--unique-for",
        "1m",
    ]);
    assert_ne!(other.trim(), first.trim());
    let json = env.ok(&[&args[..], &["--json"]].concat());
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["duplicate"], true);
    assert_eq!(doc["id"], first.trim());
}

/// The options from the command line: `--link` (with arguments) fires
/// with the result, `--ignore-result` drops the value, a link to an
/// unknown task is refused, `xylem tasks --json` shows effective defaults
/// and the operator's `--rate-limit` (a malformed one refused).
#[tokio::test]
async fn enqueue_options_and_effective_defaults_from_the_cli() {
    let env = Env::new();
    let hello = plugin("hello");
    let out = env.xylem(&[
        "plugin",
        "push",
        hello.to_str().unwrap(),
        "--rate-limit",
        "hello.greet=20/d",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("20/d"));
    env.ok(&[
        "plugin",
        "push",
        hello.to_str().unwrap(),
        "--rate-limit",
        "hello.greet=50/s",
    ]);
    let tasks: serde_json::Value = serde_json::from_str(&env.ok(&["tasks", "--json"])).unwrap();
    let greet = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"] == "hello.greet")
        .unwrap();
    let effective = &greet["effective"];
    assert_eq!(effective["queue"], "default", "{greet}");
    assert_eq!(effective["max_retries"], 3, "{greet}");
    assert_eq!(effective["hard_time_limit_ms"], 300_000, "{greet}");
    assert_eq!(effective["rate_limit"], "50/s", "{greet}");
    assert_eq!(effective["retry_jitter"], true, "{greet}");
    let table = env.ok(&["tasks"]);
    assert!(
        table.contains("rate 50/s") && table.contains("RETRIES"),
        "{table}"
    );

    let out = env.xylem(&["enqueue", "hello.greet", "--link", "no.such-task"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown task `no.such-task`"));

    let mut worker = env.worker("options", &[]);
    let doc: serde_json::Value = serde_json::from_str(&env.enqueue(&[
        "hello.greet",
        "--args",
        r#"{"name":"Ada"}"#,
        "--link",
        r#"hello.echo:{"to":"ops"}"#,
        "--ignore-result",
        "--visibility-timeout",
        "2m",
        "--no-jitter",
        "--expires",
        "1h",
        "--json",
    ]))
    .unwrap();
    let id = doc["id"].as_str().unwrap();
    let link = doc["options"]["link"]["id"].as_str().unwrap();
    assert_eq!(doc["options"]["visibility_timeout_ms"], 120_000, "{doc}");
    assert_eq!(doc["options"]["retry_jitter"], false, "{doc}");
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["task", "wait", id, "--json", "--timeout", "60s"])).unwrap();
    assert_eq!(shown["state"], "succeeded", "{shown}");
    assert!(shown.get("result").is_none_or(|r| r.is_null()), "{shown}");
    let linked: serde_json::Value =
        serde_json::from_str(&env.ok(&["task", "wait", link, "--json", "--timeout", "60s"]))
            .unwrap();
    assert_eq!(
        linked["result"],
        serde_json::json!({"to": "ops", "result": "Hello, Ada!"}),
        "{linked}"
    );
    terminate(&mut worker);
}

/// `xylem chain|group|chord|canvas` against a worker process: results flow
/// through a chain, a chord calls back with its members' results in order,
/// a nested canvas from a file runs, a failed step stops its chain (exit 1,
/// `canvas show` names it), an unknown task is refused before anything is
/// written.
#[tokio::test]
async fn canvases_from_the_cli() {
    let env = Env::new();
    env.push("hello");
    let mut worker = env.worker("canvas", &[]);
    let out = env.ok(&[
        "chain",
        r#"hello.greet:{"name":"Ada"}"#,
        "hello.echo",
        "--wait",
        "--wait-timeout",
        "60s",
    ]);
    assert_eq!(out.trim(), r#""Hello, Ada!""#);
    let doc: serde_json::Value = serde_json::from_str(&env.ok(&[
        "chord",
        r#"hello.greet:{"name":"Ada"}"#,
        r#"hello.greet:{"name":"Grace"}"#,
        "--callback",
        r#"hello.echo:{"from":"chord"}"#,
        "--wait",
        "--json",
    ]))
    .unwrap();
    assert_eq!(doc["state"], "succeeded", "{doc}");
    assert_eq!(
        doc["result"],
        serde_json::json!({"from": "chord", "result": ["Hello, Ada!", "Hello, Grace!"]})
    );
    let file = env.dir.join("canvas.json");
    std::fs::write(
        &file,
        r#"{"kind": "chain", "steps": [
            {"kind": "group", "members": [
                {"kind": "task", "task": "hello.greet", "args": {"name": "Ada"}},
                {"kind": "chain", "steps": [
                    {"kind": "task", "task": "hello.greet", "args": {"name": "Grace"}},
                    {"kind": "task", "task": "hello.echo"}
                ]}
            ]},
            {"kind": "task", "task": "hello.echo", "args": {"note": "all greeted"}}
        ]}"#,
    )
    .unwrap();
    let out = env.ok(&["canvas", "submit", file.to_str().unwrap(), "--wait"]);
    let result: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        result,
        serde_json::json!({"note": "all greeted", "result": ["Hello, Ada!", "Hello, Grace!"]})
    );

    // The same tree in YAML.
    let yaml = env.dir.join("canvas.yaml");
    std::fs::write(
        &yaml,
        "kind: chord\nmembers:\n  - {kind: task, task: hello.greet, args: {name: Ada}}\n  - kind: chain\n    steps:\n      - {kind: task, task: hello.greet, args: {name: Grace}}\n      - {kind: task, task: hello.echo}\ncallback:\n  kind: chain\n  steps:\n    - {kind: task, task: hello.echo}\n    - {kind: task, task: hello.echo, args: {note: chord with a chain callback}}\n",
    )
    .unwrap();
    let out = env.ok(&["canvas", "submit", yaml.to_str().unwrap(), "--wait"]);
    let result: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        result,
        serde_json::json!({"note": "chord with a chain callback", "result": ["Hello, Ada!", "Hello, Grace!"]})
    );

    // The second step rejects its input (an empty name): not retried, the
    // chain stops there.
    let out = env.xylem(&[
        "chain",
        r#"hello.greet:{"name":"Ada"}"#,
        r#"hello.greet:{"name":""}"#,
        "hello.echo",
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["state"], "failed", "{doc}");
    let id = doc["id"].as_str().unwrap();
    let shown: serde_json::Value =
        serde_json::from_str(&env.ok(&["canvas", "show", id, "--json"])).unwrap();
    let states: Vec<&str> = shown["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["succeeded", "dead", "pending"], "{shown}");
    assert_eq!(shown["tasks"][1]["error"]["kind"], "rejected", "{shown}");
    let tree = env.ok(&["canvas", "show", id]);
    assert!(
        tree.contains("chain  failed") && tree.contains("rejected"),
        "{tree}"
    );

    // A canvas from inside a task (the host's submit-canvas, through the
    // Rust SDK's ctx.chord): its callback runs after the task returned.
    let out = env.ok(&[
        "enqueue",
        "hello.greet-all",
        "--args",
        r#"{"names":["Ada","Grace"]}"#,
        "--wait",
        "--json",
    ]);
    let record: serde_json::Value = serde_json::from_str(&out).unwrap();
    let canvas = record["result"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let shown = loop {
        let shown: serde_json::Value =
            serde_json::from_str(&env.ok(&["canvas", "show", &canvas, "--json"])).unwrap();
        if shown["state"] == "succeeded" {
            break shown;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        shown["result"],
        serde_json::json!(["Hello, Ada!", "Hello, Grace!"]),
        "{shown}"
    );

    let out = env.xylem(&["chain", "hello.greet", "no.such-task"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown task `no.such-task`"));
    terminate(&mut worker);
}

/// `xylem schedule` and two `xylem beat` processes on one store: an
/// every-second schedule fires about once a second — never twice a tick,
/// whichever beat gets there — its jobs run, `schedule next` prints the
/// coming times, a bad expression or an unknown task is refused, a
/// disabled schedule stops firing.
#[tokio::test]
async fn two_beats_fire_a_schedule_once_per_tick() {
    let env = Env::new();
    env.push("hello");
    let out = env.xylem(&[
        "schedule",
        "add",
        "bad",
        "--task",
        "hello.echo",
        "--cron",
        "61 * * * *",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("61 * * * *"));
    let out = env.xylem(&[
        "schedule", "add", "typo", "--task", "no.such", "--every", "1m",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown task `no.such`"));
    env.ok(&[
        "schedule",
        "add",
        "ping",
        "--task",
        "hello.echo",
        "--args",
        r#"{"ping":1}"#,
        "--every",
        "1s",
    ]);
    env.ok(&[
        "schedule",
        "add",
        "paris",
        "--task",
        "hello.greet",
        "--args",
        r#"{"name":"P"}"#,
        "--cron",
        "30 2 * * *",
        "--tz",
        "Europe/Paris",
    ]);
    let next: serde_json::Value =
        serde_json::from_str(&env.ok(&["schedule", "next", "paris", "--count", "3", "--json"]))
            .unwrap();
    assert_eq!(next.as_array().unwrap().len(), 3, "{next}");
    assert!(
        next[0]["local"].as_str().unwrap().contains("02:30:00"),
        "{next}"
    );

    let mut worker = env.worker("w", &[]);
    let mut beats: Vec<_> = (0..2)
        .map(|i| {
            env.command()
                .args(["beat", "--interval", "100ms"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("beat {i}: {e}"))
        })
        .collect();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    env.ok(&["schedule", "disable", "ping"]);
    let elapsed = started.elapsed().as_secs();
    for b in &mut beats {
        terminate(b);
    }
    let store = env.store().await;
    let filter = TaskFilter {
        task: Some("hello.echo".to_owned()),
        limit: 1000,
        ..Default::default()
    };
    let fired = store.list(&filter).await.unwrap();
    assert!(
        (3..=elapsed as usize + 1).contains(&fired.len()),
        "{} jobs in {elapsed} s of an every-second schedule under two beats",
        fired.len()
    );
    let done = env
        .wait_succeeded(fired.len(), Duration::from_secs(60))
        .await;
    assert!(
        done.iter()
            .any(|r| r.result == Some(serde_json::json!({"ping": 1})))
    );
    let listed: serde_json::Value =
        serde_json::from_str(&env.ok(&["schedule", "ls", "--json"])).unwrap();
    let ping = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ping")
        .unwrap();
    assert_eq!(ping["enabled"], false, "{ping}");
    assert!(ping["last_run"].is_i64(), "{ping}");
    terminate(&mut worker);
}

/// `xylem schedule apply FILE`: YAML or TOML, every entry checked before
/// anything is written, a diff shown, `--dry-run` writes nothing, a second
/// apply changes nothing, an edit keeps the rest of the schedule,
/// `--prune` removes what the file does not name. And `schedule add`
/// takes the jobs' options as `enqueue` does.
#[tokio::test]
async fn schedule_files_apply_idempotently() {
    let env = Env::new();
    env.push("hello");
    env.ok(&[
        "schedule",
        "add",
        "legacy",
        "--task",
        "hello.echo",
        "--every",
        "1h",
        "--max-retries",
        "2",
        "--header",
        "team=ops",
        "--expires",
        "1m",
        "--timeout",
        "20s",
        "-p",
        "3",
    ]);
    let legacy: serde_json::Value =
        serde_json::from_str(&env.ok(&["schedule", "show", "legacy"])).unwrap();
    assert_eq!(legacy["max_retries"], 2, "{legacy}");
    assert_eq!(
        legacy["headers"],
        serde_json::json!([["team", "ops"]]),
        "{legacy}"
    );
    assert_eq!(legacy["expires_ms"], 60_000, "{legacy}");
    assert_eq!(legacy["options"]["hard_time_limit_ms"], 20_000, "{legacy}");
    assert_eq!(legacy["priority"], 3, "{legacy}");

    let yaml = env.dir.join("schedules.yaml");
    let write_yaml = |nightly_cron: &str, ping_priority: u8| {
        std::fs::write(
            &yaml,
            format!(
                r#"# the team's schedules
schedules:
  - name: nightly
    task: hello.greet
    args: {{name: night}}
    cron: "{nightly_cron}"
    tz: Europe/Paris
    max_retries: 5
    timeout: 30s
    expires: 10m
    headers: {{tenant: acme}}
    missed: run-all
  - name: ping
    task: hello.echo
    args: {{ping: 1}}
    every: 30s
    priority: {ping_priority}
    enabled: false
"#
            ),
        )
        .unwrap();
    };
    let names = |env: &Env| -> Vec<String> {
        let listed: serde_json::Value =
            serde_json::from_str(&env.ok(&["schedule", "ls", "--json"])).unwrap();
        let mut names: Vec<String> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    write_yaml("0 2 * * *", 5);
    let file = yaml.to_str().unwrap();
    let out = env.ok(&["schedule", "apply", file, "--dry-run"]);
    assert!(
        out.contains("+ nightly: cron 0 2 * * * (Europe/Paris)"),
        "{out}"
    );
    assert!(out.contains("+ ping: every 30s"), "{out}");
    assert_eq!(names(&env), ["legacy"], "a dry run writes nothing");

    let out = env.ok(&["schedule", "apply", file]);
    assert!(out.contains("+ nightly") && out.contains("+ ping"), "{out}");
    assert_eq!(names(&env), ["legacy", "nightly", "ping"]);
    let nightly: serde_json::Value =
        serde_json::from_str(&env.ok(&["schedule", "show", "nightly"])).unwrap();
    assert_eq!(nightly["args"], r#"{"name":"night"}"#, "{nightly}");
    assert_eq!(nightly["headers"], serde_json::json!([["tenant", "acme"]]));
    assert_eq!(nightly["max_retries"], 5);
    assert_eq!(nightly["expires_ms"], 600_000);
    assert_eq!(nightly["missed"], "run_all");
    let ping: serde_json::Value =
        serde_json::from_str(&env.ok(&["schedule", "show", "ping"])).unwrap();
    assert_eq!(ping["enabled"], false, "{ping}");

    // Again: nothing to do.
    let out = env.xylem(&["schedule", "apply", file]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("= nightly") && stdout.contains("= ping"),
        "{stdout}"
    );
    assert!(
        stderr.contains("0 added, 0 changed, 2 unchanged, 0 removed"),
        "{stderr}"
    );

    // The same schedules in TOML are the same.
    let toml = env.dir.join("schedules.toml");
    std::fs::write(
        &toml,
        r#"[[schedules]]
name = "nightly"
task = "hello.greet"
args = { name = "night" }
cron = "0 2 * * *"
tz = "Europe/Paris"
max_retries = 5
timeout = "30s"
expires = "10m"
headers = { tenant = "acme" }
missed = "run-all"

[[schedules]]
name = "ping"
task = "hello.echo"
args = { ping = 1 }
every = "30s"
priority = 5
enabled = false
"#,
    )
    .unwrap();
    let out = env.xylem(&["schedule", "apply", toml.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0 changed, 2 unchanged"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // An edit: the diff names each field; the version moves on.
    write_yaml("0 3 * * *", 7);
    let out = env.ok(&["schedule", "apply", file]);
    assert!(
        out.contains("~ nightly:")
            && out.contains("spec: cron 0 2 * * * (Europe/Paris) → cron 0 3 * * * (Europe/Paris)"),
        "{out}"
    );
    assert!(
        out.contains("~ ping:") && out.contains("priority: 5 → 7"),
        "{out}"
    );
    let edited: serde_json::Value =
        serde_json::from_str(&env.ok(&["schedule", "show", "nightly"])).unwrap();
    assert!(
        edited["version"].as_u64() > nightly["version"].as_u64(),
        "{edited}"
    );
    assert_eq!(edited["max_retries"], 5);

    // Prune: shown, then done.
    let out = env.ok(&["schedule", "apply", file, "--prune", "--dry-run"]);
    assert!(out.contains("- legacy"), "{out}");
    assert_eq!(names(&env), ["legacy", "nightly", "ping"]);
    let plan: serde_json::Value =
        serde_json::from_str(&env.ok(&["schedule", "apply", file, "--prune", "--json"])).unwrap();
    let actions: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["keep", "keep", "remove"], "{plan}");
    assert_eq!(names(&env), ["nightly", "ping"]);

    // Bad files: refused whole, with the entry and the fault named.
    for (text, fault) in [
        (
            "schedules:
  - name: a
    task: hello.echo
    cronn: '* * * * *'
",
            "unknown key `cronn`",
        ),
        (
            "schedules:
  - name: a
    task: hello.echo
    cron: '61 * * * *'
",
            "minute field `61`",
        ),
        (
            "schedules:
  - name: a
    task: no.such
    every: 1m
",
            "unknown task `no.such`",
        ),
        (
            "schedules:
  - name: a
    task: hello.echo
    every: 1m
  - name: a
    task: hello.echo
    every: 2m
",
            "used twice",
        ),
        (
            "schedules:
  - name: fine
    task: hello.echo
    every: 1m
  - name: b
    task: hello.echo
",
            "give one of cron, every or at",
        ),
    ] {
        std::fs::write(&yaml, text).unwrap();
        let out = env.xylem(&["schedule", "apply", file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(fault),
            "{fault}: {stderr}"
        );
        assert_eq!(names(&env), ["nightly", "ping"], "nothing applied: {fault}");
    }
}

/// `xylem worker --beat`: one process fires the schedules and runs their
/// jobs.
#[tokio::test]
async fn a_worker_with_beat_fires_and_runs_schedules() {
    let env = Env::new();
    env.push("hello");
    env.ok(&[
        "schedule",
        "add",
        "tick",
        "--task",
        "hello.echo",
        "--args",
        r#"{"tick":true}"#,
        "--every",
        "1s",
    ]);
    let mut worker = env.worker("beating", &["--beat"]);
    let done = env.wait_succeeded(2, Duration::from_secs(30)).await;
    terminate(&mut worker);
    assert!(
        done.iter()
            .all(|r| r.result == Some(serde_json::json!({"tick": true})))
    );
}

/// `xylem workers --json`, parsed.
fn workers_json(env: &Env, all: bool) -> Vec<serde_json::Value> {
    let args: &[&str] = if all {
        &["workers", "--all", "--json"]
    } else {
        &["workers", "--json"]
    };
    serde_json::from_str(&env.ok(args)).unwrap()
}

/// Polls `xylem workers --all --json` until `check` holds (or panics).
fn until_workers(env: &Env, what: &str, check: impl Fn(&[serde_json::Value]) -> bool) {
    let started = Instant::now();
    loop {
        let listed = workers_json(env, true);
        if check(&listed) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: {listed:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn named<'a>(listed: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    listed.iter().find(|w| w["name"] == name)
}

#[tokio::test(flavor = "multi_thread")]
async fn xylem_workers_lists_running_stopped_and_stale_workers() {
    let env = Env::new();
    env.push("hello");
    assert!(env.ok(&["workers"]).contains("no workers"));
    let long = env.enqueue(&["hello.sleep", "--args", r#"{"ms":60000}"#]);
    env.enqueue(&["hello.greet", "--args", r#"{"name":"w"}"#]);
    let mut calm = env.worker("calm", &["--grace", "1s", "--queue", "default"]);
    env.wait_succeeded(1, Duration::from_secs(30)).await;
    let mut doomed = env.worker("doomed", &["--concurrency", "3"]);
    // Both running; one of them has the long job, and the record says so.
    until_workers(&env, "both workers running, one with the long job", |l| {
        let (Some(a), Some(b)) = (named(l, "calm"), named(l, "doomed")) else {
            return false;
        };
        a["shown_state"] == "running"
            && b["shown_state"] == "running"
            && (a["running"]
                .as_array()
                .unwrap()
                .contains(&long.clone().into())
                || b["running"]
                    .as_array()
                    .unwrap()
                    .contains(&long.clone().into()))
    });
    let listed = workers_json(&env, false);
    let calm_row = named(&listed, "calm").unwrap();
    assert_eq!(calm_row["queues"], serde_json::json!(["default"]));
    assert_eq!(calm_row["pid"], calm.id());
    assert_eq!(named(&listed, "doomed").unwrap()["concurrency"], 3);

    // A clean stop: `stopped`, hidden unless --all, its counts kept.
    terminate(&mut calm);
    let listed = workers_json(&env, true);
    let stopped = named(&listed, "calm").expect("a stopped worker is kept");
    assert_eq!(stopped["shown_state"], "stopped", "{stopped:#}");
    assert_eq!(
        stopped["processed"]["succeeded"], 1,
        "the greeting ran on calm, alone then: {stopped:#}"
    );
    assert!(named(&workers_json(&env, false), "calm").is_none());
    let table = env.ok(&["workers"]);
    assert!(
        table.contains("doomed") && table.contains("1 stopped worker(s) not shown"),
        "{table}"
    );

    // Killed: its beats stop, and after three missed ones it is stale.
    kill9(&mut doomed);
    until_workers(&env, "the killed worker marked stale", |l| {
        named(l, "doomed").is_some_and(|w| w["shown_state"] == "stale" && w["stale"] == true)
    });
    let table = env.ok(&["workers"]);
    let row = table.lines().find(|l| l.contains("doomed")).unwrap();
    assert!(row.contains("stale"), "{table}");
}
