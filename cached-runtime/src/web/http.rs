//! HTTP revalidation served from the cache: what `#[redis_cache(revalidate)]` on an Actix or
//! axum handler turns its response into.
//!
//! The handler keeps its body and its return type `R` (a `Json<T>` inside `Option`/`Result`);
//! the attribute adds a [`Conditional`] extractor (the request's `If-None-Match` and
//! `Cache-Control`) and answers a [`Revalidated<R>`]:
//!
//! - a stored value: `200` with the stored JSON as the body (neither decoded nor re-encoded),
//!   `ETag`, `Cache-Control` and `X-Cache: HIT`;
//! - a stored value whose entity tag the request names in `If-None-Match` (`GET`/`HEAD`): `304
//!   Not Modified` with no body, after one `GET` and a header check: no JSON is decoded;
//! - a miss: the body runs, its result is stored, and the response is the stored JSON with the
//!   new `ETag` and `X-Cache: MISS` (or `304` when the new tag is one the request named);
//! - `Cache-Control: no-cache` on the request: a miss that does not read the cache first, so
//!   the entry is recomputed and replaced;
//! - anything else (an `Err`, an absent result): the handler's own response, with `X-Cache`.
//!
//! The entity tag is the first 128 bits of the SHA-256 of the stored JSON, written into the
//! entry when it is filled: every process serves the same tag for the same stored value, so a
//! revalidation answered by another instance behind the load balancer still matches, and a
//! new value (after an update and an invalidation) gets a new tag. A value stored without a
//! validator (by `Cache::set`, or by a binary without `revalidate`) is served with the tag of
//! its JSON, computed when read, and `max-age=0`. `Cache-Control` is
//! `private, max-age={seconds the entry has left}` unless the attribute says otherwise
//! (`revalidate = "no-cache"`, `revalidate = "public, max-age"`). A function with `vary` also
//! answers `Vary` with its header names.

use std::{fmt::Write as _, sync::Arc, time::Instant};

use tracing::{Instrument as _, Span};

use crate::{
    cache::Cache,
    cache::codec::{self, Raw},
    cache::fill::{EntrySlot, Fill, Landed, Landing, Source},
    cache::flight::Published,
    cache::key::Key,
    cache::mode::{self, Mode},
    cache::policy::Policy,
    cache::shape::{Entry, Shape},
    cache::stats::Outcome,
    error::CacheError,
    telemetry,
};

/// What a revalidating function answers beside its own response: the `Cache-Control` to send
/// and the headers it varies on. One `static` per function, written by the macro.
#[derive(Debug)]
pub struct HttpPolicy {
    cache_control: &'static str,
    vary: &'static str,
}

impl HttpPolicy {
    /// For the macro: `cache_control` passed [`cache_control_error`] at compile time; `vary`
    /// is the header names joined by `, ` (empty for none).
    #[doc(hidden)]
    pub const fn __new(cache_control: &'static str, vary: &'static str) -> Self {
        Self::new(cache_control, vary)
    }

    pub(crate) const fn new(cache_control: &'static str, vary: &'static str) -> Self {
        Self {
            cache_control,
            vary,
        }
    }

    /// The `Cache-Control` value, a bare `max-age` or `s-maxage` given `max_age`.
    fn cache_control(&self, max_age: u64) -> String {
        let mut out = String::with_capacity(self.cache_control.len() + 12);
        for (i, directive) in self.cache_control.split(',').enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let directive = directive.trim();
            out.push_str(directive);
            if matches!(directive, "max-age" | "s-maxage") {
                // Writing to a String cannot fail.
                let _ = write!(out, "={max_age}");
            }
        }
        out
    }
}

/// The default `Cache-Control` of `revalidate`: for this caller only, fresh as long as the
/// entry lives.
pub const DEFAULT_CACHE_CONTROL: &str = "private, max-age";

