//! The limiter as an Actix middleware: one decision per request before the handler runs,
//! `429` (or `503`, fail-closed) with a problem body when refused, and the `RateLimit`
//! fields on every response.
//!
//! ```no_run
//! # async fn demo(limiter: cached_runtime::ratelimit::RateLimiter) -> std::io::Result<()> {
//! use actix_web::{App, HttpServer, web};
//! use cached_runtime::ratelimit::actix::RateLimit;
//!
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(RateLimit::new(limiter.clone()))
//!         .route("/", web::get().to(|| async { "hello" }))
//! })
//! .bind("127.0.0.1:8080")?
//! .run()
//! .await
//! # }
//! ```

use std::{
    fmt,
    future::{Ready, ready},
    rc::Rc,
    sync::Arc,
};

use actix_web::{
    Error, HttpRequest, HttpResponse,
    body::{EitherBody, MessageBody},
    dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready},
    http::{
        StatusCode,
        header::{self, HeaderMap, HeaderName, HeaderValue},
    },
    web::Bytes,
};
use futures_util::future::LocalBoxFuture;

use super::{Client, Decision, ForwardedHeader, RateLimiter, headers};

type KeyFn = dyn Fn(&ServiceRequest) -> Option<String> + Send + Sync;

const POLICY: HeaderName = HeaderName::from_static(headers::POLICY);
const RATELIMIT: HeaderName = HeaderName::from_static(headers::RATELIMIT);

/// The middleware's configuration: `App::new().wrap(RateLimit::new(limiter))`.
#[derive(Clone)]
pub struct RateLimit {
    limiter: RateLimiter,
    key: Option<Arc<KeyFn>>,
    cost: u64,
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("limiter", &self.limiter)
            .field("key", &self.key.as_ref().map(|_| "custom"))
            .field("cost", &self.cost)
            .finish()
    }
}

impl RateLimit {
    /// Limits every request by its client (the peer address, or behind the limiter's trusted
    /// proxies the forwarded client), at a cost of 1.
    pub fn new(limiter: RateLimiter) -> Self {
        Self {
            limiter,
            key: None,
            cost: 1,
        }
    }

    /// Keys requests by `key` instead (an API token, a user id); a request it returns `None`
    /// for is not limited (a health check, say).
    pub fn key<F>(mut self, key: F) -> Self
    where
        F: Fn(&ServiceRequest) -> Option<String> + Send + Sync + 'static,
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

/// The client of an Actix request, as `limiter` identifies it.
pub fn client(limiter: &RateLimiter, req: &HttpRequest) -> Client {
    client_of(limiter, req.peer_addr(), req.headers())
}

fn client_of(
    limiter: &RateLimiter,
    peer: Option<std::net::SocketAddr>,
    headers: &HeaderMap,
) -> Client {
    let name = match limiter.proxies().forwarded_header() {
        ForwardedHeader::Forwarded => header::FORWARDED,
        _ => header::X_FORWARDED_FOR,
    };
    // Looked up only when iterated: only for a peer that is a trusted proxy.
    let values = std::iter::once(name)
        .flat_map(move |name| headers.get_all(name).filter_map(|v| v.to_str().ok()));
    limiter.client(peer, values)
}

/// Adds the decision's `RateLimit-Policy`, `RateLimit` and `Retry-After` fields.
pub fn insert_fields(decision: &Decision, map: &mut HeaderMap) {
    insert_fields_with(decision, None, map);
}

/// [`insert_fields`] with the limiter's `RateLimit-Policy` value made once, not per response.
fn insert_fields_with(decision: &Decision, policy: Option<&HeaderValue>, map: &mut HeaderMap) {
    let policy = match policy {
        Some(v) => Some(v.clone()),
        None => HeaderValue::from_str(&decision.policies().header).ok(),
    };
    if let Some(v) = policy {
        map.insert(POLICY, v);
    }
    // The string's buffer becomes the value's, uncopied.
    if let Some(v) = decision
        .ratelimit_field()
        .and_then(|v| HeaderValue::from_maybe_shared(Bytes::from(v)).ok())
    {
        map.insert(RATELIMIT, v);
    }
    if let Some(secs) = decision.retry_after_secs() {
        map.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

/// The response to a refused request: `429` (or `503`) with the problem body and fields.
/// For an allowed decision, an empty `200` with the fields.
pub fn refusal(decision: &Decision) -> HttpResponse {
    let status = decision
        .refusal_status()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    response.insert_header((header::CONTENT_TYPE, headers::PROBLEM_JSON));
    let mut response = response.body(decision.problem_body().unwrap_or_default());
    insert_fields(decision, response.headers_mut());
    response
}

impl<S, B> Transform<S, ServiceRequest> for RateLimit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RateLimitMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RateLimitMiddleware {
            service: Rc::new(service),
            policy: HeaderValue::from_str(self.limiter.policy_header()).ok(),
            config: self.clone(),
        }))
    }
}

/// The middleware around one service; built by [`RateLimit`].
pub struct RateLimitMiddleware<S> {
    service: Rc<S>,
    config: RateLimit,
    /// The limiter's `RateLimit-Policy` value, the same on every response.
    policy: Option<HeaderValue>,
}

impl<S> fmt::Debug for RateLimitMiddleware<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitMiddleware")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for RateLimitMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let key = match &self.config.key {
            Some(key) => key(&req),
            None => Some(client_of(&self.config.limiter, req.peer_addr(), req.headers()).key()),
        };
        let service = Rc::clone(&self.service);
        let Some(key) = key else {
            return Box::pin(async move { Ok(service.call(req).await?.map_into_left_body()) });
        };
        let limiter = self.config.limiter.clone();
        let cost = self.config.cost;
        let policy = self.policy.clone();
        Box::pin(async move {
            let decision = limiter.check(&key, cost).await;
            if !decision.is_allowed() {
                let response = refusal(&decision);
                return Ok(req.into_response(response).map_into_right_body());
            }
            let mut response = service.call(req).await?;
            insert_fields_with(&decision, policy.as_ref(), response.headers_mut());
            Ok(response.map_into_left_body())
        })
    }
}
