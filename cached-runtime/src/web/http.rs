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

use std::{any::Any, sync::Arc};

use tracing::Instrument as _;

use crate::cache::{
    Cache,
    codec::{self, Raw},
    flight::Published,
    key::{Key, KeyTag},
    policy::Policy,
    read::{Call as ReadCall, Kept, ReadOptions, View},
    report,
    shape::{Entry, Shape},
    stale::StaleHttp,
};

/// What a revalidating function answers beside its own response: the `Cache-Control` to send
/// and the headers it varies on. One `static` per function, written by the macro.
#[derive(Debug)]
pub struct HttpPolicy {
    cache_control: &'static str,
    vary: &'static str,
}

impl HttpPolicy {
    /// `cache_control` passed [`cache_control_error`] at compile time; `vary` is the header
    /// names joined by `, ` (empty for none).
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
                out.push('=');
                out.push_str(codec::Decimal::new(max_age).as_str());
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
    /// Serving stale: the directives, and whether this answer was (`cache/stale.rs`).
    stale: StaleHttp,
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

/// A stored value with its validator, parsed once: a near-cache slot keeps it as it is, so a
/// warm hit from there parses nothing.
#[derive(Clone, Debug)]
pub(crate) struct Validated {
    bytes: Stored,
    json_at: usize,
    /// `"…"`, quoted.
    etag: Arc<str>,
    /// When the entry expires (Unix seconds); `None` when it carries no validator, whose
    /// expiry is not known.
    expires: Option<u64>,
}

/// An entry as read (`GET`) or as filled (or kept in the near cache).
#[derive(Clone, Debug)]
enum Stored {
    Read(Arc<Vec<u8>>),
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
        let (etag, expires, json_at) = match codec::raw(entry, version) {
            Ok(Raw::Value {
                etag,
                expires,
                json_at,
            }) => (format!("\"{etag}\""), Some(expires), json_at),
            Ok(Raw::Unvalidated { json_at }) => {
                let tag = codec::etag(&entry[json_at..]);
                (
                    format!("\"{}\"", String::from_utf8_lossy(&tag)),
                    None,
                    json_at,
                )
            }
            Ok(Raw::Null) | Err(_) => return None,
        };
        Some(Self {
            bytes,
            json_at,
            etag: etag.into(),
            expires,
        })
    }

    /// Seconds the entry has left, for `max-age`.
    fn max_age(&self) -> u64 {
        self.expires
            .map_or(0, |at| at.saturating_sub(codec::unix_now()))
    }

    fn json(&self) -> &[u8] {
        match &self.bytes {
            Stored::Read(b) => &b[self.json_at..],
            Stored::Filled(b) => &b[self.json_at..],
        }
    }

    /// The JSON as a response body. Both frameworks' bodies are `bytes::Bytes`.
    #[cfg(any(feature = "axum", feature = "actix"))]
    pub(crate) fn into_body(self) -> bytes::Bytes {
        let json_at = self.json_at;
        match self.bytes {
            Stored::Read(b) => match Arc::try_unwrap(b) {
                Ok(b) => bytes::Bytes::from(b).slice(json_at..),
                Err(b) => bytes::Bytes::copy_from_slice(&b[json_at..]),
            },
            // Shared with the near cache: the body borrows the kept entry, no copy.
            Stored::Filled(b) => bytes::Bytes::from_owner(b).slice(json_at..),
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
            stale: StaleHttp::default(),
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
            stale: StaleHttp::default(),
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
            Answer::Stored(v) | Answer::NotModified(v) => Some(&*v.etag),
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
                ("etag", v.etag.to_string()),
                ("cache-control", {
                    let mut value = self.policy.cache_control(v.max_age());
                    self.stale.directives(&mut value);
                    value
                }),
            ]
        });
        let vary = (!self.policy.vary.is_empty()).then(|| ("vary", self.policy.vary.to_owned()));
        let x_cache = match (self.stale.served, self.hit) {
            (true, _) => "STALE",
            (false, true) => "HIT",
            (false, false) => "MISS",
        };
        let age = self
            .stale
            .age
            .filter(|_| self.stale.served)
            .map(|age| ("age", age.to_string()));
        validator
            .chain(vary)
            .chain(std::iter::once(("x-cache", x_cache.to_owned())))
            .chain(age)
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

