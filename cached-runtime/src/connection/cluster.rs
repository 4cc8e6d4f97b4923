//! What a Redis Cluster needs beyond routing each command by its key: hash slots, the slot
//! map, and deletion by pattern, which must visit every primary.
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
use redis::{RedisError, Value};

use super::{Gate, Redis};
use crate::{error::CacheError, telemetry::Op};

/// How many keys one `SCAN` step asks for.
const SCAN_COUNT: usize = 1000;

/// Slots `start..=end` of a cluster and the primary that owns them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct SlotRange {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// A `CLUSTER SLOTS` reply as the primaries' slot ranges, sorted: two snapshots compare equal
/// exactly when no slot changed hands between them.
pub(crate) fn parse_slots(reply: Value) -> Result<Vec<SlotRange>, RedisError> {
    let bad = || RedisError::from((redis::ErrorKind::Parse, "unexpected CLUSTER SLOTS reply"));
    let Value::Array(ranges) = reply else {
        return Err(bad());
    };
    let mut owners = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            return Err(bad());
        };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
            (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(bad());
        };
        let host = match primary.first() {
            Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
            Some(Value::SimpleString(h)) => h.clone(),
            _ => return Err(bad()),
        };
        let Some(Value::Int(port)) = primary.get(1) else {
            return Err(bad());
        };
        owners.push(SlotRange {
            start: *start,
            end: *end,
            host,
            port: u16::try_from(*port).map_err(|_| bad())?,
        });
    }
    owners.sort();
    Ok(owners)
}

/// One `SCAN` step: `SCAN cursor MATCH pattern COUNT` [`SCAN_COUNT`].
fn scan_step(cursor: u64, pattern: &str) -> redis::Cmd {
    let mut scan = redis::cmd("SCAN");
    scan.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_COUNT);
    scan
}

/// Passes over every primary before giving up on a cluster that keeps changing.
const MAX_PASSES: u32 = 8;

/// Pause between passes while a failover settles; doubles each time.
const SETTLE_MIN: Duration = Duration::from_millis(100);

/// Deletes the keys matching `pattern`: on the one server, or on every primary of a cluster
/// (see the module docs).
pub(super) async fn delete_matching(redis: &Redis, pattern: &str) -> Result<u64, CacheError> {
    if !redis.is_cluster() {
        return scan_node(redis, None, pattern).await;
    }
    let r = redis.pool();
    let mut before = redis
        .send(Op::Cluster, Gate::Always, None, r.slot_owners())
        .await?;
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
            match scan_node(redis, Some((host, port)), pattern).await {
                Ok(n) => deleted += n,
                Err(e) => {
                    tracing::debug!(error = %e, host, port, "cluster node scan failed; the pass will be repeated");
                    complete = false;
                    last_error = Some(e);
                }
            }
        }
        let after = match redis
            .send(Op::Cluster, Gate::Always, None, r.slot_owners())
            .await
        {
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

/// `SCAN`s one server (or the cluster primary at `node`) to the end, deleting each batch as
/// it comes.
async fn scan_node(
    redis: &Redis,
    node: Option<(&str, u16)>,
    pattern: &str,
) -> Result<u64, CacheError> {
    let r = redis.pool();
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let scan = scan_step(cursor, pattern);
        let step = match node {
            Some((host, port)) => {
                redis
                    .send(Op::Scan, Gate::Always, None, r.query_node(scan, host, port))
                    .await
            }
            None => {
                redis
                    .send(Op::Scan, Gate::Always, None, r.query(&scan))
                    .await
            }
        };
        let (next, keys): (u64, Vec<String>) = step?;
        deleted += unlink_by_slot(redis, keys).await?;
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// `UNLINK`s `keys`, one command per hash slot (a multi-key command across slots fails with
/// `CROSSSLOT`); the commands go out together, pipelined per node by the cluster connection.
async fn unlink_by_slot(redis: &Redis, mut keys: Vec<String>) -> Result<u64, CacheError> {
    if keys.is_empty() {
        return Ok(0);
    }
    if !redis.is_cluster() {
        let mut unlink = redis::cmd("UNLINK");
        unlink.arg(&keys);
        return redis
            .send(Op::Unlink, Gate::Always, None, redis.pool().query(&unlink))
            .await;
    }
    keys.sort_unstable_by_key(|k| key_slot(k.as_bytes()));
    let groups = keys.chunk_by(|a, b| key_slot(a.as_bytes()) == key_slot(b.as_bytes()));
    let unlinks = groups.map(|group| async move {
        let mut unlink = redis::cmd("UNLINK");
        unlink.arg(group);
        let slot = group.first().map(|k| key_slot(k.as_bytes()));
        redis
            .send(
                Op::Unlink,
                Gate::Always,
                slot,
                redis.pool().query::<u64>(&unlink),
            )
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
