//! The in-process store behind `Cache::in_memory()`: the few Redis string commands the cache
//! sends (`GET`, `SET … EX/PX`, `SET … NX PX`, compare-and-delete, `UNLINK`, `SCAN MATCH` with
//! `UNLINK`, `PTTL`, `FLUSHDB`) with Redis's semantics, over sharded maps. It lives in one
//! process: nothing is shared with another one.
//!
//! Expiry is measured with [`Instant`]. An expired entry is invisible at once, removed when it
//! is next touched, and otherwise swept out by its shard when the shard has doubled since its
//! last sweep, so memory stays within about twice the live entries even for keys that are
//! never read again, at an amortised constant cost per write.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

/// Number of independently locked shards; a power of two.
const SHARDS: usize = 16;

/// A shard does not sweep below this many entries (sweeping tiny maps often buys nothing).
const SWEEP_FLOOR: usize = 64;

/// Star runs that may precede the end of a pattern: Redis stops matching past this many
/// nested `*` (its protection against abusive patterns), and so do we.
const MAX_STAR_NESTING: usize = 1000;

/// An in-process key-value store with Redis's expiry semantics. `Send + Sync`; every method
/// takes one shard lock at a time and holds it only for map operations (values are copied and
/// freed outside the lock).
pub(crate) struct MemoryStore {
    shards: [Mutex<Shard>; SHARDS],
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<str>, Entry>,
    /// Sweep out expired entries when the map reaches this size (at least [`SWEEP_FLOOR`]).
    sweep_at: usize,
}

struct Entry {
    /// Shared, so that `get` copies it out after releasing the lock.
    value: Arc<[u8]>,
    /// `None` only for a TTL so long that the clock cannot represent its end: never expires.
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| now < at)
    }
}

impl Shard {
    /// Called after a new key was inserted: sweeps when the map doubled since the last sweep.
    /// Returns what it removed, to be dropped after the lock is released.
    fn after_insert(&mut self) -> Vec<Entry> {
        if self.map.len() < self.sweep_at.max(SWEEP_FLOOR) {
            return Vec::new();
        }
        self.sweep(Instant::now())
    }

    fn sweep(&mut self, now: Instant) -> Vec<Entry> {
        let expired = self
            .map
            .extract_if(|_, e| !e.live(now))
            .map(|(_, e)| e)
            .collect();
        self.sweep_at = self.map.len().saturating_mul(2);
        expired
    }
}

