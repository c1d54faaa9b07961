//! `/api/jobs`: enqueue one job or a batch (all or nothing), list with
//! filters, show one, cancel one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use xylem_core::cancel::CancelResult;
use xylem_core::{ClientError, EnqueueRequest, TaskFilter, TaskState};

use super::Api;
use super::error::{ApiError, json_body};
use crate::commands::enqueue::job_request;

/// Most jobs one `GET /api/jobs` returns.
const MAX_LIST: usize = 1000;
/// Most jobs one `POST /api/jobs/batch` enqueues.
const MAX_BATCH: usize = 10_000;

/// A job object of a request body as an enqueue request (400 if it is
/// not one, naming what is wrong).
fn request(value: Value, at: Option<usize>) -> Result<EnqueueRequest, ApiError> {
    let place = at.map(|i| format!("job {i}: ")).unwrap_or_default();
    let Value::Object(object) = value else {
        return Err(ApiError::bad_request(format!(
            "{place}a job is a JSON object: {{\"task\": \"NAME\", \"args\": {{…}}, …}}"
        )));
    };
    job_request(object).map_err(|e| ApiError::bad_request(format!("{place}{e:#}")))
}

/// Puts the caller's trace context (the W3C `traceparent` and
/// `tracestate` HTTP headers) in the job's headers, unless the job names
/// its own: the job's `enqueue` span, and so the job, joins the caller's
/// trace.
fn with_caller_trace(mut req: EnqueueRequest, http: &HeaderMap) -> EnqueueRequest {
    use xylem_core::telemetry::trace::{TRACEPARENT, TRACESTATE};
    let has_own = req
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT));
    if !has_own {
        for name in [TRACEPARENT, TRACESTATE] {
            if let Some(value) = http.get(name).and_then(|v| v.to_str().ok()) {
                req.headers.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    req
}

/// `POST /api/jobs` `{"task": …, "args": …, options…}` → 201 `{"id": …}`.
pub(crate) async fn enqueue(
    State(api): State<Api>,
    http: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let req = with_caller_trace(request(json_body(body)?, None)?, &http);
    let envelope = api.client.enqueue(req).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": envelope.id, "task": envelope.task, "queue": envelope.queue })),
    ))
}

/// `POST /api/jobs/batch` `[job, …]` → 201 `{"ids": […]}`; one bad job and
/// nothing is enqueued.
pub(crate) async fn enqueue_batch(
    State(api): State<Api>,
    http: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Value::Array(jobs) = json_body(body)? else {
        return Err(ApiError::bad_request("a batch is a JSON array of jobs"));
    };
    if jobs.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a batch holds at most {MAX_BATCH} jobs, not {}", jobs.len()),
        ));
    }
    let requests = jobs
        .into_iter()
        .enumerate()
        .map(|(i, job)| request(job, Some(i)).map(|req| with_caller_trace(req, &http)))
        .collect::<Result<Vec<_>, _>>()?;
    match api.client.enqueue_many(requests).await {
        Ok(envelopes) => {
            let ids: Vec<&str> = envelopes.iter().map(|e| e.id.as_str()).collect();
            Ok((StatusCode::CREATED, Json(json!({ "ids": ids }))))
        }
        Err(ClientError::InBatch { index, source }) => {
            let inner = ApiError::from(*source);
            Err(ApiError::new(
                inner.status,
                format!("job {index}: {}; nothing was enqueued", inner.message),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/jobs` query.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    state: Option<String>,
    task: Option<String>,
    header: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/jobs?state=&task=&header=NAME%3DVALUE&limit=`: newest first.
pub(crate) async fn list(
    State(api): State<Api>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let state = q
        .state
        .as_deref()
        .map(str::parse::<TaskState>)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("state: {e}")))?;
    let header = q
        .header
        .as_deref()
        .map(crate::commands::task::parse_header)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("header: {e}")))?;
    let filter = TaskFilter {
        state,
        task: q.task,
        header,
        limit: q.limit.unwrap_or(0).min(MAX_LIST),
    };
    let records = api.stores().results.list(&filter).await?;
    Ok(Json(serde_json::to_value(records).unwrap_or_default()))
}

/// `GET /api/jobs/{id}`: its record (state, history, result or error,
/// usage, log, progress).
pub(crate) async fn show(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = api.client.get(&id).await?;
    Ok(Json(serde_json::to_value(record).unwrap_or_default()))
}

/// `POST /api/jobs/{id}/cancel`: a waiting job never runs; a running one is
/// stopped by its worker.
pub(crate) async fn cancel(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let results = xylem_core::cancel::cancel(api.stores(), std::slice::from_ref(&id)).await?;
    let outcome = match results.into_iter().next() {
        Some(CancelResult::NotFound) | None => {
            return Err(ApiError::not_found(format!("no job with id {id}")));
        }
        Some(found) => cancel_text(found),
    };
    Ok(Json(json!({ "id": id, "result": outcome })))
}

/// Longest a `wait` holds the request.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `GET /api/jobs/{id}/wait` query.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    timeout: Option<String>,
}

