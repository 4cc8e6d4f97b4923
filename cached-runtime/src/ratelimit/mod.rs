//! Rate limits decided in Redis: GCRA in one script, one round trip per decision, Redis's
//! clock, one key per (limit, client), exact across every process that shares the Redis.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cached_runtime::CacheError> {
//! use cached_runtime::{Redis, ratelimit::{Limit, RateLimiter}};
//!
//! let redis = Redis::builder("redis://127.0.0.1:6379").build().await?;
//! let limiter = RateLimiter::on(&redis, "api")
//!     .limit(Limit::per_minute(100).burst(19).name("per-minute"))
//!     .limit(Limit::per_hour(1000).name("per-hour"))
//!     .fail_open()
//!     .build()?;
//!
//! let decision = limiter.check("user:42", 1).await;
//! if decision.is_allowed() {
//!     println!("{} left", decision.remaining());
//! } else {
//!     println!("retry in {:?}", decision.retry_after());
//! }
//! # Ok(()) }
//! ```
//!
//! # The algorithm
//!
//! GCRA (the generic cell rate algorithm, as in go-redis's `redis_rate` and `redis-cell`)
//! keeps one number per (limit, client): the theoretical arrival time of its next request.
//! A request is admitted when that time is within `burst + 1` emission intervals of now, and
//! pushes it one interval per unit of cost. It has no windows, hence no window edge where a
//! fixed-window counter admits twice the rate: in **any** span of one period at most
//! `rate + burst` requests are admitted, and exactly that many when more are offered. The
//! clock is Redis's (`TIME`), so clients on machines whose clocks disagree share one limit.
//!
//! Several limits on one limiter (100 a minute *and* 1,000 an hour) are decided together by
//! one script call: a request is admitted only when every limit admits it, and then charged to
//! every limit; a refused request is charged to none. The keys of one client share a hash tag
//! (`rl:{api:203.0.113.9}:…`), so on a Redis Cluster they live in one slot and the script
//! runs where they are.
//!
//! # Round trips
//!
//! A decision is one `EVALSHA` (the script is loaded, and `EVALSHA` sent once more, only when
//! Redis answers `NOSCRIPT`; no other failure is retried, so no request is counted twice). A
//! client Redis refused is refused again in process, with no round trip, until the retry time
//! Redis named.
//!
//! # When Redis cannot answer
//!
//! Every limiter says what happens then, explicitly ([`RateLimiterBuilder::fail_open`] or
//! [`RateLimiterBuilder::fail_closed`]); neither ever fails the request with an error:
//! - fail-open: an in-process GCRA over the same limits (divided by
//!   [`fallback_share`](RateLimiterBuilder::fallback_share), the number of processes) decides,
//!   so a client still meets an approximate limit rather than none;
//! - fail-closed: the request is refused (`503` in the middleware), to retry in a second.
//!
//! Redis is "unable to answer" when a command fails, times out, or the node's circuit breaker
//! is open (then no command is sent at all). Decisions are counted by what made them: see
//! [`metrics`](self::metrics).
//!
//! # HTTP
//!
//! With the `actix` feature [`actix::RateLimit`] is an Actix middleware; with `axum`,
//! [`tower::RateLimitLayer`] is a tower layer. Both answer a refused request with `429` and a
//! problem body (`application/problem+json`), and send the `RateLimit` and
//! `RateLimit-Policy` fields of draft-ietf-httpapi-ratelimit-headers-11 (see [`headers`]) on
//! every response. The `#[rate_limit]` attribute limits one handler.

#[cfg(feature = "actix")]
pub mod actix;
mod gcra;
pub mod headers;
mod identity;
mod limit;
mod local;
pub mod metrics;
mod respond;
#[cfg(feature = "axum")]
pub mod tower;

#[doc(hidden)]
pub mod __macro;

