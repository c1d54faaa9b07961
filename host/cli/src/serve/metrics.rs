//! `GET /metrics`: what the store knows, in Prometheus' text format (read
//! at each scrape, so any number of `xylem serve` give the same answer):
//! jobs per queue and state, workers per state, and each worker's counts
//! from its record.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use xylem_core::time::now_ms;

use super::Api;
use super::error::ApiError;

/// A label value as the format wants it (`\`, `"` and newlines escaped).
fn label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// One metric family's header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// The text the scrape gets.
pub(crate) async fn render(api: &Api) -> Result<String, ApiError> {
    let stores = api.stores();
    let queues = stores.statistics.queue_stats().await?;
    let paused = stores.queue_control.paused_queues().await?;
    let workers = xylem_core::presence::list(stores).await?;
    let now = now_ms();
    let mut out = String::new();

    family(
        &mut out,
        "xylem_queue_jobs",
        "gauge",
        "Jobs in a queue, by state (ready, delayed, running, dead).",
    );
    for q in &queues {
        for (state, n) in [
            ("ready", q.ready),
            ("delayed", q.delayed),
            ("running", q.running),
            ("dead", q.dead),
        ] {
            let _ = writeln!(
                out,
                "xylem_queue_jobs{{queue=\"{}\",state=\"{state}\"}} {n}",
                label(&q.queue)
            );
        }
    }
    family(
        &mut out,
        "xylem_queue_paused",
        "gauge",
        "1 if the queue is paused.",
    );
    for q in &queues {
        let on = u8::from(paused.contains(&q.queue));
        let _ = writeln!(
            out,
            "xylem_queue_paused{{queue=\"{}\"}} {on}",
            label(&q.queue)
        );
    }
    family(
        &mut out,
        "xylem_workers",
        "gauge",
        "Workers by state (running, stopping, stale; stopped ones kept a day).",
    );
    for state in ["running", "stopping", "stale", "stopped"] {
        let n = workers
            .iter()
            .filter(|w| w.shown_state(now) == state)
            .count();
        let _ = writeln!(out, "xylem_workers{{state=\"{state}\"}} {n}");
    }
    family(
        &mut out,
        "xylem_worker_running_jobs",
        "gauge",
        "Jobs a worker is running, from its last record.",
    );
    for w in workers.iter().filter(|w| w.shown_state(now) != "stopped") {
        let _ = writeln!(
            out,
            "xylem_worker_running_jobs{{worker=\"{}\",id=\"{}\"}} {}",
            label(&w.name),
            label(&w.id),
            w.running.len()
        );
    }
    family(
        &mut out,
        "xylem_worker_jobs_total",
        "counter",
        "Jobs a worker has finished since it started, by outcome (succeeded, retried, dead, cancelled).",
    );
    for w in workers.iter().filter(|w| w.shown_state(now) != "stopped") {
        let p = &w.processed;
        for (outcome, n) in [
            ("succeeded", p.succeeded),
            ("retried", p.retried),
            ("dead", p.dead),
            ("cancelled", p.cancelled),
        ] {
            let _ = writeln!(
                out,
                "xylem_worker_jobs_total{{worker=\"{}\",id=\"{}\",outcome=\"{outcome}\"}} {n}",
                label(&w.name),
                label(&w.id)
            );
        }
    }
    Ok(out)
}

/// `GET /metrics`.
pub(crate) async fn metrics(State(api): State<Api>) -> Result<impl IntoResponse, ApiError> {
    let text = render(&api).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}
