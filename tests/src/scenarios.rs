//! Multi-process scenarios that every networked store must survive: real
//! `xylem worker` processes killed with `kill -9`, several workers sharing
//! one server, the server itself restarted. Each adapter's test file runs
//! them against its server.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xylem_core::{Client, EnqueueRequest, Stores, TaskFilter, TaskRecord, TaskState};

use crate::{plugin, xylem_bin};

/// Opens the stores behind `url` in this process (to enqueue and check).
pub async fn open_stores(url: &str) -> Stores {
    if url.starts_with("redis://") {
        Stores::from_adapter(Arc::new(
            xylem_redis::RedisStore::connect(url).await.unwrap(),
        ))
    } else if url.starts_with("sqlite://") {
        Stores::from_adapter(Arc::new(xylem_sqlite::SqliteStore::open_url(url).unwrap()))
    } else {
        open_postgres(url).await
    }
}

async fn open_postgres(url: &str) -> Stores {
    Stores::from_adapter(Arc::new(
        xylem_postgres::PostgresStore::connect(url).await.unwrap(),
    ))
}

/// Worker processes on one store, with their logs in a temp dir.
#[derive(Debug)]
pub struct Cluster {
    /// The store URL.
    pub url: String,
    dir: PathBuf,
}

/// A test that fails part-way leaves its workers running, holding store
/// connections every later test needs: on drop, every process this test
/// process started on the cluster's store is killed.
impl Drop for Cluster {
    fn drop(&mut self) {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let me = std::process::id().to_string();
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = std::fs::read_to_string(path.join("stat")).is_ok_and(|stat| {
                // pid (comm) state ppid ...: the parent after the comm's ')'.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    == Some(me.as_str())
            });
            let on_store = std::fs::read(path.join("cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg == self.url.as_bytes())
            });
            if ours && on_store {
                let _ = Command::new("kill")
                    .args(["-9", &entry.file_name().to_string_lossy()])
                    .status();
            }
        }
    }
}

impl Cluster {
    /// A cluster on `url`, with `hello` pushed.
    pub async fn new(url: &str) -> Self {
        Self::pushed_with(url, &[]).await
    }

    /// A cluster on `url`, with `hello` pushed with `push_args` (the
    /// operator's limits, say).
    pub async fn pushed_with(url: &str, push_args: &[&str]) -> Self {
        let cluster = Self {
            url: url.to_owned(),
            dir: tempfile::tempdir().unwrap().keep(),
        };
        let wasm = plugin("hello");
        let mut args = vec!["plugin", "push", wasm.to_str().unwrap()];
        args.extend(push_args);
        cluster.xylem(&args);
        cluster
    }

    /// Runs `xylem ARGS...` on the cluster's store; its standard output,
    /// trimmed (it must succeed).
    pub fn xylem(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "xylem {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Starts `n` workers named `PREFIX0`, `PREFIX1`, ... with `args`.
    pub fn workers(&self, prefix: &str, n: usize, args: &[&str]) -> Vec<Child> {
        (0..n)
            .map(|i| self.worker(&format!("{prefix}{i}"), args))
            .collect()
    }

    /// Pushes the plugin built from `plugins/NAME`.
    pub fn push(&self, name: &str) {
        self.xylem(&["plugin", "push", plugin(name).to_str().unwrap()]);
    }

    /// `xylem --store URL` with the cluster's cache and log level.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(xylem_bin());
        cmd.arg("--store")
            .arg(&self.url)
            .env(
                "XYLEM_CACHE_DIR",
                std::env::temp_dir().join("xylem-test-cache"),
            )
            .env("XYLEM_LOG", "info");
        cmd
    }

