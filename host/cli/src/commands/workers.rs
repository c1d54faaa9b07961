//! `xylem workers`: every worker that has written its record to the store
//! (`xylem_core::presence`) — running, stopping, stopped, or stale (its
//! beats stopped without a clean shutdown: killed, hung, or cut off).

use std::process::ExitCode;
use std::time::Duration;

use xylem_core::presence::{self, WorkerBeat};
use xylem_core::time::now_ms;

use crate::format;

/// How long ago `at` was, for a table (`3s ago`).
fn ago(now: i64, at: i64) -> String {
    let secs = u64::try_from(now.saturating_sub(at)).unwrap_or(0) / 1000;
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(secs))
    )
}

/// One worker as `--json` and `GET /api/workers` show it: its record, with `stale` and the state
/// to show.
pub(crate) fn json_row(beat: &WorkerBeat, now: i64) -> serde_json::Value {
    let mut v = serde_json::to_value(beat).unwrap_or_default();
    v["stale"] = beat.is_stale(now).into();
    v["shown_state"] = beat.shown_state(now).into();
    v
}

/// `xylem workers [--all] [--json]`.
#[allow(clippy::print_stdout)]
pub(crate) async fn list(store_url: &str, all: bool, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::store::open(store_url).await?;
    let now = now_ms();
    let mut beats = presence::list(&store.stores).await?;
    let hidden = if all {
        0
    } else {
        let before = beats.len();
        beats.retain(|b| b.state != presence::WorkerState::Stopped);
        before - beats.len()
    };
    if json {
        let doc: Vec<serde_json::Value> = beats.iter().map(|b| json_row(b, now)).collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    if beats.is_empty() {
        println!(
            "no workers{}: start one with `xylem worker`",
            if hidden > 0 {
                format!(" running ({hidden} stopped: --all shows them)")
            } else {
                String::new()
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = beats
        .iter()
        .map(|b| {
            let p = &b.processed;
            vec![
                b.name.clone(),
                b.shown_state(now).to_owned(),
                format!("{}:{}", b.host, b.pid),
                if b.queues.is_empty() {
                    "*".to_owned()
                } else {
                    b.queues.join(",")
                },
                format!("{}/{}", b.running.len(), b.concurrency),
                format!(
                    "{} ok, {} retried, {} dead, {} cancelled",
                    p.succeeded, p.retried, p.dead, p.cancelled
                ),
                ago(now, b.started_at),
                ago(now, b.last_seen),
                b.version.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        format::table(
            &[
                "NAME",
                "STATE",
                "HOST:PID",
                "QUEUES",
                "RUNNING",
                "PROCESSED",
                "STARTED",
                "LAST SEEN",
                "VERSION"
            ],
            &rows
        )
    );
    if hidden > 0 {
        println!("({hidden} stopped worker(s) not shown: --all shows them)");
    }
    Ok(ExitCode::SUCCESS)
}
