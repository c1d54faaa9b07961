//! `xylem bench workflow`: durable workflows through a real store, with a
//! worker and an engine in this process (what `xylem worker` runs):
//!
//! 1. runs per second of the three-step `order.express` (validate →
//!    charge → ship, each an activity job), every run started first;
//! 2. one run at a time: the time of each engine step and the part of it
//!    spent in the workflow's code (the rest is the engine: lease, effects,
//!    the run's write);
//! 3. the replay of a long history, as after a crash: an `order.batch`
//!    run of N activities read back from the store and replayed from the
//!    top in a fresh instance.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use xylem_core::workflow::{Engine, Replayer, Run, StepEnd, WorkflowCatalog, WorkflowCode};
use xylem_core::{Client, Worker, WorkerConfig};
use xylem_wasm::{PluginRegistry, Runtime, RuntimeConfig, StoreWorkflows};

use super::bench::{micros, percentile};

/// The benchmark's knobs.
#[derive(Debug)]
pub(crate) struct Params {
    pub(crate) runs: u32,
    pub(crate) concurrency: u32,
    pub(crate) steps_timed: u32,
    pub(crate) replay_calls: u32,
    pub(crate) kept_workflows: u32,
    pub(crate) json: bool,
}

/// Times the workflow code's part of each step.
struct TimedCatalog {
    inner: StoreWorkflows,
    code_times: Arc<Mutex<Vec<Duration>>>,
}

struct TimedCode {
    inner: Arc<dyn WorkflowCode>,
    code_times: Arc<Mutex<Vec<Duration>>>,
}

#[async_trait]
impl WorkflowCode for TimedCode {
    async fn step(&self, replayer: Replayer) -> (Replayer, StepEnd) {
        let t = Instant::now();
        let out = self.inner.step(replayer).await;
        self.code_times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(t.elapsed());
        out
    }
}

#[async_trait]
impl WorkflowCatalog for TimedCatalog {
    async fn current(&self, workflow: &str) -> Result<Option<String>, String> {
        self.inner.current(workflow).await
    }

    async fn code(&self, workflow: &str, plugin: &str) -> Result<Arc<dyn WorkflowCode>, String> {
        Ok(Arc::new(TimedCode {
            inner: self.inner.code(workflow, plugin).await?,
            code_times: self.code_times.clone(),
        }))
    }
}

fn build(dir: &str) -> anyhow::Result<Vec<u8>> {
    let dir = Path::new(dir);
    anyhow::ensure!(
        dir.join("Cargo.toml").is_file(),
        "no {} here: run `xylem bench workflow` from the Xylem repository",
        dir.display()
    );
    let file = xylem_wasm::build_plugin(dir)?;
    std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))
}