    /// Starts `xylem worker --name NAME ARGS...`.
    pub fn worker(&self, name: &str, args: &[&str]) -> Child {
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        self.command()
            .args(["worker", "--name", name])
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Waits until worker `name` logged that it started: from then on it
    /// has its signal handlers, so a SIGTERM stops it cleanly (one sent
    /// earlier kills it, as it would any process still starting).
    pub fn wait_started(&self, name: &str) {
        let started = Instant::now();
        while !std::fs::read_to_string(self.log_path(name))
            .is_ok_and(|log| log.contains("worker started"))
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "worker {name} did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where worker `name` logs.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Enqueues `n` `hello.sleep` jobs of `ms` each; returns their ids.
    pub async fn enqueue_sleeps(&self, n: usize, ms: u64) -> Vec<String> {
        let client = Client::new(open_stores(&self.url).await);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let req = EnqueueRequest::new("hello.sleep", format!("{{\"ms\":{ms}}}"));
            ids.push(client.enqueue(req).await.unwrap().id);
        }
        ids
    }

    /// Waits until every job in `ids` succeeded; returns their full records.
    pub async fn wait_all(&self, ids: &[String], timeout: Duration) -> Vec<TaskRecord> {
        let stores = open_stores(&self.url).await;
        let wanted: HashSet<&String> = ids.iter().collect();
        let started = Instant::now();
        loop {
            let filter = TaskFilter {
                state: Some(TaskState::Succeeded),
                limit: 100_000,
                ..Default::default()
            };
            let done = match stores.results.list(&filter).await {
                Ok(done) => done.iter().filter(|r| wanted.contains(&r.id)).count(),
                Err(_) => 0, // the server may be restarting
            };
            if done >= ids.len() {
                break;
            }
            assert!(
                started.elapsed() < timeout,
                "only {done} of {} jobs succeeded in {timeout:?}",
                ids.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            records.push(stores.results.get(id).await.unwrap().unwrap());
        }
        records
    }
}

/// SIGTERM, and wait for a clean exit.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "worker exited with {status}");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "worker did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kill -9`.
pub fn kill9(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// How many times `record` entered `state`.
pub fn count(record: &TaskRecord, state: TaskState) -> usize {
    record.history.iter().filter(|h| h.state == state).count()
}

/// Every job succeeded, and exactly once.
pub fn assert_each_succeeded_once(records: &[TaskRecord]) {
    for r in records {
        assert_eq!(r.state, TaskState::Succeeded, "{}: {:#?}", r.id, r.history);
        assert_eq!(
            count(r, TaskState::Succeeded),
            1,
            "{} succeeded twice: {:#?}",
            r.id,
            r.history
        );
    }
}

/// Asserts each job ran exactly once; returns the workers that ran them
/// (their `running` details, e.g. `worker w1`).
pub fn workers_that_ran_each_once(records: &[TaskRecord]) -> HashSet<String> {
    let mut workers = HashSet::new();
    for r in records {
        assert_eq!(
            count(r, TaskState::Running),
            1,
            "{} ran more than once: {:#?}",
            r.id,
            r.history
        );
        let running = r.history.iter().find(|h| h.state == TaskState::Running);
        workers.insert(running.and_then(|h| h.detail.clone()).unwrap_or_default());
    }
    workers
}

/// 1,000 jobs; two workers killed with `kill -9` mid-job, three times;
/// then two more finish: no job lost, none succeeded twice.
pub async fn kill_9_mid_job(url: &str) {
    let cluster = Cluster::new(url).await;
    let ids = cluster.enqueue_sleeps(1000, 25).await;
    let opts = ["--lease", "1s", "--concurrency", "8"];
    for round in 0..3 {
        let mut a = cluster.worker(&format!("victim{round}a"), &opts);
        let mut b = cluster.worker(&format!("victim{round}b"), &opts);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        kill9(&mut a);
        kill9(&mut b);
    }
    let mut a = cluster.worker("survivor-a", &opts);
    let mut b = cluster.worker("survivor-b", &opts);
    let records = cluster.wait_all(&ids, Duration::from_secs(300)).await;
    terminate(&mut a);
    terminate(&mut b);
    assert_each_succeeded_once(&records);
    let redelivered = records
        .iter()
        .filter(|r| count(r, TaskState::Running) > 1)
        .count();
    assert!(
        redelivered > 0,
        "no kill landed mid-job: the test proved nothing"
    );
}

/// Four workers share 400 jobs: each runs once, and the work is spread.
pub async fn four_workers_share_the_work(url: &str) {
    let cluster = Cluster::new(url).await;
    let mut workers: Vec<Child> = (0..4)
        .map(|i| cluster.worker(&format!("w{i}"), &["--concurrency", "4"]))
        .collect();
    let ids = cluster.enqueue_sleeps(400, 10).await;
    let records = cluster.wait_all(&ids, Duration::from_secs(300)).await;
    for w in &mut workers {
        terminate(w);
    }
    assert_each_succeeded_once(&records);
    let names = workers_that_ran_each_once(&records);
    assert!(names.len() >= 3, "the work was not shared: {names:?}");
}

/// Four worker processes hold a rate limit of 20/s together — the
/// operator's, set with `plugin push --rate-limit` — within 10 % over
/// 10 s: of 260 jobs enqueued at once, no 10 seconds see more than 220
/// start, and the busiest 10 seconds see at least 100 — 199–200 alone, less
/// when the suite starves the workers (start times from the job
/// histories, whichever worker ran each). Starts are reserved
/// 50 ms apart; a worker starved of CPU (this test shares two cores with
/// the rest of the suite) starts some late and together, so one second
/// may see a few times 20 — never the burst of an unenforced limit (all
/// of them at once); a job back more than a second past its slot takes a
/// new one.
pub async fn four_workers_hold_a_rate_limit(url: &str) {
    let cluster = Cluster::pushed_with(url, &["--rate-limit", "hello.greet=20/s"]).await;
    let mut workers: Vec<Child> = (0..4)
        .map(|i| cluster.worker(&format!("r{i}"), &["--concurrency", "4"]))
        .collect();
    let client = Client::new(open_stores(url).await);
    // Every worker up (its plugin loaded) before the measured jobs.
    let warm_ids = client
        .enqueue_many(
            (0..8)
                .map(|_| EnqueueRequest::new("hello.echo", "{}"))
                .collect(),
        )
        .await
        .unwrap();
    let warm_ids: Vec<String> = warm_ids.into_iter().map(|e| e.id).collect();
    cluster.wait_all(&warm_ids, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let jobs = (0..260)
        .map(|i| EnqueueRequest::new("hello.greet", format!(r#"{{"name":"r{i}"}}"#)))
        .collect();
    let ids: Vec<String> = client
        .enqueue_many(jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let records = cluster.wait_all(&ids, Duration::from_secs(120)).await;
    for w in &mut workers {
        terminate(w);
    }
    assert_each_succeeded_once(&records);
    let mut starts: Vec<i64> = records.iter().map(|r| crate::last_run(r).0).collect();
    starts.sort_unstable();
    let first = starts[0];
    let busiest_in = |window: i64| {
        starts
            .iter()
            .enumerate()
            .map(|(i, s)| starts[i..].iter().take_while(|t| **t < s + window).count())
            .max()
            .unwrap_or(0)
    };
    let (in_ten, busiest) = (busiest_in(10_000), busiest_in(1_000));
    eprintln!(
        "rate limit 20/s, 4 workers: at most {in_ten} starts in 10 s, at most {busiest} in a second"
    );
    if std::env::var_os("XYLEM_RATE_TRACE").is_some() {
        let rel: Vec<i64> = starts.iter().map(|s| s - first).collect();
        eprintln!("{rel:?}");
    }
    // The limit: never more than 200 in 10 s (+10 % for clock skew
    // between workers). Liveness: a slot a starved worker misses by more
    // than a second is not given back (a late job takes a new one), so on
    // a machine loaded by the whole suite the rate can fall below the
    // limit — 133 in the busiest 10 s was seen in a CI run. Alone, 199–200
    // (docs/queue.md); a limiter that throttles to half its rate or worse
    // fails here.
    assert!(
        (100..=220).contains(&in_ten),
        "at most {in_ten} starts in 10 s under a 20/s limit (want ≤ 220, and ≥ 100 even on a loaded machine)"
    );
    // Start times are claim times: a worker starved of CPU by the rest of
    // the suite (a browser, other clusters) claims jobs whose slots have
    // passed together — 50 to 88 in one second were seen on a loaded CI
    // machine, 21 alone; once, workers stalled for seconds and 172 came
    // back together (jobs that late now take new slots). An unenforced
    // limit starts all 260 within about a second; the 10-second count
    // above is the limit's measure.
    assert!(busiest <= 120, "{busiest} starts in one second under 20/s");
    // A limited job is claimed, sent to wait for its slot, claimed again:
    // the worker that ran it is its last `running` entry's.
    let names: HashSet<String> = records
        .iter()
        .filter_map(|r| {
            r.history
                .iter()
                .rev()
                .find(|h| h.state == TaskState::Running)
                .and_then(|h| h.detail.clone())
        })
        .collect();
    assert!(names.len() >= 3, "the work was not shared: {names:?}");
}

/// Runs `xylem ARGS --json` for a canvas command; its definition.
fn enqueue_canvas(cluster: &Cluster, args: &[String]) -> xylem_core::canvas::Canvas {
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("--json");
    let doc: serde_json::Value = serde_json::from_str(&cluster.xylem(&args)).unwrap();
    serde_json::from_value(doc["canvas"].clone()).unwrap()
}

/// The job id of the task node at `path`.
fn task_at(canvas: &xylem_core::canvas::Canvas, path: &[u32]) -> String {
    match canvas.node(path) {
        Some(xylem_core::canvas::Node::Task(c)) => c.id.clone(),
        other => panic!("no task at {path:?}: {other:?}"),
    }
}

/// Canvases outlive their client and `kill -9` of workers: a 100-member
/// chord and a 10-step chain, each enqueued by a `xylem` process that
/// exits at once; four workers race on the members, one is killed with
/// `kill -9` while they finish and another takes its place. The chord
/// calls back once, with all 100 results in member order; the chain's
/// last step runs with its own arguments and the step before's result.
pub async fn canvases_survive_their_client_and_kill_9(url: &str) {
    let cluster = Cluster::new(url).await;
    let opts = ["--lease", "1s", "--concurrency", "8"];
    let mut workers: Vec<Child> = (0..4)
        .map(|i| cluster.worker(&format!("canvas{i}"), &opts))
        .collect();
    // Every worker up before the canvases exist: on a loaded machine one
    // still compiling its plugins could miss every job (and the kill
    // below would then land on no running job).
    for i in 0..workers.len() {
        cluster.wait_started(&format!("canvas{i}"));
    }
    let mut chord_args = vec!["chord".to_owned()];
    chord_args.extend((0..100).map(|i| format!(r#"hello.sleep:{{"ms":{}}}"#, 300 + i % 7)));
    chord_args.extend(["--callback".to_owned(), "hello.echo".to_owned()]);
    let chord = enqueue_canvas(&cluster, &chord_args);
    let mut chain_args = vec!["chain".to_owned()];
    chain_args.extend((0..10).map(|_| r#"hello.sleep:{"ms":150}"#.to_owned()));
    let chain = enqueue_canvas(&cluster, &chain_args);

    // Mid-way through the members (four waves of 32) and the chain: the
    // first worker seen running one of them is killed at once (each job
    // sleeps 150 ms or more, so it is still running when the kill lands).
    let stores = open_stores(url).await;
    let ids: Vec<String> = chord
        .root
        .tasks(&[])
        .into_iter()
        .chain(chain.root.tasks(&[]))
        .map(|(_, node)| node.id.clone())
        .collect();
    let running_on: Vec<String> = (0..workers.len())
        .map(|i| xylem_core::store::running_detail(&format!("canvas{i}"), 1, 1))
        .collect();
    let waiting = Instant::now();
    let victim = 'running: loop {
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "no worker ran any of the canvases' jobs in 60 s"
        );
        for id in &ids {
            if let Some(r) = stores.results.get(id).await.unwrap()
                && r.state == TaskState::Running
                && let Some(detail) = r.history.last().and_then(|h| h.detail.as_deref())
                && let Some(i) = running_on.iter().position(|d| d == detail)
            {
                break 'running i;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    kill9(&mut workers[victim]);
    workers[victim] = cluster.worker("canvas-replacement", &opts);
    cluster.wait_started("canvas-replacement");

    let callback = task_at(&chord, &[100]);
    let last = task_at(&chain, &[9]);
    let started = Instant::now();
    let (called, ended) = loop {
        let a = stores.results.get(&callback).await.unwrap();
        let b = stores.results.get(&last).await.unwrap();
        if let (Some(a), Some(b)) = (&a, &b)
            && a.state.is_terminal()
            && b.state.is_terminal()
        {
            break (a.clone(), b.clone());
        }
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the canvases did not finish: callback {a:?}, last step {b:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for w in &mut workers {
        terminate(w);
    }
    assert_eq!(called.state, TaskState::Succeeded, "{called:?}");
    let expected: Vec<u64> = (0..100).map(|i| 300 + i % 7).collect();
    assert_eq!(called.result, Some(serde_json::json!(expected)));
    assert_eq!(ended.state, TaskState::Succeeded, "{ended:?}");
    assert_eq!(ended.result, Some(serde_json::json!(150)));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ended.args).unwrap(),
        serde_json::json!({"ms": 150, "result": 150})
    );
    // The kill landed on running work: some job ran twice.
    let mut ran_twice = 0;
    for (_, node) in chord
        .root
        .tasks(&[])
        .into_iter()
        .chain(chain.root.tasks(&[]))
    {
        if let Some(r) = stores.results.get(&node.id).await.unwrap() {
            ran_twice += usize::from(count(&r, TaskState::Running) > 1);
        }
    }
    assert!(
        ran_twice > 0,
        "the kill landed on no running job: the test proved nothing"
    );
}

/// The server goes away mid-run and comes back: workers log the outage,
/// reconnect, and finish every job exactly once.
pub async fn server_restart(url: &str, restart: impl FnOnce()) {
    let cluster = Cluster::new(url).await;
    let ids = cluster.enqueue_sleeps(300, 20).await;
    let opts = ["--lease", "3s", "--concurrency", "8"];
    let mut a = cluster.worker("a", &opts);
    let mut b = cluster.worker("b", &opts);
    tokio::time::sleep(Duration::from_millis(600)).await;
    restart();
    let records = cluster.wait_all(&ids, Duration::from_secs(300)).await;
    terminate(&mut a);
    terminate(&mut b);
    assert_each_succeeded_once(&records);
    let logs = std::fs::read_to_string(cluster.log_path("a")).unwrap()
        + &std::fs::read_to_string(cluster.log_path("b")).unwrap();
    assert!(
        logs.contains("retrying") || logs.contains("cannot"),
        "the workers did not notice the outage:\n{logs}"
    );
}

/// Three `xylem beat` processes on one store and an every-second schedule
/// for 20 s: each second's tick is enqueued exactly once (its job id is
/// the tick's), with no gap. Half-way, the beat that fired last — the one
/// a lock-based beat would call the holder — is killed with `kill -9`:
/// still no gap, since the others never stopped looking.
pub async fn three_beats_fire_each_tick_once(url: &str) {
    let cluster = Cluster::new(url).await;
    let name = "every-second";
    cluster.xylem(&[
        "schedule",
        "add",
        name,
        "--task",
        "hello.echo",
        "--every",
        "1s",
    ]);
    let beat = |i: usize| {
        let log = std::fs::File::create(cluster.log_path(&format!("beat{i}"))).unwrap();
        cluster
            .command()
            .arg("beat")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let mut beats: Vec<Child> = (0..3).map(beat).collect();
    tokio::time::sleep(Duration::from_secs(10)).await;
    // The holder: whichever beat logged the latest fire.
    let last_fire = |i: usize| {
        let log = std::fs::read_to_string(cluster.log_path(&format!("beat{i}"))).unwrap();
        log.lines()
            .filter(|l| l.contains("fired"))
            .filter_map(|l| {
                l.split("tick=")
                    .nth(1)?
                    .split_whitespace()
                    .next()
                    .map(str::to_owned)
            })
            .max()
    };
    let holder = (0..3).max_by_key(|i| last_fire(*i)).unwrap();
    assert!(last_fire(holder).is_some(), "no beat fired in 10 s");
    kill9(&mut beats[holder]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let out = cluster
        .command()
        .args(["schedule", "disable", name])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, b) in beats.iter_mut().enumerate() {
        if i != holder {
            terminate(b);
        }
    }

    // Every job must be one tick's (its id is derived from the tick: two
    // jobs for one tick would be one id), and the ticks they are for must
    // run without a gap from the first. (The schedule's `last_run` may
    // lag its last job by one tick: a beat that fired it lost the race to
    // move the schedule on against the `disable` above.)
    let stores = open_stores(url).await;
    let schedule = stores.schedules.get_schedule(name).await.unwrap().unwrap();
    let jobs = stores
        .results
        .list(&TaskFilter {
            task: Some("hello.echo".to_owned()),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    let by_id: std::collections::HashMap<String, i64> = (1..=jobs.len() as i64 + 60)
        .map(|k| {
            let tick = schedule.anchor + k * 1000;
            (xylem_core::schedule::beat::tick_job_id(name, tick), k)
        })
        .collect();
    let mut fired: Vec<i64> = jobs
        .iter()
        .map(|j| {
            *by_id
                .get(&j.id)
                .unwrap_or_else(|| panic!("job {} is no tick's", j.id))
        })
        .collect();
    fired.sort_unstable();
    let ticks: Vec<i64> = (1..=fired.last().copied().unwrap_or(0)).collect();
    assert!(ticks.len() >= 17, "{} ticks fired in 20 s", ticks.len());
    assert_eq!(
        fired, ticks,
        "each tick from the first to the last enqueued exactly once, no gap"
    );
    assert!(
        schedule
            .last_run
            .is_some_and(|last| last >= schedule.anchor + (ticks.len() as i64 - 1) * 1000)
    );
    eprintln!(
        "three beats, 20 s, beat {holder} killed at 10 s: {} ticks, each enqueued once, no gap",
        ticks.len()
    );
}

/// Removes what a scenario left on a shared server or disk: the Redis key
/// prefix, the PostgreSQL schema, the SQLite file's temp folder.
pub async fn remove_data(url: &str) {
    use crate::cleanup::Cleanup;
    if url.starts_with("redis://") {
        xylem_redis::RedisStore::connect(url)
            .await
            .unwrap()
            .cleanup_later()
            .await;
    } else if url.starts_with("sqlite://") {
        xylem_sqlite::SqliteStore::open_url(url)
            .unwrap()
            .cleanup_later()
            .await;
    } else {
        xylem_postgres::PostgresStore::connect(url)
            .await
            .unwrap()
            .cleanup_later()
            .await;
    }
}

/// Waits (up to 90 s) until run `id` exists and is `what` by `done`.
pub async fn wait_for_run(
    stores: &Stores,
    id: &str,
    what: &str,
    done: fn(&xylem_core::workflow::Run) -> bool,
) -> xylem_core::workflow::Run {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = stores.workflows.get_run(id).await.unwrap();
        if let Some(run) = now.as_ref().filter(|r| done(r)) {
            return run.clone();
        }
        assert!(Instant::now() < deadline, "{id} never {what}: {now:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Event waits and child runs across processes: `order.approve` runs
/// on worker processes, waits for an `approval` event that a separate
/// `xylem workflow signal` process sends — every worker killed with
/// `kill -9` during the wait and restarted — then ships the order as a
/// child `order.express` run. A second run is never approved: its wait's
/// timeout fires from the store, on the restarted workers.
pub async fn approval_and_child_runs_across_processes(url: &str) {
    let cluster = Cluster::new(url).await;
    cluster.push("order");
    cluster.push("order-workflow");
    let opts = ["--lease", "2s", "--concurrency", "4"];
    let start_workers = |round: u32| cluster.workers(&format!("approve{round}-"), 2, &opts);
    let start =
        |input: &str| cluster.xylem(&["workflow", "start", "order.approve", "--input", input]);
    let mut workers = start_workers(0);
    let approved = start(r#"{"id":"A-1","amount_cents":1200,"approve_within_ms":120000}"#);
    let declined = start(r#"{"id":"A-2","amount_cents":1300,"approve_within_ms":4000}"#);
    let stores = open_stores(url).await;
    use xylem_core::workflow::{Call, RunState};
    let waiting = |r: &xylem_core::workflow::Run| {
        r.state == RunState::Waiting
            && r.history
                .iter()
                .any(|c| matches!(c, Call::AwaitEvent { .. }))
    };
    wait_for_run(&stores, &approved, "waited for its approval", waiting).await;
    wait_for_run(&stores, &declined, "waited for its approval", waiting).await;
    // Every worker killed during the waits; others take over.
    for w in &mut workers {
        kill9(w);
    }
    let mut workers = start_workers(1);
    cluster.xylem(&[
        "workflow",
        "signal",
        &approved,
        "approval",
        "--payload",
        r#"{"by":"ada"}"#,
    ]);
    let done = wait_for_run(&stores, &approved, "finished", |r| r.state.is_final()).await;
    let timed_out = wait_for_run(&stores, &declined, "finished", |r| r.state.is_final()).await;
    for w in &mut workers {
        terminate(w);
    }
    assert_eq!(done.state, RunState::Succeeded, "{done:#?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(done.result.as_deref().unwrap()).unwrap(),
        serde_json::json!({
            "order": "A-1",
            "approved_by": "ada",
            "shipped": {"order": "A-1", "receipt": "rcpt-A-1", "shipped": true},
        })
    );
    assert_eq!(timed_out.state, RunState::Succeeded, "{timed_out:#?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(timed_out.result.as_deref().unwrap()).unwrap(),
        serde_json::json!({"order": "A-2", "approved": false})
    );
    assert!(
        !timed_out
            .history
            .iter()
            .any(|c| matches!(c, Call::Child { .. })),
        "an unapproved order starts no child: {:#?}",
        timed_out.history
    );
    // The child: one run, naming its parent, each activity once.
    let (seq, call) = done
        .history
        .iter()
        .enumerate()
        .find(|(_, c)| matches!(c, Call::Child { .. }))
        .expect("the approved order started a child run");
    let child_id = xylem_core::workflow::step_job_id(&done, seq as u32, call);
    let child = stores
        .workflows
        .get_run(&child_id)
        .await
        .unwrap()
        .expect("the child run exists");
    assert_eq!(child.state, RunState::Succeeded, "{child:#?}");
    assert_eq!(child.workflow, "order.express");
    assert_eq!(
        child.parent.as_ref().map(|p| (p.run.as_str(), p.seq)),
        Some((approved.as_str(), seq as u32))
    );
    let mut activities = Vec::new();
    for (seq, call) in child.history.iter().enumerate() {
        if let Call::Activity { task, .. } = call {
            let job = xylem_core::workflow::step_job_id(&child, seq as u32, call);
            let record = stores.results.get(&job).await.unwrap().unwrap();
            assert_eq!(
                count(&record, TaskState::Succeeded),
                1,
                "{task} succeeded once"
            );
            activities.push(task.clone());
        }
    }
    assert_eq!(activities, ["order.validate", "order.charge", "order.ship"]);
}

/// The seed's `order.process` workflow across processes: workers killed
/// with `kill -9` during its durable sleep, and again during an activity;
/// restarted, they finish the run exactly once, each activity succeeding
/// once.
pub async fn order_workflow_survives_kill_9(url: &str) {
    let cluster = Cluster::new(url).await;
    cluster.push("order");
    cluster.push("order-workflow");
    let opts = ["--lease", "2s", "--concurrency", "4"];
    let start_workers = |round: u32| cluster.workers(&format!("w{round}-"), 2, &opts);
    let mut workers = start_workers(0);
    let id = cluster.xylem(&[
        "workflow",
        "start",
        "order.process",
        "--input",
        r#"{"id":"K-9","amount_cents":990,"ship_after_ms":3000,"ship_work_ms":3000}"#,
    ]);
    let stores = open_stores(url).await;
    let wait_for = |what, done| wait_for_run(&stores, &id, what, done);
    use xylem_core::workflow::Call;
    // Killed during the durable sleep: every worker, at once.
    wait_for("slept", |r| {
        r.history.iter().any(|c| matches!(c, Call::Sleep { .. }))
            && r.state == xylem_core::workflow::RunState::Waiting
    })
    .await;
    for w in &mut workers {
        kill9(w);
    }
    let mut workers = start_workers(1);
    // Killed during the shipment (3 s of work): every worker again.
    let shipping = wait_for("shipping", |r| {
        r.history
            .iter()
            .any(|c| matches!(c, Call::Activity { task, .. } if task == "order.ship"))
    })
    .await;
    let (seq, call) = shipping
        .history
        .iter()
        .enumerate()
        .find(|(_, c)| matches!(c, Call::Activity { task, .. } if task == "order.ship"))
        .unwrap();
    let ship_job = xylem_core::workflow::step_job_id(&shipping, seq as u32, call);
    let deadline = Instant::now() + Duration::from_secs(60);
    while stores
        .results
        .get(&ship_job)
        .await
        .unwrap()
        .is_none_or(|r| r.state != TaskState::Running)
    {
        assert!(Instant::now() < deadline, "the shipment never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in &mut workers {
        kill9(w);
    }
    let mut workers = start_workers(2);
    let done = wait_for("finished", |r| r.state.is_final()).await;
    for w in &mut workers {
        terminate(w);
    }
    assert_eq!(
        done.state,
        xylem_core::workflow::RunState::Succeeded,
        "{done:#?}"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(done.result.as_deref().unwrap()).unwrap(),
        serde_json::json!({"order": "K-9", "receipt": "rcpt-K-9", "shipped": true})
    );
    let mut activities = Vec::new();
    for (seq, call) in done.history.iter().enumerate() {
        if let Call::Activity { task, .. } = call {
            let job = xylem_core::workflow::step_job_id(&done, seq as u32, call);
            let record = stores.results.get(&job).await.unwrap().unwrap();
            assert_eq!(
                record.state,
                TaskState::Succeeded,
                "{task}: {:#?}",
                record.history
            );
            assert_eq!(
                count(&record, TaskState::Succeeded),
                1,
                "{task} succeeded once"
            );
            activities.push(task.clone());
        }
    }
    assert_eq!(activities, ["order.validate", "order.charge", "order.ship"]);
    let ship = stores.results.get(&ship_job).await.unwrap().unwrap();
    eprintln!(
        "order.process through two kill -9 of every worker: succeeded once; the shipment ran {} time(s)",
        count(&ship, TaskState::Running)
    );
}
