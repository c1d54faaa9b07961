//! Every failure of the API as JSON `{"error": "…"}` with the status that
//! says whose fault it is: 400 malformed, 401/403 auth, 404 unknown, 413
//! too large, 422 well-formed but refused, 503 the store.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use xylem_core::{ClientError, StoreError};

/// A failed request.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate(_) | StoreError::Invalid(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            other => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the store failed: {other}"),
            ),
        }
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Store(e) => e.into(),
            ClientError::NoSuchJob(_) => Self::not_found(e.to_string()),
            ClientError::Duplicate(_) => Self::new(StatusCode::CONFLICT, e.to_string()),
            other => Self::new(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
        }
    }
}

/// A JSON body the API could not read.
pub(crate) fn body_rejection(e: &axum::extract::rejection::BytesRejection) -> ApiError {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            status,
            "the request body is larger than this server accepts (--max-body)",
        )
    } else {
        ApiError::new(status, format!("cannot read the request body: {e}"))
    }
}

/// Parses a request body as JSON, with a 400 naming what is wrong.
pub(crate) fn json_body(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<serde_json::Value, ApiError> {
    let bytes = body.map_err(|e| body_rejection(&e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))
}

/// Any path the API does not have.
pub(crate) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such endpoint: {}", uri.path()))
}
