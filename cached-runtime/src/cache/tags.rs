//! Tags: groups of entries dropped together by one command per tag, whatever their number,
//! on one server and on a cluster, with no scan and no clock.
//!
//! Each tag has a key, `{namespace}#tag:{text}` (no prefix holds `#`, so it never names an
//! entry), holding a random version. A fill takes the versions of its entry's tags *before*
//! its body runs (`SET tag new NX GET`: the current version, or a new one where there was
//! none) and stores them in front of the entry:
//!
//! ```text
//! rt1:{version}{version}…:{entry}      16 hex digits per tag, in the order of the tags
//! ```
//!
//! A read fetches the tag keys with the entry (one `MGET` on one server; on a cluster one
//! `MGET` per slot of tags beside the entry's `GET`, all at once) and serves the entry only
//! when every version it stored is still the tag's. Invalidating a tag deletes its key: every entry stored with
//! it, and every fill that read it before, stops matching; a tag key lost to eviction or
//! `FLUSHDB` reads as invalidated the same way, and the next fill gives the tag a new
//! version, so nothing comes back. An entry without the `rt1` header under a tagged
//! function (written before it had tags) is a miss, counted as a decode failure.
//!
//! With the near cache, tag versions are kept there too, under their keys, evicted by the
//! same tracking messages as entries (the tag keys are in the namespace). A near entry
//! records the versions it was read or filled with and the near cache's count of tag-key
//! invalidations read before that; a near hit is served with no command, after one load
//! while that count is unchanged, else after comparing its versions with the near cache's.
//!
//! Tag keys are created with a TTL of twice their creating entry's, at least a day; an entry
//! that outlives its tag key is refilled once. `invalidate_tags` also stops every fill under
//! way in this process from handing its result to callers that come after it.

use std::{
    any::Any,
    borrow::Cow,
    cmp::Ordering as CmpOrdering,
    hash::{Hash, Hasher},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use serde::Serialize;
use tracing::Span;

use super::{
    Cache,
    fill::Landed,
    key::{Key, KeyTag, push_encoded},
    near::{Keep, NearCache, Slot, Ticket},
    read::{Found, Kept},
    stats::Counters,
};
use crate::{error::CacheError, telemetry};

/// Between the namespace and a tag's text in its key.
pub(crate) const TAG_MARK: &str = "#tag:";
const MAGIC: &[u8] = b"rt1:";
const HEX_LEN: usize = 16;
/// A tag key lives at least this long (seconds), and twice its longest entry's TTL.
const MIN_TAG_TTL: u64 = 24 * 3600;

/// An entry's tags as full keys.
///
/// Not part of a key's identity: two keys with the same text are the same entry whatever
/// tags they carry, so comparisons and hashes ignore this.
#[derive(Clone, Default)]
pub(crate) struct Tags {
    keys: Vec<String>,
}

impl std::fmt::Debug for Tags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.keys).finish()
    }
}

impl PartialEq for Tags {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Tags {}

impl Hash for Tags {
    fn hash<H: Hasher>(&self, _: &mut H) {}
}

impl PartialOrd for Tags {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Tags {
    fn cmp(&self, _: &Self) -> CmpOrdering {
        CmpOrdering::Equal
    }
}

impl Tags {
    pub(crate) fn start(&mut self, namespace: &str) {
        let mut key = String::with_capacity(namespace.len() + TAG_MARK.len() + 24);
        key.push_str(namespace);
        key.push_str(TAG_MARK);
        self.keys.push(key);
    }

    pub(crate) fn push_str(&mut self, text: &str) {
        if let Some(key) = self.keys.last_mut() {
            key.push_str(text);
        }
    }

    pub(crate) fn push_value<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<(), CacheError> {
        match self.keys.last_mut() {
            Some(key) => push_encoded(key, value),
            None => Ok(()),
        }
    }