use std::{
    fmt,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use sha2::Digest as _;

pub use self::gcra::LimitState;
pub use self::identity::{Client, ForwardedHeader, TrustedProxies};
pub use self::limit::Limit;
pub use self::respond::{LimitResponse, Limited};
use self::{
    gcra::Reply,
    local::{Denial, Fallback, Shards},
    metrics::LimiterMetrics,
};
use crate::{
    connection::{Redis, Script},
    error::CacheError,
    warn::WarnLimiter,
};

#[doc(inline)]
pub use cached_macro::rate_limit;

/// The decision script's source, as the limiter loads it (`EVALSHA` of its SHA-1): for tools
/// that run it themselves. Its `KEYS` are each limit's key; `ARGV` the cost, then each
/// limit's emission interval and capacity in microseconds; it answers whether it allowed,
/// Redis's clock, and each limit's remaining, reset and retry-after (µs).
pub const GCRA_SCRIPT: &str = gcra::SCRIPT;

/// How long a fail-closed limiter asks a refused client to wait while Redis cannot answer.
const CLOSED_RETRY: Duration = Duration::from_secs(1);

/// Client keys longer than this are replaced by their SHA-256 in Redis keys.
const MAX_CLIENT_KEY: usize = 128;

/// The default bound on clients remembered in process (refusals, fallback state).
const DEFAULT_MAX_CLIENTS: usize = 100_000;

/// What made a [`Decision`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecidedBy {
    /// The script, in Redis.
    Redis = 0,
    /// This process, without a round trip: the client was refused by Redis and its retry
    /// time has not come; or the cost is more than a limit ever admits.
    Local = 1,
    /// The in-process fallback limiter: Redis could not answer and the limiter fails open.
    Fallback = 2,
    /// Refused: Redis could not answer and the limiter fails closed.
    Unavailable = 3,
}

impl DecidedBy {
    /// The `decided_by` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Local => "local",
            Self::Fallback => "fallback",
            Self::Unavailable => "unavailable",
        }
    }
}

/// The limits of a limiter and their `RateLimit-Policy` field, shared by its decisions.
#[derive(Debug)]
pub(crate) struct Policies {
    pub(crate) limits: Vec<Limit>,
    pub(crate) names: Vec<String>,
    pub(crate) header: String,
}

/// Whether a request may go ahead, and what is left.
#[derive(Clone)]
pub struct Decision {
    allowed: bool,
    by: DecidedBy,
    states: Vec<LimitState>,
    policies: Arc<Policies>,
    at: Option<Duration>,
}

impl fmt::Debug for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("allowed", &self.allowed)
            .field("decided_by", &self.by)
            .field("remaining", &self.remaining())
            .field("reset", &self.reset())
            .field("retry_after", &self.retry_after())
            .finish()
    }
}

impl Decision {
    /// Whether the request may go ahead (and was charged).
    pub fn is_allowed(&self) -> bool {
        self.allowed
    }

    /// What decided.
    pub fn decided_by(&self) -> DecidedBy {
        self.by
    }

    /// Requests of cost 1 admitted now: the least any limit has left.
    pub fn remaining(&self) -> u64 {
        self.states
            .iter()
            .map(LimitState::remaining)
            .min()
            .unwrap_or(0)
    }

    /// How long until the limit with the least left is whole again; for a request refused
    /// because Redis could not answer, the time to retry.
    pub fn reset(&self) -> Duration {
        self.states
            .iter()
            .min_by(|a, b| {
                a.remaining()
                    .cmp(&b.remaining())
                    .then(b.reset().cmp(&a.reset()))
            })
            .map_or(CLOSED_RETRY, LimitState::reset)
    }

    /// For a refused request, how long until it would be admitted: the latest of the
    /// refusing limits' times. `None` when allowed, and when the cost is more than a limit
    /// ever admits (it never will be).
    pub fn retry_after(&self) -> Option<Duration> {
        if self.allowed {
            return None;
        }
        if self.by == DecidedBy::Unavailable {
            return Some(CLOSED_RETRY);
        }
        self.states.iter().filter_map(LimitState::retry_after).max()
    }

    /// Each limit with its state, in the order the limiter was given them. Empty when Redis
    /// could not answer and the limiter fails closed.
    pub fn limits(&self) -> impl Iterator<Item = (&Limit, &LimitState)> {
        self.policies.limits.iter().zip(&self.states)
    }

    /// Redis's clock when it decided (since the Unix epoch), for decisions Redis made.
    pub fn redis_time(&self) -> Option<Duration> {
        self.at
    }

    pub(crate) fn policies(&self) -> &Policies {
        &self.policies
    }