/// Waits until every run in `ids` has ended; fails on one that did not
/// succeed.
async fn wait_all(client: &Client, ids: &[String], within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    for id in ids {
        loop {
            let run = client.stores().workflows.get_run(id).await?;
            if let Some(run) = run.filter(|r| r.state.is_final()) {
                anyhow::ensure!(
                    run.state == xylem_core::workflow::RunState::Succeeded,
                    "benchmark run {id} ended {}: {:?}",
                    run.state.as_str(),
                    run.error
                );
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "benchmark run {id} did not end within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

fn order(i: u32) -> String {
    format!(r#"{{"id":"o{i}","amount_cents":{}}}"#, 100 + i)
}

#[allow(clippy::print_stdout, clippy::too_many_lines)]
pub(crate) async fn run(store_url: Option<&str>, p: Params) -> anyhow::Result<ExitCode> {
    // Declared before the store, so dropped after it, however the run ends.
    let (url, _temp_db) = super::bench::store_or_temp(store_url, "xylem-bench-wf");
    let (tasks, workflows) = tokio::task::spawn_blocking(|| {
        anyhow::Ok((build("plugins/order")?, build("plugins/order-workflow")?))
    })
    .await??;
    let store = crate::store::open(&url).await?;
    let runtime = Runtime::new(RuntimeConfig {
        // As `xylem worker`: jobs, steps and kept workflow instances.
        max_instances: p.concurrency + 32 + 2 * p.kept_workflows,
        kept_workflows: xylem_wasm::KeptLimits {
            instances: p.kept_workflows as usize,
            ..xylem_wasm::KeptLimits::default()
        },
        ..RuntimeConfig::default()
    })?;
    xylem_wasm::push_plugin(&runtime, store.stores.plugins.as_ref(), &tasks).await?;
    xylem_wasm::push_workflow_plugin(&runtime, store.stores.plugins.as_ref(), &workflows).await?;
    let client = Client::new(store.stores.clone());
    let code_times = Arc::new(Mutex::new(Vec::new()));
    let catalog = Arc::new(TimedCatalog {
        inner: StoreWorkflows::new(runtime.clone(), store.stores.plugins.clone()),
        code_times: code_times.clone(),
    });
    let engine = Engine::new(
        client.clone(),
        catalog.clone(),
        "bench-engine",
        Duration::from_secs(30),
    );
    let worker = Worker::new(
        store.stores.clone(),
        Arc::new(PluginRegistry::new(
            runtime.clone(),
            store.stores.plugins.clone(),
        )),
        WorkerConfig {
            concurrency: p.concurrency as usize,
            poll_interval: Duration::from_millis(20),
            name: "bench".to_owned(),
            ..WorkerConfig::default()
        },
    )?;
    let (stop_worker, worker_stopped) = tokio::sync::oneshot::channel::<()>();
    let worker_task = tokio::spawn(worker.run(async {
        let _ = worker_stopped.await;
    }));
    let now = xylem_core::time::now_ms;

    // 1. Throughput: every run started first, then the engine.
    let t = Instant::now();
    let mut ids = Vec::with_capacity(p.runs as usize);
    for i in 0..p.runs {
        ids.push(
            engine
                .start("order.express", &order(i), None, now())
                .await?
                .id,
        );
    }
    let start_time = t.elapsed();
    let background_engine = engine.spawn(Duration::from_millis(10));
    let t = Instant::now();
    wait_all(&client, &ids, Duration::from_secs(600)).await?;
    let run_time = t.elapsed();
    background_engine.stop().await;

    // 2. One run at a time: each step timed, and its code's part.
    code_times.lock().unwrap_or_else(|e| e.into_inner()).clear();
    let mut step_times = Vec::new();
    let mut runs_done = 0;
    while step_times.len() < p.steps_timed as usize {
        let id = engine
            .start("order.express", &order(1_000_000 + runs_done), None, now())
            .await?
            .id;
        runs_done += 1;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let t = Instant::now();
            if engine.tick(now(), 1).await? == 1 {
                step_times.push(t.elapsed());
            }
            let run = client.stores().workflows.get_run(&id).await?;
            if run.is_some_and(|r| r.state.is_final()) {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "run {id} did not end");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let mut code = code_times.lock().unwrap_or_else(|e| e.into_inner()).clone();

    // 3. Replay of a long history.
    let batch = engine
        .start(
            "order.batch",
            &format!(r#"{{"orders":{}}}"#, p.replay_calls),
            None,
            now(),
        )
        .await?
        .id;
    let background_engine = engine.spawn(Duration::from_millis(1));
    let t = Instant::now();
    wait_all(
        &client,
        std::slice::from_ref(&batch),
        Duration::from_secs(900),
    )
    .await?;
    let batch_time = t.elapsed();
    background_engine.stop().await;
    let mut replays = Vec::new();
    let mut loads = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let run: Run = client
            .stores()
            .workflows
            .get_run(&batch)
            .await?
            .context("the batch run is gone")?;
        let code = catalog
            .inner
            .code(&run.workflow, &run.plugin)
            .await
            .map_err(anyhow::Error::msg)?;
        loads.push(t.elapsed());
        let calls = run.history.len();
        let (replayer, end) = code.step(Replayer::new(run, now())).await;
        anyhow::ensure!(
            matches!(end, StepEnd::Returned(Ok(_))) && replayer.calls_made() == calls,
            "the replay did not come back the same: {end:?}"
        );
        replays.push(t.elapsed());
    }

    let _ = stop_worker.send(());
    let _ = worker_task.await;
    step_times.sort();
    code.sort();
    replays.sort();
    loads.sort();
    let runs_per_s = f64::from(p.runs) / run_time.as_secs_f64();
    let starts_per_s = f64::from(p.runs) / start_time.as_secs_f64();
    let step_p50 = percentile(&step_times, 0.5);
    let code_p50 = percentile(&code, 0.5);
    let replay_p50 = percentile(&replays, 0.5);
    let load_p50 = percentile(&loads, 0.5);
    let rss = super::bench::peak_rss_mib();
    let kept = runtime.kept_workflow_stats();
    if p.json {
        let doc = serde_json::json!({
            "store": store.describe, "runs": p.runs, "concurrency": p.concurrency,
            "runs_per_second": runs_per_s, "starts_per_second": starts_per_s,
            "step_us": { "p50": micros(step_p50), "p99": micros(percentile(&step_times, 0.99)), "samples": step_times.len() },
            "code_us": { "p50": micros(code_p50), "samples": code.len() },
            "engine_overhead_us_p50": micros(step_p50.saturating_sub(code_p50)),
            "replay": { "calls": p.replay_calls, "p50_ms": replay_p50.as_secs_f64() * 1e3, "load_p50_ms": load_p50.as_secs_f64() * 1e3, "whole_run_s": batch_time.as_secs_f64() },
            "kept_instances": { "steps_resumed": kept.resumed, "steps_started": kept.started },
            "peak_rss_mib": rss,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "workflow benchmark: {} × order.express (validate → charge → ship) on {} (worker concurrency {})",
            p.runs, store.describe, p.concurrency
        );
        println!("  started     {starts_per_s:>9.0} runs/s  (one start at a time)");
        println!(
            "  completed   {runs_per_s:>9.0} runs/s  (3 activity jobs and 4 engine steps each)"
        );
        println!(
            "  one step    p50 {:.0} µs  p99 {:.0} µs  ({} steps, one run at a time); the workflow's code: p50 {:.0} µs; the engine: {:.0} µs",
            micros(step_p50),
            micros(percentile(&step_times, 0.99)),
            step_times.len(),
            micros(code_p50),
            micros(step_p50.saturating_sub(code_p50)),
        );
        println!(
            "  replay      p50 {:.1} ms  for a {}-call history read from the store and replayed in a fresh instance (the read and load: {:.1} ms); the whole run took {:.1} s",
            replay_p50.as_secs_f64() * 1e3,
            p.replay_calls,
            load_p50.as_secs_f64() * 1e3,
            batch_time.as_secs_f64()
        );
        println!(
            "  kept        {} steps went on in the instance their run's last step left, {} started one (a run's first step, or a replay)",
            kept.resumed, kept.started
        );
        if let Some(rss) = rss {
            println!("  peak RSS    {rss:>9.1} MiB");
        }
    }
    Ok(ExitCode::SUCCESS)
}