    /// The tag keys, in the order the tags were given.
    pub(crate) fn keys(&self) -> &[String] {
        &self.keys
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A tag's text: not empty, no brace (a cluster hash tag).
pub(crate) fn check_text(text: &str) -> Result<(), CacheError> {
    if text.is_empty() || text.contains(['{', '}']) {
        return Err(CacheError::KeyArgument(format!(
            "invalid tag {text:?}: a tag is not empty and holds no brace"
        )));
    }
    Ok(())
}

/// Builds a tag's text from template parts, as `tags = ["…"]` fills in its placeholders:
/// [`Cache::tag`] starts one.
///
/// ```
/// # let cache = cached_runtime::Cache::in_memory();
/// // The tag `category:{category}` of a call with `category = "garden tools"`:
/// let tag = cache.tag().literal("category:").value(&"garden tools").build()?;
/// assert_eq!(tag, "category:garden%20tools");
/// # Ok::<(), cached_runtime::CacheError>(())
/// ```
#[derive(Debug, Default)]
pub struct TagBuilder {
    text: String,
    error: Option<CacheError>,
}

impl TagBuilder {
    /// Appends template text.
    pub fn literal(mut self, text: &str) -> Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder's value, encoded as a key argument is.
    pub fn value<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        if self.error.is_none()
            && let Err(e) = push_encoded(&mut self.text, value)
        {
            self.error = Some(e);
        }
        self
    }

    /// The tag's text, for [`Cache::invalidate_tags`].
    pub fn build(self) -> Result<String, CacheError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        check_text(&self.text)?;
        Ok(self.text)
    }
}

/// A version as it is stored: 16 lowercase hex digits.
fn format_version(v: u64) -> String {
    format!("{v:016x}")
}

fn parse_version(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != HEX_LEN {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(bytes).ok()?, 16).ok()
}

/// `entry` behind the `rt1` header with `versions`.
fn wrap(versions: &[u64], entry: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + versions.len() * HEX_LEN + 1 + entry.len());
    out.extend_from_slice(MAGIC);
    for v in versions {
        out.extend_from_slice(format_version(*v).as_bytes());
    }
    out.push(b':');
    out.extend_from_slice(entry);
    out
}

/// The versions in front of a tagged entry and where the entry starts.
#[cfg(test)]
fn unwrap(bytes: &[u8], count: usize) -> Option<(Vec<u64>, usize)> {
    let at = header_len(bytes, count)?;
    let versions = bytes[MAGIC.len()..at - 1]
        .chunks(HEX_LEN)
        .map(parse_version)
        .collect::<Option<Vec<u64>>>()?;
    Some((versions, at))
}

/// The length of the `rt1` header of an entry with `count` tags, its `:` included; `None`
/// when it has none.
fn header_len(bytes: &[u8], count: usize) -> Option<usize> {
    let len = MAGIC.len() + count * HEX_LEN;
    (bytes.starts_with(MAGIC) && bytes.get(len) == Some(&b':')).then_some(len + 1)
}

/// Whether a version stored in front of an entry is its tag's version now: the same text (as
/// this crate writes both), else the same number; a missing or foreign tag key never is.
fn same_version(stored: &[u8], now: Option<&[u8]>) -> bool {
    match now {
        Some(now) if now == stored => stored.iter().all(u8::is_ascii_hexdigit),
        Some(now) => parse_version(now).is_some_and(|n| parse_version(stored) == Some(n)),
        None => false,
    }
}

/// A tag's version as the near cache keeps it.
struct TagVersion(u64);

/// The versions of an entry's tags, as read or taken before its fill, and the near cache's
/// tag epoch read before that: while no tag key has been invalidated since, a near hit needs
/// no other check.
#[derive(Debug)]
pub(crate) struct Stamp {
    pub(crate) versions: Arc<[u64]>,
    pub(crate) epoch: u64,
}

/// Whether `key` (a full key) is a tag's.
pub(crate) fn is_tag_key(key: &str) -> bool {
    key.contains(TAG_MARK)
}

/// Tag counters of one cache.
#[derive(Default)]
pub(crate) struct TagCounters {
    invalidations: AtomicU64,
    rejected: AtomicU64,
}

/// What tags have done in one cache, from [`Cache::tag_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TagStats {
    /// Tags invalidated ([`Cache::invalidate_tags`], one per tag).
    pub invalidations: u64,
    /// Entries found in Redis but not served: a tag they were stored with was invalidated.
    pub rejected: u64,
}