    pub(crate) fn states(&self) -> &[LimitState] {
        &self.states
    }
}

/// A rate limiter: limits decided in Redis for any number of clients. Cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    name: ::metrics::SharedString,
    /// `{prefix}{{{name}:`, the start of every key.
    key_head: String,
    policies: Arc<Policies>,
    suffixes: Vec<String>,
    /// Each limit's emission interval and capacity, as the script takes them.
    script_args: Vec<u64>,
    fail_open: bool,
    proxies: TrustedProxies,
    denials: Shards<Denial>,
    fallback: Fallback,
    metrics: LimiterMetrics,
    warnings: WarnLimiter,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &&*self.inner.name)
            .field("limits", &self.inner.policies.limits)
            .field("fail_open", &self.inner.fail_open)
            .field("proxies", &self.inner.proxies)
            .finish_non_exhaustive()
    }
}

/// The script, hashed once per process.
fn script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(gcra::SCRIPT))
}

impl RateLimiter {
    /// A builder for a limiter named `name` (its keys and metrics say it: ASCII letters,
    /// digits and `_ - .`) on `redis`.
    pub fn on(redis: &Redis, name: impl Into<String>) -> RateLimiterBuilder {
        RateLimiterBuilder {
            redis: redis.clone(),
            name: name.into(),
            limits: Vec::new(),
            prefix: "rl:".to_owned(),
            fail_open: None,
            proxies: TrustedProxies::none(),
            fallback_share: 1,
            max_clients: DEFAULT_MAX_CLIENTS,
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its limits.
    pub fn limits(&self) -> &[Limit] {
        &self.inner.policies.limits
    }

    /// The proxies it trusts.
    pub fn proxies(&self) -> &TrustedProxies {
        &self.inner.proxies
    }

    /// The client of a request from `peer` whose forwarded header had `values`; see
    /// [`TrustedProxies::client`].
    pub fn client<'a, V>(&self, peer: Option<SocketAddr>, values: V) -> Client
    where
        V: IntoIterator<Item = &'a str>,
    {
        self.inner.proxies.client_of(peer, values)
    }

    /// The `RateLimit-Policy` field value of its limits.
    pub fn policy_header(&self) -> &str {
        &self.inner.policies.header
    }

    /// Decides whether `key` (a client, a user, an API token: anything) may spend `cost`
    /// (usually 1; 0 reads the state and charges nothing), and charges it if so.
    ///
    /// Never fails: when Redis cannot answer, the limiter's policy decides (see the module
    /// docs), and the decision says so in [`Decision::decided_by`].
    pub async fn check(&self, key: &str, cost: u64) -> Decision {
        let inner = &*self.inner;
        let sent = Instant::now();
        if cost > 0
            && let Some(decision) = inner.decide_locally(key, cost, sent)
        {
            inner.metrics.decision(decision.by, decision.allowed);
            return decision;
        }
        let keys = inner.keys(key);
        let mut args = Vec::with_capacity(inner.script_args.len() + 1);
        args.push(cost);
        args.extend_from_slice(&inner.script_args);
        let reply = match inner
            .redis
            .eval::<Vec<i64>, _, _>(script(), &keys, &args[..])
            .await
        {
            Ok(values) => Reply::parse(&values, keys.len()).ok_or(Failure::Reply),
            Err(e) => Err(Failure::Redis(e)),
        };
        let decision = match reply {
            Ok(reply) => {
                if !reply.allowed
                    && let Some(denial) = Denial::new(sent, cost, &reply.states)
                {
                    let now = Instant::now();
                    inner.denials.insert(key, denial, |d| d.until > now);
                }
                inner.decision(
                    reply.allowed,
                    DecidedBy::Redis,
                    reply.states,
                    Some(reply.at),
                )
            }
            Err(failure) => inner.without_redis(key, cost, &failure),
        };
        inner.metrics.decision(decision.by, decision.allowed);
        decision
    }

    /// [`check`](Self::check) for a request's [`Client`].
    pub async fn check_client(&self, client: &Client, cost: u64) -> Decision {
        self.check(&client.key(), cost).await
    }

    /// Forgets `key`'s usage: in Redis (every limit's key, in one `DEL`) and in process.
    pub async fn reset(&self, key: &str) -> Result<(), CacheError> {
        let inner = &*self.inner;
        inner.denials.with(key, |shard| shard.remove(key));
        let keys = inner.keys(key);
        let _: u64 = inner
            .redis
            .query(crate::connection::cmd("DEL").arg(&keys))
            .await?;
        Ok(())
    }

    /// The Redis keys of `key`'s limits, in the limiter's order: one hash tag for them all.
    pub fn keys(&self, key: &str) -> Vec<String> {
        self.inner.keys(key)
    }
}

/// Why Redis did not decide.
enum Failure {
    Redis(CacheError),
    /// An answer that is not the script's (another script under its hash?).
    Reply,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Redis(e) => fmt::Display::fmt(e, f),
            Self::Reply => f.write_str("the rate-limit script answered in an unexpected shape"),
        }
    }
}

