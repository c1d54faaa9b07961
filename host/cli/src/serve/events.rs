//! `GET /api/events`: server-sent events, so the dashboard (or any
//! client) redraws when something changed instead of polling.
//!
//! One watcher per `xylem serve` process, not one per client: while
//! anyone listens it reads a fingerprint of what the dashboard shows —
//! queue depths and pauses, workers, the newest jobs and workflow runs —
//! every [`WATCH_EVERY`], and bumps a generation when it differs. Each
//! stream sends `hello` on connect and `change` on every bump, with the
//! generation as data; a comment every 15 s keeps proxies from closing
//! it. Jobs finished by any worker on any machine show, since the store
//! is what is watched.

use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::watch;
use xylem_core::store::RunFilter;
use xylem_core::{Stores, TaskFilter};

use super::Api;

/// How often the store is looked at while a client listens.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// The newest jobs and runs whose changes are noticed.
const NEWEST: usize = 50;

/// What the handlers hold: the generation, and the server's stop.
#[derive(Clone)]
pub(crate) struct Changes {
    generation: watch::Receiver<u64>,
    stopped: watch::Receiver<bool>,
}

impl Changes {
    /// Starts the watcher over `stores`; it and every stream end when
    /// `stopped` turns true.
    pub(crate) fn watch(stores: Stores, stopped: watch::Receiver<bool>) -> Self {
        let (tx, generation) = watch::channel(0u64);
        let mut stop = stopped.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                // Only while someone listens (the handlers' own copy
                // is one receiver).
                if tx.receiver_count() > 1 {
                    match fingerprint(&stores).await {
                        Ok(now) => {
                            if last.is_some_and(|l| l != now) {
                                tx.send_modify(|g| *g += 1);
                            }
                            last = Some(now);
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot look for changes"),
                    }
                } else {
                    last = None;
                }
                tokio::select! {
                    () = tokio::time::sleep(WATCH_EVERY) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
        Self {
            generation,
            stopped,
        }
    }
}

/// A hash of what the dashboard shows.
async fn fingerprint(stores: &Stores) -> Result<u64, xylem_core::StoreError> {
    let newest_jobs = TaskFilter {
        limit: NEWEST,
        ..TaskFilter::default()
    };
    let newest_runs = RunFilter {
        limit: NEWEST,
        ..RunFilter::default()
    };
    let (queues, paused, workers, jobs, runs) = tokio::try_join!(
        stores.statistics.queue_stats(),
        stores.queue_control.paused_queues(),
        stores.workers.list_workers(),
        stores.results.list(&newest_jobs),
        stores.workflows.list_runs(&newest_runs),
    )?;
    let mut h = DefaultHasher::new();
    for q in &queues {
        (&q.queue, q.ready, q.delayed, q.running, q.dead).hash(&mut h);
    }
    paused.hash(&mut h);
    for w in &workers {
        let p = &w.processed;
        (&w.id, w.state.as_str(), &w.running).hash(&mut h);
        (p.succeeded, p.retried, p.dead, p.cancelled).hash(&mut h);
    }
    for j in &jobs {
        (&j.id, j.state.as_str(), j.attempt, j.updated_at).hash(&mut h);
    }
    for r in &runs {
        (&r.id, r.state.as_str(), r.version).hash(&mut h);
    }
    Ok(h.finish())
}

fn event(kind: &str, generation: u64) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event(kind)
        .data(serde_json::json!({ "generation": generation }).to_string()))
}

/// `GET /api/events`.
pub(crate) async fn events(
    State(api): State<Api>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let Changes {
        generation,
        stopped,
    } = api.changes.clone();
    let stream = futures_util::stream::unfold(
        (generation, stopped, true),
        |(mut generation, mut stopped, first)| async move {
            if first {
                let now = *generation.borrow_and_update();
                return Some((event("hello", now), (generation, stopped, false)));
            }
            let changed = tokio::select! {
                changed = generation.changed() => changed.is_ok(),
                _ = stopped.wait_for(|s| *s) => false,
            };
            if !changed {
                return None;
            }
            let now = *generation.borrow_and_update();
            Some((event("change", now), (generation, stopped, false)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