impl Cache {
    /// Starts the text of a tag, for [`invalidate_tags`](Self::invalidate_tags): the same
    /// text a `tags = ["…"]` template gives for the same values.
    pub fn tag(&self) -> TagBuilder {
        TagBuilder::default()
    }

    /// Drops every entry tagged with one of `tags` (their text, as the attribute's `tags`
    /// templates give it: `"category:books"`), with one command per tag however many entries
    /// carry it, on one server and on a cluster. An entry whose fill started before this
    /// call is not served after it either. Returns how many of the tags had entries.
    ///
    /// On failure the error is returned and the invalidation retried in the background; until
    /// it succeeds this process does not read entries with those tags from the cache.
    pub async fn invalidate_tags<I>(&self, tags: I) -> Result<u64, CacheError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let namespace = &self.inner.namespace;
        let keys = tags
            .into_iter()
            .map(|t| {
                let text = t.as_ref();
                check_text(text)?;
                Ok(format!("{namespace}{TAG_MARK}{text}"))
            })
            .collect::<Result<Vec<String>, CacheError>>()?;
        if keys.is_empty() {
            return Ok(0);
        }
        let inner = &*self.inner;
        // A fill under way in this process, whatever its key, may carry one of these tags:
        // none of them hands its result to a caller that comes after this.
        inner.flights.invalidate_where(|_| true);
        let found = self.invalidate_tag_keys(keys.clone()).await?;
        let n = keys.len() as u64;
        inner.tags.invalidations.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(telemetry::TAG_INVALIDATIONS, "cache" => inner.name.clone()).increment(n);
        Ok(found)
    }

    /// Tag counters: invalidations and entries rejected by tag.
    pub fn tag_stats(&self) -> TagStats {
        let tags = &self.inner.tags;
        TagStats {
            invalidations: tags.invalidations.load(Ordering::Relaxed),
            rejected: tags.rejected.load(Ordering::Relaxed),
        }
    }

    /// Whether a pending (failed, being retried) tag invalidation covers one of `key`'s tags.
    #[inline]
    pub(crate) fn tag_pending(&self, key: &Key) -> bool {
        let pending = &self.inner.pending;
        !key.tags.is_empty() && key.tags.keys().iter().any(|t| pending.covers(t))
    }

    /// The read path's `GET` of a tagged entry: the entry and its tags' versions in one round
    /// trip; an entry stored with a version that is no longer its tag's is missing.
    pub(crate) async fn get_tagged(
        &self,
        key: &Key,
        counters: &Counters,
        span: &Span,
        with_ttl: bool,
    ) -> Found {
        let inner = &*self.inner;
        let tags = key.tags.keys();
        let timer = telemetry::span_timer(span);
        // The clock, the epoch and the tickets only for a read the near cache may keep.
        let since = with_ttl.then(Instant::now);
        let near = since.and(inner.near.as_deref());
        let epoch = near.map_or(0, NearCache::tag_epoch);
        // Taken before the read: an invalidation of a tag meanwhile refuses its version.
        let tickets: Option<Vec<Option<Ticket>>> =
            near.map(|n| tags.iter().map(|t| n.ticket(t)).collect());
        let got = inner.store.get_tagged(key.as_str(), with_ttl, tags).await;
        super::read::record_get_ms(span, timer, &got);
        let (entry, versions) = match got {
            Ok(got) => got,
            Err(e) => {
                self.failed(counters, "GET", &e);
                return Found::Failed;
            }
        };
        if let (Some(near), Some(tickets), Some(since)) = (near, tickets, since) {
            for ((tag, version), ticket) in tags.iter().zip(&versions).zip(tickets) {
                if let (Some(v), Some(ticket)) =
                    (version.as_deref().and_then(parse_version), ticket)
                {
                    keep_version(near, tag, ticket, v, since);
                }
            }
        }
        let Some((mut bytes, ttl)) = entry else {
            return Found::Missing;
        };
        let Some(at) = header_len(&bytes, tags.len()) else {
            counters.decode_failures(1);
            tracing::debug!(key = %KeyTag(key), "cache entry without tag versions, treated as a miss");
            return Found::Missing;
        };
        let stored = &bytes[MAGIC.len()..at - 1];
        if !stored
            .chunks(HEX_LEN)
            .zip(&versions)
            .all(|(stored, now)| same_version(stored, now.as_deref()))
        {
            self.rejected(key);
            return Found::Missing;
        }
        // Parsed only for the near cache, which checks them on its hits.
        let stamp = near.and_then(|_| {
            let versions = stored
                .chunks(HEX_LEN)
                .map(parse_version)
                .collect::<Option<Arc<[u64]>>>()?;
            Some(Arc::new(Stamp { versions, epoch }))
        });
        let size = bytes.len();
        bytes.drain(..at);
        Found::Entry {
            bytes,
            landed: since.map(|since| Landed {
                since,
                ttl,
                bytes: size,
                tags: stamp,
            }),
        }
    }

    fn rejected(&self, key: &Key) {
        let inner = &*self.inner;
        inner.tags.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            telemetry::TAG_REJECTED,
            "cache" => inner.name.clone(),
            "prefix" => key.prefix().to_owned()
        )
        .increment(1);
        tracing::debug!(key = %KeyTag(key), "cache entry of an invalidated tag, treated as a miss");
    }

    /// Takes the versions of `key`'s tags before a fill's body runs, giving a version to a
    /// tag that has none: `Some(None)` for a key without tags, `None` when they cannot be
    /// read (counted and logged; the result is not stored).
    pub(crate) async fn stamp_tags(
        &self,
        key: &Key,
        ttl: u64,
        counters: &Counters,
    ) -> Option<Option<Arc<Stamp>>> {
        if key.tags.is_empty() {
            return Some(None);
        }
        let epoch = self.inner.near.as_deref().map_or(0, NearCache::tag_epoch);
        match self.take_versions(key, ttl).await {
            Ok(versions) => Some(Some(Arc::new(Stamp { versions, epoch }))),
            Err(e) => {
                self.failed(counters, "SET NX GET", &e);
                None
            }
        }
    }

    async fn take_versions(&self, key: &Key, ttl: u64) -> Result<Arc<[u64]>, CacheError> {
        let tags = key.tags.keys();
        let inner = &*self.inner;
        let since = Instant::now();
        let near = inner.near.as_deref();
        let tickets: Vec<Option<Ticket>> = tags
            .iter()
            .map(|t| near.and_then(|n| n.ticket(t)))
            .collect();
        let fresh: Vec<u64> = tags.iter().map(|_| fastrand::u64(..)).collect();
        let texts: Vec<String> = fresh.iter().map(|v| format_version(*v)).collect();
        let secs = ttl.saturating_mul(2).max(MIN_TAG_TTL);
        let old = inner.store.stamp_tags(tags, &texts, secs).await?;
        let versions = old
            .iter()
            .zip(&fresh)
            .map(|(old, fresh)| match old {
                None => Ok(*fresh),
                Some(bytes) => parse_version(bytes).ok_or_else(|| CacheError::Command {
                    code: None,
                    source: "a tag key holds something other than a version".into(),
                }),
            })
            .collect::<Result<Arc<[u64]>, CacheError>>()?;
        if let Some(near) = near {
            for ((tag, v), ticket) in tags.iter().zip(versions.iter()).zip(tickets) {
                if let Some(ticket) = ticket {
                    keep_version(near, tag, ticket, *v, since);
                }
            }
        }
        Ok(versions)
    }

    /// A write-through's entry: behind the versions its tags have now.
    pub(crate) async fn tag_written(
        &self,
        key: &Key,
        entry: Vec<u8>,
        ttl: u64,
    ) -> Result<Vec<u8>, CacheError> {
        if key.tags.is_empty() {
            return Ok(entry);
        }
        let versions = self.take_versions(key, ttl).await?;
        Ok(wrap(&versions, &entry))
    }

    /// What a fill stores for `entry`: behind the versions of its tags when it has tags;
    /// `None` when it has tags but no versions were taken (nothing may be stored).
    pub(crate) fn tagged_form<'e>(
        key: &Key,
        entry: &'e [u8],
        versions: Option<&[u64]>,
    ) -> Option<Cow<'e, [u8]>> {
        match (key.tags.is_empty(), versions) {
            (true, _) => Some(Cow::Borrowed(entry)),
            (false, Some(versions)) if versions.len() == key.tags.keys().len() => {
                Some(Cow::Owned(wrap(versions, entry)))
            }
            (false, _) => None,
        }
    }
}

