//! `xylem bench` (no subcommand): jobs through a real store and worker.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use xylem_core::{
    Client, EnqueueRequest, Executor, HostCalls, Outcome, ResolveError, Resolved, RunRequest,
    TaskRegistry, Worker, WorkerConfig, WorkerStats,
};
use xylem_wasm::{PluginRegistry, Runtime, RuntimeConfig, push_plugin};

use super::bench::{default_plugin, micros, percentile, store_or_temp};

/// When each job's run started, and a wake-up for whoever waits on it.
#[derive(Default)]
struct Starts {
    at: Mutex<HashMap<String, Instant>>,
    recorded: tokio::sync::Notify,
}

impl Starts {
    fn record(&self, id: &str) {
        self.at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned(), Instant::now());
        self.recorded.notify_waiters();
    }

    /// Waits (without spinning: a spinning waiter would take a core from
    /// the worker it measures) until job `id` has started.
    async fn wait(&self, id: &str) -> Instant {
        loop {
            let recorded = self.recorded.notified();
            tokio::pin!(recorded);
            recorded.as_mut().enable();
            if let Some(at) = self.at.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
                return *at;
            }
            recorded.await;
        }
    }
}

/// Records when each job's run starts, to measure enqueue→start latency.
struct Timed<R> {
    inner: R,
    started: Arc<Starts>,
}

struct TimedExecutor {
    inner: Arc<dyn Executor>,
    started: Arc<Starts>,
}

#[async_trait]
impl Executor for TimedExecutor {
    async fn execute(&self, request: RunRequest, host: Arc<dyn HostCalls>) -> Outcome {
        self.started.record(&request.info.id);
        self.inner.execute(request, host).await
    }
}
#[async_trait]
impl<R: TaskRegistry> TaskRegistry for Timed<R> {
    async fn refresh(&self) -> Result<(), String> {
        self.inner.refresh().await
    }

    async fn resolve(&self, task: &str, pinned: Option<&str>) -> Result<Resolved, ResolveError> {
        let mut resolved = self.inner.resolve(task, pinned).await?;
        resolved.executor = Arc::new(TimedExecutor {
            inner: resolved.executor,
            started: self.started.clone(),
        });
        Ok(resolved)
    }
}

/// How `xylem bench` feeds the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Enqueue every job first (in bulk), then time one worker draining
    /// them (BullMQ's `drain.mjs`).
    Drain,
    /// Producer and worker at once: time from the first enqueue to the
    /// last job done (BullMQ's `bench.mjs`).
    E2e,
}

/// The benchmark's knobs.
#[derive(Debug)]
pub(crate) struct Params {
    pub(crate) jobs: u32,
    pub(crate) concurrency: u32,
    pub(crate) latency_samples: u32,
    pub(crate) plugin: Option<PathBuf>,
    /// What each job runs (with `{"n": N}`).
    pub(crate) task: String,
    pub(crate) mode: Mode,
    /// e2e: enqueue in batches of this many (1: one at a time).
    pub(crate) batch: u32,
    pub(crate) json: bool,
}

fn requests(task: &str, range: std::ops::Range<u32>) -> Vec<EnqueueRequest> {
    range
        .map(|i| EnqueueRequest::new(task, format!("{{\"n\":{i}}}")))
        .collect()
}