/// A revalidating handler's view of an entry: the stored JSON served as it is, with its
/// validator, never decoded; the near cache keeps the parsed [`Validated`].
struct Responses<'a> {
    conditional: &'a Conditional,
    http: &'static HttpPolicy,
    version: u32,
}

impl<S: Shape<R>, R> View<S, R> for Responses<'_> {
    type Out = Revalidated<R>;
    const VALIDATED: bool = true;

    #[inline]
    fn near(&self, kept: &Kept) -> Option<Revalidated<R>> {
        match kept {
            Some(kept) => {
                let value = kept.downcast_ref::<Validated>()?.clone();
                Some(Revalidated::stored(
                    value,
                    self.conditional,
                    true,
                    self.http,
                ))
            }
            None => S::from_hit(None).map(|r| Revalidated::result(r, true, self.http)),
        }
    }

    fn stored(
        &self,
        bytes: Vec<u8>,
        call: &ReadCall<'_>,
        keep: bool,
    ) -> Option<(Revalidated<R>, bool, Option<Kept>)> {
        match codec::raw(&bytes, self.version) {
            Ok(Raw::Value { .. } | Raw::Unvalidated { .. }) => {
                // Shared with the near cache only when it keeps them.
                let stored = if keep {
                    Stored::Filled(bytes.into())
                } else {
                    Stored::Read(Arc::new(bytes))
                };
                let value = Validated::of(stored, self.version)?;
                let kept =
                    keep.then(|| Some(Arc::new(value.clone()) as Arc<dyn Any + Send + Sync>));
                let answer = Revalidated::stored(value, self.conditional, true, self.http);
                Some((answer, false, kept))
            }
            Ok(Raw::Null) => {
                let result = S::from_hit(None)?;
                Some((
                    Revalidated::result(result, true, self.http),
                    true,
                    keep.then_some(None),
                ))
            }
            // Another format, another version, another program's bytes: refilled.
            Err(e) => {
                call.counters.decode_failures(1);
                tracing::debug!(key = %KeyTag(call.key), error = %e, "unusable cache entry, treated as a miss");
                None
            }
        }
    }

    fn filled(
        &self,
        result: R,
        entry: Option<Published>,
        keep: bool,
    ) -> (Revalidated<R>, Option<Kept>) {
        // The stored form of a value answers, so the body and tag are those every later hit
        // serves; anything else (an `Err`, an absent result) is the handler's own response.
        match (S::entry(&result), entry) {
            (Entry::Value(_), Some(bytes)) => {
                match Validated::of(Stored::Filled(bytes), self.version) {
                    Some(value) => {
                        let kept = keep
                            .then(|| Some(Arc::new(value.clone()) as Arc<dyn Any + Send + Sync>));
                        (
                            Revalidated::stored(value, self.conditional, false, self.http),
                            kept,
                        )
                    }
                    None => (Revalidated::result(result, false, self.http), None),
                }
            }
            (Entry::Absent, _) => (
                Revalidated::result(result, false, self.http),
                keep.then_some(None),
            ),
            _ => (Revalidated::result(result, false, self.http), None),
        }
    }

    fn uncached(&self, result: R) -> Revalidated<R> {
        Revalidated::uncached(result, self.http)
    }

    fn stale(&self, mut out: Revalidated<R>, age: Option<u64>) -> Revalidated<R> {
        out.stale.served = true;
        out.stale.age = age;
        out
    }
}

impl Cache {
    /// The hit and miss paths of a revalidating handler: the one read path
    /// ([`Cache::read`]) with the [`Responses`] view: one `GET` and a header check on a hit
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
        let span = report::call_span(self.name(), key);
        let view = Responses {
            conditional,
            http,
            version: policy.version,
        };
        let options = ReadOptions {
            near: true,
            refresh: conditional.no_cache(),
        };
        let mut out = self
            .read::<S, R, F, Responses<'_>>(key, policy, &view, options, body, None, &span)
            .instrument(span.clone())
            .await;
        let served = out.stale;
        out.stale = StaleHttp {
            served: served.served,
            age: served.age,
            ..StaleHttp::of(policy)
        };
        out
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
        let policy = HttpPolicy::new(DEFAULT_CACHE_CONTROL, "");
        assert_eq!(policy.cache_control(42), "private, max-age=42");
        let policy = HttpPolicy::new("public,s-maxage, max-age=5", "");
        assert_eq!(policy.cache_control(9), "public, s-maxage=9, max-age=5");
        assert_eq!(HttpPolicy::new("no-cache", "").cache_control(9), "no-cache");
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
