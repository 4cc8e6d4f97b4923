//! Per-client rate limits on the API, a view counter per item, and the ranking behind
//! `GET /items/popular`: the library's limiter, counter and ranking, on the cache's own
//! connection.
//!
//! - Limits are off unless configured (`API_RATE_LIMIT=100/60s+19,1000/3600s`: 100 a minute
//!   with 20 at once, and 1,000 an hour). With them, every route but `/healthz` and
//!   `/metrics` is limited per client (the peer address, or behind `API_TRUSTED_PROXIES` the
//!   forwarded client): `429` with a problem body and `Retry-After` past the limit, the
//!   `RateLimit` and `RateLimit-Policy` fields on every answer. The limiter fails open.
//! - Every `GET /items/{id}` answered `200` or `304` counts a view, batched in process (sent
//!   every 500 ms or 100 views) into `demo:{views:<id>}` and the ranking `demo:{popular}`.
//! - `GET /items/popular` lists the ten most viewed items, cached for 10 s with
//!   `#[redis_cache]`.

use std::time::Duration;

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    get,
    http::{Method, StatusCode},
    middleware::{Condition, Next},
    web,
};
use cached_runtime::{
    Cache, Redis,
    counter::{Counter, Ranking},
    ratelimit::{
        Limit, RateLimiter, TrustedProxies,
        actix::{self, RateLimit},
    },
    redis_cache,
};
use serde::Serialize;

use crate::{app::AppState, error::ApiError, model::Item};

/// The prefix of `GET /items/popular` entries.
pub const POPULAR_PREFIX: &str = "popular";
/// How many items `GET /items/popular` lists.
pub const POPULAR_COUNT: usize = 10;

/// The limiter, the view counter and the ranking.
#[derive(Debug)]
pub struct Limits {
    api: RateLimiter,
    /// Whether limits are configured: the middleware is in the chain only then.
    limited: bool,
    /// Views per item, batched.
    pub views: Counter,
    /// Items by views.
    pub popular: Ranking,
}

impl Limits {
    /// Built on the cache's connection (made lazily, like the cache).
    pub(crate) fn build(
        cache: &Cache,
        api_limits: &[Limit],
        proxies: &TrustedProxies,
    ) -> Result<Self, cached_runtime::CacheError> {
        let redis: &Redis = cache.connection().ok_or_else(|| {
            cached_runtime::CacheError::Config("the demo needs a Redis cache".to_owned())
        })?;
        let limited = !api_limits.is_empty();
        // Without limits the middleware stays out of the chain, but it is built all the
        // same, with a limit that is never asked.
        let unused = [Limit::per_second(1).name("unused")];
        let api = (if limited { api_limits } else { &unused[..] })
            .iter()
            .fold(RateLimiter::on(redis, "api"), |b, l| b.limit(l.clone()))
            .prefix("demo:rl:")
            .trusted_proxies(proxies.clone())
            // An API that serves uncached while Redis is down keeps serving: the in-process
            // fallback holds each client to its limits meanwhile.
            .fail_open()
            .build()?;
        let popular = Ranking::on(redis, "popular").prefix("demo:").build()?;
        let views = Counter::on(redis, "views")
            .prefix("demo:")
            .batch(Duration::from_millis(500), 100)
            .ranking(&popular)
            .build()?;
        Ok(Self {
            api,
            limited,
            views,
            popular,
        })
    }

    /// The rate-limit middleware: in the chain only when limits are configured.
    pub(crate) fn middleware(&self) -> Condition<RateLimit> {
        let limiter = self.api.clone();
        let middleware = RateLimit::new(self.api.clone()).key(move |req| {
            let exempt = matches!(req.path(), "/healthz" | "/metrics");
            (!exempt).then(|| actix::client(&limiter, req.request()).to_string())
        });
        Condition::new(self.limited, middleware)
    }
}

/// `API_RATE_LIMIT`: comma-separated limits `RATE/PERIOD[+BURST]`, the period in `ms`, `s`,
/// `m` or `h` (`100/60s+19,1000/1h`); empty or `off` for none.
pub fn parse_limits(spec: &str) -> Result<Vec<Limit>, String> {
    let spec = spec.trim();
    if spec.is_empty() || spec.eq_ignore_ascii_case("off") {
        return Ok(Vec::new());
    }
    spec.split(',')
        .map(|part| {
            let part = part.trim();
            let bad =
                || format!("API_RATE_LIMIT: {part:?} is not RATE/PERIOD[+BURST], like 100/60s+19");
            let (rate, rest) = part.split_once('/').ok_or_else(bad)?;
            let (period, burst) = rest.split_once('+').unwrap_or((rest, "0"));
            let rate: u64 = rate.trim().parse().map_err(|_| bad())?;
            let burst: u64 = burst.trim().parse().map_err(|_| bad())?;
            let period = period.trim();
            let split = period.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
            let (n, unit) = period.split_at(split);
            let n: u64 = n.parse().map_err(|_| bad())?;
            let period = match unit {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n * 60),
                "h" => Duration::from_secs(n * 3600),
                _ => return Err(bad()),
            };
            Ok(Limit::new(rate, period).burst(burst).name(part.to_owned()))
        })
        .collect()
}

/// Counts a view of every `GET /items/{id}` answered `200` or `304` (cache hits included).
pub(crate) async fn count_views(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = (req.method() == Method::GET)
        .then(|| req.path().strip_prefix("/items/")?.parse::<u64>().ok())
        .flatten();
    let limits = id.and(req.app_data::<web::Data<Limits>>().cloned());
    let response = next.call(req).await?;
    if let (Some(id), Some(limits)) = (id, limits)
        && matches!(response.status(), StatusCode::OK | StatusCode::NOT_MODIFIED)
    {
        limits.views.add(&id.to_string(), 1).await;
    }
    Ok(response)
}

/// One entry of `GET /items/popular`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Popular {
    /// Views counted (those still batched in some process are not in it yet).
    pub views: u64,
    /// The item.
    #[serde(flatten)]
    pub item: Item,
}

/// `GET /items/popular`: the most viewed items, most first, cached for 10 s.
#[get("/items/popular")]
#[redis_cache(prefix = "popular", ttl = 10, skip(state, limits), cache = state.cache)]
pub(crate) async fn popular_items(
    state: web::Data<AppState>,
    limits: web::Data<Limits>,
) -> Result<web::Json<Vec<Popular>>, ApiError> {
    let top = limits
        .popular
        .top(POPULAR_COUNT)
        .await
        .map_err(|e| ApiError::CacheUnavailable(e.to_string()))?;
    let mut out = Vec::with_capacity(top.len());
    for (member, views) in top {
        let Ok(id) = member.parse::<u64>() else {
            continue;
        };
        // Deleted items keep their views but are not listed.
        if let Some(item) = state.db(move |db| db.get(id)).await? {
            // Views are whole numbers stored as a sorted set's scores.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let views = views as u64;
            out.push(Popular { views, item });
        }
    }
    Ok(web::Json(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_from_the_environment_syntax() {
        let limits = parse_limits("100/60s+19, 1000/1h").expect("valid");
        assert_eq!(limits.len(), 2);
        assert_eq!(limits[0].rate(), 100);
        assert_eq!(limits[0].period(), Duration::from_secs(60));
        assert_eq!(limits[0].burst_size(), 19);
        assert_eq!(limits[1].period(), Duration::from_secs(3600));
        assert_eq!(limits[0].policy_name(), "100/60s+19");
        assert!(parse_limits("off").expect("off").is_empty());
        assert!(parse_limits("100 per minute").is_err());
        assert!(parse_limits("100/60y").is_err());
    }
}
