//! Bearer tokens: `XYLEM_API_TOKEN` may do everything, `XYLEM_API_READ_TOKEN`
//! only reads (GET). With neither set the API is open, and `xylem serve`
//! listens only on a loopback address. The dashboard's page (`/`) is
//! served to anyone: it holds nothing until the API accepts its token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The tokens the API accepts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tokens {
    admin: Option<String>,
    read: Option<String>,
}

/// What a request's token allows.
#[derive(Debug, PartialEq, Eq)]
enum Access {
    Admin,
    Read,
}

impl Tokens {
    /// From `XYLEM_API_TOKEN` and `XYLEM_API_READ_TOKEN`; an empty or short
    /// one is refused rather than silently weak.
    pub(crate) fn from_env() -> anyhow::Result<Self> {
        let take = |name: &str| -> anyhow::Result<Option<String>> {
            match std::env::var(name) {
                Ok(t) => {
                    anyhow::ensure!(
                        t.len() >= 16,
                        "{name} must be at least 16 characters (try `openssl rand -hex 24`)"
                    );
                    Ok(Some(t))
                }
                Err(_) => Ok(None),
            }
        };
        Ok(Self {
            admin: take("XYLEM_API_TOKEN")?,
            read: take("XYLEM_API_READ_TOKEN")?,
        })
    }

    /// Whether any token is set (else the API is open).
    pub(crate) fn any(&self) -> bool {
        self.admin.is_some() || self.read.is_some()
    }

    fn access(&self, given: &str) -> Option<Access> {
        // Compared in full whatever the first difference, so the time taken
        // does not tell how much of a guess was right.
        let same = |want: &Option<String>| {
            want.as_ref().is_some_and(|w| {
                w.len() == given.len()
                    && w.bytes()
                        .zip(given.bytes())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0
            })
        };
        if same(&self.admin) {
            Some(Access::Admin)
        } else if same(&self.read) {
            Some(Access::Read)
        } else {
            None
        }
    }
}

/// Lets a request through if its token allows it: 401 without a valid
/// token, 403 for a read-only token on a route that changes something.
pub(crate) async fn check(State(tokens): State<Arc<Tokens>>, req: Request, next: Next) -> Response {
    // Only the API holds data; the dashboard's page asks it for the token.
    // The page and the API's description hold no data; the API and the
    // metrics need a token.
    let path = req.uri().path();
    let public = !(path.starts_with("/api/") || path == "/metrics") || path == "/api/openapi.json";
    if !tokens.any() || public {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(access) = given.and_then(|t| tokens.access(t.trim())) else {
        let mut response = unread_body(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid token is required: send `Authorization: Bearer TOKEN`",
        ));
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    if access == Access::Read && !reads {
        return unread_body(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} {} changes something: a read-only token may not; use the admin token",
                req.method(),
                req.uri().path()
            ),
        ));
    }
    next.run(req).await
}

/// A refusal sent before the request's body was read: the connection is
/// closed after it (the unread body — up to a plugin's 64 MiB — is not
/// drained for a client that may not send it), and says so, so the client
/// does not send its next request on it.
fn unread_body(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}
