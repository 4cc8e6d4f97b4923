//! The limiter as a tower [`Layer`] (axum's middleware): one decision per request before the
//! inner service runs, `429` (or `503`, fail-closed) with a problem body when refused, and the
//! `RateLimit` fields on every response.
//!
//! The client is the peer address from axum's `ConnectInfo<SocketAddr>` (serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`), or behind the limiter's trusted
//! proxies the forwarded client; without `ConnectInfo` every request counts as one client
//! ([`Client::Unknown`]) unless [`RateLimitLayer::key`] says otherwise.
//!
//! ```no_run
//! # fn demo(limiter: cached_runtime::ratelimit::RateLimiter) {
//! use axum::{Router, routing::get};
//! use cached_runtime::ratelimit::tower::RateLimitLayer;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(RateLimitLayer::new(limiter));
//! # }
//! ```

use std::{
    fmt,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use axum::{
    extract::ConnectInfo,
    http::{
        HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header, request::Parts,
    },
};
use futures_util::future::BoxFuture;
use tower_layer::Layer;
use tower_service::Service;

use super::{Client, Decision, RateLimiter, headers};

type KeyFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;

/// The layer: `Router::new().layer(RateLimitLayer::new(limiter))`.
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    key: Option<Arc<KeyFn>>,
    cost: u64,
}

impl fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .field("key", &self.key.as_ref().map(|_| "custom"))
            .field("cost", &self.cost)
            .finish()
    }
}

impl RateLimitLayer {
    /// Limits every request by its client, at a cost of 1.
    pub fn new(limiter: RateLimiter) -> Self {
        Self {
            limiter,
            key: None,
            cost: 1,
        }
    }

    /// Keys requests by `key` instead (an API token, a user id); a request it returns `None`
    /// for is not limited.
    pub fn key<F>(mut self, key: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        self.key = Some(Arc::new(key));
        self
    }

    /// What each request costs (1 by default).
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            config: self.clone(),
        }
    }
}

/// The client of a request, as `limiter` identifies it: see the module docs.
pub fn client(limiter: &RateLimiter, parts: &Parts) -> Client {
    client_of(limiter, peer(parts), &parts.headers)
}

pub(crate) fn peer(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

pub(crate) fn client_of(
    limiter: &RateLimiter,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Client {
    let name = limiter.proxies().forwarded_header().name();
    limiter.client(
        peer,
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()),
    )
}

/// Adds the decision's `RateLimit-Policy`, `RateLimit` and `Retry-After` fields.
pub fn insert_fields(decision: &Decision, map: &mut HeaderMap) {
    let fields = decision.fields();
    if let Ok(v) = HeaderValue::from_str(fields.policy) {
        map.insert(HeaderName::from_static(headers::POLICY), v);
    }
    if let Some(v) = fields
        .ratelimit
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        map.insert(HeaderName::from_static(headers::RATELIMIT), v);
    }
    if let Some(secs) = fields.retry_after {
        map.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// The response to a refused request: `429` (or `503`) with the problem body and fields.
pub fn refusal<B: From<String>>(decision: &Decision) -> Response<B> {
    let status = decision
        .refusal_status()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = Response::new(B::from(decision.problem_body().unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(headers::PROBLEM_JSON),
    );
    insert_fields(decision, response.headers_mut());
    response
}

/// The layer around one service.
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    config: RateLimitLayer,
}

impl<S> fmt::Debug for RateLimitService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Service<Request<B>> for RateLimitService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
    ResBody: From<String> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one to call; a fresh clone stays behind.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let (parts, body) = req.into_parts();
        let key = match &self.config.key {
            Some(key) => key(&parts),
            None => Some(client(&self.config.limiter, &parts).key()),
        };
        let req = Request::from_parts(parts, body);
        let Some(key) = key else {
            return Box::pin(inner.call(req));
        };
        let limiter = self.config.limiter.clone();
        let cost = self.config.cost;
        Box::pin(async move {
            let decision = limiter.check(&key, cost).await;
            if !decision.is_allowed() {
                return Ok(refusal(&decision));
            }
            let mut response = inner.call(req).await?;
            insert_fields(&decision, response.headers_mut());
            Ok(response)
        })
    }
}
