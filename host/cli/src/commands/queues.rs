//! `xylem tasks` and `xylem queues`: what can run, and what is waiting.

use std::process::ExitCode;

use crate::format;

#[allow(clippy::print_stdout)]
pub(crate) async fn tasks(store_url: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let routes = store.stores.plugins.routes().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&routes)?);
        return Ok(ExitCode::SUCCESS);
    }
    if routes.is_empty() {
        println!("no tasks: push a plugin with `xylem plugin push FILE.wasm`");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            vec![
                r.task.clone(),
                r.digest[..12].to_owned(),
                format::options(&r.spec.options),
                r.spec.description.clone().unwrap_or_default(),
            ]
        })
        .collect();
    println!(
        "{}",
        format::table(&["TASK", "PLUGIN", "DEFAULTS", "DESCRIPTION"], &rows)
    );
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
pub(crate) async fn queues(store_url: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let stats = store.stores.statistics.queue_stats().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
        return Ok(ExitCode::SUCCESS);
    }
    if stats.is_empty() {
        println!("no queued jobs");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            vec![
                s.queue.clone(),
                s.ready.to_string(),
                s.delayed.to_string(),
                s.running.to_string(),
                s.dead.to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        format::table(&["QUEUE", "READY", "DELAYED", "RUNNING", "DEAD"], &rows)
    );
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