/// Why `value` cannot be the `Cache-Control` of `revalidate = "…"`, or `None` when it can.
/// The macro checks every value with it at compile time.
///
/// Directives are lowercase tokens separated by `,`, each with an optional `=value` (a token
/// or a number); a bare `max-age` or `s-maxage` is given the seconds the entry has left.
/// `public` and `private` exclude each other.
pub const fn cache_control_error(value: &str) -> Option<&'static str> {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return Some(
            "empty `revalidate` policy: give the Cache-Control directives, like `revalidate = \"private, max-age\"`",
        );
    }
    let (mut public, mut private) = (false, false);
    let mut i = 0;
    while i <= bytes.len() {
        // One directive: bytes[start..end], spaces around it skipped.
        let mut start = i;
        while start < bytes.len() && bytes[start] == b' ' {
            start += 1;
        }
        let mut end = start;
        while end < bytes.len() && bytes[end] != b',' {
            end += 1;
        }
        let next = end + 1;
        while end > start && bytes[end - 1] == b' ' {
            end -= 1;
        }
        if start == end {
            return Some(
                "empty directive in the `revalidate` policy: separate directives with one `,`, like \"private, max-age\"",
            );
        }
        let mut j = start;
        let mut seen_eq = false;
        while j < end {
            let b = bytes[j];
            let ok = b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'-'
                || (b == b'=' && !seen_eq && j > start && j + 1 < end);
            if !ok {
                return Some(
                    "the `revalidate` policy takes lowercase Cache-Control directives, each with an optional `=value`, like \"public, max-age, must-revalidate\"",
                );
            }
            if b == b'=' {
                seen_eq = true;
            }
            j += 1;
        }
        if eq(bytes, start, end, b"public") {
            public = true;
        }
        if eq(bytes, start, end, b"private") {
            private = true;
        }
        i = next;
    }
    if public && private {
        return Some("the `revalidate` policy cannot be both `public` and `private`");
    }
    None
}

const fn eq(bytes: &[u8], start: usize, end: usize, word: &[u8]) -> bool {
    if end - start != word.len() {
        return false;
    }
    let mut k = 0;
    while k < word.len() {
        if bytes[start + k] != word[k] {
            return false;
        }
        k += 1;
    }
    true
}

/// The request's conditions, extracted by a revalidating handler: the entity tags of
/// `If-None-Match` (for `GET` and `HEAD`) and whether `Cache-Control` says `no-cache`.
#[derive(Debug, Clone, Default)]
pub struct Conditional {
    /// Every `If-None-Match` value, joined by `,`; `None` without one, or for a method the
    /// header does not apply to.
    if_none_match: Option<String>,
    no_cache: bool,
}

impl Conditional {
    /// Conditions read from a request's method and header values.
    pub fn new<'a>(
        safe_method: bool,
        if_none_match: impl IntoIterator<Item = &'a [u8]>,
        cache_control: impl IntoIterator<Item = &'a [u8]>,
    ) -> Self {
        let mut tags: Option<String> = None;
        if safe_method {
            for value in if_none_match {
                // A tag that is not visible ASCII can match none of ours.
                let Ok(value) = std::str::from_utf8(value) else {
                    continue;
                };
                let tags = tags.get_or_insert_with(String::new);
                if !tags.is_empty() {
                    tags.push(',');
                }
                tags.push_str(value);
            }
        }
        let no_cache = cache_control.into_iter().any(|value| {
            value
                .split(|&b| b == b',')
                .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
        });
        Self {
            if_none_match: tags,
            no_cache,
        }
    }

    /// Whether `If-None-Match` names `etag` (32 hex digits, without quotes), by the weak
    /// comparison RFC 9110 asks for, or is `*`.
    pub fn matches(&self, etag: &str) -> bool {
        let Some(tags) = &self.if_none_match else {
            return false;
        };
        tags.split(',').map(str::trim).any(|tag| {
            tag == "*"
                || tag
                    .strip_prefix("W/")
                    .unwrap_or(tag)
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    == Some(etag)
        })
    }

    /// Whether the request asked for a fresh value (`Cache-Control: no-cache`).
    pub fn no_cache(&self) -> bool {
        self.no_cache
    }
}