impl MemoryStore {
    /// An empty store.
    pub(crate) fn new() -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        // Any well-mixed hash will do: the shard of a key never leaves the process.
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(key, &mut hasher);
        let hash = std::hash::Hasher::finish(&hasher);
        // The mask keeps the index below SHARDS, so the cast cannot truncate a used bit.
        let index = (hash as usize) & (SHARDS - 1);
        lock(&self.shards[index])
    }

    /// `GET key`: the value, or `None` when missing or expired.
    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let found = match shard.map.get(key) {
            Some(e) if e.live(now) => Ok(Arc::clone(&e.value)),
            Some(_) => Err(shard.map.remove(key)),
            None => Err(None),
        };
        drop(shard);
        // Copied (or an expired entry freed) outside the lock.
        found.ok().map(|v| v.to_vec())
    }

    /// `SET key value EX secs`. Like Redis, a zero TTL is rejected (Redis replies with an
    /// error): the key is left as it was.
    pub(crate) fn set_ex(&self, key: &str, value: &[u8], secs: u64) {
        self.set(key, value, Duration::from_secs(secs), false);
    }

    /// `SET key value PX ms`; a zero TTL leaves the key as it was, like [`set_ex`](Self::set_ex).
    #[cfg_attr(not(test), allow(dead_code))] // exercised by the unit tests
    pub(crate) fn set_px(&self, key: &str, value: &[u8], ms: u64) {
        self.set(key, value, Duration::from_millis(ms), false);
    }

    /// `SET key value NX PX ms`: stores only when the key is missing or expired; true when it
    /// stored. A zero TTL stores nothing (false).
    pub(crate) fn set_nx_px(&self, key: &str, value: &[u8], ms: u64) -> bool {
        self.set(key, value, Duration::from_millis(ms), true)
    }

    fn set(&self, key: &str, value: &[u8], ttl: Duration, only_if_absent: bool) -> bool {
        if ttl.is_zero() {
            return false;
        }
        let now = Instant::now();
        // Allocated before taking the lock.
        let entry = Entry {
            value: Arc::from(value),
            expires: now.checked_add(ttl),
        };
        let mut shard = self.shard(key);
        let freed = match shard.map.get_mut(key) {
            Some(old) if only_if_absent && old.live(now) => return false,
            // A plain SET replaces the value and the TTL.
            Some(old) => vec![std::mem::replace(old, entry)],
            None => {
                shard.map.insert(key.into(), entry);
                shard.after_insert()
            }
        };
        drop(shard);
        drop(freed);
        true
    }

    /// Compare-and-delete (the lock release script): deletes `key` only when it is live and
    /// holds exactly `expected`; true when it deleted.
    pub(crate) fn delete_if_eq(&self, key: &str, expected: &[u8]) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let (removed, deleted) = match shard.map.get(key) {
            Some(e) if e.live(now) && *e.value == *expected => (shard.map.remove(key), true),
            Some(e) if !e.live(now) => (shard.map.remove(key), false),
            _ => (None, false),
        };
        drop(shard);
        drop(removed);
        deleted
    }

    /// `UNLINK key…`: deletes the keys; how many of them existed (a key named twice counts
    /// once, as in Redis).
    pub(crate) fn delete(&self, keys: &[&str]) -> u64 {
        let now = Instant::now();
        let mut deleted = 0;
        for key in keys {
            let removed = self.shard(key).map.remove(*key);
            if removed.is_some_and(|e| e.live(now)) {
                deleted += 1;
            }
        }
        deleted
    }

    /// `SCAN 0 MATCH pattern` to the end with `UNLINK` of every key found: deletes every live
    /// key that matches the Redis glob `pattern` (see [`glob_match`]); how many it deleted.
    /// Exactly `*` matches every key, the empty one included, as `SCAN` treats it.
    pub(crate) fn delete_matching(&self, pattern: &str) -> u64 {
        let every = pattern == "*";
        let now = Instant::now();
        let mut deleted = 0;
        for shard in &self.shards {
            let mut shard = lock(shard);
            // Expired entries go too: the shard is being walked anyway.
            let removed: Vec<Entry> = shard
                .map
                .extract_if(|k, e| {
                    !e.live(now) || every || glob_match(pattern.as_bytes(), k.as_bytes())
                })
                .map(|(_, e)| e)
                .collect();
            drop(shard);
            deleted += removed.iter().filter(|e| e.live(now)).count() as u64;
        }
        deleted
    }

    /// `PTTL key`: the remaining time to live in milliseconds (rounded down), `None` when the
    /// key is missing or expired; `u64::MAX` for a TTL too long for the clock.
    #[cfg_attr(not(test), allow(dead_code))] // exercised by the unit tests
    pub(crate) fn ttl_ms(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let (ttl, removed) = match shard.map.get(key) {
            Some(e) if e.live(now) => (Some(e.expires), None),
            Some(_) => (None, shard.map.remove(key)),
            None => (None, None),
        };
        drop(shard);
        drop(removed);
        ttl.map(|expires| match expires {
            Some(at) => {
                u64::try_from(at.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
            }
            None => u64::MAX,
        })
    }

    /// `DBSIZE` without the expired entries: how many live entries it holds. Sweeps every
    /// shard on the way.
    #[cfg_attr(not(test), allow(dead_code))] // exercised by the unit tests
    pub(crate) fn len(&self) -> usize {
        let now = Instant::now();
        let mut live = 0;
        for shard in &self.shards {
            let mut shard = lock(shard);
            let expired = shard.sweep(now);
            live += shard.map.len();
            drop(shard);
            drop(expired);
        }
        live
    }

    /// `FLUSHDB`: removes every entry.
    #[cfg_attr(not(test), allow(dead_code))] // exercised by the unit tests
    pub(crate) fn flush(&self) {
        for shard in &self.shards {
            let old = std::mem::take(&mut *lock(shard));
            drop(old);
        }
    }

    /// Entries held, expired ones not yet removed included (what memory holds).
    fn stored(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &SHARDS)
            .field("stored", &self.stored())
            .finish()
    }
}

