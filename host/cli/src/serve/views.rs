//! The operator's views: health, queues, workers, tasks, and the
//! dead-letter queue (with replay and purge).

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use serde_json::{Value, json};
use xylem_core::store::DeadFilter;
use xylem_core::time::now_ms;

use super::Api;
use super::error::{ApiError, json_body};

/// Most rows a listing returns.
const MAX_LIST: usize = 1000;

fn to_json<T: serde::Serialize>(value: &T) -> Json<Value> {
    Json(serde_json::to_value(value).unwrap_or_default())
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// `GET /api/health`: the store's version and a round trip.
pub(crate) async fn health(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let version = api.store.health().await.map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("the store is unreachable: {e:#}"),
        )
    })?;
    Ok(Json(json!({
        "ok": true, "store": api.store.describe, "version": version,
        "latency_ms": started.elapsed().as_secs_f64() * 1e3,
    })))
}

/// `GET /api/queues`: counts per queue, and whether it is paused.
pub(crate) async fn queues(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let stats = api.stores().statistics.queue_stats().await?;
    let paused = api.stores().queue_control.paused_queues().await?;
    Ok(Json(Value::Array(crate::commands::queues::queues_doc(
        &stats, &paused,
    ))))
}

/// `GET /api/workers`: every worker's record, with `stale` and
/// `shown_state` (as `xylem workers --all --json`).
pub(crate) async fn workers(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let now = now_ms();
    let beats = xylem_core::presence::list(api.stores()).await?;
    let rows = beats
        .iter()
        .map(|b| crate::commands::workers::json_row(b, now))
        .collect();
    Ok(Json(Value::Array(rows)))
}

/// `GET /api/tasks`: every task of the pushed plugins, with its effective
/// defaults.
pub(crate) async fn tasks(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let mut routes = api.stores().plugins.routes().await?;
    routes.retain(|r| !r.task.starts_with(xylem_wasm::WORKFLOW_ROUTE_PREFIX));
    Ok(Json(Value::Array(crate::commands::queues::tasks_doc(
        &routes,
    ))))
}

/// The dead-letter queue's filter in a query.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadQuery {
    queue: Option<String>,
    limit: Option<usize>,
}

impl DeadQuery {
    /// The dead jobs it names: of its queue, or all.
    fn filter(self) -> DeadFilter {
        DeadFilter {
            ids: Vec::new(),
            queue: self.queue,
        }
    }
}

/// `GET /api/dlq?queue=&limit=`: dead jobs, newest first.
pub(crate) async fn dead(
    State(api): State<Api>,
    q: Result<Query<DeadQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100).min(MAX_LIST);
    let filter = q.filter();
    Ok(to_json(
        &api.stores().dead_letters.dead_jobs(&filter, limit).await?,
    ))
}

/// `POST /api/dlq/replay` `{"ids": […]}` or `{"queue": …}` or `{"all": true}`
/// (optionally `"delay_ms"`): the jobs go back to their queues.
pub(crate) async fn replay_dead(
    State(api): State<Api>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Replay {
        #[serde(default)]
        ids: Vec<String>,
        queue: Option<String>,
        #[serde(default)]
        all: bool,
        #[serde(default)]
        delay_ms: u64,
    }
    let r: Replay = serde_json::from_value(json_body(body)?).map_err(|e| {
        ApiError::bad_request(format!(
            "a replay is {{\"ids\": [...]}}, {{\"queue\": Q}} or {{\"all\": true}}: {e}"
        ))
    })?;
    if r.ids.is_empty() && r.queue.is_none() && !r.all {
        return Err(ApiError::bad_request(
            "name the jobs to replay: {\"ids\": [...]}, {\"queue\": Q}, or {\"all\": true}",
        ));
    }
    let filter = DeadFilter {
        ids: r.ids,
        queue: r.queue,
    };
    let moved = api
        .stores()
        .dead_letters
        .replay_dead(&filter, Duration::from_millis(r.delay_ms))
        .await?;
    Ok(Json(json!({ "replayed": moved })))
}

/// `DELETE /api/dlq?queue=`: deletes dead jobs (of one queue, or all).
pub(crate) async fn purge_dead(
    State(api): State<Api>,
    q: Result<Query<DeadQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let filter = query(q)?.filter();
    let purged = api.stores().dead_letters.purge_dead(&filter).await?;
    Ok(Json(json!({ "purged": purged })))
}

/// `POST /api/queues/{queue}/pause` and `/resume`: workers stop (within a
/// second) or start again taking jobs from it.
async fn set_paused(api: &Api, queue: &str, paused: bool) -> Result<Json<Value>, ApiError> {
    xylem_core::client::validate_queue_name(queue)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    api.stores().queue_control.set_paused(queue, paused).await?;
    Ok(Json(json!({ "queue": queue, "paused": paused })))
}

/// `POST /api/queues/{queue}/pause`.
pub(crate) async fn pause(
    State(api): State<Api>,
    axum::extract::Path(queue): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&api, &queue, true).await
}

/// `POST /api/queues/{queue}/resume`.
pub(crate) async fn resume(
    State(api): State<Api>,
    axum::extract::Path(queue): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&api, &queue, false).await
}