/// `GET /api/jobs/{id}/wait?timeout=30s` (at most 60 s): a long poll — the
/// record once the job has ended (`"done": true`), or as it stands when
/// the time is up (`"done": false`; ask again).
pub(crate) async fn wait(
    State(api): State<Api>,
    Path(id): Path<String>,
    q: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let timeout = match q.timeout.as_deref() {
        Some(t) => xylem_core::limits::parse_duration(t)
            .map_err(|e| ApiError::bad_request(format!("timeout: {e}")))?,
        None => std::time::Duration::from_secs(30),
    }
    .min(MAX_WAIT);
    let (record, done) = match api.client.wait(&id, timeout).await {
        Ok(record) => (record, true),
        Err(ClientError::Timeout { .. }) => (api.client.get(&id).await?, false),
        Err(e) => return Err(e.into()),
    };
    let mut doc = serde_json::to_value(record).unwrap_or_default();
    doc["done"] = done.into();
    Ok(Json(doc))
}

/// `GET /api/canvases/{id}`: a chain, group or chord — its state and
/// result, and each task's path, id, state, result or error.
pub(crate) async fn canvas(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        crate::commands::canvas::canvas_doc(api.stores(), &id).await?,
    ))
}

/// Most jobs one bulk action takes.
const MAX_BULK: usize = 1000;

/// `POST /api/jobs/bulk` `{"action": "cancel" | "retry" | "delete", "ids":
/// [...]}`: one action on a selection (the dashboard's filtered list).
/// `retry` puts dead jobs back in their queues; `delete` removes the
/// records of finished jobs (succeeded, cancelled, expired — a dead job is
/// purged from the dead-letter queue instead). Returns each id's outcome.
pub(crate) async fn bulk(
    State(api): State<Api>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Bulk {
        action: String,
        ids: Vec<String>,
    }
    let b: Bulk = serde_json::from_value(json_body(body)?).map_err(|e| {
        ApiError::bad_request(format!(
            "want {{\"action\": \"cancel\" | \"retry\" | \"delete\", \"ids\": [...]}}: {e}"
        ))
    })?;
    if b.ids.len() > MAX_BULK {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("at most {MAX_BULK} jobs at once, not {}", b.ids.len()),
        ));
    }
    let stores = api.stores();
    let mut results = serde_json::Map::new();
    match b.action.as_str() {
        "cancel" => {
            let outcomes = xylem_core::cancel::cancel(stores, &b.ids).await?;
            for (id, outcome) in b.ids.iter().zip(outcomes) {
                results.insert(id.clone(), cancel_text(outcome).into());
            }
        }
        "retry" => {
            let filter = xylem_core::store::DeadFilter {
                ids: b.ids.clone(),
                queue: None,
            };
            let moved = stores
                .dead_letters
                .replay_dead(&filter, std::time::Duration::ZERO)
                .await?;
            for id in &b.ids {
                let text = if moved.contains(id) {
                    "retried"
                } else {
                    "not dead: only dead jobs are retried"
                };
                results.insert(id.clone(), text.into());
            }
        }
        "delete" => {
            for id in &b.ids {
                let text = match stores.results.get(id).await? {
                    None => "not found".to_owned(),
                    Some(r)
                        if matches!(
                            r.state,
                            TaskState::Succeeded | TaskState::Cancelled | TaskState::Expired
                        ) =>
                    {
                        stores.results.expire(id, std::time::Duration::ZERO).await?;
                        "deleted".to_owned()
                    }
                    Some(r) => format!(
                        "{}: only finished jobs are deleted (cancel it, or purge it from the dead-letter queue)",
                        r.state.as_str()
                    ),
                };
                results.insert(id.clone(), text.into());
            }
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown action `{other}`: cancel, retry or delete"
            )));
        }
    }
    Ok(Json(json!({ "action": b.action, "results": results })))
}

fn cancel_text(outcome: CancelResult) -> String {
    match outcome {
        CancelResult::Cancelled => "cancelled".to_owned(),
        CancelResult::Requested => "requested".to_owned(),
        CancelResult::Finished(state) => format!("finished: {}", state.as_str()),
        CancelResult::Dead => "dead".to_owned(),
        CancelResult::NotFound => "not found".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CALLER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_job_joins_its_callers_trace_unless_it_names_its_own() {
        let mut http = HeaderMap::new();
        http.insert("traceparent", CALLER.parse().expect("a valid header"));
        let req = with_caller_trace(EnqueueRequest::new("t", "{}"), &http);
        assert_eq!(
            req.headers,
            vec![("traceparent".to_owned(), CALLER.to_owned())]
        );

        let mut own = EnqueueRequest::new("t", "{}");
        let mine = "00-11111111111111111111111111111111-2222222222222222-01";
        own.headers
            .push(("traceparent".to_owned(), mine.to_owned()));
        let req = with_caller_trace(own, &http);
        assert_eq!(
            req.headers,
            vec![("traceparent".to_owned(), mine.to_owned())]
        );
    }
}