/// A shard's lock; a panic elsewhere while it was held leaves the map consistent (no method
/// panics half-way through an update), so a poisoned lock is taken over as it is.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Redis's glob matching (`stringmatchlen` in `util.c`, case-sensitive), byte for byte:
///
/// - `*` any run of bytes, `?` any one byte, `\x` the byte `x` (a trailing `\` is itself);
/// - `[abc]` one of the listed bytes, `[^abc]` any other byte (`!` is not a negation), `[a-z]`
///   a range (its ends in either order), `\` escapes inside brackets too; a bracket left open
///   ends with the pattern;
/// - range ends compare as signed bytes, as Redis built for x86-64 does (so `[\x01-\xc2]`
///   holds `\xc3`);
/// - an empty text matches only an empty pattern (Redis's `SCAN` and `KEYS` special-case
///   exactly `*` before matching; see [`MemoryStore::delete_matching`]);
/// - no match past 1000 nested `*` runs, as Redis gives up there.
///
/// Iterative, backtracking only to the last `*`: `O(pattern × text)` at worst, never recursive,
/// never panics.
pub(crate) fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    if text.is_empty() {
        return pattern.is_empty();
    }
    if pattern.iter().filter(|&&b| b == b'*').count() > MAX_STAR_NESTING
        && inner_star_runs(pattern) > MAX_STAR_NESTING
    {
        return false;
    }
    let (mut p, mut t) = (0, 0);
    // After a mismatch, resume with the pattern just past the last `*` run and the text one
    // byte further than that run's match ended. Every other token matches exactly one byte, so
    // extending an earlier `*` can never help where extending the last one does not.
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            while pattern.get(p) == Some(&b'*') {
                p += 1;
            }
            if p == pattern.len() {
                return true;
            }
            resume = Some((p, t));
            continue;
        }
        if p < pattern.len() {
            let (matched, next) = match_token(pattern, p, text[t]);
            if matched {
                p = next;
                t += 1;
                continue;
            }
        }
        match resume {
            Some((star_p, star_t)) => {
                p = star_p;
                t = star_t + 1;
                resume = Some((star_p, t));
            }
            None => return false,
        }
    }
    while pattern.get(p) == Some(&b'*') {
        p += 1;
    }
    p == pattern.len()
}

/// Matches the one-byte token starting at `pattern[p]` (not `*`) against `c`; whether it
/// matched, and where the next token starts.
fn match_token(pattern: &[u8], p: usize, c: u8) -> (bool, usize) {
    match pattern[p] {
        b'?' => (true, p + 1),
        b'[' => match_class(pattern, p + 1, c),
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == c, p + 2),
        literal => (literal == c, p + 1),
    }
}

/// A bracket expression whose body starts at `pattern[i]` (just past `[`), parsed exactly as
/// Redis does, including its edge cases: `[]` is empty, an unterminated bracket runs to the end
/// of the pattern, and a range's end may be the `]` (so `[a-]` is the range `]`..`a`).
fn match_class(pattern: &[u8], mut i: usize, c: u8) -> (bool, usize) {
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    loop {
        let rest = pattern.len() - i;
        if rest >= 2 && pattern[i] == b'\\' {
            i += 1;
            matched |= pattern[i] == c;
        } else if rest == 0 {
            // Redis steps back one so that its step past the token lands on the end.
            i -= 1;
            break;
        } else if pattern[i] == b']' {
            break;
        } else if rest >= 3 && pattern[i + 1] == b'-' {
            let (a, b) = (signed(pattern[i]), signed(pattern[i + 2]));
            matched |= (a.min(b)..=a.max(b)).contains(&signed(c));
            i += 2;
        } else {
            matched |= pattern[i] == c;
        }
        i += 1;
    }
    (matched != negate, i + 1)
}

