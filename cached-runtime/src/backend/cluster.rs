//! What a Redis Cluster needs beyond routing each command by its key: invalidation by
//! pattern, which must visit every primary.
//!
//! # What a scan guarantees
//!
//! `SCAN` walks one node, so [`delete_matching`] scans every primary that owns slots, deleting
//! what each one returns. A failover or a slot moving during the walk could make it miss keys
//! (the new owner was scanned before it took over, or not at all), so the slot map is read
//! before and after a pass, and the pass is repeated, up to [`MAX_PASSES`] times, until
//! every primary answered and the map did not change meanwhile. Then every key that matched
//! when the call started, and was not written again since, is gone. If the cluster does not
//! settle in time the call fails, and the caller's invalidation is retried in the background
//! (reads of what it covers stay uncached until then), never reported done while keys may
//! remain.
//!
//! One case is not covered: a resharding in progress (a slot half migrated) does not change
//! the slot map until it ends, and a key moving from a primary not yet scanned to one
//! already scanned is missed. Invalidate again after resharding.

use std::time::Duration;

use futures_util::future::try_join_all;

use super::{Store, redis::RedisStore, scan_step};
use crate::{error::CacheError, telemetry::Op};

/// Passes over every primary before giving up on a cluster that keeps changing.
const MAX_PASSES: u32 = 8;

/// Pause between passes while a failover settles; doubles each time.
const SETTLE_MIN: Duration = Duration::from_millis(100);

/// Deletes the keys matching `pattern` on every primary (see the module docs).
pub(super) async fn delete_matching(
    store: &Store,
    r: &RedisStore,
    pattern: &str,
) -> Result<u64, CacheError> {
    let mut before = store.unguarded(Op::Cluster, r, r.slot_owners()).await?;
    let mut deleted = 0;
    let mut settle = SETTLE_MIN;
    let mut last_error = None;
    for _ in 0..MAX_PASSES {
        let mut complete = true;
        let mut primaries: Vec<(&str, u16)> =
            before.iter().map(|s| (s.host.as_str(), s.port)).collect();
        primaries.sort_unstable();
        primaries.dedup();
        for (host, port) in primaries {
            match scan_node(store, r, host, port, pattern).await {
                Ok(n) => deleted += n,
                Err(e) => {
                    tracing::debug!(error = %e, host, port, "cluster node scan failed; the pass will be repeated");
                    complete = false;
                    last_error = Some(e);
                }
            }
        }
        let after = match store.unguarded(Op::Cluster, r, r.slot_owners()).await {
            Ok(after) => after,
            Err(e) => {
                complete = false;
                last_error = Some(e);
                before.clone()
            }
        };
        if complete && after == before {
            return Ok(deleted);
        }
        before = after;
        tokio::time::sleep(settle).await;
        settle *= 2;
    }
    Err(last_error.unwrap_or_else(|| {
        CacheError::Config(format!(
            "the cluster's slot map kept changing over {MAX_PASSES} invalidation passes"
        ))
    }))
}

/// `SCAN`s one primary to the end, deleting each batch as it comes.
async fn scan_node(
    store: &Store,
    r: &RedisStore,
    host: &str,
    port: u16,
    pattern: &str,
) -> Result<u64, CacheError> {
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let scan = scan_step(cursor, pattern);
        let (next, keys): (u64, Vec<String>) = store
            .unguarded(Op::Scan, r, r.query_node(scan, host, port))
            .await?;
        deleted += unlink_by_slot(store, r, keys).await?;
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// `UNLINK`s `keys`, one command per hash slot (a multi-key command across slots fails with
/// `CROSSSLOT`); the commands go out together, pipelined per node by the cluster connection.
async fn unlink_by_slot(
    store: &Store,
    r: &RedisStore,
    mut keys: Vec<String>,
) -> Result<u64, CacheError> {
    if keys.is_empty() {
        return Ok(0);
    }
    keys.sort_unstable_by_key(|k| key_slot(k.as_bytes()));
    let groups = keys.chunk_by(|a, b| key_slot(a.as_bytes()) == key_slot(b.as_bytes()));
    let unlinks = groups.map(|group| async move {
        let mut unlink = ::redis::cmd("UNLINK");
        unlink.arg(group);
        store
            .unguarded(Op::Unlink, r, r.query::<u64>(&unlink))
            .await
    });
    Ok(try_join_all(unlinks).await?.into_iter().sum())
}

/// The cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key when it
/// has none, modulo 16384.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key).unwrap_or(key)) % 16384
}

/// The part of `key` between its first `{` and the first `}` after it, when not empty.
fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let len = key[open + 1..].iter().position(|&b| b == b'}')?;
    (len > 0).then(|| &key[open + 1..open + 1 + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_specification() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }
}
