//! The worker's job path, in process, on every store: each edge of its
//! state machine (a redelivered success, a replay of an expired record, a
//! task pushed late, store outages during claim and completion, a lease
//! kept through a long run, shutdown with jobs in flight), written once
//! with [`worker_case!`](crate::worker_case) and run against memory,
//! SQLite, Redis and PostgreSQL.
//!
//! Task code is native ([`NativeTasks`]): the point here is the worker and
//! the real store, not the sandbox (which `sandbox.rs` covers).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use xylem_core::store::{
    Broker, Completed, Completion, DeadFilter, Delivery, RunFilter, StoreError, StoreResult,
    Stores, WorkflowStore,
};
use xylem_core::workflow::engine::{RUN_HEADER, STEP_HEADER};
use xylem_core::workflow::{ActivityOptions, Call, Run, RunState, StepOutcome};
use xylem_core::{
    ChildEnqueueError, ChildQuota, Envelope, Executor, Failure, FailureKind, HostCalls, Outcome,
    ResolveError, Resolved, RunRequest, TaskRecord, TaskRegistry, TaskSpec, TaskState, Transition,
    Usage, Worker, WorkerConfig, WorkerStats,
};

// ---- native task code ----------------------------------------------------

/// Native tasks, counting runs per job id.
#[derive(Debug, Default)]
pub(crate) struct NativeTasks {
    /// Runs per job id.
    pub(crate) runs: Mutex<HashMap<String, u32>>,
    /// `late` is only known once this is set.
    pub(crate) late_pushed: AtomicBool,
    /// `switch` fails while this is set.
    pub(crate) failing: AtomicBool,
    /// How many `resolve` calls found no task.
    pub(crate) unknown: AtomicU32,
    /// `exclusive` jobs running now and at most, per tenant header.
    pub(crate) exclusive: Mutex<HashMap<String, (u32, u32)>>,
}

