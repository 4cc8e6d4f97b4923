//! Errors: what a request fails with (always a JSON body), and what starting fails with.

use axum::{
    Json,
    body::{Body, to_bytes},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// Why a request failed; sent as `{"error": message}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input: 400.
    #[error("{0}")]
    BadRequest(String),
    /// No such resource: 404.
    #[error("{0}")]
    NotFound(String),
    /// No or malformed `Authorization`: 401.
    #[error("send `Authorization: Bearer <name>`")]
    Unauthorized,
    /// The database failed; details are logged, not sent: 500.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// Logs `error` and returns the opaque 500.
    pub(crate) fn internal(error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "request failed");
        Self::Internal
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let message = self.to_string();
        (status, Json(ErrorBody { error: &message })).into_response()
    }
}

/// Largest error body of axum's own that is rewritten as JSON.
const REJECTION_LIMIT: usize = 4096;

/// Gives error responses that are not JSON (axum's rejections of a bad path, query or body,
/// which are plain text, and the empty 404/405 of unknown routes) a JSON body with the same
/// status and message.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = to_bytes(Body::new(body), REJECTION_LIMIT)
        .await
        .ok()
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase());
    let mut json = (status, Json(ErrorBody { error: &text })).into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(value) = parts.headers.get(&name) {
            json.headers_mut().insert(name, value.clone());
        }
    }
    json
}

/// What starting the service fails with.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The cache settings are invalid.
    #[error(transparent)]
    Cache(#[from] cached_runtime::CacheError),
    /// The database could not be opened or seeded.
    #[error("cannot open the database: {0}")]
    Database(String),
    /// The address could not be bound.
    #[error("cannot listen on {bind}")]
    Bind {
        /// The address asked for.
        bind: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