/// A revalidating handler's response: its own result, or the stored JSON, or `304`, with the
/// `ETag`, `Cache-Control`, `Vary` and `X-Cache` headers. Implements axum's `IntoResponse`
/// and Actix's `Responder` when `R` does.
#[derive(Debug)]
pub struct Revalidated<R> {
    pub(crate) answer: Answer<R>,
    hit: bool,
    policy: &'static HttpPolicy,
}

#[derive(Debug)]
pub(crate) enum Answer<R> {
    /// The function's own result.
    Result(R),
    /// A stored value: its JSON is the body.
    Stored(Validated),
    /// The request already holds the stored value.
    NotModified(Validated),
}

/// A stored value with its validator.
#[derive(Debug)]
pub(crate) struct Validated {
    bytes: Stored,
    json_at: usize,
    /// `"…"`, quoted.
    etag: String,
    max_age: u64,
}

/// An entry as read (`GET`) or as filled.
#[derive(Debug)]
enum Stored {
    Read(Vec<u8>),
    Filled(Arc<[u8]>),
}

impl Validated {
    /// The value `bytes` holds with its validator, or `None` for anything else (the null
    /// marker, an unusable entry).
    ///
    /// A value stored without a validator (by `Cache::set`, or by a binary without
    /// `revalidate`) gets its tag from its JSON here, the same tag a fill would have stored,
    /// and `max-age=0`, as its expiry is not known.
    fn of(bytes: Stored, version: u32) -> Option<Self> {
        let entry: &[u8] = match &bytes {
            Stored::Read(b) => b,
            Stored::Filled(b) => b,
        };
        let (etag, max_age, json_at) = match codec::raw(entry, version) {
            Ok(Raw::Value {
                etag,
                expires,
                json_at,
            }) => (
                format!("\"{etag}\""),
                expires.saturating_sub(codec::unix_now()),
                json_at,
            ),
            Ok(Raw::Unvalidated { json_at }) => {
                let tag = codec::etag(&entry[json_at..]);
                (format!("\"{}\"", String::from_utf8_lossy(&tag)), 0, json_at)
            }
            Ok(Raw::Null) | Err(_) => return None,
        };
        Some(Self {
            bytes,
            json_at,
            etag,
            max_age,
        })
    }

    fn json(&self) -> &[u8] {
        match &self.bytes {
            Stored::Read(b) => &b[self.json_at..],
            Stored::Filled(b) => &b[self.json_at..],
        }
    }

    /// The JSON, without a copy when it was read. Both frameworks' bodies are `bytes::Bytes`.
    #[cfg(any(feature = "axum", feature = "actix"))]
    pub(crate) fn into_body(self) -> bytes::Bytes {
        match self.bytes {
            Stored::Read(b) => bytes::Bytes::from(b).slice(self.json_at..),
            Stored::Filled(b) => bytes::Bytes::copy_from_slice(&b[self.json_at..]),
        }
    }
}

impl<R> Revalidated<R> {
    /// The function's own result, with no validator.
    fn result(result: R, hit: bool, policy: &'static HttpPolicy) -> Self {
        Self {
            answer: Answer::Result(result),
            hit,
            policy,
        }
    }

    /// A stored value, answered `304` when the request names its tag.
    fn stored(
        value: Validated,
        conditional: &Conditional,
        hit: bool,
        policy: &'static HttpPolicy,
    ) -> Self {
        let answer = if conditional.matches(&value.etag[1..value.etag.len() - 1]) {
            Answer::NotModified(value)
        } else {
            Answer::Stored(value)
        };
        Self {
            answer,
            hit,
            policy,
        }
    }

    /// A response computed without the cache (none, or no usable key).
    pub(crate) fn uncached(result: R, policy: &'static HttpPolicy) -> Self {
        Self::result(result, false, policy)
    }