impl Inner {
    fn decision(
        &self,
        allowed: bool,
        by: DecidedBy,
        states: Vec<LimitState>,
        at: Option<Duration>,
    ) -> Decision {
        Decision {
            allowed,
            by,
            states,
            policies: Arc::clone(&self.policies),
            at,
        }
    }

    fn keys(&self, key: &str) -> Vec<String> {
        let client = client_key(key);
        self.suffixes
            .iter()
            .map(|suffix| {
                // `{prefix}{{{name}:{client}}}:{suffix}`, without the formatter.
                let mut k =
                    String::with_capacity(self.key_head.len() + client.len() + 2 + suffix.len());
                k.push_str(&self.key_head);
                k.push_str(&client);
                k.push_str("}:");
                k.push_str(suffix);
                k
            })
            .collect()
    }

    /// A decision made without Redis: a cost no limit can ever admit, or a client Redis
    /// refused whose retry time has not come.
    fn decide_locally(&self, key: &str, cost: u64, now: Instant) -> Option<Decision> {
        let limits = &self.policies.limits;
        if limits
            .iter()
            .any(|l| cost.saturating_mul(l.interval_us()) > l.capacity_us())
        {
            let states = limits
                .iter()
                .map(|_| LimitState::new(0, Duration::ZERO, None))
                .collect();
            return Some(self.decision(false, DecidedBy::Local, states, None));
        }
        if self.denials.is_empty() {
            return None;
        }
        let states = self.denials.with(key, |shard| {
            let denial = shard.get(key)?;
            if denial.until <= now {
                shard.remove(key);
                return None;
            }
            (cost >= denial.cost).then(|| denial.states(now))
        })?;
        Some(self.decision(false, DecidedBy::Local, states, None))
    }

    /// What the policy decides when Redis could not.
    fn without_redis(&self, key: &str, cost: u64, failure: &Failure) -> Decision {
        if let Some(suppressed) = self.warnings.admit() {
            let policy = if self.fail_open {
                "deciding in process (fail-open)"
            } else {
                "refusing (fail-closed)"
            };
            tracing::warn!(
                limiter = &*self.name,
                suppressed,
                "rate limiter cannot reach redis ({failure}); {policy}"
            );
        }
        if self.fail_open {
            let (allowed, states) = self.fallback.decide(key, cost, Instant::now());
            self.decision(allowed, DecidedBy::Fallback, states, None)
        } else {
            self.decision(false, DecidedBy::Unavailable, Vec::new(), None)
        }
    }
}

/// A client key as it goes into Redis keys: as given, or its SHA-256 when long.
fn client_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.len() <= MAX_CLIENT_KEY {
        return key.into();
    }
    let digest = sha2::Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(65);
    hex.push('#');
    for b in digest {
        hex.push_str(&format!("{b:02x}"));
    }
    hex.into()
}

/// Everything a [`RateLimiter`] is built from; start with [`RateLimiter::on`].
#[derive(Clone)]
pub struct RateLimiterBuilder {
    redis: Redis,
    name: String,
    limits: Vec<Limit>,
    prefix: String,
    fail_open: Option<bool>,
    proxies: TrustedProxies,
    fallback_share: u64,
    max_clients: usize,
}

impl fmt::Debug for RateLimiterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiterBuilder")
            .field("name", &self.name)
            .field("limits", &self.limits)
            .field("prefix", &self.prefix)
            .field("fail_open", &self.fail_open)
            .field("proxies", &self.proxies)
            .field("fallback_share", &self.fallback_share)
            .field("max_clients", &self.max_clients)
            .finish_non_exhaustive()
    }
}

