//! The crate's errors: what a request can fail with, and what starting the service can fail
//! with. Every error response is JSON: `{"error": "…"}`.

use actix_web::{
    HttpRequest, HttpResponse, ResponseError,
    body::MessageBody,
    dev::ServiceResponse,
    error::{JsonPayloadError, PathError, QueryPayloadError},
    http::{StatusCode, header},
    middleware::ErrorHandlerResponse,
};
use serde::Serialize;

/// Why a request failed; the message is sent to the client as `{"error": message}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or a value is out of range: 400.
    #[error("{0}")]
    BadRequest(String),
    /// The body is not JSON: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The body is too large: 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The resource does not exist: 404.
    #[error("{0}")]
    NotFound(String),
    /// The admin endpoint was called without the right bearer token: 401.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// `ADMIN_TOKEN` is unset, so the admin endpoint does not exist: 404.
    #[error("admin endpoint disabled: set ADMIN_TOKEN to enable it")]
    AdminDisabled,
    /// Redis is needed for this request (explicit invalidation) and is not answering: 503.
    #[error("cache unavailable: {0}")]
    CacheUnavailable(String),
    /// Too much work is waiting already: 503 with `Retry-After`.
    #[error("{0}")]
    Busy(String),
    /// The database failed; details are logged, not sent: 500.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    /// Logs `error` and returns the opaque 500.
    pub(crate) fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %error, "{context}");
        Self::Internal
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        Self::internal("database query failed", &e)
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        Self::internal("blocking task failed", &e)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn json_error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(ErrorBody { error: message })
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound(_) | Self::AdminDisabled => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::CacheUnavailable(_) | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = json_error(self.status_code(), &self.to_string());
        if matches!(self, Self::Unauthorized) {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if matches!(self, Self::Busy(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// `JsonConfig` error handler: a body that is not the expected JSON is a 400 naming the problem
/// (serde's message says which field is missing or mistyped, and where).
pub(crate) fn json_body_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let api = match err {
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::BadRequest(format!("invalid request body: {e}"))
        }
        JsonPayloadError::Deserialize(e) => {
            ApiError::BadRequest(format!("malformed JSON body: {e}"))
        }
        JsonPayloadError::ContentType => ApiError::UnsupportedMediaType(
            "expected a JSON body with Content-Type: application/json".to_owned(),
        ),
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => {
            ApiError::PayloadTooLarge(format!("body larger than {limit} bytes"))
        }
        other => ApiError::BadRequest(format!("cannot read the request body: {other}")),
    };
    api.into()
}

/// `PathConfig` error handler: e.g. `/items/abc` names the segment that failed to parse.
pub(crate) fn path_error(err: PathError, req: &HttpRequest) -> actix_web::Error {
    let PathError::Deserialize(e) = err else {
        return ApiError::BadRequest("invalid path".to_owned()).into();
    };
    ApiError::BadRequest(format!("invalid path {:?}: {e}", req.path())).into()
}

/// `QueryConfig` error handler: names the parameter that failed to parse.
pub(crate) fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let QueryPayloadError::Deserialize(e) = err else {
        return ApiError::BadRequest("invalid query string".to_owned()).into();
    };
    ApiError::BadRequest(format!("invalid query string: {e}")).into()
}

/// `ErrorHandlers` default handler: gives a JSON body to error responses that have none — the
/// empty 404 Actix sends for a handler's `Ok(None)` (a missing item, possibly answered from
/// the cache's null marker), unknown routes, 405s. Responses that are already JSON pass
/// through unchanged.
pub(crate) fn ensure_json_body<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .response()
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (req, _) = res.into_parts();
    let message = match (status, req.match_pattern().as_deref()) {
        (StatusCode::NOT_FOUND, Some("/items/{id}")) => {
            format!(
                "item {} not found",
                req.match_info().get("id").unwrap_or("?")
            )
        }
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let response = json_error(status, &message);
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, response)
            .map_into_boxed_body()
            .map_into_right_body(),
    ))
}

/// What starting the service can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An environment variable is malformed.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The cache could not be set up (an invalid `REDIS_URL` or `REDIS_CACHE_*` value).
    #[error(transparent)]
    Cache(#[from] cached_runtime::CacheError),
    /// The database could not be opened, created or seeded.
    #[error("cannot open the database {path}")]
    Database {
        /// The database file.
        path: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {bind}")]
    Bind {
        /// The address asked for.
        bind: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