    /// The HTTP status this answers with, when not the function's own: 200 or 304.
    pub fn status(&self) -> Option<u16> {
        match &self.answer {
            Answer::Result(_) => None,
            Answer::Stored(_) => Some(200),
            Answer::NotModified(_) => Some(304),
        }
    }

    /// The entity tag sent, quoted.
    pub fn etag(&self) -> Option<&str> {
        match &self.answer {
            Answer::Result(_) => None,
            Answer::Stored(v) | Answer::NotModified(v) => Some(&v.etag),
        }
    }

    /// Whether the answer came from the cache without running the body.
    pub fn is_hit(&self) -> bool {
        self.hit
    }

    /// The stored JSON sent as the body, for a `200` from the cache.
    pub fn json(&self) -> Option<&[u8]> {
        match &self.answer {
            Answer::Stored(v) => Some(v.json()),
            _ => None,
        }
    }

    /// The headers this adds to the response (`etag`, `cache-control`, `vary`, `x-cache`):
    /// name and value.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, String)> + '_ {
        let validated = match &self.answer {
            Answer::Result(_) => None,
            Answer::Stored(v) | Answer::NotModified(v) => Some(v),
        };
        let validator = validated.into_iter().flat_map(|v| {
            [
                ("etag", v.etag.clone()),
                ("cache-control", self.policy.cache_control(v.max_age)),
            ]
        });
        let vary = (!self.policy.vary.is_empty()).then(|| ("vary", self.policy.vary.to_owned()));
        let x_cache = ("x-cache", if self.hit { "HIT" } else { "MISS" }.to_owned());
        validator.chain(vary).chain(std::iter::once(x_cache))
    }
}

/// Implemented by the shapes whose value is the JSON body of the response: a framework's
/// `Json<T>`, inside `Option`/`Result` or not.
#[diagnostic::on_unimplemented(
    message = "`revalidate` needs a handler that returns a framework's `Json<T>`, inside `Option` or `Result` or not",
    label = "the response body must be the stored JSON",
    note = "a revalidated response is the stored JSON itself: return `Json<T>` (axum) or `web::Json<T>` (Actix), or drop `revalidate`"
)]
pub trait JsonResponse {}

/// The four shapes of an adapter whose wrapper responds with exactly the JSON of the stored
/// value, `200` and `application/json`.
#[allow(unused_macros)]
macro_rules! json_response {
    ($adapter:ty) => {
        const _: () = {
            use $crate::{
                cache::shape::{Fallible, FallibleOptional, Optional, Plain},
                web::http::JsonResponse,
            };
            impl JsonResponse for Plain<$adapter> {}
            impl JsonResponse for Optional<$adapter> {}
            impl JsonResponse for Fallible<$adapter> {}
            impl JsonResponse for FallibleOptional<$adapter> {}
        };
    };
}
#[allow(unused_imports)]
pub(crate) use json_response;

