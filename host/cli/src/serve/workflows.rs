//! `/api/workflows`: start a run, list runs, show one, signal it, cancel it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use xylem_core::store::RunFilter;
use xylem_core::time::now_ms;
use xylem_core::workflow::{Run, StartError};

use super::Api;
use super::error::{ApiError, json_body};
use super::views::query;

/// Most runs one listing returns.
const MAX_LIST: usize = 1000;

fn to_json(run: &Run) -> Json<Value> {
    Json(serde_json::to_value(run).unwrap_or_default())
}

/// Run `id`, or 404.
async fn existing(api: &Api, id: &str) -> Result<Run, ApiError> {
    api.stores()
        .workflows
        .get_run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no workflow run `{id}`")))
}

/// Reads a JSON object body into `T`, with a 400 that shows the shape.
fn body_as<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    shape: &str,
) -> Result<T, ApiError> {
    serde_json::from_value(json_body(body)?)
        .map_err(|e| ApiError::bad_request(format!("want {shape}: {e}")))
}

/// `POST /api/workflows` `{"workflow", "input", "id"?, "max_descendants"?}`
/// → 201 with the run (the workers step it).
pub(crate) async fn start(
    State(api): State<Api>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Start {
        workflow: String,
        #[serde(default)]
        input: Value,
        id: Option<String>,
        max_descendants: Option<u64>,
    }
    let s: Start = body_as(
        body,
        r#"{"workflow": NAME, "input": {...}, "id"?: ID, "max_descendants"?: N}"#,
    )?;
    let engine = crate::commands::workflow::starter(&api.client);
    let options = xylem_core::workflow::StartOptions {
        id: s.id,
        max_descendants: s.max_descendants,
        ..Default::default()
    };
    let run = engine
        .start_with(&s.workflow, &s.input.to_string(), options, now_ms())
        .await
        .map_err(|e| match e {
            StartError::Store(e) => e.into(),
            StartError::Duplicate(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            other => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
        })?;
    Ok((StatusCode::CREATED, to_json(&run)))
}

/// Which runs to list.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunQuery {
    workflow: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
}

/// `GET /api/workflows?workflow=&state=&limit=`: runs, newest first.
pub(crate) async fn list(
    State(api): State<Api>,
    q: Result<axum::extract::Query<RunQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let state = q
        .state
        .map(|s| serde_json::from_value(Value::String(s)))
        .transpose()
        .map_err(|_| {
            ApiError::bad_request("state: one of running, waiting, succeeded, failed, cancelled")
        })?;
    let filter = RunFilter {
        workflow: q.workflow,
        state,
        limit: q.limit.unwrap_or(0).min(MAX_LIST),
    };
    let runs = api.stores().workflows.list_runs(&filter).await?;
    Ok(Json(serde_json::to_value(runs).unwrap_or_default()))
}

/// `GET /api/workflows/{id}`: one run, with its history.
pub(crate) async fn show(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(to_json(&existing(&api, &id).await?))
}

/// `POST /api/workflows/{id}/signal` `{"topic", "payload"?}`: an event the
/// run may be waiting for.
pub(crate) async fn signal(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Signal {
        topic: String,
        #[serde(default)]
        payload: Value,
    }
    let s: Signal = body_as(body, r#"{"topic": T, "payload"?: ...}"#)?;
    existing(&api, &id).await?;
    xylem_core::workflow::signal(&api.client, &id, &s.topic, &s.payload.to_string(), now_ms())
        .await?;
    Ok(Json(json!({ "run": id, "sent": s.topic })))
}

/// `POST /api/workflows/{id}/cancel` `{"reason"?}`: its waits end
/// `cancelled`; it may compensate.
pub(crate) async fn cancel(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Cancel {
        reason: Option<String>,
        /// How long its compensation may take (`"10m"`).
        deadline: Option<String>,
    }
    let empty = body.as_ref().is_ok_and(Bytes::is_empty);
    let c: Cancel = if empty {
        Cancel::default()
    } else {
        body_as(body, r#"{"reason"?: TEXT, "deadline"?: "10m"}"#)?
    };
    let run = existing(&api, &id).await?;
    if run.state.is_final() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "run {id} has ended ({}): nothing to cancel",
                run.state.as_str()
            ),
        ));
    }
    let deadline = c
        .deadline
        .as_deref()
        .map(xylem_core::limits::parse_duration)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("deadline: {e}")))?;
    let reason = c
        .reason
        .unwrap_or_else(|| "cancelled through the API".to_owned());
    xylem_core::workflow::request_cancel_within(&api.client, &id, &reason, deadline).await?;
    Ok(Json(json!({ "run": id, "cancel_requested": reason })))
}
