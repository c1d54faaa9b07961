//! `xylem worker`: runs jobs from the store's queues.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use xylem_core::limits::parse_duration;
use xylem_core::{ChildQuota, PluginStore, Worker, WorkerConfig};
use xylem_wasm::{PluginRegistry, Runtime, RuntimeConfig, push_plugin};

/// Run jobs: claim them from the queues, run each in a fresh sandbox,
/// record results, retry or dead-letter failures. Stops gracefully on
/// Ctrl-C / SIGTERM.
#[derive(Debug, Args)]
pub(crate) struct WorkerArgs {
    /// Also run a beat in this process: fire due schedules (for small
    /// deployments; any number of beats may run, each tick fires once).
    #[arg(long)]
    beat: bool,
    /// Do not step workflow runs in this process (by default every worker
    /// does, each run leased to one at a time).
    #[arg(long, conflicts_with = "workflows_only")]
    no_workflows: bool,
    /// Step workflow runs only; run no jobs (their activities are jobs for
    /// other workers).
    #[arg(long)]
    workflows_only: bool,
    /// Queues to consume, comma-separated (default: all queues).
    #[arg(long, short, value_delimiter = ',')]
    queue: Vec<String>,
    /// Most jobs run at once.
    #[arg(long, short, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Development: watch this folder and push every .wasm in it when it changes.
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// On shutdown, how long running jobs may take before they are
    /// cancelled and released back to their queue.
    #[arg(long, default_value = "30s")]
    grace: String,
    /// When a running job is cancelled (`xylem task cancel`): how long the
    /// task may take to wrap up after `cancelled()` turns true before its
    /// sandbox is stopped.
    #[arg(long, default_value = "50ms")]
    cancel_grace: String,
    /// Lease (visibility timeout) of a reserved job; renewed while it runs.
    #[arg(long, default_value = "30s")]
    lease: String,
    /// Name recorded in job histories (default: host-pid).
    #[arg(long)]
    name: Option<String>,
    /// Delete the records of finished jobs (succeeded, dead, expired) this
    /// long after they finish, e.g. 7d (default: keep them).
    #[arg(long)]
    result_ttl: Option<String>,
    /// Child jobs one run of a root job may enqueue (a root job's
    /// `--max-children` overrides it; children keep their root's).
    #[arg(long, default_value_t = ChildQuota::default().per_run, help_heading = "Child-job quotas")]
    max_children: u32,
    /// Bytes of arguments one run's children may carry in all.
    #[arg(long, default_value = "1MiB", help_heading = "Child-job quotas")]
    max_child_args: String,
    /// Deepest a descendant may be below its root job.
    #[arg(long, default_value_t = ChildQuota::default().max_depth, help_heading = "Child-job quotas")]
    max_depth: u32,
    /// Descendants one root job may have in all, over every worker and
    /// retry; and runs one tree of workflow runs may start (`child-workflow`,
    /// `schedule-at`) unless its root says otherwise.
    #[arg(long, default_value_t = ChildQuota::default().per_tree, help_heading = "Child-job quotas")]
    max_descendants: u64,
    /// Workflow instances kept between steps, so that a run's next step
    /// goes on where its code stopped instead of replaying its history
    /// (0: every step replays in a new instance). See docs/workflows.md.
    #[arg(long, default_value_t = KEPT_WORKFLOWS_DEFAULT, value_parser = clap::value_parser!(u32).range(0..=512))]
    kept_workflows: u32,
    /// Serve this worker's job metrics to Prometheus at
    /// `http://ADDR/metrics` (e.g. 127.0.0.1:9464). For OTLP export set
    /// OTEL_EXPORTER_OTLP_ENDPOINT instead (see docs/observability.md).
    #[arg(long, value_name = "ADDR", help_heading = "Telemetry")]
    metrics: Option<std::net::SocketAddr>,
}

impl WorkerArgs {
    /// Whether `--metrics` asks for a Prometheus endpoint.
    pub(crate) fn serves_metrics(&self) -> bool {
        self.metrics.is_some()
    }
}

/// Workflow instances a worker keeps between steps by default.
pub(crate) const KEPT_WORKFLOWS_DEFAULT: u32 = 64;