async fn wait_processed(stats: &WorkerStats, jobs: u32, url: &str) -> anyhow::Result<()> {
    while stats.succeeded.load(Ordering::Relaxed) < u64::from(jobs) {
        anyhow::ensure!(
            stats.dead.load(Ordering::Relaxed) == 0,
            "a benchmark job failed: see `xylem --store {} dlq ls`",
            crate::store::redact(url)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(store_url: Option<&str>, p: Params) -> anyhow::Result<ExitCode> {
    let Params {
        jobs,
        concurrency,
        latency_samples,
        plugin,
        task,
        mode,
        batch,
        json,
    } = p;
    // Declared before the store, so dropped after it, however the run ends.
    let (url, _temp_db) = store_or_temp(store_url, "xylem-bench");
    let file = match plugin {
        Some(file) => file,
        None => tokio::task::spawn_blocking(default_plugin).await??,
    };
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let store = crate::store::open(&url).await?;
    let runtime = Runtime::new(RuntimeConfig {
        max_instances: concurrency + 16,
        ..RuntimeConfig::default()
    })?;
    let pushed = push_plugin(&runtime, store.stores.plugins.as_ref(), &bytes).await?;
    if pushed.task(&task).is_none() {
        anyhow::bail!(
            "{} has no task {task:?}; it has: {} (pick one with --task)",
            file.display(),
            pushed.task_names()
        );
    }
    let client = Client::new(store.stores.clone());
    let starts = Arc::new(Starts::default());
    let registry = Arc::new(Timed {
        inner: PluginRegistry::new(runtime, store.stores.plugins.clone()),
        started: starts.clone(),
    });
    let worker = Worker::new(
        store.stores.clone(),
        registry,
        WorkerConfig {
            concurrency: concurrency as usize,
            poll_interval: Duration::from_millis(20),
            name: "bench".to_owned(),
            ..WorkerConfig::default()
        },
    )?;
    let stats = worker.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let spawn_worker = move || {
        tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }))
    };

    let batch = batch.max(1);
    let (enqueue_time, process_time, handle) = match mode {
        Mode::Drain => {
            // 1. Enqueue everything in bulk (no worker yet).
            let started = Instant::now();
            client.enqueue_many(requests(&task, 0..jobs)).await?;
            let enqueue_time = started.elapsed();
            // 2. Drain with one worker.
            let started = Instant::now();
            let handle = spawn_worker();
            wait_processed(&stats, jobs, &url).await?;
            (enqueue_time, started.elapsed(), handle)
        }
        Mode::E2e => {
            let started = Instant::now();
            let handle = spawn_worker();
            let mut next = 0;
            while next < jobs {
                let end = (next + batch).min(jobs);
                if batch == 1 {
                    client.enqueue(requests(&task, next..end).remove(0)).await?;
                } else {
                    client.enqueue_many(requests(&task, next..end)).await?;
                }
                next = end;
            }
            let enqueue_time = started.elapsed();
            wait_processed(&stats, jobs, &url).await?;
            (enqueue_time, started.elapsed(), handle)
        }
    };

    // 3. Latency on the now idle worker, one job at a time.
    let mut latencies = Vec::with_capacity(latency_samples as usize);
    let mut enqueue_calls = Vec::with_capacity(latency_samples as usize);
    for i in 0..latency_samples {
        // Let the worker go idle (waiting for a wake-up) between samples.
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t = Instant::now();
        let envelope = client
            .enqueue(EnqueueRequest::new(&task, format!("{{\"n\":{i}}}")))
            .await?;
        enqueue_calls.push(t.elapsed());
        let id = envelope.id;
        latencies.push(starts.wait(&id).await.saturating_duration_since(t));
        client.wait(&id, Duration::from_secs(30)).await?;
    }
    let _ = stop.send(());
    let _ = handle.await;
    latencies.sort();
    enqueue_calls.sort();
    let enqueue_p50 = if enqueue_calls.is_empty() {
        Duration::ZERO
    } else {
        percentile(&enqueue_calls, 0.5)
    };
    let (p50, p99) = if latencies.is_empty() {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
    };
    let enqueue_rate = f64::from(jobs) / enqueue_time.as_secs_f64();
    let process_rate = f64::from(jobs) / process_time.as_secs_f64();
    let rss = crate::commands::bench::peak_rss_mib();
    let mode_name = match mode {
        Mode::Drain => "drain",
        Mode::E2e => "e2e",
    };
    if json {
        let doc = serde_json::json!({
            "store": store.describe, "mode": mode_name, "task": task, "jobs": jobs, "concurrency": concurrency,
            "enqueue_batch": if mode == Mode::Drain { 1000 } else { batch },
            "enqueue_per_second": enqueue_rate, "processed_per_second": process_rate,
            "enqueue_to_start_us": { "p50": micros(p50), "p99": micros(p99), "samples": latencies.len() },
            "enqueue_call_p50_us": micros(enqueue_p50),
            "peak_rss_mib": rss,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "throughput benchmark ({mode_name}): {jobs} × {task} on {} (concurrency {concurrency})",
            store.describe
        );
        match mode {
            Mode::Drain => {
                println!("  enqueue     {enqueue_rate:>9.0} jobs/s  (bulk, 1000 per store call)");
                println!(
                    "  processed   {process_rate:>9.0} jobs/s  (claim, fresh sandbox, result + ack)"
                );
            }
            Mode::E2e => {
                println!(
                    "  enqueue     {enqueue_rate:>9.0} jobs/s  ({} while the worker runs)",
                    if batch == 1 {
                        "one at a time".to_owned()
                    } else {
                        format!("{batch} per store call")
                    }
                );
                println!(
                    "  end to end  {process_rate:>9.0} jobs/s  (first enqueue to last job done)"
                );
            }
        }
        println!(
            "  enqueue→start on an idle worker: p50 {:.0} µs  p99 {:.0} µs  ({} samples; the enqueue call alone: p50 {:.0} µs)",
            micros(p50),
            micros(p99),
            latencies.len(),
            micros(enqueue_p50)
        );
        if let Some(rss) = rss {
            println!("  peak RSS    {rss:>9.1} MiB");
        }
    }
    Ok(ExitCode::SUCCESS)
}
