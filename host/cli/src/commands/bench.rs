//! `xylem bench`: measurements on this machine.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use xylem_core::{CancelToken, Limits, NoHostCalls, RunRequest, TaskInfo};
use xylem_wasm::{Runtime, RuntimeConfig, push_plugin};

use crate::format;

/// Throughput of no-op Wasm jobs through a store: enqueue N `hello.echo`
/// jobs (or --task of --plugin), drain them with a worker, report
/// enqueue/s, processed/s and the enqueue→start latency on an idle worker.
/// Without --store, a fresh SQLite file in the temp folder is used.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    /// Jobs to enqueue and process.
    #[arg(long, default_value_t = 5000)]
    jobs: u32,
    /// Worker concurrency.
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// Jobs timed one at a time for the latency figures.
    #[arg(long, default_value_t = 200)]
    latency_samples: u32,
    /// The component to use; default: build plugins/hello.
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// The task each job runs, with `{"n": N}` as its arguments: an echo
    /// task measures the platform, not the task (`py.echo`, `js.echo` and
    /// `c.echo` in the other example plugins).
    #[arg(long, default_value = "hello.echo")]
    task: String,
    /// drain: enqueue everything, then time the worker; e2e: producer and
    /// worker at once.
    #[arg(long, value_enum, default_value = "drain")]
    mode: super::throughput::Mode,
    /// e2e: jobs per enqueue call (1: one at a time, like `bench.mjs`;
    /// 1000: like its `bulk`).
    #[arg(long, default_value_t = 1)]
    batch: u32,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Per-job sandbox cost (fresh store + instance + call + drop) and
    /// component compile time versus cached load time.
    Sandbox {
        /// The component to measure; default: build plugins/hello.
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// The task to call.
        #[arg(long, default_value = "hello.echo")]
        task: String,
        /// Its JSON arguments.
        #[arg(long, default_value = r#"{"ping":1}"#)]
        args: String,
        /// How many runs to time.
        #[arg(long, default_value_t = 5000)]
        iterations: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Durable workflows: runs/s of a three-step workflow (order.express)
    /// with a worker and an engine in this process, the engine's time per
    /// step, and the replay of a long history as after a crash. Builds
    /// plugins/order and plugins/order-workflow. Without --store, a fresh
    /// SQLite file in the temp folder.
    Workflow {
        /// Runs of order.express to start, then complete.
        #[arg(long, default_value_t = 2000)]
        runs: u32,
        /// Worker concurrency (the activities' jobs).
        #[arg(long, default_value_t = 16)]
        concurrency: u32,
        /// Engine steps timed one run at a time.
        #[arg(long, default_value_t = 400)]
        steps_timed: u32,
        /// Calls in the history replayed.
        #[arg(long, default_value_t = 1000)]
        replay_calls: u32,
        /// Workflow instances kept between steps (0: every step replays
        /// in a new instance), as `xylem worker --kept-workflows`.
        #[arg(long, default_value_t = super::worker::KEPT_WORKFLOWS_DEFAULT)]
        kept_workflows: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) async fn run(store_url: Option<&str>, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let Some(cmd) = args.command else {
        return super::throughput::run(
            store_url,
            super::throughput::Params {
                jobs: args.jobs,
                concurrency: args.concurrency,
                latency_samples: args.latency_samples,
                plugin: args.plugin,
                task: args.task,
                mode: args.mode,
                batch: args.batch,
                json: args.json,
            },
        )
        .await;
    };
    match cmd {
        BenchCommand::Sandbox {
            plugin,
            task,
            args,
            iterations,
            json,
        } => sandbox(plugin, &task, &args, iterations, json).await,
        BenchCommand::Workflow {
            runs,
            concurrency,
            steps_timed,
            replay_calls,
            kept_workflows,
            json,
        } => {
            super::bench_workflow::run(
                store_url,
                super::bench_workflow::Params {
                    runs,
                    concurrency,
                    steps_timed,
                    replay_calls,
                    kept_workflows,
                    json,
                },
            )
            .await
        }
    }
}

pub(crate) fn default_plugin() -> anyhow::Result<PathBuf> {
    let dir = Path::new("plugins/hello");
    anyhow::ensure!(
        dir.join("Cargo.toml").is_file(),
        "no --plugin given and no plugins/hello here: run from the Xylem repository or pass --plugin FILE.wasm"
    );
    Ok(xylem_wasm::build_plugin(dir)?)
}

/// A benchmark's own SQLite file in the temp folder (when no --store is
/// given), removed with its WAL when dropped — on success or error.
pub(crate) struct TempDb(PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// The store a benchmark uses: `--store`, or a fresh SQLite file named
/// after `prefix` and this process, with the guard that removes it.
pub(crate) fn store_or_temp(store_url: Option<&str>, prefix: &str) -> (String, Option<TempDb>) {
    match store_url {
        Some(url) => (url.to_owned(), None),
        None => {
            let file = std::env::temp_dir().join(format!("{prefix}-{}.db", std::process::id()));
            (format!("sqlite://{}", file.display()), Some(TempDb(file)))
        }
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub(crate) fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[allow(clippy::print_stdout)]
async fn sandbox(
    plugin: Option<PathBuf>,
    task: &str,
    args: &str,
    iterations: u32,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let file = match plugin {
        Some(file) => file,
        None => tokio::task::spawn_blocking(default_plugin).await??,
    };
    let bytes = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;

    // Compile into an empty cache, then load from it with a new runtime.
    // A fresh private folder (0700, unpredictable name), removed on drop.
    let cache = tempfile::Builder::new()
        .prefix("xylem-bench-")
        .tempdir()
        .context("cannot make a temporary cache folder")?;
    let config = RuntimeConfig {
        cache_dir: Some(cache.path().join("components")),
        ..RuntimeConfig::default()
    };
    // Pushed by one machine (compiles, shares the code through a store
    // under a throwaway key), loaded by another (its own empty cache) from
    // the store, then by a third from the first one's cache. The store is
    // this process's memory: a fixed key is fine.
    let key = "xylem bench: an in-memory store's throwaway key";
    let sharing = |dir: &str| RuntimeConfig {
        cache_dir: Some(cache.path().join(dir)),
        shared_key: Some(key.as_bytes().to_vec()),
        ..config.clone()
    };
    let store = xylem_core::memory::MemoryStore::new();
    let cold = push_plugin(&Runtime::new(sharing("components"))?, &store, &bytes).await?;
    let from_store = Runtime::new(sharing("elsewhere"))?
        .load_stored(&bytes, &store)
        .await?;
    anyhow::ensure!(
        from_store.load_stats().shared,
        "the compiled code was not loaded from the store"
    );
    let runtime = Runtime::new(config)?;
    let plugin = runtime.load(&bytes).await?;
    drop(cache);
    let (compile, shared, cached) = (
        cold.load_stats(),
        from_store.load_stats(),
        plugin.load_stats(),
    );

    let host = Arc::new(NoHostCalls);
    let request = |i: u32| RunRequest {
        info: TaskInfo::new(format!("bench-{i}"), task),
        args: args.to_owned(),
        limits: Limits::default(),
        cancel: CancelToken::new(),
    };
    // Warm up allocator pools and caches.
    for i in 0..iterations.min(200) {
        let outcome = plugin.run(request(i), host.clone()).await;
        anyhow::ensure!(outcome.is_success(), "{task} failed: {:?}", outcome.error);
    }
    let mut times = Vec::with_capacity(iterations as usize);
    let started = Instant::now();
    for i in 0..iterations {
        let t = Instant::now();
        let outcome = plugin.run(request(i), host.clone()).await;
        times.push(t.elapsed());
        anyhow::ensure!(outcome.is_success(), "{task} failed: {:?}", outcome.error);
    }
    let total = started.elapsed();
    times.sort();
    let (p50, p90, p99) = (
        percentile(&times, 0.50),
        percentile(&times, 0.90),
        percentile(&times, 0.99),
    );
    let per_sec = f64::from(iterations) / total.as_secs_f64();

    if json {
        let doc = serde_json::json!({
            "plugin": file,
            "task": task,
            "iterations": iterations,
            "run_us": { "p50": micros(p50), "p90": micros(p90), "p99": micros(p99),
                        "min": micros(times[0]), "max": micros(times[times.len() - 1]) },
            "runs_per_second": per_sec,
            "compile_ms": compile.compile_time.as_secs_f64() * 1e3,
            "compile_load_ms": compile.load_time.as_secs_f64() * 1e3,
            "cached_load_ms": cached.load_time.as_secs_f64() * 1e3,
            "shared_load_ms": shared.load_time.as_secs_f64() * 1e3,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("sandbox benchmark: {task} in {}", file.display());
        println!(
            "  fresh store + instance + call, {} runs (pooling allocator, one at a time):",
            format::count(u64::from(iterations))
        );
        println!(
            "    p50 {:.1} µs   p90 {:.1} µs   p99 {:.1} µs   ({:.0} runs/s)",
            micros(p50),
            micros(p90),
            micros(p99),
            per_sec
        );
        println!(
            "  component compile: {}   cached load: {}   load of another machine's compile from the store: {}",
            format::duration(compile.compile_time + compile.load_time),
            format::duration(cached.load_time),
            format::duration(shared.load_time)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// This process's peak resident memory (VmHWM), in MiB, where the OS
/// tells it (Linux).
pub(crate) fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
