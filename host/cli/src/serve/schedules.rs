//! `/api/schedules`: list, add (a schedule file's entry as JSON), show,
//! remove, enable, disable, and the next fire times.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use xylem_core::schedule::Schedule;

use super::Api;
use super::error::{ApiError, json_body};
use super::views::query;
use crate::commands::schedule::{add_schedule, definition_entry, set_schedule_enabled, upcoming};

fn to_json(schedule: &Schedule) -> Json<Value> {
    Json(serde_json::to_value(schedule).unwrap_or_default())
}

/// Schedule `name`, or 404.
async fn existing(api: &Api, name: &str) -> Result<Schedule, ApiError> {
    api.stores()
        .schedules
        .get_schedule(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no schedule named `{name}`")))
}

/// `GET /api/schedules`.
pub(crate) async fn list(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let all = api.stores().schedules.list_schedules().await?;
    Ok(Json(serde_json::to_value(all).unwrap_or_default()))
}

/// `POST /api/schedules` `{"name", "task", "args", "cron" | "every" | "at",
/// …}` (an entry of a schedule file) → 201 with the schedule; 409 if the
/// name is taken, 422 if it cannot work (an unknown task, a bad spec).
pub(crate) async fn add(
    State(api): State<Api>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (name, definition) = definition_entry(json_body(body)?).map_err(ApiError::bad_request)?;
    if api.stores().schedules.get_schedule(&name).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("a schedule named `{name}` exists"),
        ));
    }
    let schedule = add_schedule(api.stores(), &name, &definition)
        .await
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    Ok((StatusCode::CREATED, to_json(&schedule)))
}

/// `GET /api/schedules/{name}`.
pub(crate) async fn show(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(to_json(&existing(&api, &name).await?))
}

/// `DELETE /api/schedules/{name}`.
pub(crate) async fn remove(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if !api.stores().schedules.remove_schedule(&name).await? {
        return Err(ApiError::not_found(format!("no schedule named `{name}`")));
    }
    Ok(Json(json!({ "removed": name })))
}

async fn set_enabled(api: &Api, name: &str, enabled: bool) -> Result<Json<Value>, ApiError> {
    existing(api, name).await?;
    let schedule = set_schedule_enabled(api.stores(), name, enabled)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("{e:#}")))?;
    Ok(to_json(&schedule))
}

/// `POST /api/schedules/{name}/enable`.
pub(crate) async fn enable(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_enabled(&api, &name, true).await
}

/// `POST /api/schedules/{name}/disable`.
pub(crate) async fn disable(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_enabled(&api, &name, false).await
}

/// `GET /api/schedules/{name}/next` query.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NextQuery {
    count: Option<usize>,
}

/// `GET /api/schedules/{name}/next?count=5` (at most 100): the next fire
/// times, in UTC and in the schedule's zone.
pub(crate) async fn next(
    State(api): State<Api>,
    Path(name): Path<String>,
    q: Result<Query<NextQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let count = query(q)?.count.unwrap_or(5).min(100);
    let schedule = existing(&api, &name).await?;
    let times = upcoming(&schedule, count)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    Ok(Json(serde_json::to_value(times).unwrap_or_default()))
}
