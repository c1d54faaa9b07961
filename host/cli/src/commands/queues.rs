//! `xylem tasks` and `xylem queues`: what can run, and what is waiting;
//! pausing, resuming and purging a queue.

use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use xylem_core::queue_control::{Waiting, purge};

use crate::format;

/// What `xylem queues` does to one queue.
#[derive(Debug, Subcommand)]
pub(crate) enum QueuesCommand {
    /// Stop every worker taking jobs from QUEUE (within a second); running
    /// jobs finish, new jobs wait.
    Pause {
        /// The queue.
        queue: String,
    },
    /// Let workers take jobs from QUEUE again.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Cancel the jobs waiting in QUEUE (never the running or dead ones):
    /// each is marked cancelled and never runs.
    Purge {
        /// The queue.
        queue: String,
        /// Only ready jobs, or only delayed ones (default: both).
        #[arg(long)]
        state: Option<PurgeState>,
        /// Count what would be purged; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which waiting jobs `xylem queues purge` takes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum PurgeState {
    /// Ready to run now.
    Queued,
    /// Waiting for their time (a delay or a retry's backoff).
    Delayed,
}

/// Tasks as `xylem tasks --json` and `GET /api/tasks` give them: each
/// route with its effective defaults.
pub(crate) fn tasks_doc(routes: &[xylem_core::store::TaskRoute]) -> Vec<serde_json::Value> {
    routes
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["effective"] = serde_json::to_value(r.spec.effective()).unwrap_or_default();
            v
        })
        .collect()
}

/// Queues as `xylem queues --json` and `GET /api/queues` give them: each
/// queue's counts and whether it is paused, and a paused queue with no
/// jobs too (so it can be resumed from what is listed).
pub(crate) fn queues_doc(
    stats: &[xylem_core::store::QueueStats],
    paused: &[String],
) -> Vec<serde_json::Value> {
    let mut doc: Vec<serde_json::Value> = stats
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["paused"] = paused.contains(&s.queue).into();
            v
        })
        .collect();
    for queue in paused
        .iter()
        .filter(|q| !stats.iter().any(|s| &s.queue == *q))
    {
        doc.push(serde_json::json!({
            "queue": queue, "ready": 0, "delayed": 0, "running": 0, "dead": 0, "paused": true,
        }));
    }
    doc
}

/// `xylem tasks`: each task with its effective defaults — what a job gets
/// when its enqueue sets nothing (declared by the plugin, else the host's).
#[allow(clippy::print_stdout)]
pub(crate) async fn tasks(store_url: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let mut routes = store.stores.plugins.routes().await?;
    // Workflows are routed beside tasks; `xylem workflow` is theirs.
    routes.retain(|r| !r.task.starts_with(xylem_wasm::WORKFLOW_ROUTE_PREFIX));
    if json {
        println!("{}", serde_json::to_string_pretty(&tasks_doc(&routes))?);
        return Ok(ExitCode::SUCCESS);
    }
    if routes.is_empty() {
        println!("no tasks: push a plugin with `xylem plugin push FILE.wasm`");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            let e = r.spec.effective();
            vec![
                r.task.clone(),
                r.digest[..12].to_owned(),
                e.queue.clone(),
                e.priority.to_string(),
                e.max_retries.to_string(),
                format::ms(e.hard_time_limit_ms),
                format::count(e.fuel),
                format::bytes(e.max_memory_bytes),
                format::extras(&e),
                r.spec.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    println!(
        "{}",
        format::table(
            &[
                "TASK",
                "PLUGIN",
                "QUEUE",
                "PRI",
                "RETRIES",
                "TIMEOUT",
                "FUEL",
                "MEMORY",
                "ALSO",
                "DESCRIPTION"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
pub(crate) async fn queues(store_url: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let stats = store.stores.statistics.queue_stats().await?;
    let paused = store.stores.queue_control.paused_queues().await?;
    if json {
        let doc = queues_doc(&stats, &paused);
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    if stats.is_empty() && paused.is_empty() {
        println!("no queued jobs");
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            vec![
                s.queue.clone(),
                s.ready.to_string(),
                s.delayed.to_string(),
                s.running.to_string(),
                s.dead.to_string(),
                if paused.contains(&s.queue) {
                    "paused"
                } else {
                    ""
                }
                .to_owned(),
            ]
        })
        .collect();
    // A paused queue with nothing in it still shows.
    for queue in paused
        .iter()
        .filter(|q| !stats.iter().any(|s| &s.queue == *q))
    {
        rows.push(vec![
            queue.clone(),
            "0".into(),
            "0".into(),
            "0".into(),
            "0".into(),
            "paused".into(),
        ]);
    }
    println!(
        "{}",
        format::table(
            &["QUEUE", "READY", "DELAYED", "RUNNING", "DEAD", "PAUSED"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

/// `xylem queues pause|resume|purge`.
#[allow(clippy::print_stdout)]
pub(crate) async fn control(store_url: &str, command: QueuesCommand) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let control = &store.stores.queue_control;
    match command {
        QueuesCommand::Pause { queue } => {
            let changed = control.set_paused(&queue, true).await?;
            println!(
                "{queue}: {}",
                if changed {
                    "paused: workers take no more jobs from it (within a second); running jobs finish"
                } else {
                    "already paused"
                }
            );
        }
        QueuesCommand::Resume { queue } => {
            let changed = control.set_paused(&queue, false).await?;
            println!(
                "{queue}: {}",
                if changed { "resumed" } else { "was not paused" }
            );
        }
        QueuesCommand::Purge {
            queue,
            state,
            dry_run,
        } => {
            let which = Waiting {
                ready: !matches!(state, Some(PurgeState::Delayed)),
                delayed: !matches!(state, Some(PurgeState::Queued)),
            };
            if dry_run {
                let stats = store.stores.statistics.queue_stats().await?;
                let n = stats.iter().find(|s| s.queue == queue).map_or(0, |s| {
                    u64::from(which.ready) * s.ready + u64::from(which.delayed) * s.delayed
                });
                println!("{queue}: {n} waiting job(s) would be purged (dry run: nothing changed)");
            } else {
                let n = purge(&store.stores, &queue, which).await?;
                println!("{queue}: {n} waiting job(s) purged (marked cancelled)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
pub(crate) async fn health(store_url: &str, json: bool) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let store = crate::store::open(store_url).await?;
    let version = store.health().await?;
    let latency = started.elapsed();
    if json {
        let doc = serde_json::json!({
            "store": store_url, "ok": true, "version": version,
            "latency_ms": latency.as_secs_f64() * 1e3,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!(
            "ok: {} ({version}), round trip {}",
            store.describe,
            format::duration(latency)
        );
    }
    Ok(ExitCode::SUCCESS)
}