/// Ctrl-C / SIGTERM, listened for from the moment it is made, so a signal
/// that arrives while the worker is still starting is not lost (nor fatal).
pub(crate) struct ShutdownSignal {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignal {
    pub(crate) fn install() -> Self {
        Self {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    /// Resolves on the first Ctrl-C or SIGTERM.
    pub(crate) async fn wait(mut self) {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) async fn run(
    store_url: &str,
    args: WorkerArgs,
    telemetry: &crate::telemetry::Telemetry,
) -> anyhow::Result<ExitCode> {
    let shutdown = ShutdownSignal::install();
    for q in &args.queue {
        xylem_core::client::validate_queue_name(q)?;
    }
    let mut config = WorkerConfig {
        queues: args.queue,
        concurrency: args.concurrency as usize,
        lease: parse_duration(&args.lease)?,
        grace: parse_duration(&args.grace)?,
        cancel_grace: parse_duration(&args.cancel_grace)?,
        result_ttl: args.result_ttl.as_deref().map(parse_duration).transpose()?,
        child_quota: ChildQuota {
            per_run: args.max_children,
            per_run_args_bytes: xylem_core::limits::parse_size(&args.max_child_args)?,
            max_depth: args.max_depth,
            per_tree: args.max_descendants,
        },
        queue_depth_metrics: telemetry.collects_metrics(),
        ..WorkerConfig::default()
    };
    if let (Some(addr), Some(registry)) = (args.metrics, telemetry.prometheus()) {
        // Served until the process ends, drain included.
        crate::telemetry::prometheus::serve(addr, registry, std::future::pending()).await?;
    }
    if let Some(name) = args.name {
        config.name = name;
    }
    config.validate()?;
    // A worker may start before its store (after a reboot, in any order):
    // wait for it, saying so, until it answers or we are told to stop.
    let mut shutdown = std::pin::pin!(shutdown.wait());
    let store = tokio::select! {
        store = crate::store::open_when_up(store_url) => store?,
        () = &mut shutdown => return Ok(ExitCode::SUCCESS),
    };
    let runtime = Runtime::new(RuntimeConfig {
        // Room for the jobs, the engine's steps and the workflow
        // instances kept between steps (at most half the pool is kept).
        max_instances: args.concurrency.max(16) + 16 + 2 * args.kept_workflows,
        kept_workflows: xylem_wasm::KeptLimits {
            instances: args.kept_workflows as usize,
            ..xylem_wasm::KeptLimits::default()
        },
        ..RuntimeConfig::default()
    })?;
    if let Some(dir) = &args.plugins {
        anyhow::ensure!(dir.is_dir(), "--plugins {}: not a directory", dir.display());
        tokio::spawn(watch_plugins(
            runtime.clone(),
            store.stores.plugins.clone(),
            dir.clone(),
        ));
    }
    let workflows = (!args.no_workflows).then(|| {
        let catalog = Arc::new(xylem_wasm::StoreWorkflows::new(
            runtime.clone(),
            store.stores.plugins.clone(),
        ));
        let engine = xylem_core::workflow::Engine::new(
            xylem_core::Client::new(store.stores.clone()),
            catalog,
            &config.name,
            config.lease.max(std::time::Duration::from_secs(10)),
        )
        .with_max_descendants(args.max_descendants);
        engine.spawn(std::time::Duration::from_millis(100))
    });
    let registry = Arc::new(PluginRegistry::new(runtime, store.stores.plugins.clone()));
    tracing::info!(store = %store.describe, "connected");
    let worker = Worker::new(store.stores.clone(), registry, config)?;
    let beat = args.beat.then(|| {
        let client = xylem_core::Client::new(store.stores.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let interval = std::time::Duration::from_millis(500);
        let task = tokio::spawn(xylem_core::schedule::beat::run(client, interval, async {
            let _ = stopped.await;
        }));
        (stop, task)
    });
    if args.workflows_only {
        tracing::info!("stepping workflow runs only (--workflows-only)");
        shutdown.await;
        stop_background(beat, workflows).await;
        return Ok(ExitCode::SUCCESS);
    }
    let stats = worker.run(shutdown).await;
    stop_background(beat, workflows).await;
    tracing::info!(
        succeeded = stats.succeeded.load(std::sync::atomic::Ordering::Relaxed),
        retried = stats.retried.load(std::sync::atomic::Ordering::Relaxed),
        dead = stats.dead.load(std::sync::atomic::Ordering::Relaxed),
        released = stats.released.load(std::sync::atomic::Ordering::Relaxed),
        "done"
    );
    Ok(ExitCode::SUCCESS)
}

/// Pushes every `.wasm` in `dir` at start and whenever one changes.
async fn watch_plugins(runtime: Runtime, store: Arc<dyn PluginStore>, dir: PathBuf) {
    let mut seen: HashMap<PathBuf, (SystemTime, u64)> = HashMap::new();
    loop {
        for (path, stamp) in wasm_files(&dir) {
            if seen.get(&path) == Some(&stamp) {
                continue;
            }
            seen.insert(path.clone(), stamp);
            // The same size limit as `plugin push`.
            match super::plugin::read_component(&path, super::plugin::DEFAULT_MAX_SIZE).await {
                Ok(bytes) => match push_plugin(&runtime, store.as_ref(), &bytes).await {
                    Ok(plugin) => tracing::info!(
                        file = %path.display(),
                        digest = %&plugin.digest()[..12],
                        "reloaded plugin from --plugins folder"
                    ),
                    Err(e) => {
                        tracing::error!(file = %path.display(), error = %e, "cannot load plugin")
                    }
                },
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %format!("{e:#}"), "cannot read plugin")
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn wasm_files(dir: &Path) -> Vec<(PathBuf, (SystemTime, u64))> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .filter_map(|p| {
            let meta = std::fs::metadata(&p).ok()?;
            Some((p, (meta.modified().ok()?, meta.len())))
        })
        .collect()
}

/// Stops the beat and the workflow engine this worker runs beside it.
async fn stop_background(
    beat: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    workflows: Option<xylem_core::workflow::Background>,
) {
    if let Some((stop, task)) = beat {
        let _ = stop.send(());
        let _ = task.await;
    }
    if let Some(engine) = workflows {
        engine.stop().await;
    }
}