impl RateLimiterBuilder {
    /// Adds a limit; a request must fit every one.
    pub fn limit(mut self, limit: Limit) -> Self {
        self.limits.push(limit);
        self
    }

    /// When Redis cannot answer, decide in process (approximately: see the module docs).
    pub fn fail_open(mut self) -> Self {
        self.fail_open = Some(true);
        self
    }

    /// When Redis cannot answer, refuse.
    pub fn fail_closed(mut self) -> Self {
        self.fail_open = Some(false);
        self
    }

    /// How many processes share the limits: the fail-open fallback, which sees only this
    /// process's requests, admits `1/n` of each (at least one request a period). 1 by default.
    pub fn fallback_share(mut self, processes: u64) -> Self {
        self.fallback_share = processes;
        self
    }

    /// The proxies whose forwarded headers are believed (none by default); see
    /// [`TrustedProxies`].
    pub fn trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.proxies = proxies;
        self
    }

    /// The start of every key (`rl:` by default): `{prefix}{{{name}:{client}}}:{limit}`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How many clients are remembered in process (refused ones until their retry time, and
    /// the fallback's state): 100,000 by default. Beyond it the oldest knowledge is dropped,
    /// which only means a round trip, or a fresh fallback limit, for those clients.
    pub fn max_clients(mut self, n: usize) -> Self {
        self.max_clients = n;
        self
    }

    /// Checks the configuration and builds the limiter. Nothing is sent to Redis.
    pub fn build(self) -> Result<RateLimiter, CacheError> {
        let bad = |m: String| Err(CacheError::Config(m));
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !name_ok {
            return bad(format!(
                "rate limiter name {:?}: use 1 to 64 of A-Z a-z 0-9 _ - .",
                self.name
            ));
        }
        if self.prefix.contains(['{', '}']) {
            return bad(format!(
                "rate limiter prefix {:?}: braces would change the keys' hash tag",
                self.prefix
            ));
        }
        if self.limits.is_empty() {
            return bad(format!("rate limiter {:?} has no limit", self.name));
        }
        for limit in &self.limits {
            limit.validate()?;
        }
        let names: Vec<String> = self
            .limits
            .iter()
            .map(|l| l.policy_name().into_owned())
            .collect();
        if let Some(dup) = names
            .iter()
            .enumerate()
            .find_map(|(i, n)| names[..i].contains(n).then_some(n))
        {
            return bad(format!(
                "rate limiter {:?}: two limits are named {dup:?}; name them apart",
                self.name
            ));
        }
        let Some(fail_open) = self.fail_open else {
            return bad(format!(
                "rate limiter {:?}: say what happens when redis cannot answer, with fail_open() or fail_closed()",
                self.name
            ));
        };
        if self.fallback_share == 0 {
            return bad("the fallback share must be at least 1 process".to_owned());
        }
        let header = headers::policy_field(&self.limits, &names);
        let name = ::metrics::SharedString::from_owned(self.name);
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                suffixes: self.limits.iter().map(Limit::key_suffix).collect(),
                script_args: self
                    .limits
                    .iter()
                    .flat_map(|l| [l.interval_us(), l.capacity_us()])
                    .collect(),
                fallback: Fallback::new(&self.limits, self.fallback_share, self.max_clients),
                denials: Shards::new(self.max_clients),
                metrics: LimiterMetrics::new(name.clone(), fail_open),
                policies: Arc::new(Policies {
                    limits: self.limits,
                    names,
                    header,
                }),
                redis: self.redis,
                key_head: format!("{}{{{}:", self.prefix, name),
                name,
                fail_open,
                proxies: self.proxies,
                warnings: WarnLimiter::default(),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_client_keys_are_hashed_and_short_ones_kept() {
        assert_eq!(client_key("203.0.113.9"), "203.0.113.9");
        let long = "x".repeat(200);
        let hashed = client_key(&long);
        assert_eq!(hashed.len(), 65);
        assert!(hashed.starts_with('#'));
        assert_ne!(client_key(&"y".repeat(200)), hashed);
    }
}