impl Cache {
    /// The hit and miss paths of a revalidating handler: one `GET` and a header check on a hit
    /// (no JSON decoded, whether it answers 200 or 304); on a miss the fill of
    /// [`Cache::get_or_fill`], whose stored entry becomes the response.
    pub(crate) async fn respond<S, R, F>(
        &self,
        key: &Key,
        policy: &Policy,
        conditional: &Conditional,
        http: &'static HttpPolicy,
        body: F,
    ) -> Revalidated<R>
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        // The same `cache.get` span and outcome series as `get_or_fill`.
        let span = telemetry::call_span(&self.inner.name, key);
        self.respond_in::<S, R, F>(key, policy, conditional, http, body, &span)
            .instrument(span.clone())
            .await
    }

    async fn respond_in<S, R, F>(
        &self,
        key: &Key,
        policy: &Policy,
        conditional: &Conditional,
        http: &'static HttpPolicy,
        body: F,
        span: &Span,
    ) -> Revalidated<R>
    where
        S: Shape<R>,
        F: Future<Output = R>,
    {
        let outcome = |o: Outcome| telemetry::record_outcome(span, o);
        let inner = &*self.inner;
        let counters = self.counters(policy);
        let mode = mode::current();
        if mode == Mode::Bypass || inner.pending.covers(key.as_str()) {
            counters.outcome(Outcome::Bypass);
            outcome(Outcome::Bypass);
            return Revalidated::uncached(body.await, http);
        }
        // The near cache keeps the stored bytes, served as they are: no decode here either.
        let near = if conditional.no_cache() {
            None
        } else {
            self.near_for(key, policy)
        };
        if let Some(slot) = near.and_then(|n| n.get(key.as_str())) {
            match &slot.value {
                Some(value) => {
                    if let Some(value) = value
                        .downcast_ref::<Published>()
                        .and_then(|b| Validated::of(Stored::Filled(Arc::clone(b)), policy.version))
                    {
                        counters.outcome(Outcome::LocalHit);
                        outcome(Outcome::LocalHit);
                        return Revalidated::stored(value, conditional, true, http);
                    }
                }
                None => {
                    if let Some(result) = S::from_hit(None) {
                        counters.outcome(Outcome::LocalNullHit);
                        outcome(Outcome::LocalNullHit);
                        return Revalidated::result(result, true, http);
                    }
                }
            }
        }
        let ticket = near.and_then(|n| n.ticket(key.as_str()));
        let keep = |value: Option<Published>, landed: Landed| {
            if let (Some(near), Some(ticket)) = (near, ticket) {
                let value = value.map(|b| Arc::new(b) as Arc<dyn std::any::Any + Send + Sync>);
                near.insert(key.as_str(), ticket, value, landed);
            }
        };
        let seq = inner.flights.seq();
        let source = if mode == Mode::Refresh || conditional.no_cache() {
            Source::Refresh
        } else {
            let timer = telemetry::span_timer(span);
            let since = Instant::now();
            let (got, ttl) = if ticket.is_some() {
                match inner.store.get_with_ttl(key.as_str()).await {
                    Ok(Some((bytes, ttl))) => (Ok(Some(bytes)), ttl),
                    Ok(None) => (Ok(None), None),
                    Err(e) => (Err(e), None),
                }
            } else {
                (inner.store.get(key.as_str()).await, None)
            };
            if let Some(started) = timer
                && !matches!(got, Err(CacheError::CircuitOpen | CacheError::Unavailable))
            {
                span.record("redis_ms", started.elapsed().as_secs_f64() * 1e3);
            }
            match got {
                Ok(None) => Source::Miss { stale: false },
                Ok(Some(bytes)) => {
                    let landed = Landed {
                        since,
                        ttl,
                        bytes: bytes.len(),
                    };
                    match codec::raw(&bytes, policy.version) {
                        Ok(Raw::Value { .. } | Raw::Unvalidated { .. }) => {
                            // Shared with the near cache only when it keeps them (a copy).
                            let (stored, kept) = if ticket.is_some() {
                                let bytes: Published = bytes.into();
                                (Stored::Filled(Arc::clone(&bytes)), Some(bytes))
                            } else {
                                (Stored::Read(bytes), None)
                            };
                            if let Some(value) = Validated::of(stored, policy.version) {
                                counters.outcome(Outcome::Hit);
                                outcome(Outcome::Hit);
                                if kept.is_some() {
                                    keep(kept, landed);
                                }
                                return Revalidated::stored(value, conditional, true, http);
                            }
                            Source::Miss { stale: true }
                        }
                        Ok(Raw::Null) => match S::from_hit(None) {
                            Some(result) => {
                                counters.outcome(Outcome::NullHit);
                                outcome(Outcome::NullHit);
                                keep(None, landed);
                                return Revalidated::result(result, true, http);
                            }
                            None => Source::Miss { stale: true },
                        },
                        // Another format, another version, another program's bytes: refilled.
                        Err(e) => {
                            counters.decode_failures(1);
                            tracing::debug!(key = %crate::cache::KeyTag(key), error = %e, "unusable cache entry, treated as a miss");
                            Source::Miss { stale: true }
                        }
                    }
                }
                Err(e) => {
                    self.failed(&counters, "GET", &e);
                    Source::Failed
                }
            }
        };
        let slot = EntrySlot::new();
        let landing = Landing::new();
        let fill = Fill {
            cache: self,
            key,
            policy,
            counters: &counters,
            span,
            entry: Some(&slot),
            landing: ticket.is_some().then_some(&landing),
        };
        let result = fill.run::<S, R, F>(seq, source, body).await;
        let landed = landing.get().copied();
        // The stored form of a value answers, so the body and tag are those every later hit
        // serves; anything else (an `Err`, an absent result) is the handler's own response.
        let stored = match (S::entry(&result), slot.into_inner()) {
            (Entry::Value(_), Some(bytes)) => {
                if let Some(landed) = landed {
                    keep(Some(Arc::clone(&bytes)), landed);
                }
                Validated::of(Stored::Filled(bytes), policy.version)
            }
            (Entry::Absent, _) => {
                if let Some(landed) = landed {
                    keep(None, landed);
                }
                None
            }
            _ => None,
        };
        match stored {
            Some(value) => Revalidated::stored(value, conditional, false, http),
            None => Revalidated::result(result, false, http),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditional(tags: &str) -> Conditional {
        Conditional::new(true, [tags.as_bytes()], [])
    }

    #[test]
    fn if_none_match_compares_weakly_and_accepts_lists_and_a_star() {
        let tag = "0123456789abcdef0123456789abcdef";
        assert!(conditional(&format!("\"{tag}\"")).matches(tag));
        assert!(conditional(&format!("W/\"{tag}\"")).matches(tag));
        assert!(conditional(&format!("\"x\", \"{tag}\"")).matches(tag));
        assert!(conditional("*").matches(tag));
        assert!(!conditional(tag).matches(tag), "unquoted is no tag");
        assert!(!conditional("\"other\"").matches(tag));
        assert!(!Conditional::default().matches(tag));
        let post = Conditional::new(false, [format!("\"{tag}\"").as_bytes()], []);
        assert!(!post.matches(tag), "If-None-Match applies to GET and HEAD");
    }

    #[test]
    fn no_cache_is_one_directive_among_others() {
        let with = |v: &str| Conditional::new(true, [], [v.as_bytes()]).no_cache();
        assert!(with("no-cache"));
        assert!(with("max-age=0, No-Cache"));
        assert!(!with("no-store"));
        assert!(!with("max-age=0"));
    }

    #[test]
    fn bare_max_age_gets_the_seconds_left() {
        let policy = HttpPolicy::__new(DEFAULT_CACHE_CONTROL, "");
        assert_eq!(policy.cache_control(42), "private, max-age=42");
        let policy = HttpPolicy::__new("public,s-maxage, max-age=5", "");
        assert_eq!(policy.cache_control(9), "public, s-maxage=9, max-age=5");
        assert_eq!(
            HttpPolicy::__new("no-cache", "").cache_control(9),
            "no-cache"
        );
    }

    #[test]
    fn cache_control_policies_are_lowercase_directives() {
        for good in [
            DEFAULT_CACHE_CONTROL,
            "no-cache",
            "public, max-age, must-revalidate",
            "private,max-age=60",
            "public, stale-while-revalidate=30",
        ] {
            assert_eq!(cache_control_error(good), None, "{good}");
        }
        for bad in [
            "",
            "Private",
            "private,,max-age",
            "private, ",
            "max-age=",
            "=5",
            "public, private",
            "no-cache\n",
            "max-age=\"5\"",
        ] {
            assert!(cache_control_error(bad).is_some(), "{bad:?}");
        }
    }
}
