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
    TaskRegistry,
    Worker, WorkerConfig,
};
use xylem_wasm::{PluginRegistry, Runtime, RuntimeConfig, push_plugin};

use super::bench::{default_plugin, micros, percentile};

/// Records when each job's run starts, to measure enqueue→start latency.
struct Timed<R> {
    inner: R,
    started: Arc<Mutex<HashMap<String, Instant>>>,
}

struct TimedExecutor {
    inner: Arc<dyn Executor>,
    started: Arc<Mutex<HashMap<String, Instant>>>,
}

#[async_trait]
impl Executor for TimedExecutor {
    async fn execute(&self, request: RunRequest, host: Arc<dyn HostCalls>) -> Outcome {
        self.started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(request.info.id.clone(), Instant::now());
        self.inner.execute(request, host).await
    }
}

#[async_trait]
impl<R: TaskRegistry> TaskRegistry for Timed<R> {
    async fn refresh(&self) -> Result<(), String> {
        self.inner.refresh().await
    }

    async fn resolve(
        &self,
        task: &str,
        pinned: Option<&str>,
    ) -> Result<Resolved, ResolveError> {
        let mut resolved = self.inner.resolve(task, pinned).await?;
        resolved.executor = Arc::new(TimedExecutor {
            inner: resolved.executor,
            started: self.started.clone(),
        });
        Ok(resolved)
    }
}

#[allow(clippy::print_stdout)]
pub(crate) async fn run(
    store_url: Option<&str>,
    jobs: u32,
    concurrency: u32,
    latency_samples: u32,
    plugin: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let temp = std::env::temp_dir().join(format!("xylem-bench-{}.db", std::process::id()));
    let url = store_url.map_or_else(|| format!("sqlite://{}", temp.display()), str::to_owned);
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
    push_plugin(&runtime, store.stores.plugins.as_ref(), &bytes).await?;
    let client = Client::new(store.stores.clone());

    // 1. Enqueue everything (no worker yet).
    let started = Instant::now();
    for i in 0..jobs {
        client
            .enqueue(EnqueueRequest::new("hello.echo", format!("{{\"n\":{i}}}")))
            .await?;
    }
    let enqueue_time = started.elapsed();

    // 2. Drain with one worker.
    let starts = Arc::new(Mutex::new(HashMap::new()));
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
    );
    let stats = worker.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let handle = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    while stats.succeeded.load(Ordering::Relaxed) < u64::from(jobs) {
        anyhow::ensure!(
            stats.dead.load(Ordering::Relaxed) == 0,
            "a benchmark job failed: see `xylem --store {url} dlq ls`"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let process_time = started.elapsed();

    // 3. Latency on the now idle worker, one job at a time.
    let mut latencies = Vec::with_capacity(latency_samples as usize);
    for i in 0..latency_samples {
        let t = Instant::now();
        let envelope = client
            .enqueue(EnqueueRequest::new("hello.echo", format!("{{\"l\":{i}}}")))
            .await?;
        let id = envelope.id;
        loop {
            if let Some(at) = starts.lock().unwrap_or_else(|e| e.into_inner()).get(&id) {
                latencies.push(at.saturating_duration_since(t));
                break;
            }
            tokio::task::yield_now().await;
        }
        client.wait(&id, Duration::from_secs(30)).await?;
    }
    let _ = stop.send(());
    let _ = handle.await;
    if store_url.is_none() {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", temp.display()));
        }
    }
    latencies.sort();
    let (p50, p99) = if latencies.is_empty() {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (percentile(&latencies, 0.5), percentile(&latencies, 0.99))
    };
    let enqueue_rate = f64::from(jobs) / enqueue_time.as_secs_f64();
    let process_rate = f64::from(jobs) / process_time.as_secs_f64();
    if json {
        let doc = serde_json::json!({
            "store": store.describe, "jobs": jobs, "concurrency": concurrency,
            "enqueue_per_second": enqueue_rate, "processed_per_second": process_rate,
            "enqueue_to_start_us": { "p50": micros(p50), "p99": micros(p99), "samples": latencies.len() },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "throughput benchmark: {jobs} × hello.echo on {} (concurrency {concurrency})",
            store.describe
        );
        println!("  enqueue     {enqueue_rate:>9.0} jobs/s  (one at a time, record + publish)");
        println!("  processed   {process_rate:>9.0} jobs/s  (reserve, fresh sandbox, result, ack)");
        println!(
            "  enqueue→start on an idle worker: p50 {:.0} µs  p99 {:.0} µs  ({} samples)",
            micros(p50),
            micros(p99),
            latencies.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