/// Keeps a tag's version in the near cache.
fn keep_version(near: &NearCache, tag: &str, ticket: Ticket, version: u64, since: Instant) {
    let value: Arc<dyn Any + Send + Sync> = Arc::new(TagVersion(version));
    near.insert(
        tag,
        ticket,
        Some(value),
        Landed {
            since,
            ttl: None,
            bytes: HEX_LEN,
            tags: None,
        },
    );
}

/// Whether a near-cache slot of `key` may be served: untagged, or no tag key invalidated
/// since its versions were read (one load), or every version it was kept with is its tag's
/// version in the near cache now.
#[inline]
pub(crate) fn near_current(near: &NearCache, key: &Key, slot: &Slot) -> bool {
    if key.tags.is_empty() {
        return true;
    }
    let Some(stamp) = &slot.tags else {
        return false;
    };
    if stamp.epoch == near.tag_epoch() {
        return true;
    }
    let tags = key.tags.keys();
    stamp.versions.len() == tags.len()
        && tags.iter().zip(stamp.versions.iter()).all(|(tag, v)| {
            near.tag_version(tag).is_some_and(|s| {
                s.value
                    .as_ref()
                    .and_then(|a| a.downcast_ref::<TagVersion>())
                    .is_some_and(|t| t.0 == *v)
            })
        })
}