/// A byte as C's (signed, on x86-64) `char`.
fn signed(b: u8) -> i8 {
    i8::from_ne_bytes([b])
}

/// How many `*` runs a pattern has before its end (a trailing run is not counted: Redis
/// matches it without nesting further).
fn inner_star_runs(pattern: &[u8]) -> usize {
    let mut runs = 0;
    let mut p = 0;
    while p < pattern.len() {
        if pattern[p] == b'*' {
            while pattern.get(p) == Some(&b'*') {
                p += 1;
            }
            if p < pattern.len() {
                runs += 1;
            }
        } else {
            // Any byte stands for the text's byte here: only where the token ends matters.
            p = match_token(pattern, p, 0).1;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use proptest::prelude::*;

    use super::*;

    /// Polls (bounded, generously) until `gone` holds; the bound is a hang guard, not a timing
    /// assertion.
    fn eventually(what: &str, mut gone: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone() {
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_store_is_send_sync_and_debug() {
        fn check<T: Send + Sync + Default + fmt::Debug>() {}
        check::<MemoryStore>();
        let store = MemoryStore::default();
        store.set_ex("k", b"v", 60);
        assert_eq!(
            format!("{store:?}"),
            "MemoryStore { shards: 16, stored: 1 }"
        );
    }

    #[test]
    fn set_then_get_returns_the_bytes_and_a_set_replaces_value_and_ttl() {
        let store = MemoryStore::new();
        assert_eq!(store.get("k"), None);
        store.set_ex("k", b"one", 600);
        assert_eq!(store.get("k").as_deref(), Some(&b"one"[..]));
        store.set_px("k", b"two", 50_000);
        assert_eq!(store.get("k").as_deref(), Some(&b"two"[..]));
        let ttl = store.ttl_ms("k").expect("a live key has a ttl");
        assert!(
            ttl <= 50_000,
            "the second SET's TTL replaced the first: {ttl}"
        );
        store.set_ex("empty", b"", 600);
        assert_eq!(
            store.get("empty"),
            Some(Vec::new()),
            "an empty value is a value"
        );
    }

    #[test]
    fn an_entry_expires_and_is_then_invisible_everywhere() {
        let store = MemoryStore::new();
        store.set_px("k", b"v", 5);
        store.set_ex("kept", b"v", 600);
        eventually("the 5 ms entry expires", || store.get("k").is_none());
        assert_eq!(store.ttl_ms("k"), None);
        assert!(!store.delete_if_eq("k", b"v"));
        assert_eq!(store.delete(&["k"]), 0);
        assert_eq!(store.len(), 1);
        assert_eq!(store.get("kept").as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn ttl_is_reported_in_milliseconds_and_missing_keys_have_none() {
        let store = MemoryStore::new();
        store.set_ex("k", b"v", 10);
        let ttl = store.ttl_ms("k").expect("a live key has a ttl");
        assert!(0 < ttl && ttl <= 10_000, "{ttl}");
        assert_eq!(store.ttl_ms("missing"), None);
        store.set_px("far", b"v", u64::MAX);
        assert!(store.ttl_ms("far").is_some_and(|t| t > 1 << 40));
        assert_eq!(store.get("far").as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn a_zero_ttl_is_rejected_like_redis_and_leaves_the_key_alone() {
        let store = MemoryStore::new();
        store.set_ex("k", b"old", 600);
        store.set_ex("k", b"new", 0);
        store.set_px("k", b"new", 0);
        assert!(!store.set_nx_px("absent", b"new", 0));
        assert_eq!(store.get("k").as_deref(), Some(&b"old"[..]));
        assert_eq!(store.get("absent"), None);
    }

    #[test]
    fn set_nx_stores_only_when_missing_or_expired() {
        let store = MemoryStore::new();
        assert!(store.set_nx_px("lock", b"a", 60_000));
        assert!(!store.set_nx_px("lock", b"b", 60_000));
        assert_eq!(store.get("lock").as_deref(), Some(&b"a"[..]));

        assert!(store.set_nx_px("short", b"a", 5));
        eventually("the 5 ms lock expires", || {
            store.set_nx_px("short", b"b", 60_000)
        });
        assert_eq!(store.get("short").as_deref(), Some(&b"b"[..]));
    }

    #[test]
    fn compare_and_delete_deletes_only_the_expected_value() {
        let store = MemoryStore::new();
        store.set_px("lock", b"token-1", 60_000);
        assert!(!store.delete_if_eq("lock", b"token-2"));
        assert!(
            !store.delete_if_eq("lock", b"token-"),
            "a prefix is not equal"
        );
        assert_eq!(store.get("lock").as_deref(), Some(&b"token-1"[..]));
        assert!(store.delete_if_eq("lock", b"token-1"));
        assert_eq!(store.get("lock"), None);
        assert!(!store.delete_if_eq("lock", b"token-1"), "already gone");
    }

    #[test]
    fn delete_counts_the_keys_that_existed_once_each() {
        let store = MemoryStore::new();
        store.set_ex("a", b"1", 600);
        store.set_ex("b", b"2", 600);
        store.set_ex("c", b"3", 600);
        assert_eq!(store.delete(&["a", "b", "missing", "a"]), 2);
        assert_eq!(store.delete(&[]), 0);
        assert_eq!(store.len(), 1);
        assert_eq!(store.get("c").as_deref(), Some(&b"3"[..]));
    }

    #[test]
    fn delete_matching_deletes_what_the_pattern_matches_and_counts_it() {
        let store = MemoryStore::new();
        for key in [
            "item:1", "item:2", "item:10", "itemx", "other:1", "item*:1", "",
        ] {
            store.set_ex(key, b"v", 600);
        }
        assert_eq!(store.delete_matching("item:?"), 2);
        assert_eq!(store.delete_matching(r"item\*:*"), 1);
        assert_eq!(store.get("item:10").as_deref(), Some(&b"v"[..]));
        assert_eq!(store.delete_matching("nothing*"), 0);
        assert_eq!(store.len(), 4);
        // Exactly `*` is SCAN's "every key", the empty one included.
        assert_eq!(store.delete_matching("*"), 4);
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn len_counts_live_entries_and_flush_removes_all() {
        let store = MemoryStore::new();
        for i in 0..100 {
            store.set_ex(&format!("k{i}"), b"v", 600);
        }
        store.set_px("short", b"v", 1);
        eventually("the 1 ms entry expires", || store.len() == 100);
        store.flush();
        assert_eq!(store.len(), 0);
        assert_eq!(store.get("k1"), None);
    }

    #[test]
    fn expired_keys_that_are_never_read_again_do_not_accumulate() {
        let store = MemoryStore::new();
        let (rounds, per_round) = (20, 1_000);
        for round in 0..rounds {
            for i in 0..per_round {
                store.set_px(&format!("r{round}:{i}"), b"value", 1);
            }
            let last = format!("r{round}:{}", per_round - 1);
            eventually("a 1 ms entry expires", || store.ttl_ms(&last).is_none());
        }
        // Without sweeping, all 20,000 would still be held (minus the probed ones); with it, a
        // shard holds at most about twice what was live at its last sweep, at most a round.
        let stored = store.stored();
        assert!(stored <= 5 * per_round, "{stored} entries held");
        assert_eq!(store.len(), 0);
    }

    #[test]
    fn concurrent_nx_sets_elect_exactly_one_winner_per_key() {
        let store = MemoryStore::new();
        let wins: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let store = &store;
                    s.spawn(move || {
                        (0..200)
                            .filter(|k| store.set_nx_px(&format!("lock:{k}"), &[t], 60_000))
                            .count()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a worker panicked"))
                .collect()
        });
        assert_eq!(wins.iter().sum::<usize>(), 200);
        assert_eq!(store.len(), 200);
    }

    #[test]
    fn a_poisoned_shard_is_recovered() {
        let store = MemoryStore::new();
        store.set_ex("k", b"v", 600);
        for shard in &store.shards {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                let _guard = shard.lock();
                panic!("poison the shard");
            }));
        }
        assert!(store.shards.iter().all(Mutex::is_poisoned));
        assert_eq!(store.get("k").as_deref(), Some(&b"v"[..]));
        store.set_ex("k2", b"v", 600);
        assert_eq!(store.len(), 2);
    }

    /// `(pattern, text, matches)`, each checked against a real Redis 7.0 `SCAN MATCH` when
    /// written, edge cases included.
    const CASES: &[(&[u8], &[u8], bool)] = &[
        (b"", b"", true),
        (b"", b"a", false),
        (b"*", b"", false),
        (b"**", b"", false),
        (b"*", b"anything", true),
        (b"**", b"a", true),
        (b"?*", b"a", true),
        (b"?", b"", false),
        (b"?", b"ab", false),
        (b"item:*", b"item:", true),
        (b"item:*", b"item", false),
        (b"*:1", b"a:b:1", true),
        (b"*a*", b"bab", true),
        (b"*a*", b"bbb", false),
        (b"a*b*c", b"aXbYc", true),
        (b"a*b*c", b"aXcYb", false),
        // Escapes.
        (br"a\*b", b"a*b", true),
        (br"a\*b", b"axb", false),
        (br"a\?", b"a?", true),
        (br"a\?", b"ab", false),
        (br"\[x]", b"[x]", true),
        (br"\\", b"\\", true),
        (br"\", b"\\", true),
        (br"a\", b"a\\", true),
        (br"a\", b"a-", false),
        (br"*\", b"\\", true),
        // Classes, negation, ranges.
        (b"h[ae]llo", b"hello", true),
        (b"h[ae]llo", b"hallo", true),
        (b"h[ae]llo", b"hillo", false),
        (b"h[^e]llo", b"hallo", true),
        (b"h[^e]llo", b"hello", false),
        (b"h[a-b]llo", b"hbllo", true),
        (b"h[a-b]llo", b"hcllo", false),
        (b"[z-a]", b"b", true),
        (b"[z-a]", b"-", false),
        (b"[!a]", b"a", true),
        (b"[!a]", b"!", true),
        (b"[!a]", b"b", false),
        (br"[\]]", b"]", true),
        (br"[\-]", b"-", true),
        (br"[a\-z]", b"b", false),
        (b"[]]", b"]", false),
        (b"[", b"a", false),
        (b"[", b"[", false),
        (b"[a", b"a", true),
        (b"[^", b"a", true),
        (b"[^", b"^", true),
        (b"[^", b"ab", false),
        (b"[^a", b"b", true),
        (b"[^a", b"a", false),
        (b"[a-]", b"a", true),
        (b"[a-]", b"]", true),
        (b"[a-]", b"^", true),
        (b"[a-]", b"-", false),
        (b"[a-]b", b"b", true),
        (br"[\", b"\\", true),
        (b"[\x01-\xc2]?", "é".as_bytes(), true),
        (b"[a-\x7f]?", "é".as_bytes(), false),
    ];

    #[test]
    fn glob_cases_match_like_redis() {
        for &(pattern, text, expected) in CASES {
            assert_eq!(
                glob_match(pattern, text),
                expected,
                "{:?} against {:?}",
                String::from_utf8_lossy(pattern),
                String::from_utf8_lossy(text)
            );
            assert_eq!(
                redis_reference(pattern, text),
                expected,
                "the reference itself"
            );
        }
    }

    #[test]
    fn star_heavy_patterns_finish() {
        let text = vec![b'a'; 20_000];
        let pattern = b"a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        assert!(!glob_match(pattern, &text));
        let mut pattern = b"*a".repeat(30);
        pattern.extend_from_slice(b"*c");
        assert!(!glob_match(&pattern, &text));
        assert!(glob_match(b"*a*a*a*a*a*a", &text));
    }

    #[test]
    fn more_than_a_thousand_nested_stars_never_match_as_in_redis() {
        let text = vec![b'a'; 1001];
        assert!(glob_match(&b"*a".repeat(1000), &text));
        assert!(glob_match(
            &[b"*a".repeat(1000), b"*".to_vec()].concat(),
            &text
        ));
        assert!(!glob_match(&b"*a".repeat(1001), &text));
        assert!(!glob_match(
            &[b"*a".repeat(1001), b"*".to_vec()].concat(),
            &text
        ));
        // Escaped stars are literals, not runs.
        assert!(glob_match(&br"\*".repeat(1001), &[b'*'; 1001]));
    }

    /// A line-by-line port of Redis's recursive `stringmatchlen` (without its shortcut for
    /// longer matches, which changes only speed): the oracle for the property tests. Bytes
    /// past the end read as C's terminating NUL.
    fn redis_reference(pattern: &[u8], text: &[u8]) -> bool {
        reference_at(pattern, 0, text, 0, 0)
    }

    fn reference_at(pat: &[u8], mut p: usize, s: &[u8], mut i: usize, nesting: usize) -> bool {
        if nesting > 1000 {
            return false;
        }
        let at = |k: usize| pat.get(k).copied().unwrap_or(0);
        while p < pat.len() && i < s.len() {
            match pat[p] {
                b'*' => {
                    while p < pat.len() && at(p + 1) == b'*' {
                        p += 1;
                    }
                    if pat.len() - p == 1 {
                        return true;
                    }
                    while i < s.len() {
                        if reference_at(pat, p + 1, s, i, nesting + 1) {
                            return true;
                        }
                        i += 1;
                    }
                    return false;
                }
                b'?' => i += 1,
                b'[' => {
                    p += 1;
                    let not = at(p) == b'^';
                    if not {
                        p += 1;
                    }
                    let mut matched = false;
                    loop {
                        let len = pat.len() - p;
                        if at(p) == b'\\' && len >= 2 {
                            p += 1;
                            if at(p) == s[i] {
                                matched = true;
                            }
                        } else if at(p) == b']' {
                            break;
                        } else if len == 0 {
                            p -= 1;
                            break;
                        } else if len >= 3 && at(p + 1) == b'-' {
                            let mut start = i32::from(at(p) as i8);
                            let mut end = i32::from(at(p + 2) as i8);
                            let c = i32::from(s[i] as i8);
                            if start > end {
                                std::mem::swap(&mut start, &mut end);
                            }
                            p += 2;
                            if c >= start && c <= end {
                                matched = true;
                            }
                        } else if at(p) == s[i] {
                            matched = true;
                        }
                        p += 1;
                    }
                    if not {
                        matched = !matched;
                    }
                    if !matched {
                        return false;
                    }
                    i += 1;
                }
                b'\\' => {
                    if pat.len() - p >= 2 {
                        p += 1;
                    }
                    if pat[p] != s[i] {
                        return false;
                    }
                    i += 1;
                }
                c => {
                    if c != s[i] {
                        return false;
                    }
                    i += 1;
                }
            }
            p += 1;
            if i == s.len() {
                while at(p) == b'*' {
                    p += 1;
                }
                break;
            }
        }
        p == pat.len() && i == s.len()
    }

    fn bytes_from(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(proptest::sample::select(alphabet), 0..max)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn glob_match_agrees_with_redis_on_pattern_syntax(
            pattern in bytes_from(b"ab*?[]^-\\!\x80\xff", 12),
            text in bytes_from(b"ab]-^\\*\x80\xff", 10),
        ) {
            prop_assert_eq!(glob_match(&pattern, &text), redis_reference(&pattern, &text));
        }

        #[test]
        fn glob_match_agrees_with_redis_on_arbitrary_bytes(
            pattern in proptest::collection::vec(any::<u8>(), 0..16),
            text in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            prop_assert_eq!(glob_match(&pattern, &text), redis_reference(&pattern, &text));
        }

        #[test]
        fn a_pattern_of_escaped_text_matches_exactly_that_text(
            text in proptest::collection::vec(any::<u8>(), 0..24),
            other in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            let mut pattern = Vec::new();
            for &b in &text {
                if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\' | b'^' | b'-') {
                    pattern.push(b'\\');
                }
                pattern.push(b);
            }
            prop_assert!(glob_match(&pattern, &text));
            prop_assert_eq!(glob_match(&pattern, &other), other == text);
        }
    }
}