impl NativeTasks {
    /// How many times job `id` ran.
    pub(crate) fn runs_of(&self, id: &str) -> u32 {
        self.runs.lock().unwrap().get(id).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
struct NativeExecutor {
    tasks: Arc<NativeTasks>,
}

#[async_trait]
impl Executor for NativeExecutor {
    async fn execute(&self, request: RunRequest, host: Arc<dyn HostCalls>) -> Outcome {
        *self
            .tasks
            .runs
            .lock()
            .unwrap()
            .entry(request.info.id.clone())
            .or_default() += 1;
        let args: serde_json::Value = serde_json::from_str(&request.args).unwrap_or_default();
        match request.info.name.as_str() {
            "sleep" => {
                let ms = args["ms"].as_u64().unwrap_or(0);
                let until = Instant::now() + Duration::from_millis(ms);
                while Instant::now() < until {
                    if request.cancel.is_cancelled() {
                        return Outcome::failure(
                            Failure::new(FailureKind::Cancelled, "cancelled"),
                            Usage::default(),
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Outcome::success(args, Usage::default())
            }
            // Enqueues copies of itself until refused; returns how many.
            "bomb" => {
                let mut made = 0u64;
                let refusal = loop {
                    match host
                        .enqueue(&request.info, "bomb", &request.args, Default::default())
                        .await
                    {
                        Ok(_) => made += 1,
                        Err(e) => break e,
                    }
                };
                assert!(
                    matches!(refusal, ChildEnqueueError::QuotaExceeded(_)),
                    "{refusal:?}"
                );
                Outcome::success(serde_json::json!({ "made": made }), Usage::default())
            }
            // Reports the limits it runs under.
            "limits" => Outcome::success(
                serde_json::json!({
                    "fuel": request.limits.fuel,
                    "memory": request.limits.max_memory,
                }),
                Usage::default(),
            ),
            // Enqueues `limits` once, then tries every bad enqueue and
            // reports each refusal's kind.
            "spawn" => {
                let child = host
                    .enqueue(&request.info, "limits", "{}", Default::default())
                    .await
                    .unwrap()
                    .id;
                let bad_queue = xylem_core::ChildOptions {
                    queue: Some("no spaces allowed".to_owned()),
                    ..Default::default()
                };
                let kinds: Vec<String> = [
                    host.enqueue(&request.info, "no-such-task", "{}", Default::default())
                        .await,
                    host.enqueue(&request.info, "limits", "{}", bad_queue).await,
                    host.enqueue(
                        &request.info,
                        "counted",
                        r#"{"count":"three"}"#,
                        Default::default(),
                    )
                    .await,
                ]
                .into_iter()
                .map(|r| match r {
                    Ok(done) => format!("enqueued {}", done.id),
                    Err(ChildEnqueueError::QuotaExceeded(m)) => format!("quota: {m}"),
                    Err(ChildEnqueueError::UnknownTask(m)) => format!("unknown: {m}"),
                    Err(ChildEnqueueError::InvalidArguments(m)) => format!("invalid: {m}"),
                    Err(ChildEnqueueError::Unavailable(m)) => format!("unavailable: {m}"),
                })
                .collect();
                Outcome::success(
                    serde_json::json!({ "child": child, "refusals": kinds }),
                    Usage::default(),
                )
            }
            "exclusive" => {
                // Counts how many of its tenant's run at this very moment.
                let tenant = request
                    .info
                    .headers
                    .iter()
                    .find(|(h, _)| h == "tenant")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                {
                    let mut running = self.tasks.exclusive.lock().unwrap();
                    let (now, most) = running.entry(tenant.clone()).or_default();
                    *now += 1;
                    *most = (*most).max(*now);
                }
                tokio::time::sleep(Duration::from_millis(80)).await;
                self.tasks
                    .exclusive
                    .lock()
                    .unwrap()
                    .get_mut(&tenant)
                    .unwrap()
                    .0 -= 1;
                Outcome::success(args, Usage::default())
            }
            // A number plus one: the number is the input whole, or under
            // "result" or "n".
            "inc" => {
                let n = args
                    .as_i64()
                    .or_else(|| args["result"].as_i64())
                    .or_else(|| args["n"].as_i64())
                    .unwrap_or(0);
                Outcome::success(serde_json::json!(n + 1), Usage::default())
            }
            // The sum of a list of numbers (a group's results).
            "sum" => {
                let list = args.as_array().cloned().unwrap_or_default();
                let total: i64 = list.iter().filter_map(serde_json::Value::as_i64).sum();
                Outcome::success(serde_json::json!(total), Usage::default())
            }
            "fail" => Outcome::failure(
                Failure::new(FailureKind::PluginError, "always fails"),
                Usage::default(),
            ),
            // Enqueues one `echo` child with every option an enqueue
            // takes, twice (the second is a unique duplicate).
            "spawn-options" => {
                let options = || xylem_core::ChildOptions {
                    queue: Some("children".to_owned()),
                    priority: Some(3),
                    delay_ms: Some(10),
                    max_retries: Some(7),
                    expires_ms: Some(3_600_000),
                    options: xylem_core::JobOptions {
                        retry_backoff_ms: Some(5),
                        retry_backoff_max_ms: Some(50),
                        retry_jitter: Some(false),
                        soft_time_limit_ms: Some(1000),
                        hard_time_limit_ms: Some(2000),
                        fuel: Some(1_000_000),
                        max_memory_bytes: Some(1 << 20),
                        visibility_timeout_ms: Some(5000),
                        ignore_result: Some(true),
                        link: Some(xylem_core::callback::Callback::new("echo")),
                        link_error: Some(xylem_core::callback::Callback::new("echo")),
                        child_quota: Default::default(),
                    },
                    unique: Some(xylem_core::unique::Unique {
                        key: Some(format!("child-of-{}", request.info.id)),
                        ttl: Duration::from_secs(60),
                    }),
                };
                let first = host
                    .enqueue(&request.info, "echo", r#"{"n":1}"#, options())
                    .await
                    .unwrap();
                let again = host
                    .enqueue(&request.info, "echo", r#"{"n":1}"#, options())
                    .await
                    .unwrap();
                Outcome::success(
                    serde_json::json!({
                        "first": first.id, "first_duplicate": first.duplicate,
                        "again": again.id, "again_duplicate": again.duplicate,
                    }),
                    Usage::default(),
                )
            }
            "switch" if self.tasks.failing.load(Ordering::Acquire) => Outcome::failure(
                Failure::new(FailureKind::PluginError, "switched off"),
                Usage::default(),
            ),
            _ => {
                // Suspend once, so other jobs run on this thread meanwhile:
                // the line below must still be logged in this job's span.
                tokio::task::yield_now().await;
                tracing::info!(id = %request.info.id, "native task ran");
                Outcome::success(args, Usage::default())
            }
        }
    }
}

/// The [`TaskRegistry`] over [`NativeTasks`].
#[derive(Debug, Clone)]
pub(crate) struct NativeRegistry(pub Arc<NativeTasks>);

#[async_trait]
impl TaskRegistry for NativeRegistry {
    async fn refresh(&self) -> Result<(), String> {
        Ok(())
    }

    async fn resolve(&self, task: &str, _pinned: Option<&str>) -> Result<Resolved, ResolveError> {
        let tasks = &self.0;
        let known = matches!(
            task,
            "echo"
                | "sleep"
                | "switch"
                | "bomb"
                | "limits"
                | "spawn"
                | "counted"
                | "limited"
                | "per-tenant"
                | "exclusive"
                | "fail"
                | "inc"
                | "sum"
                | "spawn-options"
                | "expiring"
        ) || (task == "late" && tasks.late_pushed.load(Ordering::Acquire));
        if !known {
            tasks.unknown.fetch_add(1, Ordering::Relaxed);
            return Err(ResolveError::UnknownTask(format!(
                "no plugin provides task `{task}`"
            )));
        }
        Ok(Resolved {
            executor: Arc::new(NativeExecutor {
                tasks: tasks.clone(),
            }),
            spec: {
                let mut spec = TaskSpec::new(task);
                spec.options.rate_limit = match task {
                    "limited" => Some("20/s".to_owned()),
                    "per-tenant" => Some("5/s by tenant".to_owned()),
                    _ => None,
                };
                if task == "exclusive" {
                    spec.concurrency = Some("2 by tenant".to_owned());
                }
                if task == "expiring" {
                    spec.options.expires_ms = Some(EXPIRING_MS);
                }
                spec
            },
            version: "native".to_owned(),
        })
    }
}

// ---- a store that fails on demand ----------------------------------------

/// Which broker calls fail while an outage lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outage {
    /// `claim`.
    Claim,
    /// `complete` and `extend_many` (result write, ack, lease extension).
    Complete,
}

/// A real broker that answers [`StoreError::Unavailable`] to some calls
/// until a given time: a store outage, on any adapter.
pub(crate) struct FaultyBroker {
    inner: Arc<dyn Broker>,
    outage: Mutex<Option<(Outage, Instant)>>,
}

impl std::fmt::Debug for FaultyBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyBroker").finish_non_exhaustive()
    }
}

impl FaultyBroker {
    /// Wraps the broker of `stores`; returns the stores using the wrapper.
    pub(crate) fn wrap(stores: &Stores) -> (Arc<Self>, Stores) {
        let faulty = Arc::new(Self {
            inner: stores.broker.clone(),
            outage: Mutex::new(None),
        });
        let mut wrapped = stores.clone();
        wrapped.broker = faulty.clone();
        (faulty, wrapped)
    }

    /// `what` fails for `length` from now.
    pub(crate) fn fail(&self, what: Outage, length: Duration) {
        *self.outage.lock().unwrap() = Some((what, Instant::now() + length));
    }

    fn check(&self, call: Outage) -> StoreResult<()> {
        match *self.outage.lock().unwrap() {
            Some((what, until)) if what == call && Instant::now() < until => {
                Err(StoreError::unavailable("injected outage"))
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Broker for FaultyBroker {
    async fn enqueue(&self, envelopes: &[Envelope]) -> StoreResult<()> {
        self.inner.enqueue(envelopes).await
    }
    async fn claim(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        worker: &str,
    ) -> StoreResult<Vec<Delivery>> {
        self.check(Outage::Claim)?;
        self.inner.claim(queues, max, lease, worker).await
    }
    async fn complete(&self, completions: &[Completion]) -> StoreResult<Vec<Completed>> {
        self.check(Outage::Complete)?;
        self.inner.complete(completions).await
    }
    async fn extend_many(&self, leases: &[(String, u64)], by: Duration) -> StoreResult<Vec<bool>> {
        self.check(Outage::Complete)?;
        self.inner.extend_many(leases, by).await
    }
    async fn wait_for_jobs(&self, timeout: Duration) {
        self.inner.wait_for_jobs(timeout).await;
    }
}

// ---- helpers -------------------------------------------------------------

/// A worker running in the background.
#[derive(Debug)]
pub(crate) struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Arc<WorkerStats>>,
}

impl Running {
    /// Stops it (graceful shutdown) and returns its counters.
    pub(crate) async fn stop(mut self) -> Arc<WorkerStats> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.await.unwrap()
    }
}

/// A test worker's configuration: fast polls, a short lease.
pub(crate) fn config(name: &str) -> WorkerConfig {
    WorkerConfig {
        concurrency: 4,
        lease: Duration::from_secs(2),
        grace: Duration::from_secs(5),
        poll_interval: Duration::from_millis(20),
        refresh_interval: Duration::from_millis(100),
        name: name.to_owned(),
        result_ttl: None,
        ..WorkerConfig::default()
    }
}

/// Starts a worker over `stores` running `tasks`.
pub(crate) fn start(stores: &Stores, tasks: &Arc<NativeTasks>, config: WorkerConfig) -> Running {
    let worker = Worker::new(
        stores.clone(),
        Arc::new(NativeRegistry(tasks.clone())),
        config,
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    Running {
        stop: Some(stop),
        handle,
    }
}

/// Enqueues `task` with `args` (record and queue, one step).
pub(crate) async fn enqueue(stores: &Stores, task: &str, args: &str) -> Envelope {
    let mut e = Envelope::new(task, args);
    e.max_retries = 0;
    stores
        .broker
        .enqueue(std::slice::from_ref(&e))
        .await
        .unwrap();
    e
}

/// Waits until `id`'s record is in a terminal state.
pub(crate) async fn wait_terminal(stores: &Stores, id: &str, within: Duration) -> TaskRecord {
    let deadline = Instant::now() + within;
    loop {
        if let Some(record) = stores.results.get(id).await.unwrap()
            && record.state.is_terminal()
        {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} did not finish within {within:?}: {:?}",
            stores.results.get(id).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn queue_empty(stores: &Stores) -> bool {
    stores
        .statistics
        .queue_stats()
        .await
        .unwrap()
        .iter()
        .all(|q| q.ready + q.delayed + q.running + q.dead == 0)
}

// ---- the suite -----------------------------------------------------------

worker_case!(worker_runs_jobs_and_records_their_results, |stores| {
    let tasks = Arc::new(NativeTasks::default());
    let worker = start(&stores, &tasks, config("w1"));
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(enqueue(&stores, "echo", &format!("{{\"n\":{i}}}")).await.id);
    }
    for (i, id) in ids.iter().enumerate() {
        let record = wait_terminal(&stores, id, Duration::from_secs(20)).await;
        assert_eq!(record.state, TaskState::Succeeded);
        assert_eq!(record.result, Some(serde_json::json!({ "n": i })));
        let states: Vec<TaskState> = record.history.iter().map(|h| h.state).collect();
        assert_eq!(
            states,
            vec![TaskState::Queued, TaskState::Running, TaskState::Succeeded]
        );
        assert_eq!(tasks.runs_of(id), 1);
    }
    let stats = worker.stop().await;
    assert_eq!(stats.succeeded.load(Ordering::Relaxed), 50);
    assert!(queue_empty(&stores).await);
});

// Hole 1: a job already recorded as succeeded (its ack was lost) comes
// back when its lease runs out; it must be removed, never run again.
worker_case!(worker_never_reruns_a_redelivered_success, |stores| {
    let e = enqueue(&stores, "echo", "{}").await;
    let d = stores
        .broker
        .claim(&[], 1, Duration::from_millis(200), "crashed-worker")
        .await
        .unwrap();
    assert_eq!(d.len(), 1);
    // The crashed worker wrote its result, then died before acking.
    stores
        .results
        .transition(&e.id, Transition::to(TaskState::Succeeded, 1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tasks = Arc::new(NativeTasks::default());
    let worker = start(&stores, &tasks, config("w2"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !queue_empty(&stores).await {
        assert!(
            Instant::now() < deadline,
            "the redelivered job stayed queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    worker.stop().await;
    assert_eq!(tasks.runs_of(&e.id), 0, "a succeeded job ran again");
    let record = stores.results.get(&e.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Succeeded);
});

// Hole 2: replaying a dead job whose record expired (`result_ttl`) runs
// it once, records it anew, and does not redeliver it forever.
worker_case!(worker_runs_a_replayed_job_whose_record_expired, |stores| {
    let tasks = Arc::new(NativeTasks::default());
    tasks.failing.store(true, Ordering::Release);
    let mut cfg = config("w3");
    cfg.result_ttl = Some(Duration::from_secs(1));
    let worker = start(&stores, &tasks, cfg);
    let e = enqueue(&stores, "switch", "{}").await;
    let record = wait_terminal(&stores, &e.id, Duration::from_secs(10)).await;
    assert_eq!(record.state, TaskState::Dead);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        stores.results.get(&e.id).await.unwrap().is_none(),
        "the dead record expired"
    );
    tasks.failing.store(false, Ordering::Release);
    let filter = DeadFilter {
        ids: vec![e.id.clone()],
        queue: None,
    };
    assert_eq!(
        stores
            .dead_letters
            .replay_dead(&filter, Duration::ZERO)
            .await
            .unwrap(),
        vec![e.id.clone()]
    );
    let record = wait_terminal(&stores, &e.id, Duration::from_secs(10)).await;
    assert_eq!(record.state, TaskState::Succeeded);
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await;
    assert_eq!(tasks.runs_of(&e.id), 2, "once dead, once after the replay");
    assert!(queue_empty(&stores).await);
});

// Hole 3: a job enqueued just before its plugin is loaded waits for it
// (the registry is refreshed at once, the job retried with a delay)
// instead of being dead-lettered as an unknown task.
worker_case!(worker_waits_for_a_task_pushed_late, |stores| {
    let tasks = Arc::new(NativeTasks::default());
    let worker = start(&stores, &tasks, config("w4"));
    let e = enqueue(&stores, "late", "{\"x\":1}").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(tasks.unknown.load(Ordering::Relaxed) >= 1);
    tasks.late_pushed.store(true, Ordering::Release);
    let record = wait_terminal(&stores, &e.id, Duration::from_secs(15)).await;
    assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
    assert!(
        record.history.iter().any(|h| h.state == TaskState::Queued
            && h.detail
                .as_deref()
                .is_some_and(|d| d.contains("looking again"))),
        "{:?}",
        record.history
    );
    assert_eq!(record.attempt, 1, "waiting for a plugin uses no attempt");
    let stats = worker.stop().await;
    assert!(stats.deferred.load(Ordering::Relaxed) >= 1);
    assert_eq!(stats.dead.load(Ordering::Relaxed), 0);
});

// A task no plugin ever provides ends dead, as `unknown-task`, after its
// looks run out (here: the envelope starts with all but one used).
worker_case!(
    worker_dead_letters_a_task_no_plugin_ever_provides,
    |stores| {
        let tasks = Arc::new(NativeTasks::default());
        let worker = start(&stores, &tasks, config("w5"));
        let mut e = Envelope::new("never", "{}");
        e.unresolved = xylem_core::worker::MAX_UNRESOLVED;
        stores
            .broker
            .enqueue(std::slice::from_ref(&e))
            .await
            .unwrap();
        let record = wait_terminal(&stores, &e.id, Duration::from_secs(10)).await;
        worker.stop().await;
        assert_eq!(record.state, TaskState::Dead);
        let error = record.error.expect("an error");
        assert_eq!(error.kind, FailureKind::UnknownTask);
        let dead = stores
            .dead_letters
            .dead_jobs(&DeadFilter::default(), 10)
            .await
            .unwrap();
        assert_eq!(dead.len(), 1);
        assert!(
            dead[0].reason.contains("unknown-task"),
            "{}",
            dead[0].reason
        );
    }
);

// A store outage while claiming: the worker backs off and carries on.
worker_case!(worker_rides_out_an_outage_while_claiming, |stores| {
    let (faulty, wrapped) = FaultyBroker::wrap(&stores);
    faulty.fail(Outage::Claim, Duration::from_millis(1500));
    let tasks = Arc::new(NativeTasks::default());
    let worker = start(&wrapped, &tasks, config("w6"));
    let e = enqueue(&stores, "echo", "{}").await;
    let record = wait_terminal(&stores, &e.id, Duration::from_secs(15)).await;
    assert_eq!(record.state, TaskState::Succeeded);
    worker.stop().await;
    assert_eq!(tasks.runs_of(&e.id), 1);
});

// Hole 7: a job that finishes during an outage longer than the old
// five retries (~1.6 s) keeps its result: the worker retries the
// completion while it holds the lease, and the job never runs again.
worker_case!(worker_keeps_a_result_through_a_long_outage, |stores| {
    let (faulty, wrapped) = FaultyBroker::wrap(&stores);
    let tasks = Arc::new(NativeTasks::default());
    let mut cfg = config("w7");
    cfg.lease = Duration::from_secs(6);
    let worker = start(&wrapped, &tasks, cfg);
    let e = enqueue(&stores, "sleep", "{\"ms\":300}").await;
    // Let the worker claim it, then take the store away before it ends.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tasks.runs_of(&e.id) == 0 {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    faulty.fail(Outage::Complete, Duration::from_millis(3000));
    let record = wait_terminal(&stores, &e.id, Duration::from_secs(15)).await;
    assert_eq!(record.state, TaskState::Succeeded);
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await;
    assert_eq!(tasks.runs_of(&e.id), 1, "the result was thrown away");
    assert!(queue_empty(&stores).await);
});

/// A real workflow store whose run reads fail — as an outage (transient)
/// or for good — for a given time from the first read.
struct RefusingRuns {
    inner: Arc<dyn WorkflowStore>,
    length: Duration,
    first_read: std::sync::OnceLock<Instant>,
    transient: bool,
}

impl RefusingRuns {
    /// `stores` with run reads failing for `length` from the first one (a
    /// job's end being delivered), so a slow setup does not shorten it.
    fn wrap(stores: &Stores, length: Duration, transient: bool) -> Stores {
        let mut wrapped = stores.clone();
        wrapped.workflows = Arc::new(Self {
            inner: stores.workflows.clone(),
            length,
            first_read: std::sync::OnceLock::new(),
            transient,
        });
        wrapped
    }
}

impl std::fmt::Debug for RefusingRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusingRuns").finish_non_exhaustive()
    }
}

#[async_trait]
impl WorkflowStore for RefusingRuns {
    async fn put_run(&self, run: &Run) -> StoreResult<Option<u64>> {
        self.inner.put_run(run).await
    }
    async fn put_runs(&self, runs: &[Run]) -> StoreResult<Vec<Option<u64>>> {
        self.inner.put_runs(runs).await
    }
    async fn get_run(&self, id: &str) -> StoreResult<Option<Run>> {
        self.inner.get_run(id).await
    }
    async fn get_runs(&self, ids: &[String]) -> StoreResult<Vec<Option<Run>>> {
        if self.first_read.get_or_init(Instant::now).elapsed() < self.length {
            return Err(if self.transient {
                StoreError::unavailable("injected outage: runs cannot be read")
            } else {
                StoreError::backend("injected: runs cannot be read")
            });
        }
        self.inner.get_runs(ids).await
    }
    async fn list_runs(&self, filter: &RunFilter) -> StoreResult<Vec<Run>> {
        self.inner.list_runs(filter).await
    }
    async fn due_runs(&self, now: i64, limit: usize) -> StoreResult<Vec<Run>> {
        self.inner.due_runs(now, limit).await
    }
}

/// A run `id` waiting on activity 0, written; and that activity's job,
/// enqueued (`echo` of `{"n":7}`).
async fn waiting_activity(stores: &Stores, id: &str) -> Envelope {
    let mut run = Run::new(id, "w", "v1", "{}", xylem_core::time::now_ms());
    run.state = RunState::Waiting;
    run.history.push(Call::Activity {
        task: "echo".to_owned(),
        args: "{}".to_owned(),
        options: ActivityOptions::default(),
    });
    stores.workflows.put_run(&run).await.unwrap().unwrap();
    let mut e = Envelope::new("echo", r#"{"n":7}"#);
    e.max_retries = 0;
    e.headers = vec![
        (RUN_HEADER.to_owned(), id.to_owned()),
        (STEP_HEADER.to_owned(), "0".to_owned()),
    ];
    stores
        .broker
        .enqueue(std::slice::from_ref(&e))
        .await
        .unwrap();
    e
}

/// Waits until `tasks` has run job `id`.
async fn wait_ran(tasks: &NativeTasks, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while tasks.runs_of(id) == 0 {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the `echo` activity of a fresh waiting run on `stores` with the
/// runs' reads failing (an outage) for `outage`, the worker leasing for
/// `lease`: checks the job is not marked done while its run lacks its
/// end, then that both end; how many times the job ran.
async fn activity_through_an_outage(stores: &Stores, outage: Duration, lease: Duration) -> u32 {
    let wrapped = RefusingRuns::wrap(stores, outage, true);
    let tasks = Arc::new(NativeTasks::default());
    let mut cfg = config("w7w");
    cfg.lease = lease;
    let worker = start(&wrapped, &tasks, cfg);
    let e = waiting_activity(stores, "outage-run").await;
    wait_ran(&tasks, &e.id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let record = stores.results.get(&e.id).await.unwrap().unwrap();
    assert!(
        !record.state.is_terminal(),
        "marked {:?} though its run never got its end",
        record.state
    );
    let record = wait_terminal(stores, &e.id, Duration::from_secs(15)).await;
    assert_eq!(record.state, TaskState::Succeeded);
    worker.stop().await;
    let run = stores
        .workflows
        .get_run("outage-run")
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(run.outcomes.get(&0), Some(StepOutcome::Ok { value, .. }) if value.contains('7')),
        "{:?}",
        run.outcomes
    );
    tasks.runs_of(&e.id)
}

// A workflow activity whose run cannot be given its end through a store
// outage is not marked done meanwhile (its end would be lost and the run
// would wait for ever): the worker holds the job's lease and tries again,
// and once the outage ends the run has its end and the job is done, run
// once.
worker_case!(
    worker_gives_a_run_its_activitys_end_through_an_outage,
    |stores| {
        let ran = activity_through_an_outage(
            &stores,
            Duration::from_millis(1200),
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(ran, 1);
    }
);

// An outage that outlasts what the lease lets the worker wait: the job is
// left unfinished and runs again once its lease lapses — and then its run
// gets its end. 3 s: the retries' back-off reaches 1.6 s, past the 1 s
// lease, by then whatever the lease keeper's phase (at 1.5 s a retry could
// still fit and the job run once).
worker_case!(
    worker_runs_an_activity_again_when_its_run_outlasts_the_lease,
    |stores| {
        let ran = activity_through_an_outage(
            &stores,
            Duration::from_millis(3000),
            Duration::from_secs(1),
        )
        .await;
        assert!(ran >= 2, "ran {ran} time(s)");
    }
);

// A run that cannot be given an activity's end for good (it cannot be
// read): the job ends, and its record says so — not a silent loss, and
// not a job run again and again.
worker_case!(
    worker_notes_a_run_it_could_not_give_its_activitys_end,
    |stores| {
        let wrapped = RefusingRuns::wrap(&stores, Duration::from_secs(60), false);
        let tasks = Arc::new(NativeTasks::default());
        let worker = start(&wrapped, &tasks, config("w7x"));
        let e = waiting_activity(&stores, "unreadable-run").await;
        let record = wait_terminal(&stores, &e.id, Duration::from_secs(15)).await;
        worker.stop().await;
        assert_eq!(record.state, TaskState::Succeeded);
        assert_eq!(tasks.runs_of(&e.id), 1);
        let detail = record
            .history
            .iter()
            .rev()
            .find(|h| h.state == TaskState::Succeeded)
            .and_then(|h| h.detail.clone())
            .unwrap_or_default();
        assert!(
            detail.contains("workflow run unreadable-run: NOT given this end")
                && detail.contains("runs cannot be read"),
            "{detail}"
        );
    }
);

// A job that runs several leases long keeps its lease (one timer extends
// it): a second worker on the same store never gets it.
worker_case!(worker_keeps_the_lease_of_a_long_job, |stores| {
    let tasks = Arc::new(NativeTasks::default());
    let mut cfg = config("w8a");
    cfg.lease = Duration::from_secs(1);
    let a = start(&stores, &tasks, cfg.clone());
    cfg.name = "w8b".to_owned();
    let b = start(&stores, &tasks, cfg);
    let e = enqueue(&stores, "sleep", "{\"ms\":3000}").await;
    let record = wait_terminal(&stores, &e.id, Duration::from_secs(15)).await;
    assert_eq!(record.state, TaskState::Succeeded);
    a.stop().await;
    b.stop().await;
    assert_eq!(tasks.runs_of(&e.id), 1, "the job ran twice");
    let running = record
        .history
        .iter()
        .filter(|h| h.state == TaskState::Running)
        .count();
    assert_eq!(running, 1, "{:?}", record.history);
});

// Shutdown with jobs in flight: past the grace period they are cancelled
// and released — back to `queued`, ready to run — not failed.
worker_case!(worker_releases_jobs_in_flight_on_shutdown, |stores| {
    let tasks = Arc::new(NativeTasks::default());
    let mut cfg = config("w9");
    cfg.grace = Duration::from_millis(200);
    let worker = start(&stores, &tasks, cfg);
    let e = enqueue(&stores, "sleep", "{\"ms\":20000}").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while tasks.runs_of(&e.id) == 0 {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = worker.stop().await;
    assert_eq!(stats.released.load(Ordering::Relaxed), 1);
    let record = stores.results.get(&e.id).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Queued);
    let stats = stores.statistics.queue_stats().await.unwrap();
    assert_eq!(stats.iter().map(|q| q.ready).sum::<u64>(), 1, "{stats:?}");
});

// Hole 9: a lease below the floor is refused before anything runs.
worker_case!(worker_refuses_a_lease_too_short_to_keep, |stores| {
    for lease in [
        Duration::ZERO,
        Duration::from_millis(1),
        Duration::from_millis(999),
    ] {
        let mut cfg = config("w10");
        cfg.lease = lease;
        let tasks = Arc::new(NativeTasks::default());
        let err = Worker::new(stores.clone(), Arc::new(NativeRegistry(tasks)), cfg).unwrap_err();
        assert!(err.to_string().contains("too short"), "{err}");
    }
});

// Hole 4: under load, with a subscriber recording spans, no span is
// entered across an await (which panicked the worker and mixed up job
// ids in log lines).
worker_case!(worker_logs_the_right_job_under_load, |stores| {
    let tasks = Arc::new(NativeTasks::default());
    let mut cfg = config("w11");
    cfg.concurrency = 32;
    let counts = xylem_tests::span_check::install();
    let before = counts.mismatches.load(Ordering::Relaxed);
    let checked = counts.checked.load(Ordering::Relaxed);
    let worker = start(&stores, &tasks, cfg);
    let mut envelopes = Vec::new();
    for i in 0..400 {
        let mut e = Envelope::new("echo", format!("{{\"n\":{i}}}"));
        e.max_retries = 0;
        envelopes.push(e);
    }
    stores.broker.enqueue(&envelopes).await.unwrap();
    for e in &envelopes {
        let record = wait_terminal(&stores, &e.id, Duration::from_secs(60)).await;
        assert_eq!(record.state, TaskState::Succeeded);
    }
    let stats = worker.stop().await;
    assert_eq!(stats.succeeded.load(Ordering::Relaxed), 400);
    assert!(
        counts.checked.load(Ordering::Relaxed) >= checked + 400,
        "the job spans were not seen"
    );
    assert_eq!(
        counts.mismatches.load(Ordering::Relaxed),
        before,
        "log lines carried another job's id"
    );
});

/// What the `expiring` task declares: its jobs expire this long after
/// enqueue.
const EXPIRING_MS: u64 = 100;

/// Child enqueues go through the client, which needs the tasks' routes:
/// a plugin record that declares the native tasks (`counted` with a schema).
async fn declare_native_tasks(stores: &Stores) {
    let counted = TaskSpec {
        args_schema: Some(
            serde_json::json!({
                "type": "object",
                "properties": {"count": {"type": "integer"}},
                "required": ["count"]
            })
            .to_string(),
        ),
        ..TaskSpec::new("counted")
    };
    let expiring = TaskSpec {
        options: xylem_core::TaskOptions {
            expires_ms: Some(EXPIRING_MS),
            ..Default::default()
        },
        ..TaskSpec::new("expiring")
    };
    let specs: Vec<TaskSpec> = [
        "echo",
        "bomb",
        "limits",
        "spawn",
        "fail",
        "sleep",
        "spawn-options",
        "inc",
        "sum",
    ]
    .into_iter()
    .map(TaskSpec::new)
    .chain([counted, expiring])
    .collect();
    stores
        .plugins
        .put_plugin("native", b"native", &specs)
        .await
        .unwrap();
}

/// Waits until no job is ready, delayed or running.
async fn wait_drained(stores: &Stores, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let busy: u64 = stores
            .statistics
            .queue_stats()
            .await
            .unwrap()
            .iter()
            .map(|q| q.ready + q.delayed + q.running)
            .sum();
        if busy == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{busy} jobs still pending");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// A job that enqueues copies of itself until refused makes at most its
// per-run quota of children each run, and its whole tree at most the
// tree's quota — over every worker and depth.
worker_case!(worker_bounds_an_enqueue_bomb_by_its_quotas, |stores| {
    declare_native_tasks(&stores).await;
    let tasks = Arc::new(NativeTasks::default());
    let quota = ChildQuota {
        per_run: 5,
        per_tree: 40,
        ..ChildQuota::default()
    };
    // Two workers share the tree's count through the store.
    let workers = [
        start(
            &stores,
            &tasks,
            WorkerConfig {
                child_quota: quota,
                ..config("bomb-a")
            },
        ),
        start(
            &stores,
            &tasks,
            WorkerConfig {
                child_quota: quota,
                ..config("bomb-b")
            },
        ),
    ];
    let root = enqueue(&stores, "bomb", "{}").await;
    let record = wait_terminal(&stores, &root.id, Duration::from_secs(20)).await;
    // How many of the tree's 40 the root itself made depends on how fast
    // its children (running beside it) spend the tree's quota: 1 to 5.
    let root_made = record.result.as_ref().unwrap()["made"].as_u64().unwrap();
    assert!((1..=5).contains(&root_made), "{record:?}");
    wait_drained(&stores, Duration::from_secs(30)).await;
    for worker in workers {
        worker.stop().await;
    }
    let bombs = stores
        .results
        .list(&xylem_core::TaskFilter {
            task: Some("bomb".to_owned()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        bombs.len(),
        41,
        "the root and exactly its tree's quota of descendants"
    );
    let made: u64 = bombs
        .iter()
        .map(|r| {
            assert_eq!(r.state, TaskState::Succeeded, "{r:?}");
            r.result.as_ref().unwrap()["made"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(made, 40);
    assert!(
        bombs
            .iter()
            .all(|r| r.result.as_ref().unwrap()["made"].as_u64() <= Some(5)),
        "no run made more than its per-run quota"
    );
});

// A child runs under its parent's limits (it cannot widen them), and
// each bad enqueue is refused with its kind.
worker_case!(
    worker_gives_a_child_its_parents_limits_and_typed_refusals,
    |stores| {
        declare_native_tasks(&stores).await;
        let tasks = Arc::new(NativeTasks::default());
        let worker = start(&stores, &tasks, config("spawner"));
        let mut root = Envelope::new("spawn", "{}");
        root.max_retries = 0;
        root.options.fuel = Some(1_000_000);
        stores
            .broker
            .enqueue(std::slice::from_ref(&root))
            .await
            .unwrap();
        let record = wait_terminal(&stores, &root.id, Duration::from_secs(20)).await;
        assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
        let result = record.result.unwrap();
        let refusals: Vec<&str> = result["refusals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert!(
            refusals[0].starts_with("unknown: unknown task `no-such-task`"),
            "{refusals:?}"
        );
        assert!(
            refusals[1].starts_with("invalid: invalid queue name"),
            "{refusals:?}"
        );
        assert!(
            refusals[2].starts_with("invalid: arguments of `counted` do not match its schema")
                && refusals[2].contains("/count"),
            "{refusals:?}"
        );
        let child = result["child"].as_str().unwrap();
        let child = wait_terminal(&stores, child, Duration::from_secs(20)).await;
        assert_eq!(
            child.result.unwrap()["fuel"],
            serde_json::json!(1_000_000),
            "the child inherits its parent's fuel budget"
        );
        worker.stop().await;
    }
);

// Cancellation (`xylem_core::cancel`): a waiting job never starts; a
// running one is stopped by its worker, which carries on with the next.
worker_case!(
    cancel_stops_a_running_job_and_prevents_a_waiting_one,
    |stores| {
        use xylem_core::cancel::{CancelResult, cancel};
        let tasks = Arc::new(NativeTasks::default());
        let worker = start(
            &stores,
            &tasks,
            WorkerConfig {
                concurrency: 1,
                ..config("w-cancel")
            },
        );
        let long = enqueue(&stores, "sleep", r#"{"ms":60000}"#).await.id;
        let deadline = Instant::now() + Duration::from_secs(10);
        while stores.results.get(&long).await.unwrap().map(|r| r.state) != Some(TaskState::Running)
        {
            assert!(Instant::now() < deadline, "the long job never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Waits behind it (one slot), and one delayed.
        let waiting = enqueue(&stores, "echo", "{}").await.id;
        let mut later = Envelope::new("echo", "{}");
        later.not_before = Some(xylem_core::time::now_ms() + 60_000);
        stores
            .broker
            .enqueue(std::slice::from_ref(&later))
            .await
            .unwrap();

        let asked = Instant::now();
        let ids = vec![
            waiting.clone(),
            later.id.clone(),
            long.clone(),
            "no-such-job".to_owned(),
        ];
        assert_eq!(
            cancel(&stores, &ids).await.unwrap(),
            [
                CancelResult::Cancelled,
                CancelResult::Cancelled,
                CancelResult::Requested,
                CancelResult::NotFound
            ]
        );
        let stopped = wait_terminal(&stores, &long, Duration::from_secs(10)).await;
        let took = asked.elapsed();
        assert_eq!(stopped.state, TaskState::Cancelled, "{stopped:?}");
        assert_eq!(
            stopped.history.last().unwrap().detail.as_deref(),
            Some(xylem_core::cancel::CANCELLED_RUNNING)
        );
        // Poll (25 ms) + grace (50 ms) + the task's own 5 ms check; generous
        // for a loaded CI machine.
        assert!(took < Duration::from_secs(2), "stopped after {took:?}");

        // The slot serves the next job.
        let next = enqueue(&stores, "echo", r#"{"after":"cancel"}"#).await.id;
        assert_eq!(
            wait_terminal(&stores, &next, Duration::from_secs(10))
                .await
                .state,
            TaskState::Succeeded
        );
        for id in [&waiting, &later.id] {
            let record = stores.results.get(id).await.unwrap().unwrap();
            assert_eq!(record.state, TaskState::Cancelled, "{id}");
            assert_eq!(tasks.runs_of(id), 0, "a cancelled waiting job never runs");
        }
        // Cancelling again changes nothing.
        assert_eq!(
            cancel(&stores, &[long.clone(), next.clone()])
                .await
                .unwrap(),
            [
                CancelResult::Finished(TaskState::Cancelled),
                CancelResult::Finished(TaskState::Succeeded)
            ]
        );
        let stats = worker.stop().await;
        assert_eq!(stats.cancelled.load(Ordering::Relaxed), 1);
        assert!(queue_empty(&stores).await);
    }
);

// Queue control (`xylem_core::queue_control`): a paused queue's jobs wait
// while other queues' run; resumed, they run; purged, they never do.
worker_case!(a_paused_queue_waits_and_a_purged_one_never_runs, |stores| {
    use xylem_core::queue_control::{PURGED, Waiting, purge};
    let tasks = Arc::new(NativeTasks::default());
    stores.queue_control.set_paused("slow", true).await.unwrap();
    let worker = start(&stores, &tasks, config("w-pause"));
    let on = |queue: &str| {
        let mut e = Envelope::new("echo", "{}");
        e.queue = queue.to_owned();
        e.max_retries = 0;
        e
    };
    let held = on("slow");
    let free = on("fast");
    stores
        .broker
        .enqueue(&[held.clone(), free.clone()])
        .await
        .unwrap();
    let done = wait_terminal(&stores, &free.id, Duration::from_secs(10)).await;
    assert_eq!(done.state, TaskState::Succeeded);
    // Two pause looks later the paused queue's job still waits.
    tokio::time::sleep(xylem_core::worker::PAUSE_REFRESH * 2).await;
    assert_eq!(tasks.runs_of(&held.id), 0, "a paused queue's job ran");

    stores
        .queue_control
        .set_paused("slow", false)
        .await
        .unwrap();
    let resumed = wait_terminal(&stores, &held.id, Duration::from_secs(10)).await;
    assert_eq!(resumed.state, TaskState::Succeeded);

    // Purge: pause again, queue three and a delayed one, purge the ready.
    stores.queue_control.set_paused("slow", true).await.unwrap();
    tokio::time::sleep(xylem_core::worker::PAUSE_REFRESH + Duration::from_millis(200)).await;
    let waiting: Vec<Envelope> = (0..3).map(|_| on("slow")).collect();
    stores.broker.enqueue(&waiting).await.unwrap();
    let mut later = on("slow");
    later.not_before = Some(xylem_core::time::now_ms() + 60_000);
    stores
        .broker
        .enqueue(std::slice::from_ref(&later))
        .await
        .unwrap();
    let ready_only = Waiting {
        ready: true,
        delayed: false,
    };
    assert_eq!(purge(&stores, "slow", ready_only).await.unwrap(), 3);
    for e in &waiting {
        let record = stores.results.get(&e.id).await.unwrap().unwrap();
        assert_eq!(record.state, TaskState::Cancelled);
        assert_eq!(
            record.history.last().unwrap().detail.as_deref(),
            Some(PURGED)
        );
    }
    let both = Waiting {
        ready: true,
        delayed: true,
    };
    assert_eq!(
        purge(&stores, "slow", both).await.unwrap(),
        1,
        "the delayed one"
    );
    stores
        .queue_control
        .set_paused("slow", false)
        .await
        .unwrap();
    tokio::time::sleep(xylem_core::worker::PAUSE_REFRESH + Duration::from_millis(200)).await;
    for e in waiting.iter().chain([&later]) {
        assert_eq!(tasks.runs_of(&e.id), 0, "a purged job ran");
    }
    worker.stop().await;
    assert!(queue_empty(&stores).await);
});

/// When each job started running (its last `running` entry), sorted.
async fn start_times(stores: &Stores, ids: &[String]) -> Vec<i64> {
    let mut starts = Vec::new();
    for id in ids {
        let record = wait_terminal(stores, id, Duration::from_secs(30)).await;
        assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
        assert_eq!(
            record.attempt, 1,
            "waiting for the rate limit is not a retry"
        );
        starts.push(xylem_tests::last_run(&record).0);
    }
    starts.sort_unstable();
    starts
}

/// The most starts within any `span` ms.
fn busiest(starts: &[i64], span: i64) -> usize {
    (0..starts.len())
        .map(|i| {
            starts[i..]
                .iter()
                .take_while(|t| **t < starts[i] + span)
                .count()
        })
        .max()
        .unwrap_or(0)
}

// Rate limits (`xylem_core::rate_limit`): two workers on one store hold a
// task to 20 starts a second together; jobs over the limit wait (same
// attempt) instead of failing; per-tenant limits do not slow each other.
worker_case!(a_rate_limit_holds_across_workers_and_per_tenant, |stores| {
    let tasks = Arc::new(NativeTasks::default());
    let a = start(&stores, &tasks, config("w-rate-a"));
    let b = start(&stores, &tasks, config("w-rate-b"));
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(
            enqueue(&stores, "limited", &format!("{{\"n\":{i}}}"))
                .await
                .id,
        );
    }
    let starts = start_times(&stores, &ids).await;
    // Slots 50 ms apart: any second holds at most 21 (timer slack: 22).
    assert!(
        busiest(&starts, 1000) <= 22,
        "{} in a second: {starts:?}",
        busiest(&starts, 1000)
    );
    let span = starts[starts.len() - 1] - starts[0];
    assert!(span >= 1_800, "40 jobs at 20/s took only {span} ms");
    let waited = stores.results.get(&ids[39]).await.unwrap().unwrap();
    assert!(
        tasks.runs_of(&ids[39]) == 1,
        "each job ran once: {waited:?}"
    );

    // Two tenants, 5/s each: together they take about as long as one.
    let mut by_tenant: HashMap<&str, Vec<String>> = HashMap::new();
    for i in 0..20 {
        let tenant = if i % 2 == 0 { "acme" } else { "globex" };
        let id = xylem_tests::enqueue_for_tenant(&stores, "per-tenant", tenant).await;
        by_tenant.entry(tenant).or_default().push(id);
    }
    let mut all = Vec::new();
    for (tenant, ids) in &by_tenant {
        let starts = start_times(&stores, ids).await;
        assert!(busiest(&starts, 1000) <= 6, "{tenant}: {starts:?}");
        all.extend(starts);
    }
    all.sort_unstable();
    let span = all[all.len() - 1] - all[0];
    // One shared limit would need 4 s for 20 jobs at 5/s.
    assert!(span < 3_000, "the tenants slowed each other: {span} ms");
    a.stop().await;
    b.stop().await;
});

// Concurrency limits (`xylem_core::concurrency`): four workers on one
// store never run more than two jobs of a tenant at once — counted where
// the task code runs — and another tenant's jobs run beside them.
worker_case!(
    a_concurrency_limit_holds_across_four_workers_per_tenant,
    |stores| {
        let tasks = Arc::new(NativeTasks::default());
        let workers: Vec<Running> = (0..4)
            .map(|i| start(&stores, &tasks, config(&format!("w-conc-{i}"))))
            .collect();
        let mut by_tenant: HashMap<&str, Vec<String>> = HashMap::new();
        for i in 0..24 {
            let tenant = if i % 3 == 0 { "globex" } else { "acme" };
            let id = xylem_tests::enqueue_for_tenant(&stores, "exclusive", tenant).await;
            by_tenant.entry(tenant).or_default().push(id);
        }
        for (tenant, ids) in &by_tenant {
            for id in ids {
                let record = wait_terminal(&stores, id, Duration::from_secs(60)).await;
                assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
                assert_eq!(record.attempt, 1, "waiting for a slot is not a retry");
            }
            // Measured where the task code runs: a history's `running`
            // entry marks the claim, which comes just before the slot.
            let most = tasks.exclusive.lock().unwrap()[*tenant].1;
            assert!(most <= 2, "{tenant}: {most} jobs ran at once");
            assert_eq!(most, 2, "{tenant}: the limit of 2 was never used in full");
        }
        for worker in workers {
            worker.stop().await;
        }
        assert!(queue_empty(&stores).await);
    }
);

// Unique jobs (`xylem_core::unique`): an equal job within the TTL is not
// enqueued again; the first one's id comes back, even under a race.
worker_case!(a_unique_enqueue_returns_the_first_id, |stores| {
    use xylem_core::unique::{Unique, UniqueOutcome};
    use xylem_core::{Client, EnqueueRequest};
    stores
        .plugins
        .put_plugin("unique-test", b"x", &[TaskSpec::new("echo")])
        .await
        .unwrap();
    let client = Client::new(stores.clone());
    let unique = |key: Option<&str>, ttl_ms: u64| Unique {
        key: key.map(str::to_owned),
        ttl: Duration::from_millis(ttl_ms),
    };
    let first = match client
        .enqueue_unique(
            EnqueueRequest::new("echo", r#"{"a":1,"b":[2]}"#),
            &unique(None, 60_000),
        )
        .await
        .unwrap()
    {
        UniqueOutcome::Enqueued(e) => e.id,
        other => panic!("{other:?}"),
    };
    // The same job spelled differently: the first id.
    assert_eq!(
        client
            .enqueue_unique(
                EnqueueRequest::new("echo", r#"{ "b": [2], "a": 1 }"#),
                &unique(None, 60_000)
            )
            .await
            .unwrap(),
        UniqueOutcome::Duplicate(first.clone())
    );
    // Other arguments: another job.
    assert!(matches!(
        client
            .enqueue_unique(
                EnqueueRequest::new("echo", r#"{"a":2}"#),
                &unique(None, 60_000)
            )
            .await
            .unwrap(),
        UniqueOutcome::Enqueued(_)
    ));
    // Eight clients racing with one key: one job.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .enqueue_unique(
                        EnqueueRequest::new("echo", format!("{{\"racer\":{i}}}")),
                        &Unique {
                            key: Some("race".to_owned()),
                            ttl: Duration::from_secs(60),
                        },
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut enqueued = Vec::new();
    let mut duplicates = Vec::new();
    for racer in racers {
        match racer.await.unwrap() {
            UniqueOutcome::Enqueued(e) => enqueued.push(e.id),
            UniqueOutcome::Duplicate(id) => duplicates.push(id),
        }
    }
    assert_eq!(enqueued.len(), 1, "{enqueued:?}");
    assert!(
        duplicates.iter().all(|id| *id == enqueued[0]),
        "{duplicates:?}"
    );
    // After the TTL, a new job.
    let short = unique(Some("short"), 300);
    let a = client
        .enqueue_unique(EnqueueRequest::new("echo", "{}"), &short)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = client
        .enqueue_unique(EnqueueRequest::new("echo", "{}"), &short)
        .await
        .unwrap();
    assert!(
        matches!((a, b), (UniqueOutcome::Enqueued(x), UniqueOutcome::Enqueued(y)) if x.id != y.id)
    );
});

// ---- options: callbacks, ignore_result, expiry, visibility timeout -------

/// Waits for a job's record to exist and be terminal (a callback's record
/// appears only when it is fired).
async fn wait_fired(stores: &Stores, id: &str, within: Duration) -> TaskRecord {
    let deadline = Instant::now() + within;
    while stores.results.get(id).await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "callback {id} was never enqueued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_terminal(stores, id, within).await
}

// `link` fires with the result when a job succeeds, `link_error` with the
// error when it dies — once each, never the other one; a job that ignores
// its result keeps its state, drops the value, and its link still gets it.
worker_case!(link_and_link_error_fire_once_each, |stores| {
    use xylem_core::callback::Callback;
    use xylem_core::{Client, EnqueueRequest};
    declare_native_tasks(&stores).await;
    let tasks = Arc::new(NativeTasks::default());
    let client = Client::new(stores.clone());
    let mut ok = EnqueueRequest::new("echo", r#"{"x":1}"#);
    ok.options.link = Some(Callback::parse(r#"echo:{"to":"ops"}"#).unwrap());
    ok.options.link_error = Some(Callback::new("echo"));
    ok.options.ignore_result = Some(true);
    let ok = client.enqueue(ok).await.unwrap();
    let mut bad = EnqueueRequest::new("fail", "{}");
    bad.max_retries = Some(1);
    bad.options.retry_backoff_ms = Some(10);
    bad.options.link = Some(Callback::new("echo"));
    bad.options.link_error = Some(Callback::parse(r#"echo:{"alert":true}"#).unwrap());
    let bad = client.enqueue(bad).await.unwrap();
    // A link to a task nobody declares is refused at enqueue.
    let mut typo = EnqueueRequest::new("echo", "{}");
    typo.options.link = Some(Callback::new("no-such-task"));
    assert!(matches!(
        client.enqueue(typo).await,
        Err(xylem_core::ClientError::UnknownTask { .. })
    ));

    let worker = start(&stores, &tasks, config("links"));
    let record = wait_terminal(&stores, &ok.id, Duration::from_secs(20)).await;
    assert_eq!(record.state, TaskState::Succeeded);
    assert_eq!(record.result, None, "ignore_result drops the value");
    let link_id = &ok.options.link.as_ref().unwrap().id;
    let link = wait_fired(&stores, link_id, Duration::from_secs(20)).await;
    assert_eq!(link.state, TaskState::Succeeded);
    assert_eq!(
        link.result.unwrap(),
        serde_json::json!({"to": "ops", "result": {"x": 1}})
    );
    let last = record
        .history
        .last()
        .unwrap()
        .detail
        .clone()
        .unwrap_or_default();
    assert!(
        last.contains(&format!("link `echo` enqueued as {link_id}"))
            && last.contains("ignore_result"),
        "{last}"
    );

    let record = wait_terminal(&stores, &bad.id, Duration::from_secs(20)).await;
    assert_eq!(record.state, TaskState::Dead);
    let error_id = &bad.options.link_error.as_ref().unwrap().id;
    let error = wait_fired(&stores, error_id, Duration::from_secs(20)).await;
    let args = error.result.unwrap();
    assert_eq!(args["alert"], true);
    assert_eq!(args["error"]["task"], "fail");
    assert_eq!(args["error"]["kind"], "plugin-error");
    assert_eq!(args["error"]["attempt"], 2);
    assert_eq!(args["error"]["message"], "always fails");
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await;
    // Neither job fired its other callback; each callback ran once.
    let ok_error = &ok.options.link_error.as_ref().unwrap().id;
    let bad_link = &bad.options.link.as_ref().unwrap().id;
    assert!(stores.results.get(ok_error).await.unwrap().is_none());
    assert!(stores.results.get(bad_link).await.unwrap().is_none());
    assert_eq!(tasks.runs_of(link_id), 1);
    assert_eq!(tasks.runs_of(error_id), 1);
});

// A job whose worker loses it after firing its link (the outcome cannot be
// written; the lease lapses; it runs again) still enqueues the link once.
worker_case!(a_redelivered_job_fires_its_link_once, |stores| {
    use xylem_core::callback::Callback;
    use xylem_core::{Client, EnqueueRequest};
    declare_native_tasks(&stores).await;
    let tasks = Arc::new(NativeTasks::default());
    let (faulty, wrapped) = FaultyBroker::wrap(&stores);
    let mut req = EnqueueRequest::new("echo", r#"{"n":7}"#);
    // The link goes to a queue no worker serves: the test counts it there.
    req.options.link = Some(Callback {
        queue: Some("links".to_owned()),
        ..Callback::new("echo")
    });
    let job = Client::new(stores.clone()).enqueue(req).await.unwrap();
    // Completions (and lease extensions) fail for longer than the lease.
    faulty.fail(Outage::Complete, Duration::from_millis(3500));
    let mut cfg = config("redelivered-link");
    cfg.lease = Duration::from_secs(1);
    cfg.queues = vec!["default".to_owned()];
    let worker = start(&wrapped, &tasks, cfg);
    let record = wait_terminal(&stores, &job.id, Duration::from_secs(30)).await;
    worker.stop().await;
    assert_eq!(record.state, TaskState::Succeeded);
    assert!(tasks.runs_of(&job.id) >= 2, "the job was delivered again");
    let link_id = &job.options.link.as_ref().unwrap().id;
    let links = stores
        .broker
        .claim(&["links".to_owned()], 10, Duration::from_secs(5), "test")
        .await
        .unwrap();
    let ids: Vec<&str> = links.iter().map(|d| d.envelope.id.as_str()).collect();
    assert_eq!(ids, [link_id.as_str()], "one link job");
    assert_eq!(links[0].envelope.args, r#"{"n":7}"#);
    let details: Vec<String> = record
        .history
        .iter()
        .filter_map(|h| h.detail.clone())
        .collect();
    assert!(
        details.iter().any(|d| d.contains("was enqueued already")),
        "{details:?}"
    );
});

// A job not started before its expiry — its own `expires`, or its task's
// declared `expires_ms` — is `expired` and never runs.
worker_case!(an_expired_job_never_runs, |stores| {
    use xylem_core::{Client, EnqueueRequest};
    declare_native_tasks(&stores).await;
    let tasks = Arc::new(NativeTasks::default());
    let client = Client::new(stores.clone());
    let mut own = EnqueueRequest::new("echo", "{}");
    own.expires_at = Some(xylem_core::time::now_ms() + 50);
    let own = client.enqueue(own).await.unwrap();
    let by_task = client
        .enqueue(EnqueueRequest::new("expiring", "{}"))
        .await
        .unwrap();
    assert!(by_task.expires_at.is_some(), "the task's default applies");
    let fresh = client
        .enqueue(EnqueueRequest::new("echo", "{}"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(EXPIRING_MS + 100)).await;
    let worker = start(&stores, &tasks, config("expiry"));
    for id in [&own.id, &by_task.id] {
        let record = wait_terminal(&stores, id, Duration::from_secs(20)).await;
        assert_eq!(record.state, TaskState::Expired, "{record:?}");
        assert_eq!(tasks.runs_of(id), 0);
    }
    let record = wait_terminal(&stores, &fresh.id, Duration::from_secs(20)).await;
    assert_eq!(record.state, TaskState::Succeeded);
    worker.stop().await;
});

// A job's visibility timeout is its lease: a job asking for 10 s keeps its
// worker through a 3 s store outage of lease extensions, where the
// worker's own 1 s lease would have let a second worker run it again.
worker_case!(a_visibility_timeout_is_the_jobs_lease, |stores| {
    use xylem_core::{Client, EnqueueRequest};
    declare_native_tasks(&stores).await;
    let tasks = Arc::new(NativeTasks::default());
    let (faulty, wrapped) = FaultyBroker::wrap(&stores);
    let mut req = EnqueueRequest::new("sleep", r#"{"ms":3000}"#);
    req.options.visibility_timeout_ms = Some(10_000);
    let job = Client::new(stores.clone()).enqueue(req).await.unwrap();
    let mut cfg = config("visibility-1");
    cfg.lease = Duration::from_secs(1);
    let first = start(&wrapped, &tasks, cfg.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while tasks.runs_of(&job.id) == 0 {
        assert!(Instant::now() < deadline, "never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the keeper take the 10 s lease, then cut extensions off.
    tokio::time::sleep(Duration::from_millis(400)).await;
    faulty.fail(Outage::Complete, Duration::from_millis(3000));
    cfg.name = "visibility-2".to_owned();
    let second = start(&stores, &tasks, cfg);
    let record = wait_terminal(&stores, &job.id, Duration::from_secs(30)).await;
    assert_eq!(record.state, TaskState::Succeeded);
    first.stop().await;
    second.stop().await;
    assert_eq!(tasks.runs_of(&job.id), 1, "no other worker took it");
});

// Every option a running task gives `enqueue` reaches its child's
// envelope (limits capped by the parent's), and a unique child enqueued
// twice is one job: the second call returns its id, marked duplicate.
worker_case!(a_task_sets_every_option_of_its_children, |stores| {
    declare_native_tasks(&stores).await;
    let tasks = Arc::new(NativeTasks::default());
    let parent = enqueue(&stores, "spawn-options", "{}").await;
    // The worker serves `default` only: the child stays in `children`,
    // where the test claims it to read its envelope.
    let mut cfg = config("child-options");
    cfg.queues = vec!["default".to_owned()];
    let worker = start(&stores, &tasks, cfg);
    let record = wait_terminal(&stores, &parent.id, Duration::from_secs(20)).await;
    worker.stop().await;
    assert_eq!(record.state, TaskState::Succeeded, "{record:?}");
    let result = record.result.unwrap();
    assert_eq!(result["first"], result["again"]);
    assert_eq!(result["first_duplicate"], false);
    assert_eq!(result["again_duplicate"], true);
    let child = result["first"].as_str().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let claimed = stores
        .broker
        .claim(&["children".to_owned()], 10, Duration::from_secs(5), "test")
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "one child");
    let e = claimed.into_iter().next().unwrap().envelope;
    assert_eq!(e.id, child);
    assert_eq!(e.queue, "children");
    assert_eq!(e.max_retries, 7);
    assert!(e.priority <= 3);
    assert!(e.expires_at.is_some() && e.not_before.is_some());
    let o = &e.options;
    assert_eq!(
        (o.retry_backoff_ms, o.retry_backoff_max_ms, o.retry_jitter),
        (Some(5), Some(50), Some(false))
    );
    assert_eq!(
        (o.soft_time_limit_ms, o.hard_time_limit_ms),
        (Some(1000), Some(2000))
    );
    assert_eq!(
        (o.fuel, o.max_memory_bytes),
        (Some(1_000_000), Some(1 << 20))
    );
    assert_eq!(o.visibility_timeout_ms, Some(5000));
    assert_eq!(o.ignore_result, Some(true));
    assert!(
        o.link
            .as_ref()
            .is_some_and(|c| c.task == "echo" && !c.id.is_empty())
    );
    assert!(o.link_error.as_ref().is_some_and(|c| !c.id.is_empty()));
    assert_eq!(e.lineage.as_ref().unwrap().root, parent.id);
});

// ---- canvas: chain, group, chord ------------------------------------------

mod canvas_support {
    use xylem_core::canvas::{Canvas, Node};

    pub(crate) fn inc(n: i64) -> Node {
        Node::task("inc", Some(format!(r#"{{"n":{n}}}"#)))
    }

    pub(crate) fn bare(task: &str) -> Node {
        Node::task(task, None)
    }

    /// The job id of the task node at `path`.
    pub(crate) fn job_at(canvas: &Canvas, path: &[u32]) -> String {
        match canvas.node(path) {
            Some(Node::Task(c)) => c.id.clone(),
            other => panic!("no task at {path:?}: {other:?}"),
        }
    }
}
use canvas_support::{bare, inc, job_at};

// A chain passes each result on; a chord gathers its members' results in
// order and calls back once, with four workers racing; nesting works.
worker_case!(chains_groups_and_chords_run_to_their_end, |stores| {
    use xylem_core::Client;
    use xylem_core::canvas::{Canvas, Node, NodeState};
    declare_native_tasks(&stores).await;
    let tasks = Arc::new(NativeTasks::default());
    let client = Client::new(stores.clone());
    let chain = Canvas::new(Node::chain(vec![inc(0), bare("inc"), bare("inc")])).unwrap();
    let chord = Canvas::new(Node::chord((0..10).map(inc).collect(), bare("sum"))).unwrap();
    // A chain of a group (of a task and a chain) and a sum.
    let nested = Canvas::new(Node::chain(vec![
        Node::group(vec![inc(1), Node::chain(vec![inc(10), bare("inc")])]),
        bare("sum"),
    ]))
    .unwrap();
    for canvas in [&chain, &chord, &nested] {
        client.enqueue_canvas(canvas).await.unwrap();
    }
    let workers: Vec<Running> = (0..4)
        .map(|i| start(&stores, &tasks, config(&format!("canvas-{i}"))))
        .collect();
    let last = wait_fired(&stores, &job_at(&chain, &[2]), Duration::from_secs(30)).await;
    assert_eq!(last.result, Some(serde_json::json!(3)));
    let callback = job_at(&chord, &[10]);
    let sum = wait_fired(&stores, &callback, Duration::from_secs(30)).await;
    assert_eq!(sum.result, Some(serde_json::json!(55)), "1 + 2 + ... + 10");
    let total = wait_fired(&stores, &job_at(&nested, &[1]), Duration::from_secs(30)).await;
    assert_eq!(total.result, Some(serde_json::json!(2 + 12)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    for w in workers {
        w.stop().await;
    }
    assert_eq!(tasks.runs_of(&callback), 1, "the chord called back once");
    // The states, from the records; the definition from the store.
    let stored = client.canvas(&chord.id).await.unwrap();
    assert_eq!(stored, chord);
    let records = xylem_core::canvas::records(&stores, &stored).await.unwrap();
    assert_eq!(
        xylem_core::canvas::node_state(&stored.root, &records),
        NodeState::Succeeded
    );
});

// A failed step stops its chain (nothing after it is enqueued) and fires
// the canvas's link_error with the step's error; a chord told to include
// member errors calls back with the error in the failed member's place.
worker_case!(
    a_failed_step_stops_its_chain_and_a_chord_can_carry_errors,
    |stores| {
        use xylem_core::Client;
        use xylem_core::callback::Callback;
        use xylem_core::canvas::{Canvas, MemberErrors, Node, NodeState};
        declare_native_tasks(&stores).await;
        let tasks = Arc::new(NativeTasks::default());
        let client = Client::new(stores.clone());
        let failing = Canvas::new(Node::chain(vec![inc(0), bare("fail"), bare("inc")]))
            .unwrap()
            .with_link_error(Callback::new("echo"))
            .unwrap();
        let carrying = Canvas::new(Node::Chord {
            id: String::new(),
            members: vec![inc(1), bare("fail")],
            callback: Box::new(bare("echo")),
            member_errors: MemberErrors::Include,
        })
        .unwrap();
        client.enqueue_canvas(&failing).await.unwrap();
        client.enqueue_canvas(&carrying).await.unwrap();
        let worker = start(&stores, &tasks, config("canvas-fail"));
        let failed = wait_terminal(&stores, &job_at(&failing, &[1]), Duration::from_secs(30)).await;
        assert_eq!(failed.state, TaskState::Dead);
        let error_id = failing.link_error.as_ref().unwrap().id.clone();
        let error = wait_fired(&stores, &error_id, Duration::from_secs(30)).await;
        let error = error.result.unwrap();
        assert_eq!(error["task"], "fail");
        assert_eq!(error["message"], "always fails");
        let called = wait_fired(&stores, &job_at(&carrying, &[2]), Duration::from_secs(30)).await;
        let list = called.result.unwrap();
        assert_eq!(list[0], 2);
        assert_eq!(list[1]["kind"], "plugin-error", "{list}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        worker.stop().await;
        let after = job_at(&failing, &[2]);
        assert!(
            stores.results.get(&after).await.unwrap().is_none(),
            "the step after the failure never started"
        );
        let records = xylem_core::canvas::records(&stores, &failing)
            .await
            .unwrap();
        assert_eq!(
            xylem_core::canvas::node_state(&failing.root, &records),
            NodeState::Failed
        );
        let last = failed
            .history
            .last()
            .unwrap()
            .detail
            .clone()
            .unwrap_or_default();
        assert!(
            last.contains("failed here") && last.contains(&error_id),
            "{last}"
        );
    }
);

// Members whose outcome cannot be written (an outage longer than the
// lease) run again and advance the chord again: its callback is still
// enqueued once.
worker_case!(
    a_chord_calls_back_once_through_redelivered_members,
    |stores| {
        use xylem_core::Client;
        use xylem_core::canvas::{Canvas, Node};
        declare_native_tasks(&stores).await;
        let tasks = Arc::new(NativeTasks::default());
        let (faulty, wrapped) = FaultyBroker::wrap(&stores);
        let chord = Canvas::new(Node::chord(
            (0..6).map(inc).collect(),
            Node::Task(xylem_core::callback::Callback {
                queue: Some("callbacks".to_owned()),
                ..xylem_core::callback::Callback::new("sum")
            }),
        ))
        .unwrap();
        Client::new(stores.clone())
            .enqueue_canvas(&chord)
            .await
            .unwrap();
        faulty.fail(Outage::Complete, Duration::from_millis(3500));
        let mut cfg = config("canvas-redelivery");
        cfg.lease = Duration::from_secs(1);
        cfg.queues = vec!["default".to_owned()];
        let worker = start(&wrapped, &tasks, cfg);
        for i in 0..6 {
            let r = wait_terminal(&stores, &job_at(&chord, &[i]), Duration::from_secs(30)).await;
            assert_eq!(r.state, TaskState::Succeeded);
        }
        worker.stop().await;
        let redelivered = (0..6)
            .filter(|i| tasks.runs_of(&job_at(&chord, &[*i])) > 1)
            .count();
        assert!(
            redelivered > 0,
            "no member ran twice: the test proved nothing"
        );
        let calls = stores
            .broker
            .claim(
                &["callbacks".to_owned()],
                10,
                Duration::from_secs(5),
                "test",
            )
            .await
            .unwrap();
        let ids: Vec<&str> = calls.iter().map(|d| d.envelope.id.as_str()).collect();
        assert_eq!(ids, [job_at(&chord, &[6]).as_str()], "one callback");
        assert_eq!(calls[0].envelope.args, "[1,2,3,4,5,6]");
    }
);