/// Keeps what a call read or filled in the near cache, with the versions of its tags.
/// `keeping`: how long past its fresh TTL it is kept for stale service, and whether its
/// function refreshes early (`cache/stale.rs`).
pub(crate) fn keep(
    near: &NearCache,
    key: &Key,
    ticket: Ticket,
    kept: Kept,
    landed: Landed,
    keeping: Keep,
) {
    // A tagged value without versions cannot be checked on a near hit.
    if key.tags.is_empty() || landed.tags.is_some() {
        near.insert_kept(key.as_str(), ticket, kept, landed, keeping);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_version_matches_only_its_tags_version_now() {
        let v = b"00000000000000ff";
        assert!(same_version(v, Some(v)));
        assert!(
            same_version(v, Some(b"00000000000000FF")),
            "the same number"
        );
        assert!(!same_version(v, Some(b"00000000000000fe")));
        assert!(!same_version(v, None), "a lost tag key invalidates");
        assert!(!same_version(
            b"zzzzzzzzzzzzzzzz",
            Some(b"zzzzzzzzzzzzzzzz")
        ));
        assert_eq!(header_len(b"rt1:00000000000000ff:rc1", 1), Some(21));
        assert_eq!(header_len(b"rt1:00000000000000ff:rc1", 2), None);
    }

    #[test]
    fn versions_round_trip_in_front_of_the_entry() {
        let wrapped = wrap(&[1, u64::MAX], b"rc1:0:v:5");
        assert_eq!(
            wrapped,
            b"rt1:0000000000000001ffffffffffffffff:rc1:0:v:5".to_vec()
        );
        let (versions, at) = unwrap(&wrapped, 2).expect("a tagged entry");
        assert_eq!(versions, vec![1, u64::MAX]);
        assert_eq!(&wrapped[at..], b"rc1:0:v:5");
        // Another number of tags, an untagged entry, garbage: no versions.
        assert!(unwrap(&wrapped, 1).is_none());
        assert!(unwrap(&wrapped, 3).is_none());
        assert!(unwrap(b"rc1:0:v:5", 1).is_none());
        assert!(unwrap(b"rt1:zzzzzzzzzzzzzzzz:x", 1).is_none());
    }

    #[test]
    fn tags_do_not_change_a_keys_identity() {
        let cache = Cache::in_memory();
        let a = cache.key("p").arg(&1).build().expect("a key");
        let b = cache.key("p").arg(&1).tag("t").build().expect("a key");
        assert_eq!(a, b);
        assert_eq!(b.tags.keys(), ["#tag:t"]);
        assert!(cache.key("p").tag("").build().is_err());
        assert!(cache.key("p").tag("a{b}").build().is_err());
    }
}
