//! `/api/plugins`: list the pushed versions, push one (the component's
//! bytes as the body: checked, compiled and described like `xylem plugin
//! push`; a workflow plugin is recognised).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde_json::{Value, json};
use xylem_wasm::PushError;

use super::Api;
use super::error::{ApiError, body_rejection};

/// Largest component a push accepts (as `xylem plugin push`'s default).
pub(crate) const MAX_PLUGIN_BYTES: usize = 64 * 1024 * 1024;

/// `GET /api/plugins`: every pushed plugin version.
pub(crate) async fn list(State(api): State<Api>) -> Result<Json<Value>, ApiError> {
    let plugins = api.stores().plugins.plugins().await?;
    Ok(Json(serde_json::to_value(plugins).unwrap_or_default()))
}

fn refused(e: PushError) -> ApiError {
    match e {
        PushError::Store(e) => e.into(),
        other => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the plugin was not pushed: {other}"),
        ),
    }
}

/// `POST /api/plugins` (body: the `.wasm` component) → 201 `{"digest",
/// "tasks"}` or `{"digest", "workflows"}`; 422 with the reason if it is
/// not a plugin this host can run.
pub(crate) async fn push(
    State(api): State<Api>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let bytes = body.map_err(|e| body_rejection(&e))?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "send the component's bytes as the body (curl --data-binary @plugin.wasm)",
        ));
    }
    let runtime = api.runtime().map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no Wasm runtime: {e:#}"),
        )
    })?;
    let store = api.stores().plugins.clone();
    let doc = if xylem_wasm::is_workflow_component(&bytes) {
        let plugin = xylem_wasm::push_workflow_plugin(runtime, store.as_ref(), &bytes)
            .await
            .map_err(refused)?;
        let names: Vec<&str> = plugin.workflows().iter().map(|(n, _)| n.as_str()).collect();
        json!({ "digest": plugin.digest(), "workflows": names })
    } else {
        let plugin = xylem_wasm::push_plugin(runtime, store.as_ref(), &bytes)
            .await
            .map_err(refused)?;
        json!({ "digest": plugin.digest(), "tasks": plugin.tasks() })
    };
    Ok((StatusCode::CREATED, Json(doc)))
}
